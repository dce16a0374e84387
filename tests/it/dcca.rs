//! BigMac's DCCA (Jin et al., AAAI 2025) proven by execution: the rewritten graph, run on
//! the CPU executor unsharded and at `ep=2`, `ep=4` and `tp=2,ep=2` on random inputs, gives at every
//! MoE layer what the paper's Eq. 2 and 4 give — written out below in plain Rust (router
//! softmax and top-k as `moe_route` defines them, `x' = x W'_down`, each token's chosen
//! experts evaluated one by one, their weighted sum, `y = y' W'_up`), with the weights
//! read from the rewritten graph by their documented names (docs/rewrites.md, "DCCA").
//! Weft's IR never computes the reference. The tolerance is 1e-5 of the largest output
//! element (f32 executor against an f64 reference).
//!
//! Also: the sharded graph's all-to-alls carry width `r·h`; the outputs differ from the
//! source model's; new weights come from a JSON model file when it holds all of them,
//! from the seeded generator (`untrained`) when it holds none, and a model holding some
//! or misshapen ones is refused, as are a model with no MoE layer and a ratio whose
//! `r·h` is not whole.

use std::path::Path;

use weft::cpu::{RunOptions, Tensors, run};
use weft::ir::{DType, Graph, Init, Mesh, Op, Shape, Tensor};
use weft::passes::model_change::{AllowOptions, DccaOptions};
use weft::zoo::{GptMoeConfig, LlamaConfig, MoeConfig, gpt_moe, llama};

const TOLERANCE: f64 = 1e-5;

fn dcca(ratio: (u64, u64), seed: u64) -> AllowOptions {
    AllowOptions {
        dcca: Some(DccaOptions { ratio, seed }),
        ..AllowOptions::default()
    }
}

/// The raised graph with DCCA applied, or the pass's error.
fn changed(graph: Graph, ratio: (u64, u64)) -> Result<Graph, String> {
    weft::to_stage_allowing(graph, weft::Stage::Raised, &dcca(ratio, 7))
        .map(|(g, _)| g)
        .map_err(|e| e.to_string())
}

fn tiny_mixtral() -> LlamaConfig {
    LlamaConfig {
        name: "tiny-mixtral".into(),
        moe: Some(MoeConfig {
            experts: 8,
            top_k: 2,
        }),
        ..LlamaConfig::tiny()
    }
}

// ---- the paper's equations, written independently ----------------------------------------

/// The expert form of the source model.
#[derive(Clone, Copy, Debug)]
enum Expert {
    /// GPT fine-grained: `E_i(x') = GELU(x' W_{i,up}) W_{i,down}` (BigMac Eq. 4).
    Gelu,
    /// Mixtral: `E_i(x') = (SiLU(x' G_i) ⊙ (x' U_i)) D_i`, the same reversal applied to a
    /// gated expert.
    SwiGlu,
    /// As `SwiGlu`, the gate and up products one matrix `[r·h, 2·inner]` whose first half
    /// is the gate (PyTorch's fused `gate_up`, raised with a split).
    FusedSwiGlu,
}

/// A row-major matrix read from the graph.
struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

impl Matrix {
    /// `v · M` for a row vector `v` of length `rows`.
    fn left_mul(&self, v: &[f64]) -> Vec<f64> {
        assert_eq!(v.len(), self.rows);
        let mut out = vec![0.0; self.cols];
        for (i, &a) in v.iter().enumerate() {
            let row = &self.data[i * self.cols..(i + 1) * self.cols];
            for (o, &b) in out.iter_mut().zip(row) {
                *o += a * b;
            }
        }
        out
    }
}

/// The weight `name` of `graph`, materialised, with its dims.
fn weight(graph: &Graph, name: &str) -> (Vec<usize>, Vec<f64>) {
    let (_, node) = graph
        .nodes()
        .find(|(_, n)| n.name == name && matches!(n.op, Op::Weight { .. }))
        .unwrap_or_else(|| panic!("the rewritten graph has no weight `{name}`"));
    let Op::Weight { dtype, shape, init } = &node.op else {
        unreachable!()
    };
    let dims: Vec<usize> = shape
        .eval(&graph.dims)
        .unwrap()
        .into_iter()
        .map(|d| d as usize)
        .collect();
    let zeros = vec![0; dims.len()];
    let t =
        weft::cpu::materialize::materialize(init, *dtype, &dims, &dims, &zeros, Path::new("."), 1)
            .unwrap();
    (dims, t.to_f64_vec())
}

/// `[rows, cols]` stored as it is, or (`t`) stored transposed, `[cols, rows]`.
fn oriented(data: &[f64], rows: usize, cols: usize, t: bool) -> Matrix {
    let data = if t {
        (0..rows * cols)
            .map(|i| data[(i % cols) * rows + i / cols])
            .collect()
    } else {
        data.to_vec()
    };
    Matrix { rows, cols, data }
}

fn matrix(graph: &Graph, name: &str, rows: usize, cols: usize, t: bool) -> Matrix {
    let (dims, data) = weight(graph, name);
    let want = if t { [cols, rows] } else { [rows, cols] };
    assert_eq!(dims, want, "`{name}`'s shape");
    oriented(&data, rows, cols, t)
}

/// `[E, rows, cols]` (or, `t`, `[E, cols, rows]`) as one matrix per expert.
fn per_expert(
    graph: &Graph,
    name: &str,
    e: usize,
    rows: usize,
    cols: usize,
    t: bool,
) -> Vec<Matrix> {
    let (dims, data) = weight(graph, name);
    let want = if t { [e, cols, rows] } else { [e, rows, cols] };
    assert_eq!(dims, want, "`{name}`'s shape");
    data.chunks(rows * cols)
        .map(|c| oriented(c, rows, cols, t))
        .collect()
}

/// One DCCA MoE layer's weights, read from the rewritten graph by their documented names.
struct Layer {
    prefix: String,
    expert: Expert,
    top_k: usize,
    normalize: bool,
    router: Matrix,
    down: Matrix,
    /// Per expert: the products reading `x'` (GELU: one; SwiGLU: gate, up), then the one
    /// returning width `r·h`.
    experts: Vec<Vec<Matrix>>,
    up: Matrix,
}

#[allow(clippy::too_many_arguments)]
fn layer(
    graph: &Graph,
    prefix: &str,
    expert: Expert,
    h: usize,
    rh: usize,
    inner: usize,
    e: usize,
    top_k: usize,
    normalize: bool,
) -> Layer {
    let names: &[&str] = match expert {
        // The source's down [E, h, r·h] is replaced by the paper's W_up [E, r·h, h], its
        // up [E, r·h, h] by W_down [E, h, r·h].
        Expert::Gelu => &["experts.down", "experts.up"],
        Expert::SwiGlu => &["experts.gate", "experts.up", "experts.down"],
        Expert::FusedSwiGlu => unreachable!("the zoo's experts are not fused"),
    };
    let mut mats: Vec<Vec<Matrix>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (rows, cols) = if i + 1 < names.len() {
                (rh, inner)
            } else {
                (inner, rh)
            };
            per_expert(
                graph,
                &format!("{prefix}.{n}.weight.dcca"),
                e,
                rows,
                cols,
                false,
            )
        })
        .collect();
    Layer {
        prefix: prefix.into(),
        expert,
        top_k,
        normalize,
        router: matrix(graph, &format!("{prefix}.router.weight"), h, e, false),
        down: matrix(graph, &format!("{prefix}.dcca.down"), h, rh, false),
        experts: by_expert(&mut mats, e),
        up: matrix(graph, &format!("{prefix}.dcca.up"), rh, h, false),
    }
}

/// Per-product lists of per-expert matrices, regrouped per expert.
fn by_expert(mats: &mut [Vec<Matrix>], e: usize) -> Vec<Vec<Matrix>> {
    let mut per: Vec<Vec<Matrix>> = (0..e).map(|_| Vec::new()).collect();
    for product in mats.iter_mut() {
        for (i, m) in product.drain(..).enumerate() {
            per[i].push(m);
        }
    }
    per
}

/// The error function, by its Maclaurin series (|x| < 5, where f64 keeps 1e-12) and ±1
/// beyond (|1 - erf(5)| < 2e-12).
fn erf(x: f64) -> f64 {
    if x.abs() >= 5.0 {
        return x.signum();
    }
    let (mut term, mut sum, x2) = (x, x, x * x);
    for n in 1..200 {
        term *= -x2 / n as f64;
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-17 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

impl Layer {
    /// BigMac Eq. 2 and 4 for one token `x` (width h).
    fn token(&self, x: &[f64]) -> Vec<f64> {
        // Routing on the full-width x: softmax over every expert, the top k kept (their
        // softmax values, rescaled to sum to one with `normalize`).
        let logits = self.router.left_mul(x);
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = exp.iter().sum();
        let p: Vec<f64> = exp.iter().map(|v| v / total).collect();
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let chosen = &order[..self.top_k];
        let kept: f64 = chosen.iter().map(|&i| p[i]).sum();
        // x' = x W'_down.
        let xd = self.down.left_mul(x);
        let mut yd = vec![0.0; xd.len()];
        for &i in chosen {
            let gate = if self.normalize { p[i] / kept } else { p[i] };
            let w = &self.experts[i];
            let hidden: Vec<f64> = match self.expert {
                Expert::Gelu => w[0].left_mul(&xd).into_iter().map(gelu).collect(),
                Expert::SwiGlu => w[0]
                    .left_mul(&xd)
                    .into_iter()
                    .zip(w[1].left_mul(&xd))
                    .map(|(g, u)| silu(g) * u)
                    .collect(),
                Expert::FusedSwiGlu => {
                    let both = w[0].left_mul(&xd);
                    let (g, u) = both.split_at(both.len() / 2);
                    g.iter().zip(u).map(|(&g, &u)| silu(g) * u).collect()
                }
            };
            let out = w[w.len() - 1].left_mul(&hidden);
            for (acc, o) in yd.iter_mut().zip(out) {
                *acc += gate * o;
            }
        }
        // y = y' W'_up.
        self.up.left_mul(&yd)
    }
}

// ---- running the rewritten graph -------------------------------------------------------------

fn output<'a>(outs: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &outs
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no output `{name}`"))
        .1
}

/// Runs `graph` (sharded over `spec`, or whole) with each layer's MoE input and output
/// as extra outputs, and returns the worst relative error of any layer's output against
/// the equations applied to that layer's input.
fn worst_against_equations(
    graph: &Graph,
    layers: &[Layer],
    spec: Option<&str>,
    inputs: &Tensors,
) -> f64 {
    let mut probe = graph.clone();
    let mut names = Vec::new();
    for l in layers {
        let find = |name: String| {
            probe
                .nodes()
                .find(|(_, n)| n.name == name)
                .unwrap_or_else(|| panic!("no node `{name}`"))
                .1
                .clone()
        };
        let down = find(format!("{}.dcca.down_proj", l.prefix));
        let up = find(format!("{}.dcca.up_proj", l.prefix));
        names.push((
            probe.value(down.inputs[0]).name.clone(),
            probe.value(up.outputs[0]).name.clone(),
        ));
        probe.outputs.extend([down.inputs[0], up.outputs[0]]);
    }
    let program = match spec {
        None => probe,
        Some(s) => {
            let mesh: Mesh = s.parse().unwrap();
            weft::shard(&probe, &mesh).unwrap_or_else(|e| panic!("{s}: {e}"))
        }
    };
    let outs = run(&program, inputs, &RunOptions::default()).unwrap();
    let mut worst: f64 = 0.0;
    for (l, (xn, yn)) in layers.iter().zip(&names) {
        let x = output(&outs, xn).to_f64_vec();
        let y = output(&outs, yn).to_f64_vec();
        let h = l.router.rows;
        assert_eq!(x.len(), y.len());
        let want: Vec<f64> = x.chunks(h).flat_map(|t| l.token(t)).collect();
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(
            scale.is_finite() && scale > 0.0,
            "{}: reference {scale}",
            l.prefix
        );
        for (g, w) in y.iter().zip(&want) {
            assert!(g.is_finite(), "{}: non-finite output", l.prefix);
            worst = worst.max((g - w).abs() / scale);
        }
    }
    worst
}

/// The widths of the float all-to-alls of `graph` (their payload's last dim).
fn all_to_all_widths(graph: &Graph) -> Vec<u64> {
    graph
        .nodes()
        .filter(|(_, n)| matches!(n.op, Op::AllToAll { .. }))
        .map(|(_, n)| &graph.value(n.outputs[0]).ty)
        .filter(|ty| ty.dtype.is_float())
        .map(|ty| *ty.shape.eval(&graph.dims).unwrap().last().unwrap())
        .collect()
}

fn inputs(graph: &Graph, seed: u64) -> Tensors {
    weft::inputs::complete_inputs(graph, Vec::new(), seed).unwrap()
}

/// The equations hold unsharded and at ep=2 and ep=4; the all-to-alls carry `r·h`; the
/// outputs differ from the source's.
fn prove(
    source: Graph,
    layers_of: impl Fn(&Graph) -> Vec<Layer>,
    h: u64,
    rh: u64,
    moe_layers: usize,
) {
    let name = source.name.clone();
    let g = changed(source.clone(), (1, 4)).unwrap();
    assert_eq!(g.model_changes.len(), 1, "{name}");
    assert_eq!(g.model_changes[0].rule, "dcca");
    assert!(g.model_changes[0].untrained, "{name}: weights were drawn");
    let layers = layers_of(&g);
    assert_eq!(layers.len(), moe_layers);
    let ins = inputs(&g, 5);
    for spec in [None, Some("ep=2"), Some("ep=4"), Some("tp=2,ep=2")] {
        let err = worst_against_equations(&g, &layers, spec, &ins);
        assert!(err <= TOLERANCE, "{name} at {spec:?}: {err}");
    }
    for spec in ["ep=2", "ep=4"] {
        let sharded = weft::shard(&g, &spec.parse().unwrap()).unwrap();
        let widths = all_to_all_widths(&sharded);
        assert_eq!(widths, vec![rh; 2 * moe_layers], "{name} at {spec}");
        let before = all_to_all_widths(
            &weft::shard(
                &weft::to_stage(source.clone(), weft::Stage::Raised)
                    .unwrap()
                    .0,
                &spec.parse().unwrap(),
            )
            .unwrap(),
        );
        assert_eq!(before, vec![h; 2 * moe_layers], "{name} at {spec}, source");
    }
    // The source model computes something else.
    let src = weft::to_stage(source, weft::Stage::Raised).unwrap().0;
    let opts = RunOptions::default();
    let want = run(&src, &ins, &opts).unwrap();
    let got = run(&g, &ins, &opts).unwrap();
    let diff = crate::worst_relative(&want, &got);
    assert!(
        diff > 1e-2,
        "{name}: DCCA's outputs equal the source's ({diff})"
    );
}

fn gpt_layers(g: &Graph) -> Vec<Layer> {
    let cfg = GptMoeConfig::tiny();
    let (h, e) = (cfg.hidden as usize, cfg.experts as usize);
    (0..cfg.layers)
        .map(|l| {
            // The paper's reversed expert: inner width h (= r·h scaled by 1/r).
            layer(
                g,
                &format!("layers.{l}.moe"),
                Expert::Gelu,
                h,
                h / 4,
                h,
                e,
                2,
                false,
            )
        })
        .collect()
}

fn mixtral_layers(g: &Graph) -> Vec<Layer> {
    let cfg = tiny_mixtral();
    let (h, f) = (cfg.hidden as usize, cfg.ffn as usize);
    (0..cfg.layers)
        .map(|l| {
            layer(
                g,
                &format!("layers.{l}.moe"),
                Expert::SwiGlu,
                h,
                h / 4,
                f * 4,
                8,
                2,
                true,
            )
        })
        .collect()
}

#[test]
fn gpt_fine_grained_moe_matches_the_papers_equations_at_ep_1_2_4() {
    let cfg = GptMoeConfig::tiny();
    prove(
        gpt_moe(&cfg).unwrap(),
        gpt_layers,
        cfg.hidden,
        cfg.hidden / 4,
        cfg.layers as usize,
    );
}

#[test]
fn mixtral_moe_matches_the_papers_equations_at_ep_1_2_4() {
    let cfg = tiny_mixtral();
    prove(
        llama(&cfg).unwrap(),
        mixtral_layers,
        cfg.hidden,
        cfg.hidden / 4,
        cfg.layers as usize,
    );
}

// ---- where the new weights come from ----------------------------------------------------------

/// The tiny GPT MoE with every DCCA weight written into it, inline, as a model file would
/// carry them (values drawn here, not by Weft's generator).
fn with_dcca_weights(names_and_shapes: &[(String, Vec<u64>)]) -> Graph {
    let mut g = gpt_moe(&GptMoeConfig::tiny()).unwrap();
    for (i, (name, shape)) in names_and_shapes.iter().enumerate() {
        let n: u64 = shape.iter().product();
        // A simple deterministic spread in [-0.25, 0.25): values no generator gives.
        let data: Vec<f64> = (0..n)
            .map(|j| (((j * 7919 + i as u64 * 104_729) % 1000) as f64 / 1000.0 - 0.5) * 0.5)
            .collect();
        g.add(
            name.clone(),
            Op::Weight {
                dtype: DType::F32,
                shape: Shape::new(shape.iter().copied()),
                init: Init::Inline(data),
            },
            &[],
        )
        .unwrap();
    }
    g
}

/// Every weight DCCA needs on the tiny GPT MoE at r = 1/4, by its documented name.
fn gpt_dcca_weights() -> Vec<(String, Vec<u64>)> {
    let cfg = GptMoeConfig::tiny();
    let (h, rh, e) = (cfg.hidden, cfg.hidden / 4, cfg.experts);
    let mut all = Vec::new();
    for l in 0..cfg.layers {
        let p = format!("layers.{l}.moe");
        all.push((format!("{p}.dcca.down"), vec![h, rh]));
        all.push((format!("{p}.experts.down.weight.dcca"), vec![e, rh, h]));
        all.push((format!("{p}.experts.up.weight.dcca"), vec![e, h, rh]));
        all.push((format!("{p}.dcca.up"), vec![rh, h]));
    }
    all
}

#[test]
fn weights_in_a_json_model_file_are_read_and_the_result_is_not_untrained() {
    let named = gpt_dcca_weights();
    let model = with_dcca_weights(&named);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpt-moe-dcca.json");
    std::fs::write(&path, weft::json::to_json(&model)).unwrap();
    let loaded = weft::load_model(&path, &weft::LoadOptions::default()).unwrap();
    let g = changed(loaded, (1, 4)).unwrap();
    assert!(!g.model_changes[0].untrained, "{:?}", g.model_changes);
    // A seed given for weights the model holds is not used, and the CLI says so.
    let o = crate::cli::weft(&[
        "check",
        path.to_str().unwrap(),
        "--allow",
        "dcca",
        "--dcca-seed",
        "7",
    ]);
    assert!(o.status.success(), "{}", crate::cli::stderr(&o));
    assert!(
        crate::cli::stderr(&o).contains("--dcca-seed 7 was not used"),
        "{}",
        crate::cli::stderr(&o)
    );
    assert!(
        g.model_changes[0].detail.contains("read from the model"),
        "{}",
        g.model_changes[0].detail
    );
    // The graph computes with the file's values: each weight is the file's, and the
    // equations on those values hold at ep=1, 2, 4.
    for (name, _) in &named {
        let (_, want) = weight(&model, name);
        let (_, got) = weight(&g, name);
        assert_eq!(want, got, "`{name}`");
    }
    let layers = gpt_layers(&g);
    let ins = inputs(&g, 3);
    for spec in [None, Some("ep=2"), Some("ep=4"), Some("tp=2,ep=2")] {
        let err = worst_against_equations(&g, &layers, spec, &ins);
        assert!(err <= TOLERANCE, "at {spec:?}: {err}");
    }
    // The source expert weights are gone (dead code), the DCCA ones in their place.
    assert!(
        !g.nodes()
            .any(|(_, n)| n.name == "layers.0.moe.experts.down.weight")
    );
}

#[test]
fn a_model_holding_some_dcca_weights_or_misshapen_ones_is_refused() {
    let mut named = gpt_dcca_weights();
    let missing = named.remove(2).0;
    let e = changed(with_dcca_weights(&named), (1, 4)).unwrap_err();
    assert!(
        e.contains("holds 7 of the 8 DCCA weights") && e.contains(&missing) && e.contains("mixing"),
        "{e}"
    );
    let mut named = gpt_dcca_weights();
    named[0].1 = vec![32, 9];
    let e = changed(with_dcca_weights(&named), (1, 4)).unwrap_err();
    assert!(
        e.contains("`layers.0.moe.dcca.down` is f32[32, 9]") && e.contains("[32, 8]"),
        "{e}"
    );
}

#[test]
fn drawn_weights_follow_the_seed() {
    let g = gpt_moe(&GptMoeConfig::tiny()).unwrap();
    let at = |seed| {
        weft::to_stage_allowing(g.clone(), weft::Stage::Raised, &dcca((1, 4), seed))
            .unwrap()
            .0
    };
    let (a, b, c) = (at(1), at(1), at(2));
    let name = "layers.1.moe.dcca.up";
    assert_eq!(weight(&a, name).1, weight(&b, name).1);
    assert_ne!(weight(&a, name).1, weight(&c, name).1);
    assert!(a.model_changes[0].detail.contains("drawn from seed 1"));
    // Every drawn weight has its own values.
    assert_ne!(
        weight(&a, "layers.0.moe.dcca.up").1,
        weight(&a, "layers.1.moe.dcca.up").1
    );
}

// ---- refusals -------------------------------------------------------------------------------------

#[test]
fn models_dcca_does_not_fit_are_refused_naming_why() {
    let e = changed(llama(&LlamaConfig::tiny()).unwrap(), (1, 4)).unwrap_err();
    assert!(e.contains("`tiny-llama` has no MoE layer"), "{e}");
    // r·h = 32/3.
    let e = changed(gpt_moe(&GptMoeConfig::tiny()).unwrap(), (1, 3)).unwrap_err();
    assert!(
        e.contains("MoE layer `layers.0.moe`: r·h = 1/3 · 32 is not a whole number"),
        "{e}"
    );
    // Twice.
    let once = changed(gpt_moe(&GptMoeConfig::tiny()).unwrap(), (1, 4)).unwrap();
    let e = changed(once, (1, 2)).unwrap_err();
    assert!(e.contains("already has DCCA applied"), "{e}");
}

/// The parameter count changes by exactly 2·r·h² per MoE layer: the experts keep theirs.
#[test]
fn parameters_grow_by_the_two_shared_projections_only() {
    let cfg = GptMoeConfig::tiny();
    let params = |g: &Graph| weft::ir::stats(g).unwrap().params.unwrap();
    let src = weft::to_stage(gpt_moe(&cfg).unwrap(), weft::Stage::Raised)
        .unwrap()
        .0;
    let g = changed(gpt_moe(&cfg).unwrap(), (1, 4)).unwrap();
    let h = cfg.hidden;
    assert_eq!(
        params(&g) - params(&src),
        u128::from(cfg.layers * 2 * (h / 4) * h)
    );
    let cfg = tiny_mixtral();
    let src = weft::to_stage(llama(&cfg).unwrap(), weft::Stage::Raised)
        .unwrap()
        .0;
    let g = changed(llama(&cfg).unwrap(), (1, 4)).unwrap();
    let h = cfg.hidden;
    assert_eq!(
        params(&g) - params(&src),
        u128::from(cfg.layers * 2 * (h / 4) * h)
    );
}

/// The layers of a raised PyTorch export, their weights found through the source graph's
/// MoE ops (PyTorch names its expert weights as it likes; DCCA's follow them).
fn raised_layers(source: &Graph, changed: &Graph, top_k: usize) -> Vec<Layer> {
    let producer = |v| source.node(source.value(v).producer);
    let name_of = |v| source.value(v).name.clone();
    let mut layers = Vec::new();
    for (_, d) in source.nodes() {
        let Op::MoeDispatch { num_experts } = d.op else {
            continue;
        };
        let e = num_experts as usize;
        let prefix = d.name.strip_suffix(".dispatch").unwrap().to_owned();
        let route = producer(d.inputs[1]);
        let router = producer(route.inputs[0]);
        assert!(matches!(
            router.op,
            Op::MatMul {
                transpose_b: true,
                ..
            }
        ));
        let entry = source
            .nodes()
            .find(|(_, n)| matches!(n.op, Op::ExpertMatMul { .. }) && n.inputs[0] == d.outputs[0])
            .unwrap()
            .1;
        let combine = source
            .nodes()
            .find(|(_, n)| n.op == Op::MoeCombine && n.inputs[2] == d.inputs[1])
            .unwrap()
            .1;
        let exit = producer(combine.inputs[0]);
        let dims = source
            .value(entry.inputs[2])
            .ty
            .shape
            .eval(&source.dims)
            .unwrap();
        let (h, fused) = (dims[2] as usize, dims[1] as usize);
        let (rh, inner) = (h / 4, fused / 2 * 4);
        let mut mats = vec![
            per_expert(
                changed,
                &format!("{}.dcca", name_of(entry.inputs[2])),
                e,
                rh,
                2 * inner,
                true,
            ),
            per_expert(
                changed,
                &format!("{}.dcca", name_of(exit.inputs[2])),
                e,
                inner,
                rh,
                true,
            ),
        ];
        layers.push(Layer {
            expert: Expert::FusedSwiGlu,
            top_k,
            normalize: true,
            router: matrix(changed, &name_of(router.inputs[1]), h, e, true),
            down: matrix(changed, &format!("{prefix}.dcca.down"), h, rh, false),
            experts: by_expert(&mut mats, e),
            up: matrix(changed, &format!("{prefix}.dcca.up"), rh, h, false),
            prefix,
        });
    }
    layers
}

/// PyTorch's Mixtral as `raise_moe` raises it: transposed expert weights, gate and up
/// fused into one product and split. DCCA scales the split with the inner width.
#[test]
fn a_raised_pytorch_mixtral_with_fused_gate_up_matches_the_equations() {
    let load = || crate::load("tests/onnx-models/mixtral/model.onnx");
    let source = weft::to_stage(load(), weft::Stage::Raised).unwrap().0;
    let g = changed(load(), (1, 4)).unwrap();
    let layers = raised_layers(&source, &g, 2);
    assert_eq!(layers.len(), 2);
    let ins = inputs(&g, 4);
    for spec in [None, Some("ep=2"), Some("ep=4"), Some("tp=2,ep=2")] {
        let err = worst_against_equations(&g, &layers, spec, &ins);
        assert!(err <= TOLERANCE, "at {spec:?}: {err}");
    }
    let split = g
        .nodes()
        .find(|(_, n)| matches!(n.op, Op::Split { .. }))
        .unwrap()
        .1;
    assert_eq!(
        split.op,
        Op::Split {
            axis: 1,
            sizes: vec![512, 512]
        }
    );
    let sharded = weft::shard(&g, &"ep=2".parse().unwrap()).unwrap();
    assert_eq!(all_to_all_widths(&sharded), vec![16; 4]);
}

// ---- honesty: every artefact says DCCA was applied ------------------------------------------

/// `weft check --json` with and without `--allow dcca` on BigMac's Table 4 model: the
/// parameters go 3.73B → 3.78B (+1.35%), exactly `2·r·h²` per layer more; the record says
/// the weights were drawn; without `--allow` nothing changes.
#[test]
fn check_reports_dcca_and_table_4s_parameters() {
    let check = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["check", "examples/gpt3-xl-moe.json", "--json"];
        args.extend_from_slice(extra);
        let out = crate::cli::weft(&args);
        assert!(out.status.success(), "{}", crate::cli::stderr(&out));
        serde_json::from_str(&crate::cli::stdout(&out)).unwrap()
    };
    let source = check(&[]);
    let bigmac = check(&["--allow", "dcca"]);
    assert_eq!(source["params"], 3_734_542_336u64);
    assert_eq!(bigmac["params"], 3_784_873_984u64);
    assert_eq!(3_784_873_984u64 - 3_734_542_336, 24 * 2 * 512 * 2048);
    // +1.35% as the paper rounds it.
    let growth = 3_784_873_984f64 / 3_734_542_336f64 - 1.0;
    assert_eq!(format!("{:.2}", growth * 100.0), "1.35");
    assert_eq!(source["model_changing_rewrites"], serde_json::json!([]));
    let changes = &bigmac["model_changing_rewrites"];
    assert_eq!(changes[0]["rule"], "dcca");
    assert_eq!(changes[0]["untrained"], true);
    let detail = changes[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("24 MoE layers") && detail.contains("width 512 instead of 2048"),
        "{detail}"
    );
    // The ratio and seed flags reach the pass.
    let half = check(&["--allow", "dcca", "--dcca-ratio", "0.5", "--dcca-seed", "9"]);
    assert_eq!(half["params"], 3_734_542_336u64 + 24 * 2 * 1024 * 2048);
    let detail = half["model_changing_rewrites"][0]["detail"]
        .as_str()
        .unwrap();
    assert!(
        detail.contains("r = 1/2") && detail.contains("seed 9"),
        "{detail}"
    );
}

/// Through sharding, saturation, extraction and scheduling the record stays on the
/// graph and reaches the plan; the compiled program (ep=2) computes what the changed
/// graph computes (itself proven against the equations above).
#[test]
fn a_compiled_dcca_plan_says_so_and_runs_the_changed_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-gpt-moe.json");
    std::fs::write(
        &path,
        weft::json::to_json(&gpt_moe(&GptMoeConfig::tiny()).unwrap()),
    )
    .unwrap();
    let changed_graph = changed(
        weft::load_model(&path, &Default::default()).unwrap(),
        (1, 4),
    )
    .unwrap();
    let sharded = weft::shard(&changed_graph, &"ep=2".parse().unwrap()).unwrap();
    assert_eq!(sharded.model_changes, changed_graph.model_changes);
    let compiled = weft::compile::compile(&weft::compile::CompileRequest {
        strategy: weft::passes::strategy::Strategy::Best,
        model: path.clone(),
        dims: Default::default(),
        mesh: Some("ep=2".parse().unwrap()),
        sp_norms: false,
        profile: weft::hardware::Profile::builtin("h100-sxm-8").unwrap(),
        max_memory: None,
        plan_path: None,
        allow: dcca((1, 4), 7),
    })
    .unwrap();
    assert_eq!(
        compiled.plan.model_changing_rewrites,
        changed_graph.model_changes
    );
    assert_eq!(compiled.program.model_changes, changed_graph.model_changes);
    let text = compiled.plan.to_text();
    assert!(
        text.contains(weft::ir::model_change::OUTPUTS_DIFFER) && text.contains("dcca (r = 1/4"),
        "{text}"
    );
    let ins = inputs(&changed_graph, 8);
    let opts = RunOptions::default();
    let want = run(&changed_graph, &ins, &opts).unwrap();
    let got = run(&compiled.program, &ins, &opts).unwrap();
    let err = crate::worst_relative(&want, &got);
    assert!(err <= TOLERANCE, "compiled program: {err}");
    // The plan itself, as `weft run PLAN` runs it (its streams, events and kernel
    // configurations: the up-projection after the all-gather is a fused all-gather +
    // GEMM whose chunk count the cost model chose).
    let got = weft::cpu::run_plan(&compiled.program, &compiled.plan, &ins, &opts)
        .unwrap_or_else(|e| panic!("{e}"));
    let err = crate::worst_relative(&want, &got);
    assert!(err <= TOLERANCE, "compiled plan: {err}");
}

/// BigMac's Table 4 (GPT3-XL base, 64 experts, top-8, r = 0.25) at `ep=32` and 0.5M
/// tokens per iteration (`batch=256` × 2048), from `weft check --json`'s `training` block
/// (helper P's, whose test covers the fine-grained side): FLOPs (forward and backward)
/// 3,490.37T → 3,648.70T, +4.54% — exactly Table 3's `12·r·b·s·l·h²` more; the
/// all-to-all volume 1,488 → 372 in the paper's unit (Table 3's `8·b·s·l·h·top_k·(ep−1)/ep`:
/// BF16 bytes / 2^30, the block's `all_to_all_gib_bytes`), a quarter of the elements.
#[test]
fn check_reproduces_table_4s_flops_and_all_to_all_volume() {
    let training = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "check",
            "examples/gpt3-xl-moe.json",
            "--json",
            "--mesh",
            "ep=32",
            "--dim",
            "batch=256",
        ];
        args.extend_from_slice(extra);
        let out = crate::cli::weft(&args);
        assert!(out.status.success(), "{}", crate::cli::stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&crate::cli::stdout(&out)).unwrap();
        v["training"].clone()
    };
    let source = training(&[]);
    let bigmac = training(&["--allow", "dcca"]);
    let int = |v: &serde_json::Value, key: &str| -> u128 {
        u128::from(
            v[key]
                .as_u64()
                .unwrap_or_else(|| panic!("no `{key}` in {v}")),
        )
    };
    let float = |v: &serde_json::Value, key: &str| {
        v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no `{key}` in {v}"))
    };
    let (bs, l, h) = (524_288u128, 24u128, 2048u128);
    assert_eq!(int(&bigmac, "tokens"), bs);
    // FLOPs: the two projections' 12·r·b·s·l·h² (r = 1/4) more, the experts' unchanged.
    let (before, after) = (int(&source, "flops"), int(&bigmac, "flops"));
    assert_eq!(after - before, 12 * bs * l * h * h / 4);
    assert_eq!((after as f64 / 1e10).round() / 100.0, 3_648.70);
    let growth = after as f64 / before as f64 - 1.0;
    assert_eq!(format!("{:.2}", growth * 100.0), "4.54", "{growth}");
    // All-to-all: 1,488 → 372 in the paper's unit; elements and bytes each a quarter.
    assert_eq!(float(&source, "all_to_all_gib_bytes"), 1488.0);
    assert_eq!(float(&bigmac, "all_to_all_gib_bytes"), 372.0);
    assert_eq!(float(&bigmac, "all_to_all_gib_elements"), 186.0);
    assert_eq!(
        int(&bigmac, "all_to_all_elements") * 4,
        int(&source, "all_to_all_elements")
    );
    assert_eq!(
        int(&bigmac, "all_to_all_bytes"),
        2 * int(&bigmac, "all_to_all_elements")
    );
}

/// Without `--allow dcca` nothing changes on any example or ONNX fixture; with it, the
/// MoE models are rewritten and the dense ones refused (never silently left as they were).
#[test]
fn dcca_fires_only_when_asked_on_every_example_and_fixture() {
    let mut models: Vec<String> = std::fs::read_dir(crate::repo("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| format!("examples/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    for dir in std::fs::read_dir(crate::repo("tests/onnx-models")).unwrap() {
        let path = dir.unwrap().path().join("model.onnx");
        if path.exists() {
            let name = path
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            models.push(format!("tests/onnx-models/{name}/model.onnx"));
        }
    }
    models.sort();
    assert!(models.len() >= 11, "{models:?}");
    for model in &models {
        let plain = weft::to_stage(crate::load(model), weft::Stage::Raised)
            .unwrap()
            .0;
        assert!(plain.model_changes.is_empty(), "{model}");
        assert!(
            !plain.nodes().any(|(_, n)| n.name.contains(".dcca")),
            "{model}"
        );
        let has_moe = plain
            .nodes()
            .any(|(_, n)| matches!(n.op, Op::MoeDispatch { .. }));
        match changed(crate::load(model), (1, 4)) {
            Ok(g) => {
                assert!(has_moe, "{model}: DCCA applied to a dense model");
                assert_eq!(g.model_changes.len(), 1, "{model}");
                assert!(g.nodes().any(|(_, n)| n.name.ends_with(".dcca.up_proj")));
            }
            Err(e) => {
                assert!(!has_moe, "{model}: {e}");
                assert!(e.contains("has no MoE layer"), "{model}: {e}");
            }
        }
    }
}
