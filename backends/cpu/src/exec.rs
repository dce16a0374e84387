//! The driver: inputs in, one thread per rank, outputs out.

use std::collections::HashMap;
use std::sync::Arc;

use weft_ir::alloc::try_collect;
use weft_ir::{
    DType, Graph, Node, NodeId, Occupancy, Op, ReduceOp, Tensor, TensorData, ValueId, rng,
};

use crate::collective_matmul;
use crate::collectives::{CommError, World};
use crate::error::ExecError;
use crate::kernels::{self, OutType};
use crate::materialize::{assemble, materialize, placement_of, slice_block};
use crate::mesh_coords::RankGrid;
use crate::progress::Phase;
use crate::tokenweave;
use crate::{RunOptions, Tensors};

fn concrete(graph: &Graph, v: ValueId) -> Result<OutType, ExecError> {
    let value = graph.value(v);
    let shape = value
        .ty
        .shape
        .eval(&graph.dims)
        .map_err(|e| ExecError::Config(format!("value `{}`: {e}", value.name)))?;
    // Every buffer's element count fits in 64 bits before anything multiplies it.
    weft_ir::types::dims_product(&shape)
        .map_err(|e| ExecError::Config(format!("value `{}`: {e}", value.name)))?;
    Ok(OutType {
        dtype: value.ty.dtype,
        shape: shape.into_iter().map(|d| d as usize).collect(),
    })
}

/// Runs `graph` on logical inputs and returns its logical outputs, by name, in order.
///
/// The graph runs on as many ranks as its mesh has devices (one without a mesh). Each
/// rank receives its piece of every input (per the input's sharding) and the outputs
/// are reassembled the same way: split pieces concatenated, partial sums reduced,
/// replicated values taken once.
pub fn run(
    graph: &Graph,
    inputs: &Tensors,
    options: &RunOptions,
) -> Result<Vec<(String, Tensor)>, ExecError> {
    Session::new(graph, options)?.run(inputs)
}

/// A graph with its weights and constants materialised on every rank, ready to run
/// many times (benchmarks, serving) without generating or loading them again.
#[derive(Debug)]
pub struct Session<'g> {
    graph: &'g Graph,
    options: RunOptions,
    /// Per rank: the tensor of every weight and constant node.
    weights: Vec<HashMap<NodeId, Arc<Tensor>>>,
}

impl<'g> Session<'g> {
    /// Verifies `graph` and materialises its weights and constants for every rank.
    pub fn new(graph: &'g Graph, options: &RunOptions) -> Result<Session<'g>, ExecError> {
        weft_ir::verify(graph)
            .map_err(|e| ExecError::Config(format!("the graph is invalid: {e}")))?;
        let grid = RankGrid::new(&graph.mesh);
        let mut weights = Vec::with_capacity(grid.ranks());
        let sources = graph
            .nodes()
            .filter(|(_, n)| matches!(n.op, Op::Weight { .. } | Op::Constant { .. }))
            .count() as u64;
        let total = sources * grid.ranks() as u64;
        let mut done = 0u64;
        for rank in 0..grid.ranks() {
            let mut map = HashMap::new();
            for (id, node) in graph.nodes() {
                if let Op::Weight { init, .. } | Op::Constant { init, .. } = &node.op {
                    let v = node.outputs[0];
                    let ty = concrete(graph, v)?;
                    let (logical, offset) =
                        placement_of(&grid, rank, &graph.value(v).sharding, &ty.shape);
                    let t = materialize(
                        init,
                        ty.dtype,
                        &ty.shape,
                        &logical,
                        &offset,
                        &options.base_dir,
                        options.threads,
                    )
                    .map_err(|message| ExecError::Weight {
                        node: node.name.clone(),
                        message,
                    })?;
                    map.insert(id, Arc::new(t));
                    done += 1;
                    if let Some(p) = &options.progress {
                        p.report(Phase::Weights, done, total);
                    }
                }
            }
            weights.push(map);
        }
        Ok(Session {
            graph,
            options: options.clone(),
            weights,
        })
    }

    /// Runs the graph on logical inputs (see [`run`]).
    pub fn run(&self, inputs: &Tensors) -> Result<Vec<(String, Tensor)>, ExecError> {
        let graph = self.graph;
        let options = &self.options;
        let per_rank = split_inputs(graph, inputs)?;
        let programs = vec![graph; per_rank.len()];
        let per_rank_outputs = run_with(&programs, per_rank, options, Some(&self.weights))?;
        assemble_outputs(graph, &per_rank_outputs)
    }
}

/// Each rank's piece of every logical input (per the input's sharding), checked against
/// the graph's declarations.
pub(crate) fn split_inputs(graph: &Graph, inputs: &Tensors) -> Result<Vec<Tensors>, ExecError> {
    let grid = RankGrid::new(&graph.mesh);
    let names: Vec<&str> = graph
        .inputs()
        .map(|v| graph.value(v).name.as_str())
        .collect();
    if let Some(extra) = inputs.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(ExecError::Input {
            name: extra.clone(),
            message: format!(
                "the graph has no such input (its inputs: {})",
                names.join(", ")
            ),
        });
    }
    let mut per_rank: Vec<Tensors> = vec![Tensors::new(); grid.ranks()];
    for v in graph.inputs() {
        let value = graph.value(v);
        let ty = concrete(graph, v)?;
        let given = inputs.get(&value.name).ok_or_else(|| ExecError::Input {
            name: value.name.clone(),
            message: "no value given".into(),
        })?;
        if value
            .sharding
            .entries()
            .any(|(_, p)| matches!(p, weft_ir::Placement::Partial(_)))
        {
            return Err(ExecError::Input {
                name: value.name.clone(),
                message: "an input cannot be a partial sum".into(),
            });
        }
        for (rank, map) in per_rank.iter_mut().enumerate() {
            let (logical, offset) = placement_of(&grid, rank, &value.sharding, &ty.shape);
            if given.dtype() != ty.dtype || given.shape() != logical.as_slice() {
                return Err(ExecError::Input {
                    name: value.name.clone(),
                    message: format!(
                        "expected {}{:?}, got {}{:?}",
                        ty.dtype,
                        logical,
                        given.dtype(),
                        given.shape()
                    ),
                });
            }
            let piece = slice_block(given, &logical, &offset, &ty.shape).map_err(|message| {
                ExecError::Input {
                    name: value.name.clone(),
                    message,
                }
            })?;
            map.insert(value.name.clone(), piece);
        }
    }
    Ok(per_rank)
}

/// The logical outputs from every rank's pieces: split pieces concatenated, partial sums
/// reduced, replicated values taken once.
pub(crate) fn assemble_outputs(
    graph: &Graph,
    per_rank_outputs: &[Vec<Tensor>],
) -> Result<Vec<(String, Tensor)>, ExecError> {
    let grid = RankGrid::new(&graph.mesh);
    graph
        .outputs
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let pieces: Vec<&Tensor> = per_rank_outputs.iter().map(|outs| &outs[i]).collect();
            let value = graph.value(v);
            let whole = assemble(&grid, &value.sharding, &pieces).map_err(|message| {
                ExecError::Config(format!("output `{}`: {message}", value.name))
            })?;
            Ok((value.name.clone(), whole))
        })
        .collect()
}

/// Runs `graph` with each rank's own (local) inputs and returns each rank's outputs.
pub fn run_ranks(
    graph: &Graph,
    per_rank: Vec<Tensors>,
    options: &RunOptions,
) -> Result<Vec<Vec<Tensor>>, ExecError> {
    let programs = vec![graph; per_rank.len().max(1)];
    run_programs(&programs, per_rank, options)
}

/// Runs a different program on each rank (MPMD: pipeline stages, or tests of what
/// happens when peers disagree). All programs share the first one's mesh.
pub fn run_programs(
    programs: &[&Graph],
    per_rank: Vec<Tensors>,
    options: &RunOptions,
) -> Result<Vec<Vec<Tensor>>, ExecError> {
    run_with(programs, per_rank, options, None)
}

type Prepared = HashMap<NodeId, Arc<Tensor>>;

/// Every chunk count given names a fused GEMM + reduce-scatter of the programs and is at
/// least 1: a count for a node that is not one would be silently ignored otherwise.
/// Whether it divides the product is checked where the op runs, with the shapes.
fn check_chunks(programs: &[&Graph], options: &RunOptions) -> Result<(), ExecError> {
    for (name, &chunks) in &options.chunks {
        let node = programs
            .iter()
            .flat_map(|g| g.nodes())
            .find(|(_, n)| &n.name == name);
        match node.map(|(_, n)| &n.op) {
            Some(Op::MatMulReduceScatter { .. }) if chunks >= 1 => {}
            Some(Op::MatMulReduceScatter { .. }) => {
                return Err(ExecError::Config(format!(
                    "node `{name}`: chunk count {chunks}; it must be at least 1"
                )));
            }
            Some(op) => {
                return Err(ExecError::Config(format!(
                    "node `{name}` is a `{}`, not a `matmul_reduce_scatter`: it takes no chunk count",
                    op.name()
                )));
            }
            None => {
                return Err(ExecError::Config(format!(
                    "a chunk count is given for node `{name}`, which the program does not have"
                )));
            }
        }
    }
    Ok(())
}

fn run_with(
    programs: &[&Graph],
    per_rank: Vec<Tensors>,
    options: &RunOptions,
    prepared: Option<&[Prepared]>,
) -> Result<Vec<Vec<Tensor>>, ExecError> {
    let empty = Prepared::new();
    let prepared_for = |rank: usize| prepared.map_or(&empty, |p| &p[rank]);
    let mesh = &programs[0].mesh;
    let grid = RankGrid::new(mesh);
    if per_rank.len() != grid.ranks() || programs.len() != grid.ranks() {
        return Err(ExecError::Config(format!(
            "the mesh ({}) has {} rank(s), but {} program(s) and inputs for {} rank(s) were given",
            if mesh.axes().is_empty() {
                "none".to_owned()
            } else {
                mesh.to_string()
            },
            grid.ranks(),
            programs.len(),
            per_rank.len()
        )));
    }
    if let Some(other) = programs.iter().find(|g| &g.mesh != mesh) {
        return Err(ExecError::Config(format!(
            "program `{}` has mesh {}, but the first has {mesh}",
            other.name, other.mesh
        )));
    }
    check_chunks(programs, options)?;
    let world = World::new(grid.clone(), options.timeout);
    let last_uses: Vec<Vec<usize>> = programs.iter().map(|g| weft_ir::last_uses(g)).collect();
    // Split the machine's threads between the ranks' matrix products.
    let threads = (options.threads / per_rank.len()).max(1);
    let results: Vec<Result<Vec<Tensor>, ExecError>> = if per_rank.len() == 1 {
        vec![run_rank(
            programs[0],
            0,
            &per_rank[0],
            &world,
            &last_uses[0],
            options,
            threads,
            prepared_for(0),
        )]
    } else {
        std::thread::scope(|scope| {
            // A thread per rank, started fallibly: with more ranks than the system lets
            // this process start threads (`--mesh dp=1000000`), `scope.spawn` panicked and
            // the process aborted. The ranks already started are told the run failed, so
            // they stop waiting at their next collective, and the refusal is the error.
            let mut handles = Vec::with_capacity(per_rank.len());
            let mut refused = None;
            for (rank, inputs) in per_rank.iter().enumerate() {
                let (world, last_use, graph) = (&world, &last_uses[rank], programs[rank]);
                let prepared = prepared_for(rank);
                let spawned = std::thread::Builder::new()
                    .name(format!("rank {rank}"))
                    .spawn_scoped(scope, move || {
                        let result = run_rank(
                            graph, rank, inputs, world, last_use, options, threads, prepared,
                        );
                        match &result {
                            Ok(_) => world.finish(rank),
                            Err(e) if !e.is_secondary() => world.fail(rank, e.to_string()),
                            Err(_) => {}
                        }
                        result
                    });
                match spawned {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        let msg = format!(
                            "cannot start a thread for rank {rank} of {}: {e}; simulate fewer \
                             ranks (a smaller mesh)",
                            per_rank.len()
                        );
                        world.fail(rank, msg.clone());
                        refused = Some(ExecError::Config(msg));
                        break;
                    }
                }
            }
            let joined: Vec<Result<Vec<Tensor>, ExecError>> = handles
                .into_iter()
                .enumerate()
                .map(|(rank, h)| {
                    h.join().unwrap_or_else(|_| {
                        Err(ExecError::Config(format!(
                            "rank {rank} panicked (a bug in the executor)"
                        )))
                    })
                })
                .collect();
            match refused {
                Some(e) => vec![Err(e)],
                None => joined,
            }
        })
    };
    // Report the first error that is not just "a peer failed".
    let mut outputs = Vec::with_capacity(results.len());
    let mut secondary = None;
    for r in results {
        match r {
            Ok(o) => outputs.push(o),
            Err(e) if e.is_secondary() => secondary = secondary.or(Some(e)),
            Err(e) => return Err(e),
        }
    }
    match secondary {
        Some(e) => Err(e),
        None => Ok(outputs),
    }
}

/// One rank's evaluation context; the plan executor makes one per task.
pub(crate) struct Rank<'a> {
    graph: &'a Graph,
    rank: usize,
    world: &'a World,
    options: &'a RunOptions,
    threads: usize,
    seq: HashMap<String, u64>,
}

#[allow(clippy::too_many_arguments)]
fn run_rank(
    graph: &Graph,
    rank: usize,
    inputs: &Tensors,
    world: &World,
    last_use: &[usize],
    options: &RunOptions,
    threads: usize,
    prepared: &Prepared,
) -> Result<Vec<Tensor>, ExecError> {
    let mut r = Rank {
        graph,
        rank,
        world,
        options,
        threads,
        seq: HashMap::new(),
    };
    let mut values: Vec<Option<Arc<Tensor>>> = vec![None; graph.values().len()];
    let total = graph.num_nodes() as u64;
    for (id, node) in graph.nodes() {
        let _span =
            tracing::trace_span!("node", rank, name = %node.name, op = node.op.name()).entered();
        let ins: Vec<Arc<Tensor>> = node
            .inputs
            .iter()
            .map(|&v| {
                values[v.index()]
                    .clone()
                    .expect("inputs are computed before use")
            })
            .collect();
        if let Some(t) = prepared.get(&id) {
            values[node.outputs[0].index()] = Some(Arc::clone(t));
        } else {
            let outs = r.eval_node(node, &ins, inputs)?;
            for (&v, t) in node.outputs.iter().zip(outs) {
                values[v.index()] = Some(Arc::new(t));
            }
        }
        // The policy `weft_ir::peak_memory` assumes: a value goes after its last reader,
        // or right after its producer when nothing reads it.
        for &v in node.inputs.iter().chain(&node.outputs) {
            if last_use[v.index()] == id.index() {
                values[v.index()] = None;
            }
        }
        if rank == 0
            && let Some(p) = &options.progress
        {
            p.report(Phase::Execute, id.index() as u64 + 1, total);
        }
    }
    Ok(graph
        .outputs
        .iter()
        .map(|&v| Arc::unwrap_or_clone(values[v.index()].clone().expect("outputs are kept")))
        .collect())
}

impl<'a> Rank<'a> {
    pub(crate) fn new(
        graph: &'a Graph,
        rank: usize,
        world: &'a World,
        options: &'a RunOptions,
        threads: usize,
    ) -> Rank<'a> {
        Rank {
            graph,
            rank,
            world,
            options,
            threads,
            seq: HashMap::new(),
        }
    }

    /// The last sequence number used over `axis`; the next exchange uses the one after.
    /// The plan executor sets it from the plan's collective call before each task.
    pub(crate) fn seq_mut(&mut self, axis: &str) -> &mut u64 {
        self.seq.entry(axis.to_owned()).or_insert(0)
    }
}

impl Rank<'_> {
    fn kernel_err(&self, node: &Node, message: String) -> ExecError {
        ExecError::Kernel {
            rank: self.rank,
            node: node.name.clone(),
            op: node.op.name(),
            message,
        }
    }

    /// How many members `rank`'s group along `axis` has.
    fn group_size(&self, axis: &str) -> usize {
        self.world
            .grid()
            .group(self.rank, axis)
            .map_or(1, |g| g.0.len())
    }

    /// One exchange among `node`'s group per call, each matched across the group by the
    /// axis's next sequence number and a signature naming the node's op and the step.
    fn exchanger<'s>(
        &'s mut self,
        node: &'s Node,
        axis: &'s str,
    ) -> impl FnMut(String, Arc<Tensor>) -> Result<Vec<Arc<Tensor>>, CommError> + 's {
        let head = format!("{}({})", node.op.name(), node.op.attr_text().join(", "));
        let (world, rank) = (self.world, self.rank);
        let seq = self.seq.entry(axis.to_owned()).or_insert(0);
        move |label: String, t: Arc<Tensor>| {
            *seq += 1;
            let signature = format!("{head} {label} on {}{:?}", t.dtype(), t.shape());
            world.exchange(rank, axis, *seq, &node.name, signature, t)
        }
    }

    fn comm_err(&self, node: &Node, axis: &str, e: CommError) -> ExecError {
        match e {
            CommError::Collective(message) => ExecError::Collective {
                rank: self.rank,
                node: node.name.clone(),
                op: node.op.name(),
                axis: axis.to_owned(),
                message,
            },
            CommError::PeerFailed(failed_rank, reason) => ExecError::PeerFailed {
                rank: self.rank,
                failed_rank,
                reason,
            },
        }
    }

    pub(crate) fn eval_node(
        &mut self,
        node: &Node,
        ins: &[Arc<Tensor>],
        inputs: &Tensors,
    ) -> Result<Vec<Tensor>, ExecError> {
        let out: Vec<OutType> = node
            .outputs
            .iter()
            .map(|&v| concrete(self.graph, v))
            .collect::<Result<_, _>>()?;
        match &node.op {
            Op::Input { .. } => {
                let name = &self.graph.value(node.outputs[0]).name;
                let t = inputs.get(name).ok_or_else(|| ExecError::Input {
                    name: name.clone(),
                    message: format!("no value given for rank {}", self.rank),
                })?;
                if t.dtype() != out[0].dtype || t.shape() != out[0].shape.as_slice() {
                    return Err(ExecError::Input {
                        name: name.clone(),
                        message: format!(
                            "rank {} expected {}{:?}, got {}{:?}",
                            self.rank,
                            out[0].dtype,
                            out[0].shape,
                            t.dtype(),
                            t.shape()
                        ),
                    });
                }
                Ok(vec![t.clone()])
            }
            Op::Weight { init, .. } | Op::Constant { init, .. } => {
                let value = self.graph.value(node.outputs[0]);
                let (logical, offset) =
                    placement_of(self.world.grid(), self.rank, &value.sharding, &out[0].shape);
                let t = materialize(
                    init,
                    out[0].dtype,
                    &out[0].shape,
                    &logical,
                    &offset,
                    &self.options.base_dir,
                    self.threads,
                )
                .map_err(|message| ExecError::Weight {
                    node: node.name.clone(),
                    message,
                })?;
                Ok(vec![t])
            }
            // Local ops that only need this device's place along their axis.
            Op::AllSlice { axis, dim } => {
                let (size, me) = self.place(node, axis)?;
                Ok(vec![kernels::layout_chunk(&ins[0], *dim, size, me)])
            }
            Op::ShardedGather { axis } => {
                let (size, me) = self.place(node, axis)?;
                kernels::sharded_gather(&ins[0], &ins[1], me, size, &out[0])
                    .map(|t| vec![t])
                    .map_err(|m| self.kernel_err(node, m))
            }
            // Whether the op talks to its peers is the IR's one answer, `occupancy`.
            op => match op.occupancy() {
                Occupancy::Comm(c) | Occupancy::Both(c) => self.collective(node, c.axis, ins, &out),
                Occupancy::Source | Occupancy::View | Occupancy::Compute => {
                    let refs: Vec<&Tensor> = ins.iter().map(Arc::as_ref).collect();
                    kernels::eval(op, &refs, &out, self.threads)
                        .map_err(|m| self.kernel_err(node, m))
                }
            },
        }
    }

    /// This device's group size and index along `axis`.
    fn place(&self, node: &Node, axis: &str) -> Result<(usize, usize), ExecError> {
        let (group, me) = self.world.grid().group(self.rank, axis).ok_or_else(|| {
            self.comm_err(
                node,
                axis,
                CommError::Collective("unknown mesh axis".into()),
            )
        })?;
        Ok((group.len(), me))
    }

    /// The chunk count `node`'s pipelined kernel runs with: the plan's (through
    /// [`RunOptions::chunks`]), or 1 — the whole GEMM, then its collective.
    fn chunks_of(&self, node: &Node) -> u64 {
        self.options.chunks.get(&node.name).copied().unwrap_or(1)
    }

    /// Runs a communicating op (one whose occupancy has a collective) over `axis`.
    fn collective(
        &mut self,
        node: &Node,
        axis: &str,
        ins: &[Arc<Tensor>],
        out: &[OutType],
    ) -> Result<Vec<Tensor>, ExecError> {
        let axis = axis.to_owned();
        let (_, me) = self.place(node, &axis)?;
        match &node.op {
            Op::Send { shift, .. } => {
                self.world
                    .send(self.rank, &axis, *shift, &node.name, Arc::clone(&ins[0]))
                    .map_err(|e| self.comm_err(node, &axis, e))?;
                return Ok(Vec::new());
            }
            Op::Recv { shift, .. } => {
                let (from_node, t) = self
                    .world
                    .recv(self.rank, &axis, *shift)
                    .map_err(|e| self.comm_err(node, &axis, e))?;
                if t.dtype() != out[0].dtype || t.shape() != out[0].shape.as_slice() {
                    let message = format!(
                        "expected {}{:?}, but the peer's `{from_node}` sent {}{:?}",
                        out[0].dtype,
                        out[0].shape,
                        t.dtype(),
                        t.shape()
                    );
                    return Err(self.comm_err(node, &axis, CommError::Collective(message)));
                }
                return Ok(vec![Arc::unwrap_or_clone(t)]);
            }
            // The fused GEMM + collective ops run as the decomposition they stand for, one
            // exchange per chunk or ring step (collective_matmul.rs).
            Op::MatMulReduceScatter {
                dim, transpose_b, ..
            } => {
                let (size, threads) = (self.group_size(&axis), self.threads);
                let chunks = self.chunks_of(node);
                // The exchanger borrows the rank until the op is done.
                let result = collective_matmul::matmul_reduce_scatter(
                    &ins[0],
                    &ins[1],
                    *dim,
                    chunks,
                    *transpose_b,
                    (me, size),
                    threads,
                    &mut self.exchanger(node, &axis),
                    &reduce_all,
                );
                return result
                    .map(|t| vec![t])
                    .map_err(|e| self.comm_err(node, &axis, e));
            }
            Op::AllGatherMatMul {
                dim, transpose_b, ..
            } => {
                let (size, threads) = (self.group_size(&axis), self.threads);
                // The exchanger borrows the rank until the op is done.
                let result = collective_matmul::all_gather_matmul(
                    &ins[0],
                    &ins[1],
                    *dim,
                    *transpose_b,
                    (me, size),
                    threads,
                    &mut self.exchanger(node, &axis),
                );
                return result
                    .map(|t| vec![t])
                    .map_err(|e| self.comm_err(node, &axis, e));
            }
            Op::ReduceScatterAddNormAllGather { dim, eps, .. } => {
                let (size, threads) = (self.group_size(&axis), self.threads);
                let inputs = [ins[0].as_ref(), ins[1].as_ref(), ins[2].as_ref()];
                // The exchanger borrows the rank until the op is done.
                let result = tokenweave::reduce_scatter_add_norm_all_gather(
                    inputs,
                    *dim,
                    *eps,
                    (me, size),
                    &out[0],
                    threads,
                    &mut self.exchanger(node, &axis),
                    &reduce_all,
                );
                return result.map_err(|e| self.comm_err(node, &axis, e));
            }
            Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Broadcast { .. } => {}
            Op::Input { .. }
            | Op::Weight { .. }
            | Op::Constant { .. }
            | Op::MatMul { .. }
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Pow
            | Op::Neg
            | Op::Exp
            | Op::Sqrt
            | Op::Rsqrt
            | Op::Reciprocal
            | Op::Silu
            | Op::Gelu { .. }
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::Softmax { .. }
            | Op::RmsNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Attention { .. }
            | Op::RopeCache { .. }
            | Op::Rope { .. }
            | Op::Gather { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Cast { .. }
            | Op::Reduce { .. }
            | Op::TopK { .. }
            | Op::Expand { .. }
            | Op::Where
            | Op::IsNan
            | Op::MoeRoute { .. }
            | Op::MoeDispatch { .. }
            | Op::ExpertMatMul { .. }
            | Op::MoePad { .. }
            | Op::MoeUnpad { .. }
            | Op::MoeCombine
            | Op::AllSlice { .. }
            | Op::ShardedGather { .. }
            | Op::FusedElementwise { .. }
            | Op::NormMatMul { .. }
            | Op::MoeRegroup => {
                return Err(self.comm_err(
                    node,
                    &axis,
                    CommError::Collective(format!("`{}` does not communicate", node.op.name())),
                ));
            }
        }
        let input = &ins[0];
        let seq = self.seq.entry(axis.clone()).or_insert(0);
        *seq += 1;
        let signature = format!(
            "{}({}) on {}{:?}",
            node.op.name(),
            node.op.attr_text().join(", "),
            input.dtype(),
            input.shape()
        );
        let all = self
            .world
            .exchange(
                self.rank,
                &axis,
                *seq,
                &node.name,
                signature,
                Arc::clone(input),
            )
            .map_err(|e| self.comm_err(node, &axis, e))?;
        let all: Vec<&Tensor> = all.iter().map(Arc::as_ref).collect();
        let result = match &node.op {
            Op::AllReduce { op, .. } => reduce_all(&all, *op),
            Op::AllGather { dim, .. } => Ok(kernels::layout_concat(&all, *dim, &out[0])),
            Op::ReduceScatter { dim, op, .. } => {
                reduce_all(&all, *op).map(|full| kernels::layout_chunk(&full, *dim, all.len(), me))
            }
            Op::AllToAll {
                split_dim,
                concat_dim,
                ..
            } => {
                let chunks: Vec<Tensor> = all
                    .iter()
                    .map(|t| kernels::layout_chunk(t, *split_dim, all.len(), me))
                    .collect();
                let refs: Vec<&Tensor> = chunks.iter().collect();
                Ok(kernels::layout_concat(&refs, *concat_dim, &out[0]))
            }
            Op::Broadcast { root, .. } => Ok(all[*root as usize].clone()),
            // Handled (and returned) above.
            Op::Send { .. }
            | Op::Recv { .. }
            | Op::MatMulReduceScatter { .. }
            | Op::AllGatherMatMul { .. }
            | Op::ReduceScatterAddNormAllGather { .. }
            | Op::Input { .. }
            | Op::Weight { .. }
            | Op::Constant { .. }
            | Op::MatMul { .. }
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Pow
            | Op::Neg
            | Op::Exp
            | Op::Sqrt
            | Op::Rsqrt
            | Op::Reciprocal
            | Op::Silu
            | Op::Gelu { .. }
            | Op::Relu
            | Op::Sigmoid
            | Op::Tanh
            | Op::Softmax { .. }
            | Op::RmsNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Attention { .. }
            | Op::RopeCache { .. }
            | Op::Rope { .. }
            | Op::Gather { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Cast { .. }
            | Op::Reduce { .. }
            | Op::TopK { .. }
            | Op::Expand { .. }
            | Op::Where
            | Op::IsNan
            | Op::MoeRoute { .. }
            | Op::MoeDispatch { .. }
            | Op::ExpertMatMul { .. }
            | Op::MoePad { .. }
            | Op::MoeUnpad { .. }
            | Op::MoeCombine
            | Op::AllSlice { .. }
            | Op::ShardedGather { .. }
            | Op::FusedElementwise { .. }
            | Op::NormMatMul { .. }
            | Op::MoeRegroup => Err(format!(
                "`{}` is not a whole-tensor collective",
                node.op.name()
            )),
        };
        result
            .map(|t| vec![t])
            .map_err(|m| self.comm_err(node, &axis, CommError::Collective(m)))
    }
}

/// Element-wise reduction of the group's tensors, in group order, rounded once.
fn reduce_all(all: &[&Tensor], op: ReduceOp) -> Result<Tensor, String> {
    let first = all[0];
    match first.data() {
        TensorData::Float(v) => {
            let mut acc = v.clone();
            for t in &all[1..] {
                let x = t.as_f32().ok_or("mixed dtypes")?;
                for (a, &b) in acc.iter_mut().zip(x) {
                    *a = match op {
                        ReduceOp::Sum => *a + b,
                        ReduceOp::Max => kernels::max_nan(*a, b),
                    };
                }
            }
            Tensor::from_f32(first.dtype(), first.shape().to_vec(), acc).map_err(|e| e.to_string())
        }
        TensorData::Int(v) => {
            let mut acc = v.clone();
            for t in &all[1..] {
                let x = t.as_i64().ok_or("mixed dtypes")?;
                for (a, &b) in acc.iter_mut().zip(x) {
                    *a = match op {
                        ReduceOp::Sum => a.wrapping_add(b),
                        ReduceOp::Max => (*a).max(b),
                    };
                }
            }
            if first.dtype() == DType::I32 {
                acc.iter_mut().for_each(|a| *a = *a as i32 as i64);
            }
            Tensor::from_i64(first.dtype(), first.shape().to_vec(), acc).map_err(|e| e.to_string())
        }
        TensorData::Bool(_) => Err("bool values cannot be reduced".into()),
    }
}

/// The dtype and logical (whole) shape of graph input `v`: what a caller passes for it.
pub fn input_type(graph: &Graph, v: ValueId) -> Result<(DType, Vec<usize>), ExecError> {
    let grid = RankGrid::new(&graph.mesh);
    let ty = concrete(graph, v)?;
    let (logical, _) = placement_of(&grid, 0, &graph.value(v).sharding, &ty.shape);
    Ok((ty.dtype, logical))
}

/// A seeded random logical value for graph input `v`: floats are standard normal; integer
/// inputs that index a `gather` are uniform over the valid indices, other integers
/// uniform in `0..10`; bools are fair coin flips. Each input draws from its own stream
/// (`seed` mixed with the input's position), so adding an input never changes the others.
/// The buffer is allocated fallibly: a size the system refuses is an error.
pub fn random_input(graph: &Graph, v: ValueId, seed: u64) -> Result<Tensor, ExecError> {
    let value = graph.value(v);
    let (dtype, logical) = input_type(graph, v)?;
    let position = graph.inputs().position(|i| i == v).unwrap_or(0) as u64;
    let stream = rng::mix(seed ^ rng::mix(position + 1));
    let n: usize = logical.iter().product();
    let bound = index_bound(graph, v).unwrap_or(10).max(1);
    let alloc = |e: weft_ir::AllocError| weft_ir::TensorError::from(e);
    let t = match dtype {
        d if d.is_float() => Tensor::from_f64(
            d,
            logical,
            (0..n as u64).map(|i| rng::normal(stream, i, 0.0, 1.0)),
        ),
        DType::Bool => try_collect((0..n as u64).map(|i| rng::bits(stream, i) & 1 == 1))
            .map_err(alloc)
            .and_then(|data| Tensor::from_bool(logical, data)),
        d => try_collect((0..n as u64).map(|i| (rng::bits(stream, i) % bound) as i64))
            .map_err(alloc)
            .and_then(|data| Tensor::from_i64(d, logical, data)),
    };
    t.map_err(|e| ExecError::Input {
        name: value.name.clone(),
        message: e.to_string(),
    })
}

/// The size of the dimension `v` indexes, when `v` feeds a `gather` as its indices.
fn index_bound(graph: &Graph, v: ValueId) -> Option<u64> {
    graph
        .nodes()
        .filter_map(|(_, n)| match n.op {
            Op::Gather { axis } if n.inputs.get(1) == Some(&v) => {
                let data = &graph.value(n.inputs[0]).ty.shape;
                let a = kernels::axis(axis, data.rank());
                data.dims()[a].eval(&graph.dims).ok()
            }
            // A row-split table's indices are global: the whole table's rows.
            Op::ShardedGather { ref axis } if n.inputs.get(1) == Some(&v) => {
                let rows = graph.value(n.inputs[0]).ty.shape.dims().first()?;
                let pieces = graph.mesh.axis_size(axis)?;
                rows.eval(&graph.dims).ok().map(|r| r * pieces)
            }
            _ => None,
        })
        .min()
}
