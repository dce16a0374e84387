//! Which rule made each node of the chosen program, for `weft inspect`'s per-layer view.
//!
//! A rule application records the top e-node it built (say the `all_gather` of
//! `all_gather(reduce_scatter(x))`); the e-nodes under it that it built too (the
//! `reduce_scatter`) are in classes no original e-node is in. So a node is credited to the
//! rule that built its e-node, or, when that e-node is neither original nor an
//! application's top, to the rule of the rewritten node that consumes it.

use std::collections::{BTreeMap, HashMap, HashSet};

use egg::Id;

use crate::saturate::WNode;
use crate::saturate::extract::Tables;
#[cfg(doc)]
use crate::saturate::extract::build_with_classes;

/// By node name, the rule that made each rewritten node of `choice`'s program, whose
/// nodes' classes (by name) `classes` gives ([`build_with_classes`]'s, kept from when the
/// program was built, so it is not built again).
pub(crate) fn provenance(
    tables: &Tables<'_>,
    choice: &[Option<usize>],
    reachable: &[usize],
    classes: HashMap<String, Id>,
) -> BTreeMap<String, String> {
    let eg = &tables.sat.egraph;
    let canonical = |n: &WNode| WNode {
        head: n.head,
        children: n.children.iter().map(|&c| eg.find(c)).collect(),
    };
    let original: HashSet<WNode> = tables.sat.original_enodes();
    let mut built_by: HashMap<WNode, &'static str> = HashMap::new();
    for (rule, _, new, built) in &eg.analysis.applications {
        let node = built.as_ref().unwrap_or_else(|| eg.id_to_node(*new));
        built_by.entry(canonical(node)).or_insert(*rule);
    }
    // Parents before children: `reachable` is a post-order.
    let mut rule_of: HashMap<usize, &'static str> = HashMap::new();
    for &c in reachable.iter().rev() {
        let Some(k) = choice[c] else { continue };
        let node = canonical(&eg[tables.classes[c]].nodes[k]);
        if original.contains(&node) {
            continue;
        }
        let rule = match built_by.get(&node) {
            Some(&r) => r,
            None => match rule_of.get(&c) {
                Some(&r) => r,
                None => continue,
            },
        };
        rule_of.insert(c, rule);
        for &child in &tables.nodes[c][k].children {
            let Some(ck) = choice[child] else { continue };
            let child_node = canonical(&eg[tables.classes[child]].nodes[ck]);
            if !original.contains(&child_node) && !built_by.contains_key(&child_node) {
                rule_of.entry(child).or_insert(rule);
            }
        }
    }
    classes
        .into_iter()
        .filter_map(|(name, class): (String, Id)| {
            let c = *tables.index.get(&eg.find(class))?;
            rule_of.get(&c).map(|r| (name, (*r).to_owned()))
        })
        .collect()
}
