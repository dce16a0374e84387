//! Fused projections (Q, K and V in one weight; gate and up in one expert weight),
//! split part by part under tensor parallelism.

use weft_ir::{Node, Op, Placement, Shape, Sharding, ValueId};

use super::{Arg, ShardError, Sharder};

impl Sharder<'_> {
    /// Megatron splits a fused projection (Q, K and V in one weight; gate and up in one
    /// expert weight) part by part: `split(x @ W [+ b])` into k equal column parts becomes
    /// k column-parallel projections, each with its part of `W` — `W` viewed as
    /// `[.., k, N/k, ..]` and split along `N/k` — since splitting `W`'s columns directly
    /// would cut across parts. Returns whether the node was handled this way.
    pub(super) fn unfuse(&mut self, node: &Node) -> Result<bool, ShardError> {
        let Some(tp) = self.new.mesh.axis_size("tp") else {
            return Ok(false);
        };
        let (w_slot, col) = match &node.op {
            Op::MatMul {
                transpose_a: false,
                transpose_b,
            } => (1, if *transpose_b { 0 } else { 1 }),
            Op::ExpertMatMul { transpose_b, .. } => (2, if *transpose_b { 1 } else { 2 }),
            _ => return Ok(false),
        };
        let w = node.inputs[w_slot];
        let w_shape = self.old_shape(w)?;
        let expected_rank = if w_slot == 1 { 2 } else { 3 };
        if !self.is_source(w)
            || w_shape.len() != expected_rank
            || !self.old.value(w).sharding.is_replicated()
            || self.arg_in(Arg::Old(node.inputs[0]), "tp")?.placement != Placement::Replicate
        {
            return Ok(false);
        }
        let sole_user = |v: ValueId| match self.users.get(&v).map(Vec::as_slice) {
            Some([u]) if !self.old.outputs.contains(&v) => Some(*u),
            _ => None,
        };
        let out = node.outputs[0];
        let n = *self.old_shape(out)?.last().unwrap_or(&0);
        let Some(mut user) = sole_user(out) else {
            return Ok(false);
        };
        // An optional bias add between the projection and the split.
        let mut bias = None;
        let mut add_id = None;
        let mut split_in = out;
        let user_node = self.old.node(user);
        if let Op::Add = user_node.op {
            let other = if user_node.inputs[0] == out {
                user_node.inputs[1]
            } else {
                user_node.inputs[0]
            };
            if !self.is_source(other) || self.old_shape(other)? != vec![n] {
                return Ok(false);
            }
            bias = Some((other, user_node.inputs[0] == out));
            add_id = Some(user);
            split_in = user_node.outputs[0];
            match sole_user(split_in) {
                Some(u) => user = u,
                None => return Ok(false),
            }
        }
        // An optional reshape that keeps the last dim (`[b*s, 3h]` → `[b, s, 3h]`).
        let mut reshape = None;
        if let Op::Reshape { .. } = self.old.node(user).op {
            let r = self.old.node(user);
            let shaped = self.old_shape(r.outputs[0])?;
            if shaped.last() != Some(&n) {
                return Ok(false);
            }
            reshape = Some((user, shaped));
            split_in = r.outputs[0];
            match sole_user(split_in) {
                Some(u) => user = u,
                None => return Ok(false),
            }
        }
        let split = self.old.node(user);
        let Op::Split { axis, sizes } = &split.op else {
            return Ok(false);
        };
        let rank = self.old_shape(split_in)?.len() as i64;
        let k = sizes.len();
        if (*axis != -1 && *axis != rank - 1) || k < 2 || sizes.iter().any(|&s| s != sizes[0]) {
            return Ok(false);
        }
        // Equal parts that do not divide: the projection is computed whole (its result
        // feeds a split, which needs whole rows), and the user is told.
        if sizes[0] % tp != 0 {
            self.fallbacks.push(super::Fallback {
                node: node.name.clone(),
                op: node.op.name().to_owned(),
                axis: "tp".into(),
                axis_size: tp,
                extent: sizes[0],
                what: format!("the columns of each of its {k} fused parts"),
            });
            return Ok(false);
        }
        let part = sizes[0];
        let split_outputs = split.outputs.clone();
        let split_id = user;
        // The weight as [.., k, part, ..], its parts split over tp.
        let mut view = w_shape.clone();
        view.splice(col..=col, [k as u64, part]);
        let pieces = self.view_parts(w, view, col, &node.name)?;
        let bias_parts = match bias {
            Some((b, _)) => Some(self.view_parts(b, vec![k as u64, part], 0, &node.name)?),
            None => None,
        };
        let mut out_shape = self.old_shape(out)?;
        if let Some(last) = out_shape.last_mut() {
            *last = part;
        }
        for (i, &old_part) in split_outputs.iter().enumerate() {
            let mut args: Vec<Arg> = node.inputs.iter().map(|&v| Arg::Old(v)).collect();
            args[w_slot] = Arg::New(pieces[i]);
            let name = format!("{}.part{i}", node.name);
            let mut v = self.apply(&name, &node.op, &args, vec![out_shape.clone()], None, &[])?[0];
            if let (Some(parts), Some((_, projection_first))) = (&bias_parts, bias) {
                let add_name = format!("{}.part{i}", self.old.node(add_id.unwrap_or(user)).name);
                let args = if projection_first {
                    [Arg::New(v), Arg::New(parts[i])]
                } else {
                    [Arg::New(parts[i]), Arg::New(v)]
                };
                v = self.apply(
                    &add_name,
                    &Op::Add,
                    &args,
                    vec![out_shape.clone()],
                    None,
                    &[],
                )?[0];
            }
            if let Some((id, shaped)) = &reshape {
                let mut target = shaped.clone();
                if let Some(last) = target.last_mut() {
                    *last = part;
                }
                let name = format!("{}.part{i}", self.old.node(*id).name);
                let op = Op::Reshape {
                    shape: Shape::new(target.clone()),
                };
                v = self.apply(&name, &op, &[Arg::New(v)], vec![target], None, &[])?[0];
            }
            self.new.value_mut(v).name = self.old.value(old_part).name.clone();
            self.map.insert(old_part, v);
        }
        if let Some(id) = add_id {
            self.skip.insert(id);
        }
        if let Some((id, _)) = reshape {
            self.skip.insert(id);
        }
        self.skip.insert(split_id);
        tracing::debug!(node = %node.name, parts = k, "fused projection split per part");
        Ok(true)
    }

    /// A source viewed as `view` (dim `col` of the original become `[k, part]`), split
    /// over tp along `part`, cut into its k parts of the original rank.
    fn view_parts(
        &mut self,
        v: ValueId,
        view: Vec<u64>,
        col: usize,
        site: &str,
    ) -> Result<Vec<ValueId>, ShardError> {
        let k = view[col] as usize;
        let sharding = Sharding::on("tp", Placement::Split(col + 1));
        let whole = self.source_view(v, sharding.clone(), Some(view.clone()))?;
        let mut piece = view.clone();
        piece[col] = 1;
        let base = self.new.value(whole).name.clone();
        let parts = self.emit(
            &format!("{base}.parts"),
            Op::Split {
                axis: col as i64,
                sizes: vec![1; k],
            },
            vec![whole],
            vec![(sharding.clone(), piece.clone()); k],
        )?;
        let mut logical = view.clone();
        logical.remove(col);
        let part_sharding = Sharding::on("tp", Placement::Split(col));
        let local = Shape::new(self.local_shape(site, &logical, &part_sharding)?);
        let mut out = Vec::with_capacity(k);
        for (i, p) in parts.into_iter().enumerate() {
            out.push(
                self.emit(
                    &format!("{base}.part{i}"),
                    Op::Reshape {
                        shape: local.clone(),
                    },
                    vec![p],
                    vec![(part_sharding.clone(), logical.clone())],
                )?[0],
            );
        }
        Ok(out)
    }
}
