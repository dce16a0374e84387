//! Shared helpers: a deterministic PRNG, a graph builder that remembers what it was fed,
//! index arithmetic for the references, and comparisons with stated tolerances.

use weft_backend_cpu::{ExecError, RunOptions, Tensors, run};
use weft_ir::{DType, Graph, Op, Shape, Tensor, ValueId};

/// Tolerance `(rtol, atol)` for elementwise float ops: `|got - want| <= atol + rtol * |want|`.
pub const EW: (f64, f64) = (1e-5, 1e-6);
/// Tolerance for ops that sum many products or squares (matmul, attention, norms).
pub const SUMS: (f64, f64) = (1e-4, 1e-5);

// ---- random numbers -------------------------------------------------------------------------

/// SplitMix64: a tiny deterministic generator, independent of the one in `weft_ir::rng`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `lo..hi`.
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(lo < hi);
        lo + (self.next_u64() % (hi - lo) as u64) as i64
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// Standard normal (Box–Muller), never exactly zero.
    pub fn normal(&mut self) -> f64 {
        loop {
            let u1 = 1.0 - self.unit();
            let u2 = self.unit();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            if z as f32 != 0.0 {
                return z;
            }
        }
    }

    /// `n` standard-normal values.
    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal() as f32).collect()
    }

    /// `n` normal values with standard deviation `scale`.
    pub fn scaled_normals(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() as f32 * scale).collect()
    }

    /// `n` values with magnitude uniform in `[lo, hi)` and a random sign.
    pub fn away_from_zero(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let m = (lo + (hi - lo) * self.unit()) as f32;
                if self.coin() { m } else { -m }
            })
            .collect()
    }

    /// `n` values uniform in `[lo, hi)` (positive when `lo > 0`).
    pub fn uniforms(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (hi - lo) * self.unit()) as f32)
            .collect()
    }

    /// `n` integers in `lo..hi`.
    pub fn ints(&mut self, n: usize, lo: i64, hi: i64) -> Vec<i64> {
        (0..n).map(|_| self.int(lo, hi)).collect()
    }
}

// ---- tensors ------------------------------------------------------------------------------------

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

pub fn tf(shape: &[usize], data: Vec<f32>) -> Tensor {
    Tensor::from_f32(DType::F32, shape.to_vec(), data).expect("f32 tensor")
}

pub fn ti(shape: &[usize], data: Vec<i64>) -> Tensor {
    Tensor::from_i64(DType::I64, shape.to_vec(), data).expect("i64 tensor")
}

pub fn ti32(shape: &[usize], data: Vec<i64>) -> Tensor {
    Tensor::from_i64(DType::I32, shape.to_vec(), data).expect("i32 tensor")
}

pub fn tb(shape: &[usize], data: Vec<bool>) -> Tensor {
    Tensor::from_bool(shape.to_vec(), data).expect("bool tensor")
}

/// A random standard-normal f32 tensor and its values.
pub fn randn(rng: &mut Rng, shape: &[usize]) -> (Tensor, Vec<f32>) {
    let data = rng.normals(numel(shape));
    (tf(shape, data.clone()), data)
}

pub fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

pub fn floats(t: &Tensor) -> &[f32] {
    t.as_f32()
        .unwrap_or_else(|| panic!("expected a float tensor, got {t:?}"))
}

pub fn ints(t: &Tensor) -> &[i64] {
    t.as_i64()
        .unwrap_or_else(|| panic!("expected an integer tensor, got {t:?}"))
}

// ---- graphs -------------------------------------------------------------------------------------

/// A graph under construction plus the tensors fed to its inputs.
#[derive(Debug)]
pub struct Builder {
    pub g: Graph,
    feeds: Tensors,
}

pub fn shape_of(dims: &[usize]) -> Shape {
    Shape::new(dims.iter().map(|&d| d as u64))
}

impl Builder {
    pub fn new(name: &str) -> Builder {
        Builder {
            g: Graph::new(name),
            feeds: Tensors::new(),
        }
    }

    /// A graph input of the tensor's type; the tensor is what the run feeds it.
    pub fn input(&mut self, name: &str, t: Tensor) -> ValueId {
        let v = self
            .g
            .add(
                name,
                Op::Input {
                    dtype: t.dtype(),
                    shape: shape_of(t.shape()),
                },
                &[],
            )
            .unwrap_or_else(|e| panic!("input `{name}`: {e}"));
        self.feeds.insert(name.to_owned(), t);
        v
    }

    /// A single-output node.
    pub fn op(&mut self, name: &str, op: Op, inputs: &[ValueId]) -> ValueId {
        self.g
            .add(name, op, inputs)
            .unwrap_or_else(|e| panic!("node `{name}`: {e}"))
    }

    /// A node with several outputs; returns them in order.
    pub fn multi(&mut self, name: &str, op: Op, inputs: &[ValueId]) -> Vec<ValueId> {
        let node = self
            .g
            .add_node(name, op, inputs.to_vec())
            .unwrap_or_else(|e| panic!("node `{name}`: {e}"));
        self.g.node(node).outputs.clone()
    }

    /// Runs the graph with `outputs` as its outputs.
    pub fn try_run(&mut self, outputs: &[ValueId]) -> Result<Vec<Tensor>, ExecError> {
        self.g.outputs = outputs.to_vec();
        let options = RunOptions::default();
        run(&self.g, &self.feeds, &options).map(|outs| outs.into_iter().map(|(_, t)| t).collect())
    }

    /// Runs the graph; the run must succeed.
    #[track_caller]
    pub fn run(&mut self, outputs: &[ValueId]) -> Vec<Tensor> {
        match self.try_run(outputs) {
            Ok(outs) => outs,
            Err(e) => panic!("graph `{}` failed: {e}", self.g.name),
        }
    }
}

/// Builds `op(inputs...)` as a one-node graph, runs it and returns its outputs.
#[track_caller]
pub fn run_op(op: Op, inputs: Vec<Tensor>) -> Vec<Tensor> {
    let mut b = build_op(op, inputs);
    let outs = b.g.nodes().last().map(|(_, n)| n.outputs.clone()).unwrap();
    b.run(&outs)
}

/// Like [`run_op`], returning the run's result instead of insisting on success.
pub fn try_run_op(op: Op, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ExecError> {
    let mut b = build_op(op, inputs);
    let outs = b.g.nodes().last().map(|(_, n)| n.outputs.clone()).unwrap();
    b.try_run(&outs)
}

fn build_op(op: Op, inputs: Vec<Tensor>) -> Builder {
    let mut b = Builder::new(op.name());
    let ids: Vec<ValueId> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, t)| b.input(&format!("in{i}"), t))
        .collect();
    b.multi("node", op, &ids);
    b
}

// ---- index arithmetic ---------------------------------------------------------------------------

/// Multi-index of row-major position `flat`.
pub fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = flat % shape[d];
        flat /= shape[d];
    }
    idx
}

/// Row-major position of a multi-index.
pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &n)| {
        assert!(i < n, "index {idx:?} out of shape {shape:?}");
        acc * n + i
    })
}

/// NumPy's broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    let pad = |s: &[usize], i: usize| {
        let off = rank - s.len();
        if i < off { 1 } else { s[i - off] }
    };
    (0..rank)
        .map(|i| {
            let (x, y) = (pad(a, i), pad(b, i));
            assert!(
                x == y || x == 1 || y == 1,
                "{a:?} and {b:?} do not broadcast"
            );
            x.max(y)
        })
        .collect()
}

/// Position in a tensor of shape `shape` that broadcasts to output index `out`
/// (dims aligned on the right; size-1 dims repeat).
pub fn broadcast_source(out: &[usize], shape: &[usize]) -> usize {
    let off = out.len() - shape.len();
    let idx: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &n)| if n == 1 { 0 } else { out[off + i] })
        .collect();
    ravel(&idx, shape)
}

/// Normalises a possibly negative axis.
pub fn axis(a: i64, rank: usize) -> usize {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    assert!((0..r).contains(&a), "axis {a} out of range for rank {rank}");
    a as usize
}

// ---- comparisons --------------------------------------------------------------------------------

/// `got` is an f32 tensor of `shape` whose every element is within `atol + rtol * |want|`.
#[track_caller]
pub fn assert_close(what: &str, got: &Tensor, shape: &[usize], want: &[f64], tol: (f64, f64)) {
    let (rtol, atol) = tol;
    assert_eq!(got.dtype(), DType::F32, "{what}: dtype");
    assert_eq!(got.shape(), shape, "{what}: shape");
    assert_eq!(
        want.len(),
        numel(shape),
        "{what}: reference has the wrong length"
    );
    let g = floats(got);
    let bad: Vec<usize> = (0..want.len())
        .filter(|&i| {
            let (x, w) = (g[i] as f64, want[i]);
            if w.is_nan() {
                !x.is_nan()
            } else if w.is_infinite() {
                x != w
            } else {
                let err = (x - w).abs();
                err.is_nan() || err > atol + rtol * w.abs()
            }
        })
        .collect();
    if let Some(&i) = bad.first() {
        let worst = bad
            .iter()
            .copied()
            .max_by(|&a, &b| {
                let ea = (g[a] as f64 - want[a]).abs();
                let eb = (g[b] as f64 - want[b]).abs();
                ea.total_cmp(&eb)
            })
            .unwrap();
        panic!(
            "{what}: {} of {} elements are off (rtol {rtol}, atol {atol}); first at {:?}: got {}, want {}; worst at {:?}: got {}, want {}",
            bad.len(),
            want.len(),
            unravel(i, shape),
            g[i],
            want[i],
            unravel(worst, shape),
            g[worst],
            want[worst],
        );
    }
}

/// `got` is an integer tensor of `dtype` and `shape` holding exactly `want`.
#[track_caller]
pub fn assert_ints(what: &str, got: &Tensor, dtype: DType, shape: &[usize], want: &[i64]) {
    assert_eq!(got.dtype(), dtype, "{what}: dtype");
    assert_eq!(got.shape(), shape, "{what}: shape");
    let g = ints(got);
    assert_eq!(g.len(), want.len(), "{what}: length");
    if let Some(i) = (0..want.len()).find(|&i| g[i] != want[i]) {
        panic!(
            "{what}: element {:?} is {}, want {} (got {g:?}, want {want:?})",
            unravel(i, shape),
            g[i],
            want[i]
        );
    }
}

/// `got` is an f32 tensor equal to `want` bit for bit (layout ops move values, never change them).
#[track_caller]
pub fn assert_same_f32(what: &str, got: &Tensor, shape: &[usize], want: &[f32]) {
    assert_eq!(got.dtype(), DType::F32, "{what}: dtype");
    assert_eq!(got.shape(), shape, "{what}: shape");
    let g = floats(got);
    assert_eq!(g.len(), want.len(), "{what}: length");
    if let Some(i) = (0..want.len()).find(|&i| g[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: element {:?} is {}, want {}",
            unravel(i, shape),
            g[i],
            want[i]
        );
    }
}

/// Whether `x` is exactly representable in bf16 (low 16 bits clear).
pub fn is_bf16(x: f32) -> bool {
    x.to_bits() & 0xffff == 0
}

/// Round-to-nearest-even from f32 to bf16, by bit manipulation (finite inputs).
pub fn bf16_round(x: f32) -> f32 {
    let bits = x.to_bits();
    let lsb = (bits >> 16) & 1;
    f32::from_bits(bits.wrapping_add(0x7fff + lsb) & 0xffff_0000)
}

/// Spacing of bf16 values around `x` (8 significant bits).
pub fn bf16_ulp(x: f64) -> f64 {
    let a = x.abs();
    if a < f32::MIN_POSITIVE as f64 {
        2f64.powi(-133)
    } else {
        2f64.powi(a.log2().floor() as i32 - 7)
    }
}

/// `got` is a bf16 tensor of `shape`; each element is representable in bf16 and within half
/// a bf16 ulp of `want` (the exact result), plus `slop * |want| + 1e-6` for f32 arithmetic
/// before the final rounding.
#[track_caller]
pub fn assert_bf16(what: &str, got: &Tensor, shape: &[usize], want: &[f64], slop: f64) {
    assert_eq!(got.dtype(), DType::Bf16, "{what}: dtype");
    assert_eq!(got.shape(), shape, "{what}: shape");
    let g = floats(got);
    assert_eq!(g.len(), want.len(), "{what}: length");
    for i in 0..want.len() {
        assert!(
            is_bf16(g[i]),
            "{what}: element {:?} = {} is not a bf16 value",
            unravel(i, shape),
            g[i]
        );
        let tol = 0.5 * bf16_ulp(want[i]) + slop * want[i].abs() + 1e-6;
        assert!(
            (g[i] as f64 - want[i]).abs() <= tol,
            "{what}: element {:?} is {}, want {} rounded to bf16 (within {tol})",
            unravel(i, shape),
            g[i],
            want[i]
        );
    }
}

/// The run failed with a kernel error at node `node` (not a panic, not another kind of error).
#[track_caller]
pub fn assert_kernel_error(what: &str, result: Result<Vec<Tensor>, ExecError>, node: &str) {
    match result {
        Err(ExecError::Kernel { node: n, .. }) if n == node => {}
        Err(e) => panic!("{what}: expected a kernel error at `{node}`, got: {e}"),
        Ok(outs) => panic!("{what}: expected an error, got {outs:?}"),
    }
}

// ---- shared references --------------------------------------------------------------------------

/// Reference matmul in f64: `[.., m, k] x [.., k, n]` with broadcast leading dims; a
/// transposed operand has its last two dims swapped. Returns the shape and values.
pub fn ref_matmul(
    a: &[f32],
    ashape: &[usize],
    b: &[f32],
    bshape: &[usize],
    ta: bool,
    tb: bool,
) -> (Vec<usize>, Vec<f64>) {
    let (ra, rb) = (ashape.len(), bshape.len());
    let (ar, ac) = (ashape[ra - 2], ashape[ra - 1]);
    let (br, bc) = (bshape[rb - 2], bshape[rb - 1]);
    let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if tb { (bc, br) } else { (br, bc) };
    assert_eq!(k, k2, "reference matmul: inner dims");
    let (batch_a, batch_b) = (&ashape[..ra - 2], &bshape[..rb - 2]);
    let batch = broadcast_shapes(batch_a, batch_b);
    let nb = numel(&batch);
    let mut out = Vec::with_capacity(nb * m * n);
    for bi in 0..nb {
        let idx = unravel(bi, &batch);
        let a0 = broadcast_source(&idx, batch_a) * ar * ac;
        let b0 = broadcast_source(&idx, batch_b) * br * bc;
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f64;
                for p in 0..k {
                    let x = if ta {
                        a[a0 + p * ac + i]
                    } else {
                        a[a0 + i * ac + p]
                    };
                    let y = if tb {
                        b[b0 + j * bc + p]
                    } else {
                        b[b0 + p * bc + j]
                    };
                    acc += x as f64 * y as f64;
                }
                out.push(acc);
            }
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    (shape, out)
}

/// Reference softmax along `ax` in f64 (max subtracted first).
pub fn ref_softmax(x: &[f32], shape: &[usize], ax: usize) -> Vec<f64> {
    let n = shape[ax];
    let inner: usize = shape[ax + 1..].iter().product();
    let outer: usize = shape[..ax].iter().product();
    let mut out = vec![0f64; x.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| o * n * inner + j * inner + i;
            let max = (0..n).map(|j| x[at(j)] as f64).fold(f64::MIN, f64::max);
            let sum: f64 = (0..n).map(|j| (x[at(j)] as f64 - max).exp()).sum();
            for j in 0..n {
                out[at(j)] = (x[at(j)] as f64 - max).exp() / sum;
            }
        }
    }
    out
}

/// Which attention mask a reference run applies.
#[derive(Debug, Clone)]
pub enum RefMask<'a> {
    None,
    /// `true` keeps the score; broadcast from `shape` to `[b, hq, s, t]`.
    Bool(&'a [bool], &'a [usize]),
    /// Added to the score; broadcast from `shape` to `[b, hq, s, t]`.
    Float(&'a [f32], &'a [usize]),
}

/// Attention sizes: `q [b, hq, s, d]`, `k [b, hkv, t, d]`, `v [b, hkv, t, dv]`.
#[derive(Debug, Clone, Copy)]
pub struct AttnDims {
    pub b: usize,
    pub hq: usize,
    pub hkv: usize,
    pub s: usize,
    pub t: usize,
    pub d: usize,
    pub dv: usize,
}

/// Reference attention in f64, straight from the definition: for every query row, the
/// visible keys' scores `q·k·scale + mask`, their softmax, and the weighted sum of `v`.
/// A row that sees no key gives zeros (docs/cpu-executor.md).
pub fn ref_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: AttnDims,
    causal: bool,
    scale: Option<f64>,
    mask: RefMask<'_>,
) -> Vec<f64> {
    let AttnDims {
        b,
        hq,
        hkv,
        s,
        t,
        d,
        dv,
    } = n;
    let group = hq / hkv;
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
    let mut out = vec![0f64; b * hq * s * dv];
    for bi in 0..b {
        for h in 0..hq {
            let kh = h / group;
            for i in 0..s {
                let mut scores: Vec<(usize, f64)> = Vec::new();
                for j in 0..t {
                    if causal && (j as i64) > i as i64 + t as i64 - s as i64 {
                        continue;
                    }
                    let mut dot = 0f64;
                    for c in 0..d {
                        let qv = q[((bi * hq + h) * s + i) * d + c] as f64;
                        let kv = k[((bi * hkv + kh) * t + j) * d + c] as f64;
                        dot += qv * kv;
                    }
                    let mut score = dot * scale;
                    match &mask {
                        RefMask::None => {}
                        RefMask::Bool(m, shape) => {
                            if !m[broadcast_source(&[bi, h, i, j], shape)] {
                                continue;
                            }
                        }
                        RefMask::Float(m, shape) => {
                            score += m[broadcast_source(&[bi, h, i, j], shape)] as f64;
                        }
                    }
                    if score == f64::NEG_INFINITY {
                        continue;
                    }
                    scores.push((j, score));
                }
                if scores.is_empty() {
                    continue;
                }
                let max = scores.iter().map(|p| p.1).fold(f64::MIN, f64::max);
                let sum: f64 = scores.iter().map(|p| (p.1 - max).exp()).sum();
                for c in 0..dv {
                    let mut acc = 0f64;
                    for &(j, sc) in &scores {
                        acc +=
                            (sc - max).exp() / sum * v[((bi * hkv + kh) * t + j) * dv + c] as f64;
                    }
                    out[((bi * hq + h) * s + i) * dv + c] = acc;
                }
            }
        }
    }
    out
}
