//! Runs an execution plan: each rank's streams as threads that honour the plan's events.
//!
//! The plan is first checked by `verify_plan`. Then every stream of every rank gets a
//! thread that runs its tasks in order, waiting on each task's events before it and
//! recording its event after it. Each thread keeps a vector clock over its rank's streams
//! (advanced by its own tasks, joined with the recorder's clock at each wait), and every
//! value in the rank's store carries the (stream, position) of the task that wrote it. A
//! task may read a value only if its clock covers that write: a value not yet written,
//! or written by a task the plan does not order before the reader, is a detected race,
//! reported with both tasks, whatever the timing. A missing dependency therefore fails
//! every run, never only the unlucky ones.
//!
//! Collectives are matched across ranks through [`World::exchange`] with the plan's
//! sequence numbers: call `seq` of a group uses exchange numbers `seq·2^32 + 1, +2, …`
//! (a fused op makes one exchange per chunk or ring step), so the order on each rank is
//! the plan's, not the order threads happen to reach them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use weft_ir::{Graph, Node, NodeId, Occupancy, Op, Tensor, ValueId};
use weft_plan::{KernelConfig, Plan, RankPlan, Task};

use crate::collectives::World;
use crate::error::ExecError;
use crate::exec::{Rank, assemble_outputs, split_inputs};
use crate::mesh_coords::RankGrid;
use crate::plan_sync::{Clock, Events, Slot, Store, WaitError};
use crate::{RunOptions, Tensors};

/// Exchange numbers reserved for one collective call (see the module docs).
const CALL_STRIDE: u64 = 1 << 32;

/// Verifies `plan` against `program` (the plan's own program, parsed) and runs it on
/// logical inputs, returning the logical outputs by name, in order, as [`crate::run`]
/// does for the program alone.
pub fn run_plan(
    program: &Graph,
    plan: &Plan,
    inputs: &Tensors,
    options: &RunOptions,
) -> Result<Vec<(String, Tensor)>, ExecError> {
    weft_plan::verify_plan(plan, program).map_err(|e| ExecError::Plan(e.to_string()))?;
    run_plan_unverified(program, plan, inputs, options)
}

/// [`run_plan`] without `verify_plan`: for testing that the executor itself catches what
/// the verifier would (a missing dependency is a detected race, a cyclic wait a reported
/// hang). Plans from files must go through [`run_plan`]. Only what indexing needs is
/// checked here (ranks, streams, nodes, events in range).
pub fn run_plan_unverified(
    program: &Graph,
    plan: &Plan,
    inputs: &Tensors,
    options: &RunOptions,
) -> Result<Vec<(String, Tensor)>, ExecError> {
    weft_ir::verify(program)
        .map_err(|e| ExecError::Config(format!("the program is invalid: {e}")))?;
    let options = &with_plan_chunks(program, plan, options)?;
    let grid = RankGrid::new(&program.mesh);
    let node_by_name: HashMap<&str, NodeId> = program
        .nodes()
        .map(|(id, n)| (n.name.as_str(), id))
        .collect();
    let layout = Layout::new(program, plan, &grid, &node_by_name)?;
    let per_rank_inputs = split_inputs(program, inputs)?;
    let world = World::new(grid.clone(), options.timeout);
    let events = Events::new(&layout.event_counts, options.timeout);
    let threads_total: usize = plan.ranks.iter().map(|r| r.streams.len()).sum();
    let threads = (options.threads / threads_total.max(1)).max(1);
    let mut ranks = Vec::with_capacity(plan.ranks.len());
    for (r, rp) in plan.ranks.iter().enumerate() {
        ranks.push(RankRun::new(
            program,
            rp,
            r,
            &world,
            options,
            threads,
            &per_rank_inputs[r],
            &layout.node_task[r],
        )?);
    }
    let shared = Shared {
        program,
        plan,
        world: &world,
        events: &events,
        node_by_name: &node_by_name,
        options,
        threads,
    };
    let results = run_threads(&shared, &ranks);
    // Report the first error that is not only "another thread failed".
    let mut secondary = None;
    for e in results.into_iter().filter_map(Result::err) {
        if e.is_secondary() {
            secondary = secondary.or(Some(e));
        } else {
            return Err(e);
        }
    }
    if let Some(e) = secondary {
        return Err(e);
    }
    let mut outputs = Vec::with_capacity(ranks.len());
    for (r, run) in ranks.iter().enumerate() {
        let outs = program
            .outputs
            .iter()
            .map(|&v| {
                run.store
                    .get(v.index())
                    .map(|s| Arc::unwrap_or_clone(s.tensor))
                    .ok_or_else(|| {
                        ExecError::Plan(format!(
                            "rank {r}: output `{}` was never computed",
                            program.value(v).name
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        outputs.push(outs);
    }
    assemble_outputs(program, &outputs)
}

/// The plan's shape, checked enough to index without panicking.
struct Layout {
    /// Per rank, per node index: the task running it.
    node_task: Vec<Vec<Option<usize>>>,
    event_counts: Vec<usize>,
}

impl Layout {
    fn new(
        program: &Graph,
        plan: &Plan,
        grid: &RankGrid,
        node_by_name: &HashMap<&str, NodeId>,
    ) -> Result<Layout, ExecError> {
        if plan.ranks.len() != grid.ranks() {
            return Err(ExecError::Plan(format!(
                "the program's mesh has {} rank(s), the plan {}",
                grid.ranks(),
                plan.ranks.len()
            )));
        }
        let mut node_task = Vec::new();
        let mut event_counts = Vec::new();
        for (r, rp) in plan.ranks.iter().enumerate() {
            let mut map = vec![None; program.num_nodes()];
            let mut events = 0usize;
            for (t, task) in rp.tasks.iter().enumerate() {
                let bad = |m: String| ExecError::Plan(format!("rank {r}: task {t}: {m}"));
                if task.stream.0 as usize >= rp.streams.len() {
                    return Err(bad(format!("stream {} does not exist", task.stream.0)));
                }
                for name in &task.nodes {
                    let id = node_by_name
                        .get(name.as_str())
                        .ok_or_else(|| bad(format!("the program has no node `{name}`")))?;
                    if map[id.index()].replace(t).is_some() {
                        return Err(bad(format!("node `{name}` runs twice")));
                    }
                }
                if let Some(e) = task.record {
                    events = events.max(e.0 as usize + 1);
                }
            }
            if events > rp.tasks.len() {
                return Err(ExecError::Plan(format!(
                    "rank {r}: event ids reach {events}, more than its tasks"
                )));
            }
            for task in &rp.tasks {
                if let Some(e) = task.waits.iter().find(|e| e.0 as usize >= events) {
                    return Err(ExecError::Plan(format!(
                        "rank {r}: task {} waits on event {}, which no task records",
                        task.id.0, e.0
                    )));
                }
            }
            node_task.push(map);
            event_counts.push(events);
        }
        Ok(Layout {
            node_task,
            event_counts,
        })
    }
}

/// What every thread of the run reads.
struct Shared<'a> {
    program: &'a Graph,
    plan: &'a Plan,
    world: &'a World,
    events: &'a Events,
    node_by_name: &'a HashMap<&'a str, NodeId>,
    options: &'a RunOptions,
    threads: usize,
}

/// One rank's store and bookkeeping.
struct RankRun<'a> {
    rank: usize,
    store: Store,
    node_task: &'a [Option<usize>],
    /// Streams of the rank not yet done; the last one tells the world the rank finished.
    streams_left: AtomicUsize,
}

impl<'a> RankRun<'a> {
    /// The rank's store with its sources (inputs, weights, constants) in place.
    #[allow(clippy::too_many_arguments)]
    fn new(
        program: &Graph,
        rp: &RankPlan,
        rank: usize,
        world: &World,
        options: &RunOptions,
        threads: usize,
        inputs: &Tensors,
        node_task: &'a [Option<usize>],
    ) -> Result<RankRun<'a>, ExecError> {
        // How many tasks read each value (a task reading it twice counts once).
        let mut reads: Vec<(usize, usize)> = program
            .nodes()
            .filter_map(|(id, node)| Some((node_task[id.index()]?, node)))
            .flat_map(|(t, node)| node.inputs.iter().map(move |v| (t, v.index())))
            .collect();
        reads.sort_unstable();
        reads.dedup();
        let mut readers = vec![0u32; program.values().len()];
        for (_, v) in reads {
            readers[v] += 1;
        }
        let store = Store::new(program.values().len(), readers);
        let mut r = Rank::new(program, rank, world, options, threads);
        for (_, node) in program.nodes() {
            if matches!(node.op.occupancy(), Occupancy::Source) {
                let outs = r.eval_node(node, &[], inputs)?;
                for (&v, t) in node.outputs.iter().zip(outs) {
                    let slot = Slot {
                        tensor: Arc::new(t),
                        stamp: None,
                    };
                    store.put(v.index(), slot, program.outputs.contains(&v));
                }
            }
        }
        Ok(RankRun {
            rank,
            store,
            node_task,
            streams_left: AtomicUsize::new(rp.streams.len()),
        })
    }
}

/// Starts a thread per stream per rank and collects their results.
fn run_threads(shared: &Shared<'_>, ranks: &[RankRun<'_>]) -> Vec<Result<(), ExecError>> {
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for run in ranks {
            let rp = &shared.plan.ranks[run.rank];
            for stream in 0..rp.streams.len() {
                let spawned = std::thread::Builder::new()
                    .name(format!("rank {} {}", run.rank, rp.streams[stream].name))
                    .spawn_scoped(scope, move || {
                        let result = run_stream(shared, run, stream);
                        match &result {
                            Ok(()) => {
                                if run.streams_left.fetch_sub(1, Ordering::SeqCst) == 1 {
                                    shared.world.finish(run.rank);
                                }
                            }
                            Err(e) => {
                                if !e.is_secondary() {
                                    shared.world.fail(run.rank, e.to_string());
                                }
                                shared.events.stop();
                            }
                        }
                        result
                    });
                match spawned {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        let msg = format!(
                            "cannot start a thread for rank {} stream {stream}: {e}; run a smaller mesh",
                            run.rank
                        );
                        shared.world.fail(run.rank, msg.clone());
                        // The threads already started see the stop and end; the scope
                        // joins them.
                        shared.events.stop();
                        return vec![Err(ExecError::Config(msg))];
                    }
                }
            }
        }
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(ExecError::Config(
                        "a stream thread panicked (a bug in the executor)".into(),
                    ))
                })
            })
            .collect()
    })
}

/// `task 3 (`a`, `b`)`, for messages.
fn label(rp: &RankPlan, t: usize) -> String {
    let names: Vec<String> = rp.tasks[t].nodes.iter().map(|n| format!("`{n}`")).collect();
    let stream = &rp.streams[rp.tasks[t].stream.0 as usize].name;
    format!("task {t} on stream {stream} ({})", names.join(", "))
}

/// Runs one stream's tasks in order.
fn run_stream(shared: &Shared<'_>, run: &RankRun<'_>, stream: usize) -> Result<(), ExecError> {
    let rp = &shared.plan.ranks[run.rank];
    let mut clock: Clock = vec![0; rp.streams.len()];
    let mine = rp
        .tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| t.stream.0 as usize == stream);
    for (pos, (t, task)) in mine.enumerate() {
        let pos = pos as u32;
        let schedule_err = |message: String| ExecError::Schedule {
            rank: run.rank,
            task: label(rp, t),
            message,
        };
        for e in &task.waits {
            let e = e.0 as usize;
            match shared.events.wait(run.rank, e) {
                Ok(c) => {
                    for (mine, theirs) in clock.iter_mut().zip(c) {
                        *mine = (*mine).max(theirs);
                    }
                }
                Err(WaitError::Stopped) => {
                    return Err(ExecError::PeerFailed {
                        rank: run.rank,
                        failed_rank: run.rank,
                        reason: format!("{} stopped: another stream failed", label(rp, t)),
                    });
                }
                Err(WaitError::TimedOut) => {
                    let recorder = rp
                        .tasks
                        .iter()
                        .position(|x| x.record.is_some_and(|r| r.0 as usize == e))
                        .map_or_else(|| "no task".to_owned(), |x| label(rp, x));
                    return Err(schedule_err(format!(
                        "waited {:.1} s for event {e} (recorded by {recorder}), which never came: \
                         the plan's waits form a cycle, or its recorder is stuck",
                        shared.events.timeout().as_secs_f64()
                    )));
                }
            }
        }
        if shared.events.stopped() {
            return Err(ExecError::PeerFailed {
                rank: run.rank,
                failed_rank: run.rank,
                reason: "another stream failed".into(),
            });
        }
        let mut read = Vec::new();
        for name in &task.nodes {
            let node = shared.program.node(shared.node_by_name[name.as_str()]);
            let mut ins = Vec::with_capacity(node.inputs.len());
            for &v in &node.inputs {
                let slot =
                    visible(shared, run, rp, v, stream, pos, &clock, t).map_err(schedule_err)?;
                ins.push(slot.tensor);
                read.push(v);
            }
            let outs = run_node(shared, run, task, node, &ins)?;
            for (&v, out) in node.outputs.iter().zip(outs) {
                let slot = Slot {
                    tensor: Arc::new(out),
                    stamp: Some((stream, pos)),
                };
                let keep = shared.program.outputs.contains(&v);
                run.store.put(v.index(), slot, keep);
            }
        }
        clock[stream] = pos + 1;
        if let Some(e) = task.record {
            shared.events.record(run.rank, e.0 as usize, &clock);
        }
        read.sort_unstable();
        read.dedup();
        for v in read {
            let keep = shared.program.outputs.contains(&v);
            run.store.release(v.index(), keep);
        }
    }
    Ok(())
}

/// The value `v` as task `t` (at `pos` on `stream`, knowing `clock`) may read it: present,
/// and written by a task the plan orders before this one. Anything else is a race.
#[allow(clippy::too_many_arguments)]
fn visible(
    shared: &Shared<'_>,
    run: &RankRun<'_>,
    rp: &RankPlan,
    v: ValueId,
    stream: usize,
    pos: u32,
    clock: &Clock,
    t: usize,
) -> Result<Slot, String> {
    let value = shared.program.value(v);
    let producer = || {
        run.node_task[value.producer.index()].map_or_else(
            || "no task (the plan never runs it)".to_owned(),
            |p| label(rp, p),
        )
    };
    let Some(slot) = run.store.get(v.index()) else {
        return Err(format!(
            "race: reads `{}` before {} wrote it; the plan does not order the producer first",
            value.name,
            producer()
        ));
    };
    match slot.stamp {
        None => Ok(slot),
        Some((s, p)) if s == stream && p <= pos => Ok(slot),
        Some((s, p)) if clock[s] > p => Ok(slot),
        Some(_) => Err(format!(
            "race: reads `{}`, which {} wrote first only by chance: no stream order or event \
             chain orders it before task {t}",
            value.name,
            producer()
        )),
    }
}

/// Runs one node of `task`, with the plan's collective sequence number and chunk count.
fn run_node(
    shared: &Shared<'_>,
    run: &RankRun<'_>,
    task: &Task,
    node: &Node,
    ins: &[Arc<Tensor>],
) -> Result<Vec<Tensor>, ExecError> {
    let rank = run.rank;
    let mut r = Rank::new(
        shared.program,
        rank,
        shared.world,
        shared.options,
        shared.threads,
    );
    let plan_err = |m: String| ExecError::Plan(format!("rank {rank}: node `{}`: {m}", node.name));
    let call = match node.op.occupancy().collective() {
        None => None,
        Some(c) => {
            let call = task
                .collective
                .as_ref()
                .filter(|call| call.axis == c.axis)
                .ok_or_else(|| {
                    plan_err(format!(
                        "communicates over `{}` but its task names no such collective call",
                        c.axis
                    ))
                })?;
            let base = call.seq.checked_mul(CALL_STRIDE).ok_or_else(|| {
                plan_err(format!(
                    "collective call #{} is past the numbering",
                    call.seq
                ))
            })?;
            *r.seq_mut(c.axis) = base;
            Some((c.axis.to_owned(), base))
        }
    };
    let size = call
        .as_ref()
        .and_then(|(axis, _)| shared.world.grid().group(rank, axis))
        .map_or(1, |g| g.0.len() as u64);
    // An all-gather + GEMM's gathered rows: its piece's rows along `dim`, times the group.
    let gathered = match &node.op {
        Op::AllGatherMatMul { dim, .. } => ins.first().and_then(|a| {
            let rank = a.shape().len() as i64;
            let d = if *dim < 0 { dim + rank } else { *dim };
            let rows = *a.shape().get(usize::try_from(d).ok()?)? as u64;
            rows.checked_mul(size)
        }),
        _ => None,
    };
    let configured = configured(node, &task.kernel, size, gathered).map_err(plan_err)?;
    let outs = r.eval_node(configured, ins, &Tensors::new())?;
    if let Some((axis, base)) = call
        && *r.seq_mut(&axis) - base >= CALL_STRIDE
    {
        return Err(plan_err(format!(
            "made more than 2^32 exchanges in one collective call over `{axis}`"
        )));
    }
    Ok(outs)
}

/// Checks a task's kernel configuration against what the CPU executor runs: a fused
/// GEMM + reduce-scatter needs the plan's chunk count (handed to the executor through
/// [`RunOptions::chunks`] by [`with_plan_chunks`]); an all-gather + GEMM needs a chunk
/// count too, and runs as a ring of one step per group member whatever the count: each
/// output row is its gathered row times the weight, computed alone, so how the rows are
/// cut into chunks (a GPU kernel's pipelining) cannot change a value — the ring is the
/// decomposition the op stands for, and the one the executor proves. A count that does not
/// divide the gathered rows (`gathered`) describes no kernel and is refused.
fn configured<'n>(
    node: &'n Node,
    kernel: &KernelConfig,
    group_size: u64,
    gathered: Option<u64>,
) -> Result<&'n Node, String> {
    let chunks = kernel.chunks();
    if matches!(node.op, Op::MatMulReduceScatter { .. }) && chunks.is_none() {
        return Err(
            "a fused GEMM + reduce-scatter needs a chunk count in its kernel configuration".into(),
        );
    }
    if matches!(node.op, Op::AllGatherMatMul { .. }) {
        match (chunks, gathered) {
            (None | Some(0), _) => {
                return Err(format!(
                    "a fused all-gather + GEMM needs a chunk count of at least 1 in its kernel \
                     configuration (the CPU executor runs it as a ring of {group_size} steps)"
                ));
            }
            (Some(c), Some(rows)) if rows % c != 0 => {
                return Err(format!(
                    "the plan runs this all-gather + GEMM in {c} chunks, which do not divide its \
                     {rows} gathered rows"
                ));
            }
            _ => {}
        }
    }
    Ok(node)
}

/// `options` with [`RunOptions::chunks`] filled from the plan's kernel configurations:
/// the chunk count of every fused GEMM + reduce-scatter. Every rank runs the same
/// program, so every rank must configure a node alike; a plan where they differ is
/// refused rather than run with one rank's choice.
fn with_plan_chunks(
    program: &Graph,
    plan: &Plan,
    options: &RunOptions,
) -> Result<RunOptions, ExecError> {
    let mut out = options.clone();
    // The fused GEMM + reduce-scatter nodes, by name, looked up once (not per task).
    let fused: std::collections::HashSet<&str> = program
        .nodes()
        .filter(|(_, n)| matches!(n.op, Op::MatMulReduceScatter { .. }))
        .map(|(_, n)| n.name.as_str())
        .collect();
    let mut chosen: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    for (r, rp) in plan.ranks.iter().enumerate() {
        for task in &rp.tasks {
            let Some(chunks) = task.kernel.chunks() else {
                continue;
            };
            for name in &task.nodes {
                if !fused.contains(name.as_str()) {
                    continue;
                }
                match chosen.get(name) {
                    Some(&(c, first)) if c != chunks => {
                        return Err(ExecError::Plan(format!(
                            "node `{name}`: rank {first} runs it in {c} chunks but rank {r} in {chunks}; the CPU executor needs one count per node"
                        )));
                    }
                    Some(_) => {}
                    None => {
                        chosen.insert(name.clone(), (chunks, r));
                    }
                }
            }
        }
    }
    out.chunks = chosen.into_iter().map(|(n, (c, _))| (n, c)).collect();
    Ok(out)
}
