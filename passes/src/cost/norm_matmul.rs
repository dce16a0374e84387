//! The cost of a norm fused into its GEMM's prologue (`norm_matmul`).
//!
//! The unfused pair is a memory-bound norm (read `x` and its weight, write the normed
//! tensor `y`) and then a GEMM that reads `y` as its A operand. The fused kernel reads
//! `x` as its A operand instead (the same bytes as `y`), and before that reads every row
//! of `x` once more for the row statistics (the mean square, or mean and variance), plus
//! the norm's weight and bias. So it is this GEMM with `x` and the parameters added to its
//! HBM traffic; what disappears is the normed tensor's write and read back, and one
//! kernel launch (FlashNorm, Graef et al., arXiv 2407.09577, §1: the norm/linear pair as
//! one operation). ASSUMPTION: the statistics are computed once per row, not once per
//! output tile; a kernel recomputing them per tile (a GEMV with one row per block) is
//! slower than the unfused pair, and this model does not price that kernel.

use super::{CostError, CostModel, OpCost, Operands};

impl CostModel {
    /// `norm_matmul(x, b, weight[, bias])`, `b` transposed with `transpose_b`.
    pub(super) fn norm_matmul(
        &self,
        cx: &Operands<'_>,
        transpose_b: bool,
    ) -> Result<OpCost, CostError> {
        let a = cx.shape_in(0)?;
        let b = cx.shape_in(1)?;
        let out = cx.shape_out(0)?;
        let (m, k) = cx.last_two(&a, false)?;
        let (kb, n) = cx.last_two(&b, transpose_b)?;
        if k != kb {
            return Err(cx.bad(format!("contraction lengths differ: {k} and {kb}")));
        }
        let g = cx.gemm_shape(&out, (m, n, k), b.len(), false)?;
        // The statistics pass over x, and the weight (and bias) the prologue reads.
        let mut extra = cx.bytes(cx.input(0)?)?;
        for i in 2..cx.inputs.len() {
            extra += cx.bytes(cx.input(i)?)?;
        }
        self.gemm_cost(cx, g, cx.dtype_in(0)?, extra)
    }
}

#[cfg(test)]
mod tests {
    use weft_hardware::Profile;
    use weft_ir::{DType, DimBindings, Mesh, NormKind, Op, Shape, TensorType};

    use super::super::CostModel;

    fn t(dtype: DType, dims: &[u64]) -> TensorType {
        TensorType::new(dtype, Shape::new(dims.iter().copied()))
    }

    fn us(m: &CostModel, op: &Op, ins: &[TensorType], out: &TensorType) -> f64 {
        let i: Vec<&TensorType> = ins.iter().collect();
        m.op_cost(op, &i, &[out], &DimBindings::new())
            .unwrap_or_else(|e| panic!("{}: {e}", op.name()))
            .time_us
    }

    /// The fused kernel against the pair it replaces, decode-sized (memory-bound) to
    /// prefill-sized (compute-bound), RMS and layer norms, on every built-in profile.
    #[test]
    fn the_prologue_saves_the_round_trip_but_not_the_statistics() {
        for profile in ["h100-sxm-8", "a100-sxm-8"] {
            let m = CostModel::new(
                &Profile::builtin(profile).unwrap(),
                &Mesh::new([("tp", 1)]).unwrap(),
            )
            .unwrap();
            for (rows, k, n) in [
                (8u64, 8192u64, 1024u64),
                (4096, 8192, 1024),
                (16384, 4096, 14336),
            ] {
                for norm in [NormKind::RmsNorm, NormKind::LayerNorm] {
                    let b = DType::Bf16;
                    let (x, w, y) = (t(b, &[rows, k]), t(b, &[k, n]), t(b, &[rows, n]));
                    let mut params = vec![t(b, &[k])];
                    if norm == NormKind::LayerNorm {
                        params.push(t(b, &[k]));
                    }
                    let mut norm_ins = vec![x.clone()];
                    norm_ins.extend(params.iter().cloned());
                    let pair = us(&m, &norm.op(1e-5), &norm_ins, &x)
                        + us(
                            &m,
                            &Op::MatMul {
                                transpose_a: false,
                                transpose_b: false,
                            },
                            &[x.clone(), w.clone()],
                            &y,
                        );
                    let gemm = us(
                        &m,
                        &Op::MatMul {
                            transpose_a: false,
                            transpose_b: false,
                        },
                        &[x.clone(), w.clone()],
                        &y,
                    );
                    let mut ins = vec![x.clone(), w.clone()];
                    ins.extend(params);
                    let fused = us(
                        &m,
                        &Op::NormMatMul {
                            norm,
                            eps: 1e-5,
                            transpose_b: false,
                        },
                        &ins,
                        &y,
                    );
                    let what = format!("{profile} {norm} {rows}x{k}x{n}");
                    assert!(fused < pair, "{what}: fused {fused} µs, pair {pair} µs");
                    assert!(
                        fused >= gemm,
                        "{what}: fused {fused} µs below the GEMM's {gemm}"
                    );
                }
            }
        }
    }

    #[test]
    fn regrouping_costs_a_memory_pass_that_grows_with_size() {
        let m = CostModel::new(
            &Profile::builtin("h100-sxm-8").unwrap(),
            &Mesh::new([("ep", 8)]).unwrap(),
        )
        .unwrap();
        let at = |rows: u64| {
            let y = t(DType::Bf16, &[8 * rows, 2048]);
            us(
                &m,
                &Op::MoeRegroup,
                &[t(DType::I64, &[8, 8]), y.clone(), y.clone()],
                &y,
            )
        };
        let (small, large) = (at(256), at(4096));
        assert!(
            small > 0.0 && small.is_finite() && large > small,
            "{small} {large}"
        );
    }
}
