//! Device meshes and sharding annotations.
//!
//! A mesh is an ordered list of named axes (`tp=8,ep=2`). A value's sharding says,
//! for each mesh axis, how the value is laid out over the devices along that axis
//! (the same model as PyTorch DTensor placements and the MLIR `shard` dialect):
//! replicated, split along one tensor dimension, or a partial sum awaiting a reduction;
//! or local, each device's own value and no piece of a global tensor (what expert
//! parallelism routes between devices). Axes a sharding does not mention are replicated. When several mesh axes split the
//! same tensor dimension, the mesh's axis order is the nesting order (outermost first).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// One named axis of a device mesh.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeshAxis {
    pub name: String,
    pub size: u64,
}

/// An ordered set of named mesh axes, written `tp=8,ep=2`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mesh {
    axes: Vec<MeshAxis>,
}

/// Why a mesh specification could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshParseError {
    #[error("mesh axis `{0}` is not of the form NAME=SIZE (for example `tp=8`)")]
    NotAssignment(String),
    #[error("mesh axis name `{0}` must start with a letter and hold only letters, digits and `_`")]
    BadName(String),
    #[error("mesh axis `{name}` has size `{size}`; sizes are whole numbers of at least 1")]
    BadSize { name: String, size: String },
    #[error("mesh axis `{0}` is named twice")]
    Duplicate(String),
}

impl Mesh {
    /// A mesh from `(name, size)` pairs, validated like a parsed one.
    pub fn new<S: Into<String>>(
        axes: impl IntoIterator<Item = (S, u64)>,
    ) -> Result<Mesh, MeshParseError> {
        let mut mesh = Mesh::default();
        for (name, size) in axes {
            mesh.push(name.into(), size)?;
        }
        Ok(mesh)
    }

    fn push(&mut self, name: String, size: u64) -> Result<(), MeshParseError> {
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(MeshParseError::BadName(name));
        }
        if size == 0 {
            return Err(MeshParseError::BadSize {
                name,
                size: "0".into(),
            });
        }
        if self.axis(&name).is_some() {
            return Err(MeshParseError::Duplicate(name));
        }
        self.axes.push(MeshAxis { name, size });
        Ok(())
    }

    /// The axes in order.
    pub fn axes(&self) -> &[MeshAxis] {
        &self.axes
    }

    /// The axis called `name`.
    pub fn axis(&self, name: &str) -> Option<&MeshAxis> {
        self.axes.iter().find(|a| a.name == name)
    }

    /// The size of axis `name`.
    pub fn axis_size(&self, name: &str) -> Option<u64> {
        self.axis(name).map(|a| a.size)
    }

    /// Total number of devices.
    pub fn num_devices(&self) -> u64 {
        self.axes.iter().map(|a| a.size).product()
    }

    /// The names of the axes, for error messages.
    pub fn axis_names(&self) -> Vec<&str> {
        self.axes.iter().map(|a| a.name.as_str()).collect()
    }

    /// `rank`'s coordinate on each axis, in axis order. Devices are numbered row-major
    /// over the axes (the last axis varies fastest), as `torch.distributed.device_mesh`
    /// numbers them; the executor, the scheduler, the plan and the cost model all use this
    /// one numbering.
    pub fn coords(&self, rank: u64) -> Vec<u64> {
        let mut out = vec![0; self.axes.len()];
        let mut rest = rank;
        for (i, a) in self.axes.iter().enumerate().rev() {
            out[i] = rest % a.size;
            rest /= a.size;
        }
        out
    }

    /// The rank at `coords` (one per axis, each below its axis's size).
    pub fn rank_of(&self, coords: &[u64]) -> u64 {
        coords
            .iter()
            .zip(&self.axes)
            .fold(0, |acc, (&c, a)| acc * a.size + c)
    }

    /// The ranks of `rank`'s group along `axis` (the devices that differ from it only in
    /// that coordinate), in coordinate order, and `rank`'s position among them; `None`
    /// when the mesh has no such axis.
    pub fn group(&self, rank: u64, axis: &str) -> Option<(Vec<u64>, usize)> {
        let a = self.axes.iter().position(|m| m.name == axis)?;
        let mut coords = self.coords(rank);
        let me = coords[a] as usize;
        let members = (0..self.axes[a].size)
            .map(|i| {
                coords[a] = i;
                self.rank_of(&coords)
            })
            .collect();
        Some((members, me))
    }
}

impl FromStr for Mesh {
    type Err = MeshParseError;
    fn from_str(s: &str) -> Result<Mesh, MeshParseError> {
        let mut mesh = Mesh::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, size) = part
                .split_once('=')
                .ok_or_else(|| MeshParseError::NotAssignment(part.to_owned()))?;
            let (name, size) = (name.trim(), size.trim());
            let parsed = size.parse::<u64>().map_err(|_| MeshParseError::BadSize {
                name: name.to_owned(),
                size: size.to_owned(),
            })?;
            mesh.push(name.to_owned(), parsed)?;
        }
        Ok(mesh)
    }
}

impl fmt::Display for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.axes.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", a.name, a.size)?;
        }
        Ok(())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Mesh {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Mesh {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mesh, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The reduction a collective or a partial value carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum ReduceOp {
    #[default]
    Sum,
    Max,
}

impl ReduceOp {
    pub const fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
        }
    }
}

impl fmt::Display for ReduceOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a value is laid out along one mesh axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Placement {
    /// Every device along the axis holds the whole value.
    Replicate,
    /// Device `i` holds the `i`-th equal slice along this tensor dimension.
    Split(usize),
    /// Each device holds a partial result; the value is their reduction.
    Partial(ReduceOp),
    /// Each device holds its own value, which is not a piece of any global tensor: the
    /// rows an expert-parallel all-to-all delivered to the device owning their experts,
    /// or a device's own routing counts. Only ops that define such values (dispatch,
    /// all-to-all) make them and only combine turns them back into a layout; they
    /// cannot be gathered, reduced or returned.
    Local,
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Replicate => f.write_str("R"),
            Placement::Split(d) => write!(f, "S({d})"),
            Placement::Partial(op) => write!(f, "P({op})"),
            Placement::Local => f.write_str("L"),
        }
    }
}

impl FromStr for Placement {
    type Err = String;
    fn from_str(s: &str) -> Result<Placement, String> {
        let bad =
            || format!("placement `{s}` is not one of `R`, `S(<dim>)`, `P(sum)`, `P(max)`, `L`");
        let s = s.trim();
        if s == "R" {
            return Ok(Placement::Replicate);
        }
        if s == "L" {
            return Ok(Placement::Local);
        }
        let inner = |prefix: &str| {
            s.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(')'))
                .map(str::trim)
        };
        if let Some(d) = inner("S(") {
            return d.parse().map(Placement::Split).map_err(|_| bad());
        }
        match inner("P(") {
            Some("sum") => Ok(Placement::Partial(ReduceOp::Sum)),
            Some("max") => Ok(Placement::Partial(ReduceOp::Max)),
            _ => Err(bad()),
        }
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Placement {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Placement {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Placement, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A value's layout over the mesh: one placement per mesh axis it is not replicated on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Sharding(BTreeMap<String, Placement>);

impl Sharding {
    /// Replicated on every axis.
    pub fn replicated() -> Sharding {
        Sharding::default()
    }

    /// A sharding with one placement.
    pub fn on(axis: impl Into<String>, placement: Placement) -> Sharding {
        Sharding::replicated().with(axis, placement)
    }

    /// This sharding with `axis` set to `placement` (replicate removes the entry).
    pub fn with(mut self, axis: impl Into<String>, placement: Placement) -> Sharding {
        let axis = axis.into();
        if placement == Placement::Replicate {
            self.0.remove(&axis);
        } else {
            self.0.insert(axis, placement);
        }
        self
    }

    /// The placement along `axis`.
    pub fn placement(&self, axis: &str) -> Placement {
        self.0.get(axis).copied().unwrap_or(Placement::Replicate)
    }

    /// Whether the value is whole on every device.
    pub fn is_replicated(&self) -> bool {
        self.0.values().all(|p| *p == Placement::Replicate)
    }

    /// The non-replicated placements, by axis name.
    pub fn entries(&self) -> impl Iterator<Item = (&str, Placement)> + '_ {
        self.0.iter().map(|(a, p)| (a.as_str(), *p))
    }
}

impl fmt::Display for Sharding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_replicated() {
            return f.write_str("R");
        }
        f.write_str("{")?;
        for (i, (axis, p)) in self.entries().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{axis}: {p}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_round_trips_through_text() {
        let mesh: Mesh = "tp=8, ep=2".parse().unwrap();
        assert_eq!(mesh.to_string(), "tp=8,ep=2");
        assert_eq!(mesh.num_devices(), 16);
        assert_eq!(mesh.axis_size("ep"), Some(2));
    }

    #[test]
    fn mesh_rejects_bad_specs() {
        assert!(matches!(
            "tp".parse::<Mesh>(),
            Err(MeshParseError::NotAssignment(_))
        ));
        assert!(matches!(
            "tp=0".parse::<Mesh>(),
            Err(MeshParseError::BadSize { .. })
        ));
        assert!(matches!(
            "tp=x".parse::<Mesh>(),
            Err(MeshParseError::BadSize { .. })
        ));
        assert!(matches!(
            "tp=2,tp=2".parse::<Mesh>(),
            Err(MeshParseError::Duplicate(_))
        ));
        assert!(matches!(
            "8=2".parse::<Mesh>(),
            Err(MeshParseError::BadName(_))
        ));
    }

    #[test]
    fn placements_round_trip() {
        for p in [
            Placement::Replicate,
            Placement::Split(2),
            Placement::Partial(ReduceOp::Sum),
            Placement::Partial(ReduceOp::Max),
            Placement::Local,
        ] {
            assert_eq!(p.to_string().parse::<Placement>().unwrap(), p);
        }
        assert!("S(x)".parse::<Placement>().is_err());
        assert!("P(min)".parse::<Placement>().is_err());
    }
}
