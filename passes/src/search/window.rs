//! A window of adjacent layers cut out of a graph as a graph of its own.
//!
//! The search evaluates its moves on three adjacent layers (so the overlap of one layer's
//! communication with the next layer's compute is visible, and the middle layer's
//! boundaries look like the model's) instead of the whole model: a schedule of three
//! layers takes a fraction of a millisecond, one of eighty takes tens.
//! Every value the window reads from a layer outside it becomes a graph input of the same
//! type and sharding. Sources (weights, constants, inputs) are copied as they are, so the
//! window's e-graph holds the same weights as the model's, and so are side computations
//! outside every layer (a rotary cache), with what they read: the ops that consume them
//! must look the same in the window as in the model, or their decisions would not be
//! found again there. Every value the window produces that something outside reads
//! becomes an output.

use std::collections::{HashMap, HashSet};

use weft_ir::layers::Layers;
use weft_ir::{Graph, NodeId, Occupancy, Op, ValueId};

/// Layers `first..=last` of `graph` as a graph, or why they cannot be cut out.
pub fn layer_window(
    graph: &Graph,
    layers: &Layers,
    first: u32,
    last: u32,
) -> Result<Graph, String> {
    let inside = |id: NodeId| layers.of(id).is_some_and(|l| (first..=last).contains(&l));
    let mut window = Graph::new(format!("{} (layers {first}..={last})", graph.name));
    window.mesh = graph.mesh.clone();
    window.dims = graph.dims.clone();
    window.model_changes = graph.model_changes.clone();
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    // Values read outside the window (or returned by the graph).
    let mut read_outside: HashSet<ValueId> = graph.outputs.iter().copied().collect();
    for (id, node) in graph.nodes() {
        if !inside(id) {
            read_outside.extend(node.inputs.iter().copied());
        }
    }
    let mut produced = Vec::new();
    for (id, node) in graph.nodes() {
        if !inside(id) {
            continue;
        }
        let mut inputs = Vec::with_capacity(node.inputs.len());
        for &v in &node.inputs {
            inputs.push(bring_in(
                graph,
                layers,
                &mut window,
                &mut map,
                v,
                (first, last),
            )?);
        }
        let new = window
            .add_node(node.name.clone(), node.op.clone(), inputs)
            .map_err(|e| format!("cannot cut out layers {first}..={last}: {e}"))?;
        let outs = window.node(new).outputs.clone();
        for (&old, &out) in node.outputs.iter().zip(&outs) {
            window.value_mut(out).sharding = graph.value(old).sharding.clone();
            window.value_mut(out).name = graph.value(old).name.clone();
            map.insert(old, out);
            produced.push(old);
        }
    }
    window.outputs = produced
        .into_iter()
        .filter(|v| read_outside.contains(v))
        .map(|v| map[&v])
        .collect();
    if window.outputs.is_empty() {
        return Err(format!(
            "layers {first}..={last} produce nothing the rest of the model reads"
        ));
    }
    weft_ir::verify::verify(&window)
        .map_err(|e| format!("the window of layers {first}..={last} does not verify: {e}"))?;
    Ok(window)
}

/// The window's value for `v`, a value read by a window node: already there, or copied in
/// (a source, or a side computation outside every layer, with its own inputs), or a new
/// input of its type (a value of another layer).
fn bring_in(
    graph: &Graph,
    layers: &Layers,
    window: &mut Graph,
    map: &mut HashMap<ValueId, ValueId>,
    v: ValueId,
    (first, last): (u32, u32),
) -> Result<ValueId, String> {
    if let Some(&m) = map.get(&v) {
        return Ok(m);
    }
    let fail = |e: weft_ir::VerifyError| format!("cannot cut out layers {first}..={last}: {e}");
    let value = graph.value(v);
    let producer_id = value.producer;
    let producer = graph.node(producer_id);
    let source = matches!(producer.op.occupancy(), Occupancy::Source);
    // A side computation: outside every layer, and reading no layer's value (so not the
    // embedding of the residual stream, which a layer's input is made from).
    let side = !source
        && layers.of(producer_id).is_none()
        && producer.inputs.iter().all(|&i| {
            let p = graph.value(i).producer;
            layers.of(p).is_none()
        });
    if source || side {
        let mut inputs = Vec::with_capacity(producer.inputs.len());
        for &i in &producer.inputs {
            inputs.push(bring_in(graph, layers, window, map, i, (first, last))?);
        }
        let new = window
            .add_node(producer.name.clone(), producer.op.clone(), inputs)
            .map_err(fail)?;
        let outs = window.node(new).outputs.clone();
        for (&old, &out) in producer.outputs.iter().zip(&outs) {
            window.value_mut(out).sharding = graph.value(old).sharding.clone();
            window.value_mut(out).name = graph.value(old).name.clone();
            map.insert(old, out);
        }
        return Ok(map[&v]);
    }
    let copied = window
        .add(
            format!("{}@window", value.name),
            Op::Input {
                dtype: value.ty.dtype,
                shape: value.ty.shape.clone(),
            },
            &[],
        )
        .map_err(fail)?;
    window.value_mut(copied).sharding = value.sharding.clone();
    map.insert(v, copied);
    Ok(copied)
}
