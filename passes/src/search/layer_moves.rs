//! The fifth move family: one layer's choices at once.
//!
//! The rule moves ([`super::moves`]) change the sites of one rule (or one chain, or one
//! position) and leave every other class as it is, so they can only walk from the
//! starting seed one rewrite family at a time. A layer move instead sets every class of a
//! layer to what one seed ([`super::seeds`]: the program as sharded, the greedy
//! extraction, each set of rules applied wherever it applies) chose there, keeping the
//! rest of the program — the classes outside every layer and the other layers — as they
//! are: so a layer can take another seed's whole program while the embedding, the head
//! and the differently built layers keep what the climb found for them.
//!
//! Like the other moves it is tied across identical layers: all the layers of one
//! *layer signature* (the sorted name-blind signatures, [`super::signature`], of the
//! classes the layer's own nodes are in) move together, and the move's key is that
//! signature and the seed, so a window's layer move has a counterpart in the whole
//! model (the same seed made on the whole model's e-graph, on its layers of the same
//! signature). A window's first layer reads window inputs where the model's layers read
//! the previous layer's residual, so it has a signature of its own, and a move of it
//! alone would fit the window's edge and have no counterpart: on a window only the group
//! holding its middle layer moves (its middle and last layers share the model's
//! signature).
//!
//! Which layer a class is in: that of the graph node whose value it holds (by name,
//! [`weft_ir::segment_layers`]); a class a rule made (a reduce-scatter under an
//! all-gather, a token split's halves) is in the layer of a layer class with an e-node
//! that consumes it (the first to reach it, breadth first from the layer classes in id
//! order: deterministic). Classes outside every layer (sources, the
//! embedding, the head, a rotary cache) are in none and no layer move touches them.

use std::collections::{BTreeMap, HashMap, VecDeque};

use weft_ir::Graph;

use crate::saturate::extract::Tables;

use super::moves::{Move, MoveKey};
use super::signature::{Signatures, hash_of};

/// Every class's layer in `template`'s e-graph (see the module documentation).
pub(crate) fn class_layers(tables: &Tables<'_>, template: &Graph) -> Vec<Option<u32>> {
    let layers = weft_ir::segment_layers(template);
    let mut layer_of_value: HashMap<&str, u32> = HashMap::new();
    for (id, node) in template.nodes() {
        if let Some(l) = layers.of(id) {
            for &v in &node.outputs {
                layer_of_value.insert(template.value(v).name.as_str(), l);
            }
        }
    }
    let names = tables.sat.class_names();
    let eg = &tables.sat.egraph;
    let mut of: Vec<Option<u32>> = vec![None; tables.classes.len()];
    // Classes that hold an original value are fixed (in a layer or outside every one).
    let mut fixed = vec![false; tables.classes.len()];
    let mut queue = VecDeque::new();
    for (c, &class) in tables.classes.iter().enumerate() {
        if let Some(name) = names.get(&eg.find(class)) {
            fixed[c] = true;
            of[c] = layer_of_value.get(name).copied();
            if of[c].is_some() {
                queue.push_back(c);
            }
        }
    }
    // A class a rule made takes the layer of the first layer class that consumes it.
    while let Some(c) = queue.pop_front() {
        for alt in &tables.nodes[c] {
            for &child in &alt.children {
                if !fixed[child] && of[child].is_none() {
                    of[child] = of[c];
                    queue.push_back(child);
                }
            }
        }
    }
    of
}

/// Per layer of `of`: its signature (the sorted signatures of the classes holding its
/// nodes' values, hashed), so identical layers — here and in another e-graph of the same
/// model — share one.
fn layer_signatures(
    tables: &Tables<'_>,
    sigs: &Signatures,
    of: &[Option<u32>],
) -> BTreeMap<u32, u64> {
    let names = tables.sat.class_names();
    let eg = &tables.sat.egraph;
    let mut members: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (c, &class) in tables.classes.iter().enumerate() {
        if let Some(l) = of[c]
            && names.contains_key(&eg.find(class))
        {
            members.entry(l).or_default().push(sigs.class[c]);
        }
    }
    members
        .into_iter()
        .map(|(l, mut s)| {
            s.sort_unstable();
            (l, hash_of(&s))
        })
        .collect()
}

/// The picks of setting every class of the layers in `group` to `seed`'s e-node (classes
/// `seed` leaves unchosen are left out).
fn picks(of: &[Option<u32>], group: &[u32], seed: &[Option<usize>]) -> Vec<(usize, usize)> {
    of.iter()
        .enumerate()
        .filter(|(_, l)| l.is_some_and(|l| group.contains(&l)))
        .filter_map(|(c, _)| seed[c].map(|k| (c, k)))
        .collect()
}

/// How a group of layers reads in a label: `layer 40`, `layers 40–41`, or `layers 1, 3,
/// 5 (3 layers)`, numbered from `first` (a window's first layer's number in the model).
fn group_label(group: &[u32], first: u32) -> String {
    let n: Vec<u32> = group.iter().map(|l| l + first).collect();
    match n.as_slice() {
        [one] => format!("layer {one}"),
        [a, .., b] if (b - a) as usize + 1 == n.len() => format!("layers {a}–{b}"),
        _ => {
            let list: Vec<String> = n.iter().map(ToString::to_string).collect();
            format!("layers {} ({} layers)", list.join(", "), n.len())
        }
    }
}

/// The layer moves over `tables`' e-graph (built from `template`): per group of
/// identical layers, one per seed of `seeds` (name and choice, in the seed list's order,
/// so a move's seed index is the replay's), that seed's choices on those layers. With
/// `only`, just the group holding that layer moves (a window's middle layer: its first
/// layer has a signature of its own, and a move of it alone would fit the window's edge
/// and have no counterpart in the model). Layers are numbered from `first` in the labels.
pub(crate) fn layer_moves(
    tables: &Tables<'_>,
    sigs: &Signatures,
    template: &Graph,
    seeds: &[(String, Vec<Option<usize>>)],
    only: Option<u32>,
    first: u32,
) -> Vec<Move> {
    let of = class_layers(tables, template);
    let mut groups: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for (l, sig) in layer_signatures(tables, sigs, &of) {
        groups.entry(sig).or_default().push(l);
    }
    // Groups in the order of their first layer.
    let mut groups: Vec<(u64, Vec<u32>)> = groups.into_iter().collect();
    groups.sort_by_key(|(_, layers)| layers[0]);
    groups.retain(|(_, layers)| only.is_none_or(|l| layers.contains(&l)));
    let mut out = Vec::new();
    for (sig, group) in &groups {
        for (s, (name, choice)) in seeds.iter().enumerate() {
            let picks = picks(&of, group, choice);
            if picks.is_empty() {
                continue;
            }
            // `the window's greedy extraction` reads `greedy extraction` here.
            let name = ["the window", "the program"]
                .iter()
                .find_map(|scope| name.strip_prefix(scope))
                .map_or(name.as_str(), |n| {
                    n.strip_prefix("'s ")
                        .or_else(|| n.strip_prefix(' '))
                        .unwrap_or(n)
                });
            out.push(Move {
                label: format!(
                    "{}'s choices as in the seed \"{name}\" ({} classes)",
                    group_label(group, first),
                    picks.len()
                ),
                picks,
                rule: None,
                key: MoveKey::Layer(*sig, s),
                revertible: false,
            });
        }
    }
    out
}

/// The counterpart in `tables`' e-graph (built from `template`) of the layer move keyed
/// `(signature, _)`: `seed`'s choices on its layers of that signature; `None` when it has
/// no layer of that signature.
pub(crate) fn layer_move_for(
    tables: &Tables<'_>,
    sigs: &Signatures,
    template: &Graph,
    signature: u64,
    seed: &[Option<usize>],
) -> Option<Move> {
    let of = class_layers(tables, template);
    let group: Vec<u32> = layer_signatures(tables, sigs, &of)
        .into_iter()
        .filter(|&(_, s)| s == signature)
        .map(|(l, _)| l)
        .collect();
    if group.is_empty() {
        return None;
    }
    let picks = picks(&of, &group, seed);
    (!picks.is_empty()).then(|| Move {
        label: format!("{}'s choices as in a seed", group_label(&group, 0)),
        picks,
        rule: None,
        key: MoveKey::Layer(signature, usize::MAX),
        revertible: false,
    })
}
