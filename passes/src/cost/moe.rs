//! Expert GEMMs and MoE layout ops, priced on the rows that carry tokens.
//!
//! Expert parallelism lays its rows out in padded blocks (`moe_pad`, `[G, N, H]`: each
//! block sized for all `N` of a device's routed rows, no capacity limit), and the executor
//! computes every row of them, padding included. A runtime has the counts: its grouped
//! GEMM computes only the runs of real rows, and it never reads or fills the padding. Under
//! uniform routing each block holds `N/G` real rows on average, so pricing the padded
//! rows would count `G`× the work. The row share is the op's mark ([`ExpertRows`]) for
//! the expert matmul, whose types cannot say it, and follows from the types for the
//! layout ops (docs/cost-model.md, "Expert rows").

use weft_ir::ExpertRows;

use super::gemm::GemmShape;
use super::memory_bound::to_f64;
use super::{CostError, CostModel, OpCost, Operands};

impl CostModel {
    /// A grouped GEMM: rows `[N, K]` over `E` experts' weights `[E, K, M]` (or `[E, M, K]`
    /// transposed), `E'` experts × ⌈R/E'⌉ rows each where `R` and `E'` are the rows that
    /// carry tokens and the experts they reach ([`ExpertRows::carried`]: all of them when
    /// dense, `⌈N/groups⌉` rows on every expert for padded blocks, Comet's group share of
    /// both). The per-expert counts are data; the model assumes them balanced.
    pub(super) fn expert_matmul(
        &self,
        cx: &Operands<'_>,
        transpose_b: bool,
        rows_mark: ExpertRows,
    ) -> Result<OpCost, CostError> {
        let rows = cx.shape_in(0)?;
        let w = cx.shape_in(2)?;
        let (n_rows, k) = cx.last_two(&rows, false)?;
        if w.len() != 3 {
            return Err(cx.bad(format!("expert weights have rank {}, not 3", w.len())));
        }
        let (e, (kw, m_out)) = (w[0], cx.last_two(&w, transpose_b)?);
        if kw != k || e == 0 {
            return Err(cx.bad(format!("rows have K = {k}, expert weights {kw}")));
        }
        let carried = rows_mark.carried(n_rows, e).ok_or_else(|| {
            cx.bad(format!(
                "rows {rows_mark} do not divide {n_rows} rows over {e} experts"
            ))
        })?;
        let g = GemmShape {
            batch: carried.experts,
            m: carried.rows.div_ceil(carried.experts),
            n: m_out,
            k,
        };
        self.gemm_cost(cx, g, cx.dtype_in(0)?, 0.0)
    }

    /// `moe_pad`: rows `[N, H]` and counts `[E]` to `G` padded blocks `[G, N, H]`. Every
    /// row lands in exactly one block, so the blocks hold exactly `N` real rows, `1/G` of
    /// the output: the counts, the rows read, `⌈output/G⌉` written. The padding is not
    /// charged: a runtime sends only the rows (the all-to-all's payload) and never fills it.
    pub(super) fn moe_pad(&self, cx: &Operands<'_>, groups: u64) -> Result<OpCost, CostError> {
        if groups == 0 {
            return Err(cx.bad("zero groups".into()));
        }
        let counts = cx.bytes(cx.input(1)?)?;
        let rows = cx.bytes(cx.input(0)?)?;
        let out = cx.bytes_u64(cx.output(0)?)?.div_ceil(groups);
        self.memory_cost(counts + rows + to_f64(out))
    }

    /// `moe_unpad`: padded blocks and counts `[E]` back to the `[N, H]` rows, which are
    /// exactly the blocks' real rows: the counts, the output's bytes read from the blocks
    /// and written (the padding is never read).
    pub(super) fn moe_unpad(&self, cx: &Operands<'_>) -> Result<OpCost, CostError> {
        let counts = cx.bytes(cx.input(1)?)?;
        self.memory_cost(counts + 2.0 * cx.out_bytes()?)
    }

    /// `moe_regroup`: blocked counts `[B, E]` and `G` per-group results `[B·N, M]` to one
    /// blocked result. Comet builds it over an expert-parallel all-to-all's blocks, `B` =
    /// the mesh axis, each of whose peers split its rows into `B` expert groups: `1/B` of
    /// each block is real under uniform routing. Copies each group's real rows into place
    /// (together `⌈output/B⌉` bytes, read and written) and reads the counts; the padding is
    /// neither read nor filled (a runtime's next grouped GEMM skips it by the counts).
    pub(super) fn moe_regroup(&self, cx: &Operands<'_>) -> Result<OpCost, CostError> {
        let counts_t = cx.input(0)?;
        let blocks = match cx.shape_in(0)?[..] {
            [b, _] if b > 0 => b,
            [_] => 1,
            _ => return Err(cx.bad("counts are neither [E] nor blocked [B, E]".into())),
        };
        let counts = cx.bytes(counts_t)?;
        let real = cx.bytes_u64(cx.output(0)?)?.div_ceil(blocks);
        self.memory_cost(counts + 2.0 * to_f64(real))
    }
}
