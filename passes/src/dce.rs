//! Dead-code elimination: drop nodes whose values reach no graph output.

use weft_ir::{Graph, Op, ValueId};

use crate::rebuild::{Fate, rebuild};

use crate::manager::{Pass, PassError};

/// Removes nodes that neither feed a graph output nor have side effects (`send`).
/// Graph inputs are kept even when unused, since they are part of the calling convention.
#[derive(Debug, Default)]
pub struct DeadCodeElimination;

impl Pass for DeadCodeElimination {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&mut self, graph: Graph) -> Result<(Graph, String), PassError> {
        let mut live = vec![false; graph.num_nodes()];
        let mut stack: Vec<ValueId> = graph.outputs.clone();
        for (id, node) in graph.nodes() {
            if node.op.has_side_effects() || matches!(node.op, Op::Input { .. }) {
                live[id.index()] = true;
                stack.extend(node.inputs.iter().copied());
            }
        }
        while let Some(v) = stack.pop() {
            let producer = graph.value(v).producer;
            if !std::mem::replace(&mut live[producer.index()], true) {
                stack.extend(graph.node(producer).inputs.iter().copied());
            }
        }
        let removed = live.iter().filter(|l| !**l).count();
        if removed == 0 {
            return Ok((graph, "nothing to remove".into()));
        }
        let out = rebuild(&graph, |id| {
            if live[id.index()] {
                Fate::Keep
            } else {
                Fate::Drop
            }
        })
        .map_err(|source| PassError::Build {
            pass: "dce",
            source,
        })?;
        Ok((out, format!("removed {removed} dead node(s)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PassManager;
    use weft_ir::{DType, Init, Shape};

    #[test]
    fn removes_only_unreachable_nodes() {
        let mut g = Graph::new("t");
        let x = g
            .add(
                "x",
                Op::Input {
                    dtype: DType::F32,
                    shape: Shape::new([4u64, 8]),
                },
                &[],
            )
            .unwrap();
        let w = g
            .add(
                "w",
                Op::Weight {
                    dtype: DType::F32,
                    shape: Shape::new([8u64, 2]),
                    init: Init::Fill { value: 0.5 },
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
        g.add("unused", Op::Exp, &[x]).unwrap();
        g.outputs.push(y);
        let (out, reports) = PassManager::new().with(DeadCodeElimination).run(g).unwrap();
        assert_eq!(reports[0].summary, "removed 1 dead node(s)");
        let names: Vec<&str> = out.nodes().map(|(_, n)| n.name.as_str()).collect();
        assert_eq!(names, ["x", "w", "y"]);
    }
}
