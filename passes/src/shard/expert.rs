//! Expert parallelism: an MoE block's tokens routed to the devices owning their experts
//! by all-to-all, with no capacity limit.

use std::collections::HashMap;

use weft_ir::{A2aPayload, ExpertRows, Node, Op, Placement, Shape, Sharding, ValueId};

use super::{ShardError, Sharder};

/// An MoE block under expert parallelism, between its dispatch and its combine: the
/// rows live on the devices that own their experts, in the padded blocks the all-to-all
/// delivered, so these values have their own (expert-side) layout.
pub(super) struct MoeBlock {
    /// The old dispatch's counts output, which expert matmuls name.
    pub(super) counts_old: ValueId,
    /// This device's counts per expert `[E]`, for unpadding on the way back.
    counts_local: ValueId,
    /// Counts received from every source device for this device's experts `[ep, E/ep]`.
    counts_blocked: ValueId,
    /// Old value → its expert-side value.
    pub(super) chain: HashMap<ValueId, ValueId>,
    /// Rows a device sends to each peer (its token copies), and the mesh axis size.
    local_rows: u64,
    ep: u64,
}

impl Sharder<'_> {
    /// An old value laid out with `sharding` (sources laid out, others communicated).
    fn placed(&mut self, v: ValueId, sharding: &Sharding) -> Result<ValueId, ShardError> {
        match self.map.get(&v).copied() {
            Some(mut nv) => {
                let axes: Vec<String> = self
                    .new
                    .mesh
                    .axes()
                    .iter()
                    .map(|a| a.name.clone())
                    .collect();
                // Reduce partial sums before moving splits.
                for partial_first in [true, false] {
                    for axis in &axes {
                        let is_partial = matches!(self.placement(nv, axis), Placement::Partial(_));
                        if is_partial == partial_first {
                            nv = self.convert(nv, axis, sharding.placement(axis))?;
                        }
                    }
                }
                Ok(nv)
            }
            None if self.is_source(v) => self.source(v, sharding.clone()),
            None => Err(ShardError::Internal {
                node: self.old.value(v).name.clone(),
                reason: "used before it was produced".into(),
            }),
        }
    }

    /// Expert parallelism, from the dispatch: each device routes its own slice of the
    /// tokens, pads the copies for each expert group into one block per peer, and an
    /// all-to-all delivers every block to the device owning those experts (with the
    /// counts, so padding is known). No capacity limit: a block holds all of a device's
    /// copies, so no token is ever dropped.
    pub(super) fn ep_dispatch(&mut self, node: &Node, experts: u64) -> Result<(), ShardError> {
        let ep = self.new.mesh.axis_size("ep").unwrap_or(1);
        let indivisible = |what: String| ShardError::Indivisible {
            node: node.name.clone(),
            op: node.op.name().into(),
            what,
            axis: "ep".into(),
            size: ep,
        };
        if experts % ep != 0 {
            return Err(indivisible(format!("{experts} experts")));
        }
        let (x, ids) = (node.inputs[0], node.inputs[1]);
        let x_shape = self.old_shape(x)?;
        let ids_shape = self.old_shape(ids)?;
        let (tokens, hidden, k) = (x_shape[0], x_shape[1], ids_shape[1]);
        if tokens % ep != 0 {
            return Err(indivisible(format!("{tokens} tokens")));
        }
        let by_token = Sharding::on("ep", Placement::Split(0));
        // What dispatch and the all-to-all make on each device is that device's own:
        // its tokens' copies sorted by expert, then the blocks its peers sent it. None of
        // it is a piece of the single-device dispatch, so it is labelled local.
        let own = Sharding::on("ep", Placement::Local);
        let x_l = self.placed(x, &by_token)?;
        let ids_l = self.placed(ids, &by_token)?;
        let local_rows = tokens / ep * k;
        let outs = self.emit(
            &node.name,
            node.op.clone(),
            vec![x_l, ids_l],
            vec![
                (own.clone(), vec![local_rows, hidden]),
                (own.clone(), vec![experts]),
            ],
        )?;
        let (rows, counts) = (outs[0], outs[1]);
        let blocks = self.emit(
            &format!("{}.pad", node.name),
            Op::MoePad { groups: ep },
            vec![rows, counts],
            vec![(own.clone(), vec![ep, local_rows, hidden])],
        )?[0];
        // Block j goes to the device owning expert group j; arrivals stack by source.
        // The row blocks are padded for all of a device's rows, of which each group gets
        // 1/ep under uniform routing: that is what a runtime sends (after the counts).
        let to_owner = |payload| Op::AllToAll {
            axis: "ep".into(),
            split_dim: 0,
            concat_dim: 0,
            payload,
        };
        let op = to_owner(A2aPayload::ExpertBlocks { groups: ep });
        let received = self.emit(
            &format!("{}.to_experts", node.name),
            op,
            vec![blocks],
            vec![(own.clone(), vec![ep, local_rows, hidden])],
        )?[0];
        let flat = Shape::new([ep * local_rows, hidden]);
        let expert_rows = self.emit(
            &format!("{}.expert_rows", node.name),
            Op::Reshape { shape: flat },
            vec![received],
            vec![(own.clone(), vec![ep * local_rows, hidden])],
        )?[0];
        let per_peer = self.emit(
            &format!("{}.counts_by_peer", node.name),
            Op::Reshape {
                shape: Shape::new([ep, experts / ep]),
            },
            vec![counts],
            vec![(own.clone(), vec![ep, experts / ep])],
        )?[0];
        // The counts are dense: every element is sent.
        let op = to_owner(A2aPayload::Dense);
        let counts_blocked = self.emit(
            &format!("{}.counts_to_experts", node.name),
            op,
            vec![per_peer],
            vec![(own, vec![ep, experts / ep])],
        )?[0];
        let mut chain = HashMap::new();
        chain.insert(node.outputs[0], expert_rows);
        self.moe = Some(MoeBlock {
            counts_old: node.outputs[1],
            counts_local: counts,
            counts_blocked,
            chain,
            local_rows,
            ep,
        });
        Ok(())
    }

    /// A node inside an expert-parallel MoE block: expert matmuls on this device's
    /// experts, row-wise ops on the received rows, and the combine, which sends every
    /// row back to the device its token lives on.
    pub(super) fn ep_block_node(&mut self, node: &Node) -> Result<(), ShardError> {
        let Some(block) = self.moe.as_ref() else {
            return Ok(());
        };
        let (ep, local_rows) = (block.ep, block.local_rows);
        // Rows on the device owning their experts: its own (see `ep_dispatch`).
        let expert_side = Sharding::on("ep", Placement::Local);
        let by_token = Sharding::on("ep", Placement::Split(0));
        let total_rows = ep * local_rows;
        let no_rule = |reason: &str| ShardError::NoRule {
            node: node.name.clone(),
            op: node.op.name().into(),
            reason: format!("expert parallelism: {reason}"),
        };
        if let Op::MoeCombine = node.op {
            let (y, w, ids) = (node.inputs[0], node.inputs[1], node.inputs[2]);
            let y_new = *block.chain.get(&y).ok_or_else(|| {
                no_rule("the combine's expert outputs do not come from the dispatch")
            })?;
            let counts_local = block.counts_local;
            let hidden = *self.old_shape(y)?.last().unwrap_or(&0);
            let blocks = self.emit(
                &format!("{}.blocks", node.name),
                Op::Reshape {
                    shape: Shape::new([ep, local_rows, hidden]),
                },
                vec![y_new],
                vec![(expert_side.clone(), vec![ep, local_rows, hidden])],
            )?[0];
            let back = self.emit(
                &format!("{}.to_tokens", node.name),
                // The same padded blocks on the way back: 1/ep of each block is rows.
                Op::AllToAll {
                    axis: "ep".into(),
                    split_dim: 0,
                    concat_dim: 0,
                    payload: A2aPayload::ExpertBlocks { groups: ep },
                },
                vec![blocks],
                vec![(expert_side.clone(), vec![ep, local_rows, hidden])],
            )?[0];
            let tokens = self.old_shape(w)?[0];
            let rows = self.emit(
                &format!("{}.unpad", node.name),
                Op::MoeUnpad {
                    groups: ep,
                    rows: local_rows,
                },
                vec![back, counts_local],
                vec![(expert_side.clone(), vec![local_rows, hidden])],
            )?[0];
            // Combined with this device's tokens' weights, the rows are its tokens again.
            let w_l = self.placed(w, &by_token)?;
            let ids_l = self.placed(ids, &by_token)?;
            let combined = self.emit(
                &format!("{}.local", node.name),
                Op::MoeCombine,
                vec![rows, w_l, ids_l],
                vec![(by_token, vec![tokens, hidden])],
            )?[0];
            // Every device gets all tokens back, as the graph around the block expects.
            let out = self.convert(combined, "ep", Placement::Replicate)?;
            self.map.insert(node.outputs[0], out);
            self.moe = None;
            return Ok(());
        }
        let mut inputs = Vec::new();
        for (slot, &v) in node.inputs.iter().enumerate() {
            let block = self.moe.as_ref().ok_or_else(|| no_rule("no block"))?;
            if let Some(&nv) = block.chain.get(&v) {
                inputs.push(nv);
            } else if v == block.counts_old {
                inputs.push(block.counts_blocked);
            } else if let (Op::ExpertMatMul { .. }, 2) = (&node.op, slot) {
                // This device's experts' weights.
                inputs.push(self.placed(v, &Sharding::on("ep", Placement::Split(0)))?);
            } else if self.old_shape(v)?.len() <= 1 {
                inputs.push(self.placed(v, &Sharding::replicated())?);
            } else {
                return Err(no_rule("an operand that is not per row"));
            }
        }
        match &node.op {
            Op::ExpertMatMul { .. }
            | Op::Split { .. }
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Silu
            | Op::Gelu { .. }
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::Neg
            | Op::Cast { .. } => {}
            _ => {
                return Err(no_rule(
                    "only row-wise ops may sit between dispatch and combine",
                ));
            }
        }
        if let Op::Split { axis, .. } = node.op {
            let rank = self.old_shape(node.inputs[0])?.len() as i64;
            if axis == 0 || axis == -rank {
                return Err(no_rule("a split along the rows"));
            }
        }
        let outs = node
            .outputs
            .iter()
            .map(|&v| {
                let mut shape = self.old_shape(v)?;
                shape[0] = total_rows;
                Ok((expert_side.clone(), shape))
            })
            .collect::<Result<Vec<_>, ShardError>>()?;
        // The expert matmuls run over the padded blocks the all-to-all delivered, of which
        // this device's experts get 1/ep of each under uniform routing: that is what a
        // grouped-GEMM runtime computes on (it has the counts), and what the op is priced on.
        let op = match node.op {
            Op::ExpertMatMul { transpose_b, .. } => Op::ExpertMatMul {
                transpose_b,
                rows: ExpertRows::ExpertBlocks { groups: ep },
            },
            ref op => op.clone(),
        };
        let values = self.emit(&node.name, op, inputs, outs)?;
        let block = self.moe.as_mut().ok_or_else(|| no_rule("no block"))?;
        for (&old, new) in node.outputs.iter().zip(values) {
            block.chain.insert(old, new);
        }
        Ok(())
    }
}
