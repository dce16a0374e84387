//! Kernels: one function per op family, computing in f32 and rounding results to the
//! output dtype. Shapes were checked by the verifier; kernels still check what only
//! run-time data can break (index ranges, division by zero) and report it.

mod attention;
mod elementwise;
mod layout;
mod matmul;
mod moe;
mod moe_regroup;
mod norm;
mod norm_matmul;

use weft_ir::{DType, Op, Tensor, TensorData};

pub use elementwise::broadcast_to;
pub use layout::{chunk as layout_chunk, concat as layout_concat, sharded_gather};

/// A kernel's failure, as a message; the executor adds rank and node.
pub type KResult<T> = Result<T, String>;

/// The type each output must have.
#[derive(Clone, Debug)]
pub struct OutType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

/// Evaluates a compute op (not a source or collective).
pub fn eval(op: &Op, inputs: &[&Tensor], out: &[OutType], threads: usize) -> KResult<Vec<Tensor>> {
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => one(matmul::matmul(
            inputs[0],
            inputs[1],
            *transpose_a,
            *transpose_b,
            &out[0],
            threads,
        )?),
        Op::ExpertMatMul { transpose_b, .. } => one(matmul::expert_matmul(
            inputs[0],
            inputs[1],
            inputs[2],
            *transpose_b,
            &out[0],
            threads,
        )?),
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Pow => {
            one(elementwise::binary(op, inputs[0], inputs[1], &out[0])?)
        }
        Op::Neg
        | Op::Exp
        | Op::Sqrt
        | Op::Rsqrt
        | Op::Reciprocal
        | Op::Silu
        | Op::Gelu { .. }
        | Op::Relu
        | Op::Sigmoid
        | Op::Tanh => one(elementwise::unary(op, inputs[0], &out[0])?),
        Op::Cast { .. } => one(elementwise::cast(inputs[0], &out[0])?),
        Op::Expand { .. } => one(elementwise::expand(inputs[0], &out[0])?),
        Op::Where => one(elementwise::select(
            inputs[0], inputs[1], inputs[2], &out[0],
        )?),
        Op::IsNan => one(Tensor::from_bool(
            out[0].shape.clone(),
            floats(inputs[0])?.iter().map(|x| x.is_nan()).collect(),
        )
        .map_err(|e| e.to_string())?),
        Op::Softmax { axis } => one(norm::softmax(inputs[0], *axis, &out[0])?),
        Op::RmsNorm { eps } => one(norm::rms_norm(inputs[0], inputs[1], *eps, &out[0])?),
        Op::LayerNorm { eps } => one(norm::layer_norm(
            inputs[0],
            inputs[1],
            inputs.get(2).copied(),
            *eps,
            &out[0],
        )?),
        Op::RopeCache { theta, dim } => norm::rope_cache(inputs[0], *theta, *dim, out),
        Op::Rope { interleaved } => one(norm::rope(
            inputs[0],
            inputs[1],
            inputs[2],
            *interleaved,
            &out[0],
        )?),
        Op::Attention { causal, scale } => {
            one(attention::attention(inputs, *causal, *scale, &out[0])?)
        }
        Op::Gather { axis } => one(layout::gather(inputs[0], inputs[1], *axis, &out[0])?),
        Op::Reshape { .. } => one(inputs[0]
            .clone()
            .reshaped(out[0].shape.clone())
            .map_err(|e| e.to_string())?),
        Op::Transpose { perm } => one(layout::transpose(inputs[0], perm, &out[0])),
        Op::Concat { axis } => one(layout::concat(inputs, *axis, &out[0])),
        Op::Split { axis, .. } => Ok(layout::split(inputs[0], *axis, out)),
        Op::Slice { axis, start, .. } => one(layout::slice(inputs[0], *axis, *start, &out[0])),
        Op::Reduce { kind, axes, .. } => one(layout::reduce(inputs[0], *kind, axes, &out[0])?),
        Op::TopK { axis, largest, .. } => layout::top_k(inputs[0], *axis, *largest, out),
        Op::MoeRoute { top_k, normalize } => {
            moe::route(inputs[0], *top_k as usize, *normalize, out)
        }
        Op::MoeDispatch { num_experts } => {
            moe::dispatch(inputs[0], inputs[1], *num_experts as usize, out)
        }
        Op::MoeRegroup => one(moe_regroup::regroup(inputs[0], &inputs[1..], &out[0])?),
        Op::MoeCombine => one(moe::combine(inputs[0], inputs[1], inputs[2], &out[0])?),
        Op::MoePad { groups } => one(moe::pad(inputs[0], inputs[1], *groups as usize, &out[0])?),
        Op::MoeUnpad { groups, .. } => {
            one(moe::unpad(inputs[0], inputs[1], *groups as usize, &out[0])?)
        }
        Op::Input { .. }
        | Op::Weight { .. }
        | Op::Constant { .. }
        | Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Send { .. }
        | Op::Recv { .. }
        | Op::Broadcast { .. }
        | Op::AllSlice { .. }
        | Op::ShardedGather { .. }
        | Op::MatMulReduceScatter { .. }
        | Op::AllGatherMatMul { .. }
        | Op::ReduceScatterAddNormAllGather { .. } => {
            Err(format!("`{}` is not a compute kernel", op.name()))
        }
        Op::FusedElementwise { steps } => one(fused(steps, inputs, threads)?),
        Op::NormMatMul {
            norm,
            eps,
            transpose_b,
        } => one(norm_matmul::norm_matmul(
            *norm,
            *eps,
            *transpose_b,
            inputs,
            threads,
        )?),
    }
}

/// The larger of two floats, NaN if either is NaN (the first NaN met is kept). Max
/// reductions and `max` collectives use it, as torch's `max`/`amax` do: `f32::max` returns
/// the other operand, so one rank's (or one element's) NaN would vanish from the result.
pub fn max_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() {
        a
    } else if b.is_nan() {
        b
    } else {
        a.max(b)
    }
}

/// The f32 values of a float tensor.
pub fn floats(t: &Tensor) -> KResult<&[f32]> {
    t.as_f32()
        .ok_or_else(|| format!("expected a float tensor, got {}", t.dtype()))
}

/// The values of an integer tensor.
pub fn ints(t: &Tensor) -> KResult<&[i64]> {
    t.as_i64()
        .ok_or_else(|| format!("expected an integer tensor, got {}", t.dtype()))
}

/// A float result, rounded to its dtype.
pub fn float_out(out: &OutType, data: Vec<f32>) -> KResult<Tensor> {
    Tensor::from_f32(out.dtype, out.shape.clone(), data).map_err(|e| e.to_string())
}

/// A result of any kind, in the representation `like` has.
pub fn same_kind(
    out: &OutType,
    like: &TensorData,
    floats: Vec<f32>,
    ints: Vec<i64>,
    bools: Vec<bool>,
) -> KResult<Tensor> {
    match like {
        TensorData::Float(_) => float_out(out, floats),
        TensorData::Int(_) => {
            Tensor::from_i64(out.dtype, out.shape.clone(), ints).map_err(|e| e.to_string())
        }
        TensorData::Bool(_) => {
            Tensor::from_bool(out.shape.clone(), bools).map_err(|e| e.to_string())
        }
    }
}

/// Walks `shape` in row-major order and returns, for each position, the sum of its
/// coordinates times `steps`: the source index of a strided view (a transpose, a
/// broadcast with zero steps).
pub fn strided_indices(shape: &[usize], steps: &[usize]) -> Vec<usize> {
    let total: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    let mut flat = 0usize;
    let mut out = Vec::with_capacity(total);
    for n in 0..total {
        if n > 0 {
            for d in (0..shape.len()).rev() {
                idx[d] += 1;
                flat += steps[d];
                if idx[d] < shape[d] {
                    break;
                }
                flat -= steps[d] * idx[d];
                idx[d] = 0;
            }
        }
        out.push(flat);
    }
    out
}

/// Normalises a possibly negative axis (already validated by the verifier).
pub fn axis(a: i64, rank: usize) -> usize {
    if a < 0 {
        (a + rank as i64) as usize
    } else {
        a as usize
    }
}

/// `(outer, len, inner)` sizes around dimension `d`.
pub fn around(shape: &[usize], d: usize) -> (usize, usize, usize) {
    let outer = shape[..d].iter().product();
    let inner = shape[d + 1..].iter().product();
    (outer, shape[d], inner)
}

/// The output type `op` gives these tensors, by the IR's typing rules.
pub fn type_of_op(op: &Op, inputs: &[&Tensor]) -> KResult<OutType> {
    use weft_ir::{Shape, TensorType};
    let types: Vec<TensorType> = inputs
        .iter()
        .map(|t| TensorType::new(t.dtype(), Shape::new(t.shape().iter().map(|&d| d as u64))))
        .collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    let (mesh, dims) = (weft_ir::Mesh::default(), weft_ir::DimBindings::default());
    let cx = weft_ir::infer::InferCtx {
        mesh: &mesh,
        dims: &dims,
    };
    let t = weft_ir::infer::infer(op, &refs, &cx)
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("the op has no output")?;
    Ok(OutType {
        dtype: t.dtype,
        shape: t
            .shape
            .dims()
            .iter()
            .map(|d| d.eval(&dims).unwrap_or(0) as usize)
            .collect(),
    })
}

/// A fused element-wise chain: each step by its op's own kernel, in order, rounded after
/// each step as the separate ops would be (so fusing never changes a result).
fn fused(steps: &[weft_ir::FusedStep], inputs: &[&Tensor], threads: usize) -> KResult<Tensor> {
    use weft_ir::FusedStep;
    let mut running = inputs[0].clone();
    for step in steps {
        let (op, args): (Op, Vec<&Tensor>) = match step {
            FusedStep::Matmul {
                operand,
                transpose_b,
            } => (
                Op::MatMul {
                    transpose_a: false,
                    transpose_b: *transpose_b,
                },
                vec![&running, inputs[*operand]],
            ),
            FusedStep::Binary { op, operand, swap } => {
                let args = if *swap {
                    vec![inputs[*operand], &running]
                } else {
                    vec![&running, inputs[*operand]]
                };
                ((**op).clone(), args)
            }
            FusedStep::Unary { op } => ((**op).clone(), vec![&running]),
        };
        let out = [type_of_op(&op, &args)?];
        running = eval(&op, &args, &out, threads)?
            .pop()
            .ok_or("a fused step produced nothing")?;
    }
    Ok(running)
}
