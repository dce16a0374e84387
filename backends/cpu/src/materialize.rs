//! Turning initialisers into tensors, and moving between logical tensors and the
//! per-rank pieces a sharding describes.
//!
//! A value's type in the graph is its *local* (per-rank) type; its sharding says how the
//! local piece sits in the logical tensor. Initialisers describe the logical tensor, and
//! the counter-based generator ([`weft_ir::rng`]) lets a rank produce exactly its piece.

use std::path::Path;

use weft_ir::{DType, Init, Placement, Sharding, Tensor, rng};

use crate::mesh_coords::RankGrid;

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The logical shape of a value whose local shape is `local`, and where `rank`'s piece
/// starts in it.
pub fn placement_of(
    grid: &RankGrid,
    rank: usize,
    sharding: &Sharding,
    local: &[usize],
) -> (Vec<usize>, Vec<usize>) {
    let pieces = grid.split_of(rank, sharding, local.len());
    let logical = local
        .iter()
        .zip(&pieces)
        .map(|(&l, &(n, _))| l * n)
        .collect();
    let offset = local
        .iter()
        .zip(&pieces)
        .map(|(&l, &(_, i))| l * i)
        .collect();
    (logical, offset)
}

/// Flat logical indices of a local block (row-major over the block).
pub fn block_indices(
    logical: &[usize],
    offset: &[usize],
    local: &[usize],
) -> impl Iterator<Item = usize> {
    let lstrides = strides(logical);
    let total: usize = local.iter().product();
    let local = local.to_vec();
    let offset = offset.to_vec();
    let mut idx = vec![0usize; local.len()];
    (0..total).map(move |n| {
        if n > 0 {
            for d in (0..local.len()).rev() {
                idx[d] += 1;
                if idx[d] < local[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        idx.iter()
            .zip(&offset)
            .zip(&lstrides)
            .map(|((&i, &o), &s)| (i + o) * s)
            .sum()
    })
}

/// Materialises an initialiser for `rank`'s piece of the value.
#[allow(clippy::too_many_arguments)]
pub fn materialize(
    init: &Init,
    dtype: DType,
    local: &[usize],
    logical: &[usize],
    offset: &[usize],
    base_dir: &Path,
    threads: usize,
) -> Result<Tensor, String> {
    let indices = block_indices(logical, offset, local);
    let shape = local.to_vec();
    let t = match init {
        Init::Normal { seed, mean, std } if logical == local => {
            let (seed, mean, std) = (*seed, *mean, *std);
            Tensor::from_f32(
                dtype,
                shape,
                generate(local.iter().product(), threads, move |i| {
                    rng::normal(seed, i, mean, std) as f32
                }),
            )
        }
        Init::Uniform { seed, low, high } if logical == local => {
            let (seed, low, high) = (*seed, *low, *high);
            Tensor::from_f32(
                dtype,
                shape,
                generate(local.iter().product(), threads, move |i| {
                    rng::uniform(seed, i, low, high) as f32
                }),
            )
        }
        Init::Normal { seed, mean, std } => Tensor::from_f64(
            dtype,
            shape,
            indices.map(|i| rng::normal(*seed, i as u64, *mean, *std)),
        ),
        Init::Uniform { seed, low, high } => Tensor::from_f64(
            dtype,
            shape,
            indices.map(|i| rng::uniform(*seed, i as u64, *low, *high)),
        ),
        Init::Fill { value } => Tensor::from_f64(dtype, shape, indices.map(|_| *value)),
        Init::Range { start, step } => {
            Tensor::from_f64(dtype, shape, indices.map(|i| start + step * i as f64))
        }
        Init::Inline(values) => {
            let logical_numel: usize = logical.iter().product();
            if values.len() != logical_numel {
                return Err(format!(
                    "{} inline values, but the whole (logical) tensor {logical:?} has {logical_numel} elements",
                    values.len()
                ));
            }
            Tensor::from_f64(dtype, shape, indices.map(|i| values[i]))
        }
        Init::Npy { path } => {
            let full = crate::external::read_npy(&base_dir.join(path), dtype, logical)?;
            return Ok(slice_block(&full, logical, offset, local));
        }
        Init::Raw {
            path,
            offset: file_offset,
        } => {
            let full =
                crate::external::read_raw(&base_dir.join(path), *file_offset, dtype, logical)?;
            return Ok(slice_block(&full, logical, offset, local));
        }
        Init::Safetensors { path, tensor } => {
            let full =
                crate::external::read_safetensors(&base_dir.join(path), tensor, dtype, logical)?;
            return Ok(slice_block(&full, logical, offset, local));
        }
    };
    t.map_err(|e| e.to_string())
}

/// `f(0..n)`, computed on up to `threads` threads for large `n` (the values depend only
/// on the index, so the split cannot change them).
fn generate(n: usize, threads: usize, f: impl Fn(u64) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; n];
    let chunk = n.div_ceil(threads.max(1)).max(1 << 16);
    std::thread::scope(|scope| {
        for (c, part) in out.chunks_mut(chunk).enumerate() {
            let f = &f;
            scope.spawn(move || {
                for (j, x) in part.iter_mut().enumerate() {
                    *x = f((c * chunk + j) as u64);
                }
            });
        }
    });
    out
}

/// The block of `full` at `offset` with shape `local`.
pub fn slice_block(full: &Tensor, logical: &[usize], offset: &[usize], local: &[usize]) -> Tensor {
    if logical == local {
        return full.clone();
    }
    let idx: Vec<usize> = block_indices(logical, offset, local).collect();
    let shape = local.to_vec();
    let t = match full.data() {
        weft_ir::TensorData::Float(v) => {
            Tensor::from_f32(full.dtype(), shape, idx.iter().map(|&i| v[i]).collect())
        }
        weft_ir::TensorData::Int(v) => {
            Tensor::from_i64(full.dtype(), shape, idx.iter().map(|&i| v[i]).collect())
        }
        weft_ir::TensorData::Bool(v) => {
            Tensor::from_bool(shape, idx.iter().map(|&i| v[i]).collect())
        }
    };
    t.expect("a block of a valid tensor is valid")
}

/// Reassembles a logical value from every rank's piece: split pieces are placed,
/// partial pieces reduced in rank order, replicated ones taken from coordinate 0.
pub fn assemble(grid: &RankGrid, sharding: &Sharding, pieces: &[&Tensor]) -> Tensor {
    let first = pieces[0];
    if sharding.is_replicated() {
        return first.clone();
    }
    let local = first.shape().to_vec();
    let (logical, _) = placement_of(grid, 0, sharding, &local);
    let numel: usize = logical.iter().product();
    let partial = sharding.entries().find_map(|(_, p)| match p {
        Placement::Partial(op) => Some(op),
        _ => None,
    });
    let mut acc: Vec<Option<f64>> = vec![None; numel];
    let mut ints: Vec<Option<i64>> = vec![None; numel];
    let mut bools: Vec<Option<bool>> = vec![None; numel];
    for (rank, piece) in pieces.iter().enumerate() {
        if !grid.is_canonical(rank, sharding) {
            continue;
        }
        let (_, offset) = placement_of(grid, rank, sharding, &local);
        for (n, i) in block_indices(&logical, &offset, &local).enumerate() {
            match piece.data() {
                weft_ir::TensorData::Float(v) => {
                    let x = v[n];
                    acc[i] = Some(match (acc[i], partial) {
                        (None, _) => x as f64,
                        (Some(a), Some(weft_ir::ReduceOp::Max)) => {
                            crate::kernels::max_nan(a as f32, x) as f64
                        }
                        // f32 addition in rank order, like the collectives.
                        (Some(a), _) => (a as f32 + x) as f64,
                    });
                }
                weft_ir::TensorData::Int(v) => {
                    let x = v[n];
                    ints[i] = Some(match (ints[i], partial) {
                        (None, _) => x,
                        (Some(a), Some(weft_ir::ReduceOp::Max)) => a.max(x),
                        (Some(a), _) => a.wrapping_add(x),
                    });
                }
                weft_ir::TensorData::Bool(v) => bools[i] = Some(v[n]),
            }
        }
    }
    let t = match first.data() {
        weft_ir::TensorData::Float(_) => Tensor::from_f32(
            first.dtype(),
            logical,
            acc.into_iter().map(|x| x.unwrap_or(0.0) as f32).collect(),
        ),
        weft_ir::TensorData::Int(_) => Tensor::from_i64(
            first.dtype(),
            logical,
            ints.into_iter().map(|x| x.unwrap_or(0)).collect(),
        ),
        weft_ir::TensorData::Bool(_) => Tensor::from_bool(
            logical,
            bools.into_iter().map(|x| x.unwrap_or(false)).collect(),
        ),
    };
    t.expect("assembled pieces cover the logical tensor")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_of_a_random_weight_are_slices_of_the_whole() {
        let grid = RankGrid::new(&"tp=2".parse().unwrap());
        let init = Init::Normal {
            seed: 9,
            mean: 0.0,
            std: 1.0,
        };
        let whole = materialize(
            &init,
            DType::F32,
            &[4, 6],
            &[4, 6],
            &[0, 0],
            Path::new("."),
            2,
        )
        .unwrap();
        let sharding = Sharding::on("tp", Placement::Split(1));
        let pieces: Vec<Tensor> = (0..2)
            .map(|r| {
                let (logical, offset) = placement_of(&grid, r, &sharding, &[4, 3]);
                assert_eq!(logical, vec![4, 6]);
                materialize(
                    &init,
                    DType::F32,
                    &[4, 3],
                    &logical,
                    &offset,
                    Path::new("."),
                    1,
                )
                .unwrap()
            })
            .collect();
        assert_eq!(pieces[1].as_f32().unwrap()[0], whole.as_f32().unwrap()[3]);
        let back = assemble(&grid, &sharding, &[&pieces[0], &pieces[1]]);
        assert_eq!(back, whole);
    }
}
