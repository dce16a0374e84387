//! `moe_regroup`: the per-expert-group results of Comet's split all-to-all put back into
//! the blocked layout one expert matmul over every expert gives.

use weft_ir::Tensor;

use super::{KResult, OutType, float_out, floats, ints};

/// Block `b` of the output: for each group `g` in order, the first `Σ counts[b, group g]`
/// rows of block `b` of `parts[g]`, then zeros.
pub fn regroup(counts: &Tensor, parts: &[&Tensor], out: &OutType) -> KResult<Tensor> {
    let cv = ints(counts)?;
    let (blocks, experts) = (counts.shape()[0], counts.shape()[1]);
    let groups = parts.len();
    let (rows, m) = (out.shape[0], out.shape[1]);
    if blocks == 0 || rows % blocks != 0 || groups == 0 || experts % groups != 0 {
        return Err(format!(
            "{rows} rows in {blocks} blocks and {experts} experts in {groups} groups do not divide"
        ));
    }
    let (block_rows, per_group) = (rows / blocks, experts / groups);
    let values: Vec<&[f32]> = parts.iter().map(|p| floats(p)).collect::<KResult<_>>()?;
    let mut o = vec![0f32; rows * m];
    for b in 0..blocks {
        let mut filled = 0usize;
        for (g, v) in values.iter().enumerate() {
            let run = &cv[b * experts + g * per_group..][..per_group];
            // Each count within the block, summed without overflow (counts are data).
            let len = run
                .iter()
                .try_fold(0usize, |a, &c| {
                    usize::try_from(c)
                        .ok()
                        .filter(|&c| c <= block_rows)
                        .and_then(|c| a.checked_add(c))
                })
                .filter(|&len| filled + len <= block_rows)
                .ok_or_else(|| {
                    format!(
                        "block {b}: expert counts {:?} must be non-negative and fit its {block_rows} rows",
                        &cv[b * experts..][..experts]
                    )
                })?;
            let src = &v[b * block_rows * m..][..len * m];
            o[(b * block_rows + filled) * m..][..len * m].copy_from_slice(src);
            filled += len;
        }
    }
    float_out(out, o)
}
