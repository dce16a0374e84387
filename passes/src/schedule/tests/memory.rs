//! The memory plan: hand-counted peaks, the comparison with
//! `weft_ir::memory::peak_memory`, `max_memory` honoured or refused with the layer and
//! the buffer.

use weft_ir::memory::peak_memory;
use weft_ir::{DType, Op};
use weft_plan::BufferKind;

use super::{Builder, check_plan, h100_rates};
use crate::schedule::{ScheduleError, ScheduleOptions, schedule};

/// x[64,64] f32 → relu → relu → … (six) → output: one stream, no views.
fn chain() -> Builder {
    let mut b = Builder::new("");
    let mut v = b.input(&[64, 64]);
    for _ in 0..6 {
        v = b.op("relu", Op::Relu, &[v]);
    }
    b.g.outputs.push(v);
    b
}

#[test]
fn a_chain_needs_two_buffers_as_the_ir_estimate_says() {
    let b = chain();
    let s = schedule(&b.g, &h100_rates(), &ScheduleOptions::default()).unwrap();
    let m = &s.ranks[0].memory;
    let one = 64 * 64 * 4;
    // The input and the first relu's output are live together; from then on each relu
    // reuses the bytes of the value two steps back.
    assert_eq!(m.activation_peak_bytes, 2 * one);
    assert_eq!(m.weight_bytes, 0);
    assert_eq!(m.peak_bytes, 2 * one);
    let est = peak_memory(&b.g, DType::size_bytes).unwrap();
    assert_eq!(u128::from(m.activation_peak_bytes), est.peak_activations);
    check_plan(&b.g, &s, true);
}

#[test]
fn views_share_storage_so_the_plan_can_beat_the_ir_estimate() {
    // x → relu r → reshape v → add(r, v): the estimate counts v as new bytes.
    let mut b = Builder::new("");
    let x = b.input(&[32, 32]);
    let r = b.op("relu", Op::Relu, &[x]);
    let v = b.op(
        "view",
        Op::Reshape {
            shape: weft_ir::Shape::new([32u64, 32]),
        },
        &[r],
    );
    let e = b.op("add", Op::Add, &[r, v]);
    b.g.outputs.push(e);
    let s = schedule(&b.g, &h100_rates(), &ScheduleOptions::default()).unwrap();
    let est = peak_memory(&b.g, DType::size_bytes).unwrap();
    let one = 32 * 32 * 4;
    // Plan: x + r, then r (= v) + e in x's bytes: 2. Estimate: r + v + e: 3.
    assert_eq!(s.ranks[0].memory.activation_peak_bytes, 2 * one);
    assert_eq!(est.peak_activations, 3 * u128::from(one));
    check_plan(&b.g, &s, true);
}

#[test]
fn max_memory_is_honoured_or_refused_with_the_layer_and_buffer() {
    let mut b = Builder::new("");
    let x = b.input(&[64, 64]);
    let w = b.weight(&[64, 64]);
    let m1 = b.matmul(x, w);
    let m2 = b.matmul(m1, w);
    b.g.outputs.push(m2);
    let base = schedule(&b.g, &h100_rates(), &ScheduleOptions::default()).unwrap();
    let one = 64 * 64 * 4u64;
    let mem = &base.ranks[0].memory;
    assert_eq!(mem.weight_bytes, one);
    // x and m1, then m2 (the output) in x's bytes.
    assert_eq!(mem.activation_peak_bytes, 2 * one);
    assert_eq!(base.prediction.peak_memory_bytes, vec![3 * one]);
    let fits = ScheduleOptions {
        max_memory: Some(3 * one),
        ..ScheduleOptions::default()
    };
    assert_eq!(schedule(&b.g, &h100_rates(), &fits).unwrap(), base);
    let layers: Vec<Option<u32>> =
        b.g.nodes()
            .map(|(_, n)| Some(u32::from(n.name == m1_name(&b))))
            .collect();
    let tight = ScheduleOptions {
        max_memory: Some(3 * one - 1),
        layer_of: layers,
        ..ScheduleOptions::default()
    };
    let err = schedule(&b.g, &h100_rates(), &tight).unwrap_err();
    assert_eq!(
        err,
        ScheduleError::MemoryInfeasible {
            layer: Some(1),
            value: m1_name(&b),
            bytes: one,
            total: 3 * one,
            weight_bytes: one,
            limit: 3 * one - 1,
        }
    );
    assert!(err.to_string().contains("in layer 1"), "{err}");
    let weights_only = ScheduleOptions {
        max_memory: Some(one - 1),
        ..ScheduleOptions::default()
    };
    let err = schedule(&b.g, &h100_rates(), &weights_only).unwrap_err();
    assert!(
        matches!(err, ScheduleError::MemoryInfeasible { layer: None, total, .. } if total == one)
    );
}

fn m1_name(b: &Builder) -> String {
    b.g.nodes()
        .find(|(_, n)| n.name.starts_with("mm"))
        .map(|(_, n)| n.name.clone())
        .unwrap()
}

#[test]
fn buffers_have_kinds_producers_and_last_readers() {
    let b = chain();
    let s = schedule(&b.g, &h100_rates(), &ScheduleOptions::default()).unwrap();
    let plan = &s.ranks[0];
    let kinds: Vec<BufferKind> = plan.buffers.iter().map(|b| b.kind).collect();
    assert_eq!(kinds[0], BufferKind::Input);
    assert_eq!(*kinds.last().unwrap(), BufferKind::Output);
    for buf in &plan.buffers[1..plan.buffers.len() - 1] {
        assert_eq!(buf.kind, BufferKind::Activation);
        let p = buf.producer.unwrap();
        assert_eq!(buf.last_reader.unwrap().0, p.0 + 1);
    }
    assert_eq!(plan.buffers.last().unwrap().last_reader, None);
}
