//! The operations of the IR.
//!
//! Every op is a variant of [`Op`] with its attributes as typed fields, so passes match
//! on structure rather than on strings. Inputs are positional; [`Op::arity`] says how
//! many each op takes and [`Op::num_outputs`] how many values it produces. The exact
//! semantics of every op (shapes, broadcasting, conventions such as causal alignment)
//! are written in `docs/json-format.md` and enforced by [`crate::infer`].

use crate::mesh::ReduceOp;
pub use crate::norm_matmul::NormKind;
use crate::types::{DType, Shape};

#[cfg(feature = "serde")]
fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(feature = "serde")]
fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

#[cfg(feature = "serde")]
fn is_minus_one(x: &i64) -> bool {
    *x == -1
}

#[cfg(feature = "serde")]
fn default_minus_one() -> i64 {
    -1
}

#[cfg(feature = "serde")]
fn default_true() -> bool {
    true
}

#[cfg(feature = "serde")]
fn is_true(b: &bool) -> bool {
    *b
}

#[cfg(feature = "serde")]
fn default_one() -> f64 {
    1.0
}

#[cfg(feature = "serde")]
fn is_one(x: &f64) -> bool {
    *x == 1.0
}

#[cfg(feature = "serde")]
fn default_eps() -> f64 {
    1e-5
}

/// How a weight or constant gets its values. Nothing is materialised until something
/// executes the graph, so a 70B-parameter model can be described by seeds alone.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "snake_case", deny_unknown_fields)
)]
pub enum Init {
    /// Normally distributed values from the counter-based generator in [`crate::rng`].
    Normal {
        seed: u64,
        #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "is_zero"))]
        mean: f64,
        std: f64,
    },
    /// Uniformly distributed values in `[low, high)` from [`crate::rng`].
    Uniform { seed: u64, low: f64, high: f64 },
    /// Every element equal to `value` (infinities and NaN allowed for float dtypes).
    Fill {
        #[cfg_attr(feature = "serde", serde(with = "crate::float_json"))]
        value: f64,
    },
    /// `start + i * step` for the `i`-th element in row-major order.
    Range {
        #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "is_zero"))]
        start: f64,
        #[cfg_attr(
            feature = "serde",
            serde(default = "default_one", skip_serializing_if = "is_one")
        )]
        step: f64,
    },
    /// Values written in the model file, row-major (infinities and NaN allowed for
    /// float dtypes; JSON writes them as `"inf"`, `"-inf"`, `"nan"`).
    Inline(#[cfg_attr(feature = "serde", serde(with = "crate::float_json::list"))] Vec<f64>),
    /// A `.npy` file, relative to the model file.
    Npy { path: String },
    /// One tensor of a `.safetensors` file, relative to the model file.
    Safetensors { path: String, tensor: String },
    /// Raw little-endian elements of the value's dtype (bools one byte each), row-major,
    /// starting at byte `offset` of a file relative to the model file: ONNX's external
    /// data. The bytes are read only when something executes the graph.
    Raw { path: String, offset: u64 },
}

impl Init {
    /// The external file this init reads, if any.
    pub fn external_path(&self) -> Option<&str> {
        match self {
            Init::Npy { path } | Init::Safetensors { path, .. } | Init::Raw { path, .. } => {
                Some(path)
            }
            _ => None,
        }
    }
}

/// One step of a [`Op::FusedElementwise`] kernel, applied to the running value.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "snake_case", deny_unknown_fields)
)]
pub enum FusedStep {
    /// The running value (input 0) times input `operand`: the producing GEMM, first
    /// step only.
    Matmul {
        operand: usize,
        #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "is_false"))]
        transpose_b: bool,
    },
    /// `running op input[operand]` (`input[operand] op running` with `swap`); `op` is
    /// `add`, `sub`, `mul` or `div`, broadcasting as the op does.
    Binary {
        op: Box<Op>,
        operand: usize,
        #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "is_false"))]
        swap: bool,
    },
    /// An element-wise unary op on the running value.
    Unary { op: Box<Op> },
}

impl std::fmt::Display for FusedStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FusedStep::Matmul {
                operand,
                transpose_b,
            } => write!(
                f,
                "matmul(#{operand}{})",
                if *transpose_b { "ᵀ" } else { "" }
            ),
            FusedStep::Binary { op, operand, swap } if *swap => {
                write!(f, "{}(#{operand}, ·)", op.name())
            }
            FusedStep::Binary { op, operand, .. } => write!(f, "{}(·, #{operand})", op.name()),
            FusedStep::Unary { op } => {
                let attrs = op.attr_text();
                if attrs.is_empty() {
                    f.write_str(op.name())
                } else {
                    write!(f, "{}{{{}}}", op.name(), attrs.join(","))
                }
            }
        }
    }
}

/// Which GELU formula an op uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum GeluApprox {
    /// `x * Φ(x)` with the exact error function.
    #[default]
    Erf,
    /// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
    Tanh,
}

/// What an [`Op::AllToAll`]'s blocks carry: the bytes a real runtime sends, which the
/// cost model and the communication report count (the executor always moves the whole
/// buffer, bit-exactly).
///
/// Expert parallelism sends padded blocks (`moe_pad`): each of a device's `G` blocks is
/// sized for all `N` of its routed rows, because any expert group may receive every row
/// (no capacity limit). A runtime sends the counts first (the graph does: a separate
/// all-to-all) and then only the rows that exist, NCCL's all-to-all-v; under uniform
/// routing a block carries `N/G` rows on average, so the expected payload is `1/G` of the
/// padded message. Pricing the padded buffer would count `G`× the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "snake_case", deny_unknown_fields)
)]
pub enum A2aPayload {
    /// Every element is data: the payload is the message.
    #[default]
    Dense,
    /// Padded expert blocks along `split_dim` (as `moe_pad` with `groups` groups lays them
    /// out): under uniform routing each block's rows are `1/groups` real, so the payload
    /// is the message over `groups` (rounded up to a byte).
    ExpertBlocks { groups: u64 },
}

impl A2aPayload {
    /// Whether this is the default, [`A2aPayload::Dense`] (left out of JSON).
    pub fn is_dense(&self) -> bool {
        matches!(self, A2aPayload::Dense)
    }

    /// The bytes a message of `message` bytes carries: the whole message when dense,
    /// `ceil(message / groups)` for padded expert blocks. `None` for zero groups (which
    /// the typing rule refuses).
    pub fn bytes(self, message: u64) -> Option<u64> {
        match self {
            A2aPayload::Dense => Some(message),
            A2aPayload::ExpertBlocks { groups } => (groups > 0).then(|| message.div_ceil(groups)),
        }
    }
}

impl std::fmt::Display for A2aPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            A2aPayload::Dense => f.write_str("dense"),
            A2aPayload::ExpertBlocks { groups } => write!(f, "expert_blocks/{groups}"),
        }
    }
}

/// Which of an [`Op::ExpertMatMul`]'s rows carry tokens: the rows and experts a grouped-GEMM
/// runtime computes (it has the counts), which the cost model prices. The executor always
/// computes every row, padding included, bit-exactly; the result does not depend on this.
///
/// Under expert parallelism the rows are the padded blocks an all-to-all delivered
/// ([`A2aPayload::ExpertBlocks`]): each block is sized for all of a peer's routed rows, of
/// which this device's expert group gets `1/groups` on average under uniform routing. The
/// types cannot say so: a block's real share depends on how many groups its sender split
/// its rows into, which a slice of the blocks (`expert-gemm-split-blocks`, counts `[1, E]`)
/// no longer shows; so the op carries it, as the all-to-all carries its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "snake_case", deny_unknown_fields)
)]
pub enum ExpertRows {
    /// Every row carries a token (the dispatch's rows, sorted by expert).
    #[default]
    Dense,
    /// Padded expert blocks (`moe_pad` with `groups` groups, then an all-to-all): under
    /// uniform routing `1/groups` of the rows carry tokens, spread evenly over the experts.
    ExpertBlocks { groups: u64 },
    /// Comet's per-group GEMM: padded blocks as above whose counts are masked to one of
    /// `expert_groups` equal expert groups, so `1/(groups·expert_groups)` of the rows carry
    /// tokens, all on `1/expert_groups` of the experts.
    OneExpertGroup { groups: u64, expert_groups: u64 },
}

/// The rows and experts an expert matmul computes on, by [`ExpertRows::carried`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CarriedRows {
    /// Rows that carry tokens (the expected value, rounded up to a row).
    pub rows: u64,
    /// Experts that receive any of them.
    pub experts: u64,
}

impl ExpertRows {
    /// Whether this is the default, [`ExpertRows::Dense`] (left out of JSON).
    pub fn is_dense(&self) -> bool {
        matches!(self, ExpertRows::Dense)
    }

    /// `(row share, expert share)` denominators: rows carry `1/.0` of the tokens' rows on
    /// `1/.1` of the experts. `None` for a zero group count or past `u64`.
    fn denominators(self) -> Option<(u64, u64)> {
        let (rows, experts) = match self {
            ExpertRows::Dense => (1, 1),
            ExpertRows::ExpertBlocks { groups } => (groups, 1),
            ExpertRows::OneExpertGroup {
                groups,
                expert_groups,
            } => (groups.checked_mul(expert_groups)?, expert_groups),
        };
        (rows > 0 && experts > 0).then_some((rows, experts))
    }

    /// What a grouped GEMM over `rows` rows and `experts` experts computes on: `rows/groups`
    /// rows (rounded up) on every expert, or Comet's group share of both. `None` for zero
    /// groups, and for expert groups that do not divide `experts` (the typing rule refuses
    /// both).
    pub fn carried(self, rows: u64, experts: u64) -> Option<CarriedRows> {
        let (row_share, expert_share) = self.denominators()?;
        if experts % expert_share != 0 {
            return None;
        }
        Some(CarriedRows {
            rows: rows.div_ceil(row_share),
            experts: experts / expert_share,
        })
    }
}

impl std::fmt::Display for ExpertRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpertRows::Dense => f.write_str("dense"),
            ExpertRows::ExpertBlocks { groups } => write!(f, "expert_blocks/{groups}"),
            ExpertRows::OneExpertGroup {
                groups,
                expert_groups,
            } => write!(f, "expert_blocks/{groups}/expert_group_of_{expert_groups}"),
        }
    }
}

/// The reduction of a [`Op::Reduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
}

impl ReduceKind {
    pub const fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "sum",
            ReduceKind::Mean => "mean",
            ReduceKind::Max => "max",
        }
    }
}

/// An IR operation with its attributes.
///
/// Axes given as `i64` may be negative and count from the end, as in NumPy and ONNX.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        tag = "op",
        content = "attrs",
        rename_all = "snake_case",
        deny_unknown_fields
    )
)]
pub enum Op {
    // ---- sources -------------------------------------------------------------------
    /// A graph input supplied at run time.
    Input {
        dtype: DType,
        shape: Shape,
    },
    /// A trained parameter (counted in the parameter total).
    Weight {
        dtype: DType,
        shape: Shape,
        init: Init,
    },
    /// A non-trainable constant (position ids, masks, scalars).
    Constant {
        dtype: DType,
        shape: Shape,
        init: Init,
    },

    // ---- linear algebra ------------------------------------------------------------
    /// `a @ b` over the last two dims, leading dims broadcast: `[.., m, k] x [.., k, n]`.
    #[cfg_attr(feature = "serde", serde(rename = "matmul"))]
    MatMul {
        #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "is_false"))]
        transpose_a: bool,
        #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "is_false"))]
        transpose_b: bool,
    },

    // ---- elementwise (binary ops broadcast like NumPy) -------------------------------
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Neg,
    Exp,
    Sqrt,
    Rsqrt,
    Reciprocal,
    Silu,
    Gelu {
        #[cfg_attr(feature = "serde", serde(default))]
        approximate: GeluApprox,
    },
    Relu,
    Sigmoid,
    Tanh,

    // ---- normalisation ---------------------------------------------------------------
    /// Softmax along `axis`.
    Softmax {
        #[cfg_attr(
            feature = "serde",
            serde(default = "default_minus_one", skip_serializing_if = "is_minus_one")
        )]
        axis: i64,
    },
    /// `x / sqrt(mean(x², last axis) + eps) * weight`; inputs `x`, `weight`.
    #[cfg_attr(feature = "serde", serde(rename = "rms_norm"))]
    RmsNorm {
        #[cfg_attr(feature = "serde", serde(default = "default_eps"))]
        eps: f64,
    },
    /// `(x - mean) / sqrt(var + eps) * weight (+ bias)` over the last axis;
    /// inputs `x`, `weight`, optional `bias`.
    LayerNorm {
        #[cfg_attr(feature = "serde", serde(default = "default_eps"))]
        eps: f64,
    },

    // ---- attention -------------------------------------------------------------------
    /// Scaled dot-product attention with grouped-query heads.
    /// Inputs `q [b, hq, s, d]`, `k [b, hkv, t, d]`, `v [b, hkv, t, dv]`, optional mask
    /// broadcastable to `[b, hq, s, t]` (bool: true keeps; float: added to scores).
    /// `hq` must be a multiple of `hkv`; query head `i` uses KV head `i / (hq / hkv)`.
    /// Causal masking is aligned bottom-right: query `i` sees keys `j <= i + t - s`.
    Attention {
        #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "is_false"))]
        causal: bool,
        /// Score scale; `1/sqrt(d)` when absent.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        scale: Option<f64>,
    },
    /// Rotary-embedding tables: positions (integer, any shape) to `cos` and `sin` of
    /// shape `positions.shape + [dim / 2]`, with `angle = pos * theta^(-2i/dim)`.
    RopeCache {
        theta: f64,
        dim: u64,
    },
    /// Rotary embedding of `x [.., d]` with tables `cos`, `sin` broadcastable to
    /// `[.., d/2]`. Non-interleaved rotates the halves `(x[:d/2], x[d/2:])` (Llama's
    /// `rotate_half`); interleaved rotates pairs `(x[2i], x[2i+1])` (GPT-J).
    Rope {
        #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "is_false"))]
        interleaved: bool,
    },

    // ---- indexing and layout -------------------------------------------------------------
    /// `take(data, indices, axis)`; with `axis = 0` this is an embedding lookup.
    Gather {
        #[cfg_attr(feature = "serde", serde(default))]
        axis: i64,
    },
    /// Same elements, new shape (row-major); element counts must agree.
    Reshape {
        shape: Shape,
    },
    /// Output dim `i` is input dim `perm[i]`.
    Transpose {
        perm: Vec<usize>,
    },
    /// Join inputs along `axis`.
    Concat {
        axis: i64,
    },
    /// Cut the input along `axis` into pieces of the given sizes (one output each).
    Split {
        axis: i64,
        sizes: Vec<u64>,
    },
    /// Elements `start..end` along `axis` (negative bounds count from the end; `end` is clamped).
    Slice {
        axis: i64,
        start: i64,
        end: i64,
    },
    /// Convert element type.
    Cast {
        to: DType,
    },
    /// Reduce over `axes`.
    Reduce {
        kind: ReduceKind,
        axes: Vec<i64>,
        #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "is_false"))]
        keepdims: bool,
    },
    /// The `k` largest (or smallest) values along `axis` and their `i64` indices,
    /// sorted, ties broken by the lower index.
    #[cfg_attr(feature = "serde", serde(rename = "top_k"))]
    TopK {
        k: u64,
        #[cfg_attr(
            feature = "serde",
            serde(default = "default_minus_one", skip_serializing_if = "is_minus_one")
        )]
        axis: i64,
        #[cfg_attr(
            feature = "serde",
            serde(default = "default_true", skip_serializing_if = "is_true")
        )]
        largest: bool,
    },

    /// `x` broadcast (NumPy rules) against `shape`; the result has the broadcast shape.
    Expand {
        shape: Shape,
    },
    /// `cond ? a : b` element-wise, all three broadcast together; `cond` is bool.
    Where,
    /// Whether each element is NaN (bool result).
    IsNan,

    // ---- mixture of experts ------------------------------------------------------------
    /// Top-k gating: router logits `[T, E]` to routing weights `[T, k]` (logits' dtype)
    /// and expert ids `[T, k]` (i64). Weights are the softmax over all experts taken at
    /// the top k; with `normalize` they are rescaled to sum to one (Mixtral).
    MoeRoute {
        top_k: u64,
        #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "is_false"))]
        normalize: bool,
    },
    /// Tokens `[T, H]` and expert ids `[T, k]` to the `T*k` token copies sorted by expert
    /// (stable: by expert, then token, then slot) `[T*k, H]`, and tokens per expert `[E]` (i64).
    /// No capacity limit: no token is dropped.
    MoeDispatch {
        num_experts: u64,
    },
    /// Grouped matmul: rows `[N, K]` grouped by expert counts `[E]` (consecutive runs),
    /// each run multiplied by its expert's weight `[E, K, M]` (or `[E, M, K]` transposed).
    /// With blocked counts `[B, E]` the rows are `B` equal blocks, block `b` holding runs
    /// of `counts[b, e]` rows per expert followed by padding rows, whose results are zero
    /// (the layout expert parallelism receives from its all-to-all).
    #[cfg_attr(feature = "serde", serde(rename = "expert_matmul"))]
    ExpertMatMul {
        #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "is_false"))]
        transpose_b: bool,
        /// Which rows carry tokens, for pricing (padded expert blocks: `1/groups` of them
        /// under uniform routing); dense by default.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "ExpertRows::is_dense")
        )]
        rows: ExpertRows,
    },
    /// Expert-parallel send buffer: rows `[N, H]` sorted by expert with counts `[E]` to
    /// `[G, N, H]`, block `g` holding the rows of experts `g·E/G … (g+1)·E/G - 1` (a
    /// contiguous run) followed by zero rows.
    MoePad {
        groups: u64,
    },
    /// Inverse of `moe_pad`: `[G, N', H]` blocks and counts `[E]` back to the `[N, H]` rows
    /// sorted by expert (`N` = the counts' sum, read from the output type: `rows`).
    MoeUnpad {
        groups: u64,
        rows: u64,
    },
    /// Comet's per-expert-group results back in one blocked layout: inputs blocked counts
    /// `[B, E]`, then `G` expert-matmul results `[B·N, M]`, result `g` holding in each
    /// block only the runs of expert group `g` (experts `g·E/G … (g+1)·E/G − 1`) from the
    /// block's first row, then zeros. Block `b` of the output is group 0's runs, group 1's
    /// runs, … in order, then zeros: what one expert matmul over all `E` experts gives.
    MoeRegroup,
    /// Inverse of dispatch: expert outputs `[T*k, H]` in dispatch order, routing weights
    /// `[T, k]` and expert ids `[T, k]` to `out[t] = sum_j w[t, j] * y[slot(t, j)]`, `[T, H]`.
    MoeCombine,

    // ---- collectives (each runs over one mesh axis) -------------------------------------
    /// Every device along `axis` gets the reduction of all devices' inputs.
    AllReduce {
        axis: String,
        #[cfg_attr(feature = "serde", serde(default))]
        op: ReduceOp,
    },
    /// Concatenate the devices' inputs along tensor dim `dim`, in device order.
    AllGather {
        axis: String,
        dim: i64,
    },
    /// Reduce, then device `i` keeps the `i`-th slice along `dim`.
    ReduceScatter {
        axis: String,
        dim: i64,
        #[cfg_attr(feature = "serde", serde(default))]
        op: ReduceOp,
    },
    /// Split the input along `split_dim` into one chunk per device, send chunk `j` to
    /// device `j`, and concatenate what arrives along `concat_dim` in device order.
    #[cfg_attr(feature = "serde", serde(rename = "all_to_all"))]
    AllToAll {
        axis: String,
        split_dim: i64,
        concat_dim: i64,
        /// What the blocks carry, for counting bytes (padded expert blocks carry
        /// `1/groups` of the message under uniform routing); dense by default.
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "A2aPayload::is_dense")
        )]
        payload: A2aPayload,
    },
    /// Send the input to the device `shift` steps further along `axis` (cyclically).
    /// Produces no value; it is matched in program order with that device's `Recv`.
    Send {
        axis: String,
        shift: i64,
    },
    /// Receive a value of the given type from the device `shift` steps back along `axis`.
    Recv {
        axis: String,
        shift: i64,
        dtype: DType,
        shape: Shape,
    },
    /// Every device along `axis` gets the input of device `root`.
    Broadcast {
        axis: String,
        root: u64,
    },
    /// Replicated → split without communication: device `i` along `axis` keeps the
    /// `i`-th equal slice of its input along `dim` (MLIR's `all_slice`).
    AllSlice {
        axis: String,
        dim: i64,
    },
    /// Lookup in a table split by rows over `axis` (vocabulary-parallel embedding):
    /// device `i` holds rows `[i·n, (i+1)·n)` of the table (`data [n, ..]`); `indices` are
    /// global; rows this device does not hold give zeros, so the result is a partial sum
    /// over `axis`. Output shape as `gather` along axis 0.
    ShardedGather {
        axis: String,
    },
    /// A GEMM fused with the reduce-scatter of its result (T3, Flux GEMM+RS):
    /// `reduce_scatter(matmul(a, b), axis, dim)`, computed in pieces along `dim`, each
    /// reduced as soon as it is produced so communication overlaps the rest of the GEMM.
    /// How many pieces is a kernel configuration (the plan's
    /// `KernelConfig::Pipelined { chunks }`), not part of the op: every chunk count
    /// computes the same value, so one op stands for all of them.
    #[cfg_attr(feature = "serde", serde(rename = "matmul_reduce_scatter"))]
    MatMulReduceScatter {
        axis: String,
        dim: i64,
        #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "is_false"))]
        transpose_b: bool,
    },
    /// A chain of element-wise ops (bias, activation, gating, residual), optionally after
    /// the GEMM that produces its input, as one kernel: the running value starts as input
    /// 0 and each step applies to it in order, reading one more input where it needs one.
    /// One pass over memory instead of one per op; the same arithmetic, rounded after
    /// each step as the separate ops would.
    FusedElementwise {
        steps: Vec<FusedStep>,
    },
    /// An all-gather fused into the GEMM that consumes it (collective matmul, ring
    /// decomposed: XLA, PyTorch async TP, Flux AG+GEMM): `matmul(all_gather(a, axis, dim),
    /// b)`, each device's piece multiplied as it arrives round the ring. `dim` is a row
    /// (not the contraction) dim of `a`.
    #[cfg_attr(feature = "serde", serde(rename = "all_gather_matmul"))]
    AllGatherMatMul {
        axis: String,
        dim: i64,
        #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "is_false"))]
        transpose_b: bool,
    },
    /// A norm fused into the prologue of the GEMM that consumes it (see
    /// [`crate::norm_matmul`]): `matmul(norm(x, weight[, bias]), b)`, inputs `x, b,
    /// weight[, bias]`, each row of `x` normalised as the GEMM loads it, so the normalised
    /// activations are never written out.
    #[cfg_attr(feature = "serde", serde(rename = "norm_matmul"))]
    NormMatMul {
        norm: NormKind,
        #[cfg_attr(feature = "serde", serde(default = "default_eps"))]
        eps: f64,
        #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "is_false"))]
        transpose_b: bool,
    },
    /// TokenWeave's fused kernel (MLSys 2026, `fused_rs_ln_ag_cta_kernel`): the
    /// all-reduce of a tensor-parallel layer's partial sums fused with the residual add
    /// and the RMSNorm that follow it, the norm done on this device's token shard only.
    /// Inputs `x [.., n, h]` (a partial sum over `axis`), `residual [.., n/g, h]` (this
    /// device's shard of the residual stream, split along `dim`) and `weight [h]`;
    /// outputs `all_gather(rms_norm(reduce_scatter(x, dim) + residual, weight), dim)
    /// [.., n, h]` (the next GEMM's input, whole) and the updated residual shard
    /// `reduce_scatter(x, dim) + residual [.., n/g, h]` (the residual stream stays split
    /// along the tokens, as in TokenWeave). `dim` is a token dim, never the normalised
    /// last one. How many SMs the kernel runs on is a kernel configuration (the plan's
    /// `KernelConfig::CommNorm { sms }`), not part of the op: the value is the same.
    ReduceScatterAddNormAllGather {
        axis: String,
        dim: i64,
        #[cfg_attr(feature = "serde", serde(default = "default_eps"))]
        eps: f64,
    },
}

/// How many inputs an op accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    Exactly(usize),
    Between(usize, usize),
    AtLeast(usize),
}

impl Arity {
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::Between(lo, hi) => (lo..=hi).contains(&n),
            Arity::AtLeast(k) => n >= k,
        }
    }
}

impl std::fmt::Display for Arity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arity::Exactly(k) => write!(f, "{k}"),
            Arity::Between(lo, hi) => write!(f, "{lo} to {hi}"),
            Arity::AtLeast(k) => write!(f, "at least {k}"),
        }
    }
}

/// Broad families of ops, used for summaries and cost accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpClass {
    Source,
    MatMul,
    Elementwise,
    Normalization,
    Attention,
    Layout,
    Moe,
    Collective,
}

impl Op {
    /// Every op name, as written in the text form and in JSON.
    pub const NAMES: &'static [&'static str] = &[
        "input",
        "weight",
        "constant",
        "matmul",
        "add",
        "sub",
        "mul",
        "div",
        "pow",
        "neg",
        "exp",
        "sqrt",
        "rsqrt",
        "reciprocal",
        "silu",
        "gelu",
        "relu",
        "sigmoid",
        "tanh",
        "softmax",
        "rms_norm",
        "layer_norm",
        "attention",
        "rope_cache",
        "rope",
        "gather",
        "reshape",
        "transpose",
        "concat",
        "split",
        "slice",
        "cast",
        "reduce",
        "top_k",
        "expand",
        "where",
        "is_nan",
        "moe_route",
        "moe_dispatch",
        "expert_matmul",
        "moe_combine",
        "moe_pad",
        "moe_unpad",
        "all_reduce",
        "all_gather",
        "reduce_scatter",
        "all_to_all",
        "send",
        "recv",
        "broadcast",
        "all_slice",
        "sharded_gather",
        "matmul_reduce_scatter",
        "all_gather_matmul",
        "fused_elementwise",
        "norm_matmul",
        "moe_regroup",
        "reduce_scatter_add_norm_all_gather",
    ];

    /// The op's name, as written in the text form and in JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Weight { .. } => "weight",
            Op::Constant { .. } => "constant",
            Op::MatMul { .. } => "matmul",
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Mul => "mul",
            Op::Div => "div",
            Op::Pow => "pow",
            Op::Neg => "neg",
            Op::Exp => "exp",
            Op::Sqrt => "sqrt",
            Op::Rsqrt => "rsqrt",
            Op::Reciprocal => "reciprocal",
            Op::Silu => "silu",
            Op::Gelu { .. } => "gelu",
            Op::Relu => "relu",
            Op::Sigmoid => "sigmoid",
            Op::Tanh => "tanh",
            Op::Softmax { .. } => "softmax",
            Op::RmsNorm { .. } => "rms_norm",
            Op::LayerNorm { .. } => "layer_norm",
            Op::Attention { .. } => "attention",
            Op::RopeCache { .. } => "rope_cache",
            Op::Rope { .. } => "rope",
            Op::Gather { .. } => "gather",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Concat { .. } => "concat",
            Op::Split { .. } => "split",
            Op::Slice { .. } => "slice",
            Op::Cast { .. } => "cast",
            Op::Reduce { .. } => "reduce",
            Op::TopK { .. } => "top_k",
            Op::Expand { .. } => "expand",
            Op::Where => "where",
            Op::IsNan => "is_nan",
            Op::MoeRoute { .. } => "moe_route",
            Op::MoeDispatch { .. } => "moe_dispatch",
            Op::ExpertMatMul { .. } => "expert_matmul",
            Op::MoeCombine => "moe_combine",
            Op::MoePad { .. } => "moe_pad",
            Op::MoeUnpad { .. } => "moe_unpad",
            Op::AllReduce { .. } => "all_reduce",
            Op::AllGather { .. } => "all_gather",
            Op::ReduceScatter { .. } => "reduce_scatter",
            Op::AllToAll { .. } => "all_to_all",
            Op::Send { .. } => "send",
            Op::Recv { .. } => "recv",
            Op::Broadcast { .. } => "broadcast",
            Op::AllSlice { .. } => "all_slice",
            Op::ShardedGather { .. } => "sharded_gather",
            Op::MatMulReduceScatter { .. } => "matmul_reduce_scatter",
            Op::AllGatherMatMul { .. } => "all_gather_matmul",
            Op::FusedElementwise { .. } => "fused_elementwise",
            Op::NormMatMul { .. } => "norm_matmul",
            Op::MoeRegroup => "moe_regroup",
            Op::ReduceScatterAddNormAllGather { .. } => "reduce_scatter_add_norm_all_gather",
        }
    }

    /// How many inputs the op takes.
    pub fn arity(&self) -> Arity {
        use Arity::*;
        match self {
            Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. } | Op::Recv { .. } => {
                Exactly(0)
            }
            Op::MatMul { .. }
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Pow
            | Op::RmsNorm { .. }
            | Op::Gather { .. }
            | Op::MoeDispatch { .. }
            | Op::MoePad { .. }
            | Op::MoeUnpad { .. }
            | Op::ShardedGather { .. }
            | Op::MatMulReduceScatter { .. }
            | Op::AllGatherMatMul { .. } => Exactly(2),
            Op::LayerNorm { .. } => Between(2, 3),
            Op::NormMatMul { .. } => Between(3, 4),
            Op::Attention { .. } => Between(3, 4),
            Op::Rope { .. }
            | Op::ExpertMatMul { .. }
            | Op::MoeCombine
            | Op::Where
            | Op::ReduceScatterAddNormAllGather { .. } => Exactly(3),
            Op::Concat { .. } | Op::FusedElementwise { .. } => AtLeast(1),
            Op::MoeRegroup => AtLeast(2),
            Op::Neg
            | Op::Exp
            | Op::Sqrt
            | Op::Rsqrt
            | Op::Reciprocal
            | Op::Silu
            | Op::Gelu { .. }
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::Softmax { .. }
            | Op::RopeCache { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Cast { .. }
            | Op::Reduce { .. }
            | Op::TopK { .. }
            | Op::Expand { .. }
            | Op::IsNan
            | Op::MoeRoute { .. }
            | Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Send { .. }
            | Op::Broadcast { .. }
            | Op::AllSlice { .. } => Exactly(1),
        }
    }

    /// How many values the op produces.
    pub fn num_outputs(&self) -> usize {
        match self {
            Op::Send { .. } => 0,
            Op::RopeCache { .. }
            | Op::TopK { .. }
            | Op::MoeRoute { .. }
            | Op::MoeDispatch { .. }
            | Op::ReduceScatterAddNormAllGather { .. } => 2,
            Op::Split { sizes, .. } => sizes.len(),
            Op::Input { .. }
            | Op::Weight { .. }
            | Op::Constant { .. }
            | Op::MatMul { .. }
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Pow
            | Op::Neg
            | Op::Exp
            | Op::Sqrt
            | Op::Rsqrt
            | Op::Reciprocal
            | Op::Silu
            | Op::Gelu { .. }
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::Softmax { .. }
            | Op::RmsNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Attention { .. }
            | Op::Rope { .. }
            | Op::Gather { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Cast { .. }
            | Op::Reduce { .. }
            | Op::Expand { .. }
            | Op::Where
            | Op::IsNan
            | Op::ExpertMatMul { .. }
            | Op::MoePad { .. }
            | Op::MoeUnpad { .. }
            | Op::MoeCombine
            | Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Recv { .. }
            | Op::Broadcast { .. }
            | Op::AllSlice { .. }
            | Op::ShardedGather { .. }
            | Op::MatMulReduceScatter { .. }
            | Op::AllGatherMatMul { .. }
            | Op::FusedElementwise { .. }
            | Op::NormMatMul { .. }
            | Op::MoeRegroup => 1,
        }
    }

    /// The op's family. `Collective` means exactly the ops that communicate (those whose
    /// [`Op::occupancy`] has a collective, the fused GEMM + collective ops among them);
    /// `all_slice` and `sharded_gather` name a mesh axis but move nothing between
    /// devices, so they are `Layout`.
    pub fn class(&self) -> OpClass {
        match self {
            Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. } => OpClass::Source,
            // A GEMM whose A operand is normalised on the way in: its time is the GEMM's.
            Op::MatMul { .. } | Op::NormMatMul { .. } => OpClass::MatMul,
            Op::Softmax { .. } | Op::RmsNorm { .. } | Op::LayerNorm { .. } => {
                OpClass::Normalization
            }
            Op::Attention { .. } | Op::RopeCache { .. } | Op::Rope { .. } => OpClass::Attention,
            Op::Gather { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Cast { .. }
            | Op::Reduce { .. }
            | Op::TopK { .. }
            | Op::Expand { .. } => OpClass::Layout,
            Op::MoeRoute { .. }
            | Op::MoeDispatch { .. }
            | Op::ExpertMatMul { .. }
            | Op::MoePad { .. }
            | Op::MoeUnpad { .. }
            | Op::MoeRegroup
            | Op::MoeCombine => OpClass::Moe,
            Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Send { .. }
            | Op::Recv { .. }
            | Op::Broadcast { .. }
            | Op::MatMulReduceScatter { .. }
            | Op::AllGatherMatMul { .. }
            | Op::ReduceScatterAddNormAllGather { .. } => OpClass::Collective,
            Op::AllSlice { .. } | Op::ShardedGather { .. } => OpClass::Layout,
            Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Pow
            | Op::Neg
            | Op::Exp
            | Op::Sqrt
            | Op::Rsqrt
            | Op::Reciprocal
            | Op::Silu
            | Op::Gelu { .. }
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::Where
            | Op::IsNan
            | Op::FusedElementwise { .. } => OpClass::Elementwise,
        }
    }

    /// The mesh axis the op names: the axis a collective runs over, and the axis a
    /// local op such as `all_slice` or `sharded_gather` needs its place on. Whether the
    /// op communicates is [`Op::occupancy`]'s answer, not this one's.
    pub fn mesh_axis(&self) -> Option<&str> {
        match self {
            Op::AllReduce { axis, .. }
            | Op::AllGather { axis, .. }
            | Op::ReduceScatter { axis, .. }
            | Op::AllToAll { axis, .. }
            | Op::Send { axis, .. }
            | Op::Recv { axis, .. }
            | Op::Broadcast { axis, .. }
            | Op::AllSlice { axis, .. }
            | Op::ShardedGather { axis }
            | Op::MatMulReduceScatter { axis, .. }
            | Op::AllGatherMatMul { axis, .. }
            | Op::ReduceScatterAddNormAllGather { axis, .. } => Some(axis),
            Op::Input { .. }
            | Op::Weight { .. }
            | Op::Constant { .. }
            | Op::MatMul { .. }
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Pow
            | Op::Neg
            | Op::Exp
            | Op::Sqrt
            | Op::Rsqrt
            | Op::Reciprocal
            | Op::Silu
            | Op::Gelu { .. }
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::Softmax { .. }
            | Op::RmsNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Attention { .. }
            | Op::RopeCache { .. }
            | Op::Rope { .. }
            | Op::Gather { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Cast { .. }
            | Op::Reduce { .. }
            | Op::TopK { .. }
            | Op::Expand { .. }
            | Op::Where
            | Op::IsNan
            | Op::MoeRoute { .. }
            | Op::MoeDispatch { .. }
            | Op::ExpertMatMul { .. }
            | Op::MoePad { .. }
            | Op::MoeUnpad { .. }
            | Op::MoeCombine
            | Op::FusedElementwise { .. }
            | Op::NormMatMul { .. }
            | Op::MoeRegroup => None,
        }
    }

    /// Whether the op must be kept even when nothing uses its result.
    pub fn has_side_effects(&self) -> bool {
        matches!(self, Op::Send { .. })
    }

    /// The non-default attributes as `name=value` text, in a fixed order, for the
    /// text form and DOT labels.
    pub fn attr_text(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut push = |name: &str, value: String| out.push(format!("{name}={value}"));
        match self {
            Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. } => {}
            Op::MatMul {
                transpose_a,
                transpose_b,
            } => {
                if *transpose_a {
                    push("transpose_a", "true".into());
                }
                if *transpose_b {
                    push("transpose_b", "true".into());
                }
            }
            Op::Gelu { approximate } => {
                if *approximate == GeluApprox::Tanh {
                    push("approximate", "tanh".into());
                }
            }
            Op::Softmax { axis } => push("axis", axis.to_string()),
            Op::RmsNorm { eps } | Op::LayerNorm { eps } => push("eps", fmt_f64(*eps)),
            Op::Attention { causal, scale } => {
                if *causal {
                    push("causal", "true".into());
                }
                if let Some(s) = scale {
                    push("scale", fmt_f64(*s));
                }
            }
            Op::RopeCache { theta, dim } => {
                push("theta", fmt_f64(*theta));
                push("dim", dim.to_string());
            }
            Op::Rope { interleaved } => {
                if *interleaved {
                    push("interleaved", "true".into());
                }
            }
            Op::Gather { axis } | Op::Concat { axis } => push("axis", axis.to_string()),
            Op::Reshape { shape } => push("shape", shape.to_string()),
            Op::Transpose { perm } => push("perm", format!("{perm:?}")),
            Op::Split { axis, sizes } => {
                push("axis", axis.to_string());
                push("sizes", format!("{sizes:?}"));
            }
            Op::Slice { axis, start, end } => {
                push("axis", axis.to_string());
                push("start", start.to_string());
                push("end", end.to_string());
            }
            Op::Cast { to } => push("to", to.to_string()),
            Op::Reduce {
                kind,
                axes,
                keepdims,
            } => {
                push("kind", kind.name().into());
                push("axes", format!("{axes:?}"));
                if *keepdims {
                    push("keepdims", "true".into());
                }
            }
            Op::Expand { shape } => push("shape", shape.to_string()),
            Op::TopK { k, axis, largest } => {
                push("k", k.to_string());
                push("axis", axis.to_string());
                if !*largest {
                    push("largest", "false".into());
                }
            }
            Op::MoeRoute { top_k, normalize } => {
                push("top_k", top_k.to_string());
                if *normalize {
                    push("normalize", "true".into());
                }
            }
            Op::MoeDispatch { num_experts } => push("num_experts", num_experts.to_string()),
            Op::MoePad { groups } => push("groups", groups.to_string()),
            Op::MoeUnpad { groups, rows } => {
                push("groups", groups.to_string());
                push("rows", rows.to_string());
            }
            Op::ExpertMatMul { transpose_b, rows } => {
                if *transpose_b {
                    push("transpose_b", "true".into());
                }
                if !rows.is_dense() {
                    push("rows", rows.to_string());
                }
            }
            Op::AllReduce { axis, op } => {
                push("axis", axis.clone());
                push("op", op.to_string());
            }
            Op::AllGather { axis, dim } => {
                push("axis", axis.clone());
                push("dim", dim.to_string());
            }
            Op::ReduceScatter { axis, dim, op } => {
                push("axis", axis.clone());
                push("dim", dim.to_string());
                push("op", op.to_string());
            }
            Op::AllToAll {
                axis,
                split_dim,
                concat_dim,
                payload,
            } => {
                push("axis", axis.clone());
                push("split_dim", split_dim.to_string());
                push("concat_dim", concat_dim.to_string());
                if !payload.is_dense() {
                    push("payload", payload.to_string());
                }
            }
            Op::Send { axis, shift } => {
                push("axis", axis.clone());
                push("shift", shift.to_string());
            }
            Op::Recv { axis, shift, .. } => {
                push("axis", axis.clone());
                push("shift", shift.to_string());
            }
            Op::Broadcast { axis, root } => {
                push("axis", axis.clone());
                push("root", root.to_string());
            }
            Op::AllSlice { axis, dim } => {
                push("axis", axis.clone());
                push("dim", dim.to_string());
            }
            Op::ShardedGather { axis } => push("axis", axis.clone()),
            Op::FusedElementwise { steps } => push(
                "steps",
                format!(
                    "[{}]",
                    steps
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Op::MatMulReduceScatter {
                axis,
                dim,
                transpose_b,
            } => {
                push("axis", axis.clone());
                push("dim", dim.to_string());
                if *transpose_b {
                    push("transpose_b", "true".into());
                }
            }
            Op::AllGatherMatMul {
                axis,
                dim,
                transpose_b,
            } => {
                push("axis", axis.clone());
                push("dim", dim.to_string());
                if *transpose_b {
                    push("transpose_b", "true".into());
                }
            }
            Op::NormMatMul {
                norm,
                eps,
                transpose_b,
            } => {
                push("norm", norm.name().into());
                push("eps", fmt_f64(*eps));
                if *transpose_b {
                    push("transpose_b", "true".into());
                }
            }
            Op::ReduceScatterAddNormAllGather { axis, dim, eps } => {
                push("axis", axis.clone());
                push("dim", dim.to_string());
                push("eps", fmt_f64(*eps));
            }
            Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Pow
            | Op::Neg
            | Op::Exp
            | Op::Sqrt
            | Op::Rsqrt
            | Op::Reciprocal
            | Op::Silu
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::Where
            | Op::IsNan
            | Op::MoeRegroup
            | Op::MoeCombine => {}
        }
        out
    }

    /// The declared type of a source op (input, weight, constant, recv).
    pub fn source_type(&self) -> Option<(DType, &Shape)> {
        match self {
            Op::Input { dtype, shape }
            | Op::Weight { dtype, shape, .. }
            | Op::Constant { dtype, shape, .. }
            | Op::Recv { dtype, shape, .. } => Some((*dtype, shape)),
            Op::MatMul { .. }
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Pow
            | Op::Neg
            | Op::Exp
            | Op::Sqrt
            | Op::Rsqrt
            | Op::Reciprocal
            | Op::Silu
            | Op::Gelu { .. }
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::Softmax { .. }
            | Op::RmsNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Attention { .. }
            | Op::RopeCache { .. }
            | Op::Rope { .. }
            | Op::Gather { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Cast { .. }
            | Op::Reduce { .. }
            | Op::TopK { .. }
            | Op::Expand { .. }
            | Op::Where
            | Op::IsNan
            | Op::MoeRoute { .. }
            | Op::MoeDispatch { .. }
            | Op::ExpertMatMul { .. }
            | Op::MoePad { .. }
            | Op::MoeUnpad { .. }
            | Op::MoeCombine
            | Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Send { .. }
            | Op::Broadcast { .. }
            | Op::AllSlice { .. }
            | Op::ShardedGather { .. }
            | Op::MatMulReduceScatter { .. }
            | Op::AllGatherMatMul { .. }
            | Op::FusedElementwise { .. }
            | Op::NormMatMul { .. }
            | Op::MoeRegroup
            | Op::ReduceScatterAddNormAllGather { .. } => None,
        }
    }
}

/// Shortest text that reads back as the same `f64` (`1e-5`, `0.02`, `500000`).
pub fn fmt_f64(x: f64) -> String {
    let text = format!("{x:?}");
    match text.strip_suffix(".0") {
        Some(whole) => whole.to_owned(),
        None => text,
    }
}

impl Init {
    /// Human-readable form for the text dump.
    pub fn describe(&self) -> String {
        match self {
            Init::Normal { seed, mean, std } if *mean == 0.0 => {
                format!("normal(seed={seed}, std={})", fmt_f64(*std))
            }
            Init::Normal { seed, mean, std } => format!(
                "normal(seed={seed}, mean={}, std={})",
                fmt_f64(*mean),
                fmt_f64(*std)
            ),
            Init::Uniform { seed, low, high } => format!(
                "uniform(seed={seed}, low={}, high={})",
                fmt_f64(*low),
                fmt_f64(*high)
            ),
            Init::Fill { value } => format!("fill({})", fmt_f64(*value)),
            Init::Range { start, step } => {
                format!("range(start={}, step={})", fmt_f64(*start), fmt_f64(*step))
            }
            Init::Inline(values) => {
                let shown: Vec<String> = values.iter().take(8).map(|v| fmt_f64(*v)).collect();
                let more = if values.len() > 8 { ", …" } else { "" };
                format!("inline([{}{more}])", shown.join(", "))
            }
            Init::Npy { path } => format!("npy({path:?})"),
            Init::Safetensors { path, tensor } => format!("safetensors({path:?}, {tensor:?})"),
            Init::Raw { path, offset } => format!("raw({path:?}, offset={offset})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table_matches_name() {
        // Every name in NAMES is distinct; `name()` is checked against serde in the JSON frontend.
        let mut names = Op::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Op::NAMES.len());
    }

    #[test]
    fn f64_text_is_short() {
        assert_eq!(fmt_f64(1e-5), "1e-5");
        assert_eq!(fmt_f64(500000.0), "500000");
        assert_eq!(fmt_f64(0.02), "0.02");
    }
}
