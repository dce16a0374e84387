//! The task DAG: a petgraph view of the per-device program with one task per
//! non-source node, each with its cost, its stream and its critical-path priority.
//!
//! Priority is by default the task's bottom level: its own predicted time plus the
//! longest chain of predicted times after it. List scheduling by bottom level starts first
//! the work whose delay would delay the end of the step most. [`TaskDag::set_priority`]
//! switches to another rule of [`SchedulePriority`] (program order; bottom level with
//! communication counted twice); the scheduler simulates each and keeps the fastest.

use petgraph::Direction;
use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};
use weft_ir::{CollectiveKind, Graph, NodeId, Occupancy};
use weft_plan::{KernelConfig, SchedulePriority};

use super::{OpCost, ScheduleError, TaskCosts};

/// What a task occupies (from [`Occupancy`], less sources, which are not tasks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskClass {
    /// A reshape: no time, no kernel.
    View,
    /// A compute kernel.
    Compute,
    /// A communication kernel.
    Comm,
    /// A GEMM fused with a collective: on the compute stream, and slowed like compute.
    Both,
}

impl TaskClass {
    /// Whether communication beside this task slows it.
    pub fn slowed_by_comm(self) -> bool {
        match self {
            TaskClass::Compute | TaskClass::Both => true,
            TaskClass::View | TaskClass::Comm => false,
        }
    }
}

/// One task of the DAG.
#[derive(Clone, Debug)]
pub struct DagTask {
    pub node: NodeId,
    pub class: TaskClass,
    /// The stream index: 0 is compute, `1..` the communication streams.
    pub stream: u32,
    pub cost: OpCost,
    /// For a communication task, the factor by which it slows compute beside it (≥ 1);
    /// 1 for every other task.
    pub slowdown: f64,
    /// The collective it performs: kind and mesh axis index.
    pub collective: Option<(CollectiveKind, usize)>,
    /// Bottom level, µs.
    pub priority: f64,
}

/// The program as tasks and dependencies. Task `i` is petgraph node `i`; tasks are in
/// the program's arena order, which is topological.
#[derive(Clone, Debug)]
pub struct TaskDag {
    pub tasks: Vec<DagTask>,
    pub graph: DiGraph<(), (), u32>,
    /// For each program node (by index), its task.
    pub task_of_node: Vec<Option<u32>>,
    /// Compute plus communication streams.
    pub num_streams: u32,
    /// For each communication stream (stream `1 + i`), the mesh axes (indices) whose
    /// collectives it carries; only axes with a communication task get a stream.
    pub comm_axes: Vec<Vec<usize>>,
    /// The longest chain of predicted times (no contention), µs.
    pub critical_path_us: f64,
    /// A topological order of the tasks (dependencies first), for bottom levels.
    topo: Vec<u32>,
    /// The rule the tasks' `priority` holds now.
    rule: SchedulePriority,
}

impl TaskDag {
    /// Builds the DAG of `graph`, costing every non-view task with `costs`.
    pub fn build(
        graph: &Graph,
        costs: &dyn TaskCosts,
        comm_streams: u32,
    ) -> Result<TaskDag, ScheduleError> {
        let mut tasks: Vec<DagTask> = Vec::new();
        let mut dag = DiGraph::<(), (), u32>::default();
        let mut task_of_node = vec![None; graph.num_nodes()];
        for (id, node) in graph.nodes() {
            let occupancy = node.op.occupancy();
            let class = match occupancy {
                Occupancy::Source => continue,
                Occupancy::View => TaskClass::View,
                Occupancy::Compute => TaskClass::Compute,
                Occupancy::Comm(_) => TaskClass::Comm,
                Occupancy::Both(_) => TaskClass::Both,
            };
            let collective = match occupancy.collective() {
                Some(c) => {
                    let axis = graph
                        .mesh
                        .axes()
                        .iter()
                        .position(|a| a.name == c.axis)
                        .ok_or_else(|| ScheduleError::UnknownAxis {
                            node: node.name.clone(),
                            axis: c.axis.to_owned(),
                        })?;
                    Some((c.kind, axis))
                }
                None => None,
            };
            let mut preds: Vec<u32> = node
                .inputs
                .iter()
                .filter_map(|&v| task_of_node[graph.value(v).producer.index()])
                .collect();
            preds.sort_unstable();
            preds.dedup();
            let stream = match (class, collective) {
                (TaskClass::Comm, Some((_, axis))) => 1 + (axis as u32 % comm_streams),
                (TaskClass::View, _) => preds.first().map_or(0, |&p| tasks[p as usize].stream),
                _ => 0,
            };
            let (cost, slowdown) = if class == TaskClass::View {
                (view_cost(), 1.0)
            } else {
                let cost = costs.cost(graph, id)?;
                check_cost(&node.name, &cost)?;
                let slowdown = if class == TaskClass::Comm {
                    let s = costs.contention_slowdown(&cost);
                    if !(s.is_finite() && s >= 1.0) {
                        return Err(ScheduleError::BadCost {
                            node: node.name.clone(),
                            reason: format!("contention slowdown {s} is not a finite factor ≥ 1"),
                        });
                    }
                    s
                } else {
                    1.0
                };
                (cost, slowdown)
            };
            let index = dag.add_node(());
            debug_assert_eq!(index.index(), tasks.len());
            for &p in &preds {
                dag.add_edge(NodeIndex::new(p as usize), index, ());
            }
            task_of_node[id.index()] = Some(tasks.len() as u32);
            tasks.push(DagTask {
                node: id,
                class,
                stream,
                cost,
                slowdown,
                collective,
                priority: 0.0,
            });
        }
        let comm_axes = compact_comm_streams(&mut tasks, graph.mesh.axes().len(), comm_streams);
        let order = toposort(&dag, None).map_err(|cycle| {
            ScheduleError::Cycle(graph.node(tasks[cycle.node_id().index()].node).name.clone())
        })?;
        let mut out = TaskDag {
            tasks,
            graph: dag,
            task_of_node,
            num_streams: 1 + comm_axes.len() as u32,
            comm_axes,
            critical_path_us: 0.0,
            topo: order.iter().map(|n| n.index() as u32).collect(),
            rule: SchedulePriority::CriticalPath,
        };
        out.bottom_levels(1.0);
        out.critical_path_us = out.tasks.iter().map(|t| t.priority).fold(0.0, f64::max);
        Ok(out)
    }

    /// The rule the priorities follow now.
    pub fn priority_rule(&self) -> SchedulePriority {
        self.rule
    }

    /// Sets every task's priority by `rule`:
    /// - critical path: the bottom level;
    /// - program order: earliest (arena) node first, the order
    ///   `weft_ir::memory::peak_memory` assumes, which keeps fewer values alive than
    ///   running ahead along the critical path when memory is the constraint, and runs
    ///   independent branches (a ladder layer's attention, then its MLP) as written;
    /// - communication weighted: the bottom level with each communication task counted at
    ///   twice its time, so a branch that ends in a collective starts before an equally
    ///   long one that does not and its collective has more compute left to hide under.
    pub fn set_priority(&mut self, rule: SchedulePriority) {
        match rule {
            SchedulePriority::CriticalPath => self.bottom_levels(1.0),
            SchedulePriority::CommWeighted => self.bottom_levels(2.0),
            SchedulePriority::ProgramOrder => {
                let n = self.tasks.len();
                for (i, t) in self.tasks.iter_mut().enumerate() {
                    t.priority = (n - i) as f64;
                }
            }
        }
        self.rule = rule;
    }

    /// Sets each task's priority to its bottom level, a communication task's own time
    /// counted `comm_weight` times.
    fn bottom_levels(&mut self, comm_weight: f64) {
        for &n in self.topo.iter().rev() {
            let below = self
                .graph
                .neighbors_directed(NodeIndex::new(n as usize), Direction::Outgoing)
                .map(|s| self.tasks[s.index()].priority)
                .fold(0.0, f64::max);
            let t = &mut self.tasks[n as usize];
            let weight = if t.class == TaskClass::Comm {
                comm_weight
            } else {
                1.0
            };
            t.priority = t.cost.time_us * weight + below;
        }
    }

    /// The tasks `t` depends on.
    pub fn preds(&self, t: u32) -> impl Iterator<Item = u32> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(t as usize), Direction::Incoming)
            .map(|n| n.index() as u32)
    }

    /// The tasks that depend on `t`.
    pub fn succs(&self, t: u32) -> impl Iterator<Item = u32> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(t as usize), Direction::Outgoing)
            .map(|n| n.index() as u32)
    }
}

/// A view's cost: nothing moves and nothing launches.
fn view_cost() -> OpCost {
    OpCost {
        time_us: 0.0,
        compute_us: 0.0,
        comm_us: 0.0,
        comm_sm_fraction: 0.0,
        kernel: KernelConfig::View,
    }
}

/// Refuses costs the simulation cannot use (negative, NaN, infinite).
fn check_cost(node: &str, cost: &OpCost) -> Result<(), ScheduleError> {
    for (what, v) in [
        ("time_us", cost.time_us),
        ("compute_us", cost.compute_us),
        ("comm_us", cost.comm_us),
        ("comm_sm_fraction", cost.comm_sm_fraction),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(ScheduleError::BadCost {
                node: node.to_owned(),
                reason: format!("{what} = {v} is not a finite non-negative number"),
            });
        }
    }
    Ok(())
}

/// Drops the communication streams no task uses and renumbers the rest densely after
/// compute (stream 0): a mesh axis without collectives gets no stream. Tasks were built
/// with axis `i` on stream `1 + i % comm_streams`; returns, per kept stream, the axes
/// whose communication tasks it carries.
fn compact_comm_streams(tasks: &mut [DagTask], axes: usize, comm_streams: u32) -> Vec<Vec<usize>> {
    // Per original lane, the axes with a communication task on it.
    let mut lanes: Vec<Vec<usize>> = vec![Vec::new(); comm_streams as usize];
    for t in tasks.iter().filter(|t| t.class == TaskClass::Comm) {
        if let Some((_, axis)) = t.collective
            && axis < axes
        {
            let lane = &mut lanes[axis % comm_streams as usize];
            if !lane.contains(&axis) {
                lane.push(axis);
            }
        }
    }
    let mut new_id = vec![0u32; comm_streams as usize + 1];
    let mut kept = Vec::new();
    for (lane, mut axes) in lanes.into_iter().enumerate() {
        if !axes.is_empty() {
            axes.sort_unstable();
            kept.push(axes);
            new_id[lane + 1] = kept.len() as u32;
        }
    }
    for t in tasks.iter_mut() {
        t.stream = new_id[t.stream as usize];
    }
    kept
}
