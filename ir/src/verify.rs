//! The verifier: everything a well-formed graph promises, checked in one place.
//!
//! Order of checks (cranelift style): handles first, so later checks may index freely;
//! then names, then that arena order is an execution order (reporting a cycle when there
//! is one); then every node's typing rule and its stored output types; then shardings,
//! each on its own and then as the op's rule propagates them ([`crate::propagate`]).
//! Passes run it after every change, so a broken invariant is caught where it was made.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::graph::{Graph, NodeId};
use crate::infer::infer;
use crate::mesh::Placement;
use crate::op::{Arity, Init, Op};
use crate::propagate::{Arg, follow};
use crate::types::{DimError, TensorType};

/// The rule a graph breaks.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Rule {
    #[error("invalid handle: {0}")]
    BadHandle(String),
    #[error(
        "uses value `{value}` before it is produced (node `{producer}` comes later in the graph)"
    )]
    Order { value: String, producer: String },
    #[error("the graph has a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("takes {expected} input(s), got {got}")]
    Arity { expected: Arity, got: usize },
    #[error("dtype: {0}")]
    DType(String),
    #[error("shape: {0}")]
    Shape(String),
    #[error("attribute: {0}")]
    Attr(String),
    #[error("mesh: {0}")]
    Mesh(String),
    #[error(transparent)]
    Dim(#[from] DimError),
    #[error("initialiser: {0}")]
    Init(String),
    #[error("name `{0}` is used by more than one {1}")]
    DuplicateName(String, &'static str),
    #[error("value `{value}` is recorded as {stored} but its op produces {inferred}")]
    StaleType {
        value: String,
        stored: TensorType,
        inferred: TensorType,
    },
    #[error("op produces {expected} value(s) but the node has {got}")]
    OutputCount { expected: usize, got: usize },
    #[error("sharding of `{value}`: {reason}")]
    Sharding { value: String, reason: String },
    /// An output's sharding does not follow from the inputs' by the op's rule, or the
    /// inputs' shardings do not combine under it.
    #[error("sharding along mesh axis `{axis}`: {reason}")]
    Propagation { axis: String, reason: String },
    #[error("graph outputs: {0}")]
    Outputs(String),
}

/// Where a rule was broken: the node (with its op and inputs), or the graph as a whole.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyError {
    pub node: Option<Box<NodeContext>>,
    pub rule: Box<Rule>,
}

/// The node an error is about.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeContext {
    pub name: String,
    pub op: &'static str,
    /// `%name: type` of each input.
    pub inputs: Vec<String>,
}

impl VerifyError {
    /// An error about one node.
    pub fn node(name: &str, op: &Op, inputs: Vec<String>, rule: Rule) -> VerifyError {
        VerifyError {
            node: Some(Box::new(NodeContext {
                name: name.to_owned(),
                op: op.name(),
                inputs,
            })),
            rule: Box::new(rule),
        }
    }

    /// An error about the graph as a whole.
    pub fn graph(rule: Rule) -> VerifyError {
        VerifyError {
            node: None,
            rule: Box::new(rule),
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(n) if n.inputs.is_empty() => {
                write!(f, "node `{}` ({}): {}", n.name, n.op, self.rule)
            }
            Some(n) => write!(
                f,
                "node `{}` ({}) with inputs [{}]: {}",
                n.name,
                n.op,
                n.inputs.join(", "),
                self.rule
            ),
            None => write!(f, "{}", self.rule),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Every rule a graph breaks, in graph order.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyErrors(pub Vec<VerifyError>);

impl fmt::Display for VerifyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} verifier errors:", many.len())?;
                for e in many {
                    write!(f, "\n  - {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for VerifyErrors {}

/// At most this many errors are collected; the rest are usually consequences.
const MAX_ERRORS: usize = 20;

/// Checks every invariant of `graph`; returns all broken rules (up to a cap).
pub fn verify(graph: &Graph) -> Result<(), VerifyErrors> {
    let mut errors = Vec::new();
    check_handles(graph, &mut errors);
    if !errors.is_empty() {
        // Later checks index through handles; stop before they could go out of range.
        return Err(VerifyErrors(errors));
    }
    check_names(graph, &mut errors);
    check_order(graph, &mut errors);
    if errors
        .iter()
        .any(|e| matches!(*e.rule, Rule::Cycle(_) | Rule::Order { .. }))
    {
        return Err(VerifyErrors(errors));
    }
    for (id, node) in graph.nodes() {
        if errors.len() >= MAX_ERRORS {
            break;
        }
        if let Err(e) = check_node(graph, id) {
            errors.push(VerifyError::node(
                &node.name,
                &node.op,
                graph.describe_inputs(&node.inputs),
                e,
            ));
        }
    }
    check_shardings(graph, &mut errors);
    if errors.is_empty() {
        // Propagation reasons about shapes and placements, so it needs both sound.
        check_propagation(graph, &mut errors);
    }
    check_inline_lengths(graph, &mut errors);
    if graph.outputs.is_empty() {
        errors.push(VerifyError::graph(Rule::Outputs(
            "the graph returns nothing; list at least one output".into(),
        )));
    }
    // Outputs are known by name (`weft run -o` writes one array per name): a value listed
    // twice would be two results under one name, refused only when written, after the run.
    let mut seen = std::collections::HashSet::new();
    for &v in &graph.outputs {
        if graph.has_value(v) && !seen.insert(v) {
            errors.push(VerifyError::graph(Rule::Outputs(format!(
                "graph output `{}` is listed twice; list each output once",
                graph.value(v).name
            ))));
            break;
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        errors.truncate(MAX_ERRORS);
        Err(VerifyErrors(errors))
    }
}

fn check_handles(graph: &Graph, errors: &mut Vec<VerifyError>) {
    for (id, node) in graph.nodes() {
        for (slot, &v) in node.inputs.iter().enumerate() {
            if !graph.has_value(v) {
                errors.push(VerifyError::node(
                    &node.name,
                    &node.op,
                    Vec::new(),
                    Rule::BadHandle(format!(
                        "input {slot} refers to value {v:?}, which does not exist"
                    )),
                ));
            }
        }
        for (slot, &v) in node.outputs.iter().enumerate() {
            let consistent = graph.has_value(v) && {
                let value = graph.value(v);
                value.producer == id && value.slot == slot
            };
            if !consistent {
                errors.push(VerifyError::node(
                    &node.name,
                    &node.op,
                    Vec::new(),
                    Rule::BadHandle(format!(
                        "output {slot} refers to value {v:?}, which is missing or not produced by this node"
                    )),
                ));
            }
        }
    }
    for (id, value) in graph.values() {
        let consistent = graph.has_node(value.producer)
            && graph.node(value.producer).outputs.get(value.slot) == Some(&id);
        if !consistent {
            errors.push(VerifyError::graph(Rule::BadHandle(format!(
                "value `{}` names producer {:?} slot {}, which does not list it as an output",
                value.name, value.producer, value.slot
            ))));
        }
    }
    for (i, &v) in graph.outputs.iter().enumerate() {
        if !graph.has_value(v) {
            errors.push(VerifyError::graph(Rule::BadHandle(format!(
                "graph output {i} refers to value {v:?}, which does not exist"
            ))));
        }
    }
}

fn check_names(graph: &Graph, errors: &mut Vec<VerifyError>) {
    let mut seen = HashSet::new();
    for (_, node) in graph.nodes() {
        if !seen.insert(node.name.as_str()) {
            errors.push(VerifyError::graph(Rule::DuplicateName(
                node.name.clone(),
                "node",
            )));
        }
    }
    let mut seen = HashSet::new();
    for (_, value) in graph.values() {
        if !seen.insert(value.name.as_str()) {
            errors.push(VerifyError::graph(Rule::DuplicateName(
                value.name.clone(),
                "value",
            )));
        }
    }
}

/// Arena order must be an execution order. When it is not, tell a cycle (which no
/// reordering can fix) from a mere misordering (which a pass forgot to repair).
fn check_order(graph: &Graph, errors: &mut Vec<VerifyError>) {
    for (id, node) in graph.nodes() {
        for &v in &node.inputs {
            let producer = graph.value(v).producer;
            if producer >= id {
                let rule = match find_cycle(graph, id) {
                    Some(cycle) => Rule::Cycle(cycle),
                    None => Rule::Order {
                        value: graph.value(v).name.clone(),
                        producer: graph.node(producer).name.clone(),
                    },
                };
                errors.push(VerifyError::node(&node.name, &node.op, Vec::new(), rule));
                return;
            }
        }
    }
}

/// A cycle through `start`, as node names, if there is one.
fn find_cycle(graph: &Graph, start: NodeId) -> Option<Vec<String>> {
    // Depth-first search over "input comes from" edges, looking for a path back to `start`.
    let mut stack = vec![(start, 0usize)];
    let mut on_path = vec![start];
    let mut visited = HashSet::from([start]);
    while let Some(&mut (node, ref mut next)) = stack.last_mut() {
        let inputs = &graph.node(node).inputs;
        if *next < inputs.len() {
            let producer = graph.value(inputs[*next]).producer;
            *next += 1;
            if producer == start {
                // `on_path` runs against the data flow (start, then producers of its
                // inputs); report it in flow order: start -> … -> start.
                let start_name = graph.node(start).name.clone();
                let mut names = vec![start_name.clone()];
                names.extend(
                    on_path[1..]
                        .iter()
                        .rev()
                        .map(|&n| graph.node(n).name.clone()),
                );
                names.push(start_name);
                return Some(names);
            }
            if visited.insert(producer) {
                stack.push((producer, 0));
                on_path.push(producer);
            }
        } else {
            stack.pop();
            on_path.pop();
        }
    }
    None
}

fn check_node(graph: &Graph, id: NodeId) -> Result<(), Rule> {
    let node = graph.node(id);
    let types: Vec<&TensorType> = node.inputs.iter().map(|&v| &graph.value(v).ty).collect();
    let inferred = infer(&node.op, &types, &graph.infer_ctx())?;
    if inferred.len() != node.outputs.len() {
        return Err(Rule::OutputCount {
            expected: inferred.len(),
            got: node.outputs.len(),
        });
    }
    for (&v, ty) in node.outputs.iter().zip(inferred) {
        let value = graph.value(v);
        let same = value.ty.dtype == ty.dtype
            && value.ty.shape.rank() == ty.shape.rank()
            && value
                .ty
                .shape
                .dims()
                .iter()
                .zip(ty.shape.dims())
                .all(|(a, b)| a.same(b, &graph.dims));
        if !same {
            return Err(Rule::StaleType {
                value: value.name.clone(),
                stored: value.ty.clone(),
                inferred: ty,
            });
        }
    }
    Ok(())
}

/// Inline values describe the logical tensor: the local element count times the number of
/// pieces its sharding cuts it into.
fn check_inline_lengths(graph: &Graph, errors: &mut Vec<VerifyError>) {
    for (_, node) in graph.nodes() {
        let (Op::Weight {
            init: Init::Inline(values),
            ..
        }
        | Op::Constant {
            init: Init::Inline(values),
            ..
        }) = &node.op
        else {
            continue;
        };
        let Some(value) = node.outputs.first().map(|&v| graph.value(v)) else {
            continue;
        };
        let Ok(local) = value.ty.shape.numel(&graph.dims) else {
            continue;
        };
        let pieces: u64 = value
            .sharding
            .entries()
            .filter(|(_, p)| matches!(p, Placement::Split(_)))
            .filter_map(|(axis, _)| graph.mesh.axis_size(axis))
            .product();
        let logical = local.saturating_mul(pieces);
        if values.len() as u64 != logical {
            let whole = if pieces > 1 {
                format!("a tensor of {logical} elements ({local} per piece, {pieces} pieces)")
            } else {
                format!("a tensor of {logical} elements")
            };
            errors.push(VerifyError::node(
                &node.name,
                &node.op,
                Vec::new(),
                Rule::Init(format!("{} inline values given for {whole}", values.len())),
            ));
        }
    }
}

fn check_shardings(graph: &Graph, errors: &mut Vec<VerifyError>) {
    for (_, value) in graph.values() {
        for (axis, placement) in value.sharding.entries() {
            // Without a mesh the graph runs on one device and its shardings are layout
            // requests for the sharding pass, which checks them against its mesh.
            let reason = if graph.mesh.axis(axis).is_none() && !graph.mesh.axes().is_empty() {
                Some(format!(
                    "mesh axis `{axis}` is not in the graph's mesh ({})",
                    graph.mesh
                ))
            } else {
                match placement {
                    Placement::Local if graph.mesh.axes().is_empty() => Some(
                        "a layout request cannot be local (each device's own value); ask for a split or a whole value".into(),
                    ),
                    Placement::Split(d) if d >= value.ty.shape.rank() => Some(format!(
                        "split along dim {d} but the value has rank {}",
                        value.ty.shape.rank()
                    )),
                    Placement::Partial(_)
                        if !value.ty.dtype.is_float() && !value.ty.dtype.is_int() =>
                    {
                        Some(format!(
                            "a {} value cannot be a partial sum",
                            value.ty.dtype
                        ))
                    }
                    _ => None,
                }
            };
            if let Some(reason) = reason {
                errors.push(VerifyError::graph(Rule::Sharding {
                    value: value.name.clone(),
                    reason,
                }));
            }
        }
    }
}

/// Every op's output shardings must follow from its inputs' by the op's rule, along each
/// mesh axis; a graph without a mesh runs on one device and its shardings are requests.
/// Sources are global tensors laid out over the mesh, and outputs are assembled from
/// their pieces, so neither may be local.
fn check_propagation(graph: &Graph, errors: &mut Vec<VerifyError>) {
    if graph.mesh.axes().is_empty() {
        return;
    }
    for &v in &graph.outputs {
        let value = graph.value(v);
        if let Some((axis, _)) = value
            .sharding
            .entries()
            .find(|(_, p)| *p == Placement::Local)
        {
            errors.push(VerifyError::graph(Rule::Propagation {
                axis: axis.to_owned(),
                reason: format!(
                    "graph output `{}` is local (each device's own value), so it cannot be assembled; return a laid-out value",
                    value.name
                ),
            }));
        }
    }
    for (_, node) in graph.nodes() {
        if errors.len() >= MAX_ERRORS {
            return;
        }
        let mut fail = |axis: &str, reason: String| {
            errors.push(VerifyError::node(
                &node.name,
                &node.op,
                graph.describe_inputs(&node.inputs),
                Rule::Propagation {
                    axis: axis.to_owned(),
                    reason,
                },
            ));
        };
        let shapes = |vs: &[crate::graph::ValueId]| -> Option<Vec<Vec<u64>>> {
            vs.iter()
                .map(|&v| graph.value(v).ty.shape.eval(&graph.dims).ok())
                .collect()
        };
        let (Some(in_shapes), Some(out_shapes)) = (shapes(&node.inputs), shapes(&node.outputs))
        else {
            continue;
        };
        for axis in graph.mesh.axes() {
            let name = axis.name.as_str();
            if matches!(
                node.op,
                Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. }
            ) {
                if let Some(&v) = node.outputs.first()
                    && graph.value(v).sharding.placement(name) == Placement::Local
                {
                    fail(
                        name,
                        "a source is a global tensor laid out over the mesh; only computed values can be local".into(),
                    );
                }
                continue;
            }
            let args: Vec<Arg<'_>> = node
                .inputs
                .iter()
                .zip(&in_shapes)
                .map(|(&v, shape)| Arg {
                    placement: graph.value(v).sharding.placement(name),
                    shape,
                    float: graph.value(v).ty.dtype.is_float(),
                })
                .collect();
            let own = node.op.mesh_axis() == Some(name);
            let labels: Vec<Placement> = node
                .outputs
                .iter()
                .map(|&v| graph.value(v).sharding.placement(name))
                .collect();
            let want = match follow(&node.op, &args, &out_shapes, &labels, own) {
                Ok(Some(want)) => want,
                Ok(None) => continue,
                Err(reason) => {
                    fail(name, reason);
                    continue;
                }
            };
            for (&v, want) in node.outputs.iter().zip(want) {
                let value = graph.value(v);
                let got = value.sharding.placement(name);
                if got != want {
                    let ins: Vec<String> = args.iter().map(|a| a.placement.to_string()).collect();
                    fail(
                        name,
                        format!(
                            "`{}` is labelled {got}, but {} of inputs ({}) is {want}",
                            value.name,
                            node.op.name(),
                            ins.join(", ")
                        ),
                    );
                }
            }
        }
    }
}

/// Index of values by name, for frontends and tools.
pub fn values_by_name(graph: &Graph) -> HashMap<&str, crate::graph::ValueId> {
    graph
        .values()
        .map(|(id, v)| (v.name.as_str(), id))
        .collect()
}
