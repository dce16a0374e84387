//! Which rule made each node of the chosen program, for `weft inspect`'s per-layer view.
//!
//! A rule application records the top e-node it built (say the `all_gather` of
//! `all_gather(reduce_scatter(x))`); the e-nodes under it that it built too (the
//! `reduce_scatter`) are in classes no original e-node is in. So a node is credited to the
//! rule that built its e-node, or, when that e-node is neither original nor an
//! application's top, to the rule of the rewritten node that consumes it.

use std::collections::{BTreeMap, HashMap, HashSet};

use egg::Id;
use weft_ir::Graph;

use crate::saturate::SaturateError;
use crate::saturate::WNode;
use crate::saturate::extract::{Tables, build_with_classes};

/// The program of `choice` and, by node name, the rule that made each rewritten node.
pub(crate) fn program_with_provenance(
    tables: &Tables<'_>,
    choice: &[Option<usize>],
    template: &Graph,
) -> Result<(Graph, BTreeMap<String, String>), SaturateError> {
    let reachable = tables
        .walk(choice)
        .map_err(|_| SaturateError::Extraction("the chosen program is cyclic".into()))?;
    let (graph, classes) = build_with_classes(tables, choice, &reachable, template)?;
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
    let by_name = classes
        .into_iter()
        .filter_map(|(name, class): (String, Id)| {
            let c = *tables.index.get(&eg.find(class))?;
            rule_of.get(&c).map(|r| (name, (*r).to_owned()))
        })
        .collect();
    Ok((graph, by_name))
}
