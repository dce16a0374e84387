//! The serial plan: a valid, unscheduled plan of a program, one task per node in program
//! order on each rank's compute or communication stream (the latter only when something
//! communicates), an event for each dependency between the two streams and for each
//! collective call ordered after its axis's previous call on the other stream, no memory
//! reuse (offsets aligned) and all times 0.
//!
//! It is the baseline the real scheduler's plans are checked against (the executor runs
//! both and must give the same outputs) and the fixture the verifier's tests break on
//! purpose. It needs no hardware profile: kernels are [`KernelConfig::Unconfigured`].

use std::collections::BTreeMap;

use weft_ir::{CollectiveKind, Graph, Occupancy, Op};

use crate::{
    Buffer, BufferId, BufferKind, CollectiveCall, CompileOptions, EventId, HardwareRef,
    KernelConfig, MemorySummary, MeshAxis, PLAN_FORMAT, PLAN_VERSION, Plan, PlanError, Prediction,
    RankPlan, RuleCount, SourceModel, Stream, StreamId, StreamKind, Task, TaskId,
};

/// What a plan records about where it came from; everything but the per-rank work.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanHeader {
    pub compiler: String,
    pub source: SourceModel,
    pub hardware: HardwareRef,
    pub options: CompileOptions,
    pub rules_applied: Vec<RuleCount>,
    pub model_changing_rewrites: Vec<weft_ir::ModelChange>,
    /// The program as a Weft JSON model object (the caller writes it; this crate does not
    /// depend on the JSON frontend).
    pub program: serde_json::Value,
}

const COMPUTE: StreamId = StreamId(0);
const COMM: StreamId = StreamId(1);

/// The chunk count of a fused op in the serial plan: a GEMM + reduce-scatter runs whole
/// (one chunk: the GEMM, then its collective — the executor's default); an all-gather +
/// GEMM runs as a ring of one step per group member, so its chunks are the group size.
fn fused_chunks(op: &Op, group_size: u64) -> Option<u64> {
    match op.occupancy() {
        Occupancy::Both(c) => match c.kind {
            CollectiveKind::AllGather => Some(group_size),
            CollectiveKind::ReduceScatter
            | CollectiveKind::AllReduce
            | CollectiveKind::AllToAll
            | CollectiveKind::Send
            | CollectiveKind::Recv
            | CollectiveKind::Broadcast => Some(1),
        },
        Occupancy::Source | Occupancy::View | Occupancy::Compute | Occupancy::Comm(_) => None,
    }
}

/// Builds the serial plan of `program` (see the module docs).
pub fn serial_plan(program: &Graph, header: PlanHeader) -> Result<Plan, PlanError> {
    let mesh: Vec<MeshAxis> = program
        .mesh
        .axes()
        .iter()
        .map(|a| MeshAxis {
            name: a.name.clone(),
            size: a.size,
        })
        .collect();
    let ranks = crate::mesh::device_count(&mesh).ok_or_else(|| {
        PlanError::Program(format!("the mesh {} has too many devices", program.mesh))
    })?;
    let sizes = value_sizes(program)?;
    let ranks: Vec<RankPlan> = (0..ranks)
        .map(|r| serial_rank(program, &mesh, r, &sizes))
        .collect::<Result<_, _>>()?;
    let peaks = ranks.iter().map(|r| r.memory.peak_bytes).collect();
    Ok(Plan {
        format: PLAN_FORMAT.to_owned(),
        version: PLAN_VERSION,
        compiler: header.compiler,
        source: header.source,
        dims: program.dims.clone(),
        mesh,
        hardware: header.hardware,
        options: header.options,
        rules_applied: header.rules_applied,
        model_changing_rewrites: header.model_changing_rewrites,
        program_sha256: crate::program_digest(&header.program),
        program: header.program,
        ranks,
        prediction: Prediction {
            predicted_us: 0.0,
            baseline_us: 0.0,
            bound_us: 0.0,
            exposed_comm_us: 0.0,
            overlap_efficiency: 1.0,
            peak_memory_bytes: peaks,
        },
        choice: crate::ChoiceSummary {
            chosen_by: "serial".to_owned(),
            schedule_priority: crate::SchedulePriority::ProgramOrder,
            ..crate::ChoiceSummary::default()
        },
    })
}

/// Each value's bytes, by value index.
fn value_sizes(program: &Graph) -> Result<Vec<u64>, PlanError> {
    program
        .values()
        .map(|(_, v)| {
            v.ty.size_bytes(&program.dims).map_err(|e| PlanError::Size {
                value: v.name.clone(),
                message: e.to_string(),
            })
        })
        .collect()
}

fn serial_rank(
    program: &Graph,
    mesh: &[MeshAxis],
    rank: u32,
    sizes: &[u64],
) -> Result<RankPlan, PlanError> {
    let mut node_task: Vec<Option<usize>> = vec![None; program.num_nodes()];
    let mut home: Vec<usize> = vec![usize::MAX; program.values().len()];
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut tasks: Vec<Task> = Vec::new();
    let mut seq: BTreeMap<String, u64> = BTreeMap::new();
    // Per mesh axis, the task of its latest collective call.
    let mut last_call: BTreeMap<String, usize> = BTreeMap::new();
    let mut events = 0u32;
    for (id, node) in program.nodes() {
        let occupancy = node.op.occupancy();
        // Buffers: a view joins its input's; everything else gets its own.
        for &out in &node.outputs {
            let value = program.value(out);
            if let (Occupancy::View, Some(&input)) = (occupancy, node.inputs.first()) {
                home[out.index()] = home[input.index()];
                buffers[home[input.index()]].values.push(value.name.clone());
                continue;
            }
            let kind = match &node.op {
                Op::Weight { .. } | Op::Constant { .. } => BufferKind::Weight,
                Op::Input { .. } => BufferKind::Input,
                _ => BufferKind::Activation,
            };
            home[out.index()] = buffers.len();
            buffers.push(Buffer {
                id: BufferId(buffers.len() as u32),
                values: vec![value.name.clone()],
                kind,
                bytes: sizes[out.index()],
                offset: 0,
                producer: None,
                last_reader: None,
            });
        }
        let stream = match occupancy {
            Occupancy::Source => continue,
            Occupancy::Comm(_) => COMM,
            Occupancy::View | Occupancy::Compute | Occupancy::Both(_) => COMPUTE,
        };
        let t = tasks.len();
        node_task[id.index()] = Some(t);
        let mut waits = Vec::new();
        let mut reads = Vec::new();
        for &input in &node.inputs {
            reads.push(BufferId(home[input.index()] as u32));
            let Some(pt) = node_task[program.value(input).producer.index()] else {
                continue;
            };
            if tasks[pt].stream != stream {
                let e = *tasks[pt].record.get_or_insert_with(|| {
                    events += 1;
                    EventId(events - 1)
                });
                waits.push(e);
            }
        }
        // A communicator runs its calls one at a time, in order: a call on the other
        // stream than the axis's previous call (a fused op computes on `compute`, a plain
        // collective runs on `comm`) waits for that call.
        if let Some(c) = occupancy.collective()
            && let Some(&pt) = last_call.get(c.axis)
            && tasks[pt].stream != stream
        {
            let e = *tasks[pt].record.get_or_insert_with(|| {
                events += 1;
                EventId(events - 1)
            });
            waits.push(e);
        }
        reads.sort();
        reads.dedup();
        waits.sort();
        waits.dedup();
        let writes: Vec<BufferId> = match occupancy {
            Occupancy::View => Vec::new(),
            Occupancy::Source | Occupancy::Compute | Occupancy::Comm(_) | Occupancy::Both(_) => {
                node.outputs
                    .iter()
                    .map(|o| BufferId(home[o.index()] as u32))
                    .collect()
            }
        };
        for &b in &writes {
            buffers[b.0 as usize].producer = Some(TaskId(t as u32));
        }
        let collective = match occupancy.collective() {
            Some(c) => {
                let group = crate::mesh::group(mesh, rank, c.axis).ok_or_else(|| {
                    PlanError::Program(format!(
                        "node `{}` communicates over mesh axis `{}`, which the mesh lacks",
                        node.name, c.axis
                    ))
                })?;
                last_call.insert(c.axis.to_owned(), t);
                let n = seq.entry(c.axis.to_owned()).or_insert(0);
                *n += 1;
                Some(CollectiveCall {
                    kind: c.kind.name().to_owned(),
                    axis: c.axis.to_owned(),
                    group,
                    seq: *n - 1,
                })
            }
            None => None,
        };
        let group_size = collective.as_ref().map_or(1, |c| c.group.len() as u64);
        let kernel = match occupancy {
            Occupancy::View => KernelConfig::View,
            Occupancy::Source | Occupancy::Compute | Occupancy::Comm(_) | Occupancy::Both(_) => {
                KernelConfig::Unconfigured {
                    chunks: fused_chunks(&node.op, group_size),
                }
            }
        };
        tasks.push(Task {
            id: TaskId(t as u32),
            nodes: vec![node.name.clone()],
            layer: None,
            stream,
            waits,
            record: None,
            reads,
            writes,
            collective,
            kernel,
            start_us: 0.0,
            end_us: 0.0,
        });
    }
    // Last readers (issue order), outputs, and offsets without reuse.
    for (t, task) in tasks.iter().enumerate() {
        for b in &task.reads {
            buffers[b.0 as usize].last_reader = Some(TaskId(t as u32));
        }
    }
    for &out in &program.outputs {
        let b = &mut buffers[home[out.index()]];
        if b.kind == BufferKind::Activation {
            b.kind = BufferKind::Output;
        }
    }
    let (mut weight_end, mut pool_end) = (0u64, 0u64);
    for b in &mut buffers {
        let end = match b.kind {
            BufferKind::Weight => {
                b.last_reader = None;
                &mut weight_end
            }
            BufferKind::Output => {
                b.last_reader = None;
                &mut pool_end
            }
            BufferKind::Input | BufferKind::Activation => &mut pool_end,
        };
        b.offset = *end;
        // Offsets stay multiples of the alignment: each buffer takes its padded size.
        *end = crate::aligned_size(b.bytes)
            .and_then(|padded| end.checked_add(padded))
            .ok_or_else(|| {
                PlanError::Program(format!("rank {rank}'s buffers take more than 2^64 bytes"))
            })?;
    }
    let memory = MemorySummary {
        weight_bytes: weight_end,
        activation_peak_bytes: pool_end,
        peak_bytes: weight_end.checked_add(pool_end).ok_or_else(|| {
            PlanError::Program(format!("rank {rank}'s memory takes more than 2^64 bytes"))
        })?,
        peak_at: fullest_task(&buffers, tasks.len()),
    };
    // The communication stream exists only when something communicates on it.
    let mut streams = vec![Stream {
        id: COMPUTE,
        kind: StreamKind::Compute,
        name: "compute".into(),
    }];
    if tasks.iter().any(|t| t.stream == COMM) {
        streams.push(Stream {
            id: COMM,
            kind: StreamKind::Comm,
            name: "comm".into(),
        });
    }
    Ok(RankPlan {
        rank,
        coords: crate::mesh::coords(mesh, rank),
        streams,
        tasks,
        buffers,
        memory,
    })
}

/// The task (in issue order) during which the most non-weight bytes are alive: a buffer
/// lives from its producer (the start, for an input) to its last reader (the end, for an
/// output; its producer when nothing reads it).
fn fullest_task(buffers: &[Buffer], tasks: usize) -> Option<TaskId> {
    let mut delta = vec![0i128; tasks + 1];
    for b in buffers.iter().filter(|b| b.kind != BufferKind::Weight) {
        let from = b.producer.map_or(0, |t| t.0 as usize);
        let to = match b.kind {
            BufferKind::Output => tasks,
            BufferKind::Weight | BufferKind::Input | BufferKind::Activation => {
                b.last_reader.or(b.producer).map_or(0, |t| t.0 as usize + 1)
            }
        };
        if to > from {
            delta[from] += i128::from(b.bytes);
            delta[to] -= i128::from(b.bytes);
        }
    }
    let mut live = 0i128;
    let mut best: Option<(i128, usize)> = None;
    for (t, d) in delta.iter().take(tasks).enumerate() {
        live += d;
        if best.is_none_or(|(b, _)| live > b) {
            best = Some((live, t));
        }
    }
    best.map(|(_, t)| TaskId(t as u32))
}
