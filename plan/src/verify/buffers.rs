//! The memory plan: every program value lives in exactly one buffer (a view in its
//! input's), each buffer's kind, size, producer and last reader fit the program and the
//! tasks, each task's reads and writes are the buffers of what its nodes read and write,
//! and two buffers of one pool that share bytes have lifetimes ordered by happens-before.

use std::collections::BTreeSet;

use weft_ir::{Occupancy, Op, ValueId};

use super::program::Placed;
use super::{Order, Verifier, task_label};
use crate::{Buffer, BufferId, BufferKind, PlanRule, RankPlan};

pub(super) fn check(v: &mut Verifier<'_>, rp: &RankPlan, placed: &Placed, order: &Order) {
    let r = Some(rp.rank);
    let before = v.out.len();
    let program = v.program;
    let mut home: Vec<Option<usize>> = vec![None; program.values().len()];
    for (b, buf) in rp.buffers.iter().enumerate() {
        if buf.values.is_empty() {
            v.err(r, PlanRule::Buffers, format!("buffer {b} holds no value"));
        }
        for (i, name) in buf.values.iter().enumerate() {
            let Some(&id) = v.value_by_name.get(name.as_str()) else {
                let m = format!("buffer {b}: the program has no value `{name}`");
                v.err(r, PlanRule::Buffers, m);
                continue;
            };
            if let Some(other) = home[id.index()] {
                let m = format!("value `{name}` is in buffer {other} and in buffer {b}");
                v.err(r, PlanRule::Buffers, m);
            }
            home[id.index()] = Some(b);
            let view_of = view_input(v, id);
            match (i, view_of) {
                (0, Some(_)) => {
                    let m = format!(
                        "buffer {b}: its first value `{name}` is a view; a view shares its input's buffer"
                    );
                    v.err(r, PlanRule::Buffers, m);
                }
                (0, None) => {}
                (_, None) => {
                    let m = format!(
                        "buffer {b}: `{name}` is not a view, so it cannot share `{}`'s storage",
                        buf.values[0]
                    );
                    v.err(r, PlanRule::Buffers, m);
                }
                (_, Some(input)) => {
                    if !buf.values[..i].contains(&program.value(input).name) {
                        let m = format!(
                            "buffer {b}: view `{name}` must follow its input `{}` in the same buffer",
                            program.value(input).name
                        );
                        v.err(r, PlanRule::Buffers, m);
                    }
                }
            }
        }
    }
    for (id, value) in program.values() {
        if home[id.index()].is_none() {
            v.err(
                r,
                PlanRule::Buffers,
                format!("value `{}` has no buffer", value.name),
            );
        }
    }
    if v.out.len() > before {
        return;
    }
    let home: Vec<usize> = home.into_iter().map(|b| b.unwrap_or(0)).collect();
    // What each task reads and writes, from its nodes.
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); rp.buffers.len()];
    for (t, task) in rp.tasks.iter().enumerate() {
        let mut reads = BTreeSet::new();
        let mut writes = BTreeSet::new();
        for name in &task.nodes {
            let node = program.node(v.node_by_name[name.as_str()]);
            for &input in &node.inputs {
                let inside = placed[program.value(input).producer.index()].map(|(pt, _)| pt);
                if inside != Some(t) {
                    reads.insert(home[input.index()]);
                }
            }
            if !matches!(node.op.occupancy(), Occupancy::View) {
                writes.extend(node.outputs.iter().map(|o| home[o.index()]));
            }
        }
        for &b in &reads {
            readers[b].push(t);
        }
        let given = |ids: &[BufferId]| ids.iter().map(|b| b.0 as usize).collect::<BTreeSet<_>>();
        for (what, expected, got) in [
            ("reads", &reads, given(&task.reads)),
            ("writes", &writes, given(&task.writes)),
        ] {
            if *expected != got {
                let m = format!(
                    "{} {what} buffers {got:?}, but its nodes {what} buffers {expected:?}",
                    task_label(rp, t)
                );
                v.err(r, PlanRule::Buffers, m);
            }
        }
    }
    for (b, buf) in rp.buffers.iter().enumerate() {
        describe(v, rp, b, buf, placed, &readers[b], order);
    }
    if v.out.len() == before {
        overlaps(v, rp, &readers, order);
    }
}

/// A view's input value, or `None` when `id` is not a view's output.
fn view_input(v: &Verifier<'_>, id: ValueId) -> Option<ValueId> {
    let node = v.program.node(v.program.value(id).producer);
    match node.op.occupancy() {
        Occupancy::View => node.inputs.first().copied(),
        Occupancy::Source | Occupancy::Compute | Occupancy::Comm(_) | Occupancy::Both(_) => None,
    }
}

/// A buffer's kind, size, producer and last reader.
fn describe(
    v: &mut Verifier<'_>,
    rp: &RankPlan,
    b: usize,
    buf: &Buffer,
    placed: &Placed,
    readers: &[usize],
    order: &Order,
) {
    let r = Some(rp.rank);
    let program = v.program;
    let first = v.value_by_name[buf.values[0].as_str()];
    let value = program.value(first);
    let is_output = buf
        .values
        .iter()
        .any(|n| program.outputs.contains(&v.value_by_name[n.as_str()]));
    let kind = match &program.node(value.producer).op {
        Op::Weight { .. } | Op::Constant { .. } => BufferKind::Weight,
        Op::Input { .. } => BufferKind::Input,
        _ if is_output => BufferKind::Output,
        _ => BufferKind::Activation,
    };
    let mut problems = Vec::new();
    if buf.kind != kind {
        problems.push(format!(
            "its kind is {:?}, but `{}` makes it {kind:?}",
            buf.kind, value.name
        ));
    }
    match value.ty.size_bytes(&program.dims) {
        Ok(bytes) if bytes == buf.bytes => {}
        Ok(bytes) => problems.push(format!(
            "it has {} bytes, but `{}` takes {bytes}",
            buf.bytes, value.name
        )),
        Err(e) => problems.push(format!("`{}`'s size: {e}", value.name)),
    }
    if buf.offset % crate::BUFFER_ALIGNMENT != 0 {
        problems.push(format!(
            "its offset {} is not a multiple of {} bytes (the alignment `cudaMalloc` \
             guarantees, which kernels rely on)",
            buf.offset,
            crate::BUFFER_ALIGNMENT
        ));
    }
    if buf.offset.checked_add(buf.bytes).is_none() {
        problems.push("its offset + bytes overflow 64 bits".to_owned());
    }
    let producer = placed[value.producer.index()].map(|(t, _)| t);
    if buf.producer.map(|t| t.0 as usize) != producer {
        problems.push(format!(
            "its producer is {:?}, but `{}` is written by {}",
            buf.producer.map(|t| t.0),
            value.name,
            producer.map_or_else(|| "no task (a source)".to_owned(), |t| task_label(rp, t))
        ));
    }
    let last = buf.last_reader.map(|t| t.0 as usize);
    match (kind, last) {
        (BufferKind::Weight | BufferKind::Output, Some(_)) => problems.push(format!(
            "a {kind:?} buffer lives to the end of the step, so it names no last reader"
        )),
        (BufferKind::Weight | BufferKind::Output, None) => {}
        (BufferKind::Input | BufferKind::Activation, None) if !readers.is_empty() => problems.push(
            format!("it names no last reader, but {} read(s) it", readers.len()),
        ),
        (BufferKind::Input | BufferKind::Activation, None) => {}
        (BufferKind::Input | BufferKind::Activation, Some(t)) => {
            if !readers.contains(&t) {
                problems.push(format!(
                    "its last reader {} does not read it",
                    task_label(rp, t)
                ));
            } else if let Some(&later) = readers.iter().find(|&&x| order.happens_before(t, x)) {
                problems.push(format!(
                    "its last reader {} happens before another reader, {}",
                    task_label(rp, t),
                    task_label(rp, later)
                ));
            }
        }
    }
    for p in problems {
        v.err(
            r,
            PlanRule::Buffers,
            format!("buffer {b} (`{}`): {p}", value.name),
        );
    }
}

/// Why buffer `a`'s lifetime does not end before buffer `b` is written; rendered only when
/// both orders fail (the check runs for every pair of buffers sharing bytes, so formatting
/// eagerly would dominate the verifier's time on large plans).
enum NotBefore {
    /// `a` is a weight or an output.
    LivesToEnd(usize, BufferKind),
    /// `b` is a weight or an input.
    FromStart(usize, BufferKind),
    /// Task `user` uses `a` and nothing orders it before task `writer`, which writes `b`.
    Unordered {
        user: usize,
        a: usize,
        writer: usize,
        b: usize,
    },
}

impl NotBefore {
    fn describe(&self, rp: &RankPlan) -> String {
        match *self {
            NotBefore::LivesToEnd(a, kind) => {
                format!("buffer {a} ({kind:?}) lives to the end of the step")
            }
            NotBefore::FromStart(b, kind) => {
                format!("buffer {b} ({kind:?}) exists from the start of the step")
            }
            NotBefore::Unordered { user, a, writer, b } => format!(
                "{} uses buffer {a}, but nothing orders it before {}, which writes buffer {b}",
                task_label(rp, user),
                task_label(rp, writer)
            ),
        }
    }
}

/// Whether `a`'s whole lifetime (its producer and every reader) happens before `b` is
/// written. Weights and outputs live to the end; inputs and weights exist from the start.
fn ends_before(
    rp: &RankPlan,
    a: usize,
    b: usize,
    readers: &[Vec<usize>],
    order: &Order,
) -> Result<(), NotBefore> {
    let (ba, bb) = (&rp.buffers[a], &rp.buffers[b]);
    if matches!(ba.kind, BufferKind::Weight | BufferKind::Output) {
        return Err(NotBefore::LivesToEnd(a, ba.kind));
    }
    let Some(pb) = bb.producer.map(|t| t.0 as usize) else {
        return Err(NotBefore::FromStart(b, bb.kind));
    };
    let uses = ba
        .producer
        .map(|t| t.0 as usize)
        .into_iter()
        .chain(readers[a].iter().copied());
    for u in uses {
        if !order.happens_before(u, pb) {
            return Err(NotBefore::Unordered {
                user: u,
                a,
                writer: pb,
                b,
            });
        }
    }
    Ok(())
}

/// Buffers of one pool whose byte ranges overlap must not be alive at once.
///
/// Checked per byte segment (the pool cut at every buffer's start and end): the buffers
/// covering a segment, in the order their producers run (a topological order of
/// happens-before; weights and inputs, which have none, first), must each end before the
/// next is written. That relation is transitive (the next buffer's producer is among its
/// uses), so consecutive buffers cover every pair; and the work grows with the buffers
/// times the segments each spans, not with the square of the buffers (a memory plan
/// reuses the same offsets in every layer, so every pair of an 80-layer plan would be
/// millions).
fn overlaps(v: &mut Verifier<'_>, rp: &RankPlan, readers: &[Vec<usize>], order: &Order) {
    let start = |b: usize| rp.buffers[b].offset;
    let end = |b: usize| rp.buffers[b].offset.saturating_add(rp.buffers[b].bytes);
    // Producers in run order; 0 for a buffer present from the start.
    let when = |b: usize| {
        rp.buffers[b]
            .producer
            .map_or(0, |t| u64::from(order.topo_pos(t.0 as usize)) + 1)
    };
    for weights in [true, false] {
        let pool: Vec<usize> = (0..rp.buffers.len())
            .filter(|&b| (rp.buffers[b].kind == BufferKind::Weight) == weights)
            .filter(|&b| rp.buffers[b].bytes > 0)
            .collect();
        let mut cuts: Vec<u64> = pool.iter().flat_map(|&b| [start(b), end(b)]).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut segments: Vec<Vec<usize>> = vec![Vec::new(); cuts.len().saturating_sub(1)];
        for &b in &pool {
            let lo = cuts.partition_point(|&c| c < start(b));
            let hi = cuts.partition_point(|&c| c < end(b));
            for segment in &mut segments[lo..hi] {
                segment.push(b);
            }
        }
        let mut reported: BTreeSet<(usize, usize)> = BTreeSet::new();
        for segment in &mut segments {
            segment.sort_by_key(|&b| (when(b), b));
            for pair in segment.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                let Err(ab) = ends_before(rp, a, b, readers, order) else {
                    continue;
                };
                let Err(ba) = ends_before(rp, b, a, readers, order) else {
                    continue;
                };
                if !reported.insert((a, b)) {
                    continue;
                }
                let m = format!(
                    "buffers {a} (`{}`) and {b} (`{}`) share bytes but may be alive at once: {}; \
                     and the other way round, {}",
                    rp.buffers[a].values[0],
                    rp.buffers[b].values[0],
                    ab.describe(rp),
                    ba.describe(rp)
                );
                v.err(Some(rp.rank), PlanRule::Overlap, m);
            }
        }
    }
}
