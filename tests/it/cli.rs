//! The `weft` binary end to end: exit codes, output formats, rendered errors. Its helpers
//! (`weft`, `stdout`, `stderr`, `assert_clean_failure`) serve the other CLI tests too.

use std::process::{Command, Output};

use crate::repo;

pub(crate) fn weft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .current_dir(repo(""))
        .output()
        .expect("the weft binary runs")
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn assert_clean_failure(o: &Output) {
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
    let o = weft(&["check", "no/such/model.onnx"]);
    assert_clean_failure(&o);
    assert!(
        stderr(&o).contains("no/such/model.onnx: cannot read the model file"),
        "{}",
        stderr(&o)
    );
    // Not a protobuf at all.
    let o = weft(&["check", "tests/data/all-ops.json"]);
    assert!(o.status.success());
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"\xff\xff\xff\xff not protobuf").unwrap();
    let o = weft(&["check", garbage.to_str().unwrap()]);
    assert_clean_failure(&o);
    assert!(
        stderr(&o).contains("not a valid ONNX model"),
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
    for flag in ["--json", "--dim", "--mesh", "<MODEL>"] {
        assert!(help.contains(flag), "{help}");
    }
    let o = weft(&["dump", "--help"]);
    let help = stdout(&o);
    for flag in [
        "--format", "--output", "--dim", "--mesh", "sharded", "text", "json", "dot",
    ] {
        assert!(help.contains(flag), "{help}");
    }
    let o = weft(&["--help"]);
    assert!(stdout(&o).contains("RUST_LOG"), "{}", stdout(&o));
}

#[test]
fn run_writes_finite_outputs_twice_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.npz"), dir.path().join("b.npz"));
    for out in [&a, &b] {
        let o = weft(&[
            "run",
            "examples/tiny-llama.json",
            "--seed",
            "7",
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        // The missing input is announced, with the seed.
        assert!(
            stderr(&o).contains(
                "input `tokens` not given: using seeded random values i64[1, 16] (seed 7)"
            ),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "two runs differ"
    );
    let arrays = weft::tensor_io::read_tensor_file(&a).unwrap();
    assert_eq!(arrays.len(), 1);
    let (name, logits) = &arrays[0];
    assert_eq!(name, "logits");
    assert_eq!(logits.shape(), &[1, 16, 256]);
    assert!(logits.as_f32().unwrap().iter().all(|x| x.is_finite()));
    // Another seed gives other tokens, hence other logits.
    let c = dir.path().join("c.npz");
    let o = weft(&[
        "run",
        "examples/tiny-llama.json",
        "--seed",
        "8",
        "-o",
        c.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
}

#[test]
fn run_reads_npy_npz_and_onnx_test_data_inputs() {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<i64> = (0..16).map(|i| (i * 37 % 256) as i64).collect();
    let tokens =
        weft::ir::Tensor::from_i64(weft::ir::DType::I64, vec![1, 16], ids.clone()).unwrap();
    // The same tokens as .npz, and as an ONNX test-data folder.
    let npz = dir.path().join("in.npz");
    weft::tensor_io::write_npz(&npz, &[("tokens".into(), tokens)]).unwrap();
    let data = dir.path().join("test_data_set_0");
    std::fs::create_dir(&data).unwrap();
    let proto = weft_frontend_onnx::proto::TensorProto {
        dims: vec![1, 16],
        data_type: 7, // INT64
        int64_data: ids,
        name: "tokens".into(),
        ..Default::default()
    };
    std::fs::write(data.join("input_0.pb"), proto.encode_to_vec()).unwrap();

    let summary = |args: &[&str]| {
        let o = weft(args);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(!stderr(&o).contains("not given"), "{}", stderr(&o));
        stdout(&o)
    };
    let from_npz = summary(&[
        "run",
        "examples/tiny-llama.json",
        "--input",
        npz.to_str().unwrap(),
    ]);
    let named = format!("tokens={}", npz.display());
    let from_named = summary(&["run", "examples/tiny-llama.json", "--input", &named]);
    let from_dir = summary(&[
        "run",
        "examples/tiny-llama.json",
        "--input-dir",
        data.to_str().unwrap(),
    ]);
    assert!(
        from_npz.starts_with("logits: f32[1, 16, 256]"),
        "{from_npz}"
    );
    assert_eq!(from_npz, from_named);
    assert_eq!(from_npz, from_dir);
}

#[test]
fn run_rejects_bad_inputs_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let floats = dir.path().join("floats.npz");
    let t = weft::ir::Tensor::from_f32(weft::ir::DType::F32, vec![1, 16], vec![0.5; 16]).unwrap();
    weft::tensor_io::write_npz(&floats, &[("tokens".into(), t)]).unwrap();
    let wrong_dtype = format!("tokens={}", floats.display());
    let unknown = format!("toks={}", floats.display());
    let cases: [(&[&str], &str); 5] = [
        (
            &["--input", &wrong_dtype],
            "expected i64[1, 16], got f32[1, 16]",
        ),
        (
            &["--input", &unknown],
            "the graph has no input `toks` (its inputs: tokens)",
        ),
        (
            &["--input", "tokens=no/such.npy"],
            "no/such.npy: no such file or directory",
        ),
        (&["--input-dir", "no/such/dir"], "no/such/dir"),
        (
            &["--ranks", "2"],
            "--ranks 2 does not fit the graph: it has no mesh",
        ),
    ];
    for (extra, expect) in cases {
        let mut args = vec!["run", "examples/tiny-llama.json"];
        args.extend_from_slice(extra);
        let o = weft(&args);
        assert_clean_failure(&o);
        assert!(stderr(&o).contains(expect), "{extra:?}: {}", stderr(&o));
    }
}

#[test]
fn run_onnx_model_with_npy_tokens_matches_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.npz");
    let o = weft(&[
        "run",
        "tests/onnx-models/llama-gqa/model.onnx",
        "--input",
        "input_ids=tests/onnx-models/llama-gqa/input_ids.npy",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = weft::tensor_io::read_tensor_file(&out).unwrap().remove(0);
    let want = weft::tensor_io::read_tensor_file(&repo(
        "tests/onnx-models/llama-gqa/test_data_set_0/output_0.pb",
    ))
    .unwrap()
    .remove(0)
    .1;
    assert_eq!(got.0, "logits");
    let worst = crate::compare::relative_error(&want, &got.1).unwrap();
    assert!(
        worst <= 1e-5,
        "worst error {worst:.2e} relative to the largest logit"
    );
}

#[test]
fn mesh_shards_for_dump_check_and_run() {
    // dump: the per-device graph with its collectives and each value's sharding.
    let o = weft(&["dump", "examples/tiny-llama.json", "--mesh", "tp=2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("mesh tp=2"), "{text}");
    assert!(
        text.contains("= all_reduce(%layers.0.attn.o_proj) {axis=tp, op=sum}"),
        "{text}"
    );
    assert!(
        text.contains("%layers.0.attn.q_proj.weight: f32[64, 32] {tp: S(1)}"),
        "{text}"
    );
    let explicit = weft(&[
        "dump",
        "examples/tiny-llama.json",
        "--mesh",
        "tp=2",
        "--stage",
        "sharded",
    ]);
    assert_eq!(stdout(&explicit), text);
    // check --json: communication per collective and per layer.
    let o = weft(&[
        "check",
        "examples/tiny-llama.json",
        "--mesh",
        "tp=2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // 5 all-reduces of [1, 16, 64] f32 (4096 bytes) over 2 layers.
    assert_eq!(report["comm_bytes_total"], 5 * 4096);
    assert_eq!(report["comm_bytes_per_layer"], 5 * 4096 / 2);
    let list = report["collectives"].as_array().unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(list[0]["kind"], "all_reduce");
    assert_eq!(list[0]["axis"], "tp");
    assert_eq!(list[0]["bytes"], 4096);
    // run --mesh: the whole outputs, equal to a single device's within 1e-5.
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one.npz"), dir.path().join("two.npz"));
    for (out, extra) in [(&one, None), (&two, Some("tp=4"))] {
        let mut args = vec![
            "run",
            "examples/tiny-llama.json",
            "--seed",
            "4",
            "-o",
            out.to_str().unwrap(),
        ];
        if let Some(m) = extra {
            args.extend(["--mesh", m]);
        }
        let o = weft(&args);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let a = weft::tensor_io::read_tensor_file(&one).unwrap().remove(0).1;
    let b = weft::tensor_io::read_tensor_file(&two).unwrap().remove(0).1;
    let worst = crate::compare::relative_error(&a, &b).unwrap();
    assert!(worst <= 1e-5, "{worst}");
    // Impossible layouts and misuse fail cleanly.
    let o = weft(&["run", "examples/tiny-llama.json", "--mesh", "tp=3"]);
    assert_clean_failure(&o);
    assert!(stderr(&o).contains("cannot shard"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("vocabulary (256 rows"),
        "{}",
        stderr(&o)
    );
    let o = weft(&["dump", "examples/tiny-llama.json", "--stage", "sharded"]);
    assert_clean_failure(&o);
    assert!(
        stderr(&o).contains("--stage sharded needs --mesh"),
        "{}",
        stderr(&o)
    );
    let o = weft(&["check", "examples/tiny-llama.json", "--mesh", "tp=two"]);
    assert!(!o.status.success());
}

/// Issue 10, item 15: one exit-status convention, 1 for every error (clap's usage errors
/// included), 0 for success, help and version.
#[test]
fn every_error_exits_1_and_help_exits_0() {
    let usage: [&[&str]; 6] = [
        &["check"],
        &["check", "--bogus", "examples/tiny-llama.json"],
        &["frobnicate"],
        &[],
        &["check", "examples/tiny-llama.json", "--dim", "seq"],
        &["dump", "examples/tiny-llama.json", "--format", "svg"],
    ];
    for args in usage {
        let o = weft(args);
        assert_clean_failure(&o);
        assert!(
            stderr(&o).contains("Usage:") || stderr(&o).contains("error:"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    for args in [&["--help"][..], &["check", "--help"], &["--version"]] {
        let o = weft(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(!stdout(&o).is_empty(), "{args:?}");
    }
    // And a failure past parsing.
    assert_clean_failure(&weft(&["check", "no/such/model.json"]));
}

/// Issue 10, item 16: a flag that would be ignored is an error naming it.
#[test]
fn flags_that_do_not_apply_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("out.txt");
    let txt = txt.to_str().unwrap();
    let tiny = "examples/tiny-llama.json";
    let cases: [(&[&str], &str); 13] = [
        (
            &["dump", tiny, "--iter-limit", "3"],
            "--iter-limit applies to the e-graph (--stage saturated or extracted), not to --stage raised",
        ),
        (
            &["dump", tiny, "--node-limit", "30"],
            "--node-limit applies to the e-graph",
        ),
        (
            &[
                "dump",
                tiny,
                "--stage",
                "sharded",
                "--mesh",
                "tp=2",
                "--rules",
                "all-reduce-of-slice",
            ],
            "--rules applies to the e-graph (--stage saturated or extracted), not to --stage sharded",
        ),
        (
            &["dump", tiny, "--stage", "parsed", "--explain", "x"],
            "--explain goes with --stage saturated",
        ),
        (
            &["dump", tiny, "--stage", "extracted", "--explain", "x"],
            "not --stage extracted",
        ),
        (
            &["dump", tiny, "--stage", "saturated", "--format", "dot"],
            "--stage saturated prints the saturation report",
        ),
        (
            &["dump", tiny, "--stage", "raised", "--mesh", "tp=2"],
            "--stage raised prints the graph before sharding, so --mesh would be ignored",
        ),
        (
            &["dump", tiny, "--stage", "parsed", "--mesh", "tp=2"],
            "--stage parsed prints the graph before sharding",
        ),
        (&["check", tiny, "--mesh", ""], "the mesh is empty"),
        (&["run", tiny, "--mesh", " , "], "the mesh is empty"),
        (
            &["run", tiny, "-o", txt],
            "`weft run` writes its outputs as an .npz archive",
        ),
        (
            &["dump", tiny, "--stage", "saturated", "--iter-limit", "0"],
            "'--iter-limit <N>': must be at least 1",
        ),
        (
            &["dump", tiny, "--stage", "extracted", "--node-limit", "0"],
            "'--node-limit <N>': must be at least 1",
        ),
    ];
    for (args, expect) in cases {
        let o = weft(args);
        assert_clean_failure(&o);
        assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
    }
    assert!(
        !std::path::Path::new(txt).exists(),
        "a refused run wrote nothing"
    );
    // A rule that never fired says so, without talking about extraction.
    let o = weft(&[
        "dump",
        tiny,
        "--stage",
        "saturated",
        "--rules",
        "slice-of-concat",
        "--explain",
        "slice-of-concat",
    ]);
    assert_clean_failure(&o);
    let err = stderr(&o);
    assert!(
        err.contains(
            "rule `slice-of-concat` never applied to this model, so there is nothing to explain"
        ),
        "{err}"
    );
    assert!(!err.contains("extraction"), "{err}");
}

/// Issue 10, item 10 on the command line: splits that do not divide fail, an axis that
/// splits nothing is a warning naming it.
#[test]
fn sharding_that_would_do_nothing_is_reported() {
    let tiny = "examples/tiny-llama.json";
    let cases: [(&[&str], &str); 3] = [
        (
            &["run", tiny, "--mesh", "dp=2"],
            "node `tokens` (input): dim 0 (batch, size 1) cannot be split over mesh axis `dp` of size 2",
        ),
        (
            &["check", tiny, "--mesh", "dp=2", "--dim", "batch=3"],
            "dim 0 (batch, size 3) cannot be split over mesh axis `dp` of size 2",
        ),
        (
            &["run", tiny, "--mesh", "sp=2", "--dim", "seq=15"],
            "dim 1 (sequence, size 15) cannot be split over mesh axis `sp` of size 2",
        ),
    ];
    for (args, expect) in cases {
        let o = weft(args);
        assert_clean_failure(&o);
        assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
    }
    let o = weft(&["check", tiny, "--mesh", "ep=4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("mesh axis `ep` of `ep=4` splits nothing in `tiny-llama`"),
        "{}",
        stderr(&o)
    );
    let o = weft(&["check", tiny, "--mesh", "dp=2", "--dim", "batch=4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("splits nothing"), "{}", stderr(&o));
}

/// Issue 10, item 12: `--dim` on a file with concrete shapes is an error; `check` on a
/// sharded file reports its communication and labels its figures per device.
#[test]
fn sharded_files_refuse_dims_and_report_their_communication() {
    let dir = tempfile::tempdir().unwrap();
    let sharded = dir.path().join("sharded.json");
    let extracted = dir.path().join("extracted.json");
    let sharded_s = sharded.to_str().unwrap();
    let extracted_s = extracted.to_str().unwrap();
    let tiny = "examples/tiny-llama.json";
    for args in [
        &[
            "dump", tiny, "--mesh", "tp=2", "--format", "json", "-o", sharded_s,
        ][..],
        &[
            "dump",
            tiny,
            "--mesh",
            "tp=2",
            "--stage",
            "extracted",
            "--format",
            "json",
            "-o",
            extracted_s,
        ],
    ] {
        let o = weft(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    for file in [sharded_s, extracted_s] {
        for cmd in ["check", "run", "dump"] {
            let o = weft(&[cmd, file, "--dim", "seq=32"]);
            assert_clean_failure(&o);
            let err = stderr(&o);
            assert!(
                err.contains("cannot set dim `seq`: no shape in the model is written with it"),
                "{cmd} {file}: {err}"
            );
            assert!(err.contains("it declares the mesh `tp=2`"), "{err}");
        }
    }
    // The source model still takes the override.
    assert!(weft(&["check", tiny, "--dim", "seq=32"]).status.success());
    // check on the sharded file: the same communication as `check --mesh tp=2`.
    let from_file = weft(&["check", sharded_s, "--json"]);
    assert!(from_file.status.success(), "{}", stderr(&from_file));
    let from_file: serde_json::Value = serde_json::from_slice(&from_file.stdout).unwrap();
    let direct = weft(&["check", tiny, "--mesh", "tp=2", "--json"]);
    let direct: serde_json::Value = serde_json::from_slice(&direct.stdout).unwrap();
    assert_eq!(from_file["comm_bytes_total"], 5 * 4096);
    assert_eq!(from_file["collectives"], direct["collectives"]);
    assert_eq!(from_file["per_device"], true);
    assert_eq!(direct["per_device"], true);
    let text = stdout(&weft(&["check", sharded_s]));
    assert!(
        text.contains("mesh        tp=2 (params, bytes and flops below are per device)"),
        "{text}"
    );
    assert!(text.contains(") per device\n"), "{text}");
    assert!(text.contains("per forward pass per device"), "{text}");
    assert!(text.contains("all_reduce"), "{text}");
    let plain = weft(&["check", tiny, "--json"]);
    let plain: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert_eq!(plain["per_device"], false);
}

/// Issue 10, item 17: what a user sees on a first try.
#[test]
fn small_things_users_see() {
    // The op table keeps long names apart from their counts.
    let o = weft(&[
        "dump",
        "examples/tiny-llama.json",
        "--mesh",
        "tp=2",
        "--stage",
        "extracted",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let fused = dir.path().join("fused.json");
    std::fs::write(&fused, &o.stdout).unwrap();
    let text = stdout(&weft(&["check", fused.to_str().unwrap()]));
    let ops: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim() != "ops")
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .collect();
    assert!(ops.len() > 3, "{text}");
    for line in &ops {
        let mut parts = line.split_whitespace();
        let (name, count) = (parts.next().unwrap(), parts.next());
        assert!(
            count.is_some_and(|c| c.parse::<u64>().is_ok()),
            "`{line}`: name and count run together"
        );
        assert!(!name.chars().last().unwrap().is_ascii_digit(), "`{line}`");
    }
    // Every MODEL help names ONNX as well as JSON.
    for cmd in ["check", "run", "dump", "compile"] {
        let help = stdout(&weft(&[cmd, "--help"]));
        assert!(
            help.contains("Weft JSON (docs/json-format.md) or ONNX"),
            "{cmd}: {help}"
        );
    }
    // A directory says so.
    let o = weft(&["check", "examples"]);
    assert_clean_failure(&o);
    assert!(
        stderr(&o).contains("examples: is a directory, not a model file"),
        "{}",
        stderr(&o)
    );
    // A file is read by its content when its extension lies, with a warning.
    let json_as_onnx = dir.path().join("tiny.onnx");
    std::fs::copy(repo("examples/tiny-llama.json"), &json_as_onnx).unwrap();
    let onnx_as_json = dir.path().join("mlp.json");
    std::fs::copy(repo("tests/onnx-models/mlp/model.onnx"), &onnx_as_json).unwrap();
    for (file, name, says) in [
        (
            &json_as_onnx,
            "tiny-llama",
            "says ONNX but it holds Weft JSON",
        ),
        (&onnx_as_json, "mlp", "says Weft JSON but it holds ONNX"),
    ] {
        let o = weft(&["check", file.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).starts_with(&format!("graph \"{name}\": ok")),
            "{}",
            stdout(&o)
        );
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
    }
    // RUST_LOG=info logs each pass once.
    let o = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["check", "examples/tiny-llama.json"])
        .env("RUST_LOG", "info")
        .current_dir(repo(""))
        .output()
        .unwrap();
    let log = stderr(&o);
    assert_eq!(log.matches("no pattern matched").count(), 1, "{log}");
    assert_eq!(log.matches("nothing to remove").count(), 1, "{log}");
    // run -o says where it wrote.
    let out = dir.path().join("out.npz");
    let o = weft(&[
        "run",
        "examples/tiny-llama.json",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("wrote 1 output(s) to {}: logits\n", out.display())
    );
    assert!(out.exists());
}

/// Issue 10 follow-up: ops sharding computes whole because a split does not divide are
/// warned about once each on stderr and listed in `check --mesh --json`.
#[test]
fn check_lists_ops_computed_whole() {
    let tiny = "examples/tiny-llama.json";
    let o = weft(&["check", tiny, "--mesh", "tp=4", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let fallbacks = report["fallbacks"].as_array().unwrap();
    let nodes: Vec<&str> = fallbacks
        .iter()
        .map(|f| f["node"].as_str().unwrap())
        .collect();
    assert_eq!(
        nodes,
        [
            "layers.0.attn.k_proj",
            "layers.0.attn.v_proj",
            "layers.1.attn.k_proj",
            "layers.1.attn.v_proj"
        ]
    );
    assert_eq!(
        fallbacks[0],
        serde_json::json!({
            "node": "layers.0.attn.k_proj",
            "op": "matmul",
            "axis": "tp",
            "axis_size": 4,
            "extent": 2,
            "what": "dim 2 of `layers.0.attn.k_heads`, a reshape of its 32 output columns"
        })
    );
    let err = stderr(&o);
    assert_eq!(
        err.matches("node `layers.0.attn.k_proj` (matmul) is computed whole on each device of mesh axis `tp`: 2 (dim 2 of `layers.0.attn.k_heads`, a reshape of its 32 output columns) does not divide by 4").count(),
        1,
        "{err}"
    );
    // Every split divides: an empty list and no warning; no mesh: no key.
    let o = weft(&["check", tiny, "--mesh", "tp=2", "--json"]);
    assert!(
        o.status.success() && !stderr(&o).contains("WARN"),
        "{}",
        stderr(&o)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["fallbacks"], serde_json::json!([]));
    let report: serde_json::Value =
        serde_json::from_slice(&weft(&["check", tiny, "--json"]).stdout).unwrap();
    assert!(report.get("fallbacks").is_none());
}

/// Issue 10 follow-up: `--explain` saturates once, so a rule asked for that never applied
/// is warned about once (it used to be saturated again to explain, and said twice), and an
/// unknown rule is refused before any saturation.
#[test]
fn explain_saturates_once() {
    let tiny = "examples/tiny-llama.json";
    let o = weft(&[
        "dump",
        tiny,
        "--stage",
        "saturated",
        "--rules",
        "slice-of-concat",
        "--explain",
        "slice-of-concat",
    ]);
    assert_clean_failure(&o);
    let err = stderr(&o);
    assert_eq!(
        err.matches("rule `slice-of-concat` was asked for but never applied")
            .count(),
        1,
        "{err}"
    );
    // One that applied is explained from the same run.
    let o = weft(&[
        "dump",
        tiny,
        "--mesh",
        "tp=2",
        "--stage",
        "saturated",
        "--rules",
        "all-reduce-to-reduce-scatter-all-gather",
        "--explain",
        "all-reduce-to-reduce-scatter-all-gather",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.matches("phase collective").count(), 1, "{out}");
    assert!(
        out.contains("(Rewrite=> all-reduce-to-reduce-scatter-all-gather (all_gather"),
        "{out}"
    );
    let o = weft(&[
        "dump",
        tiny,
        "--stage",
        "saturated",
        "--explain",
        "no-such-rule",
    ]);
    assert_clean_failure(&o);
    assert!(
        stderr(&o).contains("unknown rule `no-such-rule`"),
        "{}",
        stderr(&o)
    );
}

/// Issue 10 follow-up: `--dim NAME=V` on an ONNX file whose shapes do not use NAME is an
/// error for every command, by the same check as for JSON (`Graph::unused_dim`).
#[test]
fn onnx_files_refuse_dims_their_shapes_do_not_use() {
    let gpt2 = "tests/onnx-models/gpt2/model.onnx";
    for cmd in ["check", "run", "dump"] {
        let o = weft(&[cmd, gpt2, "--dim", "seq=32"]);
        assert_clean_failure(&o);
        let err = stderr(&o);
        assert!(
            err.contains(
                "cannot set dim `seq`: no shape in the model is written with it; its shapes are \
                 concrete (every graph input's size is given)"
            ),
            "{cmd}: {err}"
        );
    }
    assert!(weft(&["check", gpt2]).status.success());
}

/// Issue 10 follow-up: `check` prints `dims` only for dims the shapes use; a sharded graph
/// (concrete shapes) labels the dims it was made at as evaluated instead.
#[test]
fn check_labels_dims_a_sharded_graph_no_longer_uses() {
    let dir = tempfile::tempdir().unwrap();
    let sharded = dir.path().join("sharded.json");
    let sharded_s = sharded.to_str().unwrap();
    let tiny = "examples/tiny-llama.json";
    let o = weft(&[
        "dump", tiny, "--mesh", "tp=2", "--format", "json", "-o", sharded_s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Review of issue 10: sharded here, the note said `--dim cannot change them` of dims
    // that `--dim` had just set (`check model --mesh tp=2 --dim seq=32`).
    let from_file = "\n  evaluated   batch=1, seq=16 (shapes made concrete at these dims; --dim cannot change them)\n";
    let here =
        "\n  evaluated   batch=1, seq=16 (sharded at these dims, so its shapes are concrete)\n";
    let text = stdout(&weft(&["check", tiny, "--mesh", "tp=2", "--dim", "seq=32"]));
    assert!(
        text.contains(
            "\n  evaluated   batch=1, seq=32 (sharded at these dims, so its shapes are concrete)\n"
        ),
        "{text}"
    );
    for (args, evaluated) in [
        (&["check", sharded_s][..], from_file),
        (&["check", tiny, "--mesh", "tp=2"], here),
    ] {
        let text = stdout(&weft(args));
        assert!(!text.contains("\n  dims "), "{args:?}: {text}");
        assert!(text.contains(evaluated), "{args:?}: {text}");
        let json = weft(&[args, &["--json"]].concat());
        let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(v["dims"], serde_json::json!({}), "{args:?}");
        assert_eq!(
            v["evaluated_dims"],
            serde_json::json!({"batch": 1, "seq": 16}),
            "{args:?}"
        );
    }
    // The source model's shapes use its dims.
    let text = stdout(&weft(&["check", tiny]));
    assert!(text.contains("\n  dims        batch=1, seq=16\n"), "{text}");
    assert!(!text.contains("evaluated"), "{text}");
    let v: serde_json::Value =
        serde_json::from_slice(&weft(&["check", tiny, "--json"]).stdout).unwrap();
    assert!(v.get("evaluated_dims").is_none());
}

/// Review of issue 10: `run -o` into a folder that does not exist failed only after the
/// whole model had run (the 70B layer: a minute thrown away); it is refused before the run.
#[test]
fn run_refuses_an_output_folder_that_does_not_exist_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder").join("out.npz");
    let folder = dir.path().join("folder.npz");
    std::fs::create_dir(&folder).unwrap();
    let tiny = "examples/tiny-llama.json";
    for (path, expect) in [
        (missing.to_str().unwrap(), "does not exist"),
        (folder.to_str().unwrap(), "is a directory"),
    ] {
        let o = weft(&["run", tiny, "-o", path]);
        assert_clean_failure(&o);
        let err = stderr(&o);
        assert!(err.contains(expect), "{path}: {err}");
        // Refused before the inputs were made up and the model run.
        assert!(!err.contains("using seeded random values"), "{path}: {err}");
    }
    assert!(!missing.exists());
}

/// Review of issue 10: `--dim seq=4 --dim seq=5` silently used the last value, and
/// `--dim =5` was read as a dim with an empty name.
#[test]
fn a_dim_given_twice_or_without_a_name_is_refused() {
    let tiny = "examples/tiny-llama.json";
    for cmd in ["check", "run", "dump"] {
        let o = weft(&[cmd, tiny, "--dim", "seq=4", "--dim", "seq=5"]);
        assert_clean_failure(&o);
        assert!(
            stderr(&o).contains("--dim seq is given twice (seq=4 and seq=5)"),
            "{cmd}: {}",
            stderr(&o)
        );
        let o = weft(&[cmd, tiny, "--dim", "=5"]);
        assert_clean_failure(&o);
        assert!(stderr(&o).contains("names no dim"), "{cmd}: {}", stderr(&o));
    }
}

/// Review of issue 10: `--timeout 1e20` panicked converting to a `Duration` (exit 101), and
/// `--timeout 1e19` (a `Duration`, but past what `Instant` can add) panicked in every rank
/// at its first collective.
#[test]
fn a_huge_timeout_is_refused_or_never_reached_not_a_panic() {
    let tiny = "examples/tiny-llama.json";
    for t in ["1e20", "1e300", "1e-12"] {
        let o = weft(&["run", tiny, "--mesh", "tp=2", "--timeout", t]);
        assert_clean_failure(&o);
        assert!(
            stderr(&o).contains("--timeout must be a number of seconds"),
            "{t}: {}",
            stderr(&o)
        );
    }
    let o = weft(&["run", tiny, "--mesh", "tp=2", "--timeout", "1e19"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("logits: f32[1, 16, 256]"),
        "{}",
        stdout(&o)
    );
}

/// Review of issue 10: `--mesh` on a file `weft dump` wrote sharded was refused by its
/// first op ("node `embed` (sharded_gather): the graph already communicates …"), not
/// because the file is sharded; and extracting an extracted file labelled it twice.
#[test]
fn mesh_on_a_sharded_file_says_it_is_sharded() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = "examples/tiny-llama.json";
    let sharded = dir.path().join("sharded.json");
    let sharded = sharded.to_str().unwrap();
    let o = weft(&[
        "dump",
        tiny,
        "--stage",
        "extracted",
        "--mesh",
        "tp=2",
        "--format",
        "json",
        "-o",
        sharded,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for cmd in ["check", "run", "dump"] {
        let o = weft(&[cmd, sharded, "--mesh", "tp=2"]);
        assert_clean_failure(&o);
        assert!(
            stderr(&o).contains("it declares the mesh `tp=2` (it is already sharded)"),
            "{cmd}: {}",
            stderr(&o)
        );
    }
    let o = weft(&["dump", sharded, "--stage", "extracted"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).lines().next(),
        Some("graph \"tiny-llama [extracted: DAG-greedy, cost model of h100-sxm-8]\" {")
    );
}

/// Review of issue 10: `--stage saturated --format json --explain RULE` printed the
/// explanation as text after the JSON object: the output was not JSON.
#[test]
fn saturation_json_holds_the_explanation() {
    let tiny = "examples/tiny-llama.json";
    let o = weft(&[
        "dump",
        tiny,
        "--stage",
        "saturated",
        "--format",
        "json",
        "--explain",
        "elementwise-fusion",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["explanation"]["rule"], "elementwise-fusion");
    let why = v["explanation"]["text"].as_str().unwrap();
    assert!(why.contains("(Rewrite=> elementwise-fusion"), "{why}");
}

/// Review of issue 10: `--rules` with a rule named twice ran it twice, with only egg's
/// line on stderr.
#[test]
fn a_rule_named_twice_is_refused() {
    let tiny = "examples/tiny-llama.json";
    let o = weft(&[
        "dump",
        tiny,
        "--stage",
        "saturated",
        "--rules",
        "slice-of-gather,elementwise-fusion,slice-of-gather",
    ]);
    assert_clean_failure(&o);
    assert!(
        stderr(&o).contains("rule `slice-of-gather` is named twice"),
        "{}",
        stderr(&o)
    );
}

/// Review of issue 10: sharding (and extraction) emit a graph input where it is first
/// used, so ONNX's `Pow(x, y)` (whose importer casts `y` first) came out with inputs
/// `y, x`; `--input-dir` fed `input_0.pb` (x) to `y`, and `--mesh tp=2` silently computed
/// `y ** x` ([4, 25, 216] for [1, 32, 729]). Every stage keeps the model's input order.
#[test]
fn input_dir_feeds_the_same_inputs_at_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let case = "tests/onnx-node/test_pow_types_int64_int64";
    let model = format!("{case}/model.onnx");
    let data = format!("{case}/test_data_set_0");
    let want = weft::tensor_io::read_tensor_file(&repo(&format!("{data}/output_0.pb"))).unwrap();
    let want = want[0].1.to_f64_vec();
    let extracted = dir.path().join("extracted.json");
    let o = weft(&[
        "dump",
        &model,
        "--mesh",
        "tp=2",
        "--stage",
        "extracted",
        "--format",
        "json",
        "-o",
        extracted.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (k, args) in [
        vec!["run", &model, "--input-dir", &data],
        vec!["run", &model, "--input-dir", &data, "--mesh", "tp=2"],
        vec!["run", extracted.to_str().unwrap(), "--input-dir", &data],
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.path().join(format!("{k}.npz"));
        let o = weft(&[&args[..], &["-o", out.to_str().unwrap()]].concat());
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let got = weft::tensor_io::read_tensor_file(&out).unwrap();
        assert_eq!(got[0].0, "z");
        assert_eq!(got[0].1.to_f64_vec(), want, "{args:?}");
    }
}

/// Review of issue 10: output names became `.npz` entry names unchanged, so a model whose
/// output is named `../../escape` wrote an archive that unpacks outside its folder. It is
/// refused before the model runs.
#[test]
fn run_refuses_output_names_that_escape_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("escape.json");
    std::fs::write(
        &model,
        r#"{"weft": 1, "name": "escape", "nodes": [
  {"name": "x", "op": "input", "attrs": {"dtype": "f32", "shape": [2, 3]}},
  {"name": "../../escape", "op": "relu", "inputs": ["x"]}
], "outputs": ["../../escape"]}"#,
    )
    .unwrap();
    let out = dir.path().join("out.npz");
    let o = weft(&["run", model.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_clean_failure(&o);
    let err = stderr(&o);
    assert!(
        err.contains("cannot store an array named \"../../escape\""),
        "{err}"
    );
    assert!(!err.contains("using seeded random values"), "{err}");
    assert!(!out.exists());
    // Printing the summary instead of writing an archive is fine.
    let o = weft(&["run", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}
