//! Device coordinates and collective groups on the plan's mesh (row-major over the axes,
//! the same numbering the executor and the sharding pass use).

use crate::MeshAxis;

/// Number of devices of `mesh`; `None` past `u32` ranks (a plan numbers ranks in `u32`).
pub fn device_count(mesh: &[MeshAxis]) -> Option<u32> {
    mesh.iter()
        .try_fold(1u64, |acc, a| acc.checked_mul(a.size))
        .and_then(|n| u32::try_from(n).ok())
}

/// `rank`'s coordinate on each axis, in axis order.
pub fn coords(mesh: &[MeshAxis], rank: u32) -> Vec<u64> {
    let mut rest = u64::from(rank);
    let mut out = vec![0; mesh.len()];
    for (i, a) in mesh.iter().enumerate().rev() {
        let size = a.size.max(1);
        out[i] = rest % size;
        rest /= size;
    }
    out
}

/// The ranks of `rank`'s group along `axis`, in coordinate order (this rank among
/// them); `None` when the mesh has no such axis.
pub fn group(mesh: &[MeshAxis], rank: u32, axis: &str) -> Option<Vec<u32>> {
    let a = mesh.iter().position(|m| m.name == axis)?;
    let mut c = coords(mesh, rank);
    (0..mesh[a].size)
        .map(|i| {
            c[a] = i;
            let r = c
                .iter()
                .zip(mesh)
                .fold(0u64, |acc, (&ci, m)| acc * m.size + ci);
            u32::try_from(r).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh() -> Vec<MeshAxis> {
        vec![
            MeshAxis {
                name: "dp".into(),
                size: 2,
            },
            MeshAxis {
                name: "tp".into(),
                size: 3,
            },
        ]
    }

    #[test]
    fn groups_are_row_major() {
        let m = mesh();
        assert_eq!(device_count(&m), Some(6));
        assert_eq!(coords(&m, 4), vec![1, 1]);
        assert_eq!(group(&m, 4, "tp"), Some(vec![3, 4, 5]));
        assert_eq!(group(&m, 4, "dp"), Some(vec![1, 4]));
        assert_eq!(group(&m, 4, "ep"), None);
    }
}
