//! JSON text → IR graph.
//!
//! The document is read in two layers so that every error can point at its source:
//! the outer object first, with each node kept as a raw slice of the input; then each
//! node on its own, its positions shifted back to where the node sits in the file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;
use weft_ir::{Graph, Mesh, Op, Sharding, ValueId, VerifyError};

use crate::error::{ErrorKind, JsonError, offset_of};

/// The format version this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphDoc<'a> {
    weft: u32,
    name: String,
    #[serde(default)]
    mesh: Option<Mesh>,
    #[serde(default)]
    dims: BTreeMap<String, u64>,
    /// Model-changing rewrites applied to the graph (docs/rewrites.md).
    #[serde(default)]
    model_changes: Vec<weft_ir::ModelChange>,
    #[serde(borrow)]
    nodes: Vec<&'a RawValue>,
    #[serde(borrow)]
    outputs: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeDoc<'a> {
    name: String,
    #[serde(borrow)]
    op: &'a RawValue,
    #[serde(default, borrow)]
    inputs: Vec<&'a RawValue>,
    #[serde(default, borrow)]
    attrs: Option<&'a RawValue>,
    #[serde(default)]
    outputs: Option<Vec<String>>,
    #[serde(default, borrow)]
    sharding: Option<&'a RawValue>,
}

/// One sharding for a single-output node, or one per output.
#[derive(serde::Serialize)]
#[serde(untagged)]
pub(crate) enum ShardingDoc {
    One(Sharding),
    Many(Vec<Sharding>),
}

/// Byte offset of a slice that borrows from `src`.
fn offset_in(src: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(src.as_ptr() as usize)
}

struct Ctx<'a> {
    path: &'a Path,
    src: &'a str,
}

impl Ctx<'_> {
    fn at(&self, kind: ErrorKind, part: &str, message: impl Into<String>) -> JsonError {
        let start = offset_in(self.src, part);
        JsonError::at(
            kind,
            self.path,
            self.src,
            start,
            start + part.len(),
            message,
        )
    }

    /// A serde_json error raised while reading `part` (a slice of the source, or a
    /// synthetic document whose pieces map back through `map`).
    fn serde(&self, err: &serde_json::Error, doc: &str, map: &dyn Fn(usize) -> usize) -> JsonError {
        let local = offset_of(doc, err.line(), err.column());
        let start = map(local);
        let mut message = err.to_string();
        // serde_json appends " at line L column C" relative to the piece it read; the
        // location we report is the real one.
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        let kind = if err.is_eof() || err.is_syntax() {
            ErrorKind::Syntax
        } else if message.starts_with("unknown variant") {
            ErrorKind::UnknownOp
        } else {
            ErrorKind::Format
        };
        JsonError::at(kind, self.path, self.src, start, start + 1, message)
    }
}

/// Choices made when reading a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Values for symbolic dims that replace the file's `dims` (e.g. a longer `seq`).
    pub dims: BTreeMap<String, u64>,
}

/// Parses a model from JSON text; `path` names the file in errors and anchors external
/// weight paths.
pub fn parse_str(src: &str, path: &Path) -> Result<Graph, JsonError> {
    parse_str_with(src, path, &LoadOptions::default())
}

/// [`parse_str`] with options.
pub fn parse_str_with(src: &str, path: &Path, options: &LoadOptions) -> Result<Graph, JsonError> {
    if src.trim().is_empty() {
        return Err(JsonError::file(
            ErrorKind::Empty,
            path,
            "the file is empty; a Weft JSON model is an object with `weft`, `name`, `nodes` and `outputs`",
        ));
    }
    // Another JSON value at the top level would get serde's "expected struct GraphDoc"
    // wording; text that is not JSON at all gets serde's syntax error with its position.
    let first = src.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    let found = match first.chars().next() {
        Some('[') => Some("an array"),
        Some('"') => Some("a string"),
        Some(c) if c.is_ascii_digit() || c == '-' => Some("a number"),
        Some('t' | 'f') => Some("a boolean"),
        Some('n') => Some("null"),
        _ => None,
    };
    if let Some(found) = found
        && serde_json::from_str::<serde::de::IgnoredAny>(src).is_ok()
    {
        return Err(JsonError::file(
            ErrorKind::Format,
            path,
            format!(
                "the file's top level is {found}; a Weft JSON model is an object with `weft`, `name`, `nodes` and `outputs`"
            ),
        ));
    }
    let cx = Ctx { path, src };
    let doc: GraphDoc = serde_json::from_str(src).map_err(|e| cx.serde(&e, src, &|o| o))?;
    if doc.weft != FORMAT_VERSION {
        return Err(JsonError::file(
            ErrorKind::Format,
            path,
            format!(
                "format version {} is not supported; this Weft reads version {FORMAT_VERSION}",
                doc.weft
            ),
        ));
    }
    let mut graph = Graph::new(doc.name);
    graph.mesh = doc.mesh.unwrap_or_default();
    graph.dims = doc.dims;
    graph.model_changes = doc.model_changes;
    for (name, &value) in &options.dims {
        if !graph.dims.contains_key(name) {
            let known: Vec<&str> = graph.dims.keys().map(String::as_str).collect();
            return Err(JsonError::file(
                ErrorKind::Format,
                path,
                format!(
                    "cannot set dim `{name}`: the model declares no such dim (it declares: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        graph.dims.insert(name.clone(), value);
    }

    let mut by_name: HashMap<String, ValueId> = HashMap::new();
    let mut node_spans: HashMap<String, &str> = HashMap::new();
    // Every value name, defined or not yet, so "used before defined" can be told
    // apart from "never defined".
    let declared = declared_names(&cx, &doc.nodes);

    for raw in &doc.nodes {
        let raw_text = raw.get();
        let base = offset_in(src, raw_text);
        let node: NodeDoc =
            serde_json::from_str(raw_text).map_err(|e| cx.serde(&e, raw_text, &|o| base + o))?;
        if node_spans.contains_key(&node.name) {
            return Err(cx.at(
                ErrorKind::DuplicateName,
                raw_text,
                format!("node name `{}` is used twice", node.name),
            ));
        }
        let op = parse_op(&cx, &node)?;
        let mut inputs = Vec::with_capacity(node.inputs.len());
        for input in &node.inputs {
            let name: String = serde_json::from_str(input.get()).map_err(|e| {
                let off = offset_in(src, input.get());
                cx.serde(&e, input.get(), &|o| off + o)
            })?;
            match by_name.get(&name) {
                Some(&v) => inputs.push(v),
                None if declared.contains_key(&name) => {
                    return Err(cx
                        .at(
                            ErrorKind::UnknownValue,
                            input.get(),
                            format!("value `{name}` is used before the node that produces it"),
                        )
                        .with_help("list nodes in dependency order: a node may use only values produced above it"));
                }
                None => {
                    return Err(cx.at(
                        ErrorKind::UnknownValue,
                        input.get(),
                        format!("no node produces a value called `{name}`"),
                    ));
                }
            }
        }
        let id = graph
            .add_node(node.name.clone(), op, inputs)
            .map_err(|e| verify_error(&cx, raw_text, &e))?;
        let outputs = graph.node(id).outputs.clone();
        if let Some(names) = &node.outputs {
            if names.len() != outputs.len() {
                return Err(cx.at(
                    ErrorKind::Format,
                    raw_text,
                    format!(
                        "`outputs` lists {} name(s) but op `{}` produces {} value(s)",
                        names.len(),
                        graph.node(id).op.name(),
                        outputs.len()
                    ),
                ));
            }
            for (&v, name) in outputs.iter().zip(names) {
                graph.value_mut(v).name = name.clone();
            }
        }
        let sharding = match node.sharding {
            None => None,
            Some(raw) => Some(parse_sharding(&cx, raw.get())?),
        };
        match sharding {
            None => {}
            Some(ShardingDoc::One(s)) if outputs.len() == 1 => {
                graph.value_mut(outputs[0]).sharding = s
            }
            Some(ShardingDoc::Many(list)) if list.len() == outputs.len() => {
                for (&v, s) in outputs.iter().zip(list) {
                    graph.value_mut(v).sharding = s;
                }
            }
            Some(_) => {
                return Err(cx.at(
                    ErrorKind::Format,
                    raw_text,
                    format!(
                        "`sharding` must be one object for a single-output node, or a list of {} objects (one per output)",
                        outputs.len()
                    ),
                ));
            }
        }
        for &v in &outputs {
            let name = graph.value(v).name.clone();
            if by_name.insert(name.clone(), v).is_some() {
                return Err(cx.at(
                    ErrorKind::DuplicateName,
                    raw_text,
                    format!("value name `{name}` is produced twice"),
                ));
            }
        }
        node_spans.insert(node.name, raw_text);
    }

    for raw in &doc.outputs {
        let name: String = serde_json::from_str(raw.get()).map_err(|e| {
            let off = offset_in(src, raw.get());
            cx.serde(&e, raw.get(), &|o| off + o)
        })?;
        match by_name.get(&name) {
            Some(&v) => graph.outputs.push(v),
            None => {
                return Err(cx.at(
                    ErrorKind::UnknownValue,
                    raw.get(),
                    format!("graph output `{name}` is not produced by any node"),
                ));
            }
        }
    }

    if let Err(errors) = weft_ir::verify(&graph) {
        let first = &errors.0[0];
        let span = first
            .node
            .as_ref()
            .and_then(|n| node_spans.get(&n.name).copied());
        let message = errors.to_string();
        return Err(match span {
            Some(part) => cx.at(ErrorKind::Verify, part, message),
            None => JsonError::file(ErrorKind::Verify, path, message),
        });
    }
    crate::external::check_external(&graph, path)?;
    check_overrides_apply(&graph, path, options)?;
    Ok(graph)
}

/// A dim override that no shape mentions would change the reported `dims` and nothing
/// else: a sharded or extracted file is written with concrete shapes (`weft dump` evaluates
/// them), so `--dim seq=4096` on it would be silently ignored.
fn check_overrides_apply(
    graph: &Graph,
    path: &Path,
    options: &LoadOptions,
) -> Result<(), JsonError> {
    let Some(name) = graph.unused_dim(options.dims.keys()) else {
        return Ok(());
    };
    let used = graph.shape_symbols();
    let why = if !used.is_empty() {
        let used: Vec<String> = used.into_iter().collect();
        format!("its shapes are written with {} only", used.join(", "))
    } else {
        let mesh = if graph.mesh.axes().is_empty() {
            String::new()
        } else {
            format!(" (it declares the mesh `{}`: it was sharded)", graph.mesh)
        };
        format!(
            "its shapes are concrete{mesh}, as `weft dump` writes sharded and extracted graphs. \
             Set dims on the model before it is sharded or extracted"
        )
    };
    Err(JsonError::file(
        ErrorKind::Format,
        path,
        format!("cannot set dim `{name}`: no shape in the model is written with it; {why}"),
    ))
}

/// A sharding object, or a list of them (one per output), read with precise errors.
fn parse_sharding(cx: &Ctx<'_>, text: &str) -> Result<ShardingDoc, JsonError> {
    let off = offset_in(cx.src, text);
    let map = |o: usize| off + o;
    if text.trim_start().starts_with('[') {
        serde_json::from_str(text)
            .map(ShardingDoc::Many)
            .map_err(|e| cx.serde(&e, text, &map))
    } else {
        serde_json::from_str(text)
            .map(ShardingDoc::One)
            .map_err(|e| cx.serde(&e, text, &map))
    }
}

/// Value names each node declares, for telling forward references from typos.
fn declared_names<'a>(cx: &Ctx<'_>, nodes: &[&'a RawValue]) -> HashMap<String, &'a str> {
    #[derive(Deserialize)]
    struct Names {
        name: String,
        #[serde(default)]
        outputs: Option<Vec<String>>,
    }
    let _ = cx;
    let mut names = HashMap::new();
    for raw in nodes {
        if let Ok(n) = serde_json::from_str::<Names>(raw.get()) {
            for out in n.outputs.unwrap_or_default() {
                names.insert(out, raw.get());
            }
            names.insert(n.name, raw.get());
        }
    }
    names
}

fn verify_error(cx: &Ctx<'_>, node_text: &str, e: &VerifyError) -> JsonError {
    cx.at(ErrorKind::Verify, node_text, e.to_string())
}

/// Attributes that older files carry but that no longer belong to the op: refused with
/// where they went, rather than as a bare unknown field (or, worse, ignored).
fn refuse_moved_attrs(
    cx: &Ctx<'_>,
    node: &NodeDoc<'_>,
    op_name: &str,
    attrs_text: Option<&str>,
) -> Result<(), JsonError> {
    let Some(attrs) = attrs_text else {
        return Ok(());
    };
    let Ok(map) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(attrs) else {
        return Ok(()); // serde reports the malformed attributes itself
    };
    if op_name == "matmul_reduce_scatter" && map.contains_key("chunks") {
        return Err(cx.at(
            ErrorKind::UnknownAttr,
            attrs,
            format!(
                "node `{}`: op `matmul_reduce_scatter` no longer takes `chunks`: the chunk \
                 count is a kernel configuration, chosen by `weft compile` and recorded in \
                 the plan (`kernel: {{\"kind\": \"pipelined\", \"chunks\": ..}}`); remove \
                 the attribute",
                node.name
            ),
        ));
    }
    Ok(())
}

/// Reads `op` and `attrs` through serde, so unknown ops and attributes are reported
/// with the full list of valid ones, at their position in the file.
fn parse_op(cx: &Ctx<'_>, node: &NodeDoc<'_>) -> Result<Op, JsonError> {
    let op_text = node.op.get();
    let op_name: String = serde_json::from_str(op_text).map_err(|e| {
        let off = offset_in(cx.src, op_text);
        cx.serde(&e, op_text, &|o| off + o)
    })?;
    let attrs_text = node.attrs.map(RawValue::get);
    let empty_attrs = attrs_text.is_none_or(|a| {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(a)
            .is_ok_and(|m| m.is_empty())
    });
    // Ops without attributes are unit variants: they read from `{"op": name}` alone.
    let bare = format!("{{\"op\":{op_text}}}");
    if let Ok(op) = serde_json::from_str::<Op>(&bare) {
        if !empty_attrs {
            let a = attrs_text.unwrap_or_default();
            return Err(cx.at(
                ErrorKind::UnknownAttr,
                a,
                format!("op `{op_name}` takes no attributes"),
            ));
        }
        return Ok(op);
    }
    refuse_moved_attrs(cx, node, &op_name, attrs_text)?;
    let attrs = attrs_text.unwrap_or("{}");
    let prefix = "{\"op\":";
    let middle = ",\"attrs\":";
    let doc = format!("{prefix}{op_text}{middle}{attrs}}}");
    let op_start = offset_in(cx.src, op_text);
    let attrs_start = attrs_text.map(|a| offset_in(cx.src, a));
    let map = |o: usize| -> usize {
        let op_end = prefix.len() + op_text.len();
        if o < op_end || attrs_start.is_none() {
            op_start
                + o.saturating_sub(prefix.len())
                    .min(op_text.len().saturating_sub(1))
        } else {
            let local = o.saturating_sub(op_end + middle.len());
            attrs_start.unwrap_or(op_start) + local.min(attrs.len().saturating_sub(1))
        }
    };
    serde_json::from_str::<Op>(&doc).map_err(|e| {
        let mut err = cx.serde(&e, &doc, &map);
        if err.message.starts_with("unknown field") {
            err.kind = ErrorKind::UnknownAttr;
            err.message = format!("op `{op_name}`: {}", err.message);
        } else if err.message.starts_with("unknown variant") {
            err.kind = ErrorKind::UnknownOp;
            err.message = format!("unknown op: {}", err.message);
        } else if err.message.starts_with("missing field") {
            err.message = format!("op `{op_name}`: {}", err.message);
        }
        err
    })
}
