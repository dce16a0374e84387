//! The `weft` binary end to end: exit codes, output formats, rendered errors.

use std::process::{Command, Output};

use crate::repo;

fn weft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .current_dir(repo(""))
        .output()
        .expect("the weft binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_clean_failure(o: &Output) {
    assert!(!o.status.success(), "should fail: {}", stdout(o));
    assert_eq!(o.status.code(), Some(1));
    assert!(!stderr(o).contains("panicked"), "{}", stderr(o));
}

#[test]
fn every_example_passes_check() {
    for file in [
        "tiny-llama",
        "llama3-70b-layer",
        "mixtral-8x7b-moe-layer",
        "llama3-70b",
    ] {
        let o = weft(&["check", &format!("examples/{file}.json")]);
        assert!(o.status.success(), "{file}: {}", stderr(&o));
        assert!(stdout(&o).contains("ok (verified)"), "{}", stdout(&o));
    }
}

#[test]
fn check_json_has_the_documented_keys() {
    let o = weft(&["check", "examples/llama3-70b-layer.json", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["params"], 855_654_400u64);
    assert_eq!(v["param_bytes"], 2 * 855_654_400u64);
    assert!(v["flops"].as_u64().unwrap() > 3_000_000_000_000);
    assert_eq!(v["ops"]["matmul"], 7);
    assert_eq!(v["dims"]["seq"], 2048);
}

#[test]
fn dim_override_changes_flops() {
    let flops = |args: &[&str]| {
        let o = weft(args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["flops"]
            .as_u64()
            .unwrap()
    };
    let base = flops(&["check", "examples/tiny-llama.json", "--json"]);
    let longer = flops(&[
        "check",
        "examples/tiny-llama.json",
        "--json",
        "--dim",
        "seq=32",
    ]);
    assert!(longer > 2 * base - 1, "{base} -> {longer}");
    let o = weft(&["check", "examples/tiny-llama.json", "--dim", "seq"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not of the form NAME=VALUE"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn dump_formats() {
    let text = weft(&["dump", "examples/tiny-llama.json"]);
    assert!(
        stdout(&text).starts_with("graph \"tiny-llama\" {"),
        "{}",
        stdout(&text)
    );
    let json = weft(&["dump", "examples/tiny-llama.json", "--format", "json"]);
    assert_eq!(
        stdout(&json),
        std::fs::read_to_string(repo("examples/tiny-llama.json")).unwrap()
    );
    let dot = weft(&["dump", "examples/tiny-llama.json", "--format", "dot"]);
    assert!(
        stdout(&dot).starts_with("digraph \"tiny-llama\" {"),
        "{}",
        stdout(&dot)
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("g.dot");
    let o = weft(&[
        "dump",
        "examples/tiny-llama.json",
        "--format",
        "dot",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(out).unwrap(), stdout(&dot));
}

#[test]
fn truncated_unknown_op_and_empty_files_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(repo("examples/tiny-llama.json")).unwrap();
    let cases = [
        (
            "truncated.json",
            src[..src.len() / 2].to_owned(),
            "EOF while parsing",
        ),
        (
            "unknown-op.json",
            src.replace("\"op\":\"silu\"", "\"op\":\"swish\""),
            "unknown variant `swish`",
        ),
        ("empty.json", String::new(), "the file is empty"),
    ];
    for (name, text, expect) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        for cmd in ["check", "dump"] {
            let o = weft(&[cmd, path.to_str().unwrap()]);
            assert_clean_failure(&o);
            let err = stderr(&o);
            assert!(err.contains(expect), "{name}: {err}");
            assert!(
                err.contains(name),
                "{name}: the error names the file: {err}"
            );
        }
    }
}

#[test]
fn missing_and_unsupported_files_fail_cleanly() {
    let o = weft(&["check", "no/such/model.json"]);
    assert_clean_failure(&o);
    assert!(
        stderr(&o).contains("cannot read the model file"),
        "{}",
        stderr(&o)
    );
    let o = weft(&["check", "model.onnx"]);
    assert_clean_failure(&o);
    assert!(
        stderr(&o).contains("ONNX models are not supported yet"),
        "{}",
        stderr(&o)
    );
    let o = weft(&["check", "Cargo.toml"]);
    assert_clean_failure(&o);
    assert!(stderr(&o).contains("unknown model type"), "{}", stderr(&o));
}

#[test]
fn help_documents_every_flag() {
    let o = weft(&["check", "--help"]);
    let help = stdout(&o);
    for flag in ["--json", "--dim", "<MODEL>"] {
        assert!(help.contains(flag), "{help}");
    }
    let o = weft(&["dump", "--help"]);
    let help = stdout(&o);
    for flag in ["--format", "--output", "--dim", "text", "json", "dot"] {
        assert!(help.contains(flag), "{help}");
    }
    let o = weft(&["--help"]);
    assert!(stdout(&o).contains("RUST_LOG"), "{}", stdout(&o));
}
