//! # The scheduler and the memory plan (issue 11, items 4 and 5)
//!
//! Turns the chosen per-device (SPMD) program into the per-rank part of a
//! [`weft_plan::Plan`]: for each rank, streams of tasks with predicted start and end, the
//! minimal set of cross-stream events, each collective's place in its group's call
//! sequence, a memory plan with buffer offsets, and the step's [`Prediction`].
//!
//! The stages, one file each:
//! - [`dag`]: a petgraph view of the program, one task per non-source node, with
//!   critical-path priorities (bottom levels over predicted times).
//! - [`simulate`]: list scheduling over one compute stream and `comm_streams`
//!   communication streams, simulated in time with compute slowed while communication
//!   runs beside it.
//! - [`events`]: the minimal cross-stream events, by a stream-aware reduction with
//!   vector clocks (O(tasks × streams), no transitive closure).
//! - [`memory`]: buffers per value (views share), liveness, offsets with reuse only
//!   after a happens-before, peaks.
//! - [`collectives`]: rank 0's schedule replicated to every rank with each rank's
//!   collective groups and sequence numbers, and the cross-rank check that no group's
//!   call order differs and no cross-axis wait cycle exists (NCCL would deadlock).
//! - [`predict`]: predicted, baseline, bound, exposed communication, overlap efficiency.
//!
//! **Views** (`Occupancy::View`, reshapes) are tasks of zero time with
//! [`KernelConfig::View`], so every program node that is not a source (input, weight,
//! constant) is executed exactly once per rank, by exactly one task of one node. A view
//! runs on the stream of the task that produced its input (compute when the input is a
//! source), so it never waits for an unrelated kernel of another stream. Its result
//! shares its input's buffer.
//!
//! The program is SPMD, so rank 0 is scheduled once and every rank runs the same
//! streams in the same order; only coordinates and collective groups differ per rank.
//!
//! **Priority rules.** List scheduling with one priority is a heuristic: in a ladder
//! layer, where attention and MLP are independent, the critical-path rule starts the MLP
//! (the longer bottom level) and leaves the attention's all-reduce nothing to run under.
//! [`schedule`] therefore simulates every rule of [`ScheduleOrder::ALL`] (critical path,
//! program order, critical path with communication counted twice) and keeps the one with
//! the smallest predicted step; ties go to the critical path, so a plan changes only
//! where another rule is strictly faster. Only the simulation is repeated (events,
//! memory plan and replication are made once, for the winner), and every rule's figure
//! is returned in [`Scheduled::tried`]. [`makespan`], the search's inner evaluation
//! where no memory limit is checked (its three-layer window), keeps the critical path
//! alone: it compares programs, and one rule for all keeps that comparison cheap and
//! even-handed; the program it picks gets every rule here.
//!
//! **`max_memory`.** Rules are given their memory plans fastest first; the first that
//! fits wins, and a faster rule that did not fit is marked so in [`Scheduled::tried`]
//! (running ahead along the critical path can hold more values at once than program
//! order, the order `weft_ir::memory::peak_memory` assumes). When none fits, the error is
//! [`ScheduleError::MemoryInfeasible`] of the critical-path attempt, naming the layer,
//! the buffer whose placement crossed the limit (value name and bytes), the rank's total
//! at that point and the limit.

pub mod collectives;
pub mod dag;
pub mod events;
pub mod fixed_rates;
pub mod memory;
pub mod predict;
pub mod simulate;

#[cfg(test)]
mod tests;

use weft_ir::{Graph, NodeId};
use weft_plan::{Prediction, PriorityTried, RankPlan, Stream, StreamId, StreamKind, Task, TaskId};

pub use collectives::{MeshGrid, verify_collective_order};
pub use fixed_rates::FixedRates;

/// What a task costs: the cost model's answer for one op.
pub use crate::cost::OpCost;

/// The costs the scheduler needs. The cost model implements it; tests use
/// [`FixedRates`].
pub trait TaskCosts {
    /// The cost of the (non-source, non-view) node `node` of `graph`.
    fn cost(&self, graph: &Graph, node: NodeId) -> Result<OpCost, ScheduleError>;
    /// Factor ≥ 1 by which compute slows while the communication task `comm` runs beside
    /// it.
    fn contention_slowdown(&self, comm: &OpCost) -> f64;
}

/// How to schedule.
#[derive(Clone, Debug)]
pub struct ScheduleOptions {
    /// Communication streams per rank at most (at least 1). With more than one, mesh
    /// axis `i` goes to communication lane `i % comm_streams`, so collectives of
    /// different axes can run at once. Only lanes that carry a collective become streams
    /// (numbered after compute, in lane order): a mesh axis without collectives, or a
    /// program that does not communicate, gets no communication stream.
    pub comm_streams: u32,
    /// The per-rank memory limit in bytes (weights and activations together).
    pub max_memory: Option<u64>,
    /// The layer of each node, indexed by `NodeId::index()` (from layer segmentation);
    /// empty when no segmentation is known. Used for tasks' `layer` and in errors.
    pub layer_of: Vec<Option<u32>>,
}

impl Default for ScheduleOptions {
    fn default() -> Self {
        ScheduleOptions {
            comm_streams: 1,
            max_memory: None,
            layer_of: Vec::new(),
        }
    }
}

/// The per-rank part of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Scheduled {
    /// One per device of the graph's mesh, in device order.
    pub ranks: Vec<RankPlan>,
    pub prediction: Prediction,
    /// Which priority rule the list scheduler used: the fastest that fits the memory
    /// limit, ties to [`ScheduleOrder::CriticalPath`].
    pub order: ScheduleOrder,
    /// Every rule simulated, in [`ScheduleOrder::ALL`] order, with its predicted step and
    /// whether its memory plan fit (`None`: not needed, a faster rule fit first).
    pub tried: Vec<PriorityTried>,
}

/// The priority rule of list scheduling (the plan's type: it is recorded there).
pub type ScheduleOrder = weft_plan::SchedulePriority;

/// Why a program could not be scheduled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("cannot cost node `{node}`: {reason}")]
    Cost { node: String, reason: String },
    #[error("the cost of node `{node}` is unusable: {reason}")]
    BadCost { node: String, reason: String },
    #[error("value `{value}`: {reason}")]
    Size { value: String, reason: String },
    #[error("`comm_streams` must be at least 1")]
    NoCommStream,
    #[error("`layer_of` has {got} entries but the graph has {expected} nodes")]
    LayerMap { expected: usize, got: usize },
    #[error("the mesh has {0} devices, more than a plan can number (u32)")]
    TooManyRanks(u64),
    #[error("node `{node}` communicates over mesh axis `{axis}`, which the mesh does not have")]
    UnknownAxis { node: String, axis: String },
    #[error("the program has a cycle through node `{0}`")]
    Cycle(String),
    #[error(
        "the memory plan does not fit in {limit} bytes per rank: {}buffer `{value}` ({bytes} bytes) \
         brings the rank to {total} bytes ({weight_bytes} of them weights)",
        layer.map_or(String::new(), |l| format!("in layer {l}, "))
    )]
    MemoryInfeasible {
        layer: Option<u32>,
        value: String,
        bytes: u64,
        total: u64,
        weight_bytes: u64,
        limit: u64,
    },
    #[error("collective order differs within group {group:?} on axis `{axis}`: {detail}")]
    CollectiveMismatch {
        axis: String,
        group: Vec<u32>,
        detail: String,
    },
    #[error("the ranks' collective orders can deadlock: {0}")]
    CollectiveDeadlock(String),
    #[error("the plan's events are inconsistent: {0}")]
    Events(String),
    #[error("the simulation stalled with {0} tasks left (a scheduler bug)")]
    Stalled(usize),
}

/// Schedules `graph` (the per-device program, shapes concrete under `graph.dims`) on
/// every rank of `graph.mesh`.
pub fn schedule(
    graph: &Graph,
    costs: &dyn TaskCosts,
    options: &ScheduleOptions,
) -> Result<Scheduled, ScheduleError> {
    if options.comm_streams == 0 {
        return Err(ScheduleError::NoCommStream);
    }
    if !options.layer_of.is_empty() && options.layer_of.len() != graph.num_nodes() {
        return Err(ScheduleError::LayerMap {
            expected: graph.num_nodes(),
            got: options.layer_of.len(),
        });
    }
    let grid = MeshGrid::new(&graph.mesh)?;
    let mut dag = dag::TaskDag::build(graph, costs, options.comm_streams)?;
    let mut simulated = Vec::with_capacity(ScheduleOrder::ALL.len());
    for rule in ScheduleOrder::ALL {
        dag.set_priority(rule);
        let timeline = simulate::simulate(&dag)?;
        let end = finite_end(graph, &dag, &timeline)?;
        simulated.push((rule, Some(timeline), end));
    }
    // Fastest first; the sort is stable, so on a tie the earlier rule of `ALL` (the
    // critical path first) goes first.
    let mut by_time: Vec<usize> = (0..simulated.len()).collect();
    by_time.sort_by(|&a, &b| simulated[a].2.total_cmp(&simulated[b].2));
    let mut fits = vec![None; simulated.len()];
    let mut chosen = None;
    let mut memory_error: Option<ScheduleError> = None;
    for i in by_time {
        let (rule, timeline, _) = &mut simulated[i];
        let Some(timeline) = timeline.take() else {
            continue;
        };
        dag.set_priority(*rule);
        match plan_rank(graph, &dag, &timeline, options) {
            Ok((hb, mem)) => {
                fits[i] = Some(true);
                chosen = Some((*rule, timeline, hb, mem));
                break;
            }
            Err(e @ ScheduleError::MemoryInfeasible { .. }) => {
                fits[i] = Some(false);
                // The critical path's error is the one reported when no rule fits.
                if memory_error.is_none() || *rule == ScheduleOrder::CriticalPath {
                    memory_error = Some(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    let (order, timeline, hb, mem) = match (chosen, memory_error) {
        (Some(c), _) => c,
        (None, Some(e)) => return Err(e),
        // Every rule either fits or fails with an error; an empty `ALL` would land here.
        (None, None) => return Err(ScheduleError::Stalled(dag.tasks.len())),
    };
    let tried = simulated
        .iter()
        .zip(fits)
        .map(|((rule, _, end), fits_memory)| PriorityTried {
            priority: *rule,
            predicted_us: *end,
            fits_memory,
        })
        .collect();
    let layer = |n: NodeId| options.layer_of.get(n.index()).copied().flatten();

    let streams = stream_list(graph, options.comm_streams, &dag.comm_axes);
    // Rank 0's tasks, in issue order; task ids are positions in that order.
    let tasks: Vec<Task> = timeline
        .issue
        .iter()
        .enumerate()
        .map(|(pos, &t)| {
            let task = &dag.tasks[t as usize];
            let node = graph.node(task.node);
            Task {
                id: TaskId(pos as u32),
                nodes: vec![node.name.clone()],
                layer: layer(task.node),
                stream: StreamId(task.stream),
                waits: hb.waits[t as usize].clone(),
                record: hb.record[t as usize],
                reads: mem.reads[t as usize].clone(),
                writes: mem.writes[t as usize].clone(),
                collective: None,
                kernel: task.cost.kernel.clone(),
                start_us: timeline.start[t as usize],
                end_us: timeline.end[t as usize],
            }
        })
        .collect();
    let template = RankPlan {
        rank: 0,
        coords: Vec::new(),
        streams,
        tasks,
        buffers: mem.buffers,
        memory: mem.summary,
    };
    let ranks = collectives::replicate(graph, &dag, &timeline, &grid, template)?;
    verify_collective_order(&ranks)?;
    let prediction = predict::predict(&dag, &timeline, &ranks);
    Ok(Scheduled {
        ranks,
        prediction,
        order,
        tried,
    })
}

/// The predicted step time of `graph` (µs) as [`schedule`] would list-schedule it, without
/// the events, memory plan and per-rank replication a plan needs: the search's inner loop,
/// which compares many programs and keeps one. No memory limit is checked here; the
/// chosen program is scheduled in full afterwards.
pub fn makespan(
    graph: &Graph,
    costs: &dyn TaskCosts,
    comm_streams: u32,
) -> Result<f64, ScheduleError> {
    if comm_streams == 0 {
        return Err(ScheduleError::NoCommStream);
    }
    MeshGrid::new(&graph.mesh)?;
    // The critical-path rule alone (see the module documentation).
    let dag = dag::TaskDag::build(graph, costs, comm_streams)?;
    let timeline = simulate::simulate(&dag)?;
    finite_end(graph, &dag, &timeline)
}

/// The timeline's last end, µs; an error naming a task whose end is not finite.
fn finite_end(
    graph: &Graph,
    dag: &dag::TaskDag,
    timeline: &simulate::Timeline,
) -> Result<f64, ScheduleError> {
    // `f64::max` would drop a NaN: refuse one rather than compare programs on it.
    if let Some((t, bad)) = timeline
        .end
        .iter()
        .enumerate()
        .find(|(_, t)| !t.is_finite())
    {
        return Err(ScheduleError::BadCost {
            node: graph.node(dag.tasks[t].node).name.clone(),
            reason: format!("its simulated end is {bad}"),
        });
    }
    Ok(timeline.end.iter().copied().fold(0.0, f64::max))
}

/// One rank's happens-before and memory plan for `timeline` (simulated under the DAG's
/// current priorities).
fn plan_rank(
    graph: &Graph,
    dag: &dag::TaskDag,
    timeline: &simulate::Timeline,
    options: &ScheduleOptions,
) -> Result<(events::HappensBefore, memory::MemoryPlan), ScheduleError> {
    let hb = events::happens_before(dag, timeline)?;
    let mem = memory::plan_memory(graph, dag, timeline, &hb, options)?;
    Ok((hb, mem))
}

/// The streams of every rank: compute first, then the communication streams that carry
/// collectives (an axis without any gets none), each named after the mesh axes it
/// carries (`comm` alone when there is one communication stream for every axis).
fn stream_list(graph: &Graph, comm_streams: u32, comm_axes: &[Vec<usize>]) -> Vec<Stream> {
    let mut streams = vec![Stream {
        id: StreamId(0),
        kind: StreamKind::Compute,
        name: "compute".into(),
    }];
    for (c, axes) in comm_axes.iter().enumerate() {
        let name = if comm_streams == 1 {
            "comm".to_owned()
        } else {
            let names: Vec<&str> = axes
                .iter()
                .map(|&a| graph.mesh.axes()[a].name.as_str())
                .collect();
            format!("comm.{}", names.join("+"))
        };
        streams.push(Stream {
            id: StreamId(c as u32 + 1),
            kind: StreamKind::Comm,
            name,
        });
    }
    streams
}
