//! The e-graph language: IR ops as e-nodes.
//!
//! An e-node is an interned IR op (attributes included, so two `all_gather`s over
//! different dims are different operators) applied to e-classes. Graph inputs, weights and
//! constants are interned by name, so distinct sources never merge. Multi-output ops give
//! a tuple class whose values are taken with `Proj(k)`; the graph's outputs hang off one
//! `Root` node, since an e-graph has one root (Tensat's `noop`).

use std::collections::HashMap;

use egg::{Id, Language};
use weft_ir::Op;

/// What an e-node applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Head {
    /// An IR op, by its index in the [`OpTable`].
    Op(u32),
    /// Output `k` of a multi-output op.
    Proj(u32),
    /// The graph's outputs, in order.
    Root,
}

/// An e-node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WNode {
    pub head: Head,
    pub children: Vec<Id>,
}

impl Language for WNode {
    type Discriminant = Head;

    fn discriminant(&self) -> Head {
        self.head
    }

    fn matches(&self, other: &Self) -> bool {
        self.head == other.head && self.children.len() == other.children.len()
    }

    fn children(&self) -> &[Id] {
        &self.children
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.children
    }
}

/// Interned ops: equal ops (same name and attributes) share an index.
#[derive(Debug, Default, Clone)]
pub struct OpTable {
    ops: Vec<Op>,
    index: HashMap<String, u32>,
    /// The node names of interned sources.
    sources: HashMap<u32, String>,
}

impl OpTable {
    /// The key `op` (not a source) is interned by: its name and attributes. Formatting it
    /// is most of interning's cost (a fused kernel's whole program), so a caller that
    /// looks an op up and may then intern it makes the key once.
    pub fn key(op: &Op) -> String {
        format!("{}({})", op.name(), op.attr_text().join(","))
    }

    /// The index of the op of key `key` ([`OpTable::key`]) when it is interned already.
    pub fn find(&self, key: &str) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// The index of `op`; `source` names a graph input, weight or constant, which is
    /// interned by that name so that two sources are never equal.
    pub fn intern(&mut self, op: &Op, source: Option<&str>) -> u32 {
        let key = match source {
            Some(name) => format!("source:{name}"),
            None => Self::key(op),
        };
        self.intern_keyed(op, key, source)
    }

    /// [`OpTable::intern`] with the key made already.
    pub fn intern_keyed(&mut self, op: &Op, key: String, source: Option<&str>) -> u32 {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.ops.len() as u32;
        self.ops.push(op.clone());
        self.index.insert(key, i);
        if let Some(name) = source {
            self.sources.insert(i, name.to_owned());
        }
        i
    }

    /// The node name of an interned source (graph input, weight, constant).
    pub fn source_name(&self, i: u32) -> Option<&str> {
        self.sources.get(&i).map(String::as_str)
    }

    /// How an op reads in explanations: `name(attrs)`, or a source's node name.
    pub fn label(&self, i: u32) -> String {
        if let Some(name) = self.sources.get(&i) {
            return format!("%{name}");
        }
        let op = self.get(i);
        let attrs = op.attr_text();
        if attrs.is_empty() {
            op.name().to_owned()
        } else {
            format!("{}{{{}}}", op.name(), attrs.join(","))
        }
    }

    pub fn get(&self, i: u32) -> &Op {
        &self.ops[i as usize]
    }
}
