//! The cost model as the two passes that consume it see it: extraction prices one
//! e-node's op ([`NodeCost`]), the scheduler one program node ([`TaskCosts`]). One model,
//! so the program extraction picks is priced exactly as it is then scheduled.

use weft_ir::{DimBindings, Graph, NodeId, Op, TensorType};

use super::{CostModel, OpCost};
use crate::saturate::NodeCost;
use crate::schedule::{ScheduleError, TaskCosts};

impl NodeCost for CostModel {
    /// The op's predicted time alone (µs), launch included.
    fn node_cost(
        &self,
        op: &Op,
        inputs: &[&TensorType],
        outputs: &[&TensorType],
        dims: &DimBindings,
    ) -> Result<f64, String> {
        self.op_cost(op, inputs, outputs, dims)
            .map(|c| c.time_us)
            .map_err(|e| e.to_string())
    }
}

impl TaskCosts for CostModel {
    fn cost(&self, graph: &Graph, node: NodeId) -> Result<OpCost, ScheduleError> {
        self.node_cost(graph, node)
            .map_err(|e| ScheduleError::Cost {
                node: graph.node(node).name.clone(),
                reason: e.to_string(),
            })
    }

    fn contention_slowdown(&self, comm: &OpCost) -> f64 {
        CostModel::contention_slowdown(self, comm)
    }
}
