//! The weights a DCCA layer needs, by name and shape, and where they come from: the
//! model (read by their documented names, docs/rewrites.md "DCCA") or the seeded
//! generator (a what-if study, marked `untrained`). Never a mix of the two: a layer half
//! trained for DCCA and half random computes nothing anyone wants.

use std::collections::HashMap;

use weft_ir::{DType, Graph, Init, NodeId, Op, ValueId};

use super::find::MoeLayer;

/// One new weight: its name, shape and dtype.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewWeight {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: DType,
}

/// The new weights of one layer: the shared projections and one per expert matmul
/// (in [`MoeLayer::expert_matmuls`] order).
#[derive(Clone, Debug)]
pub(crate) struct LayerWeights {
    /// `W'_down: [h, r·h]`, applied before the dispatch.
    pub down: NewWeight,
    /// One per expert matmul: the source weight's shape with `h` replaced by `r·h` and
    /// the inner width by `inner / r` (the source's orientation kept).
    pub experts: Vec<NewWeight>,
    /// `W'_up: [r·h, h]`, applied after the combine.
    pub up: NewWeight,
    /// `r·h`, the width both all-to-alls carry.
    pub reduced: u64,
    /// Each inner width scaled by `1/r` (as [`MoeLayer::inner`]).
    pub inner: Vec<u64>,
}

impl LayerWeights {
    pub fn all(&self) -> impl Iterator<Item = &NewWeight> {
        std::iter::once(&self.down)
            .chain(&self.experts)
            .chain(std::iter::once(&self.up))
    }
}

/// `n · num / den`, refused unless it is a whole number (no rounding: a width of 511.5
/// is not a model anyone trained).
pub(crate) fn scale(n: u64, num: u64, den: u64) -> Option<u64> {
    let p = n.checked_mul(num)?;
    (p % den == 0).then_some(p / den)
}

/// The name of the weight that replaces expert matmul `node`'s weight: the source
/// weight's name with `.dcca` appended, or, when the weight is computed rather than a
/// `weight` node, the matmul's name with `.weight.dcca`.
fn expert_weight_name(graph: &Graph, node: NodeId) -> String {
    let w = graph.node(node).inputs[2];
    let producer = graph.node(graph.value(w).producer);
    match producer.op {
        Op::Weight { .. } => format!("{}.dcca", producer.name),
        _ => format!("{}.weight.dcca", graph.node(node).name),
    }
}

/// The weights `layer` needs at ratio `num/den`.
pub(crate) fn plan(
    graph: &Graph,
    layer: &MoeLayer,
    (num, den): (u64, u64),
) -> Result<LayerWeights, String> {
    let p = &layer.prefix;
    let h = layer.hidden;
    let reduced = scale(h, num, den)
        .ok_or_else(|| format!("MoE layer `{p}`: r·h = {num}/{den} · {h} is not a whole number"))?;
    let inner = layer
        .inner
        .iter()
        .map(|&f| {
            scale(f, den, num).ok_or_else(|| {
                format!(
                    "MoE layer `{p}`: the expert inner width {f} scaled by 1/r = {den}/{num} \
                     is not a whole number"
                )
            })
        })
        .collect::<Result<Vec<u64>, String>>()?;
    let weight = |name: String, shape: Vec<u64>| NewWeight {
        name,
        shape,
        dtype: layer.dtype,
    };
    let mut experts = Vec::new();
    let count = layer.entries.len();
    for (i, node) in layer.expert_matmuls().enumerate() {
        let n = graph.node(node);
        let Op::ExpertMatMul { transpose_b, .. } = n.op else {
            unreachable!("find keeps expert matmuls only")
        };
        // Entries multiply [N, r·h] by [r·h, f/r]; the exit [N, f/r] by [f/r, r·h].
        let (k, m) = if i < count {
            (reduced, inner[i])
        } else {
            (inner[count], reduced)
        };
        let dims = if transpose_b { [m, k] } else { [k, m] };
        let dtype = graph.value(n.inputs[2]).ty.dtype;
        experts.push(NewWeight {
            name: expert_weight_name(graph, node),
            shape: vec![layer.experts, dims[0], dims[1]],
            dtype,
        });
    }
    Ok(LayerWeights {
        down: weight(format!("{p}.dcca.down"), vec![h, reduced]),
        experts,
        up: weight(format!("{p}.dcca.up"), vec![reduced, h]),
        reduced,
        inner,
    })
}

/// Where the new weights come from.
#[derive(Debug)]
pub(crate) enum Source {
    /// Every one is a `weight` node of the model, by name.
    Read(HashMap<String, ValueId>),
    /// None is: draw each from the seeded generator.
    Drawn { seed: u64 },
}

/// Reads `wanted` from the model's `weight` nodes, or, when the model holds none of them,
/// draws them all; refuses a model that holds only some, or one of the wrong shape.
pub(crate) fn source(graph: &Graph, wanted: &[&NewWeight], seed: u64) -> Result<Source, String> {
    let by_name: HashMap<&str, NodeId> = graph
        .nodes()
        .filter(|(_, n)| matches!(n.op, Op::Weight { .. }))
        .map(|(id, n)| (n.name.as_str(), id))
        .collect();
    let mut found = HashMap::new();
    let mut missing = Vec::new();
    for w in wanted {
        let Some(&id) = by_name.get(w.name.as_str()) else {
            missing.push(w.name.as_str());
            continue;
        };
        let v = graph.node(id).outputs[0];
        let ty = &graph.value(v).ty;
        let dims = ty.shape.eval(&graph.dims).ok();
        if dims.as_deref() != Some(w.shape.as_slice()) || ty.dtype != w.dtype {
            return Err(format!(
                "the model's weight `{}` is {}{}; DCCA needs {}{:?} (docs/rewrites.md, \"DCCA\")",
                w.name, ty.dtype, ty.shape, w.dtype, w.shape
            ));
        }
        found.insert(w.name.clone(), v);
    }
    if found.is_empty() {
        return Ok(Source::Drawn { seed });
    }
    if !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(4).map(|m| format!("`{m}`")).collect();
        let more = missing.len().saturating_sub(shown.len());
        return Err(format!(
            "the model holds {} of the {} DCCA weights but not {}{}: give all of them \
             (docs/rewrites.md, \"DCCA\") or none (then all are drawn from --dcca-seed and \
             the result is marked untrained); mixing trained and random weights is refused",
            found.len(),
            wanted.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    Ok(Source::Read(found))
}

/// The `index`-th drawn weight's initialiser: normal with standard deviation 0.02 (the
/// zoo's and GPT's initialisation), each weight its own seed mixed from `seed` and `index`
/// (SplitMix64's finaliser), so two weights never share values.
pub(crate) fn drawn(seed: u64, index: u64) -> Init {
    let mut z = seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    Init::Normal {
        seed: z ^ (z >> 31),
        mean: 0.0,
        std: 0.02,
    }
}
