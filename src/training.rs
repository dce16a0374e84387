//! Training accounting for `weft check`: one training step's model FLOPs and all-to-all
//! volume under the convention Megatron-LM and BigMac (Jin et al., AAAI 2025, Table 3)
//! report them, so a graph's figures can be set beside a paper's.
//!
//! Why a convention of its own: `weft check`'s `flops` count what one forward pass of
//! *this* graph computes on one device (norms, activations, routing, the causal triangle).
//! Papers count *model* FLOPs: only the GEMMs with a weight and attention's two products,
//! over all devices, forward and backward. Both are exact integers under their own rules.
//!
//! The figures come from the graph as it is, sharded or not: each node's FLOPs on one
//! device are multiplied by the devices that compute *different* work (the mesh axes its
//! output is split, partial or local along), so a value replicated along an axis is
//! counted once. Expert GEMMs under expert parallelism run on padded blocks; they are
//! counted per routed row (the blocked counts `[B, E]` say the rows are `B` padded blocks,
//! so the routed rows are the rows over `B`: exact in total over the devices, whatever
//! the routing, since every routed row arrives somewhere).
//!
//! All-to-all volume: BigMac's Table 3 writes it `8·b·s·l·h·top_k·(ep−1)/ep` per
//! iteration, and Table 4 gives 1,488 "GB" for GPT3-XL-MoE at ep=32. Per layer and pass
//! there are two all-to-alls (dispatch, combine) of `b·s·top_k·h` elements, and the
//! backward pass one more of the same size for each: `4·b·s·l·h·top_k·(ep−1)/ep`
//! elements, half the formula. The other half is the element size: in BF16 the formula
//! is the bytes, and 1,488 is `all_to_all_bytes / 2^30` exactly (`all_to_all_gib_bytes`).
//! Both are reported, so the reading is visible rather than folded into a factor.

use std::collections::HashMap;

use serde::Serialize;
use weft_ir::occupancy::payload_bytes;
use weft_ir::stats::node_flops;
use weft_ir::{DimError, Graph, Node, NodeId, Op, Placement, ValueId};

/// The convention, in one line (also the JSON's `convention`).
pub const CONVENTION: &str = "Megatron/BigMac model FLOPs over all devices: 2·m·n·k per GEMM \
with a weight (expert GEMMs per routed row), attention's QKᵀ and PV dense (no causal saving); \
routers, norms, activations, embedding lookups and routing not counted; backward = 2× forward. \
All-to-all: floating-point payload elements sent to other devices ((n−1)/n of each), forward \
+ backward (each one's gradient an all-to-all of the same size), over all devices; integer \
routing counts not counted";

/// One training step of a graph, under [`CONVENTION`].
#[derive(Clone, Debug, Serialize)]
pub struct TrainingSummary {
    pub convention: &'static str,
    /// Tokens in the step: the first graph input's elements if it holds token ids
    /// (integers), its rows (all dims but the last) if it holds hidden states; over all
    /// devices. `null` for a graph without inputs.
    pub tokens: Option<u128>,
    /// Forward + backward model FLOPs over all devices.
    pub flops: u128,
    /// Forward + backward all-to-all payload elements sent to other devices, all devices.
    pub all_to_all_elements: u128,
    /// `all_to_all_elements / 2^30`.
    pub all_to_all_gib_elements: f64,
    /// The same payload in bytes (each all-to-all's dtype).
    pub all_to_all_bytes: u128,
    /// `all_to_all_bytes / 2^30`: BigMac's "GB" (Table 4's 1,488 for GPT3-XL-MoE at
    /// ep=32 is this, in BF16; as elements it is half, 744 Gi).
    pub all_to_all_gib_bytes: f64,
}

fn overflow(what: &str) -> DimError {
    DimError::Overflow(format!("the training {what} (even in 128 bits)"))
}

/// Ops a weight or an activation passes through unchanged in content (for tracing a GEMM
/// operand to its weight, and a GEMM's result to the router it feeds).
fn passes_through(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Cast { .. }
            | Op::AllGather { .. }
            | Op::AllSlice { .. }
            | Op::AllToAll { .. }
    )
}

/// What the accounting needs to know about the graph's wiring.
struct Wiring<'g> {
    graph: &'g Graph,
    consumers: HashMap<ValueId, Vec<NodeId>>,
}

impl<'g> Wiring<'g> {
    fn new(graph: &'g Graph) -> Wiring<'g> {
        let mut consumers: HashMap<ValueId, Vec<NodeId>> = HashMap::new();
        for (id, node) in graph.nodes() {
            for &v in &node.inputs {
                consumers.entry(v).or_default().push(id);
            }
        }
        Wiring { graph, consumers }
    }

    /// Whether `v` is a weight matrix (rank ≥ 2), possibly reshaped, cast or gathered.
    fn is_weight(&self, v: ValueId) -> bool {
        let node = self.graph.node(self.graph.value(v).producer);
        if let Op::Weight { shape, .. } = &node.op {
            return shape.rank() >= 2;
        }
        passes_through(&node.op) && node.inputs.first().is_some_and(|&i| self.is_weight(i))
    }

    /// Whether `v` (a GEMM's result) is a router's logits: it reaches a `moe_route`.
    fn feeds_router(&self, v: ValueId) -> bool {
        self.consumers.get(&v).into_iter().flatten().any(|&c| {
            let node = self.graph.node(c);
            matches!(node.op, Op::MoeRoute { .. })
                || (passes_through(&node.op) && node.outputs.iter().any(|&o| self.feeds_router(o)))
        })
    }

    /// Devices along which the node's output is different work (split, partial or
    /// local): the product of those axes' sizes; 1 on an unsharded graph.
    fn distinct_devices(&self, node: &Node) -> Result<u128, DimError> {
        let Some(&out) = node.outputs.first() else {
            return Ok(1);
        };
        let sharding = &self.graph.value(out).sharding;
        self.graph.mesh.axes().iter().try_fold(1u128, |acc, axis| {
            match sharding.placement(&axis.name) {
                Placement::Replicate => Ok(acc),
                Placement::Split(_) | Placement::Partial(_) | Placement::Local => acc
                    .checked_mul(u128::from(axis.size))
                    .ok_or_else(|| overflow("FLOPs")),
            }
        })
    }
}

/// One device's forward model FLOPs of `node` under the convention.
fn model_flops(w: &Wiring<'_>, node: &Node) -> Result<u128, DimError> {
    let g = w.graph;
    let shapes: Vec<_> = node.inputs.iter().map(|&v| &g.value(v).ty.shape).collect();
    let out = node.outputs.first().map(|&v| &g.value(v).ty.shape);
    let with_weight = || node.inputs.iter().any(|&v| w.is_weight(v));
    let gemm = || node_flops(&node.op, &shapes, out, &g.dims);
    // `node_flops` adds a fused norm's arithmetic (per element of x) and an epilogue's
    // steps (per output element): the convention counts the GEMM alone, 2·out·k.
    let gemm_only = || -> Result<u128, DimError> {
        let k = shapes
            .first()
            .and_then(|s| s.dims().last())
            .map_or(Ok(1), |d| d.eval(&g.dims))?;
        let n = out.map_or(Ok(0), |s| s.numel(&g.dims))?;
        u128::from(n)
            .checked_mul(u128::from(k))
            .and_then(|x| x.checked_mul(2))
            .ok_or_else(|| overflow("FLOPs"))
    };
    match &node.op {
        Op::MatMul { .. } => {
            let router = node.outputs.iter().any(|&o| w.feeds_router(o));
            if with_weight() && !router {
                gemm()
            } else {
                Ok(0)
            }
        }
        Op::NormMatMul { .. } if with_weight() => gemm_only(),
        Op::FusedElementwise { steps }
            if matches!(steps.first(), Some(weft_ir::FusedStep::Matmul { .. }))
                && with_weight() =>
        {
            gemm_only()
        }
        Op::NormMatMul { .. } | Op::FusedElementwise { .. } => Ok(0),
        Op::MatMulReduceScatter { .. } | Op::AllGatherMatMul { .. } => {
            if with_weight() {
                gemm()
            } else {
                Ok(0)
            }
        }
        // Per routed row: on padded expert blocks (counts `[B, E]`), a B-th of the rows.
        Op::ExpertMatMul { .. } => {
            let all = gemm()?;
            let blocks = match shapes.get(1).map(|s| s.dims()) {
                Some([b, _]) => u128::from(b.eval(&g.dims)?.max(1)),
                _ => 1,
            };
            Ok(all / blocks)
        }
        // Both products over every score, as if not causal.
        Op::Attention { scale, .. } => {
            let dense = Op::Attention {
                causal: false,
                scale: *scale,
            };
            node_flops(&dense, &shapes, out, &g.dims)
        }
        Op::Input { .. }
        | Op::Weight { .. }
        | Op::Constant { .. }
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
        | Op::MoeCombine
        | Op::MoePad { .. }
        | Op::MoeUnpad { .. }
        | Op::MoeRegroup
        | Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Send { .. }
        | Op::Recv { .. }
        | Op::Broadcast { .. }
        | Op::AllSlice { .. }
        | Op::ShardedGather { .. }
        | Op::ReduceScatterAddNormAllGather { .. } => Ok(0),
    }
}

/// The forward payload elements an all-to-all sends to other devices, over all devices
/// (`None` for anything else, and for integer all-to-alls: routing counts).
fn all_to_all_elements(g: &Graph, node: &Node) -> Result<Option<(u128, u64)>, DimError> {
    let Op::AllToAll { axis, .. } = &node.op else {
        return Ok(None);
    };
    let Some(&input) = node.inputs.first() else {
        return Ok(None);
    };
    let ty = &g.value(input).ty;
    if !ty.dtype.is_float() {
        return Ok(None);
    }
    let elements = ty.shape.numel(&g.dims)?;
    let payload = payload_bytes(&node.op, elements)
        .ok_or_else(|| overflow(&format!("payload of `{}` (zero groups)", node.name)))?;
    let n = u128::from(g.mesh.axis_size(axis).unwrap_or(1).max(1));
    let devices = u128::from(g.mesh.num_devices().max(1));
    // payload · devices · (n−1)/n, exact: n divides the device count.
    let total = u128::from(payload)
        .checked_mul(devices / n)
        .and_then(|x| x.checked_mul(n - 1))
        .ok_or_else(|| overflow("all-to-all elements"))?;
    Ok(Some((total, ty.dtype.size_bytes())))
}

/// Tokens in the step (see [`TrainingSummary::tokens`]).
fn tokens(g: &Graph) -> Result<Option<u128>, DimError> {
    let Some(v) = g.inputs().next() else {
        return Ok(None);
    };
    let value = g.value(v);
    let dims = value.ty.shape.eval(&g.dims)?;
    let kept = if value.ty.dtype.is_int() {
        &dims[..]
    } else {
        &dims[..dims.len().saturating_sub(1)]
    };
    let mut n = kept
        .iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(u128::from(d)));
    for axis in g.mesh.axes() {
        if let Placement::Split(_) = value.sharding.placement(&axis.name) {
            n = n.and_then(|n| n.checked_mul(u128::from(axis.size)));
        }
    }
    n.map(Some).ok_or_else(|| overflow("token count"))
}

impl TrainingSummary {
    /// The training step of `graph` (sharded or not) under [`CONVENTION`].
    pub fn new(graph: &Graph) -> Result<TrainingSummary, DimError> {
        let w = Wiring::new(graph);
        let mut forward = 0u128;
        let (mut elements, mut bytes) = (0u128, 0u128);
        for (_, node) in graph.nodes() {
            let f = model_flops(&w, node)?;
            if f > 0 {
                let all = f
                    .checked_mul(w.distinct_devices(node)?)
                    .ok_or_else(|| overflow("FLOPs"))?;
                forward = forward.checked_add(all).ok_or_else(|| overflow("FLOPs"))?;
            }
            if let Some((e, size)) = all_to_all_elements(graph, node)? {
                elements = elements
                    .checked_add(e)
                    .ok_or_else(|| overflow("elements"))?;
                bytes = e
                    .checked_mul(u128::from(size))
                    .and_then(|b| bytes.checked_add(b))
                    .ok_or_else(|| overflow("bytes"))?;
            }
        }
        // Backward: twice the forward's FLOPs; one all-to-all per all-to-all.
        let flops = forward.checked_mul(3).ok_or_else(|| overflow("FLOPs"))?;
        let elements = elements
            .checked_mul(2)
            .ok_or_else(|| overflow("elements"))?;
        let bytes = bytes.checked_mul(2).ok_or_else(|| overflow("bytes"))?;
        #[allow(clippy::cast_precision_loss)]
        let gib = |x: u128| x as f64 / f64::from(1u32 << 30);
        Ok(TrainingSummary {
            convention: CONVENTION,
            tokens: tokens(graph)?,
            flops,
            all_to_all_elements: elements,
            all_to_all_gib_elements: gib(elements),
            all_to_all_bytes: bytes,
            all_to_all_gib_bytes: gib(bytes),
        })
    }
}
