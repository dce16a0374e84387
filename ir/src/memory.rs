//! How much memory one rank needs to run a graph, before anything is allocated: the
//! resident weights plus the most activation bytes alive at once, from a liveness walk
//! over the nodes in execution (arena) order.
//!
//! The walk is the executor's own policy ([`last_uses`]): a node's outputs exist from
//! the moment it runs, and each value is dropped after the last node that reads it (a
//! value nobody reads, right after its producer); graph outputs live to the end. Weights
//! and constants are materialised before the run and stay. A kernel's private scratch is
//! not counted, so the figure is a lower bound on what an executor needs.
//!
//! Element sizes are the caller's: the CPU reference executor holds every float dtype as
//! `f32`, a device backend holds the dtype itself.

use crate::graph::{Graph, ValueId};
use crate::op::Op;
use crate::types::{DType, DimError};

/// The peak bytes of one rank, in parts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// `weight` and `constant` values: resident for the whole run.
    pub weights: u128,
    /// Graph inputs as the rank receives them: held for the whole run.
    pub inputs: u128,
    /// The most bytes of computed values alive at once (a graph input's copy inside the
    /// run included).
    pub peak_activations: u128,
    /// The node at which that peak is reached.
    pub peak_node: Option<String>,
}

impl MemoryEstimate {
    /// Weights, inputs and peak activations together.
    pub fn total(&self) -> u128 {
        self.weights + self.inputs + self.peak_activations
    }
}

/// For each value (by index), the index of the last node that needs it: its last reader,
/// else its producer (nobody reads it); `usize::MAX` for graph outputs, which are kept.
pub fn last_uses(graph: &Graph) -> Vec<usize> {
    let mut last = vec![0usize; graph.values().len()];
    for (id, node) in graph.nodes() {
        for &v in node.outputs.iter().chain(&node.inputs) {
            last[v.index()] = id.index();
        }
    }
    for &v in &graph.outputs {
        last[v.index()] = usize::MAX;
    }
    last
}

/// The peak memory of one rank running `graph`, each element of dtype `d` taking
/// `elem_bytes(d)` bytes. Fails only when a value's element count does not fit in 64
/// bits ([`DimError::Overflow`]) or a dim is unbound; sums are exact in 128 bits.
pub fn peak_memory(
    graph: &Graph,
    elem_bytes: impl Fn(DType) -> u64,
) -> Result<MemoryEstimate, DimError> {
    let bytes = |v: ValueId| -> Result<u128, DimError> {
        let value = graph.value(v);
        let numel = (value.ty.shape.numel(&graph.dims)).map_err(|e| e.of_value(&value.name))?;
        Ok(u128::from(numel) * u128::from(elem_bytes(value.ty.dtype)))
    };
    let last = last_uses(graph);
    let mut est = MemoryEstimate::default();
    let mut resident = vec![false; graph.values().len()];
    let mut live = 0u128;
    for (id, node) in graph.nodes() {
        match node.op {
            Op::Weight { .. } | Op::Constant { .. } => {
                for &v in &node.outputs {
                    est.weights += bytes(v)?;
                    resident[v.index()] = true;
                }
                continue;
            }
            // The rank's input stays where it was given; the run holds its own copy.
            Op::Input { .. } => {
                for &v in &node.outputs {
                    est.inputs += bytes(v)?;
                }
            }
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
            | Op::MoeCombine
            | Op::MoePad { .. }
            | Op::MoeUnpad { .. }
            | Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Send { .. }
            | Op::Recv { .. }
            | Op::Broadcast { .. }
            | Op::AllSlice { .. }
            | Op::ShardedGather { .. }
            | Op::MatMulReduceScatter { .. }
            | Op::AllGatherMatMul { .. }
            | Op::NormMatMul { .. }
            | Op::MoeRegroup
            | Op::ReduceScatterAddNormAllGather { .. }
            | Op::FusedElementwise { .. } => {}
        }
        for &v in &node.outputs {
            live += bytes(v)?;
        }
        if live > est.peak_activations {
            est.peak_activations = live;
            est.peak_node = Some(node.name.clone());
        }
        let mut freed = Vec::new();
        for &v in node.inputs.iter().chain(&node.outputs) {
            if last[v.index()] == id.index() && !resident[v.index()] && !freed.contains(&v) {
                freed.push(v);
                live -= bytes(v)?;
            }
        }
    }
    Ok(est)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Init;
    use crate::types::Shape;

    /// x[2,3] → matmul with w[3,4] → relu → output, counted by hand.
    #[test]
    fn peak_of_a_small_graph_matches_a_hand_count() {
        let mut g = Graph::new("small");
        let x = g
            .add(
                "x",
                Op::Input {
                    dtype: DType::Bf16,
                    shape: Shape::new([2u64, 3]),
                },
                &[],
            )
            .unwrap();
        let w = g
            .add(
                "w",
                Op::Weight {
                    dtype: DType::Bf16,
                    shape: Shape::new([3u64, 4]),
                    init: Init::Fill { value: 1.0 },
                },
                &[],
            )
            .unwrap();
        let y = g
            .add(
                "y",
                Op::MatMul {
                    transpose_a: false,
                    transpose_b: false,
                },
                &[x, w],
            )
            .unwrap();
        let z = g.add("z", Op::Relu, &[y]).unwrap();
        g.outputs.push(z);
        assert_eq!(last_uses(&g), vec![2, 2, 3, usize::MAX]);
        let est = peak_memory(&g, |_| 4).unwrap();
        // w: 12 elements; x: 6; after `y`: x + y = 6 + 8, x dropped; after `z`: y + z = 16.
        assert_eq!(est.weights, 12 * 4);
        assert_eq!(est.inputs, 6 * 4);
        assert_eq!(est.peak_activations, 16 * 4);
        assert_eq!(est.peak_node.as_deref(), Some("z"));
        assert_eq!(est.total(), (12 + 6 + 16) * 4);
        // Stored sizes instead: bf16 takes 2 bytes.
        let stored = peak_memory(&g, DType::size_bytes).unwrap();
        assert_eq!((stored.weights, stored.inputs), (12 * 2, 6 * 2));
    }
}
