//! The expert matmul's row mark: what a grouped GEMM computes on, the typing rule's
//! refusals, and its text and JSON forms.

use weft_ir::{CarriedRows, DType, ExpertRows, Graph, Op, Shape, ValueId};

fn input(g: &mut Graph, name: &str, dtype: DType, dims: &[u64]) -> ValueId {
    g.add(
        name,
        Op::Input {
            dtype,
            shape: Shape::new(dims.iter().copied()),
        },
        &[],
    )
    .unwrap()
}

fn emm(rows: ExpertRows) -> Op {
    Op::ExpertMatMul {
        transpose_b: false,
        rows,
    }
}

#[test]
fn padded_blocks_carry_one_group_share_of_their_rows() {
    // 8 blocks of 2048 rows (ep = 8): 2048 real rows under uniform routing, every expert.
    assert_eq!(
        ExpertRows::ExpertBlocks { groups: 8 }.carried(8 * 2048, 4),
        Some(CarriedRows {
            rows: 2048,
            experts: 4
        })
    );
    // Comet's group 1 of 2: half of those rows, on half the experts.
    let one_group = ExpertRows::OneExpertGroup {
        groups: 8,
        expert_groups: 2,
    };
    assert_eq!(
        one_group.carried(8 * 2048, 4),
        Some(CarriedRows {
            rows: 1024,
            experts: 2
        })
    );
    // Dense: everything. A fraction of a row is a row (the expected value, rounded up).
    assert_eq!(
        ExpertRows::Dense.carried(100, 8),
        Some(CarriedRows {
            rows: 100,
            experts: 8
        })
    );
    assert_eq!(
        ExpertRows::ExpertBlocks { groups: 8 }
            .carried(801, 1)
            .map(|c| c.rows),
        Some(101)
    );
    // Zero groups and expert groups that do not divide the experts carry nothing.
    assert_eq!(ExpertRows::ExpertBlocks { groups: 0 }.carried(8, 1), None);
    assert_eq!(one_group.carried(8, 3), None);
}

#[test]
fn the_typing_rule_refuses_marks_the_layout_cannot_have() {
    let mut g = Graph::new("emm");
    let x = input(&mut g, "x", DType::F32, &[16, 4]);
    let flat = input(&mut g, "counts", DType::I64, &[4]);
    let blocked = input(&mut g, "blocked", DType::I64, &[2, 4]);
    let w = input(&mut g, "w", DType::F32, &[4, 4, 6]);
    let padded = ExpertRows::ExpertBlocks { groups: 2 };
    // Padded rows need blocked counts.
    let e = g.add("flat", emm(padded), &[x, flat, w]).unwrap_err();
    assert!(e.to_string().contains("blocked"), "{e}");
    let e = g
        .add(
            "zero",
            emm(ExpertRows::ExpertBlocks { groups: 0 }),
            &[x, blocked, w],
        )
        .unwrap_err();
    assert!(e.to_string().contains("at least one group"), "{e}");
    let three = ExpertRows::OneExpertGroup {
        groups: 2,
        expert_groups: 3,
    };
    let e = g.add("three", emm(three), &[x, blocked, w]).unwrap_err();
    assert!(e.to_string().contains("4 experts"), "{e}");
    // Valid marks type like the dense op: the mark changes no value.
    let y = g.add("ok", emm(padded), &[x, blocked, w]).unwrap();
    let d = g
        .add("dense", emm(ExpertRows::Dense), &[x, blocked, w])
        .unwrap();
    assert_eq!(g.value(y).ty, g.value(d).ty);
}

#[test]
fn the_mark_is_part_of_the_op_only_when_padded() {
    assert!(emm(ExpertRows::Dense).attr_text().is_empty());
    let padded = emm(ExpertRows::ExpertBlocks { groups: 8 });
    assert_eq!(padded.attr_text(), vec!["rows=expert_blocks/8".to_string()]);
    let group = emm(ExpertRows::OneExpertGroup {
        groups: 8,
        expert_groups: 2,
    });
    assert_eq!(
        group.attr_text(),
        vec!["rows=expert_blocks/8/expert_group_of_2".to_string()]
    );
}

#[cfg(feature = "serde")]
#[test]
fn json_leaves_out_the_dense_mark_and_round_trips_the_others() {
    let dense = serde_json::to_value(emm(ExpertRows::Dense)).unwrap();
    assert_eq!(
        dense,
        serde_json::json!({"op": "expert_matmul", "attrs": {}})
    );
    for rows in [
        ExpertRows::ExpertBlocks { groups: 8 },
        ExpertRows::OneExpertGroup {
            groups: 8,
            expert_groups: 2,
        },
    ] {
        let text = serde_json::to_string(&emm(rows)).unwrap();
        let back: Op = serde_json::from_str(&text).unwrap();
        assert_eq!(back, emm(rows), "{text}");
    }
    let padded: Op = serde_json::from_str(
        r#"{"op": "expert_matmul", "attrs": {"rows": {"expert_blocks": {"groups": 4}}}}"#,
    )
    .unwrap();
    assert_eq!(padded, emm(ExpertRows::ExpertBlocks { groups: 4 }));
}
