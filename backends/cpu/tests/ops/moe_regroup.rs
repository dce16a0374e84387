//! `moe_regroup` against a reference written from `docs/json-format.md`: block `b` of the
//! output is each group's runs of block `b`, in group order, then zeros.

use weft_ir::Op;

use crate::common::*;

#[test]
fn moe_regroup_packs_each_blocks_group_runs_in_order() {
    // (blocks, rows per block, experts, groups, columns)
    for (case, (blocks, per, experts, groups, m)) in [
        (2usize, 6usize, 4usize, 2usize, 3usize),
        (3, 8, 6, 3, 5),
        (1, 5, 2, 2, 4),
    ]
    .into_iter()
    .enumerate()
    {
        let mut rng = Rng::new(1500 + case as u64);
        // Random counts per block that fit its rows (some zero).
        let mut counts = vec![0i64; blocks * experts];
        for b in 0..blocks {
            let mut left = per as i64;
            for e in 0..experts {
                let c = rng.int(0, left.min(3) + 1);
                counts[b * experts + e] = c;
                left -= c;
            }
        }
        let parts: Vec<(weft_ir::Tensor, Vec<f32>)> = (0..groups)
            .map(|_| randn(&mut rng, &[blocks * per, m]))
            .collect();
        let mut inputs = vec![ti(&[blocks, experts], counts.clone())];
        inputs.extend(parts.iter().map(|(t, _)| t.clone()));
        let got = run_op(Op::MoeRegroup, inputs);
        let per_group = experts / groups;
        let mut want = vec![0f32; blocks * per * m];
        for b in 0..blocks {
            let mut at = b * per;
            for (g, (_, v)) in parts.iter().enumerate() {
                let len: i64 = (0..per_group)
                    .map(|j| counts[b * experts + g * per_group + j])
                    .sum();
                for r in 0..len as usize {
                    for c in 0..m {
                        want[(at + r) * m + c] = v[(b * per + r) * m + c];
                    }
                }
                at += len as usize;
            }
        }
        assert_same_f32(&format!("case {case}"), &got[0], &[blocks * per, m], &want);
    }
}

#[test]
fn moe_regroup_refuses_counts_that_overflow_a_block() {
    let mut rng = Rng::new(1600);
    let (a, _) = randn(&mut rng, &[4, 2]);
    let (b, _) = randn(&mut rng, &[4, 2]);
    // Block 0 (2 rows) is given 1 + 2 rows.
    let counts = ti(&[2, 2], vec![1, 2, 0, 0]);
    let result = try_run_op(Op::MoeRegroup, vec![counts, a, b]);
    assert_kernel_error("overflowing block", result, "node");
    // Three group results do not divide two experts: a typing error.
    let (c, _) = randn(&mut rng, &[4, 2]);
    let mut g = Builder::new("bad");
    let ins: Vec<_> = [ti(&[2, 2], vec![0, 0, 0, 0]), c.clone(), c.clone(), c]
        .into_iter()
        .enumerate()
        .map(|(i, t)| g.input(&format!("in{i}"), t))
        .collect();
    let e = g.g.add("r", Op::MoeRegroup, &ins).unwrap_err().to_string();
    assert!(
        e.contains("3 group results do not divide the 2 experts"),
        "{e}"
    );
}
