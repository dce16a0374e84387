//! Tasks against the program: every node that computes (views included) runs in exactly
//! one task per rank, sources (inputs, weights, constants) in none; every value a task
//! reads is produced earlier in the same task or by a task that happens before it; a
//! task's kernel configuration fits its nodes.

use weft_ir::{Graph, Node, NodeId, Occupancy, Op};

use super::{Order, Verifier, task_label};
use crate::{KernelConfig, PlanRule, RankPlan};

/// Where each program node runs: (task, position among the task's nodes), by node index.
pub(super) type Placed = Vec<Option<(usize, usize)>>;

/// Places every task's nodes; `None` when a task names an unknown node (the other checks
/// would only repeat it).
pub(super) fn place_nodes(v: &mut Verifier<'_>, rp: &RankPlan) -> Option<Placed> {
    let r = Some(rp.rank);
    let before = v.out.len();
    let mut placed: Placed = vec![None; v.program.num_nodes()];
    for (t, task) in rp.tasks.iter().enumerate() {
        if task.nodes.is_empty() {
            v.err(
                r,
                PlanRule::Nodes,
                format!("{} runs no node", task_label(rp, t)),
            );
        }
        for (i, name) in task.nodes.iter().enumerate() {
            let Some(&id) = v.node_by_name.get(name.as_str()) else {
                let m = format!("{}: the program has no node `{name}`", task_label(rp, t));
                v.err(r, PlanRule::Nodes, m);
                continue;
            };
            let op = &v.program.node(id).op;
            if matches!(op.occupancy(), Occupancy::Source) {
                let m = format!(
                    "{}: `{name}` is a {} (a source, present before the step; it is no task's work)",
                    task_label(rp, t),
                    op.name()
                );
                v.err(r, PlanRule::Nodes, m);
            }
            if let Some((other, _)) = placed[id.index()] {
                let m = format!(
                    "node `{name}` runs twice: in {} and in {}",
                    task_label(rp, other),
                    task_label(rp, t)
                );
                v.err(r, PlanRule::Nodes, m);
            } else {
                placed[id.index()] = Some((t, i));
            }
        }
    }
    for (id, node) in v.program.nodes() {
        if placed[id.index()].is_none() && !matches!(node.op.occupancy(), Occupancy::Source) {
            let m = format!("node `{}` ({}) runs in no task", node.name, node.op.name());
            v.err(r, PlanRule::Nodes, m);
        }
    }
    (v.out.len() == before).then_some(placed)
}

/// The kernel configuration fits the task: `view` exactly for tasks of views only; a
/// chunk count exactly for a task with a fused GEMM + collective op.
pub(super) fn kernels(v: &mut Verifier<'_>, rp: &RankPlan) {
    for t in 0..rp.tasks.len() {
        kernel(v, rp, t);
    }
}

fn kernel(v: &mut Verifier<'_>, rp: &RankPlan, t: usize) {
    let task = &rp.tasks[t];
    let nodes: Vec<&Node> = task
        .nodes
        .iter()
        .filter_map(|n| v.node_by_name.get(n.as_str()))
        .map(|&id| v.program.node(id))
        .collect();
    let all_views = nodes
        .iter()
        .all(|n| matches!(n.op.occupancy(), Occupancy::View));
    // A slice of one contiguous block may launch nothing too (the cost model prices it
    // as a view); any other task with a `view` kernel is wrong.
    let may_view = nodes
        .iter()
        .all(|n| matches!(n.op.occupancy(), Occupancy::View) || contiguous_slice(v.program, n));
    let fused = nodes
        .iter()
        .any(|n| matches!(n.op.occupancy(), Occupancy::Both(_)));
    let is_view = matches!(task.kernel, KernelConfig::View);
    let problem = if (is_view && !may_view) || (!is_view && all_views) {
        Some(if is_view {
            "has a `view` kernel but runs nodes that are not views".to_owned()
        } else {
            "runs only views (which launch nothing) but its kernel is not `view`".to_owned()
        })
    } else if fused != task.kernel.chunks().is_some() {
        Some(if fused {
            "runs a fused GEMM + collective op but its kernel gives no chunk count".to_owned()
        } else {
            "gives a chunk count but runs no fused GEMM + collective op".to_owned()
        })
    } else if task.kernel.chunks() == Some(0) {
        Some("has a chunk count of 0".to_owned())
    } else {
        None
    };
    if let Some(p) = problem {
        let m = format!("{} {p}", task_label(rp, t));
        v.err(Some(rp.rank), PlanRule::Kernel, m);
    }
}

/// Whether `node` is a `slice` taking one contiguous block of its input
/// ([`weft_ir::occupancy::slice_is_contiguous`]).
fn contiguous_slice(program: &Graph, node: &Node) -> bool {
    let (Op::Slice { axis, .. }, Some(&input)) = (&node.op, node.inputs.first()) else {
        return false;
    };
    program
        .value(input)
        .ty
        .shape
        .eval(&program.dims)
        .ok()
        .and_then(|s| weft_ir::occupancy::slice_is_contiguous(&s, *axis))
        .unwrap_or(false)
}

/// Every value a task reads was produced before it: earlier in the same task, or by a
/// task that happens before it. A missing dependency names both tasks.
pub(super) fn dependencies(v: &mut Verifier<'_>, rp: &RankPlan, placed: &Placed, order: &Order) {
    let r = Some(rp.rank);
    for (t, task) in rp.tasks.iter().enumerate() {
        for (i, name) in task.nodes.iter().enumerate() {
            let id: NodeId = v.node_by_name[name.as_str()];
            for &input in &v.program.node(id).inputs {
                let value = v.program.value(input);
                let Some((pt, pi)) = placed[value.producer.index()] else {
                    continue; // A source: present from the start.
                };
                let problem = if pt == t {
                    (pi >= i).then(|| {
                        format!(
                            "{} runs `{name}` before `{}`, which produces its input `{}`",
                            task_label(rp, t),
                            v.program.node(value.producer).name,
                            value.name
                        )
                    })
                } else {
                    (!order.happens_before(pt, t)).then(|| {
                        format!(
                            "missing dependency: {} reads `{}` produced by {}, but neither \
                             stream order nor an event chain puts the producer first",
                            task_label(rp, t),
                            value.name,
                            task_label(rp, pt)
                        )
                    })
                };
                if let Some(m) = problem {
                    v.err(r, PlanRule::Dependency, m);
                }
            }
        }
    }
}
