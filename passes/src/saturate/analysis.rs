//! What every e-class knows: its per-device type and sharding.
//!
//! Types come from the IR's own typing rules ([`weft_ir::infer`]), so an e-node a rule
//! builds is typed exactly as the verifier would type it. Rules check that a node types
//! before adding it ([`super::rules`]), because `make` cannot refuse one. Two classes
//! merging with different types (or shardings) means a rule is unsound: debug builds
//! panic, release builds record it and the report says so.

use egg::{Analysis, DidMerge, EGraph, Id};
use weft_ir::infer::{InferCtx, infer};
use weft_ir::propagate::{Arg, follow};
use weft_ir::{DimBindings, Mesh, Op, Placement, Sharding, TensorType};

use super::lang::{Head, OpTable, WNode};

/// The e-graph Weft saturates.
pub type WEGraph = EGraph<WNode, WeftAnalysis>;

/// An e-class's facts.
#[derive(Clone, Debug, PartialEq)]
pub enum Meta {
    Value {
        ty: TensorType,
        sharding: Sharding,
    },
    Tuple(Vec<(TensorType, Sharding)>),
    Root,
    /// A node that does not type: only ever built by a bug (rules check first).
    Invalid(String),
}

impl Meta {
    pub fn ty(&self) -> Option<&TensorType> {
        match self {
            Meta::Value { ty, .. } => Some(ty),
            _ => None,
        }
    }

    pub fn sharding(&self) -> Option<&Sharding> {
        match self {
            Meta::Value { sharding, .. } => Some(sharding),
            _ => None,
        }
    }

    /// Whether two classes' facts agree under `dims`: equal shardings and types whose
    /// shapes evaluate equal ([`TensorType::same`]).
    pub fn same(&self, other: &Meta, dims: &DimBindings) -> bool {
        let item = |(t, s): (&TensorType, &Sharding), (u, r): (&TensorType, &Sharding)| {
            t.same(u, dims) && s == r
        };
        match (self, other) {
            (
                Meta::Value { ty, sharding },
                Meta::Value {
                    ty: ty2,
                    sharding: sharding2,
                },
            ) => item((ty, sharding), (ty2, sharding2)),
            (Meta::Tuple(xs), Meta::Tuple(ys)) => {
                xs.len() == ys.len()
                    && xs
                        .iter()
                        .zip(ys)
                        .all(|((t, s), (u, r))| item((t, s), (u, r)))
            }
            (Meta::Root, Meta::Root) => true,
            (Meta::Invalid(a), Meta::Invalid(b)) => a == b,
            (Meta::Value { .. } | Meta::Tuple(_) | Meta::Root | Meta::Invalid(_), _) => false,
        }
    }
}

/// The analysis: the op table, the graph's mesh and dims, and what merges found.
#[derive(Debug, Default, Clone)]
pub struct WeftAnalysis {
    pub ops: OpTable,
    pub mesh: Mesh,
    pub dims: DimBindings,
    /// Shardings for the next node added (set by the converter and the rules).
    pub pending: Option<Vec<Sharding>>,
    /// Merges of classes whose types or shardings differ: unsound rules.
    pub unsound: Vec<String>,
    /// Every application that changed the e-graph: (rule, matched class, new class, the
    /// e-node the rule built when the new class held just that one). Several rules can
    /// join one class (a fused kernel and a token split of the same add): the e-node says
    /// which of them a chosen program uses.
    pub applications: Vec<(&'static str, Id, Id, Option<WNode>)>,
    /// Classes created since a rule application last took them (see `built`).
    pub created: Vec<Id>,
    /// Per rule application that changed the e-graph: the rule, the classes it created —
    /// the intermediate values too (a reduce-scatter under the all-gather that joins the
    /// matched class), which `applications` does not name — and those it joined to the
    /// matched class.
    pub built: Vec<(&'static str, Vec<Id>)>,
    /// The matches (rule, matched class, binding) whose application changed the e-graph:
    /// egg applies every match again in every iteration, and applying one of these again
    /// cannot change anything (see `rules::EggRule::apply_one`), so it is skipped.
    pub applied: std::collections::HashSet<(&'static str, Id, Vec<usize>)>,
    /// The fused element-wise ops `element-wise-fusion` made, by (outer op, inner op,
    /// position, inner inputs): their index in the op table (see `rules::fusion`).
    pub fused_ops: std::collections::HashMap<(u32, u32, usize, usize), u32>,
}

impl WeftAnalysis {
    /// The types `op` gives `inputs`, by the IR's rules.
    pub fn type_op(&self, op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let cx = InferCtx {
            mesh: &self.mesh,
            dims: &self.dims,
        };
        infer(op, inputs, &cx).map_err(|e| e.to_string())
    }

    /// Whether `labels` (the outputs' shardings) follow from the inputs' shardings by
    /// `op`'s rule along every mesh axis ([`weft_ir::propagate`], as the verifier checks).
    pub fn check_propagation(
        &self,
        op: &Op,
        types: &[TensorType],
        inputs: &[Sharding],
        out: &[TensorType],
        labels: &[Sharding],
    ) -> Result<(), String> {
        let eval = |ts: &[TensorType]| -> Option<Vec<Vec<u64>>> {
            ts.iter().map(|t| t.shape.eval(&self.dims).ok()).collect()
        };
        let (Some(in_shapes), Some(out_shapes)) = (eval(types), eval(out)) else {
            return Ok(());
        };
        for axis in self.mesh.axes() {
            let name = axis.name.as_str();
            let args: Vec<Arg<'_>> = inputs
                .iter()
                .zip(&in_shapes)
                .zip(types)
                .map(|((s, shape), t)| Arg {
                    placement: s.placement(name),
                    shape,
                    float: t.dtype.is_float(),
                })
                .collect();
            let got: Vec<Placement> = labels.iter().map(|s| s.placement(name)).collect();
            let own = op.mesh_axis() == Some(name);
            match follow(op, &args, &out_shapes, &got, own) {
                Ok(Some(want)) if want != got => {
                    let show = |ps: &[Placement]| {
                        ps.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    return Err(format!(
                        "along `{name}` the outputs are labelled ({}) but the inputs give ({})",
                        show(&got),
                        show(&want)
                    ));
                }
                Ok(_) => {}
                Err(reason) => return Err(format!("along `{name}`: {reason}")),
            }
        }
        Ok(())
    }
}

impl Analysis<WNode> for WeftAnalysis {
    type Data = Meta;

    fn make(egraph: &mut WEGraph, enode: &WNode, id: Id) -> Meta {
        egraph.analysis.created.push(id);
        let pending = egraph.analysis.pending.take();
        match enode.head {
            Head::Root => Meta::Root,
            Head::Proj(k) => match &egraph[enode.children[0]].data {
                Meta::Tuple(items) => match items.get(k as usize) {
                    Some((ty, sharding)) => Meta::Value {
                        ty: ty.clone(),
                        sharding: sharding.clone(),
                    },
                    None => Meta::Invalid(format!("projection {k} of a {}-tuple", items.len())),
                },
                other => Meta::Invalid(format!("projection of a non-tuple {other:?}")),
            },
            Head::Op(i) => {
                let op = egraph.analysis.ops.get(i).clone();
                let mut types = Vec::with_capacity(enode.children.len());
                for &c in &enode.children {
                    match egraph[c].data.ty() {
                        Some(t) => types.push(t.clone()),
                        None => return Meta::Invalid(format!("`{}` of a non-value", op.name())),
                    }
                }
                let refs: Vec<&TensorType> = types.iter().collect();
                let out = match egraph.analysis.type_op(&op, &refs) {
                    Ok(out) => out,
                    Err(e) => return Meta::Invalid(format!("`{}`: {e}", op.name())),
                };
                let shardings = pending.unwrap_or_default();
                let sharding = |k: usize| shardings.get(k).cloned().unwrap_or_default();
                // The shardings a rule writes must follow from its inputs' by the op's
                // rule, as the verifier demands of every graph: a node that breaks it is
                // an unsound rule, reported (and extraction refused), never built quietly.
                let inputs: Vec<Sharding> = enode
                    .children
                    .iter()
                    .map(|&c| egraph[c].data.sharding().cloned().unwrap_or_default())
                    .collect();
                let labels: Vec<Sharding> = (0..out.len()).map(sharding).collect();
                if let Err(e) = egraph
                    .analysis
                    .check_propagation(&op, &types, &inputs, &out, &labels)
                {
                    let message = format!(
                        "a rule built `{}` with shardings that do not follow: {e}",
                        op.name()
                    );
                    egraph.analysis.unsound.push(message);
                }
                if out.len() == 1 {
                    Meta::Value {
                        ty: out[0].clone(),
                        sharding: sharding(0),
                    }
                } else {
                    Meta::Tuple(
                        out.into_iter()
                            .enumerate()
                            .map(|(k, t)| (t, sharding(k)))
                            .collect(),
                    )
                }
            }
        }
    }

    fn merge(&mut self, a: &mut Meta, b: Meta) -> DidMerge {
        // Shapes are compared evaluated, not as written: a rule that computes a dim
        // (`seq` split into 16-token pieces and concatenated back) builds `[batch, 16, 64]`
        // for the class the graph wrote as `[batch, seq, 64]`, and under `seq = 16` those
        // are one type. The class keeps the type it had.
        if !a.same(&b, &self.dims) {
            let message = format!("merged classes differ: {a:?} vs {b:?}");
            debug_assert!(false, "unsound rewrite: {message}");
            self.unsound.push(message);
        }
        DidMerge(false, false)
    }
}

/// Adds `node` with the shardings of its outputs, returning its class.
pub fn add_with(egraph: &mut WEGraph, node: WNode, shardings: Vec<Sharding>) -> Id {
    egraph.analysis.pending = Some(shardings);
    let id = egraph.add(node);
    egraph.analysis.pending = None;
    id
}

#[cfg(test)]
mod tests {
    use weft_ir::{DType, Placement, ReduceOp, Shape};

    use super::*;

    /// `a [4, 8] @ b [8, 6]` with both split along the contraction over `tp`, the product
    /// labelled `product`: what a rule would build.
    fn built(product: Placement) -> WEGraph {
        let analysis = WeftAnalysis {
            mesh: "tp=2".parse().unwrap(),
            ..WeftAnalysis::default()
        };
        let mut eg = WEGraph::new(analysis);
        let source = |eg: &mut WEGraph, name: &str, dims: [u64; 2], split: usize| {
            let op = Op::Input {
                dtype: DType::F32,
                shape: Shape::new(dims),
            };
            let i = eg.analysis.ops.intern(&op, Some(name));
            let node = WNode {
                head: Head::Op(i),
                children: vec![],
            };
            add_with(eg, node, vec![Sharding::on("tp", Placement::Split(split))])
        };
        let a = source(&mut eg, "a", [4, 8], 1);
        let b = source(&mut eg, "b", [8, 6], 0);
        let mm = Op::MatMul {
            transpose_a: false,
            transpose_b: false,
        };
        let i = eg.analysis.ops.intern(&mm, None);
        let node = WNode {
            head: Head::Op(i),
            children: vec![a, b],
        };
        add_with(&mut eg, node, vec![Sharding::on("tp", product)]);
        eg
    }

    #[test]
    fn a_rule_result_whose_sharding_does_not_follow_is_unsound() {
        assert!(
            built(Placement::Partial(ReduceOp::Sum))
                .analysis
                .unsound
                .is_empty()
        );
        let eg = built(Placement::Replicate);
        assert_eq!(eg.analysis.unsound.len(), 1);
        assert!(
            eg.analysis.unsound[0].contains(
                "a rule built `matmul` with shardings that do not follow: along `tp` the outputs are labelled (R) but the inputs give (P(sum))"
            ),
            "{:?}",
            eg.analysis.unsound
        );
    }
}
