//! The summary `weft check` prints, as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use weft_ir::stats::Figure;
use weft_ir::{DimError, Graph, stats};

/// What `weft check` reports about a verified graph.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh: Option<String>,
    /// The graph is sharded (it has a mesh): params, bytes and FLOPs are one device's.
    pub per_device: bool,
    /// The symbolic dims the shapes are written with, and their values (what `--dim`
    /// can change).
    pub dims: BTreeMap<String, u64>,
    /// Dims the graph records but no shape uses any more: a sharded or extracted graph's
    /// shapes are concrete, evaluated with these values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub evaluated_dims: BTreeMap<String, u64>,
    /// Number of nodes.
    pub nodes: u64,
    /// Transformer layers, by segmentation of the residual stream (`ir/src/layers.rs`;
    /// 0 without attention).
    pub layers: u32,
    /// Number of nodes by op name.
    pub ops: BTreeMap<&'static str, u64>,
    /// Figures are exact integers; `null` where one does not fit even in 128 bits.
    pub params: Figure,
    pub param_bytes: Figure,
    /// FLOPs of one forward pass (conventions in `ir/src/stats.rs`).
    pub flops: Figure,
    pub flops_by_class: BTreeMap<&'static str, Figure>,
    /// One training step under the Megatron/BigMac convention, over all devices
    /// (`src/training.rs`): the figures papers quote.
    /// `null` where a figure does not fit even 128 bits.
    pub training: Option<crate::training::TrainingSummary>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Communication of a sharded graph (`weft check --mesh`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub comm: Option<CommSummary>,
    /// With `--mesh`: the ops sharding computed whole because a split did not divide
    /// (empty when every split divided; absent when nothing was sharded here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallbacks: Option<Vec<FallbackEntry>>,
    /// Model-changing rewrites applied (`--allow`), each `{rule, detail, untrained}`;
    /// empty when the graph computes the source model's function.
    pub model_changing_rewrites: Vec<weft_ir::ModelChange>,
}

/// An op computed whole along a mesh axis because a split did not divide
/// ([`weft_passes::shard::Fallback`]).
#[derive(Clone, Debug, Serialize)]
pub struct FallbackEntry {
    pub node: String,
    pub op: String,
    pub axis: String,
    pub axis_size: u64,
    /// The size that does not divide by `axis_size`, and what it measures.
    pub extent: u64,
    pub what: String,
}

impl FallbackEntry {
    /// The fallbacks among sharding's warnings.
    pub fn from_warnings(warnings: &[weft_passes::shard::ShardWarning]) -> Vec<FallbackEntry> {
        warnings
            .iter()
            .filter_map(|w| match w {
                weft_passes::shard::ShardWarning::Whole(f) => Some(FallbackEntry {
                    node: f.node.clone(),
                    op: f.op.clone(),
                    axis: f.axis.clone(),
                    axis_size: f.axis_size,
                    extent: f.extent,
                    what: f.what.clone(),
                }),
                weft_passes::shard::ShardWarning::IdleAxis { .. } => None,
            })
            .collect()
    }
}

/// The collectives of a sharded graph; bytes are NCCL message sizes per device
/// (`passes/src/shard/comm.rs`).
#[derive(Clone, Debug, Serialize)]
pub struct CommSummary {
    pub comm_bytes_total: u64,
    /// What those messages carry, as the cost model prices them: the same but for
    /// all-to-alls of padded expert blocks, which carry `1/groups` of their buffer under
    /// uniform routing (`weft_ir::A2aPayload`).
    pub comm_payload_bytes_total: u64,
    /// What each device sends with ring algorithms (see `comm.rs`).
    pub comm_wire_bytes_total: u64,
    /// The total over the layer count (`CheckReport::layers`, at least 1), embedding
    /// and head included.
    pub comm_bytes_per_layer: u64,
    pub collectives: Vec<CollectiveEntry>,
}

/// One collective.
#[derive(Clone, Debug, Serialize)]
pub struct CollectiveEntry {
    pub node: String,
    pub kind: &'static str,
    pub axis: String,
    /// NCCL's message size: the buffer the collective moves.
    pub bytes: u64,
    /// What the message carries (what a runtime sends and the cost model prices).
    pub payload_bytes: u64,
    /// What each device sends of the payload (ring algorithms).
    pub wire_bytes: u64,
    /// The layer the op belongs to; `null` in the embedding or head.
    pub layer: Option<u32>,
}

impl CommSummary {
    /// The communication of a sharded graph; an error when a figure does not fit 64 bits.
    pub fn new(graph: &Graph) -> Result<CommSummary, DimError> {
        let r = weft_passes::shard::comm_report(graph)?;
        Ok(CommSummary {
            comm_bytes_total: r.total_bytes,
            comm_payload_bytes_total: r.total_payload_bytes,
            comm_wire_bytes_total: r.total_wire_bytes,
            comm_bytes_per_layer: r.bytes_per_layer,
            collectives: r
                .collectives
                .into_iter()
                .map(|c| CollectiveEntry {
                    node: c.node,
                    kind: c.kind,
                    axis: c.axis,
                    bytes: c.bytes,
                    payload_bytes: c.payload_bytes,
                    wire_bytes: c.wire_bytes,
                    layer: c.layer,
                })
                .collect(),
        })
    }
}

impl CheckReport {
    /// Summarises a verified graph.
    pub fn new(graph: &Graph) -> Result<CheckReport, DimError> {
        let s = stats(graph)?;
        let used = graph.shape_symbols();
        let dims = graph.dims.clone();
        let describe = |v| {
            let value = graph.value(v);
            format!("{}: {}", value.name, value.ty)
        };
        Ok(CheckReport {
            name: graph.name.clone(),
            mesh: (!graph.mesh.axes().is_empty()).then(|| graph.mesh.to_string()),
            per_device: !graph.mesh.axes().is_empty(),
            dims: dims
                .clone()
                .into_iter()
                .filter(|(k, _)| used.contains(k))
                .collect(),
            evaluated_dims: dims
                .into_iter()
                .filter(|(k, _)| !used.contains(k))
                .collect(),
            nodes: graph.num_nodes() as u64,
            layers: weft_ir::segment_layers(graph).count(),
            ops: s.ops,
            params: s.params,
            param_bytes: s.param_bytes,
            flops: s.flops,
            flops_by_class: s.flops_by_class,
            training: match crate::training::TrainingSummary::new(graph) {
                Ok(t) => Some(t),
                Err(DimError::Overflow(_)) => None,
                Err(e) => return Err(e),
            },
            inputs: graph.inputs().map(describe).collect(),
            outputs: graph.outputs.iter().map(|&v| describe(v)).collect(),
            comm: None,
            fallbacks: None,
            model_changing_rewrites: graph.model_changes.clone(),
        })
    }

    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "graph {:?}: ok (verified)", self.name)?;
        if !self.model_changing_rewrites.is_empty() {
            writeln!(
                out,
                "  CHANGED     {}",
                weft_ir::model_change::OUTPUTS_DIFFER
            )?;
            for change in &self.model_changing_rewrites {
                writeln!(out, "              {}", change.summary())?;
            }
        }
        if let Some(mesh) = &self.mesh {
            writeln!(
                out,
                "  mesh        {mesh} (params, bytes and flops below are per device)"
            )?;
        }
        let each = if self.per_device { " per device" } else { "" };
        let list = |dims: &BTreeMap<String, u64>| {
            dims.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.dims.is_empty() {
            writeln!(out, "  dims        {}", list(&self.dims))?;
        }
        if !self.evaluated_dims.is_empty() {
            // Sharded here (`fallbacks` is set), the dims are the model's or `--dim`'s;
            // from a sharded file, `--dim` is refused.
            let why = if self.fallbacks.is_some() {
                "sharded at these dims, so its shapes are concrete"
            } else {
                "shapes made concrete at these dims; --dim cannot change them"
            };
            writeln!(out, "  evaluated   {} ({why})", list(&self.evaluated_dims))?;
        }
        writeln!(out, "  inputs      {}", self.inputs.join(", "))?;
        writeln!(out, "  outputs     {}", self.outputs.join(", "))?;
        writeln!(out, "  nodes       {}", self.nodes)?;
        writeln!(out, "  layers      {}", self.layers)?;
        writeln!(out, "  params      {}{each}", figure(self.params, ""))?;
        writeln!(out, "  param bytes {}{each}", figure(self.param_bytes, "B"))?;
        writeln!(
            out,
            "  flops       {} per forward pass{each}",
            figure(self.flops, "FLOP")
        )?;
        let w = column(self.flops_by_class.keys().copied());
        for (class, f) in &self.flops_by_class {
            let f = f.map_or_else(|| NOT_REPRESENTABLE.to_owned(), |f| si(f as f64, "FLOP"));
            writeln!(out, "    {class:<w$}{f}")?;
        }
        match &self.training {
            Some(t) => write_training(out, t)?,
            None => writeln!(out, "  training    {NOT_REPRESENTABLE}")?,
        }
        writeln!(out, "  ops")?;
        let w = column(self.ops.keys().copied());
        for (op, n) in &self.ops {
            writeln!(out, "    {op:<w$}{n}")?;
        }
        if let Some(comm) = &self.comm {
            let per_layer = match self.layers {
                0 => String::new(),
                n => format!(
                    " ({} per layer over {n} layer(s))",
                    si(comm.comm_bytes_per_layer as f64, "B")
                ),
            };
            writeln!(
                out,
                "  comm        {} per forward pass{per_layer} in NCCL messages; {} sent per device (ring)",
                si(comm.comm_bytes_total as f64, "B"),
                si(comm.comm_wire_bytes_total as f64, "B"),
            )?;
            if comm.comm_payload_bytes_total != comm.comm_bytes_total {
                writeln!(
                    out,
                    "              {} of payload: padded expert blocks carry 1/groups of their buffer under uniform routing",
                    si(comm.comm_payload_bytes_total as f64, "B"),
                )?;
            }
            let w = column(comm.collectives.iter().map(|c| c.kind));
            let a = (comm.collectives.iter().map(|c| c.axis.len() + 1))
                .max()
                .unwrap_or(0)
                .max(4);
            writeln!(
                out,
                "    {:<w$}{:<a$}{:>14}{:>14}{:>14}  node",
                "kind", "axis", "message B", "payload B", "sent B"
            )?;
            for c in &comm.collectives {
                writeln!(
                    out,
                    "    {:<w$}{:<a$}{:>14}{:>14}{:>14}  {}",
                    c.kind,
                    c.axis,
                    group(c.bytes),
                    group(c.payload_bytes),
                    group(c.wire_bytes),
                    c.node
                )?;
            }
        }
        Ok(())
    }
}

/// The training block's text lines.
fn write_training(out: &mut String, t: &crate::training::TrainingSummary) -> std::fmt::Result {
    let tokens = t
        .tokens
        .map_or_else(|| "no input".to_owned(), |n| format!("{} tokens", group(n)));
    writeln!(
        out,
        "  training    {} per step ({tokens}), forward + backward over all devices",
        figure(Some(t.flops), "FLOP")
    )?;
    writeln!(
        out,
        "              all-to-all {} elements ({:.2} Gi), {} bytes ({:.2} GiB)",
        group(t.all_to_all_elements),
        t.all_to_all_gib_elements,
        group(t.all_to_all_bytes),
        t.all_to_all_gib_bytes
    )?;
    writeln!(out, "              convention: {}", t.convention)?;
    Ok(())
}

/// How a figure too large for 128 bits reads.
const NOT_REPRESENTABLE: &str = "not representable (exceeds 128 bits)";

/// `855654400` → `855,654,400 (855.65 M)`; the words above for `None`.
fn figure(n: Figure, unit: &str) -> String {
    match n {
        Some(n) => format!("{} ({})", group(n), si(n as f64, unit)),
        None => NOT_REPRESENTABLE.to_owned(),
    }
}

/// The width of a name column: the longest name and two spaces (at least 16), so a long
/// op name (`all_gather_matmul`) never runs into its count.
fn column<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(str::len).max().unwrap_or(0).max(14) + 2
}

/// `855654400` → `855,654,400`.
fn group(n: impl Into<u128>) -> String {
    let n: u128 = n.into();
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `855654400` → `855.65 M`.
fn si(x: f64, unit: &str) -> String {
    const PREFIXES: [(f64, &str); 8] = [
        (1e24, "Y"),
        (1e21, "Z"),
        (1e18, "E"),
        (1e15, "P"),
        (1e12, "T"),
        (1e9, "G"),
        (1e6, "M"),
        (1e3, "k"),
    ];
    for (scale, prefix) in PREFIXES {
        if x >= scale {
            return format!("{:.2} {prefix}{unit}", x / scale);
        }
    }
    format!("{x} {unit}").trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_and_scaled() {
        assert_eq!(group(855_654_400u64), "855,654,400");
        assert_eq!(group(12u64), "12");
        assert_eq!(figure(None, "FLOP"), NOT_REPRESENTABLE);
        assert_eq!(
            figure(Some(u128::from(u64::MAX) + 1), "FLOP"),
            "18,446,744,073,709,551,616 (18.45 EFLOP)"
        );
        assert_eq!(si(855_654_400.0, ""), "855.65 M");
        assert_eq!(si(1.5e12, "FLOP"), "1.50 TFLOP");
        assert_eq!(si(12.0, "B"), "12 B");
    }

    #[test]
    fn long_op_names_are_separated_from_their_counts() {
        let w = column(["all_gather_matmul", "add"].into_iter());
        assert_eq!(
            format!("{:<w$}{}", "all_gather_matmul", 71),
            "all_gather_matmul  71"
        );
        assert_eq!(column(["add"].into_iter()), 16);
    }
}
