//! The graph: nodes and values in arenas, plus the mesh and dimension bindings that
//! give collectives and symbolic shapes their meaning.

use crate::arena::{Arena, Handle};
use crate::infer::{InferCtx, infer};
use crate::mesh::{Mesh, Sharding};
use crate::op::Op;
use crate::types::{DimBindings, TensorType};
use crate::verify::{Rule, VerifyError};

/// Handle of a [`Node`].
pub type NodeId = Handle<Node>;
/// Handle of a [`Value`].
pub type ValueId = Handle<Value>;

/// One operation applied to values, producing values.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Unique name (from the model file, or made up by the pass that created the node).
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

/// A tensor produced by a node.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    /// Unique name; a single-output node's value carries the node's name.
    pub name: String,
    pub ty: TensorType,
    /// Layout over the mesh; replicated unless a user or the sharding pass says otherwise.
    pub sharding: Sharding,
    /// The node that produces this value and the output slot it comes from.
    pub producer: NodeId,
    pub slot: usize,
}

/// A tensor-and-collective program.
///
/// Invariant kept by [`Graph::add_node`] and checked by [`crate::verify()`]: nodes appear
/// in the arena after the nodes that produce their inputs, so arena order is a valid
/// execution order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    /// The device mesh collectives and shardings refer to; empty for a single device.
    pub mesh: Mesh,
    /// Values of the symbolic dimensions used in shapes.
    pub dims: DimBindings,
    nodes: Arena<Node>,
    values: Arena<Value>,
    /// The values the graph returns, in order.
    pub outputs: Vec<ValueId>,
    /// Model-changing rewrites applied to this graph (empty: it computes the source
    /// model's function). Copied by every pass that builds a graph from another.
    pub model_changes: Vec<crate::ModelChange>,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// Appends a node, inferring its output types from its inputs.
    ///
    /// Output values are named after the node (`name`) when there is one, else
    /// `name:0`, `name:1`, …. The error names the node and the rule its inputs break.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<ValueId>,
    ) -> Result<NodeId, VerifyError> {
        let name = name.into();
        for (slot, &v) in inputs.iter().enumerate() {
            if !self.values.contains(v) {
                return Err(VerifyError::node(
                    &name,
                    &op,
                    Vec::new(),
                    Rule::BadHandle(format!(
                        "input {slot} refers to value {v:?}, which does not exist"
                    )),
                ));
            }
        }
        let types: Vec<&TensorType> = inputs.iter().map(|&v| &self.values[v].ty).collect();
        let ctx = InferCtx {
            mesh: &self.mesh,
            dims: &self.dims,
        };
        let out_types = infer(&op, &types, &ctx)
            .map_err(|rule| VerifyError::node(&name, &op, self.describe_inputs(&inputs), rule))?;
        let node = self.nodes.append(Node {
            name: name.clone(),
            op,
            inputs,
            outputs: Vec::new(),
        });
        let single = out_types.len() == 1;
        let outputs: Vec<ValueId> = out_types
            .into_iter()
            .enumerate()
            .map(|(slot, ty)| {
                self.values.append(Value {
                    name: if single {
                        name.clone()
                    } else {
                        format!("{name}:{slot}")
                    },
                    ty,
                    sharding: Sharding::replicated(),
                    producer: node,
                    slot,
                })
            })
            .collect();
        self.nodes[node].outputs = outputs;
        Ok(node)
    }

    /// Appends a single-output node and returns its value.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[ValueId],
    ) -> Result<ValueId, VerifyError> {
        let node = self.add_node(name, op, inputs.to_vec())?;
        match self.nodes[node].outputs.as_slice() {
            [v] => Ok(*v),
            outs => Err(VerifyError::node(
                &self.nodes[node].name,
                &self.nodes[node].op,
                Vec::new(),
                Rule::Attr(format!(
                    "`Graph::add` needs a single-output op, this one has {} outputs",
                    outs.len()
                )),
            )),
        }
    }

    /// The node behind `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// Mutable access to a node, for passes that rewire inputs. Run the verifier afterwards.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id]
    }

    /// The value behind `id`.
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id]
    }

    /// Mutable access to a value (to rename it or set its sharding).
    pub fn value_mut(&mut self, id: ValueId) -> &mut Value {
        &mut self.values[id]
    }

    /// All nodes in arena (execution) order.
    pub fn nodes(&self) -> impl ExactSizeIterator<Item = (NodeId, &Node)> + '_ {
        self.nodes.iter()
    }

    /// All values in arena order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = (ValueId, &Value)> + '_ {
        self.values.iter()
    }

    /// Number of nodes.
    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Whether `id` names a node of this graph.
    pub fn has_node(&self, id: NodeId) -> bool {
        self.nodes.contains(id)
    }

    /// Whether `id` names a value of this graph.
    pub fn has_value(&self, id: ValueId) -> bool {
        self.values.contains(id)
    }

    /// The graph's inputs, in order.
    pub fn inputs(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n.op, Op::Input { .. }))
            .flat_map(|(_, n)| n.outputs.iter().copied())
    }

    /// A copy with the `Input` nodes first, in the order `order` names their values
    /// (inputs it does not name follow, in their own order), and every other node after
    /// them in its own order; names, types and shardings are kept. Passes that emit an
    /// input where it is first used (sharding, extraction) restore the model's input order
    /// with it: inputs fed by position (`--input-dir`, ONNX test data) must meet the same
    /// input in every stage.
    pub fn with_input_order(&self, order: &[String]) -> Graph {
        let input = |id: NodeId| matches!(self.nodes[id].op, Op::Input { .. });
        let mut ids: Vec<NodeId> = Vec::with_capacity(self.nodes.len());
        for name in order {
            let named = self.nodes().find(|&(id, n)| {
                input(id) && n.outputs.iter().any(|&v| self.values[v].name == *name)
            });
            if let Some((id, _)) = named
                && !ids.contains(&id)
            {
                ids.push(id);
            }
        }
        for (id, _) in self.nodes() {
            if input(id) && !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids.extend(self.nodes().map(|(id, _)| id).filter(|&id| !input(id)));
        let mut out = Graph {
            name: self.name.clone(),
            mesh: self.mesh.clone(),
            dims: self.dims.clone(),
            model_changes: self.model_changes.clone(),
            ..Graph::default()
        };
        let mut map: Vec<Option<ValueId>> = vec![None; self.values.len()];
        let moved = |map: &[Option<ValueId>], v: ValueId| {
            map[v.index()].expect("an input node comes first, others keep their order")
        };
        for id in ids {
            let node = &self.nodes[id];
            let inputs = node.inputs.iter().map(|&v| moved(&map, v)).collect();
            let new = out.nodes.append(Node {
                name: node.name.clone(),
                op: node.op.clone(),
                inputs,
                outputs: Vec::new(),
            });
            let outputs = node
                .outputs
                .iter()
                .map(|&v| {
                    let nv = out.values.append(Value {
                        producer: new,
                        ..self.values[v].clone()
                    });
                    map[v.index()] = Some(nv);
                    nv
                })
                .collect();
            out.nodes[new].outputs = outputs;
        }
        out.outputs = self.outputs.iter().map(|&v| moved(&map, v)).collect();
        out
    }

    /// The input values' names, in order.
    pub fn input_names(&self) -> Vec<String> {
        self.inputs().map(|v| self.values[v].name.clone()).collect()
    }

    /// The symbolic dims the graph's shapes are written with: the dims a `--dim`
    /// override can change. A sharded or extracted graph has concrete shapes, so none,
    /// even though [`Graph::dims`] still records the values it was made with.
    pub fn shape_symbols(&self) -> std::collections::BTreeSet<String> {
        self.values
            .iter()
            .flat_map(|(_, v)| v.ty.shape.dims().iter().flat_map(|d| d.symbols()))
            .collect()
    }

    /// The first of `overrides` that no shape is written with (see
    /// [`Graph::shape_symbols`]): an override that would change nothing but the reported
    /// dims, which the frontends refuse.
    pub fn unused_dim<'a>(
        &self,
        overrides: impl IntoIterator<Item = &'a String>,
    ) -> Option<&'a str> {
        let used = self.shape_symbols();
        overrides
            .into_iter()
            .find(|name| !used.contains(*name))
            .map(String::as_str)
    }

    /// `name: type` of each input value, for error messages.
    pub fn describe_inputs(&self, inputs: &[ValueId]) -> Vec<String> {
        inputs
            .iter()
            .map(|&v| match self.values.try_get(v) {
                Some(value) => format!("%{}: {}", value.name, value.ty),
                None => format!("{v:?} (invalid)"),
            })
            .collect()
    }

    /// The context type inference runs in.
    pub fn infer_ctx(&self) -> InferCtx<'_> {
        InferCtx {
            mesh: &self.mesh,
            dims: &self.dims,
        }
    }
}
