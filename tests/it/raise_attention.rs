//! Attention as torch's dynamo export writes it for GPT-2, BERT, Qwen2, Llama and Mistral
//! is raised to the IR's `attention` op exactly when the two compute the same thing;
//! near misses stay primitive. Every case runs both graphs on random inputs.

use weft::cpu::{RunOptions, Tensors, random_input, run};
use weft::ir::{DType, Graph, Init, Op, Shape, ValueId};
use weft::passes::{Pass, RaisePatterns};

use crate::{repo, worst_relative};

const MATMUL: Op = Op::MatMul {
    transpose_a: false,
    transpose_b: false,
};

/// How the score matmul reads the keys.
#[derive(Clone, Copy, Debug)]
enum Keys {
    /// `transpose(k, [0, 1, 3, 2])` (eager `k.transpose(-2, -1)`).
    Transposed,
    /// SDPA's batched form, one KV head per query head (GPT-2, BERT, Qwen2 without
    /// grouping): `reshape [b*h, t, d]`, `transpose [0, 2, 1]`, `reshape [b, h, d, t]`.
    Batched,
    /// Near miss: the batched form over keys laid out `[b, t, h, d]`, which is not `kᵀ`.
    BatchedSequenceMajor,
    /// Eager Llama / Mistral with grouped-query attention: `repeat_kv` (reshape, expand,
    /// reshape) of one KV head to two, then `transpose [0, 1, 3, 2]`; the values too.
    RepeatedTransposed,
    /// Near miss: the keys repeated, the values given with two heads.
    RepeatedKeysOnly,
    /// Keys laid out `[b, t, h, d]` transposed once by `[0, 2, 3, 1]`: what an optimiser
    /// leaves of eager BERT's `k.transpose(1, 2).transpose(-1, -2)`.
    SequenceMajor,
}

/// Where the `1/√d` scale is applied.
#[derive(Clone, Copy, Debug)]
enum Scale {
    /// `q·c` and `kᵀ·c` with `c = d^-1/4` (SDPA).
    Operands,
    /// `scores · d^-1/2` (eager Llama, Qwen2, Mistral).
    MulScores,
    /// `scores / √d` (eager GPT-2, BERT).
    DivScores,
    /// Near miss: `√d / scores`.
    DivByScores,
}

/// Which keys a constant mask lets each query see.
#[derive(Clone, Copy, Debug)]
enum Rows {
    /// Key `j ≤ i`.
    Causal,
    /// Mistral's sliding window: `i - 2 < j ≤ i`.
    Window,
    /// Causal, but query 0 sees nothing.
    OneRowEmpty,
}

impl Rows {
    fn sees(self, i: usize, j: usize) -> bool {
        match self {
            Rows::Causal => j <= i,
            Rows::Window => j <= i && i < j + 2,
            Rows::OneRowEmpty => j <= i && i > 0,
        }
    }
}

/// The mask applied to the scores before softmax.
#[derive(Clone, Copy, Debug)]
enum Mask {
    None,
    /// `scores + bias`, bias a constant `0` where seen and `fill` elsewhere.
    Bias(Rows, f32),
    /// `scores + bias`, bias a graph input.
    BiasInput,
    /// `where(keep, scores, fill)`, keep a constant (eager GPT-2).
    Keep(Rows, f32),
    /// `where(keep, scores, fill)`, keep a graph input.
    KeepInput(f32),
    /// `where(drop, fill, scores)`, drop a constant (`masked_fill`).
    Drop(Rows, f32),
}

const B: u64 = 1;
const H: u64 = 2;
const S: u64 = 4;
const D: u64 = 8;

fn constant(g: &mut Graph, name: &str, dtype: DType, dims: &[u64], values: Vec<f64>) -> ValueId {
    g.add(
        name,
        Op::Constant {
            dtype,
            shape: Shape::new(dims.iter().copied()),
            init: Init::Inline(values),
        },
        &[],
    )
    .unwrap()
}

fn input(g: &mut Graph, name: &str, dtype: DType, dims: &[u64]) -> ValueId {
    g.add(
        name,
        Op::Input {
            dtype,
            shape: Shape::new(dims.iter().copied()),
        },
        &[],
    )
    .unwrap()
}

/// HF's `repeat_kv`: `[b, 1, t, d]` → reshape `[b, 1, 1, t, d]` → expand
/// `[b, 1, H, t, d]` → reshape `[b, H, t, d]`.
fn repeat_kv(g: &mut Graph, name: &str, x: ValueId) -> ValueId {
    let u = g
        .add(
            format!("{name}.unsqueezed"),
            Op::Reshape {
                shape: Shape::new([B, 1, 1, S, D]),
            },
            &[x],
        )
        .unwrap();
    let e = g
        .add(
            format!("{name}.expanded"),
            Op::Expand {
                shape: Shape::new([B, 1, H, S, D]),
            },
            &[u],
        )
        .unwrap();
    g.add(
        format!("{name}.repeated"),
        Op::Reshape {
            shape: Shape::new([B, H, S, D]),
        },
        &[e],
    )
    .unwrap()
}

/// One head-major attention block `[1, 2, 4, 8]`, built as the options say, optionally
/// with the NaN guard `where(is_nan(p), 0, p)` SDPA's export puts after softmax.
fn decomposed(keys: Keys, scale: Scale, mask: Mask, guard: bool) -> Graph {
    let mut g = Graph::new("attention");
    let q = input(&mut g, "q", DType::F32, &[B, H, S, D]);
    let k = match keys {
        Keys::BatchedSequenceMajor | Keys::SequenceMajor => {
            input(&mut g, "k", DType::F32, &[B, S, H, D])
        }
        Keys::RepeatedTransposed | Keys::RepeatedKeysOnly => {
            let k = input(&mut g, "k", DType::F32, &[B, 1, S, D]);
            repeat_kv(&mut g, "k", k)
        }
        _ => input(&mut g, "k", DType::F32, &[B, H, S, D]),
    };
    let v = match keys {
        Keys::RepeatedTransposed => {
            let v = input(&mut g, "v", DType::F32, &[B, 1, S, D]);
            repeat_kv(&mut g, "v", v)
        }
        _ => input(&mut g, "v", DType::F32, &[B, H, S, D]),
    };
    let kt = match keys {
        Keys::Transposed | Keys::RepeatedTransposed | Keys::RepeatedKeysOnly => g
            .add(
                "kt",
                Op::Transpose {
                    perm: vec![0, 1, 3, 2],
                },
                &[k],
            )
            .unwrap(),
        Keys::SequenceMajor => g
            .add(
                "kt",
                Op::Transpose {
                    perm: vec![0, 2, 3, 1],
                },
                &[k],
            )
            .unwrap(),
        Keys::Batched | Keys::BatchedSequenceMajor => {
            let merged = g
                .add(
                    "k3",
                    Op::Reshape {
                        shape: Shape::new([B * H, S, D]),
                    },
                    &[k],
                )
                .unwrap();
            let t = g
                .add(
                    "k3t",
                    Op::Transpose {
                        perm: vec![0, 2, 1],
                    },
                    &[merged],
                )
                .unwrap();
            g.add(
                "kt",
                Op::Reshape {
                    shape: Shape::new([B, H, D, S]),
                },
                &[t],
            )
            .unwrap()
        }
    };
    let d = D as f64;
    let mut scores = match scale {
        Scale::Operands => {
            let c = constant(&mut g, "c", DType::F32, &[], vec![d.powf(-0.25)]);
            let qs = g.add("qs", Op::Mul, &[q, c]).unwrap();
            let ks = g.add("ks", Op::Mul, &[kt, c]).unwrap();
            g.add("s", MATMUL, &[qs, ks]).unwrap()
        }
        Scale::MulScores | Scale::DivScores | Scale::DivByScores => {
            let s = g.add("s", MATMUL, &[q, kt]).unwrap();
            match scale {
                Scale::MulScores => {
                    let c = constant(&mut g, "c", DType::F32, &[], vec![d.powf(-0.5)]);
                    g.add("scaled", Op::Mul, &[s, c]).unwrap()
                }
                Scale::DivScores => {
                    let c = constant(&mut g, "c", DType::F32, &[], vec![d.sqrt()]);
                    g.add("scaled", Op::Div, &[s, c]).unwrap()
                }
                _ => {
                    let c = constant(&mut g, "c", DType::F32, &[], vec![d.sqrt()]);
                    g.add("scaled", Op::Div, &[c, s]).unwrap()
                }
            }
        }
    };
    let n = S as usize;
    let table = |rows: Rows, seen: f64, hidden: f64| -> Vec<f64> {
        (0..n * n)
            .map(|e| {
                if rows.sees(e / n, e % n) {
                    seen
                } else {
                    hidden
                }
            })
            .collect()
    };
    let mask_dims = [1, 1, S, S];
    scores = match mask {
        Mask::None => scores,
        Mask::Bias(rows, fill) => {
            let m = constant(
                &mut g,
                "m",
                DType::F32,
                &mask_dims,
                table(rows, 0.0, fill.into()),
            );
            g.add("masked", Op::Add, &[scores, m]).unwrap()
        }
        Mask::BiasInput => {
            let m = input(&mut g, "m", DType::F32, &mask_dims);
            g.add("masked", Op::Add, &[scores, m]).unwrap()
        }
        Mask::Keep(rows, fill) => {
            let m = constant(&mut g, "m", DType::Bool, &mask_dims, table(rows, 1.0, 0.0));
            let f = constant(&mut g, "fill", DType::F32, &[], vec![fill.into()]);
            g.add("masked", Op::Where, &[m, scores, f]).unwrap()
        }
        Mask::KeepInput(fill) => {
            let m = input(&mut g, "m", DType::Bool, &mask_dims);
            let f = constant(&mut g, "fill", DType::F32, &[], vec![fill.into()]);
            g.add("masked", Op::Where, &[m, scores, f]).unwrap()
        }
        Mask::Drop(rows, fill) => {
            let m = constant(&mut g, "m", DType::Bool, &mask_dims, table(rows, 0.0, 1.0));
            let f = constant(&mut g, "fill", DType::F32, &[], vec![fill.into()]);
            g.add("masked", Op::Where, &[m, f, scores]).unwrap()
        }
    };
    let mut p = g.add("p", Op::Softmax { axis: -1 }, &[scores]).unwrap();
    if guard {
        let nan = g.add("nan", Op::IsNan, &[p]).unwrap();
        let zero = constant(&mut g, "zero", DType::F32, &[], vec![0.0]);
        p = g.add("guarded", Op::Where, &[nan, zero, p]).unwrap();
    }
    let y = g.add("y", MATMUL, &[p, v]).unwrap();
    g.outputs.push(y);
    g
}

fn count(g: &Graph, op: &str) -> usize {
    g.nodes().filter(|(_, n)| n.op.name() == op).count()
}

/// Raises `g`; returns the raised graph if attention was raised. Either way the raised graph must
/// compute what `g` does on random inputs: finite outputs (NaN-free: every fully masked
/// row is guarded, or the mask keeps a key in every row) within 1e-5 of the largest.
fn raise_and_compare(g: Graph) -> Option<Graph> {
    let feed: Tensors = g
        .inputs()
        .map(|v| (g.value(v).name.clone(), random_input(&g, v, 7).unwrap()))
        .collect();
    let (raised, _) = RaisePatterns::default().run(g.clone()).unwrap();
    weft::ir::verify(&raised).unwrap();
    let before = run(&g, &feed, &RunOptions::default()).unwrap();
    let after = run(&raised, &feed, &RunOptions::default()).unwrap();
    for (_, t) in before.iter().chain(&after) {
        assert_eq!(t.dtype(), DType::F32);
        assert!(
            t.to_f64_vec().iter().all(|x| x.is_finite()),
            "non-finite output"
        );
    }
    let err = worst_relative(&before, &after);
    assert!(err <= 1e-5, "raising changed the output by {err:e}");
    if count(&raised, "attention") == 1 {
        // The decomposition is gone: no softmax, and both matmuls absorbed.
        assert_eq!(
            (count(&raised, "softmax"), count(&raised, "matmul")),
            (0, 0)
        );
        assert_eq!((count(&g, "attention"), count(&g, "softmax")), (0, 1));
        Some(raised)
    } else {
        assert_eq!(count(&raised, "softmax"), 1);
        None
    }
}

#[test]
fn every_exported_attention_form_is_raised() {
    let (min, ninf) = (f32::MIN, f32::NEG_INFINITY);
    for (keys, scale, mask, guard) in [
        // SDPA's export (GPT-2, BERT, Qwen2 with as many KV heads as query heads).
        (Keys::Batched, Scale::Operands, Mask::None, false),
        (
            Keys::Batched,
            Scale::Operands,
            Mask::Bias(Rows::Causal, ninf),
            true,
        ),
        (Keys::Batched, Scale::Operands, Mask::BiasInput, true),
        // Eager Llama / Qwen2: `scores · scaling + causal_mask` (finfo.min).
        (
            Keys::Transposed,
            Scale::MulScores,
            Mask::Bias(Rows::Causal, min),
            false,
        ),
        // Eager BERT: `scores / √d + mask`.
        (
            Keys::Transposed,
            Scale::DivScores,
            Mask::Bias(Rows::Causal, min),
            false,
        ),
        // ... with the two key transposes folded into one.
        (
            Keys::SequenceMajor,
            Scale::DivScores,
            Mask::Bias(Rows::Causal, min),
            false,
        ),
        (
            Keys::SequenceMajor,
            Scale::MulScores,
            Mask::Drop(Rows::Causal, ninf),
            true,
        ),
        // Eager GPT-2: `where(causal, scores / √d, finfo.min)`.
        (
            Keys::Transposed,
            Scale::DivScores,
            Mask::Keep(Rows::Causal, min),
            false,
        ),
        (
            Keys::Batched,
            Scale::Operands,
            Mask::Keep(Rows::Causal, ninf),
            false,
        ),
        (Keys::Batched, Scale::Operands, Mask::KeepInput(ninf), true),
        // `masked_fill(~causal, -inf)`.
        (
            Keys::Transposed,
            Scale::MulScores,
            Mask::Drop(Rows::Causal, ninf),
            true,
        ),
        (
            Keys::Transposed,
            Scale::MulScores,
            Mask::Drop(Rows::Causal, min),
            false,
        ),
        // Eager Llama with grouped-query attention.
        (
            Keys::RepeatedTransposed,
            Scale::MulScores,
            Mask::Bias(Rows::Causal, min),
            false,
        ),
        // Mistral: Llama's export with a sliding-window causal mask.
        (
            Keys::Batched,
            Scale::Operands,
            Mask::Bias(Rows::Window, ninf),
            true,
        ),
        (
            Keys::Transposed,
            Scale::MulScores,
            Mask::Bias(Rows::Window, min),
            false,
        ),
    ] {
        let case = format!("{keys:?} {scale:?} {mask:?} guard={guard}");
        let raised = raise_and_compare(decomposed(keys, scale, mask, guard))
            .unwrap_or_else(|| panic!("{case}: not raised"));
        // Grouped-query repeats are absorbed: the op reads the single KV head.
        if matches!(keys, Keys::RepeatedTransposed) {
            assert_eq!(count(&raised, "expand"), 0, "{case}");
        }
    }
}

#[test]
fn attention_near_misses_stay_primitive() {
    let (min, ninf) = (f32::MIN, f32::NEG_INFINITY);
    for (keys, scale, mask, guard) in [
        // Keys laid out [b, t, h, d]: the batched transpose is not kᵀ.
        (
            Keys::BatchedSequenceMajor,
            Scale::Operands,
            Mask::None,
            false,
        ),
        // Keys repeated from one head, values with two of their own.
        (Keys::RepeatedKeysOnly, Scale::MulScores, Mask::None, false),
        // √d / scores is not a scale.
        (Keys::Transposed, Scale::DivByScores, Mask::None, false),
        // A fully masked query averages under a finite fill; the op gives it zeros.
        (
            Keys::Transposed,
            Scale::MulScores,
            Mask::Keep(Rows::OneRowEmpty, min),
            false,
        ),
        (
            Keys::Transposed,
            Scale::MulScores,
            Mask::Drop(Rows::OneRowEmpty, min),
            true,
        ),
        // A fill that does not underflow is not a mask.
        (
            Keys::Transposed,
            Scale::MulScores,
            Mask::Keep(Rows::Causal, -1e4),
            false,
        ),
        // A mask known only at run time may mask a whole row: without the NaN guard
        // the primitives give NaN there, and under a finite fill an average.
        (Keys::Batched, Scale::Operands, Mask::BiasInput, false),
        (Keys::Transposed, Scale::Operands, Mask::BiasInput, false),
        (Keys::Batched, Scale::Operands, Mask::KeepInput(ninf), false),
        (Keys::Batched, Scale::Operands, Mask::KeepInput(min), true),
    ] {
        let case = format!("{keys:?} {scale:?} {mask:?} guard={guard}");
        let g = decomposed(keys, scale, mask, guard);
        let (raised, _) = RaisePatterns::default().run(g.clone()).unwrap();
        assert_eq!(count(&raised, "attention"), 0, "{case}: raised");
        // Only the cases whose outputs are finite can be compared.
        if !matches!(mask, Mask::BiasInput | Mask::KeepInput(_)) || guard {
            assert!(raise_and_compare(g).is_none(), "{case}");
        }
    }
}

/// The exported fixtures: every layer's attention is raised, the raised graph still
/// matches onnxruntime, and sequence parallelism shards the raised attention by heads
/// with all-to-alls instead of gathering whole tensors.
#[test]
fn exported_attention_is_raised_and_sequence_parallel_uses_all_to_all() {
    for name in ["gpt2", "bert", "qwen2", "llama-gqa"] {
        let dir = repo(&format!("tests/onnx-models/{name}"));
        let parsed =
            weft::load_model(&dir.join("model.onnx"), &weft::LoadOptions::default()).unwrap();
        let (raised, _) = weft::to_stage(parsed.clone(), weft::Stage::Raised).unwrap();
        assert_eq!(
            (count(&parsed, "attention"), count(&parsed, "softmax")),
            (0, 2),
            "{name} parsed"
        );
        assert_eq!(
            (count(&raised, "attention"), count(&raised, "softmax")),
            (2, 0),
            "{name} raised"
        );
        assert_eq!(
            count(&raised, "matmul"),
            count(&parsed, "matmul") - 4,
            "{name}"
        );
        let ids = weft::tensor_io::read_tensor_file(&dir.join("input_ids.npy"))
            .unwrap()
            .remove(0)
            .1;
        let feed: Tensors = [("input_ids".to_owned(), ids)].into();
        let want =
            weft::tensor_io::read_tensor_file(&dir.join("test_data_set_0/output_0.pb")).unwrap();
        let check = |g: &Graph, stage: &str| {
            let got = run(g, &feed, &RunOptions::default()).unwrap();
            assert_eq!(got[0].1.dtype(), want[0].1.dtype(), "{name} {stage}");
            assert!(
                got[0].1.to_f64_vec().iter().all(|x| x.is_finite()),
                "{name} {stage}"
            );
            let got = vec![(want[0].0.clone(), got[0].1.clone())];
            let err = worst_relative(&want, &got);
            assert!(err <= 1e-5, "{name} {stage}: {err:e} from onnxruntime");
        };
        check(&raised, "raised");
        let mesh: weft::ir::Mesh = "sp=2".parse().unwrap();
        let sharded = weft::shard(&raised, &mesh).unwrap();
        let (a2a, gathers) = (count(&sharded, "all_to_all"), count(&sharded, "all_gather"));
        assert!(
            a2a >= 4 && gathers == 0,
            "{name} sp=2: {a2a} all_to_all, {gathers} all_gather"
        );
        check(&sharded, "sp=2");
    }
}
