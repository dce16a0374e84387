//! Ranks on a mesh: rank `r` has one coordinate per mesh axis, in row-major order
//! (the last axis varies fastest), as `torch.distributed.device_mesh` numbers them.

use weft_ir::{Mesh, Placement, Sharding};

/// The coordinates of every rank of a mesh.
#[derive(Clone, Debug)]
pub struct RankGrid {
    sizes: Vec<usize>,
    names: Vec<String>,
}

impl RankGrid {
    pub fn new(mesh: &Mesh) -> RankGrid {
        RankGrid {
            sizes: mesh.axes().iter().map(|a| a.size as usize).collect(),
            names: mesh.axes().iter().map(|a| a.name.clone()).collect(),
        }
    }

    /// Number of ranks.
    pub fn ranks(&self) -> usize {
        self.sizes.iter().product()
    }

    fn axis_index(&self, axis: &str) -> Option<usize> {
        self.names.iter().position(|n| n == axis)
    }

    /// Coordinate of `rank` along each axis.
    pub fn coords(&self, rank: usize) -> Vec<usize> {
        let mut coords = vec![0; self.sizes.len()];
        let mut r = rank;
        for i in (0..self.sizes.len()).rev() {
            coords[i] = r % self.sizes[i];
            r /= self.sizes[i];
        }
        coords
    }

    fn rank_of(&self, coords: &[usize]) -> usize {
        coords
            .iter()
            .zip(&self.sizes)
            .fold(0, |acc, (&c, &s)| acc * s + c)
    }

    /// The ranks of `rank`'s group along `axis`, in axis order, and `rank`'s position in it.
    pub fn group(&self, rank: usize, axis: &str) -> Option<(Vec<usize>, usize)> {
        let a = self.axis_index(axis)?;
        let mut coords = self.coords(rank);
        let me = coords[a];
        let members = (0..self.sizes[a])
            .map(|i| {
                coords[a] = i;
                self.rank_of(&coords)
            })
            .collect();
        Some((members, me))
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
        for (i, name) in self.names.iter().enumerate() {
            if let Placement::Split(d) = sharding.placement(name)
                && d < rank_dims
            {
                let (count, index) = pieces[d];
                pieces[d] = (count * self.sizes[i], index * self.sizes[i] + coords[i]);
            }
        }
        pieces
    }

    /// Whether `rank` is the canonical holder of a value: coordinate 0 on every axis the
    /// value is replicated along.
    pub fn is_canonical(&self, rank: usize, sharding: &Sharding) -> bool {
        let coords = self.coords(rank);
        self.names
            .iter()
            .zip(coords)
            .all(|(name, c)| c == 0 || sharding.placement(name) != Placement::Replicate)
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
