//! Matrix products through the `gemm` crate (SIMD, multi-threaded, deterministic for a
//! fixed thread count: each output element's sum runs on one thread in a fixed order).

use weft_ir::Tensor;

use super::{KResult, OutType, float_out, floats, ints};

/// `dst[m×n] = lhs[m×k] · rhs[k×n]` with explicit strides (in elements).
#[allow(unsafe_code)]
#[allow(clippy::too_many_arguments)]
fn gemm_f32(
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    threads: usize,
) {
    assert!(dst.len() >= m * n, "dst too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst[..m * n].fill(0.0);
        return;
    }
    // The largest index each operand is read at must lie inside its slice.
    assert!(
        (m - 1) * lhs_rs + (k - 1) * lhs_cs < lhs.len(),
        "lhs out of bounds"
    );
    assert!(
        (k - 1) * rhs_rs + (n - 1) * rhs_cs < rhs.len(),
        "rhs out of bounds"
    );
    let parallelism = if threads > 1 && m * n * k >= 64 * 64 * 64 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every access of the three matrices, as described by
    // (rows, cols, row stride, column stride), inside the slices; `dst` is exclusively
    // borrowed and row-major with stride n, so no two writes alias; `read_dst` is false.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Flat offset of batch element `b` in an operand whose batch dims `dims` broadcast to `out`.
fn batch_offset(b: usize, out: &[usize], dims: &[usize], matrix: usize) -> usize {
    let pad = out.len() - dims.len();
    let mut rem = b;
    let mut offset = 0;
    let mut stride = matrix;
    for d in (0..out.len()).rev() {
        let i = rem % out[d];
        rem /= out[d];
        if d >= pad {
            let size = dims[d - pad];
            if size != 1 {
                offset += i * stride;
            }
            stride *= size;
        }
    }
    offset
}

pub fn matmul(
    a: &Tensor,
    b: &Tensor,
    ta: bool,
    tb: bool,
    out: &OutType,
    threads: usize,
) -> KResult<Tensor> {
    let (av, bv) = (floats(a)?, floats(b)?);
    let (sa, sb) = (a.shape(), b.shape());
    let (ar, ac) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let (br, bc) = (sb[sb.len() - 2], sb[sb.len() - 1]);
    let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
    let n = if tb { br } else { bc };
    // Strides of the logical (possibly transposed) operands.
    let a_strides = if ta { (1, ac) } else { (ac, 1) };
    let b_strides = if tb { (1, bc) } else { (bc, 1) };
    let batch_shape = &out.shape[..out.shape.len() - 2];
    let batches: usize = batch_shape.iter().product();
    let mut y = vec![0f32; batches * m * n];
    for bi in 0..batches {
        let ao = batch_offset(bi, batch_shape, &sa[..sa.len() - 2], ar * ac);
        let bo = batch_offset(bi, batch_shape, &sb[..sb.len() - 2], br * bc);
        gemm_f32(
            &mut y[bi * m * n..(bi + 1) * m * n],
            m,
            n,
            k,
            &av[ao..ao + ar * ac],
            a_strides,
            &bv[bo..bo + br * bc],
            b_strides,
            threads,
        );
    }
    float_out(out, y)
}

pub fn expert_matmul(
    x: &Tensor,
    counts: &Tensor,
    w: &Tensor,
    tb: bool,
    out: &OutType,
    threads: usize,
) -> KResult<Tensor> {
    let (xv, wv, cv) = (floats(x)?, floats(w)?, ints(counts)?);
    let (rows, k) = (x.shape()[0], x.shape()[1]);
    let (we, wr, wc) = (w.shape()[0], w.shape()[1], w.shape()[2]);
    let m = if tb { wr } else { wc };
    // Blocked counts [B, E]: B equal blocks of rows, each runs-then-padding.
    let blocks = if counts.shape().len() == 2 {
        counts.shape()[0]
    } else {
        1
    };
    let block_rows = rows / blocks.max(1);
    let w_strides = if tb { (1, wc) } else { (wc, 1) };
    let mut y = vec![0f32; rows * m];
    for (b, block) in cv.chunks(we.max(1)).enumerate().take(blocks) {
        let total = block.iter().try_fold(0i64, |a, &c| {
            (0..=block_rows as i64)
                .contains(&c)
                .then(|| a.checked_add(c))
                .flatten()
        });
        let blocked = counts.shape().len() == 2;
        let fits = match total {
            Some(t) if blocked => t <= block_rows as i64,
            Some(t) => t == rows as i64,
            None => false,
        };
        if !fits {
            return Err(format!(
                "expert counts {block:?} must be non-negative and sum to {} the {block_rows} rows of block {b}",
                if blocked { "at most" } else { "exactly" }
            ));
        }
        let mut start = b * block_rows;
        for (e, &c) in block.iter().enumerate() {
            let c = c as usize;
            gemm_f32(
                &mut y[start * m..(start + c) * m],
                c,
                m,
                k,
                &xv[start * k..(start + c) * k],
                (k, 1),
                &wv[e * wr * wc..(e + 1) * wr * wc],
                w_strides,
                threads,
            );
            start += c;
        }
    }
    float_out(out, y)
}
