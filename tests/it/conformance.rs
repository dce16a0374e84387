//! ONNX's own backend node tests for every op the ONNX frontend claims
//! (`tests/onnx-node/`, written by `scripts/make_onnx_node_tests.py`), run through the
//! importer and the CPU executor and compared with ONNX's expected outputs.
//!
//! `tests/onnx-node/manifest.txt` records the expected result of every test: `pass`, or
//! `fail: <reason>`. The test fails when any result differs from the manifest, so a
//! regression and an unexpected fix both show up; `WEFT_BLESS=1` rewrites the manifest.

use std::path::Path;

use weft::cpu::{RunOptions, Tensors, run};
use weft::ir::{DType, Tensor};
use weft::tensor_io::{read_input_dir, read_tensor_file};

use crate::repo;

/// ONNX's backend tests compare with `rtol = 1e-3, atol = 1e-7`, and so does this one for
/// f32 and integer outputs (with an absolute floor of 1e-6). For f16 and bf16 outputs
/// that relative tolerance is finer than the types themselves (one bf16 unit in the last
/// place is up to 7.8e-3 relative), and ONNX's expected values come from NumPy rounding
/// every intermediate — each addition of a sum included — to the narrow type: in
/// `test_attention_4d_causal_bf16`, 48 of the 192 expected values are one unit away from
/// the exact result rounded once. Narrow outputs are therefore compared to within two
/// units in the last place of their type at the expected value's magnitude.
fn close(want: &Tensor, got: &Tensor) -> Result<(), String> {
    crate::compare::same_type(want, got)?;
    let mantissa_bits = match want.dtype() {
        DType::Bf16 => Some(7),
        DType::F16 => Some(10),
        _ => None,
    };
    for (i, (w, g)) in want.to_f64_vec().iter().zip(got.to_f64_vec()).enumerate() {
        let tolerance = match mantissa_bits {
            Some(bits) if w.is_finite() && *w != 0.0 => {
                let ulp = 2f64.powi(w.abs().log2().floor() as i32 - bits);
                (2.0 * ulp).max(1e-6)
            }
            _ => 1e-3 * w.abs() + 1e-6,
        };
        // Integers and booleans are compared exactly, on their own values below.
        let ok = if !want.dtype().is_float() {
            true
        } else {
            (w.is_nan() && g.is_nan()) || w == &g || (w - g).abs() <= tolerance
        };
        if !ok {
            return Err(format!("element {i} is {g}, expected {w}"));
        }
    }
    if !want.dtype().is_float() {
        // Not through f64: 2^60 and 2^60 + 1 are the same f64.
        crate::compare::bits_differ(want, got)?;
    }
    Ok(())
}

/// The executor's outputs are the model's graph outputs, by name and in order, one per
/// expected `output_<i>.pb`: a missing output would otherwise leave its expected file
/// unread and the case passing.
fn same_outputs(model: &[String], files: usize, got: &[&str]) -> Result<(), String> {
    if files != model.len() {
        return Err(format!(
            "{files} expected outputs in a test data set, the model has {}",
            model.len()
        ));
    }
    if got != model {
        return Err(format!("outputs {got:?}, the model's are {model:?}"));
    }
    Ok(())
}

fn run_case(dir: &Path) -> Result<(), String> {
    let model = dir.join("model.onnx");
    let mut sets: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    // Messages name files relative to the test's directory, so the manifest does not
    // depend on where the repository is.
    let relative = |e: String| first_line(&e.replace(&format!("{}/", dir.display()), ""));
    for set in sets {
        // As ONNX's backend runner does: every graph input is fed at run time, none is
        // frozen into a constant at import. A case whose shape operand (axes, bounds,
        // a Reshape target) is a graph input fails with the importer's reason.
        let graph = weft::onnx::load(&model, &weft::onnx::ImportOptions::default())
            .map_err(|e| relative(e.to_string()))?;
        let inputs = if set.join("input_0.pb").exists() {
            read_input_dir(&set).map_err(|e| relative(e.to_string()))?
        } else {
            Vec::new()
        };
        let names = onnx_input_names(&model)?;
        if names.len() != inputs.len() {
            return Err(format!(
                "{} inputs in a test data set, the model has {}",
                inputs.len(),
                names.len()
            ));
        }
        let feed: Tensors = names.into_iter().zip(inputs).collect();
        let outputs =
            run(&graph, &feed, &RunOptions::default()).map_err(|e| relative(e.to_string()))?;
        let files = (0..)
            .take_while(|i| set.join(format!("output_{i}.pb")).exists())
            .count();
        let got: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
        same_outputs(&onnx_names(&model)?.1, files, &got)?;
        for (i, (name, got)) in outputs.iter().enumerate() {
            let file = set.join(format!("output_{i}.pb"));
            let want = read_tensor_file(&file)
                .map_err(|e| e.to_string())?
                .remove(0)
                .1;
            close(&want, got).map_err(|e| format!("output `{name}`: {e}"))?;
        }
    }
    Ok(())
}

/// The names of a model's graph inputs that are not initializers, in order.
fn onnx_input_names(model: &Path) -> Result<Vec<String>, String> {
    Ok(onnx_names(model)?.0)
}

/// A model's graph inputs that are not initializers, and its graph outputs, in order.
fn onnx_names(model: &Path) -> Result<(Vec<String>, Vec<String>), String> {
    use prost::Message;
    let bytes = std::fs::read(model).map_err(|e| e.to_string())?;
    let m = weft::onnx::proto::ModelProto::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    let g = m.graph.unwrap_or_default();
    let inputs = g
        .input
        .iter()
        .filter(|i| !g.initializer.iter().any(|t| t.name == i.name))
        .map(|i| i.name.clone())
        .collect();
    let outputs = g.output.iter().map(|o| o.name.clone()).collect();
    Ok((inputs, outputs))
}

#[test]
fn a_missing_or_renamed_output_fails_the_case() {
    let model = ["y".to_owned(), "mask".to_owned()];
    assert!(same_outputs(&model, 2, &["y", "mask"]).is_ok());
    let e = same_outputs(&model, 2, &["y"]).unwrap_err();
    assert!(e.contains("outputs [\"y\"], the model's are"), "{e}");
    let e = same_outputs(&model, 2, &["y.matmul", "mask"]).unwrap_err();
    assert!(e.contains("y.matmul"), "{e}");
    let e = same_outputs(&model, 1, &["y", "mask"]).unwrap_err();
    assert!(e.contains("1 expected outputs"), "{e}");
}

#[test]
fn integer_outputs_are_compared_exactly_past_f64_precision() {
    let want = Tensor::from_i64(DType::I64, vec![1], vec![1 << 60]).unwrap();
    let got = Tensor::from_i64(DType::I64, vec![1], vec![(1 << 60) + 1]).unwrap();
    assert!(close(&want, &got).is_err());
    assert!(close(&want, &want.clone()).is_ok());
}

fn first_line(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    // Import errors list their nodes on the following lines; keep the node's reason.
    let line = if lines.len() > 1 {
        lines[1].trim_start_matches(['-', ' '])
    } else {
        lines[0]
    };
    line.chars().take(160).collect()
}

#[test]
fn onnx_node_tests_match_the_manifest() {
    let root = repo("tests/onnx-node");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let results: Vec<(String, Result<(), String>)> = names
        .iter()
        .map(|n| (n.clone(), run_case(&root.join(n))))
        .collect();
    let manifest: String = results
        .iter()
        .map(|(n, r)| match r {
            Ok(()) => format!("{n} pass\n"),
            Err(e) => format!("{n} fail: {e}\n"),
        })
        .collect();
    let passed = results.iter().filter(|(_, r)| r.is_ok()).count();
    let path = root.join("manifest.txt");
    // What the generator did not write, and why, so that no case leaves the denominator
    // unseen.
    let skipped = std::fs::read_to_string(root.join("skipped.txt"))
        .expect("tests/onnx-node/skipped.txt, written by scripts/make_onnx_node_tests.py");
    let header = format!(
        "# ONNX backend node tests for the ops the ONNX frontend claims: {passed} of {} pass.\n# Written by `WEFT_BLESS=1 cargo test --test it conformance`; one line per test.\n# Generator (scripts/make_onnx_node_tests.py):\n{skipped}",
        results.len()
    );
    let text = header + &manifest;
    if std::env::var_os("WEFT_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    // The bar the ONNX frontend commits to for the ops it claims: what is achieved with
    // every input fed at run time and narrow integer types refused (265 of 416).
    assert!(
        passed * 100 >= results.len() * 60,
        "only {passed} of {} node tests pass; at least 60% must",
        results.len()
    );
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != text {
        let diff: Vec<String> = expected
            .lines()
            .zip(text.lines())
            .filter(|(a, b)| a != b)
            .take(20)
            .map(|(a, b)| format!("  manifest: {a}\n  now:      {b}"))
            .collect();
        panic!(
            "conformance results differ from tests/onnx-node/manifest.txt ({passed}/{} pass now):\n{}",
            results.len(),
            diff.join("\n")
        );
    }
}
