//! Users key outputs by their ONNX names: every graph output keeps the name the ONNX model
//! gives it through import, raising, dead-code elimination, sharding and extraction.

use std::path::Path;

use weft::ir::Graph;
use weft::passes::saturate::{self, SaturateOptions};

use crate::repo;

/// The model's graph output names, in order, read from the proto itself.
fn onnx_output_names(model: &Path) -> Vec<String> {
    use prost::Message;
    let bytes = std::fs::read(model).unwrap();
    let m = weft::onnx::proto::ModelProto::decode(bytes.as_slice()).unwrap();
    m.graph
        .unwrap_or_default()
        .output
        .iter()
        .map(|o| o.name.clone())
        .collect()
}

fn output_names(g: &Graph) -> Vec<String> {
    g.outputs.iter().map(|&v| g.value(v).name.clone()).collect()
}

/// Every node test that imports, at the parsed and raised stages: 0 mismatches.
#[test]
fn node_tests_keep_their_onnx_output_names() {
    let root = repo("tests/onnx-node");
    let mut checked = 0;
    let mut wrong = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let model = dir.join("model.onnx");
        let Ok(parsed) = weft::onnx::load(&model, &weft::onnx::ImportOptions::default()) else {
            continue;
        };
        let want = onnx_output_names(&model);
        let (raised, _) = weft::to_stage(parsed.clone(), weft::Stage::Raised).unwrap();
        for (stage, g) in [("parsed", &parsed), ("raised", &raised)] {
            if output_names(g) != want {
                wrong.push(format!(
                    "{} ({stage}): {:?}, expected {want:?}",
                    dir.file_name().unwrap().to_string_lossy(),
                    output_names(g)
                ));
            }
        }
        checked += 1;
    }
    assert!(checked > 200, "only {checked} node tests import");
    assert!(
        wrong.is_empty(),
        "output names changed:\n{}",
        wrong.join("\n")
    );
}

/// Every exported fixture, parsed, raised, sharded over `tp=2` and `sp=2` and extracted
/// after saturation.
#[test]
fn fixtures_keep_their_onnx_output_names_through_every_pass() {
    for name in ["mlp", "gpt2", "bert", "qwen2", "llama-gqa", "mixtral"] {
        let model = repo(&format!("tests/onnx-models/{name}/model.onnx"));
        let want = onnx_output_names(&model);
        let g = weft::load_model(&model, &weft::LoadOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(output_names(&g), want, "{name} parsed");
        let (raised, _) = weft::to_stage(g, weft::Stage::Raised).unwrap();
        assert_eq!(output_names(&raised), want, "{name} raised");
        // The MLP fixture's sequence (7) does not divide over `sp=2`, which is refused
        // (shard::a_split_that_does_not_divide_is_an_error_on_every_axis).
        let specs: &[&str] = if name == "mlp" {
            &["tp=2"]
        } else {
            &["tp=2", "sp=2"]
        };
        for spec in specs {
            let mesh: weft::ir::Mesh = spec.parse().unwrap();
            let sharded =
                weft::shard(&raised, &mesh).unwrap_or_else(|e| panic!("{name} {spec}: {e}"));
            assert_eq!(output_names(&sharded), want, "{name} sharded {spec}");
            let sat = saturate::saturate(&sharded, &SaturateOptions::default()).unwrap();
            let extracted = crate::saturate::extract_h100(&sat, &sharded).unwrap();
            assert_eq!(output_names(&extracted), want, "{name} extracted {spec}");
        }
    }
}

/// Aliased outputs: `b = Identity(a)` listed before `a`, `c = Identity(x)` of a graph
/// input, `w_out = Identity(w)` of an initializer. Each keeps its name through
/// extraction, and each holds its source's values bit for bit.
#[test]
fn aliased_outputs_keep_their_names_and_values() {
    use prost::Message;
    use weft::onnx::proto::{
        Dimension, DimensionValue, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
        TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto,
    };
    let info = |name: &str| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: [2, 3]
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(DimensionValue::DimValue(d)),
                        })
                        .collect(),
                }),
            }),
        }),
    };
    let node = |op: &str, input: &str, output: &str| NodeProto {
        input: vec![input.into()],
        output: vec![output.into()],
        name: output.into(),
        op_type: op.into(),
        ..Default::default()
    };
    let w: Vec<f32> = (0..6).map(|i| 0.37 * i as f32 - 0.9).collect();
    let model = ModelProto {
        ir_version: 9,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 18,
        }],
        graph: Some(GraphProto {
            node: vec![
                node("Tanh", "x", "a"),
                node("Identity", "a", "b"),
                node("Identity", "x", "c"),
                node("Identity", "w", "w_out"),
            ],
            name: "aliases".into(),
            initializer: vec![TensorProto {
                name: "w".into(),
                dims: vec![2, 3],
                data_type: 1,
                float_data: w.clone(),
                ..Default::default()
            }],
            input: vec![info("x")],
            output: ["b", "a", "c", "w_out"].map(info).to_vec(),
            value_info: vec![],
        }),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aliases.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    let g = weft::load_model(&path, &weft::LoadOptions::default()).unwrap();
    let (raised, _) = weft::to_stage(g, weft::Stage::Raised).unwrap();
    let sat = saturate::saturate(&raised, &SaturateOptions::default()).unwrap();
    let extracted = crate::saturate::extract_h100(&sat, &raised).unwrap();
    let want = ["b", "a", "c", "w_out"];
    for g in [&raised, &extracted] {
        assert_eq!(output_names(g), want);
    }
    let x: Vec<f32> = (0..6).map(|i| 0.61 * i as f32 - 1.7).collect();
    let feed: weft::cpu::Tensors = [(
        "x".to_owned(),
        weft::ir::Tensor::from_f32(weft::ir::DType::F32, vec![2, 3], x.clone()).unwrap(),
    )]
    .into();
    let out = weft::cpu::run(&extracted, &feed, &weft::cpu::RunOptions::default()).unwrap();
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, want);
    let bits = |t: &weft::ir::Tensor| -> Vec<u32> {
        assert_eq!(
            (t.dtype(), t.shape()),
            (weft::ir::DType::F32, &[2usize, 3][..])
        );
        t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect()
    };
    let tanh = bits(&out[0].1);
    assert_eq!(bits(&out[1].1), tanh);
    assert_ne!(tanh, x.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    assert_eq!(
        bits(&out[2].1),
        x.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(
        bits(&out[3].1),
        w.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}
