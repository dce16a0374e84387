//! Property tests: more work never takes less time. Random shapes and sizes (a fixed-seed
//! generator, so a failure reproduces) over every built-in profile.

use weft_hardware::Profile;
use weft_ir::{DType, DimBindings, Mesh, Op, ReduceOp, Shape, TensorType};

use super::CostModel;

/// SplitMix64: a tiny deterministic generator, enough to spread test shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Log-uniform in [1, 2^bits].
    fn size(&mut self, bits: u32) -> u64 {
        let e = self.next() % u64::from(bits);
        (1u64 << e) + self.next() % (1u64 << e)
    }
}

fn t(dims: &[u64]) -> TensorType {
    TensorType::new(DType::Bf16, Shape::new(dims.iter().copied()))
}

fn model(profile: &str, n: u64) -> CostModel {
    CostModel::new(
        &Profile::builtin(profile).unwrap(),
        &Mesh::new([("x", n)]).unwrap(),
    )
    .unwrap()
}

fn gemm_us(cm: &CostModel, b: u64, m: u64, n: u64, k: u64) -> f64 {
    let op = Op::MatMul {
        transpose_a: false,
        transpose_b: false,
    };
    let (x, w, y) = (t(&[b, m, k]), t(&[b, k, n]), t(&[b, m, n]));
    cm.op_cost(&op, &[&x, &w], &[&y], &DimBindings::new())
        .unwrap()
        .time_us
}

#[test]
fn growing_any_gemm_dimension_never_lowers_the_time() {
    let mut rng = Rng(11);
    for name in Profile::builtin_names() {
        let cm = model(name, 1);
        for _ in 0..400 {
            let d = [rng.size(3), rng.size(15), rng.size(15), rng.size(15)];
            let before = gemm_us(&cm, d[0], d[1], d[2], d[3]);
            for axis in 0..4 {
                let mut g = d;
                g[axis] += 1 + rng.next() % g[axis].max(1);
                let after = gemm_us(&cm, g[0], g[1], g[2], g[3]);
                assert!(
                    after >= before,
                    "{name}: {g:?} predicted {after} µs, less than {d:?} at {before} µs"
                );
            }
        }
    }
}

#[test]
fn the_reviewers_within_a_wave_cases_are_monotone() {
    // review R: 128×N×512, 100 → 264 tiles of N on H100.
    let cm = model("h100-sxm-8", 1);
    let mut last = 0.0;
    for tiles in 1..=400u64 {
        let now = gemm_us(&cm, 1, 128, tiles * 128, 512);
        assert!(now >= last, "{tiles} tiles: {now} < {last}");
        last = now;
    }
}

fn collective_us(cm: &CostModel, kind: usize, n: u64, elems: u64) -> f64 {
    let axis = "x".to_string();
    let (op, input, output) = match kind {
        0 => (
            Op::AllReduce {
                axis,
                op: ReduceOp::Sum,
            },
            elems * n,
            elems * n,
        ),
        1 => (Op::AllGather { axis, dim: 0 }, elems, elems * n),
        2 => (
            Op::ReduceScatter {
                axis,
                dim: 0,
                op: ReduceOp::Sum,
            },
            elems * n,
            elems,
        ),
        _ => (
            Op::AllToAll {
                axis,
                split_dim: 0,
                concat_dim: 0,
                payload: weft_ir::A2aPayload::Dense,
            },
            elems * n,
            elems * n,
        ),
    };
    cm.op_cost(&op, &[&t(&[input])], &[&t(&[output])], &DimBindings::new())
        .unwrap()
        .time_us
}

#[test]
fn growing_a_collectives_message_never_lowers_the_time() {
    let mut rng = Rng(7);
    for name in Profile::builtin_names() {
        let p = Profile::builtin(name).unwrap();
        let devices = u64::from(p.total_devices().unwrap());
        for n in [2u64, 4, 8, devices] {
            let cm = model(name, n.min(devices));
            let n = n.min(devices);
            for kind in 0..4 {
                let mut sizes: Vec<u64> = (0..60).map(|_| rng.size(28)).collect();
                sizes.sort_unstable();
                let mut last = (0u64, 0.0f64);
                for e in sizes {
                    let now = collective_us(&cm, kind, n, e);
                    assert!(
                        now >= last.1,
                        "{name}, {n} GPUs, collective {kind}: {e} elements take {now} µs, less than {} at {}",
                        last.0,
                        last.1
                    );
                    last = (e, now);
                }
            }
        }
    }
}
