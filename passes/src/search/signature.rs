//! Structural signatures of e-classes and e-nodes, blind to names.
//!
//! Choices are tied across structurally identical layers: the same position in layer 17
//! and layer 18 of a transformer must get the same decision, and a decision made on a
//! window of layers must be found again in the whole model's e-graph (a different
//! e-graph, with different ids). A signature is a hash of what an e-node computes (its
//! op and attributes, its type and sharding) and of what its children are, never of a
//! weight's or node's name, so equal positions in equal layers hash equal.
//!
//! A class is known by its *anchor*: the e-node the input program gave it, or, for a
//! class a rule made, its simplest e-node (fewest children, then not a fused kernel). Not
//! by the set of all its e-nodes: how many fused variants a class on the residual
//! stream holds depends on how many residual adds lie before it (element-wise fusion
//! reaches back up to its step limit), which differs between a window's first layers and
//! the model's. Signatures look one level down, through the children's anchors.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use egg::Id;
use weft_ir::Occupancy;

use crate::saturate::extract::Tables;
use crate::saturate::{Head, Meta};

/// Signatures of every class and e-node of one e-graph (dense indices of its [`Tables`]).
pub(crate) struct Signatures {
    /// Per class: its anchor e-node's signature.
    pub(crate) class: Vec<u64>,
}

/// 64-bit FNV-1a: a fixed algorithm, so signatures (and the order of the moves that
/// depend on them) do not change with the standard library's `DefaultHasher`, which
/// Rust may change between releases.
struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) fn hash_of<T: Hash + ?Sized>(t: &T) -> u64 {
    let mut h = Fnv1a(0xcbf2_9ce4_8422_2325);
    t.hash(&mut h);
    h.finish()
}

impl Signatures {
    pub(crate) fn new(tables: &Tables<'_>) -> Signatures {
        let eg = &tables.sat.egraph;
        let ops = &eg.analysis.ops;
        let mut head_keys: HashMap<Head, u64> = HashMap::new();
        let mut head_key = |head: Head| -> u64 {
            *head_keys.entry(head).or_insert_with(|| match head {
                Head::Op(i) => {
                    let op = ops.get(i);
                    // A source by its kind only (its name is what differs between layers);
                    // any other op with its attributes.
                    if matches!(op.occupancy(), Occupancy::Source) {
                        hash_of(&("source", op.name()))
                    } else {
                        hash_of(&("op", op.name(), op.attr_text()))
                    }
                }
                Head::Proj(k) => hash_of(&("proj", k)),
                Head::Root => hash_of("root"),
            })
        };
        let type_key = |class: Id| -> u64 {
            match &eg[class].data {
                Meta::Value { ty, sharding } => hash_of(&format!("{ty:?}{sharding:?}")),
                Meta::Tuple(items) => hash_of(&format!("{items:?}")),
                Meta::Root => hash_of("root"),
                Meta::Invalid(_) => hash_of("invalid"),
            }
        };
        let original = tables.sat.original_enodes();
        // Per class: the index of its anchor e-node.
        let anchor: Vec<usize> = tables
            .classes
            .iter()
            .map(|&class| {
                let nodes = &eg[class].nodes;
                let canonical = |n: &crate::saturate::WNode| crate::saturate::WNode {
                    head: n.head,
                    children: n.children.iter().map(|&c| eg.find(c)).collect(),
                };
                if let Some(k) = nodes.iter().position(|n| original.contains(&canonical(n))) {
                    return k;
                }
                let fused = |n: &crate::saturate::WNode| match n.head {
                    Head::Op(i) => ops.get(i).name() == "fused_elementwise",
                    Head::Proj(_) | Head::Root => false,
                };
                (0..nodes.len())
                    .min_by_key(|&k| {
                        (
                            nodes[k].children.len(),
                            fused(&nodes[k]),
                            head_key(nodes[k].head),
                        )
                    })
                    .unwrap_or(0)
            })
            .collect();
        // A class's base: its type and its anchor's op (no children).
        let base: Vec<u64> = tables
            .classes
            .iter()
            .enumerate()
            .map(|(c, &class)| {
                let head = eg[class]
                    .nodes
                    .get(anchor[c])
                    .map_or(0, |n| head_key(n.head));
                hash_of(&(type_key(class), head))
            })
            .collect();
        let node: Vec<Vec<u64>> = tables
            .classes
            .iter()
            .enumerate()
            .map(|(c, &class)| {
                eg[class]
                    .nodes
                    .iter()
                    .zip(&tables.nodes[c])
                    .map(|(n, alt)| {
                        let kids: Vec<u64> = alt.children.iter().map(|&k| base[k]).collect();
                        hash_of(&(head_key(n.head), base[c], kids))
                    })
                    .collect()
            })
            .collect();
        let class = (0..tables.classes.len())
            .map(|c| node[c].get(anchor[c]).copied().unwrap_or(base[c]))
            .collect();
        Signatures { class }
    }
}
