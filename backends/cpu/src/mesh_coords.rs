//! Ranks on a mesh: rank `r` has one coordinate per mesh axis, in row-major order
//! (the last axis varies fastest), as `torch.distributed.device_mesh` numbers them.

use weft_ir::{Mesh, Placement, Sharding};

/// The coordinates of every rank of a mesh ([`Mesh::coords`]'s numbering), in `usize`
/// for indexing the executor's per-rank tables.
#[derive(Clone, Debug)]
pub struct RankGrid {
    mesh: Mesh,
}

impl RankGrid {
    pub fn new(mesh: &Mesh) -> RankGrid {
        RankGrid { mesh: mesh.clone() }
    }

    /// Number of ranks.
    pub fn ranks(&self) -> usize {
        self.mesh.num_devices() as usize
    }

    /// Coordinate of `rank` along each axis.
    pub fn coords(&self, rank: usize) -> Vec<usize> {
        self.mesh
            .coords(rank as u64)
            .into_iter()
            .map(|c| c as usize)
            .collect()
    }

    /// The ranks of `rank`'s group along `axis`, in axis order, and `rank`'s position in it.
    pub fn group(&self, rank: usize, axis: &str) -> Option<(Vec<usize>, usize)> {
        let (members, me) = self.mesh.group(rank as u64, axis)?;
        Some((members.into_iter().map(|r| r as usize).collect(), me))
    }

    /// For each tensor dim, how many pieces the sharding cuts it into and which piece
    /// `rank` holds (nested over mesh axes in mesh order, outermost first).
    pub fn split_of(
        &self,
        rank: usize,
        sharding: &Sharding,
        rank_dims: usize,
    ) -> Vec<(usize, usize)> {
        let coords = self.coords(rank);
        let mut pieces = vec![(1usize, 0usize); rank_dims];
        for (i, axis) in self.mesh.axes().iter().enumerate() {
            if let Placement::Split(d) = sharding.placement(&axis.name)
                && d < rank_dims
            {
                let size = axis.size as usize;
                let (count, index) = pieces[d];
                pieces[d] = (count * size, index * size + coords[i]);
            }
        }
        pieces
    }

    /// Whether `rank` is the canonical holder of a value: coordinate 0 on every axis the
    /// value is replicated along.
    pub fn is_canonical(&self, rank: usize, sharding: &Sharding) -> bool {
        let coords = self.coords(rank);
        self.mesh
            .axes()
            .iter()
            .zip(coords)
            .all(|(axis, c)| c == 0 || sharding.placement(&axis.name) != Placement::Replicate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_row_major_numbering() {
        let grid = RankGrid::new(&"dp=2,tp=3".parse().unwrap());
        assert_eq!(grid.ranks(), 6);
        assert_eq!(grid.coords(4), vec![1, 1]);
        assert_eq!(grid.group(4, "tp"), Some((vec![3, 4, 5], 1)));
        assert_eq!(grid.group(4, "dp"), Some((vec![1, 4], 1)));
        let s = Sharding::on("dp", Placement::Split(0)).with("tp", Placement::Split(0));
        // rank 4 = (dp 1, tp 1): piece 1*3+1 = 4 of 6 along dim 0.
        assert_eq!(grid.split_of(4, &s, 2), vec![(6, 4), (1, 0)]);
    }
}
