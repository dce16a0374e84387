//! The memory plan: a buffer per value (views share their input's), liveness over the
//! schedule, offsets with reuse, and peaks.
//!
//! - Every buffer takes its size rounded up to [`weft_plan::BUFFER_ALIGNMENT`] (256
//!   bytes, `cudaMalloc`'s alignment) in its pool, so every offset is a multiple of it;
//!   a buffer's `bytes` stays its tensor's size and the pools' sizes include the padding.
//! - Weights and constants live in their own pool, resident all step, packed in program
//!   order.
//! - Graph inputs, activations and outputs share the activation pool. Inputs are placed
//!   first (present at the start); every other buffer when its producer task is issued,
//!   in issue order.
//! - A buffer's *users* are its producer and every task that reads it (a view's readers
//!   included). Its bytes may be reused by a new buffer only when every user
//!   *happens-before* the new buffer's producer (by stream order and the plan's events,
//!   from the vector clocks of [`super::events`]); otherwise it is not reused: the plan
//!   adds no event for memory. Outputs and inputs that are outputs are never reused.
//! - Placement is greedy best fit: the smallest run of reusable bytes that fits, else
//!   the top of the pool (extending the run that ends there). Bytes freed for every
//!   stream's future (dead under each stream's latest clock) are merged back into free
//!   space, so the list stays as long as what is live.
//!
//! **Against `weft_ir::memory::peak_memory`.** That estimate walks the program in arena
//! order on one stream, frees a value right after its last reader, counts a reshape's
//! result as new bytes and counts inputs twice (held and copied), with no placement. This
//! plan differs in four ways: views share storage (lower); the critical-path order may
//! keep more alive at once than arena order (higher or lower); reuse across streams waits
//! for a happens-before, not just a later time (higher); and offsets can fragment
//! (higher). On one stream with no views, in arena order, both give the same peak (the
//! tests check this; `tests/examples.rs` prints both for the examples, with the live-bytes
//! lower bound of the schedule, which the pool never undercuts).

use weft_ir::{Graph, Occupancy};
use weft_plan::{Buffer, BufferId, BufferKind, MemorySummary, TaskId, aligned_size};

use super::dag::TaskDag;
use super::events::HappensBefore;
use super::simulate::Timeline;
use super::{ScheduleError, ScheduleOptions};

/// The memory plan of one rank.
#[derive(Clone, Debug)]
pub struct MemoryPlan {
    pub buffers: Vec<Buffer>,
    /// Buffers each DAG task reads and writes.
    pub reads: Vec<Vec<BufferId>>,
    pub writes: Vec<Vec<BufferId>>,
    pub summary: MemorySummary,
}

/// A stretch of the activation pool and the buffer last placed there (`None`: free for
/// every task still to come).
#[derive(Clone, Copy, Debug)]
struct Region {
    offset: u64,
    size: u64,
    occupant: Option<u32>,
}

/// Plans the buffers of `graph` for the schedule `timeline`.
pub fn plan_memory(
    graph: &Graph,
    dag: &TaskDag,
    timeline: &Timeline,
    hb: &HappensBefore,
    options: &ScheduleOptions,
) -> Result<MemoryPlan, ScheduleError> {
    let n = dag.tasks.len();
    let streams = hb.streams;
    let mut issue_pos = vec![0u32; n];
    for (i, &t) in timeline.issue.iter().enumerate() {
        issue_pos[t as usize] = i as u32;
    }
    let mut is_input = vec![false; graph.values().len()];
    for v in graph.inputs() {
        is_input[v.index()] = true;
    }

    // Buffers per value; views join their input's.
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut buffer_of = vec![u32::MAX; graph.values().len()];
    let mut reads = vec![Vec::new(); n];
    let mut writes = vec![Vec::new(); n];
    let mut producer_dag: Vec<Option<u32>> = Vec::new();
    for (id, node) in graph.nodes() {
        let task = dag.task_of_node[id.index()];
        if let Some(t) = task {
            let mut r: Vec<BufferId> = node
                .inputs
                .iter()
                .map(|v| BufferId(buffer_of[v.index()]))
                .collect();
            r.sort_unstable();
            r.dedup();
            reads[t as usize] = r;
        }
        let view = matches!(node.op.occupancy(), Occupancy::View);
        for &v in &node.outputs {
            let value = graph.value(v);
            if view {
                let b = buffer_of[node.inputs[0].index()];
                buffer_of[v.index()] = b;
                buffers[b as usize].values.push(value.name.clone());
                continue;
            }
            let bytes = value
                .ty
                .size_bytes(&graph.dims)
                .map_err(|e| ScheduleError::Size {
                    value: value.name.clone(),
                    reason: e.to_string(),
                })?;
            let kind = match task {
                Some(_) => BufferKind::Activation,
                None if is_input[v.index()] => BufferKind::Input,
                None => BufferKind::Weight,
            };
            let b = buffers.len() as u32;
            buffer_of[v.index()] = b;
            if let Some(t) = task {
                writes[t as usize].push(BufferId(b));
            }
            producer_dag.push(task);
            buffers.push(Buffer {
                id: BufferId(b),
                values: vec![value.name.clone()],
                kind,
                bytes,
                offset: 0,
                producer: task.map(|t| TaskId(issue_pos[t as usize])),
                last_reader: None,
            });
        }
    }
    let mut keep = vec![false; buffers.len()];
    for &v in &graph.outputs {
        let b = buffer_of[v.index()] as usize;
        keep[b] = true;
        if buffers[b].kind == BufferKind::Activation {
            buffers[b].kind = BufferKind::Output;
        }
    }

    // Last user per stream (position + 1; 0 = none) and last reader in issue order.
    let mut last_use = vec![0u32; buffers.len() * streams];
    let mut touch = |b: u32, t: u32| {
        let s = dag.tasks[t as usize].stream as usize;
        let slot = &mut last_use[b as usize * streams + s];
        *slot = (*slot).max(hb.pos[t as usize] + 1);
    };
    for (b, p) in producer_dag.iter().enumerate() {
        if let Some(t) = p {
            touch(b as u32, *t);
        }
    }
    for (t, rs) in reads.iter().enumerate() {
        for &BufferId(b) in rs {
            touch(b, t as u32);
            let pos = TaskId(issue_pos[t]);
            let buf = &mut buffers[b as usize];
            if buf.last_reader.is_none_or(|r| r < pos) {
                buf.last_reader = Some(pos);
            }
        }
    }
    for (b, buf) in buffers.iter_mut().enumerate() {
        if keep[b] || buf.kind == BufferKind::Weight {
            buf.last_reader = None;
        }
    }
    let layer_of_buffer = |b: usize| {
        producer_dag[b].and_then(|t| {
            let node = dag.tasks[t as usize].node;
            options.layer_of.get(node.index()).copied().flatten()
        })
    };
    let too_big = |buffers: &[Buffer], b: usize, total: u64, weight_bytes: u64| {
        ScheduleError::MemoryInfeasible {
            layer: layer_of_buffer(b),
            value: buffers[b].values[0].clone(),
            bytes: buffers[b].bytes,
            total,
            weight_bytes,
            limit: options.max_memory.unwrap_or(u64::MAX),
        }
    };
    let overflow = |buffers: &[Buffer], b: usize| ScheduleError::Size {
        value: buffers[b].values[0].clone(),
        reason: "the rank's memory total overflows 64 bits".into(),
    };

    // The weight pool.
    let mut weight_bytes = 0u64;
    let mut weight_offsets = Vec::new();
    for (b, buf) in buffers.iter().enumerate() {
        if buf.kind == BufferKind::Weight {
            weight_offsets.push((b, weight_bytes));
            weight_bytes = aligned_size(buf.bytes)
                .and_then(|padded| weight_bytes.checked_add(padded))
                .ok_or_else(|| overflow(&buffers, b))?;
            if options.max_memory.is_some_and(|limit| weight_bytes > limit) {
                return Err(too_big(&buffers, b, weight_bytes, weight_bytes));
            }
        }
    }
    for (b, offset) in weight_offsets {
        buffers[b].offset = offset;
    }

    // The activation pool.
    let mut pool = Pool {
        regions: Vec::new(),
        top: 0,
    };
    let mut pending: Vec<u32> = Vec::new();
    let mut peak_at: Option<TaskId> = None;
    let mut place = |b: usize,
                     at: Option<u32>,
                     pool: &mut Pool,
                     pending: &mut Vec<u32>,
                     buffers: &mut Vec<Buffer>|
     -> Result<(), ScheduleError> {
        // Placed at its padded size, so every region's offset (and so every buffer's)
        // stays a multiple of the alignment.
        let bytes = aligned_size(buffers[b].bytes).ok_or_else(|| overflow(buffers, b))?;
        if bytes == 0 {
            return Ok(());
        }
        let free = |occupant: u32| match at {
            None => false,
            Some(p) => {
                !keep[occupant as usize]
                    && last_use[occupant as usize * streams..(occupant as usize + 1) * streams]
                        .iter()
                        .zip(hb.clock(p))
                        .all(|(&u, &c)| u <= c)
            }
        };
        let before = pool.top;
        let offset = pool
            .place(b as u32, bytes, free)
            .ok_or_else(|| overflow(buffers, b))?;
        buffers[b].offset = offset;
        if pool.top > before {
            let total = weight_bytes
                .checked_add(pool.top)
                .ok_or_else(|| overflow(buffers, b))?;
            if options.max_memory.is_some_and(|limit| total > limit) {
                return Err(too_big(buffers, b, total, weight_bytes));
            }
            peak_at = at.map(|p| TaskId(issue_pos[p as usize]));
        }
        if !keep[b] {
            pending.push(b as u32);
        }
        Ok(())
    };
    for b in 0..buffers.len() {
        if buffers[b].kind == BufferKind::Input {
            place(b, None, &mut pool, &mut pending, &mut buffers)?;
        }
    }
    let mut frontier = vec![vec![0u32; streams]; streams];
    let mut remaining = vec![0u32; streams];
    for t in &dag.tasks {
        remaining[t.stream as usize] += 1;
    }
    for &t in &timeline.issue {
        // Free for good what every stream's future is past.
        let dead = |b: u32| {
            (0..streams).filter(|&s| remaining[s] > 0).all(|s| {
                last_use[b as usize * streams..(b as usize + 1) * streams]
                    .iter()
                    .zip(&frontier[s])
                    .all(|(&u, &c)| u <= c)
            })
        };
        let before = pending.len();
        let mut freed = Vec::new();
        pending.retain(|&b| {
            let d = dead(b);
            if d {
                freed.push(b);
            }
            !d
        });
        if pending.len() != before {
            pool.release(&freed);
        }
        for &BufferId(b) in &writes[t as usize] {
            place(b as usize, Some(t), &mut pool, &mut pending, &mut buffers)?;
        }
        let s = dag.tasks[t as usize].stream as usize;
        remaining[s] -= 1;
        let mut clock = hb.clock(t).to_vec();
        clock[s] = hb.pos[t as usize] + 1;
        frontier[s] = clock;
    }
    let activation_peak_bytes = pool.top;
    let peak_bytes =
        weight_bytes
            .checked_add(activation_peak_bytes)
            .ok_or(ScheduleError::Size {
                value: "(all)".into(),
                reason: "the rank's memory total overflows 64 bits".into(),
            })?;
    Ok(MemoryPlan {
        buffers,
        reads,
        writes,
        summary: MemorySummary {
            weight_bytes,
            activation_peak_bytes,
            peak_bytes,
            peak_at,
        },
    })
}

/// The activation pool: regions in offset order covering `[0, top)`.
#[derive(Debug)]
struct Pool {
    regions: Vec<Region>,
    top: u64,
}

impl Pool {
    /// Places `bytes` for buffer `b` by best fit over runs of regions free for it (`free`
    /// says whether an occupant's bytes may be reused); `None` past 64 bits.
    fn place(&mut self, b: u32, bytes: u64, free: impl Fn(u32) -> bool) -> Option<u64> {
        let is_free = |r: &Region| r.occupant.is_none_or(&free);
        // (start, size) of each run of free regions; the last may touch the top.
        let mut best: Option<(u64, u64)> = None;
        let mut run: Option<(u64, u64)> = None;
        for r in &self.regions {
            if is_free(r) {
                let (start, size) = run.unwrap_or((r.offset, 0));
                run = Some((start, size + r.size));
            } else if let Some((start, size)) = run.take()
                && size >= bytes
                && best.is_none_or(|(_, s)| size < s)
            {
                best = Some((start, size));
            }
        }
        let top_run = run;
        if let Some((start, size)) = top_run
            && size >= bytes
            && best.is_none_or(|(_, s)| size < s)
        {
            best = Some((start, size));
        }
        let offset = match best {
            Some((start, _)) => start,
            None => top_run.map_or(self.top, |(start, _)| start),
        };
        let end = offset.checked_add(bytes)?;
        let mut regions = Vec::with_capacity(self.regions.len() + 2);
        let mut inserted = false;
        for r in &self.regions {
            let r_end = r.offset + r.size;
            if r_end <= offset || r.offset >= end {
                if !inserted && r.offset >= end {
                    regions.push(Region {
                        offset,
                        size: bytes,
                        occupant: Some(b),
                    });
                    inserted = true;
                }
                regions.push(*r);
                continue;
            }
            if r.offset < offset {
                regions.push(Region {
                    offset: r.offset,
                    size: offset - r.offset,
                    occupant: r.occupant,
                });
            }
            if !inserted {
                regions.push(Region {
                    offset,
                    size: bytes,
                    occupant: Some(b),
                });
                inserted = true;
            }
            if r_end > end {
                regions.push(Region {
                    offset: end,
                    size: r_end - end,
                    occupant: r.occupant,
                });
            }
        }
        if !inserted {
            regions.push(Region {
                offset,
                size: bytes,
                occupant: Some(b),
            });
        }
        self.regions = regions;
        self.top = self.top.max(end);
        Some(offset)
    }

    /// Marks the regions of `freed` buffers free for everyone and merges free neighbours.
    fn release(&mut self, freed: &[u32]) {
        let mut merged: Vec<Region> = Vec::with_capacity(self.regions.len());
        for r in &self.regions {
            let occupant = r.occupant.filter(|o| !freed.contains(o));
            match merged.last_mut() {
                Some(last) if last.occupant.is_none() && occupant.is_none() => {
                    last.size += r.size;
                }
                _ => merged.push(Region { occupant, ..*r }),
            }
        }
        self.regions = merged;
    }
}
