//! Building a new graph from an old one, node by node: the arena is append-only, so a
//! pass that removes or replaces nodes writes a fresh graph, keeping names and shardings.

use std::collections::HashMap;

use weft_ir::{Graph, NodeId, Op, ValueId, VerifyError};

/// What becomes of one node of the old graph.
#[derive(Debug)]
pub enum Fate {
    /// Copied as it is.
    Keep,
    /// Left out (nothing kept may use its values).
    Drop,
    /// Replaced by another op on other (old-graph) inputs, producing the same values.
    Replace(Op, Vec<ValueId>),
    /// New nodes inserted first, then the node replaced; inputs may refer to new nodes.
    Insert(Vec<NewNode>, Op, Vec<Ref>),
}

/// A value a new node reads: one of the old graph, or output `slot` of the new node `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ref {
    Old(ValueId),
    New(usize, usize),
}

/// A node a pass inserts; `key` names it for later [`Ref::New`]s.
#[derive(Debug)]
pub struct NewNode {
    pub key: usize,
    pub name: String,
    pub op: Op,
    pub inputs: Vec<Ref>,
}

/// A copy of `graph` in which every node meets the fate `fate` gives it. Type inference runs
/// again on every node, so a replacement that does not fit fails here, not later.
pub fn rebuild(graph: &Graph, mut fate: impl FnMut(NodeId) -> Fate) -> Result<Graph, VerifyError> {
    let mut out = Graph::new(graph.name.clone());
    out.mesh = graph.mesh.clone();
    out.dims = graph.dims.clone();
    out.model_changes = graph.model_changes.clone();
    let mut map: Vec<Option<ValueId>> = vec![None; graph.values().len()];
    let mut inserted: HashMap<usize, Vec<ValueId>> = HashMap::new();
    let resolve =
        |r: &Ref, map: &[Option<ValueId>], inserted: &HashMap<usize, Vec<ValueId>>| match *r {
            Ref::Old(v) => map[v.index()].expect("a kept node only uses kept values"),
            Ref::New(key, slot) => inserted[&key][slot],
        };
    for (id, node) in graph.nodes() {
        let (op, inputs): (Op, Vec<Ref>) = match fate(id) {
            Fate::Drop => continue,
            Fate::Keep => (
                node.op.clone(),
                node.inputs.iter().map(|&v| Ref::Old(v)).collect(),
            ),
            Fate::Replace(op, inputs) => (op, inputs.into_iter().map(Ref::Old).collect()),
            Fate::Insert(new_nodes, op, inputs) => {
                for n in new_nodes {
                    let ins = n
                        .inputs
                        .iter()
                        .map(|r| resolve(r, &map, &inserted))
                        .collect();
                    let added = out.add_node(n.name, n.op, ins)?;
                    inserted.insert(n.key, out.node(added).outputs.clone());
                }
                (op, inputs)
            }
        };
        let inputs = inputs.iter().map(|r| resolve(r, &map, &inserted)).collect();
        let new = out.add_node(node.name.clone(), op, inputs)?;
        let new_outputs = out.node(new).outputs.clone();
        for (&old_v, new_v) in node.outputs.iter().zip(new_outputs) {
            let old = graph.value(old_v);
            let value = out.value_mut(new_v);
            value.name = old.name.clone();
            value.sharding = old.sharding.clone();
            map[old_v.index()] = Some(new_v);
        }
    }
    out.outputs = graph
        .outputs
        .iter()
        .map(|v| map[v.index()].expect("graph outputs are kept"))
        .collect();
    Ok(out)
}
