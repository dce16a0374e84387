//! IR graph → e-graph, and an extracted term → IR graph.

use std::collections::{HashMap, HashSet};

use egg::{Id, RecExpr};
use weft_ir::{Graph, Op, ValueId};

use super::SaturateError;
use super::analysis::{Meta, WEGraph, WeftAnalysis, add_with};
use super::lang::{Head, WNode};

/// The e-graph of a graph, its root class, and the names of the original values by class.
pub fn to_egraph(
    graph: &Graph,
    explanations: bool,
) -> Result<(WEGraph, Id, HashMap<Id, String>), SaturateError> {
    let analysis = WeftAnalysis {
        mesh: graph.mesh.clone(),
        dims: graph.dims.clone(),
        ..WeftAnalysis::default()
    };
    let mut eg = WEGraph::new(analysis);
    if explanations {
        eg = eg.with_explanations_enabled();
    }
    let mut class_of: HashMap<ValueId, Id> = HashMap::new();
    let mut names: HashMap<Id, String> = HashMap::new();
    for (_, node) in graph.nodes() {
        if matches!(node.op, Op::Send { .. } | Op::Recv { .. }) {
            return Err(SaturateError::Unsupported {
                node: node.name.clone(),
                reason: "send and recv pair across devices by program order, which equality saturation does not preserve".into(),
            });
        }
        let source = matches!(
            node.op,
            Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. }
        );
        let head = Head::Op(
            eg.analysis
                .ops
                .intern(&node.op, source.then_some(node.name.as_str())),
        );
        let children = node.inputs.iter().map(|v| class_of[v]).collect();
        let shardings = node
            .outputs
            .iter()
            .map(|&v| graph.value(v).sharding.clone())
            .collect();
        let id = add_with(&mut eg, WNode { head, children }, shardings);
        if let Meta::Invalid(reason) = &eg[id].data {
            return Err(SaturateError::Unsupported {
                node: node.name.clone(),
                reason: reason.clone(),
            });
        }
        if node.outputs.len() == 1 {
            class_of.insert(node.outputs[0], id);
            names
                .entry(id)
                .or_insert_with(|| graph.value(node.outputs[0]).name.clone());
        } else {
            for (k, &v) in node.outputs.iter().enumerate() {
                let proj = WNode {
                    head: Head::Proj(k as u32),
                    children: vec![id],
                };
                let sharding = graph.value(v).sharding.clone();
                let p = add_with(&mut eg, proj, vec![sharding]);
                class_of.insert(v, p);
                names
                    .entry(p)
                    .or_insert_with(|| graph.value(v).name.clone());
            }
        }
    }
    let outputs = graph.outputs.iter().map(|v| class_of[v]).collect();
    let root = eg.add(WNode {
        head: Head::Root,
        children: outputs,
    });
    eg.rebuild();
    Ok((eg, root, names))
}

/// Rebuilds an IR graph from an extracted term (its last node is the root). Values keep
/// the original names where their class had one; others are named after their op.
pub fn to_graph(
    expr: &RecExpr<WNode>,
    eg: &WEGraph,
    classes: &[Id],
    names: &HashMap<Id, String>,
    template: &Graph,
) -> Result<Graph, SaturateError> {
    to_graph_with_classes(expr, eg, classes, names, template).map(|(g, _)| g)
}

/// [`to_graph`], with the e-class of every computed node, by node name (names are unique
/// and survive the reordering of inputs; sources are left out).
pub fn to_graph_with_classes(
    expr: &RecExpr<WNode>,
    eg: &WEGraph,
    classes: &[Id],
    names: &HashMap<Id, String>,
    template: &Graph,
) -> Result<(Graph, HashMap<String, Id>), SaturateError> {
    let mut node_classes: HashMap<String, Id> = HashMap::new();
    let mut g = Graph::new(template.name.clone());
    g.mesh = template.mesh.clone();
    g.dims = template.dims.clone();
    g.model_changes = template.model_changes.clone();
    let nodes = expr.as_ref();
    // A class's name: that of its earliest original value (deterministic).
    let mut ordered: Vec<(&Id, &String)> = names.iter().collect();
    ordered.sort();
    let mut by_class: HashMap<Id, &String> = HashMap::new();
    for (id, n) in ordered {
        by_class.entry(eg.find(*id)).or_insert(n);
    }
    // Per expression node: its value(s).
    let mut values: Vec<Vec<ValueId>> = Vec::with_capacity(nodes.len());
    let mut used: HashSet<String> = HashSet::new();
    // Per base name, the suffix to try next: names only ever join `used`, so every
    // `{base}.{k}` below it is taken still, and starting there gives the same name as
    // counting from 2 (which made naming quadratic in the values sharing a base, such as
    // a token split's hundreds of unnamed `slice`s).
    let mut next_suffix: HashMap<String, usize> = HashMap::new();
    let mut fresh = |base: &str, used: &mut HashSet<String>| {
        let mut name = base.to_owned();
        let mut k = next_suffix.get(base).copied().unwrap_or(2);
        if k > 2 || !used.insert(name.clone()) {
            loop {
                name = format!("{base}.{k}");
                k += 1;
                if used.insert(name.clone()) {
                    break;
                }
            }
        }
        next_suffix.insert(base.to_owned(), k);
        name
    };
    // Sources' names are reserved first, so no computed value can take one.
    for node in nodes {
        if let Head::Op(i) = node.head
            && let Some(name) = eg.analysis.ops.source_name(i)
        {
            used.insert(name.to_owned());
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let class = eg.find(classes[i]);
        let vals = match node.head {
            Head::Op(op_index) => {
                let op = eg.analysis.ops.get(op_index).clone();
                let inputs: Vec<ValueId> = node
                    .children
                    .iter()
                    .map(|&c| values[usize::from(c)][0])
                    .collect();
                // Sources keep their own names: the runner feeds inputs by name.
                let name = match eg.analysis.ops.source_name(op_index) {
                    Some(name) => name.to_owned(),
                    None => {
                        let base = by_class
                            .get(&class)
                            .map(|n| (*n).clone())
                            .unwrap_or_else(|| op.name().to_owned());
                        let name = fresh(&base, &mut used);
                        node_classes.insert(name.clone(), class);
                        name
                    }
                };
                let id = g
                    .add_node(name, op, inputs)
                    .map_err(|e| SaturateError::Extraction(e.to_string()))?;
                let outs = g.node(id).outputs.clone();
                match &eg[class].data {
                    Meta::Value { sharding, .. } if outs.len() == 1 => {
                        g.value_mut(outs[0]).sharding = sharding.clone();
                    }
                    Meta::Tuple(items) => {
                        for (&v, (_, sharding)) in outs.iter().zip(items) {
                            g.value_mut(v).sharding = sharding.clone();
                        }
                    }
                    _ => {}
                }
                outs
            }
            Head::Proj(k) => {
                let tuple = &values[usize::from(node.children[0])];
                let v = *tuple.get(k as usize).ok_or_else(|| {
                    SaturateError::Extraction(format!("projection {k} of a {}-tuple", tuple.len()))
                })?;
                // The original name of this output, when it had one.
                if let Some(n) = by_class.get(&class)
                    && g.value(v).name != **n
                    && !used.contains(*n)
                {
                    used.insert((*n).clone());
                    g.value_mut(v).name = (*n).clone();
                }
                vec![v]
            }
            Head::Root => {
                g.outputs = node
                    .children
                    .iter()
                    .map(|&c| values[usize::from(c)][0])
                    .collect();
                Vec::new()
            }
        };
        values.push(vals);
    }
    // Graph outputs keep their original names (the runner names its results by them).
    // Two outputs the e-graph found equal are one value here: the first takes its name,
    // and a later one gets a copy (a reshape to its own shape, as the ONNX importer does)
    // carrying its own, so no output name is lost.
    let outputs = g.outputs.clone();
    for (i, (&v, &t)) in outputs.iter().zip(&template.outputs).enumerate() {
        let want = template.value(t).name.clone();
        if g.value(v).name == want || g.values().any(|(_, x)| x.name == want) {
            continue;
        }
        let shared = outputs[..i].contains(&v);
        let source = matches!(
            g.node(g.value(v).producer).op,
            Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. }
        );
        if !shared && !source {
            g.value_mut(v).name = want;
            continue;
        }
        let shape = g.value(v).ty.shape.clone();
        let sharding = g.value(v).sharding.clone();
        let node = g
            .add_node(want.clone(), Op::Reshape { shape }, vec![v])
            .map_err(|e| SaturateError::Extraction(e.to_string()))?;
        let copy = g.node(node).outputs[0];
        g.value_mut(copy).name = want;
        g.value_mut(copy).sharding = sharding;
        g.outputs[i] = copy;
    }
    // Inputs come out in the order the term reaches them; the template's order is the
    // program's interface (`--input-dir` feeds inputs by position).
    let g = g.with_input_order(&template.input_names());
    weft_ir::verify(&g).map_err(|e| SaturateError::Extraction(e.to_string()))?;
    Ok((g, node_classes))
}
