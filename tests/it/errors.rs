//! Bad input gets a clear error that names the file and position and the reason, and
//! lists the valid choices where there is a closed set. Never a panic.

use std::path::Path;

use weft::json::{ErrorKind, JsonError, parse_str};

use crate::repo;

fn parse_err(src: &str) -> JsonError {
    match parse_str(src, Path::new("model.json")) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => e,
    }
}

/// A minimal valid model with `node` spliced in after an f32[2, 4] input `x`.
fn with_node(node: &str) -> String {
    format!(
        r#"{{
  "weft": 1,
  "name": "m",
  "nodes": [
    {{"name": "x", "op": "input", "attrs": {{"dtype": "f32", "shape": [2, 4]}}}},
    {node}
  ],
  "outputs": ["x"]
}}"#
    )
}

#[test]
fn empty_file() {
    let e = parse_err("");
    assert_eq!(e.kind, ErrorKind::Empty);
    assert!(
        e.to_string().starts_with("model.json: the file is empty"),
        "{e}"
    );
    assert_eq!(parse_err("  \n ").kind, ErrorKind::Empty);
}

#[test]
fn truncated_json_reports_line_and_column() {
    let src = std::fs::read_to_string(repo("examples/tiny-llama.json")).unwrap();
    for cut in [1, src.len() / 3, src.len() / 2, src.len() - 3] {
        let e = parse_err(&src[..cut]);
        assert_eq!(e.kind, ErrorKind::Syntax, "cut at {cut}: {e}");
        let (line, _col) = e.line_col().expect("a syntax error has a position");
        assert!(line >= 1, "{e}");
        assert!(e.message.contains("EOF"), "{e}");
    }
}

#[test]
fn garbage_is_a_syntax_error_at_its_position() {
    let e = parse_err("{\n  \"weft\": 1,\n  \"name\": @\n}");
    assert_eq!(e.kind, ErrorKind::Syntax);
    assert_eq!(e.line_col(), Some((3, 11)), "{e}");
}

/// Review of issue 11: `[]` got serde's "expected struct GraphDoc with 6 elements".
#[test]
fn a_top_level_that_is_not_an_object_says_what_it_is() {
    for (src, what) in [
        ("[]", "an array"),
        (" \"x\"", "a string"),
        ("12", "a number"),
        ("true", "a boolean"),
        ("null", "null"),
    ] {
        let e = parse_err(src).to_string();
        assert!(
            e.contains(&format!(
                "the file's top level is {what}; a Weft JSON model is an object"
            )),
            "{src}: {e}"
        );
        assert!(!e.contains("GraphDoc"), "{e}");
    }
    // Not JSON at all: serde's syntax error, with its position.
    assert_eq!(parse_err("hello").kind, ErrorKind::Syntax);
}

#[test]
fn unknown_op_lists_the_valid_ones() {
    let e = parse_err(&with_node(
        r#"{"name": "y", "op": "convolution", "inputs": ["x"]}"#,
    ));
    assert_eq!(e.kind, ErrorKind::UnknownOp);
    let text = e.to_string();
    assert!(text.contains("unknown variant `convolution`"), "{text}");
    assert!(
        text.contains("`matmul`") && text.contains("`all_to_all`"),
        "{text}"
    );
    // Points at the op name on line 6.
    assert_eq!(e.line_col().map(|p| p.0), Some(6), "{text}");
}

#[test]
fn unknown_attribute_lists_the_valid_ones() {
    let e = parse_err(&with_node(
        r#"{"name": "y", "op": "softmax", "inputs": ["x"], "attrs": {"dim": 1}}"#,
    ));
    assert_eq!(e.kind, ErrorKind::UnknownAttr);
    let text = e.to_string();
    assert!(
        text.contains("op `softmax`: unknown field `dim`, expected `axis`"),
        "{text}"
    );
    assert_eq!(e.line_col().map(|p| p.0), Some(6), "{text}");
}

#[test]
fn attributes_on_an_op_without_any() {
    let e = parse_err(&with_node(
        r#"{"name": "y", "op": "exp", "inputs": ["x"], "attrs": {"axis": 1}}"#,
    ));
    assert_eq!(e.kind, ErrorKind::UnknownAttr);
    assert!(
        e.to_string().contains("op `exp` takes no attributes"),
        "{e}"
    );
}

#[test]
fn missing_attribute() {
    let e = parse_err(&with_node(
        r#"{"name": "y", "op": "reshape", "inputs": ["x"]}"#,
    ));
    assert_eq!(e.kind, ErrorKind::Format);
    assert!(
        e.to_string()
            .contains("op `reshape`: missing field `shape`"),
        "{e}"
    );
}

#[test]
fn wrong_attribute_type() {
    let e = parse_err(&with_node(
        r#"{"name": "y", "op": "softmax", "inputs": ["x"], "attrs": {"axis": "last"}}"#,
    ));
    assert_eq!(e.kind, ErrorKind::Format);
    assert!(
        e.to_string()
            .contains("invalid type: string \"last\", expected i64"),
        "{e}"
    );
}

#[test]
fn unknown_top_level_field() {
    let e = parse_err(r#"{"weft": 1, "name": "m", "nodes": [], "outputs": [], "layers": 3}"#);
    assert_eq!(e.kind, ErrorKind::Format);
    assert!(e.to_string().contains("unknown field `layers`"), "{e}");
}

#[test]
fn unsupported_version() {
    let e = parse_err(r#"{"weft": 2, "name": "m", "nodes": [], "outputs": []}"#);
    assert!(
        e.to_string().contains("format version 2 is not supported"),
        "{e}"
    );
}

#[test]
fn unknown_value() {
    let e = parse_err(&with_node(r#"{"name": "y", "op": "exp", "inputs": ["z"]}"#));
    assert_eq!(e.kind, ErrorKind::UnknownValue);
    assert!(
        e.to_string()
            .contains("no node produces a value called `z`"),
        "{e}"
    );
}

#[test]
fn forward_reference() {
    let e = parse_err(&with_node(
        r#"{"name": "y", "op": "exp", "inputs": ["z"]},
    {"name": "z", "op": "exp", "inputs": ["x"]}"#,
    ));
    assert_eq!(e.kind, ErrorKind::UnknownValue);
    assert!(
        e.to_string()
            .contains("`z` is used before the node that produces it"),
        "{e}"
    );
    assert!(
        e.help
            .as_deref()
            .unwrap_or_default()
            .contains("dependency order")
    );
}

#[test]
fn duplicate_node_name() {
    let e = parse_err(&with_node(r#"{"name": "x", "op": "exp", "inputs": ["x"]}"#));
    assert_eq!(e.kind, ErrorKind::DuplicateName);
    assert!(e.to_string().contains("node name `x` is used twice"), "{e}");
}

#[test]
fn type_error_names_node_inputs_and_rule() {
    let e = parse_err(&with_node(
        r#"{"name": "w", "op": "weight", "attrs": {"dtype": "f32", "shape": [3, 5], "init": {"fill": {"value": 1}}}},
    {"name": "y", "op": "matmul", "inputs": ["x", "w"]}"#,
    ));
    assert_eq!(e.kind, ErrorKind::Verify);
    let text = e.to_string();
    assert!(text.starts_with("model.json:7:"), "{text}");
    assert!(
        text.contains("node `y` (matmul) with inputs [%x: f32[2, 4], %w: f32[3, 5]]: shape: matmul inner dims differ"),
        "{text}"
    );
}

#[test]
fn unknown_graph_output() {
    let src = with_node(r#"{"name": "y", "op": "exp", "inputs": ["x"]}"#)
        .replace(r#""outputs": ["x"]"#, r#""outputs": ["q"]"#);
    let e = parse_err(&src);
    assert_eq!(e.kind, ErrorKind::UnknownValue);
    assert!(
        e.to_string()
            .contains("graph output `q` is not produced by any node"),
        "{e}"
    );
}

#[test]
fn bad_mesh_and_sharding() {
    let e = parse_err(r#"{"weft": 1, "name": "m", "mesh": "tp=0", "nodes": [], "outputs": []}"#);
    assert!(e.to_string().contains("mesh axis `tp` has size `0`"), "{e}");
    let node = r#"{"name": "y", "op": "exp", "inputs": ["x"], "sharding": {"tp": "S(0)"}}"#;
    let e = parse_err(&with_node(node).replacen(
        r#""name": "m","#,
        r#""name": "m", "mesh": "dp=2","#,
        1,
    ));
    assert_eq!(e.kind, ErrorKind::Verify);
    assert!(
        e.to_string()
            .contains("sharding of `y`: mesh axis `tp` is not in the graph's mesh (dp=2)"),
        "{e}"
    );
    // Without a mesh, shardings are layout requests for the sharding pass: accepted.
    assert!(parse_str(&with_node(node), Path::new("model.json")).is_ok());
    let e = parse_err(&with_node(
        r#"{"name": "y", "op": "exp", "inputs": ["x"], "sharding": {"tp": "Q"}}"#,
    ));
    assert!(e.to_string().contains("placement `Q` is not one of"), "{e}");
}

#[test]
fn unknown_dim_override() {
    let src = std::fs::read_to_string(repo("examples/tiny-llama.json")).unwrap();
    let options = weft::json::LoadOptions {
        dims: [("layers".to_owned(), 4)].into(),
    };
    let e = weft::json::parse_str_with(&src, Path::new("t.json"), &options).unwrap_err();
    assert!(
        e.to_string().contains(
            "cannot set dim `layers`: the model declares no such dim (it declares: batch, seq)"
        ),
        "{e}"
    );
}

#[test]
fn external_weights_are_checked_against_their_headers() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.json");
    // A 2x3 little-endian f32 .npy, written byte by byte (format version 1.0).
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let pad = 64 - (10 + header.len() + 1) % 64;
    let hlen = (header.len() + pad + 1) as u16;
    npy.extend_from_slice(&hlen.to_le_bytes());
    npy.extend_from_slice(header.as_bytes());
    npy.extend(std::iter::repeat_n(b' ', pad));
    npy.push(b'\n');
    for i in 0..6 {
        npy.extend_from_slice(&(i as f32 + 0.5).to_le_bytes());
    }
    std::fs::create_dir(dir.path().join("weights")).unwrap();
    std::fs::write(dir.path().join("weights/w.npy"), &npy).unwrap();
    let data: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3, 4], &data).unwrap();
    let st = safetensors::serialize([("proj", view)], None).unwrap();
    std::fs::write(dir.path().join("weights/all.safetensors"), st).unwrap();

    let model_src = |npy_shape: &str, tensor: &str| {
        format!(
            r#"{{"weft": 1, "name": "ext", "nodes": [
  {{"name": "a", "op": "weight", "attrs": {{"dtype": "f32", "shape": {npy_shape}, "init": {{"npy": {{"path": "weights/w.npy"}}}}}}}},
  {{"name": "b", "op": "weight", "attrs": {{"dtype": "f32", "shape": [3, 4], "init": {{"safetensors": {{"path": "weights/all.safetensors", "tensor": "{tensor}"}}}}}}}}
], "outputs": ["a", "b"]}}"#
        )
    };
    std::fs::write(&model, model_src("[2, 3]", "proj")).unwrap();
    weft::json::load(&model).unwrap();

    std::fs::write(&model, model_src("[3, 2]", "proj")).unwrap();
    let e = weft::json::load(&model).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ExternalData);
    assert!(
        e.to_string().contains("node `a`: `")
            && e.to_string()
                .contains("holds f32[2, 3] but the node declares f32[3, 2]"),
        "{e}"
    );

    std::fs::write(&model, model_src("[2, 3]", "nope")).unwrap();
    let e = weft::json::load(&model).unwrap_err();
    assert!(
        e.to_string()
            .contains("has no tensor `nope` (it has: proj)"),
        "{e}"
    );

    std::fs::remove_file(dir.path().join("weights/w.npy")).unwrap();
    std::fs::write(&model, model_src("[2, 3]", "proj")).unwrap();
    let e = weft::json::load(&model).unwrap_err();
    assert!(e.to_string().contains("cannot open"), "{e}");

    std::fs::write(
        &model,
        model_src("[2, 3]", "proj").replace("weights/w.npy", "/etc/w.npy"),
    )
    .unwrap();
    let e = weft::json::load(&model).unwrap_err();
    assert!(e.to_string().contains("is absolute"), "{e}");
}

/// Review of issue 10: an output listed twice was accepted, ran, and was refused only when
/// `weft run -o` wrote two arrays under one name, after the whole run.
#[test]
fn an_output_listed_twice_is_refused() {
    let src = with_node(r#"{"name": "y", "op": "relu", "inputs": ["x"]}"#)
        .replace(r#""outputs": ["x"]"#, r#""outputs": ["y", "x", "y"]"#);
    let e = parse_err(&src);
    assert!(
        e.to_string()
            .contains("graph output `y` is listed twice; list each output once"),
        "{e}"
    );
}
