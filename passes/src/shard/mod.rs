//! The sharding pass: a single-device graph and a mesh (`tp=4`, `tp=2,dp=2`) become the
//! SPMD graph every device runs, with each value's sharding recorded and the
//! collectives made explicit.
//!
//! The pass walks the graph in order. For each node and each mesh axis a rule
//! ([`rules`]) says which placement it wants its inputs in and which its outputs get;
//! the driver moves inputs there (all-reduce, all-gather, reduce-scatter, all-to-all or
//! a communication-free `all_slice`) and emits the op on local shapes. Graph inputs,
//! weights and constants are laid out on first use, in whatever placement their first
//! consumer wants (Megatron's column- and row-parallel weights fall out of this). Values
//! a user already sharded in the model keep their sharding.
//!
//! Axis roles: `tp` is Megatron tensor parallelism (column/row-parallel projections,
//! heads, vocabulary-parallel embedding, KV-head replication when there are fewer KV
//! heads than devices); `dp` splits the batch (dim 0 of every graph input); `ep` splits
//! the experts of MoE blocks ([`Sharder::ep_dispatch`]); `sp` is Ulysses sequence
//! parallelism (graph inputs split along dim 1, attention all-to-all to heads and back).

mod comm;
mod expert;
mod fused;
mod rules;

use std::collections::{HashMap, HashSet};

use weft_ir::{Graph, Mesh, Node, NodeId, Op, Placement, Shape, Sharding, ValueId};

pub use comm::{CollectiveCost, CommReport, comm_report};
use rules::{Axis, Blocked, In, Plan, Site};

/// Why a graph cannot be sharded as asked.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// A dimension the layout must split does not divide over the mesh axis.
    #[error("node `{node}` ({op}): {what} cannot be split over mesh axis `{axis}` of size {size}")]
    Indivisible {
        node: String,
        op: String,
        what: String,
        axis: String,
        size: u64,
    },
    /// The op has no rule for this layout.
    #[error("node `{node}` ({op}): {reason}")]
    NoRule {
        node: String,
        op: String,
        reason: String,
    },
    /// The input graph does not verify.
    #[error("the graph to shard is invalid: {0}")]
    Invalid(String),
    /// The mesh asks for something the pass does not do.
    #[error("mesh `{mesh}`: {reason}")]
    Mesh { mesh: String, reason: String },
    /// The emitted graph broke an IR rule: a bug in the pass, reported rather than hidden.
    #[error("sharding produced an invalid graph at `{node}`: {reason}")]
    Internal { node: String, reason: String },
}

/// How to shard.
#[derive(Clone, Debug)]
pub struct ShardOptions {
    pub mesh: Mesh,
    /// Megatron-SP: on `tp`, each norm runs on the device's sequence shard between a
    /// reduce-scatter and an all-gather (instead of whole after an all-reduce).
    pub sp_norms: bool,
}

/// The axes this pass has rules for, and what each does.
pub const AXES: &[(&str, &str)] = &[
    (
        "tp",
        "Megatron tensor parallelism: column/row-parallel weights, heads, vocabulary",
    ),
    (
        "dp",
        "data parallelism: graph inputs split along dim 0 (batch)",
    ),
    (
        "ep",
        "expert parallelism: experts split, tokens routed by all-to-all (no capacity limit)",
    ),
    (
        "sp",
        "Ulysses sequence parallelism: graph inputs split along dim 1 (sequence); attention all-to-all to heads and back",
    ),
];

/// An op the sharding computes whole along a mesh axis because a split its rule would
/// make does not divide (heads, a projection's columns, the sequence of a Megatron-SP
/// norm): every device of the axis runs all of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    pub node: String,
    pub op: String,
    pub axis: String,
    /// Devices along `axis`.
    pub axis_size: u64,
    /// The size that does not divide by `axis_size`, and what it measures (`the
    /// weight's output columns`, `dim 2 of `k_heads` (reshape), …`).
    pub extent: u64,
    pub what: String,
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node `{}` ({}) is computed whole on each device of mesh axis `{}`: {} ({}) does not divide by {}",
            self.node, self.op, self.axis, self.extent, self.what, self.axis_size
        )
    }
}

/// What the caller of [`shard_with_warnings`] should be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardWarning {
    /// A mesh axis (of more than one device) along which nothing ended up split, so its
    /// devices all compute the same thing (`ep` on a dense model).
    IdleAxis {
        axis: String,
        mesh: String,
        graph: String,
    },
    /// An op computed whole because a split did not divide.
    Whole(Fallback),
}

impl std::fmt::Display for ShardWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardWarning::IdleAxis { axis, mesh, graph } => write!(
                f,
                "mesh axis `{axis}` of `{mesh}` splits nothing in `{graph}`: its devices all compute the whole graph"
            ),
            ShardWarning::Whole(fallback) => fallback.fmt(f),
        }
    }
}

/// Shards `graph` (single-device) over `options.mesh`; what [`shard_with_warnings`]
/// warns about is logged (`tracing::warn!`).
pub fn shard(graph: &Graph, options: &ShardOptions) -> Result<Graph, ShardError> {
    let (sharded, warnings) = shard_with_warnings(graph, options)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(sharded)
}

/// Shards `graph` (single-device) over `options.mesh`, returning with the graph what the
/// caller should be told, each once: every op computed whole because a split did not
/// divide (in graph order), then each mesh axis (of more than one device) along which
/// nothing ended up split (`ep` on a dense model, `sp` on a model without a sequence dim).
pub fn shard_with_warnings(
    graph: &Graph,
    options: &ShardOptions,
) -> Result<(Graph, Vec<ShardWarning>), ShardError> {
    let (sharded, fallbacks) = shard_graph(graph, options)?;
    let mut warnings: Vec<ShardWarning> = fallbacks.into_iter().map(ShardWarning::Whole).collect();
    warnings.extend(
        idle_axes(&sharded)
            .into_iter()
            .map(|axis| ShardWarning::IdleAxis {
                axis,
                mesh: sharded.mesh.to_string(),
                graph: graph.name.clone(),
            }),
    );
    Ok((sharded, warnings))
}

/// The axes of more than one device along which no value of `sharded` is split or partial.
fn idle_axes(sharded: &Graph) -> Vec<String> {
    sharded
        .mesh
        .axes()
        .iter()
        .filter(|axis| axis.size > 1)
        .filter(|axis| {
            sharded.nodes().all(|(_, node)| {
                node.outputs.iter().all(|&v| {
                    sharded.value(v).sharding.placement(&axis.name) == Placement::Replicate
                })
            })
        })
        .map(|axis| axis.name.clone())
        .collect()
}

fn shard_graph(
    graph: &Graph,
    options: &ShardOptions,
) -> Result<(Graph, Vec<Fallback>), ShardError> {
    let mesh = &options.mesh;
    weft_ir::verify(graph).map_err(|errors| ShardError::Invalid(errors.to_string()))?;
    for axis in mesh.axes() {
        if !AXES.iter().any(|(name, _)| *name == axis.name) {
            return Err(ShardError::Mesh {
                mesh: mesh.to_string(),
                reason: format!(
                    "axis `{}` has no sharding rules (supported: {})",
                    axis.name,
                    AXES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    if !graph.mesh.axes().is_empty() && graph.mesh != *mesh {
        return Err(ShardError::Mesh {
            mesh: mesh.to_string(),
            reason: format!("the model already declares the mesh `{}`", graph.mesh),
        });
    }
    if options.sp_norms && mesh.axis_size("tp").is_none() {
        return Err(ShardError::Mesh {
            mesh: mesh.to_string(),
            reason: "--sp-norms shards norms over `tp`, which the mesh lacks".into(),
        });
    }
    let mut s = Sharder::new(graph, mesh.clone());
    s.sp_norms = options.sp_norms;
    for (id, node) in graph.nodes() {
        s.node(id, node)?;
    }
    let mut outputs = Vec::new();
    for &v in &graph.outputs {
        let mut nv = s.value_of(v)?;
        // A partial result is no answer: outputs are reduced (keeping the output's name);
        // splits are left for the runner to gather.
        let name = s.new.value(nv).name.clone();
        let mut reduced = false;
        for axis in mesh.axes() {
            if let Placement::Partial(_) = s.placement(nv, &axis.name) {
                if !reduced {
                    s.new.value_mut(nv).name = format!("{name}.partial");
                    reduced = true;
                }
                nv = s.convert(nv, &axis.name, Placement::Replicate)?;
            }
        }
        if reduced {
            s.new.value_mut(nv).name = name;
        }
        outputs.push(nv);
    }
    s.new.outputs = outputs;
    // Inputs are emitted where first used; the model's input order is its interface
    // (`--input-dir` feeds inputs by position), so it is restored.
    let new = s.new.with_input_order(&graph.input_names());
    weft_ir::verify(&new).map_err(|errors| ShardError::Internal {
        node: graph.name.clone(),
        reason: errors.to_string(),
    })?;
    Ok((new, s.fallbacks))
}

struct Sharder<'g> {
    old: &'g Graph,
    new: Graph,
    /// Old non-source value → new value.
    map: HashMap<ValueId, ValueId>,
    /// (old source value, sharding) → its laid-out copy.
    sources: HashMap<(ValueId, Sharding), ValueId>,
    /// (new value, axis, wanted placement) → converted value, so a value used twice is
    /// communicated once.
    converted: HashMap<(ValueId, String, Placement), ValueId>,
    /// Logical shape of every new value.
    logical: HashMap<ValueId, Vec<u64>>,
    users: HashMap<ValueId, Vec<NodeId>>,
    /// Nodes already emitted as part of another node's rewrite.
    skip: HashSet<NodeId>,
    /// Rows of the largest embedding table: the vocabulary, split on `tp`.
    vocab_rows: u64,
    sp_norms: bool,
    /// Node names used in the new graph.
    names: HashSet<String>,
    /// The expert-parallel MoE block being rewritten, if any.
    moe: Option<expert::MoeBlock>,
    /// The graph has no mesh: its shardings are requests (hints) on whole values.
    hints: bool,
    /// Each source's first layout (graph inputs are fed once and moved from there).
    first_layout: HashMap<ValueId, ValueId>,
    /// Ops computed whole because a split did not divide, in the order met.
    fallbacks: Vec<Fallback>,
}

/// An argument of an op being emitted: a value of the old graph, or one already placed.
#[derive(Clone, Copy, Debug)]
enum Arg {
    Old(ValueId),
    New(ValueId),
}

impl<'g> Sharder<'g> {
    fn new(old: &'g Graph, mesh: Mesh) -> Sharder<'g> {
        let mut new = Graph::new(old.name.clone());
        new.mesh = mesh;
        new.dims = old.dims.clone();
        new.model_changes = old.model_changes.clone();
        let mut users: HashMap<ValueId, Vec<NodeId>> = HashMap::new();
        let mut vocab_rows = 0;
        for (id, node) in old.nodes() {
            for &v in &node.inputs {
                users.entry(v).or_default().push(id);
            }
            if let Op::Gather { axis: 0 } = node.op {
                let table = old.value(node.inputs[0]);
                if let Some(Ok(rows)) = table.ty.shape.dims().first().map(|d| d.eval(&old.dims)) {
                    vocab_rows = vocab_rows.max(rows);
                }
            }
        }
        Sharder {
            old,
            new,
            map: HashMap::new(),
            sources: HashMap::new(),
            converted: HashMap::new(),
            logical: HashMap::new(),
            users,
            skip: HashSet::new(),
            vocab_rows,
            sp_norms: false,
            names: HashSet::new(),
            moe: None,
            hints: old.mesh.axes().is_empty(),
            first_layout: HashMap::new(),
            fallbacks: Vec::new(),
        }
    }

    fn old_shape(&self, v: ValueId) -> Result<Vec<u64>, ShardError> {
        let value = self.old.value(v);
        let mut shape = value
            .ty
            .shape
            .eval(&self.old.dims)
            .map_err(|e| ShardError::Internal {
                node: value.name.clone(),
                reason: e.to_string(),
            })?;
        // In a graph with a mesh, a value the user sharded is declared by its local shape;
        // without one, shapes are whole and shardings are requests.
        if self.hints {
            return Ok(shape);
        }
        for (axis, p) in value.sharding.entries() {
            if let Placement::Split(d) = p {
                shape[d] *= self.new.mesh.axis_size(axis).unwrap_or(1);
            }
        }
        Ok(shape)
    }

    /// The layout the model asks for `v` (its written sharding), checked against the
    /// mesh: axes the mesh lacks are dropped with a warning, splits must divide, and only
    /// computed values can be partial.
    fn hint(&self, v: ValueId) -> Result<Sharding, ShardError> {
        let value = self.old.value(v);
        if !self.hints || value.sharding.is_replicated() {
            return Ok(value.sharding.clone());
        }
        let node = self.old.node(value.producer);
        let shape = self.old_shape(v)?;
        let mut out = Sharding::replicated();
        for (axis, p) in value.sharding.entries() {
            let Some(size) = self.new.mesh.axis_size(axis) else {
                tracing::warn!(
                    value = %value.name,
                    "the model asks for a layout on mesh axis `{axis}`, which mesh `{}` lacks: ignored",
                    self.new.mesh
                );
                continue;
            };
            match p {
                Placement::Split(d) if d >= shape.len() || shape[d] % size != 0 => {
                    return Err(ShardError::Indivisible {
                        node: node.name.clone(),
                        op: node.op.name().into(),
                        what: format!(
                            "dim {d} of `{}` (a requested split, shape {shape:?})",
                            value.name
                        ),
                        axis: axis.into(),
                        size,
                    });
                }
                Placement::Partial(_) => {
                    return Err(ShardError::NoRule {
                        node: node.name.clone(),
                        op: node.op.name().into(),
                        reason: format!(
                            "`{}` is requested as a partial value; only a split or whole layout can be asked for",
                            value.name
                        ),
                    });
                }
                _ => {}
            }
            out = out.with(axis, p);
        }
        Ok(out)
    }

    fn is_source(&self, v: ValueId) -> bool {
        let node = self.old.node(self.old.value(v).producer);
        matches!(
            node.op,
            Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. }
        )
    }

    fn placement(&self, v: ValueId, axis: &str) -> Placement {
        self.new.value(v).sharding.placement(axis)
    }

    fn value_of(&mut self, v: ValueId) -> Result<ValueId, ShardError> {
        if let Some(&nv) = self.map.get(&v) {
            return Ok(nv);
        }
        // A source nobody laid out yet (an output that is a weight, say): as declared.
        let sharding = self.hint(v)?;
        self.source(v, sharding)
    }

    fn local_shape(
        &self,
        name: &str,
        logical: &[u64],
        sharding: &Sharding,
    ) -> Result<Vec<u64>, ShardError> {
        let mut local = logical.to_vec();
        let mut split_by: HashMap<usize, &str> = HashMap::new();
        for (axis, p) in sharding.entries() {
            if let Placement::Split(d) = p {
                let size = self.new.mesh.axis_size(axis).unwrap_or(1);
                if let Some(other) = split_by.insert(d, axis) {
                    return Err(ShardError::NoRule {
                        node: name.into(),
                        op: "sharding".into(),
                        reason: format!(
                            "dim {d} would be split over both `{other}` and `{axis}`, which this pass does not do"
                        ),
                    });
                }
                if d >= local.len() || local[d] % size != 0 {
                    return Err(ShardError::Internal {
                        node: name.into(),
                        reason: format!("dim {d} of {logical:?} does not divide over `{axis}`"),
                    });
                }
                local[d] /= size;
            }
        }
        Ok(local)
    }

    /// Lays out a graph input, weight or constant with `sharding`.
    fn source(&mut self, v: ValueId, sharding: Sharding) -> Result<ValueId, ShardError> {
        self.source_view(v, sharding, None)
    }

    /// The same, optionally declared with another shape of the same row-major elements
    /// (a view: `[K, 3H]` as `[K, 3, H]`), so a part of the tensor can be split.
    fn source_view(
        &mut self,
        v: ValueId,
        sharding: Sharding,
        view: Option<Vec<u64>>,
    ) -> Result<ValueId, ShardError> {
        let declared = self.hint(v)?;
        let sharding = if declared.is_replicated() {
            sharding
        } else {
            declared
        };
        if view.is_none()
            && let Some(&nv) = self.sources.get(&(v, sharding.clone()))
        {
            return Ok(nv);
        }
        let node = self.old.node(self.old.value(v).producer);
        // A graph input is fed once, by name: another layout of it is communicated from
        // the first.
        if let (Op::Input { .. }, None) = (&node.op, &view)
            && let Some(&first) = self.first_layout.get(&v)
        {
            let mut nv = first;
            let axes: Vec<String> = self
                .new
                .mesh
                .axes()
                .iter()
                .map(|a| a.name.clone())
                .collect();
            for axis in axes {
                nv = self.convert(nv, &axis, sharding.placement(&axis))?;
            }
            self.sources.insert((v, sharding), nv);
            return Ok(nv);
        }
        let name = if view.is_some() {
            format!("{}@view", node.name)
        } else if self.first_layout.contains_key(&v) {
            format!("{}@{sharding}", node.name)
        } else {
            node.name.clone()
        };
        let logical = match view.clone() {
            Some(view) => view,
            None => self.old_shape(v)?,
        };
        let local = Shape::new(self.local_shape(&name, &logical, &sharding)?);
        let op = match &node.op {
            Op::Input { dtype, .. } => Op::Input {
                dtype: *dtype,
                shape: local,
            },
            Op::Weight { dtype, init, .. } => Op::Weight {
                dtype: *dtype,
                shape: local,
                init: init.clone(),
            },
            Op::Constant { dtype, init, .. } => Op::Constant {
                dtype: *dtype,
                shape: local,
                init: init.clone(),
            },
            _ => {
                return Err(ShardError::Internal {
                    node: name,
                    reason: "not a source".into(),
                });
            }
        };
        let nv = self.emit(&name, op, vec![], vec![(sharding.clone(), logical)])?[0];
        if view.is_none() {
            self.sources.insert((v, sharding), nv);
            self.first_layout.entry(v).or_insert(nv);
        }
        Ok(nv)
    }

    /// Adds a node with the given output shardings, checking that the op's inferred
    /// local shapes are the logical shapes cut by those shardings.
    fn emit(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<ValueId>,
        outs: Vec<(Sharding, Vec<u64>)>,
    ) -> Result<Vec<ValueId>, ShardError> {
        // Names stay unique: a second conversion of a value to another place gets a suffix.
        let mut unique = name.to_owned();
        let mut k = 2;
        while !self.names.insert(unique.clone()) {
            unique = format!("{name}.{k}");
            k += 1;
        }
        let name = unique.as_str();
        let id = self
            .new
            .add_node(name, op, inputs)
            .map_err(|e| ShardError::Internal {
                node: name.into(),
                reason: e.to_string(),
            })?;
        let values = self.new.node(id).outputs.clone();
        for (&v, (sharding, logical)) in values.iter().zip(outs) {
            let want = self.local_shape(name, &logical, &sharding)?;
            let got = self.evaluated(v, name)?;
            if got != want {
                return Err(ShardError::Internal {
                    node: name.into(),
                    reason: format!(
                        "local shape {got:?} is not {logical:?} cut by {sharding} ({want:?})"
                    ),
                });
            }
            self.new.value_mut(v).sharding = sharding;
            self.logical.insert(v, logical);
        }
        Ok(values)
    }

    /// The per-device shape of a new value, in numbers.
    fn evaluated(&self, v: ValueId, site: &str) -> Result<Vec<u64>, ShardError> {
        self.new
            .value(v)
            .ty
            .shape
            .eval(&self.new.dims)
            .map_err(|e| ShardError::Internal {
                node: site.into(),
                reason: e.to_string(),
            })
    }

    /// Moves `v` to placement `want` along `axis` with one collective.
    fn convert(&mut self, v: ValueId, axis: &str, want: Placement) -> Result<ValueId, ShardError> {
        use Placement::{Partial, Replicate, Split};
        let have = self.placement(v, axis);
        if have == want {
            return Ok(v);
        }
        let key = (v, axis.to_owned(), want);
        if let Some(&c) = self.converted.get(&key) {
            return Ok(c);
        }
        // Another split of a value whose whole form exists is cut from that form, for free.
        if let (Split(_) | Partial(_), Split(_)) = (have, want)
            && let Some(&whole) = self.converted.get(&(v, axis.to_owned(), Replicate))
        {
            let c = self.convert(whole, axis, want)?;
            self.converted.insert(key, c);
            return Ok(c);
        }
        let axis_s = axis.to_owned();
        let (kind, op) = match (have, want) {
            (Partial(op), Replicate) => ("all_reduce", Op::AllReduce { axis: axis_s, op }),
            (Partial(op), Split(d)) => (
                "reduce_scatter",
                Op::ReduceScatter {
                    axis: axis_s,
                    dim: d as i64,
                    op,
                },
            ),
            (Split(d), Replicate) => (
                "all_gather",
                Op::AllGather {
                    axis: axis_s,
                    dim: d as i64,
                },
            ),
            (Replicate, Split(d)) => (
                "all_slice",
                Op::AllSlice {
                    axis: axis_s,
                    dim: d as i64,
                },
            ),
            (Split(from), Split(to)) => (
                "all_to_all",
                Op::AllToAll {
                    axis: axis_s,
                    split_dim: to as i64,
                    concat_dim: from as i64,
                    payload: weft_ir::A2aPayload::Dense,
                },
            ),
            (_, Partial(_)) => {
                return Err(ShardError::Internal {
                    node: self.new.value(v).name.clone(),
                    reason: "a rule asked for a partial input".into(),
                });
            }
            (Placement::Local, _) | (_, Placement::Local) => {
                return Err(ShardError::Internal {
                    node: self.new.value(v).name.clone(),
                    reason: "a local (per-device) value is no piece of a global tensor, so no collective lays it out".into(),
                });
            }
            (Replicate, Replicate) => return Ok(v),
        };
        let name = format!("{}.{kind}.{axis}", self.new.value(v).name);
        let sharding = self.new.value(v).sharding.clone().with(axis, want);
        let logical = self.logical.get(&v).cloned().unwrap_or_default();
        let c = self.emit(&name, op, vec![v], vec![(sharding, logical)])?[0];
        self.converted.insert(key, c);
        Ok(c)
    }

    /// Whether splitting the last dim of `v` (a matmul result) over `size` devices
    /// survives its consumers: element-wise ops carry it, a reshape must keep the
    /// pieces contiguous (heads that divide). A reshape where the split would land on a
    /// dim that does not divide is told apart ([`Blocked::Indivisible`]), to be reported.
    fn column_survives(&self, v: ValueId, size: u64, depth: usize) -> Result<(), Blocked> {
        let Ok(shape) = self.old_shape(v) else {
            return Err(Blocked::NeedsWhole);
        };
        let last = shape.len().saturating_sub(1);
        for &user in self.users.get(&v).map(Vec::as_slice).unwrap_or(&[]) {
            let node = self.old.node(user);
            let ok = match &node.op {
                Op::Reshape { .. } => {
                    let Ok(out) = self.old_shape(node.outputs[0]) else {
                        return Err(Blocked::NeedsWhole);
                    };
                    match rules::reshape_dim(&shape, &out, last, size) {
                        Ok(_) => true,
                        Err(Some(j)) => {
                            return Err(Blocked::Indivisible(
                                out[j],
                                format!(
                                    "dim {j} of `{}`, a reshape of its {} output columns",
                                    self.old.value(node.outputs[0]).name,
                                    shape[last]
                                ),
                            ));
                        }
                        Err(None) => false,
                    }
                }
                Op::Add
                | Op::Sub
                | Op::Mul
                | Op::Div
                | Op::Silu
                | Op::Gelu { .. }
                | Op::Relu
                | Op::Sigmoid
                | Op::Tanh => {
                    let out = node.outputs[0];
                    if depth < 4
                        && self
                            .old_shape(out)
                            .is_ok_and(|o| o.len() == shape.len() && o[last] == shape[last])
                    {
                        self.column_survives(out, size, depth + 1)?;
                        true
                    } else {
                        false
                    }
                }
                // A row-parallel consumer takes the split as its contraction dim.
                Op::MatMul {
                    transpose_a: false, ..
                } => node.inputs[0] == v,
                Op::ExpertMatMul { .. } => node.inputs[0] == v,
                Op::MoeCombine => node.inputs[0] == v,
                // Softmax, norms, routing and the rest need the whole row.
                _ => false,
            };
            if !ok {
                return Err(Blocked::NeedsWhole);
            }
        }
        Ok(())
    }

    fn node(&mut self, id: NodeId, node: &Node) -> Result<(), ShardError> {
        if self.skip.contains(&id)
            || matches!(
                node.op,
                Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. }
            )
        {
            return Ok(()); // laid out on first use, or already emitted by `unfuse`
        }
        if self.new.mesh.axis_size("ep").is_some_and(|n| n > 1) {
            if let Op::MoeDispatch { num_experts } = node.op {
                return self.ep_dispatch(node, num_experts);
            }
            let in_block = self
                .moe
                .as_ref()
                .is_some_and(|m| node.inputs.iter().any(|v| m.chain.contains_key(v)));
            if in_block {
                return self.ep_block_node(node);
            }
        }
        if self.unfuse(node)? {
            return Ok(());
        }
        let out_shapes: Vec<Vec<u64>> = node
            .outputs
            .iter()
            .map(|&v| self.old_shape(v))
            .collect::<Result<_, _>>()?;
        let args: Vec<Arg> = node.inputs.iter().map(|&v| Arg::Old(v)).collect();
        let survives = node.outputs.first().copied();
        let values = self.apply(
            &node.name,
            &node.op,
            &args,
            out_shapes,
            survives,
            &node.outputs,
        )?;
        for (&old, mut new) in node.outputs.iter().zip(values) {
            // A computed value the model asks to be laid out some way is moved there.
            let hint = self.hint(old)?;
            if self.hints && !hint.is_replicated() {
                let axes: Vec<String> = self
                    .new
                    .mesh
                    .axes()
                    .iter()
                    .map(|a| a.name.clone())
                    .collect();
                for axis in axes {
                    if hint.placement(&axis) != Placement::Replicate {
                        new = self.convert(new, &axis, hint.placement(&axis))?;
                    }
                }
            }
            self.map.insert(old, new);
        }
        Ok(())
    }

    /// Whether an argument already exists reduced to a whole value on `axis`.
    fn has_whole_form(&self, arg: Arg, axis: &str) -> bool {
        let nv = match arg {
            Arg::New(nv) => Some(nv),
            Arg::Old(v) => self.map.get(&v).copied(),
        };
        nv.is_some_and(|nv| {
            self.converted
                .contains_key(&(nv, axis.to_owned(), Placement::Replicate))
        })
    }

    /// The current placement of an argument along `axis`, as a rule sees it.
    fn arg_in(&self, arg: Arg, axis: &str) -> Result<In, ShardError> {
        Ok(match arg {
            Arg::New(nv) => In {
                placement: self.placement(nv, axis),
                shape: self.logical.get(&nv).cloned().unwrap_or_default(),
                free: false,
                float: self.new.value(nv).ty.dtype.is_float(),
            },
            Arg::Old(v) => {
                let shape = self.old_shape(v)?;
                let float = self.old.value(v).ty.dtype.is_float();
                // A graph input is fed once: after its first layout it is no longer free to
                // lay out, and any other placement costs a collective from that one.
                let fed = match self.old.node(self.old.value(v).producer).op {
                    Op::Input { .. } => self.first_layout.get(&v).copied(),
                    _ => None,
                };
                match self.map.get(&v).copied().or(fed) {
                    Some(nv) => In {
                        placement: self.placement(nv, axis),
                        shape,
                        free: false,
                        float,
                    },
                    None => {
                        let hint = self.hint(v)?;
                        In {
                            placement: hint.placement(axis),
                            shape,
                            free: hint.is_replicated(),
                            float,
                        }
                    }
                }
            }
        })
    }

    /// Plans `op` on `args` along every mesh axis, moves the arguments where the plans
    /// want them, and emits the op on local shapes.
    fn apply(
        &mut self,
        name: &str,
        op: &Op,
        args: &[Arg],
        out_shapes: Vec<Vec<u64>>,
        result: Option<ValueId>,
        old_outputs: &[ValueId],
    ) -> Result<Vec<ValueId>, ShardError> {
        let template = Node {
            name: name.to_owned(),
            op: op.clone(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        let mesh = self.new.mesh.clone();
        let mut plans: Vec<(String, Plan)> = Vec::new();
        for axis in mesh.axes() {
            let mut ins: Vec<In> = args
                .iter()
                .map(|&a| self.arg_in(a, &axis.name))
                .collect::<Result<_, _>>()?;
            // Data parallelism: whole graph inputs are split by batch (dim 0) on first use;
            // Ulysses: graph inputs of rank 2 or more by sequence (dim 1).
            let input_dim = match axis.name.as_str() {
                "dp" => Some(0),
                "sp" => Some(1),
                _ => None,
            };
            // A graph input whose dim does not divide is an error, not a whole input: the
            // user asked for the split, and running every device on all of it is no split.
            if let Some(dim) = input_dim.filter(|_| axis.size > 1) {
                for (i, arg) in args.iter().enumerate() {
                    let Arg::Old(v) = arg else { continue };
                    let producer = self.old.node(self.old.value(*v).producer);
                    if !ins[i].free || !matches!(producer.op, Op::Input { .. }) {
                        continue;
                    }
                    match ins[i].shape.get(dim) {
                        Some(&n) if n > 0 && n % axis.size == 0 => {
                            ins[i].placement = Placement::Split(dim);
                            ins[i].free = false;
                        }
                        Some(&n) if n > 0 => {
                            return Err(ShardError::Indivisible {
                                node: producer.name.clone(),
                                op: producer.op.name().into(),
                                what: format!(
                                    "dim {dim} ({}, size {n})",
                                    if dim == 0 { "batch" } else { "sequence" },
                                ),
                                axis: axis.name.clone(),
                                size: axis.size,
                            });
                        }
                        // No such dim (or an empty one): nothing to split on this input.
                        _ => {}
                    }
                }
            }
            let column = |_: u64| match result {
                Some(v) => self.column_survives(v, axis.size, 0),
                None => Err(Blocked::NeedsWhole),
            };
            let site = Site {
                node: &template,
                out_shapes: out_shapes.clone(),
                column_survives: &column,
                vocab_rows: self.vocab_rows,
            };
            let ax = Axis {
                name: &axis.name,
                size: axis.size,
                megatron: axis.name == "tp",
                sp_norms: self.sp_norms && axis.name == "tp",
                ulysses: axis.name == "sp",
            };
            // An axis of one device lays nothing out.
            let mut plan = if axis.size == 1 {
                Plan {
                    inputs: vec![Placement::Replicate; args.len()],
                    outputs: vec![Placement::Replicate; out_shapes.len()],
                    ..Plan::default()
                }
            } else {
                rules::rule(&site, &ins, &ax)?
            };
            if let Some((extent, what)) = plan.unsplit.take() {
                self.fallbacks.push(Fallback {
                    node: name.to_owned(),
                    op: op.name().to_owned(),
                    axis: axis.name.clone(),
                    axis_size: axis.size,
                    extent,
                    what,
                });
            }
            // Megatron's form: a partial sum added to a value whose whole form already
            // exists is reduced first, so the sum is whole and the reduced value is reused
            // (the same number of collectives, and the residual stream stays whole).
            let plan = if matches!(op, Op::Add | Op::Sub)
                && plan.outputs.first() == Some(&Placement::Partial(weft_ir::ReduceOp::Sum))
                && args.iter().any(|&a| self.has_whole_form(a, &axis.name))
            {
                Plan {
                    inputs: vec![Placement::Replicate; args.len()],
                    outputs: vec![Placement::Replicate],
                    ..Plan::default()
                }
            } else {
                plan
            };
            plans.push((axis.name.clone(), plan));
        }
        // Move the inputs where the plans want them.
        let mut inputs = Vec::with_capacity(args.len());
        for (i, &arg) in args.iter().enumerate() {
            let placed = match arg {
                Arg::New(nv) => Some(nv),
                Arg::Old(v) => self.map.get(&v).copied(),
            };
            let nv = match placed {
                Some(mut nv) => {
                    // Reduce partial sums first, then move splits.
                    let mut order: Vec<&(String, Plan)> = plans.iter().collect();
                    order.sort_by_key(|(axis, _)| {
                        !matches!(self.placement(nv, axis), Placement::Partial(_))
                    });
                    for (axis, plan) in order {
                        let want = if plan.repeat_kv.is_some() && (i == 1 || i == 2) {
                            Placement::Replicate
                        } else {
                            plan.inputs[i]
                        };
                        nv = self.convert(nv, axis, want)?;
                    }
                    nv
                }
                None => {
                    let Arg::Old(v) = arg else { unreachable!() };
                    let mut sharding = Sharding::replicated();
                    for (axis, plan) in &plans {
                        sharding = sharding.with(axis.clone(), plan.inputs[i]);
                    }
                    if !self.is_source(v) {
                        return Err(ShardError::Internal {
                            node: name.into(),
                            reason: format!("input {i} was never produced"),
                        });
                    }
                    // A requested layout wins over the rule's; move it where the rule wants.
                    let mut nv = self.source(v, sharding)?;
                    for (axis, plan) in &plans {
                        nv = self.convert(nv, axis, plan.inputs[i])?;
                    }
                    nv
                }
            };
            inputs.push(nv);
        }
        // KV-head replication: repeat each KV head, then each device keeps its own.
        for (axis, plan) in &plans {
            if let Some(r) = plan.repeat_kv {
                for slot in [1, 2] {
                    inputs[slot] = self.repeat_heads(name, inputs[slot], r, axis)?;
                }
            }
        }
        let vocab_axis = plans
            .iter()
            .find(|(_, p)| p.vocab_parallel)
            .map(|(a, _)| a.clone());
        let mut outs = Vec::new();
        for (slot, logical) in out_shapes.iter().enumerate() {
            let mut sharding = Sharding::replicated();
            for (axis, plan) in &plans {
                sharding = sharding.with(axis.clone(), plan.outputs[slot]);
            }
            outs.push((sharding, logical.clone()));
        }
        let op = match vocab_axis {
            Some(axis) => Op::ShardedGather { axis },
            None => self.local_op(name, op, &outs)?,
        };
        let mut values = self.emit(name, op, inputs, outs)?;
        // The old graph's names, before any value is moved on.
        for (&old, &new) in old_outputs.iter().zip(&values) {
            self.new.value_mut(new).name = self.old.value(old).name.clone();
        }
        for (axis, plan) in &plans {
            if let Some(p) = plan.restore {
                values[0] = self.convert(values[0], axis, p)?;
            }
        }
        Ok(values)
    }

    /// The op with its shape attributes made local.
    fn local_op(
        &self,
        name: &str,
        op: &Op,
        outs: &[(Sharding, Vec<u64>)],
    ) -> Result<Op, ShardError> {
        let local = |i: usize| -> Result<Shape, ShardError> {
            Ok(Shape::new(self.local_shape(name, &outs[i].1, &outs[i].0)?))
        };
        Ok(match op {
            Op::Reshape { .. } => Op::Reshape { shape: local(0)? },
            Op::Expand { .. } => Op::Expand { shape: local(0)? },
            other => other.clone(),
        })
    }

    /// `[b, h, t, d]` (whole) → `[b, h·r, t, d]` with each head repeated `r` times in
    /// place, then this device's slice of heads along `axis`.
    fn repeat_heads(
        &mut self,
        name: &str,
        x: ValueId,
        r: u64,
        axis: &str,
    ) -> Result<ValueId, ShardError> {
        let logical = self.logical.get(&x).cloned().unwrap_or_default();
        let sharding = self.new.value(x).sharding.clone();
        let base = self.new.value(x).name.clone();
        let local = self.evaluated(x, name)?;
        let mut wide_local = local.clone();
        wide_local.insert(2, 1);
        let mut wide_logical = logical.clone();
        wide_logical.insert(2, 1);
        let x1 = self.emit(
            &format!("{base}.kv_heads_1"),
            Op::Reshape {
                shape: Shape::new(wide_local.clone()),
            },
            vec![x],
            vec![(sharding.clone(), wide_logical.clone())],
        )?[0];
        wide_local[2] = r;
        wide_logical[2] = r;
        let xr = self.emit(
            &format!("{base}.kv_heads_r"),
            Op::Expand {
                shape: Shape::new(wide_local),
            },
            vec![x1],
            vec![(sharding.clone(), wide_logical)],
        )?[0];
        let mut merged_local = local;
        merged_local[1] *= r;
        let mut merged_logical = logical;
        merged_logical[1] *= r;
        let xm = self.emit(
            &format!("{base}.kv_heads_repeated"),
            Op::Reshape {
                shape: Shape::new(merged_local),
            },
            vec![xr],
            vec![(sharding, merged_logical)],
        )?[0];
        self.convert(xm, axis, Placement::Split(1))
    }
}
