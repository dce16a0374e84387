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
    if want.shape() != got.shape() {
        return Err(format!(
            "shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    if want.dtype() != got.dtype() {
        return Err(format!("dtype {}, expected {}", got.dtype(), want.dtype()));
    }
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
        let ok = (w.is_nan() && g.is_nan()) || w == &g || (w - g).abs() <= tolerance;
        if !ok {
            return Err(format!("element {i} is {g}, expected {w}"));
        }
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
    for set in sets {
        let inputs = read_input_dir(&set).unwrap_or_default();
        let mut options = weft::onnx::ImportOptions::default();
        let mut graph = weft::onnx::load(&model, &options);
        let names: Vec<String> = match &graph {
            Ok(g) => g.inputs().map(|v| g.value(v).name.clone()).collect(),
            Err(_) => Vec::new(),
        };
        // Node tests feed shape operands (axes, bounds, split sizes) as graph inputs;
        // Weft folds shape operands at import, so those inputs are frozen to their values.
        if let Err(e) = &graph
            && e.to_string().contains("must be a constant")
        {
            let decoded = onnx_input_names(&model)?;
            for (name, t) in decoded.iter().zip(&inputs) {
                if t.dtype().is_int() {
                    options.constants.insert(name.clone(), t.clone());
                }
            }
            graph = weft::onnx::load(&model, &options);
            // Ops folded at import (GatherElements) need their data operands constant too.
            if let Err(e) = &graph
                && e.to_string().contains("must be a constant")
            {
                for (name, t) in decoded.iter().zip(&inputs) {
                    options.constants.insert(name.clone(), t.clone());
                }
                graph = weft::onnx::load(&model, &options);
            }
        }
        let graph = graph.map_err(|e| first_line(&e.to_string()))?;
        let all_names = if names.is_empty() {
            onnx_input_names(&model)?
        } else {
            names
        };
        let feed: Tensors = all_names
            .into_iter()
            .zip(inputs)
            .filter(|(n, _)| !options.constants.contains_key(n))
            .collect();
        let outputs =
            run(&graph, &feed, &RunOptions::default()).map_err(|e| first_line(&e.to_string()))?;
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
    use prost::Message;
    let bytes = std::fs::read(model).map_err(|e| e.to_string())?;
    let m = weft::onnx::proto::ModelProto::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    let g = m.graph.unwrap_or_default();
    Ok(g.input
        .iter()
        .filter(|i| !g.initializer.iter().any(|t| t.name == i.name))
        .map(|i| i.name.clone())
        .collect())
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
    let header = format!(
        "# ONNX backend node tests for the ops the ONNX frontend claims: {passed} of {} pass.\n# Written by `WEFT_BLESS=1 cargo test --test it conformance`; one line per test.\n",
        results.len()
    );
    let text = header + &manifest;
    if std::env::var_os("WEFT_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    // The bar the ONNX frontend commits to for the ops it claims.
    assert!(
        passed * 100 >= results.len() * 98,
        "only {passed} of {} node tests pass; at least 98% must",
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
