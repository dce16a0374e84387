//! Shape and dtype inference: the typing rule of every op.
//!
//! [`infer`] is the single place that decides whether an op's inputs are acceptable and
//! what it produces. Graph construction calls it, and the verifier calls it again to
//! catch graphs edited after construction.

use crate::mesh::Mesh;
use crate::op::{Arity, FusedStep, Init, Op, OpClass, ReduceKind};
use crate::types::{DType, Dim, DimBindings, Shape, TensorType};
use crate::verify::Rule;

/// What inference needs besides the inputs: the mesh (for collectives) and the
/// bindings of symbolic dimensions.
#[derive(Clone, Copy, Debug)]
pub struct InferCtx<'a> {
    pub mesh: &'a Mesh,
    pub dims: &'a DimBindings,
}

type Result<T> = std::result::Result<T, Rule>;

/// The output types of `op` applied to inputs of types `inputs`.
pub fn infer(op: &Op, inputs: &[&TensorType], cx: &InferCtx<'_>) -> Result<Vec<TensorType>> {
    let arity = op.arity();
    if !arity.accepts(inputs.len()) {
        return Err(Rule::Arity {
            expected: arity,
            got: inputs.len(),
        });
    }
    let one = |t: TensorType| Ok(vec![t]);
    match op {
        Op::Input { dtype, shape } => {
            check_shape_bound(shape, cx)?;
            one(TensorType::new(*dtype, shape.clone()))
        }
        Op::Weight { dtype, shape, init } | Op::Constant { dtype, shape, init } => {
            check_shape_bound(shape, cx)?;
            check_init(*dtype, shape, init, cx)?;
            one(TensorType::new(*dtype, shape.clone()))
        }
        Op::Recv {
            axis, dtype, shape, ..
        } => {
            axis_size(axis, cx)?;
            check_shape_bound(shape, cx)?;
            one(TensorType::new(*dtype, shape.clone()))
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => matmul(inputs[0], inputs[1], *transpose_a, *transpose_b, cx).map(|t| vec![t]),
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            same_dtype(inputs, "operands")?;
            numeric(inputs[0], "operands")?;
            one(TensorType::new(
                inputs[0].dtype,
                broadcast(&inputs[0].shape, &inputs[1].shape, cx)?,
            ))
        }
        Op::Pow => {
            same_dtype(inputs, "operands")?;
            float(inputs[0], "operands")?;
            one(TensorType::new(
                inputs[0].dtype,
                broadcast(&inputs[0].shape, &inputs[1].shape, cx)?,
            ))
        }
        Op::Neg => {
            numeric(inputs[0], "input")?;
            one(inputs[0].clone())
        }
        Op::Exp
        | Op::Sqrt
        | Op::Rsqrt
        | Op::Reciprocal
        | Op::Silu
        | Op::Gelu { .. }
        | Op::Relu
        | Op::Sigmoid
        | Op::Tanh => {
            float(inputs[0], "input")?;
            one(inputs[0].clone())
        }
        Op::Softmax { axis } => {
            float(inputs[0], "input")?;
            norm_axis(*axis, inputs[0].shape.rank(), "axis")?;
            one(inputs[0].clone())
        }
        Op::RmsNorm { eps } | Op::LayerNorm { eps } => {
            if !(eps.is_finite() && *eps >= 0.0) {
                return Err(Rule::Attr(format!(
                    "eps must be finite and non-negative, got {eps}"
                )));
            }
            same_dtype(inputs, "input, weight and bias")?;
            float(inputs[0], "input")?;
            let x = &inputs[0].shape;
            let last = x.dims().last().ok_or_else(|| {
                Rule::Shape("normalisation needs an input of rank at least 1".into())
            })?;
            for (i, param) in inputs.iter().enumerate().skip(1) {
                let what = if i == 1 { "weight" } else { "bias" };
                if param.shape.rank() != 1 || !param.shape.dims()[0].same(last, cx.dims) {
                    return Err(Rule::Shape(format!(
                        "{what} must have shape [{last}] (the input's last dim), got {}",
                        param.shape
                    )));
                }
            }
            one(inputs[0].clone())
        }
        Op::Attention { scale, .. } => attention(inputs, *scale, cx).map(|t| vec![t]),
        Op::RopeCache { theta, dim } => {
            if !(theta.is_finite() && *theta > 0.0) {
                return Err(Rule::Attr(format!("theta must be positive, got {theta}")));
            }
            if *dim == 0 || dim % 2 != 0 {
                return Err(Rule::Attr(format!(
                    "dim must be even and positive, got {dim}"
                )));
            }
            int(inputs[0], "positions")?;
            let mut shape = inputs[0].shape.clone();
            shape.0.push(Dim::Fixed(dim / 2));
            let t = TensorType::new(DType::F32, shape);
            Ok(vec![t.clone(), t])
        }
        Op::Rope { .. } => rope(inputs, cx).map(|t| vec![t]),
        Op::Gather { axis } => {
            int(inputs[1], "indices")?;
            let data = &inputs[0].shape;
            let a = norm_axis(*axis, data.rank(), "axis")?;
            let mut dims = data.dims()[..a].to_vec();
            dims.extend_from_slice(inputs[1].shape.dims());
            dims.extend_from_slice(&data.dims()[a + 1..]);
            one(TensorType::new(inputs[0].dtype, Shape(dims)))
        }
        Op::Reshape { shape } => {
            check_shape_bound(shape, cx)?;
            let from = inputs[0].shape.numel(cx.dims).map_err(Rule::Dim)?;
            let to = shape.numel(cx.dims).map_err(Rule::Dim)?;
            if from != to {
                return Err(Rule::Shape(format!(
                    "reshape from {} ({from} elements) to {shape} ({to} elements) changes the element count",
                    inputs[0].shape
                )));
            }
            one(TensorType::new(inputs[0].dtype, shape.clone()))
        }
        Op::Transpose { perm } => {
            let rank = inputs[0].shape.rank();
            let mut seen = vec![false; rank];
            let valid = perm.len() == rank
                && perm
                    .iter()
                    .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
            if !valid {
                return Err(Rule::Attr(format!(
                    "perm {perm:?} is not a permutation of 0..{rank}"
                )));
            }
            let dims = perm
                .iter()
                .map(|&p| inputs[0].shape.dims()[p].clone())
                .collect();
            one(TensorType::new(inputs[0].dtype, Shape(dims)))
        }
        Op::Concat { axis } => concat(inputs, *axis, cx).map(|t| vec![t]),
        Op::Split { axis, sizes } => {
            let x = inputs[0];
            let a = norm_axis(*axis, x.shape.rank(), "axis")?;
            let len = x.shape.dims()[a].eval(cx.dims).map_err(Rule::Dim)?;
            let total: u64 = sizes.iter().sum();
            if sizes.is_empty() || sizes.contains(&0) || total != len {
                return Err(Rule::Attr(format!(
                    "sizes {sizes:?} must be positive and sum to dim {a} ({len})"
                )));
            }
            Ok(sizes
                .iter()
                .map(|&s| with_dim(x, a, Dim::Fixed(s)))
                .collect())
        }
        Op::Slice { axis, start, end } => {
            let x = inputs[0];
            let a = norm_axis(*axis, x.shape.rank(), "axis")?;
            let len = x.shape.dims()[a].eval(cx.dims).map_err(Rule::Dim)?;
            let (lo, hi) = (clamp_index(*start, len), clamp_index(*end, len));
            if lo >= hi {
                return Err(Rule::Attr(format!(
                    "slice {start}..{end} of a dim of size {len} is empty"
                )));
            }
            one(with_dim(x, a, Dim::Fixed(hi - lo)))
        }
        Op::Cast { to } => one(TensorType::new(*to, inputs[0].shape.clone())),
        Op::Reduce {
            kind,
            axes,
            keepdims,
        } => {
            let x = inputs[0];
            match kind {
                ReduceKind::Mean => float(x, "input")?,
                ReduceKind::Sum | ReduceKind::Max => numeric(x, "input")?,
            }
            let rank = x.shape.rank();
            let mut reduced = vec![false; rank];
            for &axis in axes {
                let a = norm_axis(axis, rank, "axes")?;
                if std::mem::replace(&mut reduced[a], true) {
                    return Err(Rule::Attr(format!("axes {axes:?} names dim {a} twice")));
                }
            }
            if axes.is_empty() {
                return Err(Rule::Attr("axes must name at least one dim".into()));
            }
            let dims = x
                .shape
                .dims()
                .iter()
                .zip(&reduced)
                .filter_map(|(d, &r)| match (r, keepdims) {
                    (false, _) => Some(d.clone()),
                    (true, true) => Some(Dim::Fixed(1)),
                    (true, false) => None,
                })
                .collect();
            one(TensorType::new(x.dtype, Shape(dims)))
        }
        Op::TopK { k, axis, .. } => {
            let x = inputs[0];
            numeric(x, "input")?;
            let a = norm_axis(*axis, x.shape.rank(), "axis")?;
            let len = x.shape.dims()[a].eval(cx.dims).map_err(Rule::Dim)?;
            if *k == 0 || *k > len {
                return Err(Rule::Attr(format!(
                    "k = {k} must be in 1..={len} (dim {a})"
                )));
            }
            let values = with_dim(x, a, Dim::Fixed(*k));
            let indices = TensorType::new(DType::I64, values.shape.clone());
            Ok(vec![values, indices])
        }
        Op::Expand { shape } => {
            check_shape_bound(shape, cx)?;
            one(TensorType::new(
                inputs[0].dtype,
                broadcast(&inputs[0].shape, shape, cx)?,
            ))
        }
        Op::Where => {
            if inputs[0].dtype != DType::Bool {
                return Err(Rule::DType(format!(
                    "condition must be bool, got {}",
                    inputs[0].dtype
                )));
            }
            same_dtype(&inputs[1..], "the two branches")?;
            let shape = broadcast(&inputs[0].shape, &inputs[1].shape, cx)?;
            one(TensorType::new(
                inputs[1].dtype,
                broadcast(&shape, &inputs[2].shape, cx)?,
            ))
        }
        Op::IsNan => {
            float(inputs[0], "input")?;
            one(TensorType::new(DType::Bool, inputs[0].shape.clone()))
        }
        Op::MoeRoute { top_k, .. } => {
            let logits = inputs[0];
            float(logits, "router logits")?;
            let [_, experts] = rank_n::<2>(logits, "router logits [tokens, experts]")?;
            let e = experts.eval(cx.dims).map_err(Rule::Dim)?;
            if *top_k == 0 || *top_k > e {
                return Err(Rule::Attr(format!("top_k = {top_k} must be in 1..={e}")));
            }
            let weights = with_dim(logits, 1, Dim::Fixed(*top_k));
            let ids = TensorType::new(DType::I64, weights.shape.clone());
            Ok(vec![weights, ids])
        }
        Op::MoeDispatch { num_experts } => {
            let (x, ids) = (inputs[0], inputs[1]);
            float(x, "tokens")?;
            int(ids, "expert ids")?;
            let [tokens, hidden] = rank_n::<2>(x, "tokens [T, H]")?;
            let [t2, k] = rank_n::<2>(ids, "expert ids [T, k]")?;
            same_dim(&tokens, &t2, "token counts of tokens and expert ids", cx)?;
            if *num_experts == 0 {
                return Err(Rule::Attr("num_experts must be at least 1".into()));
            }
            let k = k.eval(cx.dims).map_err(Rule::Dim)?;
            let sorted = TensorType::new(x.dtype, Shape(vec![tokens.mul(k), hidden]));
            let counts = TensorType::new(DType::I64, Shape(vec![Dim::Fixed(*num_experts)]));
            Ok(vec![sorted, counts])
        }
        Op::ExpertMatMul { transpose_b, rows } => {
            let (x, counts, w) = (inputs[0], inputs[1], inputs[2]);
            expert_rows(*rows, counts, w, cx)?;
            float(x, "rows")?;
            int(counts, "expert counts")?;
            same_dtype(&[x, w], "rows and expert weights")?;
            let [rows, k] = rank_n::<2>(x, "rows [N, K]")?;
            let e = match counts.shape.rank() {
                1 => rank_n::<1>(counts, "expert counts [E]")?[0].clone(),
                _ => {
                    let [blocks, e] = rank_n::<2>(counts, "blocked expert counts [B, E]")?;
                    let (n, b) = (rows.eval(cx.dims), blocks.eval(cx.dims));
                    if let (Ok(n), Ok(b)) = (n, b)
                        && (b == 0 || n % b != 0)
                    {
                        return Err(Rule::Shape(format!(
                            "{n} rows do not split into {b} equal blocks"
                        )));
                    }
                    e
                }
            };
            let [e2, wk, wm] = rank_n::<3>(w, "expert weights [E, K, M]")?;
            let (wk, wm) = if *transpose_b { (wm, wk) } else { (wk, wm) };
            same_dim(&e, &e2, "expert counts and weights' expert dim", cx)?;
            same_dim(&k, &wk, "rows' K and weights' K", cx)?;
            one(TensorType::new(x.dtype, Shape(vec![rows, wm])))
        }
        Op::MoePad { groups } => {
            let (x, counts) = (inputs[0], inputs[1]);
            int(counts, "expert counts")?;
            let [n, h] = rank_n::<2>(x, "rows [N, H]")?;
            let [e] = rank_n::<1>(counts, "expert counts [E]")?;
            if *groups == 0 || e.eval(cx.dims).is_ok_and(|e| e % groups != 0) {
                return Err(Rule::Attr(format!(
                    "{groups} groups do not divide the {e} experts"
                )));
            }
            one(TensorType::new(
                x.dtype,
                Shape(vec![Dim::Fixed(*groups), n, h]),
            ))
        }
        Op::MoeRegroup => {
            let (counts, parts) = (inputs[0], &inputs[1..]);
            int(counts, "blocked expert counts")?;
            let [blocks, experts] = rank_n::<2>(counts, "blocked expert counts [B, E]")?;
            let first = parts[0];
            float(first, "group results")?;
            let [rows, _] = rank_n::<2>(first, "group results [B·N, M]")?;
            for (g, p) in parts.iter().enumerate() {
                if p.dtype != first.dtype || !p.shape.same(&first.shape, cx.dims) {
                    return Err(Rule::Shape(format!(
                        "group result {g} is {}{}, group 0's {}{}: every group's result has one type",
                        p.dtype, p.shape, first.dtype, first.shape
                    )));
                }
            }
            let groups = parts.len() as u64;
            if let (Ok(e), Ok(b), Ok(n)) = (
                experts.eval(cx.dims),
                blocks.eval(cx.dims),
                rows.eval(cx.dims),
            ) {
                if e % groups != 0 {
                    return Err(Rule::Attr(format!(
                        "{groups} group results do not divide the {e} experts"
                    )));
                }
                if b == 0 || n % b != 0 {
                    return Err(Rule::Shape(format!(
                        "{n} rows do not split into {b} equal blocks"
                    )));
                }
            }
            one(first.clone())
        }
        Op::MoeUnpad { groups, rows } => {
            let (x, counts) = (inputs[0], inputs[1]);
            int(counts, "expert counts")?;
            let [g, _, h] = rank_n::<3>(x, "blocks [G, N', H]")?;
            let [e] = rank_n::<1>(counts, "expert counts [E]")?;
            same_dim(&g, &Dim::Fixed(*groups), "blocks and groups", cx)?;
            if *groups == 0 || e.eval(cx.dims).is_ok_and(|e| e % groups != 0) {
                return Err(Rule::Attr(format!(
                    "{groups} groups do not divide the {e} experts"
                )));
            }
            one(TensorType::new(x.dtype, Shape(vec![Dim::Fixed(*rows), h])))
        }
        Op::MoeCombine => {
            let (y, w, ids) = (inputs[0], inputs[1], inputs[2]);
            float(y, "expert outputs")?;
            float(w, "routing weights")?;
            int(ids, "expert ids")?;
            let [n, hidden] = rank_n::<2>(y, "expert outputs [T*k, H]")?;
            let [t, k] = rank_n::<2>(w, "routing weights [T, k]")?;
            let [t2, k2] = rank_n::<2>(ids, "expert ids [T, k]")?;
            same_dim(&t, &t2, "routing weights and expert ids", cx)?;
            same_dim(&k, &k2, "routing weights and expert ids", cx)?;
            let k = k.eval(cx.dims).map_err(Rule::Dim)?;
            same_dim(&n, &t.mul(k), "expert outputs' rows and T*k", cx)?;
            one(TensorType::new(y.dtype, Shape(vec![t, hidden])))
        }
        Op::AllReduce { axis, .. } | Op::Broadcast { axis, .. } => {
            let size = axis_size(axis, cx)?;
            if let Op::Broadcast { root, .. } = op
                && *root >= size
            {
                return Err(Rule::Attr(format!(
                    "root {root} is not a device of mesh axis `{axis}` (size {size})"
                )));
            }
            numeric(inputs[0], "input")?;
            one(inputs[0].clone())
        }
        Op::AllGather { axis, dim } => {
            let size = axis_size(axis, cx)?;
            let x = inputs[0];
            let a = norm_axis(*dim, x.shape.rank(), "dim")?;
            one(with_dim(x, a, x.shape.dims()[a].mul(size)))
        }
        Op::ReduceScatter { axis, dim, .. } => {
            let size = axis_size(axis, cx)?;
            let x = inputs[0];
            numeric(x, "input")?;
            let a = norm_axis(*dim, x.shape.rank(), "dim")?;
            one(with_dim(x, a, divide(&x.shape.dims()[a], size, axis, cx)?))
        }
        Op::AllToAll {
            axis,
            split_dim,
            concat_dim,
            payload,
        } => {
            let size = axis_size(axis, cx)?;
            if let crate::op::A2aPayload::ExpertBlocks { groups: 0 } = payload {
                return Err(Rule::Attr(
                    "payload expert_blocks needs at least one group".into(),
                ));
            }
            let x = inputs[0];
            let s = norm_axis(*split_dim, x.shape.rank(), "split_dim")?;
            let c = norm_axis(*concat_dim, x.shape.rank(), "concat_dim")?;
            let split = with_dim(x, s, divide(&x.shape.dims()[s], size, axis, cx)?);
            let concat_len = split.shape.dims()[c].mul(size);
            one(with_dim(&split, c, concat_len))
        }
        Op::Send { axis, .. } => {
            axis_size(axis, cx)?;
            Ok(Vec::new())
        }
        Op::AllSlice { axis, dim } => {
            let size = axis_size(axis, cx)?;
            let x = inputs[0];
            let a = norm_axis(*dim, x.shape.rank(), "dim")?;
            one(with_dim(x, a, divide(&x.shape.dims()[a], size, axis, cx)?))
        }
        Op::FusedElementwise { steps } => {
            if steps.is_empty() {
                return Err(Rule::Attr("a fused kernel needs at least one step".into()));
            }
            let mut running = inputs[0].clone();
            for (k, step) in steps.iter().enumerate() {
                let operand = |i: usize| {
                    inputs.get(i).copied().ok_or_else(|| {
                        Rule::Attr(format!(
                            "step {k} reads input {i}, but there are {} inputs",
                            inputs.len()
                        ))
                    })
                };
                running = match step {
                    FusedStep::Matmul {
                        operand: i,
                        transpose_b,
                    } => {
                        if k != 0 {
                            return Err(Rule::Attr(format!(
                                "step {k}: a GEMM can only be the first step"
                            )));
                        }
                        matmul(&running, operand(*i)?, false, *transpose_b, cx)?
                    }
                    FusedStep::Binary {
                        op,
                        operand: i,
                        swap,
                    } => {
                        if !matches!(**op, Op::Add | Op::Sub | Op::Mul | Op::Div) {
                            return Err(Rule::Attr(format!(
                                "step {k}: `{}` is not a binary element-wise op",
                                op.name()
                            )));
                        }
                        let other = operand(*i)?;
                        let pair = if *swap {
                            [other, &running]
                        } else {
                            [&running, other]
                        };
                        infer(op, &pair, cx)?.remove(0)
                    }
                    FusedStep::Unary { op } => {
                        if op.arity() != Arity::Exactly(1)
                            || !matches!(op.class(), OpClass::Elementwise)
                            || matches!(**op, Op::Softmax { .. } | Op::Reduce { .. })
                        {
                            return Err(Rule::Attr(format!(
                                "step {k}: `{}` is not a unary element-wise op",
                                op.name()
                            )));
                        }
                        infer(op, &[&running], cx)?.remove(0)
                    }
                };
            }
            one(running)
        }
        Op::MatMulReduceScatter {
            axis,
            dim,
            transpose_b,
        } => {
            // The chunk count the kernel pipelines with is the plan's, not the op's: the
            // value is the same for every count, so only the scatter must divide.
            let size = axis_size(axis, cx)?;
            let y = matmul(inputs[0], inputs[1], false, *transpose_b, cx)?;
            let a = norm_axis(*dim, y.shape.rank(), "dim")?;
            one(with_dim(&y, a, divide(&y.shape.dims()[a], size, axis, cx)?))
        }
        Op::ReduceScatterAddNormAllGather { axis, dim, eps } => {
            tokenweave(inputs, axis, *dim, *eps, cx)
        }
        Op::AllGatherMatMul {
            axis,
            dim,
            transpose_b,
        } => {
            let size = axis_size(axis, cx)?;
            let x = inputs[0];
            let a = norm_axis(*dim, x.shape.rank(), "dim")?;
            if a + 1 >= x.shape.rank() {
                return Err(Rule::Attr(format!(
                    "dim {dim} is the contraction dim of a [.., m, k]; gather a row dim"
                )));
            }
            let gathered = with_dim(x, a, x.shape.dims()[a].mul(size));
            one(matmul(&gathered, inputs[1], false, *transpose_b, cx)?)
        }
        Op::NormMatMul {
            norm,
            eps,
            transpose_b,
        } => {
            // Inputs `x, b, weight[, bias]`: the norm's typing rule on `x` and its
            // parameters, then the GEMM's on the normed rows.
            let params = &inputs[2..];
            if params.len() > norm.max_params() {
                return Err(Rule::Attr(format!(
                    "a {norm} prologue takes {} parameter input(s) after x and b, got {}",
                    norm.max_params(),
                    params.len()
                )));
            }
            let mut norm_in = vec![inputs[0]];
            norm_in.extend_from_slice(params);
            let normed = infer(&norm.op(*eps), &norm_in, cx)?.remove(0);
            one(matmul(&normed, inputs[1], false, *transpose_b, cx)?)
        }
        Op::ShardedGather { axis } => {
            axis_size(axis, cx)?;
            int(inputs[1], "indices")?;
            numeric(inputs[0], "table")?;
            let data = &inputs[0].shape;
            if data.rank() == 0 {
                return Err(Rule::Shape("the table must have rank at least 1".into()));
            }
            let mut dims = inputs[1].shape.dims().to_vec();
            dims.extend_from_slice(&data.dims()[1..]);
            one(TensorType::new(inputs[0].dtype, Shape(dims)))
        }
    }
}

fn check_shape_bound(shape: &Shape, cx: &InferCtx<'_>) -> Result<()> {
    shape.eval(cx.dims).map(|_| ()).map_err(Rule::Dim)
}

fn check_init(dtype: DType, shape: &Shape, init: &Init, cx: &InferCtx<'_>) -> Result<()> {
    let numel = shape.numel(cx.dims).map_err(Rule::Dim)?;
    let finite = |name: &str, x: f64| {
        if x.is_finite() {
            Ok(())
        } else {
            Err(Rule::Init(format!("{name} must be finite, got {x}")))
        }
    };
    match init {
        Init::Normal { mean, std, .. } => {
            finite("mean", *mean)?;
            finite("std", *std)?;
            if *std <= 0.0 {
                return Err(Rule::Init(format!("std must be positive, got {std}")));
            }
        }
        Init::Uniform { low, high, .. } => {
            finite("low", *low)?;
            finite("high", *high)?;
            if low >= high {
                return Err(Rule::Init(format!(
                    "low ({low}) must be below high ({high})"
                )));
            }
        }
        // Fill and inline values may be infinite or NaN (masks are -inf where a key is
        // hidden); an integer or bool dtype refuses them below, as values it cannot hold.
        Init::Fill { .. } => {}
        Init::Range { start, step } => {
            finite("start", *start)?;
            finite("step", *step)?;
        }
        // The count is checked by the verifier, which knows the value's sharding: inline
        // values describe the whole (logical) tensor, of which a rank holds a piece.
        Init::Inline(_) => {}
        Init::Npy { path } | Init::Safetensors { path, .. } | Init::Raw { path, .. } => {
            if path.is_empty() {
                return Err(Rule::Init("external weight path is empty".into()));
            }
        }
    }
    // Values an integer or bool tensor cannot hold exactly are refused, not rounded.
    let exact = |v: f64| match dtype {
        DType::Bool => v == 0.0 || v == 1.0,
        DType::I32 => v.fract() == 0.0 && v.abs() <= i32::MAX as f64,
        DType::I64 => v.fract() == 0.0 && v.abs() <= 9_007_199_254_740_992.0,
        _ => true,
    };
    // `shown` is the value as the user would write it (a range's end is computed exactly
    // for the message: `v` itself is rounded past 2^53).
    let holds_shown = |what: &str, v: f64, shown: String| {
        if exact(v) {
            Ok(())
        } else if dtype == DType::I64 && v.fract() == 0.0 {
            // An i64 holds it, but initialiser values are f64: past 2^53 they are rounded.
            Err(Rule::Init(format!(
                "{what} {shown} is past 2^53 = 9007199254740992, beyond which initialiser \
                 values (kept as f64) are not exact integers"
            )))
        } else {
            Err(Rule::Init(format!(
                "{what} {shown} cannot be held exactly by {dtype}"
            )))
        }
    };
    let holds = |what: &str, v: f64| holds_shown(what, v, v.to_string());
    match init {
        Init::Fill { value } => holds("fill value", *value)?,
        Init::Range { start, step } if dtype == DType::Bool => {
            return Err(Rule::Init(format!(
                "a range of bools makes no sense (start {start}, step {step}); use fill or inline"
            )));
        }
        Init::Range { start, step } => {
            holds("range start", *start)?;
            holds("range step", *step)?;
            let last = *start + *step * numel.saturating_sub(1) as f64;
            // Start and step are exact integers here (or the dtype is a float, which holds
            // any end): the exact end, for the message.
            let shown = if start.fract() == 0.0 && step.fract() == 0.0 {
                (*start as i128 + *step as i128 * i128::from(numel.saturating_sub(1))).to_string()
            } else {
                last.to_string()
            };
            holds_shown("range end", last, shown)?;
        }
        Init::Inline(values) => {
            if let Some(bad) = values.iter().find(|v| !exact(**v)) {
                holds("inline value", *bad)?;
            }
        }
        _ => {}
    }
    if matches!(init, Init::Normal { .. } | Init::Uniform { .. }) && !dtype.is_float() {
        return Err(Rule::Init(format!(
            "random initialisers need a float dtype, not {dtype}; use range, fill or inline"
        )));
    }
    Ok(())
}

/// An expert matmul's row mark: only padded blocks (blocked counts `[B, E]`) have rows
/// that carry no token, a group count is at least one, and Comet's expert groups divide
/// the weights' experts.
fn expert_rows(
    rows: crate::op::ExpertRows,
    counts: &TensorType,
    w: &TensorType,
    cx: &InferCtx<'_>,
) -> Result<()> {
    use crate::op::ExpertRows as R;
    let (groups, expert_groups) = match rows {
        R::Dense => return Ok(()),
        R::ExpertBlocks { groups } => (groups, 1),
        R::OneExpertGroup {
            groups,
            expert_groups,
        } => (groups, expert_groups),
    };
    if counts.shape.rank() != 2 {
        return Err(Rule::Attr(format!(
            "rows {rows}: only blocked expert counts [B, E] mark padded rows"
        )));
    }
    if groups == 0 || expert_groups == 0 {
        return Err(Rule::Attr(format!("rows {rows}: needs at least one group")));
    }
    let experts = w.shape.0.first().map(|d| d.eval(cx.dims));
    if let Some(Ok(e)) = experts
        && e % expert_groups != 0
    {
        return Err(Rule::Attr(format!(
            "rows {rows}: {e} experts do not split into {expert_groups} equal groups"
        )));
    }
    Ok(())
}
fn axis_size(axis: &str, cx: &InferCtx<'_>) -> Result<u64> {
    cx.mesh.axis_size(axis).ok_or_else(|| {
        Rule::Mesh(format!(
            "mesh axis `{axis}` is not in the graph's mesh ({})",
            if cx.mesh.axes().is_empty() {
                "the graph has no mesh".to_owned()
            } else {
                format!("axes: {}", cx.mesh.axis_names().join(", "))
            }
        ))
    })
}

fn divide(d: &Dim, size: u64, axis: &str, cx: &InferCtx<'_>) -> Result<Dim> {
    d.div_exact(size, cx.dims).ok_or_else(|| {
        Rule::Shape(format!(
            "dim {d} does not divide evenly over mesh axis `{axis}` of size {size}"
        ))
    })
}

/// Normalises a possibly negative axis.
pub fn norm_axis(axis: i64, rank: usize, what: &str) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(Rule::Attr(format!(
            "{what} {axis} is out of range for a tensor of rank {rank}"
        )))
    }
}

fn clamp_index(i: i64, len: u64) -> u64 {
    let len_i = len as i64;
    let i = if i < 0 { i + len_i } else { i };
    i.clamp(0, len_i) as u64
}

/// `reduce_scatter_add_norm_all_gather`: typed as the decomposition it stands for — the
/// reduce-scatter's piece, the residual shard of that same type added to it, the norm of
/// the sum (weight `[h]`), gathered back — so it accepts exactly what the ops would.
fn tokenweave(
    inputs: &[&TensorType],
    axis: &str,
    dim: i64,
    eps: f64,
    cx: &InferCtx<'_>,
) -> Result<Vec<TensorType>> {
    let size = axis_size(axis, cx)?;
    let x = inputs[0];
    let rank = x.shape.rank();
    let d = norm_axis(dim, rank, "dim")?;
    if d + 1 >= rank {
        return Err(Rule::Attr(format!(
            "dim {dim} is the normalised (last) dim; scatter a token dim"
        )));
    }
    let piece = with_dim(x, d, divide(&x.shape.dims()[d], size, axis, cx)?);
    if !inputs[1].same(&piece, cx.dims) {
        return Err(Rule::Shape(format!(
            "the residual shard must be {}{} (the reduce-scatter's piece), got {}{}",
            piece.dtype, piece.shape, inputs[1].dtype, inputs[1].shape
        )));
    }
    let normed = infer(&Op::RmsNorm { eps }, &[&piece, inputs[2]], cx)?.remove(0);
    Ok(vec![with_dim(&normed, d, x.shape.dims()[d].clone()), piece])
}

fn with_dim(t: &TensorType, axis: usize, d: Dim) -> TensorType {
    let mut shape = t.shape.clone();
    shape.0[axis] = d;
    TensorType::new(t.dtype, shape)
}

fn rank_n<const N: usize>(t: &TensorType, what: &str) -> Result<[Dim; N]> {
    <[Dim; N]>::try_from(t.shape.dims().to_vec())
        .map_err(|_| Rule::Shape(format!("{what} must have rank {N}, got {}", t.shape)))
}

fn same_dim(a: &Dim, b: &Dim, what: &str, cx: &InferCtx<'_>) -> Result<()> {
    if a.same(b, cx.dims) {
        Ok(())
    } else {
        Err(Rule::Shape(format!("{what} differ: {a} vs {b}")))
    }
}

fn same_dtype(inputs: &[&TensorType], what: &str) -> Result<()> {
    match inputs.iter().find(|t| t.dtype != inputs[0].dtype) {
        Some(t) => Err(Rule::DType(format!(
            "{what} must share one dtype, got {} and {}",
            inputs[0].dtype, t.dtype
        ))),
        None => Ok(()),
    }
}

fn float(t: &TensorType, what: &str) -> Result<()> {
    if t.dtype.is_float() {
        Ok(())
    } else {
        Err(Rule::DType(format!(
            "{what} must be floating point, got {}",
            t.dtype
        )))
    }
}

fn numeric(t: &TensorType, what: &str) -> Result<()> {
    if t.dtype == DType::Bool {
        Err(Rule::DType(format!("{what} must be numeric, got bool")))
    } else {
        Ok(())
    }
}

fn int(t: &TensorType, what: &str) -> Result<()> {
    if t.dtype.is_int() {
        Ok(())
    } else {
        Err(Rule::DType(format!(
            "{what} must be an integer type (i64 or i32), got {}",
            t.dtype
        )))
    }
}

/// NumPy broadcasting of two shapes.
pub fn broadcast(a: &Shape, b: &Shape, cx: &InferCtx<'_>) -> Result<Shape> {
    let rank = a.rank().max(b.rank());
    let pad = |s: &Shape, i: usize| {
        let offset = rank - s.rank();
        if i < offset {
            Dim::Fixed(1)
        } else {
            s.dims()[i - offset].clone()
        }
    };
    let mut dims = Vec::with_capacity(rank);
    for i in 0..rank {
        let (x, y) = (pad(a, i), pad(b, i));
        dims.push(if x.same(&y, cx.dims) || y.is_one(cx.dims) {
            x
        } else if x.is_one(cx.dims) {
            y
        } else {
            return Err(Rule::Shape(format!(
                "shapes {a} and {b} do not broadcast (dim {x} vs {y})"
            )));
        });
    }
    Ok(Shape(dims))
}

fn matmul(
    a: &TensorType,
    b: &TensorType,
    ta: bool,
    tb: bool,
    cx: &InferCtx<'_>,
) -> Result<TensorType> {
    same_dtype(&[a, b], "matmul operands")?;
    float(a, "matmul operands")?;
    if a.shape.rank() < 2 || b.shape.rank() < 2 {
        return Err(Rule::Shape(format!(
            "matmul operands need rank at least 2, got {} and {}",
            a.shape, b.shape
        )));
    }
    let last2 = |s: &Shape, t: bool| {
        let d = s.dims();
        let (r, c) = (d[d.len() - 2].clone(), d[d.len() - 1].clone());
        if t { (c, r) } else { (r, c) }
    };
    let (m, k) = last2(&a.shape, ta);
    let (k2, n) = last2(&b.shape, tb);
    if !k.same(&k2, cx.dims) {
        return Err(Rule::Shape(format!(
            "matmul inner dims differ: {} x {} contracts {k} with {k2}",
            a.shape, b.shape
        )));
    }
    let batch_a = Shape(a.shape.dims()[..a.shape.rank() - 2].to_vec());
    let batch_b = Shape(b.shape.dims()[..b.shape.rank() - 2].to_vec());
    let mut dims = broadcast(&batch_a, &batch_b, cx)?.0;
    dims.push(m);
    dims.push(n);
    Ok(TensorType::new(a.dtype, Shape(dims)))
}

fn attention(inputs: &[&TensorType], scale: Option<f64>, cx: &InferCtx<'_>) -> Result<TensorType> {
    if let Some(s) = scale
        && !(s.is_finite() && s > 0.0)
    {
        return Err(Rule::Attr(format!("scale must be positive, got {s}")));
    }
    let (q, k, v) = (inputs[0], inputs[1], inputs[2]);
    same_dtype(&[q, k, v], "q, k and v")?;
    float(q, "q, k and v")?;
    let [b, hq, s, d] = rank_n::<4>(q, "q [batch, heads, seq, head_dim]")?;
    let [bk, hkv, t, dk] = rank_n::<4>(k, "k [batch, kv_heads, kv_seq, head_dim]")?;
    let [bv, hv, tv, dv] = rank_n::<4>(v, "v [batch, kv_heads, kv_seq, v_dim]")?;
    same_dim(&b, &bk, "batch of q and k", cx)?;
    same_dim(&b, &bv, "batch of q and v", cx)?;
    same_dim(&d, &dk, "head_dim of q and k", cx)?;
    same_dim(&hkv, &hv, "kv heads of k and v", cx)?;
    same_dim(&t, &tv, "kv_seq of k and v", cx)?;
    let (nq, nkv) = (
        hq.eval(cx.dims).map_err(Rule::Dim)?,
        hkv.eval(cx.dims).map_err(Rule::Dim)?,
    );
    if nkv == 0 || nq % nkv != 0 {
        return Err(Rule::Shape(format!(
            "query heads ({nq}) must be a multiple of kv heads ({nkv})"
        )));
    }
    if let Some(mask) = inputs.get(3) {
        if mask.dtype != DType::Bool && mask.dtype != q.dtype {
            return Err(Rule::DType(format!(
                "mask must be bool or {} (additive), got {}",
                q.dtype, mask.dtype
            )));
        }
        let scores = Shape(vec![b.clone(), hq.clone(), s.clone(), t.clone()]);
        let joined = broadcast(&scores, &mask.shape, cx)?;
        if joined.rank() != 4
            || !joined
                .dims()
                .iter()
                .zip(scores.dims())
                .all(|(x, y)| x.same(y, cx.dims))
        {
            return Err(Rule::Shape(format!(
                "mask {} must broadcast to the scores' shape {scores}",
                mask.shape
            )));
        }
    }
    Ok(TensorType::new(q.dtype, Shape(vec![b, hq, s, dv])))
}

fn rope(inputs: &[&TensorType], cx: &InferCtx<'_>) -> Result<TensorType> {
    let (x, cos, sin) = (inputs[0], inputs[1], inputs[2]);
    float(x, "input")?;
    float(cos, "cos table")?;
    same_dtype(&[cos, sin], "cos and sin tables")?;
    if cos.shape != sin.shape {
        return Err(Rule::Shape(format!(
            "cos {} and sin {} must have the same shape",
            cos.shape, sin.shape
        )));
    }
    let last = x
        .shape
        .dims()
        .last()
        .ok_or_else(|| Rule::Shape("rope needs an input of rank at least 1".into()))?;
    let d = last.eval(cx.dims).map_err(Rule::Dim)?;
    if d % 2 != 0 {
        return Err(Rule::Shape(format!("rope needs an even last dim, got {d}")));
    }
    let mut half = x.shape.clone();
    *half.0.last_mut().expect("rank checked above") = Dim::Fixed(d / 2);
    let joined = broadcast(&half, &cos.shape, cx)?;
    if joined.rank() != half.rank()
        || !joined
            .dims()
            .iter()
            .zip(half.dims())
            .all(|(a, b)| a.same(b, cx.dims))
    {
        return Err(Rule::Shape(format!(
            "cos/sin tables {} must broadcast to {half} (the input with its last dim halved)",
            cos.shape
        )));
    }
    Ok(x.clone())
}

fn concat(inputs: &[&TensorType], axis: i64, cx: &InferCtx<'_>) -> Result<TensorType> {
    same_dtype(inputs, "concat inputs")?;
    let first = inputs[0];
    let a = norm_axis(axis, first.shape.rank(), "axis")?;
    let mut total = 0u64;
    for t in inputs {
        let compatible = t.shape.rank() == first.shape.rank()
            && t.shape
                .dims()
                .iter()
                .zip(first.shape.dims())
                .enumerate()
                .all(|(i, (x, y))| i == a || x.same(y, cx.dims));
        if !compatible {
            return Err(Rule::Shape(format!(
                "concat inputs {} and {} differ outside axis {a}",
                first.shape, t.shape
            )));
        }
        total += t.shape.dims()[a].eval(cx.dims).map_err(Rule::Dim)?;
    }
    let joined = if inputs.len() == 1 {
        first.shape.dims()[a].clone()
    } else {
        Dim::Fixed(total)
    };
    Ok(with_dim(first, a, joined))
}
