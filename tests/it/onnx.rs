//! ONNX import: bad models get clear errors (never a panic), and a small real model
//! matches onnxruntime.

use prost::Message;
use weft::onnx::proto::{
    AttributeProto, AttributeType, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto,
};

use crate::repo;

fn value_info(name: &str, elem: i32, dims: &[DimensionValue]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: elem,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(d.clone()),
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: name.into(),
        op_type: op.into(),
        attribute: attrs,
        domain: String::new(),
    }
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i,
        r#type: AttributeType::Int as i32,
        ..Default::default()
    }
}

/// `x [2, 3] -> nodes -> y`, opset 18.
fn model(nodes: Vec<NodeProto>, initializers: Vec<TensorProto>) -> ModelProto {
    use DimensionValue::DimValue;
    ModelProto {
        ir_version: 9,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 18,
        }],
        graph: Some(GraphProto {
            node: nodes,
            name: "g".into(),
            initializer: initializers,
            input: vec![value_info("x", 1, &[DimValue(2), DimValue(3)])],
            output: vec![value_info("y", 1, &[])],
            value_info: vec![],
        }),
        ..Default::default()
    }
}

fn import_err(m: &ModelProto) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    match weft::load_model(&path, &weft::LoadOptions::default()) {
        Ok(_) => panic!("expected an import error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_unsupported_node_is_listed_at_once() {
    let m = model(
        vec![
            node("Erf", "e", &["x"], &["a"], vec![]),
            node("Relu", "r", &["a"], &["b"], vec![]),
            node("NonMaxSuppression", "n", &["b"], &["y"], vec![]),
        ],
        vec![],
    );
    let e = import_err(&m);
    assert!(e.contains("2 node(s) cannot be imported"), "{e}");
    assert!(
        e.contains(r#"node "e" (Erf from ai.onnx, opset 18): no importer for this op"#),
        "{e}"
    );
    assert!(
        e.contains(r#"node "n" (NonMaxSuppression from ai.onnx, opset 18)"#),
        "{e}"
    );
}

#[test]
fn wrong_attribute_types_and_unknown_attributes_are_reported() {
    let float_axis = AttributeProto {
        name: "axis".into(),
        f: 1.0,
        r#type: AttributeType::Float as i32,
        ..Default::default()
    };
    let e = import_err(&model(
        vec![node("Softmax", "s", &["x"], &["y"], vec![float_axis])],
        vec![],
    ));
    assert!(
        e.contains(r#"node "s" (Softmax"#) && e.contains("attribute `axis` must be an INT"),
        "{e}"
    );
    let e = import_err(&model(
        vec![node(
            "Softmax",
            "s",
            &["x"],
            &["y"],
            vec![int_attr("dim", 1)],
        )],
        vec![],
    ));
    assert!(
        e.contains("attribute `dim` is not supported (known: axis)"),
        "{e}"
    );
}

#[test]
fn missing_values_and_cycles_are_reported() {
    // `w` is neither an input, an initializer nor produced by a node.
    let e = import_err(&model(
        vec![node("Add", "add", &["x", "w"], &["y"], vec![])],
        vec![],
    ));
    assert!(
        e.contains(r#"node "add" (Add"#) && e.contains(r#"value "w" is not defined"#),
        "{e}"
    );
    // a -> b -> a
    let e = import_err(&model(
        vec![
            node("Relu", "r1", &["b"], &["a"], vec![]),
            node("Relu", "r2", &["a"], &["b"], vec![]),
            node("Relu", "r3", &["b"], &["y"], vec![]),
        ],
        vec![],
    ));
    assert!(
        e.contains(
            "is produced by a later node: the graph is not topologically sorted, or has a cycle"
        ),
        "{e}"
    );
}

#[test]
fn bad_models_fail_cleanly() {
    let good = model(vec![node("Relu", "r", &["x"], &["y"], vec![])], vec![]);
    let bytes = good.encode_to_vec();
    // Truncated protobuf.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.onnx");
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let e = weft::load_model(&path, &weft::LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a valid ONNX model"), "{e}");
    // An opset Weft does not read.
    let mut old = good.clone();
    old.opset_import[0].version = 9;
    assert!(
        import_err(&old)
            .contains("default-domain opset 9 is not supported; Weft reads opsets 13 to 28")
    );
    // A symbolic dim without a value.
    let mut sym = good.clone();
    sym.graph.as_mut().unwrap().input[0] =
        value_info("x", 1, &[DimensionValue::DimParam("batch size".into())]);
    let e = import_err(&sym);
    assert!(
        e.contains(r#"dim 0 is the symbol "batch size"; give its value with --dim batch_size=N"#),
        "{e}"
    );
    // An initializer stored in an external file.
    let ext = TensorProto {
        name: "w".into(),
        data_type: 1,
        dims: vec![3],
        data_location: 1,
        external_data: vec![weft::onnx::proto::StringStringEntryProto {
            key: "location".into(),
            value: "../../etc/passwd".into(),
        }],
        ..Default::default()
    };
    let e = import_err(&model(
        vec![node("Add", "add", &["x", "w"], &["y"], vec![])],
        vec![ext],
    ));
    assert!(
        e.contains(r#"initializer "w""#) && e.contains("external"),
        "{e}"
    );
}

#[test]
fn a_symbolic_dim_is_bound_with_dim() {
    let mut m = model(vec![node("Relu", "r", &["x"], &["y"], vec![])], vec![]);
    m.graph.as_mut().unwrap().input[0] = value_info(
        "x",
        1,
        &[
            DimensionValue::DimParam("batch".into()),
            DimensionValue::DimValue(3),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let options = weft::LoadOptions {
        dims: [("batch".to_owned(), 5)].into(),
    };
    let g = weft::load_model(&path, &options).unwrap();
    assert_eq!(g.value(g.outputs[0]).ty.to_string(), "f32[batch, 3]");
    assert_eq!(g.dims["batch"], 5);
    let options = weft::LoadOptions {
        dims: [("seq".to_owned(), 5)].into(),
    };
    let e = weft::load_model(&path, &options).unwrap_err().to_string();
    assert!(e.contains("dim 0 is the symbol \"batch\""), "{e}");
    // A dim the shapes do not use, beside one they do, is refused (not ignored).
    let options = weft::LoadOptions {
        dims: [("batch".to_owned(), 5), ("seq".to_owned(), 5)].into(),
    };
    let e = weft::load_model(&path, &options).unwrap_err().to_string();
    assert!(
        e.contains(
            "cannot set dim `seq`: no shape in the model is written with it; its shapes are \
             written with batch only"
        ),
        "{e}"
    );
}

#[test]
fn small_model_matches_onnxruntime() {
    // Written by scripts/make_onnx_fixtures.py: a two-layer MLP with LayerNorm, GELU,
    // Softmax and an embedding lookup; expected outputs computed by onnxruntime.
    let dir = repo("tests/onnx-models/mlp");
    let g = weft::load_model(&dir.join("model.onnx"), &weft::LoadOptions::default()).unwrap();
    let inputs = weft::tensor_io::read_input_dir(&dir.join("test_data_set_0")).unwrap();
    let feed: weft::cpu::Tensors = g
        .inputs()
        .map(|v| g.value(v).name.clone())
        .zip(inputs)
        .collect();
    let outputs = weft::cpu::run(&g, &feed, &weft::cpu::RunOptions::default()).unwrap();
    for (i, (name, got)) in outputs.iter().enumerate() {
        let want =
            weft::tensor_io::read_tensor_file(&dir.join(format!("test_data_set_0/output_{i}.pb")))
                .unwrap()
                .remove(0)
                .1;
        let worst =
            crate::compare::relative_error(&want, got).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(worst <= 1e-5, "{name}: worst relative error {worst}");
    }
}

#[test]
fn external_data_is_checked_at_import_and_read_at_run() {
    use weft::onnx::proto::StringStringEntryProto;
    let dir = tempfile::tempdir().unwrap();
    let w: Vec<f32> = vec![0.5, -1.25, 3.0];
    let mut bytes = vec![0u8; 8]; // data starts at offset 8
    bytes.extend(w.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/w.bin"), &bytes).unwrap();
    let ext = |location: &str, offset: &str, length: Option<&str>| {
        let mut entries = vec![
            StringStringEntryProto {
                key: "location".into(),
                value: location.into(),
            },
            StringStringEntryProto {
                key: "offset".into(),
                value: offset.into(),
            },
        ];
        if let Some(l) = length {
            entries.push(StringStringEntryProto {
                key: "length".into(),
                value: l.into(),
            });
        }
        TensorProto {
            name: "w".into(),
            data_type: 1,
            dims: vec![3],
            data_location: 1,
            external_data: entries,
            ..Default::default()
        }
    };
    let path = dir.path().join("m.onnx");
    let load = |t: TensorProto| {
        let m = model(
            vec![node("Add", "add", &["x", "w"], &["y"], vec![])],
            vec![t],
        );
        std::fs::write(&path, m.encode_to_vec()).unwrap();
        weft::load_model(&path, &weft::LoadOptions::default())
    };
    let g = load(ext("data/w.bin", "8", Some("12"))).unwrap();
    // The weight refers to the file; nothing was read at import.
    assert!(weft::ir::text::to_text(&g).contains(r#"weight raw("data/w.bin", offset=8)"#));
    let x = weft::ir::Tensor::from_f32(weft::ir::DType::F32, vec![2, 3], vec![1.0; 6]).unwrap();
    let options = weft::cpu::RunOptions {
        base_dir: dir.path().to_owned(),
        ..Default::default()
    };
    let out = weft::cpu::run(&g, &[("x".to_owned(), x)].into(), &options).unwrap();
    assert_eq!(
        out[0].1.as_f32().unwrap(),
        &[1.5, -0.25, 4.0, 1.5, -0.25, 4.0]
    );

    for (t, expect) in [
        (
            ext("../w.bin", "0", None),
            "must be a relative path inside the model's folder",
        ),
        (
            ext("/etc/passwd", "0", None),
            "must be a relative path inside the model's folder",
        ),
        (
            ext("data/w.bin", "16", None),
            "has 20 bytes, but the tensor needs bytes 16..28",
        ),
        (
            ext("data/w.bin", "8", Some("16")),
            "`length` is 16 bytes, but f32[3] needs 12",
        ),
        (
            ext("data/none.bin", "0", None),
            "cannot open external data file",
        ),
        (
            ext("data/w.bin", "-4", None),
            "`offset` = \"-4\" is not a whole number",
        ),
    ] {
        let e = load(t).unwrap_err().to_string();
        assert!(
            e.contains(r#"initializer "w""#) && e.contains(expect),
            "{e}"
        );
    }
}

#[test]
fn exported_hugging_face_models_match_onnxruntime() {
    // Written by scripts/export_hf_fixtures.py (torch.onnx.export(..., dynamo=True)):
    // tiny random Llama (grouped-query attention), Qwen2 (QKV bias), Mixtral (8 experts,
    // top-2), GPT-2 and a BERT encoder, with onnxruntime's outputs for fixed token ids.
    for (name, output) in [
        ("llama-gqa", "logits"),
        ("qwen2", "logits"),
        ("mixtral", "logits"),
        ("gpt2", "logits"),
        ("bert", "last_hidden_state"),
    ] {
        let dir = repo(&format!("tests/onnx-models/{name}"));
        let g = weft::load_model(&dir.join("model.onnx"), &weft::LoadOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ids = weft::tensor_io::read_tensor_file(&dir.join("input_ids.npy"))
            .unwrap()
            .remove(0)
            .1;
        let out = weft::cpu::run(
            &g,
            &[("input_ids".to_owned(), ids)].into(),
            &weft::cpu::RunOptions::default(),
        )
        .unwrap();
        let want = weft::tensor_io::read_tensor_file(&dir.join("test_data_set_0/output_0.pb"))
            .unwrap()
            .remove(0)
            .1;
        assert_eq!(out[0].0, output);
        // Relative to the largest logit (logits of random models are small, so an
        // element-wise relative error would be dominated by values near zero); ~2e-7 is
        // achieved, so a regression of 100x shows.
        let err = crate::compare::relative_error(&want, &out[0].1)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            err <= 1e-5,
            "{name}: worst error {err:.2e} relative to the largest logit"
        );
    }
}

#[test]
fn inputs_the_fuzzer_found_fail_cleanly() {
    // Each file once crashed the importer (kept as regressions from `cargo fuzz run
    // onnx_import`); each is an invalid model, so it must be refused with a reason.
    let cases = [("crash-no-output.onnx", "the node has no output")];
    for (file, reason) in cases {
        let path = repo(&format!("tests/data/onnx-fuzz/{file}"));
        let e = weft::load_model(&path, &weft::LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot be imported") && e.contains(reason),
            "{file}: {e}"
        );
    }
    let stored = std::fs::read_dir(repo("tests/data/onnx-fuzz"))
        .unwrap()
        .count();
    assert_eq!(
        stored,
        cases.len(),
        "every stored crash input is listed here"
    );
}

/// The ops of a node test's imported graph, by name.
fn node_test_ops(test: &str) -> Vec<&'static str> {
    let path = repo(&format!("tests/onnx-node/{test}/model.onnx"));
    let g = weft::load_model(&path, &weft::LoadOptions::default()).unwrap();
    g.nodes().map(|(_, n)| n.op.name()).collect()
}

#[test]
fn attention_becomes_the_fused_op_when_nothing_else_is_asked_for() {
    // Grouped-query, masked and cached attention fit the IR's attention op exactly.
    for test in [
        "test_attention_4d_gqa",
        "test_attention_3d_attn_mask",
        "test_attention_4d_with_past_and_present",
    ] {
        let ops = node_test_ops(test);
        assert_eq!(
            ops.iter().filter(|o| **o == "attention").count(),
            1,
            "{test}: {ops:?}"
        );
        assert!(!ops.contains(&"softmax"), "{test}: {ops:?}");
    }
    // Softcap, the qk output, padded KV lengths, sliding windows and top-left causal
    // masks over a longer KV are spelled out in primitive ops instead of being dropped.
    for (test, needs) in [
        ("test_attention_4d_softcap", "tanh"),
        ("test_attention_4d_with_qk_matmul_softmax", "softmax"),
        ("test_attention_4d_causal_nonpad_batch_prefill", "relu"),
        ("test_attention_local_window", "softmax"),
    ] {
        let ops = node_test_ops(test);
        assert!(!ops.contains(&"attention"), "{test}: {ops:?}");
        assert!(ops.contains(&needs), "{test}: {ops:?}");
    }
}

#[test]
fn infinite_mask_constants_survive_a_json_round_trip() {
    // A local-window mask holds -inf; JSON has no literal for it, so it is written "-inf".
    let dir = repo("tests/onnx-node/test_attention_local_window");
    let g = weft::load_model(&dir.join("model.onnx"), &weft::LoadOptions::default()).unwrap();
    let text = weft::json::to_json(&g);
    assert!(text.contains("\"-inf\""), "no -inf written");
    let back = weft::json::parse_str(&text, std::path::Path::new("roundtrip.json")).unwrap();
    assert_eq!(weft::json::to_json(&back), text);
    let inputs = weft::tensor_io::read_input_dir(&dir.join("test_data_set_0")).unwrap();
    let feed: weft::cpu::Tensors = g
        .inputs()
        .map(|v| g.value(v).name.clone())
        .zip(inputs)
        .collect();
    let options = weft::cpu::RunOptions::default();
    let a = weft::cpu::run(&g, &feed, &options).unwrap();
    let b = weft::cpu::run(&back, &feed, &options).unwrap();
    crate::compare::assert_bits_eq(&a, &b);
}

#[test]
fn attention_inputs_that_do_not_fit_are_reported() {
    let e = import_err(&model(
        vec![node("Attention", "att", &["x", "x", "x"], &["y"], vec![])],
        vec![],
    ));
    assert!(
        e.contains(r#"node "att" (Attention"#) && e.contains("they must all be 3 or all be 4"),
        "{e}"
    );
    let e = import_err(&model(
        vec![node(
            "Attention",
            "att",
            &["x", "x", "x"],
            &["y"],
            vec![int_attr("qk_matmul_output_mode", 7)],
        )],
        vec![],
    ));
    assert!(e.contains(r#"node "att" (Attention"#), "{e}");
}

#[test]
fn an_attention_mask_too_large_to_spell_out_is_refused() {
    use DimensionValue::DimValue;
    // Top-left causal over more keys than queries is spelled out as a [s, t] constant;
    // at 4096 × 4097 that is refused with a reason instead of allocated.
    let dims = |t: i64| [DimValue(1), DimValue(1), DimValue(t), DimValue(2)];
    let m = ModelProto {
        ir_version: 9,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 23,
        }],
        graph: Some(GraphProto {
            node: vec![node(
                "Attention",
                "att",
                &["q", "k", "v"],
                &["y"],
                vec![int_attr("is_causal", 1)],
            )],
            name: "g".into(),
            initializer: vec![],
            input: vec![
                value_info("q", 1, &dims(4096)),
                value_info("k", 1, &dims(4097)),
                value_info("v", 1, &dims(4097)),
            ],
            output: vec![value_info("y", 1, &[])],
            value_info: vec![],
        }),
        ..Default::default()
    };
    let e = import_err(&m);
    assert!(
        e.contains(r#"node "att" (Attention"#) && e.contains("4096×4097 constant"),
        "{e}"
    );
}
