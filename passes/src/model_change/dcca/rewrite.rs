//! Writing the DCCA graph: a copy of the source in which each MoE layer's tokens pass a
//! shared down-projection before the dispatch, its expert matmuls take the new weights
//! (the expert side then computes at width `r·h` outside and `inner/r` inside, type
//! inference carrying the widths through the row-wise ops), and a shared up-projection
//! follows the combine. The router's input is not touched: it still reads width `h`.
//!
//! Not `rebuild::rebuild`: weights read from the model may sit after their first use in
//! the arena (a model file lists them where it likes, and the source graph did not use
//! them), so leaf weights are copied on demand, ahead of their place.

use std::collections::{HashMap, HashSet};

use weft_ir::{Graph, NodeId, Op, ValueId, VerifyError};

use super::find::MoeLayer;
use super::weights::{LayerWeights, NewWeight, Source, drawn, scale};
use crate::PassError;

/// What happens to a node of a MoE layer (layer index, and expert-matmul index).
#[derive(Clone, Copy, Debug)]
enum Role {
    Dispatch(usize),
    Expert(usize, usize),
    Interior(usize),
    Combine(usize),
}

struct Writer<'g> {
    old: &'g Graph,
    new: Graph,
    map: Vec<Option<ValueId>>,
    done: HashSet<NodeId>,
    source: &'g Source,
    /// Each new weight's position among all of them, its drawn weight's seed index.
    index: HashMap<&'g str, u64>,
}

fn build(source: VerifyError) -> PassError {
    PassError::Build {
        pass: "model-change",
        source,
    }
}

impl Writer<'_> {
    /// The new graph's counterpart of `v`, copying a leaf weight or constant ahead of
    /// its place when it has not been reached yet.
    fn value(&mut self, v: ValueId) -> Result<ValueId, PassError> {
        if let Some(n) = self.map[v.index()] {
            return Ok(n);
        }
        let p = self.old.value(v).producer;
        if matches!(self.old.node(p).op, Op::Weight { .. } | Op::Constant { .. }) {
            self.copy(p)?;
        }
        self.map[v.index()].ok_or_else(|| PassError::Refused {
            pass: "model-change",
            reason: format!(
                "dcca: `{}` is used before it is computed (the graph is not in execution order)",
                self.old.value(v).name
            ),
        })
    }

    /// Adds `op` on `inputs` in place of the old node `id`, its outputs taking the old
    /// values' names and shardings.
    fn emit(&mut self, id: NodeId, op: Op, inputs: Vec<ValueId>) -> Result<(), PassError> {
        let node = self.old.node(id);
        let new = self
            .new
            .add_node(node.name.clone(), op, inputs)
            .map_err(build)?;
        let outs = self.new.node(new).outputs.clone();
        for (&old_v, new_v) in node.outputs.iter().zip(outs) {
            let old = self.old.value(old_v);
            let value = self.new.value_mut(new_v);
            value.name = old.name.clone();
            value.sharding = old.sharding.clone();
            self.map[old_v.index()] = Some(new_v);
        }
        self.done.insert(id);
        Ok(())
    }

    fn copy(&mut self, id: NodeId) -> Result<(), PassError> {
        if self.done.contains(&id) {
            return Ok(());
        }
        let node = self.old.node(id);
        let inputs = node
            .inputs
            .iter()
            .map(|&v| self.value(v))
            .collect::<Result<Vec<_>, _>>()?;
        self.emit(id, node.op.clone(), inputs)
    }

    /// A new single-output node.
    fn add(&mut self, name: String, op: Op, inputs: &[ValueId]) -> Result<ValueId, PassError> {
        self.new.add(name, op, inputs).map_err(build)
    }

    /// The new weight `w`: the model's, or drawn now.
    fn weight(&mut self, w: &NewWeight) -> Result<ValueId, PassError> {
        match self.source {
            Source::Read(by_name) => self.value(by_name[&w.name]),
            Source::Drawn { seed } => {
                let op = Op::Weight {
                    dtype: w.dtype,
                    shape: weft_ir::Shape::new(w.shape.iter().copied()),
                    init: drawn(*seed, self.index[w.name.as_str()]),
                };
                self.add(w.name.clone(), op, &[])
            }
        }
    }
}

/// The DCCA graph of `graph`, whose MoE layers are `layers` with new weights `weights`
/// (same order) from `source`, at ratio `num/den`.
pub(crate) fn rewrite(
    graph: &Graph,
    layers: &[MoeLayer],
    weights: &[LayerWeights],
    source: &Source,
    (num, den): (u64, u64),
) -> Result<Graph, PassError> {
    let mut roles: HashMap<NodeId, Role> = HashMap::new();
    for (l, layer) in layers.iter().enumerate() {
        roles.insert(layer.dispatch, Role::Dispatch(l));
        roles.insert(layer.combine, Role::Combine(l));
        for (j, e) in layer.expert_matmuls().enumerate() {
            roles.insert(e, Role::Expert(l, j));
        }
        for &n in &layer.interior {
            roles.insert(n, Role::Interior(l));
        }
    }
    let index = weights
        .iter()
        .flat_map(LayerWeights::all)
        .enumerate()
        .map(|(i, w)| (w.name.as_str(), i as u64))
        .collect();
    let mut new = Graph::new(graph.name.clone());
    new.mesh = graph.mesh.clone();
    new.dims = graph.dims.clone();
    new.model_changes = graph.model_changes.clone();
    let mut w = Writer {
        old: graph,
        new,
        map: vec![None; graph.values().len()],
        done: HashSet::new(),
        source,
        index,
    };
    for (id, node) in graph.nodes() {
        if w.done.contains(&id) {
            continue;
        }
        let Some(&role) = roles.get(&id) else {
            w.copy(id)?;
            continue;
        };
        match role {
            Role::Dispatch(l) => {
                let (layer, lw) = (&layers[l], &weights[l]);
                let x = w.value(layer.tokens)?;
                let down = w.weight(&lw.down)?;
                let descended = w.add(
                    format!("{}.dcca.down_proj", layer.prefix),
                    Op::MatMul {
                        transpose_a: false,
                        transpose_b: false,
                    },
                    &[x, down],
                )?;
                let ids = w.value(node.inputs[1])?;
                w.emit(id, node.op.clone(), vec![descended, ids])?;
            }
            Role::Expert(l, j) => {
                let rows = w.value(node.inputs[0])?;
                let counts = w.value(node.inputs[1])?;
                let weight = w.weight(&weights[l].experts[j])?;
                w.emit(id, node.op.clone(), vec![rows, counts, weight])?;
            }
            Role::Interior(l) => {
                let op = match &node.op {
                    Op::Split { axis, sizes } => {
                        let sizes = sizes
                            .iter()
                            .map(|&s| scale(s, den, num))
                            .collect::<Option<Vec<u64>>>()
                            .ok_or_else(|| PassError::Refused {
                                pass: "model-change",
                                reason: format!(
                                    "dcca: MoE layer `{}`: `{}` splits the inner width into \
                                     {sizes:?}, which 1/r = {den}/{num} does not scale to whole \
                                     numbers",
                                    layers[l].prefix, node.name
                                ),
                            })?;
                        Op::Split { axis: *axis, sizes }
                    }
                    op => op.clone(),
                };
                let inputs = node
                    .inputs
                    .iter()
                    .map(|&v| w.value(v))
                    .collect::<Result<Vec<_>, _>>()?;
                w.emit(id, op, inputs)?;
            }
            Role::Combine(l) => {
                let layer = &layers[l];
                let inputs = node
                    .inputs
                    .iter()
                    .map(|&v| w.value(v))
                    .collect::<Result<Vec<_>, _>>()?;
                w.emit(id, Op::MoeCombine, inputs)?;
                let old_out = node.outputs[0];
                let reduced = w.map[old_out.index()].expect("just emitted");
                let up = w.weight(&weights[l].up)?;
                let ascended = w.add(
                    format!("{}.dcca.up_proj", layer.prefix),
                    Op::MatMul {
                        transpose_a: false,
                        transpose_b: false,
                    },
                    &[reduced, up],
                )?;
                // The up-projection takes the combine's place downstream: its layout
                // request, and its name where the graph returns it.
                let old = graph.value(old_out);
                w.new.value_mut(ascended).sharding = old.sharding.clone();
                w.new.value_mut(reduced).sharding = weft_ir::Sharding::replicated();
                if graph.outputs.contains(&old_out) {
                    w.new.value_mut(reduced).name = format!("{}.reduced", old.name);
                    w.new.value_mut(ascended).name = old.name.clone();
                }
                w.map[old_out.index()] = Some(ascended);
            }
        }
    }
    let outputs = graph
        .outputs
        .iter()
        .map(|&v| w.value(v))
        .collect::<Result<Vec<_>, _>>()?;
    w.new.outputs = outputs;
    Ok(w.new)
}
