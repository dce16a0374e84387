//! Device coordinates and collective groups on the plan's mesh (row-major over the axes,
//! the same numbering the executor and the sharding pass use).

use crate::MeshAxis;

/// Number of devices of `mesh`; `None` past `u32` ranks (a plan numbers ranks in `u32`).
pub fn device_count(mesh: &[MeshAxis]) -> Option<u32> {
    mesh.iter()
        .try_fold(1u64, |acc, a| acc.checked_mul(a.size))
        .and_then(|n| u32::try_from(n).ok())
}

/// The IR's mesh of the plan's axes (`None` when a name or size is invalid, which the
/// header check reports).
fn ir_mesh(mesh: &[MeshAxis]) -> Option<weft_ir::Mesh> {
    weft_ir::Mesh::new(mesh.iter().map(|a| (a.name.clone(), a.size))).ok()
}

/// `rank`'s coordinate on each axis, in axis order ([`weft_ir::Mesh::coords`]).
pub fn coords(mesh: &[MeshAxis], rank: u32) -> Vec<u64> {
    ir_mesh(mesh).map_or_else(|| vec![0; mesh.len()], |m| m.coords(u64::from(rank)))
}

/// The ranks of `rank`'s group along `axis`, in coordinate order (this rank among
/// them); `None` when the mesh has no such axis.
pub fn group(mesh: &[MeshAxis], rank: u32, axis: &str) -> Option<Vec<u32>> {
    let (members, _) = ir_mesh(mesh)?.group(u64::from(rank), axis)?;
    members.into_iter().map(|r| u32::try_from(r).ok()).collect()
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
