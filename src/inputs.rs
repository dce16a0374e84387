//! Gathering the inputs of `weft run`: files named on the command line, an ONNX
//! test-data folder, and seeded random values for whatever is left (with a warning).

use std::fmt::Write;
use std::path::{Path, PathBuf};

use weft_backend_cpu::{Tensors, input_type, random_input};
use weft_ir::{Graph, Tensor};

use crate::tensor_io::{read_input_dir, read_tensor_file};

/// Why the inputs could not be assembled.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum InputError {
    #[error(transparent)]
    Io(#[from] crate::tensor_io::TensorIoError),
    #[error("the graph has no input `{name}` (its inputs: {inputs})")]
    UnknownInput { name: String, inputs: String },
    #[error("input `{name}` is given twice")]
    Twice { name: String },
    #[error("`{file}` holds {found} tensor(s), but the graph has only {want} input(s)")]
    TooMany {
        file: PathBuf,
        found: usize,
        want: usize,
    },
    #[error("`{file}` has no array `{name}` (it has: {arrays})")]
    NoArray {
        file: PathBuf,
        name: String,
        arrays: String,
    },
    #[error("input `{name}` from `{file}`: expected {want}, got {got}")]
    Mismatch {
        name: String,
        file: PathBuf,
        want: String,
        got: String,
    },
    #[error("{0}")]
    Other(String),
}

fn describe(t: &Tensor) -> String {
    format!("{}{:?}", t.dtype(), t.shape())
}

/// Reads `--input-dir` and every `--input` argument, checking names, dtypes and shapes.
pub fn gather_inputs(
    graph: &Graph,
    args: &[String],
    dir: Option<&Path>,
) -> Result<Vec<(String, Tensor, PathBuf)>, InputError> {
    let names: Vec<String> = graph
        .inputs()
        .map(|v| graph.value(v).name.clone())
        .collect();
    let mut given: Vec<(String, Tensor, PathBuf)> = Vec::new();
    if let Some(dir) = dir {
        let tensors = read_input_dir(dir)?;
        if tensors.len() > names.len() {
            return Err(InputError::TooMany {
                file: dir.to_owned(),
                found: tensors.len(),
                want: names.len(),
            });
        }
        for (i, (name, t)) in names.iter().zip(tensors).enumerate() {
            given.push((name.clone(), t, dir.join(format!("input_{i}.pb"))));
        }
    }
    for arg in args {
        match arg.split_once('=') {
            Some((name, file)) => {
                let file = PathBuf::from(file);
                let mut arrays = read_tensor_file(&file)?;
                let t = if arrays.len() == 1 {
                    arrays.remove(0).1
                } else {
                    let listed = arrays
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    match arrays.into_iter().find(|(n, _)| n == name) {
                        Some((_, t)) => t,
                        None => {
                            return Err(InputError::NoArray {
                                file,
                                name: name.to_owned(),
                                arrays: listed,
                            });
                        }
                    }
                };
                given.push((name.to_owned(), t, file));
            }
            None => {
                let file = PathBuf::from(arg);
                for (name, t) in read_tensor_file(&file)? {
                    given.push((name, t, file.clone()));
                }
            }
        }
    }
    for (i, (name, _, _)) in given.iter().enumerate() {
        if !names.contains(name) {
            return Err(InputError::UnknownInput {
                name: name.clone(),
                inputs: names.join(", "),
            });
        }
        if given[..i].iter().any(|(n, _, _)| n == name) {
            return Err(InputError::Twice { name: name.clone() });
        }
    }
    for v in graph.inputs() {
        let value = graph.value(v);
        let Some((_, t, file)) = given.iter().find(|(n, _, _)| *n == value.name) else {
            continue;
        };
        // The whole (logical) input the executor expects; nothing is allocated for it.
        let (dtype, shape) = input_type(graph, v).map_err(|e| InputError::Other(e.to_string()))?;
        if dtype != t.dtype() || shape != t.shape() {
            return Err(InputError::Mismatch {
                name: value.name.clone(),
                file: file.clone(),
                want: format!("{dtype}{shape:?}"),
                got: describe(t),
            });
        }
    }
    Ok(given)
}

/// The given inputs plus seeded random values for the missing ones, each announced
/// with a warning.
pub fn complete_inputs(
    graph: &Graph,
    given: Vec<(String, Tensor, PathBuf)>,
    seed: u64,
) -> Result<Tensors, InputError> {
    let mut inputs: Tensors = given.into_iter().map(|(n, t, _)| (n, t)).collect();
    for v in graph.inputs() {
        let name = &graph.value(v).name;
        if !inputs.contains_key(name) {
            let t = random_input(graph, v, seed).map_err(|e| InputError::Other(e.to_string()))?;
            tracing::warn!(
                "input `{name}` not given: using seeded random values {}{:?} (seed {seed})",
                t.dtype(),
                t.shape()
            );
            inputs.insert(name.clone(), t);
        }
    }
    Ok(inputs)
}

/// A few lines per output: dtype, shape, range, mean and the first values.
pub fn summarize(outputs: &[(String, Tensor)]) -> String {
    let mut out = String::new();
    for (name, t) in outputs {
        let v = t.to_f64_vec();
        let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        let (min, max) = finite
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        let mean = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
        let _ = writeln!(out, "{name}: {}", describe(t));
        // With no finite value there is no min, max or mean (the folds' starting values,
        // `min inf  max -inf`, are not figures of the output).
        let _ = if finite.is_empty() {
            writeln!(
                out,
                "  no finite values: {} element(s), {} non-finite",
                v.len(),
                v.len()
            )
        } else {
            writeln!(
                out,
                "  min {min:.6}  max {max:.6}  mean {mean:.6}  non-finite {}",
                v.len() - finite.len()
            )
        };
        let head: Vec<String> = v.iter().take(8).map(|x| format!("{x:.6}")).collect();
        let _ = writeln!(
            out,
            "  first [{}{}]",
            head.join(", "),
            if v.len() > 8 { ", …" } else { "" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_ir::DType;

    /// Review of issue 10: an empty or all-NaN output was summarised as
    /// `min inf  max -inf  mean -0.000000`, figures the output does not have.
    #[test]
    fn an_output_without_finite_values_has_no_min_max_or_mean() {
        let empty = Tensor::from_f32(DType::F32, vec![0, 3], vec![]).unwrap();
        let nan = Tensor::from_f32(DType::F32, vec![2], vec![f32::NAN, f32::INFINITY]).unwrap();
        let text = summarize(&[("e".into(), empty), ("n".into(), nan)]);
        assert!(!text.contains("inf  max"), "{text}");
        assert!(
            text.contains("e: f32[0, 3]\n  no finite values: 0 element(s), 0 non-finite\n"),
            "{text}"
        );
        assert!(
            text.contains("n: f32[2]\n  no finite values: 2 element(s), 2 non-finite\n"),
            "{text}"
        );
        let ok = Tensor::from_f32(DType::F32, vec![2], vec![1.0, f32::NAN]).unwrap();
        let text = summarize(&[("o".into(), ok)]);
        assert!(
            text.contains("  min 1.000000  max 1.000000  mean 1.000000  non-finite 1\n"),
            "{text}"
        );
    }
}
