//! ONNX `ModelProto` → IR graph.
//!
//! Import is two passes. The first checks every node's op type against what Weft
//! supports and collects *all* unsupported nodes into one error, so a user learns
//! everything that is missing at once. The second builds the graph node by node. Shape
//! operands (a `Reshape`'s target, `Slice` bounds, reduction axes) must be constants:
//! initializers or `Constant` nodes, whose values the importer keeps at hand.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use weft_ir::{
    DType, Dim, GeluApprox, Graph, Init, Op, ReduceKind, Shape, Tensor, TensorData, ValueId,
};

use crate::error::{NodeProblem, OnnxError};
use crate::proto::{
    AttributeProto, AttributeType, DimensionValue, ModelProto, NodeProto, ValueInfoProto,
};
use crate::tensor::tensor_from_proto;

mod attention;

/// Opsets of the default domain Weft reads. Opsets 24 to 28 changed the supported ops
/// only in the element types they accept (onnx 1.23's schemas: of the ops in
/// [`SUPPORTED`], only `Cast` has a version after 25, opset 28, which adds 6-bit float
/// types), so models exported for them import as well; types Weft has no counterpart
/// for are refused where they appear.
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=28;

/// Choices made when importing.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Values of the symbolic dims (`dim_param`) of the graph inputs.
    pub dims: BTreeMap<String, u64>,
    /// Graph inputs to freeze: imported as constants with these values, so that an input
    /// used as a shape operand (a `Reshape` target, `Slice` bounds) can be folded.
    pub constants: BTreeMap<String, Tensor>,
}

/// The op types this importer turns into IR ops.
pub const SUPPORTED: &[&str] = &[
    "Add",
    "Attention",
    "Cast",
    "Concat",
    "Constant",
    "Div",
    "Exp",
    "Expand",
    "Flatten",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gelu",
    "Gemm",
    "Identity",
    "IsNaN",
    "LayerNormalization",
    "MatMul",
    "Mul",
    "Neg",
    "Pow",
    "RMSNormalization",
    "Reciprocal",
    "ReduceMax",
    "ReduceMean",
    "ReduceSum",
    "Relu",
    "Reshape",
    "RotaryEmbedding",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "TopK",
    "Transpose",
    "Unsqueeze",
    "Where",
];

/// A value under import: in the graph, and (for constants) its value too.
#[derive(Clone)]
struct Val {
    id: Option<ValueId>,
    constant: Option<Tensor>,
}

struct Importer {
    g: Graph,
    vals: HashMap<String, Val>,
    /// Initializers whose data stays in external files, until first use.
    externals: HashMap<String, (DType, Vec<u64>, Init)>,
}

type NResult<T> = Result<T, String>;

/// Imports a decoded model.
pub fn import_model(
    model: &ModelProto,
    path: &Path,
    options: &ImportOptions,
) -> Result<Graph, OnnxError> {
    let fail = |message: String| OnnxError::Model {
        path: path.to_owned(),
        message,
    };
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| fail("the model has no graph".into()))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| fail("the model imports no opset of the default ONNX domain".into()))?;
    if !OPSETS.contains(&opset) {
        return Err(fail(format!(
            "default-domain opset {opset} is not supported; Weft reads opsets {} to {}",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    // Pass 1: every node Weft has no importer for, in one error.
    let unsupported: Vec<NodeProblem> = graph
        .node
        .iter()
        .filter(|n| {
            !(n.domain.is_empty() || n.domain == "ai.onnx")
                || !SUPPORTED.contains(&n.op_type.as_str())
        })
        .map(|n| NodeProblem {
            name: n.name.clone(),
            op_type: n.op_type.clone(),
            domain: n.domain.clone(),
            opset: model
                .opset_import
                .iter()
                .find(|o| o.domain == n.domain || (n.domain.is_empty() && o.domain == "ai.onnx"))
                .map_or(0, |o| o.version),
            reason: "no importer for this op".into(),
        })
        .collect();
    if !unsupported.is_empty() {
        return Err(OnnxError::Nodes {
            path: path.to_owned(),
            problems: unsupported,
        });
    }

    let mut im = Importer {
        g: Graph::new(if graph.name.is_empty() {
            "onnx".to_owned()
        } else {
            graph.name.clone()
        }),
        vals: HashMap::new(),
        externals: HashMap::new(),
    };
    for t in &graph.initializer {
        if t.data_location == crate::proto::DATA_LOCATION_EXTERNAL {
            let external =
                crate::external::locate(t, path).map_err(|message| OnnxError::Model {
                    path: path.to_owned(),
                    message: format!("initializer {:?}: {message}", t.name),
                })?;
            im.externals.insert(t.name.clone(), external);
            continue;
        }
        let tensor = tensor_from_proto(t).map_err(|source| OnnxError::Initializer {
            path: path.to_owned(),
            name: t.name.clone(),
            source: Box::new(source),
        })?;
        im.vals.insert(
            t.name.clone(),
            Val {
                id: None,
                constant: Some(tensor),
            },
        );
    }
    for (name, t) in &options.constants {
        if !graph.input.iter().any(|i| &i.name == name) {
            return Err(fail(format!(
                "cannot freeze `{name}`: the graph has no such input"
            )));
        }
        im.vals.insert(
            name.clone(),
            Val {
                id: None,
                constant: Some(t.clone()),
            },
        );
    }
    for input in &graph.input {
        if im.vals.contains_key(&input.name) {
            // An initializer listed as an input (IR version < 4) or a frozen input.
            continue;
        }
        im.add_input(input, &options.dims).map_err(fail)?;
    }
    // Pass 2: build. A node that fails poisons its outputs; nodes that read poisoned values
    // are skipped, so each root cause is reported once.
    let mut problems = Vec::new();
    let mut poisoned: Vec<&str> = Vec::new();
    let produced_later: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    for node in &graph.node {
        if let Some(late) = node.input.iter().find(|i| {
            !i.is_empty()
                && !im.vals.contains_key(*i)
                && produced_later.contains(i.as_str())
                && !poisoned.contains(&i.as_str())
        }) {
            problems.push(NodeProblem {
                name: node.name.clone(),
                op_type: node.op_type.clone(),
                domain: node.domain.clone(),
                opset,
                reason: format!(
                    "input {late:?} is produced by a later node: the graph is not topologically sorted, or has a cycle"
                ),
            });
            poisoned.extend(node.output.iter().map(String::as_str));
            continue;
        }
        if node.input.iter().any(|i| poisoned.contains(&i.as_str())) {
            poisoned.extend(node.output.iter().map(String::as_str));
            continue;
        }
        if let Err(reason) = im.node(node) {
            problems.push(NodeProblem {
                name: node.name.clone(),
                op_type: node.op_type.clone(),
                domain: node.domain.clone(),
                opset,
                reason,
            });
            poisoned.extend(node.output.iter().map(String::as_str));
        }
    }
    // The check the JSON frontend makes too: an override no shape uses would be ignored.
    if let Some(unused) = im.g.unused_dim(options.dims.keys()) {
        let known: Vec<String> = im.g.shape_symbols().into_iter().collect();
        return Err(fail(format!(
            "cannot set dim `{unused}`: no shape in the model is written with it; {}",
            if known.is_empty() {
                "its shapes are concrete (every graph input's size is given)".to_owned()
            } else {
                format!("its shapes are written with {} only", known.join(", "))
            }
        )));
    }
    if !problems.is_empty() {
        return Err(OnnxError::Nodes {
            path: path.to_owned(),
            problems,
        });
    }
    for out in &graph.output {
        let v = im
            .tensor_value(&out.name)
            .and_then(|v| im.name_output(v, &out.name))
            .map_err(|e| fail(format!("graph output {:?}: {e}", out.name)))?;
        im.g.outputs.push(v);
    }
    weft_ir::verify(&im.g).map_err(|e| fail(format!("the imported graph is invalid: {e}")))?;
    Ok(im.g)
}

/// The IR dtype of an ONNX element type, refusing types Weft could only hold widened.
fn dtype_of(code: i32) -> NResult<DType> {
    use crate::proto::DataType as D;
    Ok(match D::try_from(code) {
        Ok(D::Float) | Ok(D::Double) => DType::F32,
        Ok(D::Float16) => DType::F16,
        Ok(D::Bfloat16) => DType::Bf16,
        Ok(D::Float8e4m3fn) => DType::F8e4m3,
        Ok(D::Int64) => DType::I64,
        Ok(D::Int32) => DType::I32,
        Ok(D::Bool) => DType::Bool,
        // Holding these in i32 or i64 would change wrap-around and the output's dtype.
        Ok(narrow @ (D::Int8 | D::Int16 | D::Uint8 | D::Uint16 | D::Uint32 | D::Uint64)) => {
            return Err(format!(
                "element type {} is not supported: Weft's integer types are INT64 and INT32, \
                 and it does not widen {} silently",
                narrow.onnx_name(),
                narrow.onnx_name()
            ));
        }
        Ok(other) => {
            return Err(format!(
                "element type {} is not supported",
                other.onnx_name()
            ));
        }
        Err(_) => return Err(format!("unknown element type code {code}")),
    })
}

/// A `dim_param` as an IR symbol: characters other than letters, digits and `_` become `_`.
fn symbol(param: &str) -> String {
    let mut s: String = param
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, '_');
    }
    s
}

fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_int(node: &NodeProto, name: &str, default: i64) -> NResult<i64> {
    match attr(node, name) {
        None => Ok(default),
        Some(a) if a.r#type == AttributeType::Int as i32 => Ok(a.i),
        Some(a) => Err(format!(
            "attribute `{name}` must be an INT, got type code {}",
            a.r#type
        )),
    }
}

fn attr_float(node: &NodeProto, name: &str, default: f32) -> NResult<f32> {
    match attr(node, name) {
        None => Ok(default),
        Some(a) if a.r#type == AttributeType::Float as i32 => Ok(a.f),
        Some(a) => Err(format!(
            "attribute `{name}` must be a FLOAT, got type code {}",
            a.r#type
        )),
    }
}

fn attr_ints(node: &NodeProto, name: &str) -> NResult<Option<Vec<i64>>> {
    match attr(node, name) {
        None => Ok(None),
        Some(a) if a.r#type == AttributeType::Ints as i32 => Ok(Some(a.ints.clone())),
        Some(a) => Err(format!(
            "attribute `{name}` must be INTS, got type code {}",
            a.r#type
        )),
    }
}

fn attr_string(node: &NodeProto, name: &str, default: &str) -> NResult<String> {
    match attr(node, name) {
        None => Ok(default.to_owned()),
        Some(a) if a.r#type == AttributeType::String as i32 => {
            String::from_utf8(a.s.clone()).map_err(|_| format!("attribute `{name}` is not UTF-8"))
        }
        Some(a) => Err(format!(
            "attribute `{name}` must be a STRING, got type code {}",
            a.r#type
        )),
    }
}

/// Attributes the importer does not read for `op_type`, if any are set: reported rather
/// than silently ignored.
fn check_attrs(node: &NodeProto, known: &[&str]) -> NResult<()> {
    match node
        .attribute
        .iter()
        .find(|a| !known.contains(&a.name.as_str()))
    {
        Some(a) => Err(format!(
            "attribute `{}` is not supported (known: {})",
            a.name,
            known.join(", ")
        )),
        None => Ok(()),
    }
}

impl Importer {
    fn add_input(&mut self, input: &ValueInfoProto, dims: &BTreeMap<String, u64>) -> NResult<()> {
        let tt = input
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .ok_or_else(|| format!("graph input {:?} is not a tensor", input.name))?;
        let dtype =
            dtype_of(tt.elem_type).map_err(|e| format!("graph input {:?}: {e}", input.name))?;
        let shape = tt
            .shape
            .as_ref()
            .ok_or_else(|| format!("graph input {:?} has no shape", input.name))?;
        let mut out = Vec::new();
        for (i, d) in shape.dim.iter().enumerate() {
            out.push(match &d.value {
                Some(DimensionValue::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as u64),
                Some(DimensionValue::DimParam(p)) => {
                    let s = symbol(p);
                    let value = dims.get(&s).or_else(|| dims.get(p)).ok_or_else(|| {
                        format!(
                            "graph input {:?} dim {i} is the symbol {p:?}; give its value with --dim {s}=N",
                            input.name
                        )
                    })?;
                    self.g.dims.insert(s.clone(), *value);
                    Dim::Sym(s)
                }
                _ => return Err(format!("graph input {:?} dim {i} has no size", input.name)),
            });
        }
        let id = self
            .g
            .add(
                input.name.clone(),
                Op::Input {
                    dtype,
                    shape: Shape(out),
                },
                &[],
            )
            .map_err(|e| e.to_string())?;
        self.vals.insert(
            input.name.clone(),
            Val {
                id: Some(id),
                constant: None,
            },
        );
        Ok(())
    }

    /// The value to list as graph output `name`, carrying that name: users (and the
    /// executor) know outputs by their value's name. The importer reaches some ONNX names
    /// through aliases (`Identity` maps its output to its input's value; `Gemm` ends in a
    /// value named after its last step), so such a value is renamed when nothing else
    /// knows it by name (an op's result that is not yet an output), and otherwise (a graph
    /// input, an initializer, a value already listed under another output name) copied
    /// by a `Reshape` to its own shape.
    fn name_output(&mut self, v: ValueId, name: &str) -> NResult<ValueId> {
        if self.g.value(v).name == name {
            return Ok(v);
        }
        let producer = self.g.value(v).producer;
        let source = matches!(
            self.g.node(producer).op,
            Op::Input { .. } | Op::Weight { .. } | Op::Constant { .. }
        );
        if !source && !self.g.outputs.contains(&v) {
            self.g.value_mut(v).name = name.to_owned();
            return Ok(v);
        }
        let shape = self.g.value(v).ty.shape.clone();
        // The node takes another name: the value's source may be a node called `name`.
        let node = self
            .g
            .add_node(format!("{name}.output"), Op::Reshape { shape }, vec![v])
            .map_err(|e| e.rule.to_string())?;
        let copy = self.g.node(node).outputs[0];
        self.g.value_mut(copy).name = name.to_owned();
        Ok(copy)
    }

    /// The graph value for `name`, materialising a constant as a node on first use.
    fn tensor_value(&mut self, name: &str) -> NResult<ValueId> {
        if let Some((dtype, dims, init)) = self.externals.remove(name) {
            let shape = Shape::new(dims);
            let op = if dtype.is_float() {
                Op::Weight { dtype, shape, init }
            } else {
                Op::Constant { dtype, shape, init }
            };
            return self.emit_named(name, op, &[]);
        }
        let val = self
            .vals
            .get(name)
            .cloned()
            .ok_or_else(|| format!("value {name:?} is not defined"))?;
        if let Some(id) = val.id {
            return Ok(id);
        }
        let t = val
            .constant
            .ok_or_else(|| format!("value {name:?} has no data"))?;
        let values: Vec<f64> = t.to_f64_vec();
        let shape = Shape::new(t.shape().iter().map(|&d| d as u64));
        let init = Init::Inline(values);
        let op = if t.dtype().is_float() {
            Op::Weight {
                dtype: t.dtype(),
                shape,
                init,
            }
        } else {
            Op::Constant {
                dtype: t.dtype(),
                shape,
                init,
            }
        };
        let id = self
            .g
            .add(name.to_owned(), op, &[])
            .map_err(|e| e.to_string())?;
        self.vals.insert(
            name.to_owned(),
            Val {
                id: Some(id),
                constant: Some(t),
            },
        );
        Ok(id)
    }

    fn input(&mut self, node: &NodeProto, i: usize) -> NResult<ValueId> {
        let name = node
            .input
            .get(i)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("input {i} is missing"))?;
        self.tensor_value(name)
    }

    /// The values of a constant operand (shape, axes, bounds), as integers.
    fn const_ints(&self, node: &NodeProto, i: usize) -> NResult<Option<Vec<i64>>> {
        let Some(name) = node.input.get(i).filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        if self.externals.contains_key(name) {
            return Err(format!(
                "input {i} ({name:?}) is stored as external data; shape operands must be stored in the model"
            ));
        }
        let val = self
            .vals
            .get(name)
            .ok_or_else(|| format!("value {name:?} is not defined"))?;
        match &val.constant {
            Some(t) => match t.data() {
                TensorData::Int(v) => Ok(Some(v.clone())),
                _ => Err(format!("input {i} ({name:?}) must hold integers")),
            },
            None => Err(format!(
                "input {i} ({name:?}) must be a constant (an initializer or a Constant node); computed shapes are not supported yet"
            )),
        }
    }

    fn shape_of(&self, v: ValueId) -> NResult<Vec<u64>> {
        self.g
            .value(v)
            .ty
            .shape
            .eval(&self.g.dims)
            .map_err(|e| e.to_string())
    }

    fn rank_of(&self, v: ValueId) -> usize {
        self.g.value(v).ty.shape.rank()
    }

    /// Adds an op whose single output is the node's first output.
    fn emit(&mut self, node: &NodeProto, op: Op, inputs: &[ValueId]) -> NResult<()> {
        let out = node.output.first().ok_or("the node has no output")?.clone();
        self.emit_named(&out, op, inputs).map(|_| ())
    }

    fn emit_named(&mut self, name: &str, op: Op, inputs: &[ValueId]) -> NResult<ValueId> {
        let id = self
            .g
            .add(name.to_owned(), op, inputs)
            .map_err(|e| e.rule.to_string())?;
        self.vals.insert(
            name.to_owned(),
            Val {
                id: Some(id),
                constant: None,
            },
        );
        Ok(id)
    }

    /// Adds a multi-output op whose values take the node's output names (an empty name
    /// marks an output the model does not use).
    fn emit_multi(&mut self, node: &NodeProto, op: Op, inputs: Vec<ValueId>) -> NResult<()> {
        let first = node.output.first().ok_or("the node has no output")?;
        let id = self
            .g
            .add_node(format!("{first}#{}", op.name()), op, inputs)
            .map_err(|e| e.rule.to_string())?;
        let outs = self.g.node(id).outputs.clone();
        if outs.len() != node.output.len() {
            return Err(format!(
                "the op produces {} values for {} outputs",
                outs.len(),
                node.output.len()
            ));
        }
        for (v, name) in outs.into_iter().zip(&node.output) {
            if name.is_empty() {
                continue;
            }
            self.g.value_mut(v).name = name.clone();
            self.vals.insert(
                name.clone(),
                Val {
                    id: Some(v),
                    constant: None,
                },
            );
        }
        Ok(())
    }

    fn constant(&mut self, name: &str, dtype: DType, values: Vec<f64>) -> NResult<ValueId> {
        let shape = if values.len() == 1 {
            Shape::scalar()
        } else {
            Shape::new([values.len() as u64])
        };
        let op = Op::Constant {
            dtype,
            shape,
            init: Init::Inline(values),
        };
        self.emit_named(name, op, &[])
    }

    /// `LayerNormalization`'s optional second and third outputs: the mean and the inverse
    /// standard deviation over the normalised dims, with those dims kept as 1.
    fn layer_norm_stats(&mut self, node: &NodeProto, x: ValueId) -> NResult<()> {
        let wants = |i: usize| node.output.get(i).filter(|o| !o.is_empty()).cloned();
        if wants(1).is_none() && wants(2).is_none() {
            return Ok(());
        }
        let rank = self.rank_of(x);
        let axis = weft_ir::infer::norm_axis(attr_int(node, "axis", -1)?, rank, "axis")
            .map_err(|e| e.to_string())?;
        let axes: Vec<i64> = (axis as i64..rank as i64).collect();
        let out = node.output[0].clone();
        let mean_op = |axes: &Vec<i64>| Op::Reduce {
            kind: ReduceKind::Mean,
            axes: axes.clone(),
            keepdims: true,
        };
        let mean_name = wants(1).unwrap_or(format!("{out}.mean"));
        let mean = self.emit_named(&mean_name, mean_op(&axes), &[x])?;
        if let Some(name) = wants(2) {
            let d = self.emit_named(&format!("{out}.centered"), Op::Sub, &[x, mean])?;
            let sq = self.emit_named(&format!("{out}.squared"), Op::Mul, &[d, d])?;
            let var = self.emit_named(&format!("{out}.var"), mean_op(&axes), &[sq])?;
            let dtype = self.g.value(x).ty.dtype;
            let eps = self.constant(
                &format!("{out}.eps"),
                dtype,
                vec![attr_float(node, "epsilon", 1e-5)? as f64],
            )?;
            let v = self.emit_named(&format!("{out}.var_eps"), Op::Add, &[var, eps])?;
            self.emit_named(&name, Op::Rsqrt, &[v])?;
        }
        Ok(())
    }

    fn reshape_to(&mut self, node: &NodeProto, x: ValueId, dims: Vec<Dim>) -> NResult<()> {
        self.emit(node, Op::Reshape { shape: Shape(dims) }, &[x])
    }

    fn node(&mut self, node: &NodeProto) -> NResult<()> {
        // Every importer names its result after the node's first output.
        if node.output.first().is_none_or(|o| o.is_empty()) {
            return Err("the node has no output".into());
        }
        let op_type = node.op_type.as_str();
        let binary = |op: Op| -> Option<Op> { Some(op) };
        let bin = match op_type {
            "Add" => binary(Op::Add),
            "Sub" => binary(Op::Sub),
            "Mul" => binary(Op::Mul),
            "Div" => binary(Op::Div),
            _ => None,
        };
        if let Some(op) = bin {
            check_attrs(node, &[])?;
            let (a, b) = (self.input(node, 0)?, self.input(node, 1)?);
            return self.emit(node, op, &[a, b]);
        }
        let unary = match op_type {
            "Neg" => Some(Op::Neg),
            "Exp" => Some(Op::Exp),
            "Sqrt" => Some(Op::Sqrt),
            "Reciprocal" => Some(Op::Reciprocal),
            "Relu" => Some(Op::Relu),
            "Sigmoid" => Some(Op::Sigmoid),
            "Tanh" => Some(Op::Tanh),
            _ => None,
        };
        if let Some(op) = unary {
            check_attrs(node, &[])?;
            let x = self.input(node, 0)?;
            return self.emit(node, op, &[x]);
        }
        match op_type {
            "Identity" => {
                check_attrs(node, &[])?;
                let name = node.input.first().ok_or("input 0 is missing")?;
                let val = self
                    .vals
                    .get(name)
                    .cloned()
                    .ok_or_else(|| format!("value {name:?} is not defined"))?;
                let out = node.output.first().ok_or("the node has no output")?;
                self.vals.insert(out.clone(), val);
                Ok(())
            }
            "Constant" => {
                let out = node.output.first().ok_or("the node has no output")?.clone();
                let a = node
                    .attribute
                    .first()
                    .ok_or("a Constant needs a value attribute")?;
                if node.attribute.len() != 1 {
                    return Err("a Constant takes exactly one attribute".into());
                }
                let t = match a.name.as_str() {
                    "value" => tensor_from_proto(a.t.as_ref().ok_or("`value` holds no tensor")?)
                        .map_err(|e| e.to_string())?,
                    "value_float" => Tensor::from_f32(DType::F32, vec![], vec![a.f])
                        .map_err(|e| e.to_string())?,
                    "value_floats" => {
                        Tensor::from_f32(DType::F32, vec![a.floats.len()], a.floats.clone())
                            .map_err(|e| e.to_string())?
                    }
                    "value_int" => Tensor::from_i64(DType::I64, vec![], vec![a.i])
                        .map_err(|e| e.to_string())?,
                    "value_ints" => {
                        Tensor::from_i64(DType::I64, vec![a.ints.len()], a.ints.clone())
                            .map_err(|e| e.to_string())?
                    }
                    other => return Err(format!("Constant attribute `{other}` is not supported")),
                };
                self.vals.insert(
                    out,
                    Val {
                        id: None,
                        constant: Some(t),
                    },
                );
                Ok(())
            }
            "Pow" => {
                check_attrs(node, &[])?;
                let a = self.input(node, 0)?;
                let base_type = self.g.value(a).ty.dtype;
                // The exponent is brought to the type the power is computed in.
                let base = if base_type.is_float() {
                    base_type
                } else {
                    DType::F32
                };
                let exp_name = node.input.get(1).ok_or("input 1 is missing")?.clone();
                // ONNX lets the exponent have another type; a constant one is converted.
                let b = match self.vals.get(&exp_name).and_then(|v| v.constant.clone()) {
                    Some(t) if t.dtype() != base => {
                        let name = format!("{exp_name}.as_{base}");
                        let op = Op::Constant {
                            dtype: base,
                            shape: Shape::new(t.shape().iter().map(|&d| d as u64)),
                            init: Init::Inline(t.to_f64_vec()),
                        };
                        match self.vals.get(&name) {
                            Some(Val { id: Some(id), .. }) => *id,
                            _ => self.emit_named(&name, op, &[])?,
                        }
                    }
                    _ => {
                        let b = self.input(node, 1)?;
                        let cast = format!("{exp_name}.as_{base}");
                        if self.g.value(b).ty.dtype == base {
                            b
                        } else if let Some(Val { id: Some(id), .. }) = self.vals.get(&cast) {
                            *id
                        } else {
                            self.emit_named(&cast, Op::Cast { to: base }, &[b])?
                        }
                    }
                };
                if base_type.is_float() {
                    return self.emit(node, Op::Pow, &[a, b]);
                }
                let base = base_type;
                // An integer base: computed in f32 and truncated back, as ONNX's output
                // keeps the base's type (exact while results stay below 2^24).
                let out = node.output.first().ok_or("the node has no output")?.clone();
                let af = self.emit_named(
                    &format!("{out}.base_f32"),
                    Op::Cast { to: DType::F32 },
                    &[a],
                )?;
                let bf = if self.g.value(b).ty.dtype == DType::F32 {
                    b
                } else {
                    self.emit_named(&format!("{out}.exp_f32"), Op::Cast { to: DType::F32 }, &[b])?
                };
                let y = self.emit_named(&format!("{out}.pow_f32"), Op::Pow, &[af, bf])?;
                self.emit(node, Op::Cast { to: base }, &[y])
            }
            "MatMul" => {
                check_attrs(node, &[])?;
                let (mut a, mut b) = (self.input(node, 0)?, self.input(node, 1)?);
                let out = node.output.first().ok_or("the node has no output")?.clone();
                // NumPy semantics for 1-D operands: a vector `a` is a row [1, k] and a vector
                // `b` a column [k, 1]; the added dim is removed from the result.
                let (va, vb) = (self.rank_of(a) == 1, self.rank_of(b) == 1);
                if va {
                    let k = self.g.value(a).ty.shape.dims()[0].clone();
                    a = self.emit_named(
                        &format!("{out}.row"),
                        Op::Reshape {
                            shape: Shape(vec![Dim::Fixed(1), k]),
                        },
                        &[a],
                    )?;
                }
                if vb {
                    let k = self.g.value(b).ty.shape.dims()[0].clone();
                    b = self.emit_named(
                        &format!("{out}.col"),
                        Op::Reshape {
                            shape: Shape(vec![k, Dim::Fixed(1)]),
                        },
                        &[b],
                    )?;
                }
                let mm = Op::MatMul {
                    transpose_a: false,
                    transpose_b: false,
                };
                if !va && !vb {
                    return self.emit(node, mm, &[a, b]);
                }
                let y = self.emit_named(&format!("{out}.matmul"), mm, &[a, b])?;
                let mut dims = self.g.value(y).ty.shape.dims().to_vec();
                let r = dims.len();
                if vb {
                    dims.remove(r - 1);
                }
                if va {
                    dims.remove(r - 2);
                }
                self.reshape_to(node, y, dims)
            }
            "Gemm" => {
                check_attrs(node, &["alpha", "beta", "transA", "transB"])?;
                let (alpha, beta) = (
                    attr_float(node, "alpha", 1.0)?,
                    attr_float(node, "beta", 1.0)?,
                );
                let (ta, tb) = (
                    attr_int(node, "transA", 0)? != 0,
                    attr_int(node, "transB", 0)? != 0,
                );
                let (a, b) = (self.input(node, 0)?, self.input(node, 1)?);
                let out = node.output.first().ok_or("the node has no output")?.clone();
                let dtype = self.g.value(a).ty.dtype;
                let has_c = node.input.get(2).is_some_and(|n| !n.is_empty());
                let mut y = self.emit_named(
                    &format!("{out}.matmul"),
                    Op::MatMul {
                        transpose_a: ta,
                        transpose_b: tb,
                    },
                    &[a, b],
                )?;
                if alpha != 1.0 {
                    let s = self.constant(&format!("{out}.alpha"), dtype, vec![alpha as f64])?;
                    y = self.emit_named(&format!("{out}.scaled"), Op::Mul, &[y, s])?;
                }
                if has_c {
                    let mut c = self.input(node, 2)?;
                    if beta != 1.0 {
                        let s = self.constant(&format!("{out}.beta"), dtype, vec![beta as f64])?;
                        c = self.emit_named(&format!("{out}.bias"), Op::Mul, &[c, s])?;
                    }
                    y = self.emit_named(&format!("{out}.sum"), Op::Add, &[y, c])?;
                }
                // Name the result after the ONNX output.
                self.vals.insert(
                    out,
                    Val {
                        id: Some(y),
                        constant: None,
                    },
                );
                Ok(())
            }
            "Softmax" => {
                check_attrs(node, &["axis"])?;
                let x = self.input(node, 0)?;
                self.emit(
                    node,
                    Op::Softmax {
                        axis: attr_int(node, "axis", -1)?,
                    },
                    &[x],
                )
            }
            "Gelu" => {
                check_attrs(node, &["approximate"])?;
                let approximate = match attr_string(node, "approximate", "none")?.as_str() {
                    "none" => GeluApprox::Erf,
                    "tanh" => GeluApprox::Tanh,
                    other => {
                        return Err(format!("approximate = {other:?} is not `none` or `tanh`"));
                    }
                };
                let x = self.input(node, 0)?;
                self.emit(node, Op::Gelu { approximate }, &[x])
            }
            "Transpose" => {
                check_attrs(node, &["perm"])?;
                let x = self.input(node, 0)?;
                let rank = self.rank_of(x);
                let perm = match attr_ints(node, "perm")? {
                    Some(p) => p
                        .iter()
                        .map(|&d| {
                            usize::try_from(d)
                                .map_err(|_| format!("perm {p:?} has a negative entry"))
                        })
                        .collect::<NResult<Vec<_>>>()?,
                    None => (0..rank).rev().collect(),
                };
                self.emit(node, Op::Transpose { perm }, &[x])
            }
            "Cast" => {
                check_attrs(node, &["to", "saturate", "round_mode"])?;
                if attr_int(node, "saturate", 1)? == 0 {
                    return Err("saturate = 0 is not supported (Weft's f8 casts saturate)".into());
                }
                let to = dtype_of(attr_int(node, "to", 0)? as i32)?;
                let x = self.input(node, 0)?;
                self.emit(node, Op::Cast { to }, &[x])
            }
            "Concat" => {
                check_attrs(node, &["axis"])?;
                let inputs = (0..node.input.len())
                    .map(|i| self.input(node, i))
                    .collect::<NResult<Vec<_>>>()?;
                self.emit(
                    node,
                    Op::Concat {
                        axis: attr_int(node, "axis", 0)?,
                    },
                    &inputs,
                )
            }
            "Gather" => {
                check_attrs(node, &["axis"])?;
                let (data, idx) = (self.input(node, 0)?, self.input(node, 1)?);
                self.emit(
                    node,
                    Op::Gather {
                        axis: attr_int(node, "axis", 0)?,
                    },
                    &[data, idx],
                )
            }
            "Reshape" => {
                check_attrs(node, &["allowzero"])?;
                let allowzero = attr_int(node, "allowzero", 0)? != 0;
                let x = self.input(node, 0)?;
                let target = self
                    .const_ints(node, 1)?
                    .ok_or("input 1 (shape) is missing")?;
                let from = self.g.value(x).ty.shape.clone();
                let numel = from.numel(&self.g.dims).map_err(|e| e.to_string())?;
                let mut dims: Vec<Option<Dim>> = Vec::new();
                for (i, &t) in target.iter().enumerate() {
                    dims.push(match t {
                        0 if !allowzero => Some(from.dims().get(i).cloned().ok_or_else(|| {
                            format!("shape entry {i} copies a dim the input lacks")
                        })?),
                        -1 => None,
                        t if t >= 0 => Some(Dim::Fixed(t as u64)),
                        t => return Err(format!("shape entry {t} is invalid")),
                    });
                }
                if dims.iter().filter(|d| d.is_none()).count() > 1 {
                    return Err("more than one -1 in the target shape".into());
                }
                let known: u64 = dims
                    .iter()
                    .flatten()
                    .map(|d| d.eval(&self.g.dims).unwrap_or(0))
                    .product();
                let dims: Vec<Dim> = dims
                    .into_iter()
                    .map(|d| d.unwrap_or(Dim::Fixed(numel.checked_div(known).unwrap_or(0))))
                    .collect();
                self.reshape_to(node, x, dims)
            }
            "Flatten" => {
                check_attrs(node, &["axis"])?;
                let x = self.input(node, 0)?;
                let shape = self.shape_of(x)?;
                // Flatten's axis may equal the rank (everything in the outer dim).
                let axis = attr_int(node, "axis", 1)?;
                let r = shape.len() as i64;
                let a = if axis < 0 { axis + r } else { axis };
                if !(0..=r).contains(&a) {
                    return Err(format!("axis {axis} is out of range for rank {r}"));
                }
                let a = a as usize;
                let (outer, inner): (u64, u64) =
                    (shape[..a].iter().product(), shape[a..].iter().product());
                self.reshape_to(node, x, vec![Dim::Fixed(outer), Dim::Fixed(inner)])
            }
            "Attention" => self.attention(node),
            "RotaryEmbedding" => {
                check_attrs(node, &["interleaved", "num_heads", "rotary_embedding_dim"])?;
                let interleaved = attr_int(node, "interleaved", 0)? != 0;
                let x = self.input(node, 0)?;
                let (cos_cache, sin_cache) = (self.input(node, 1)?, self.input(node, 2)?);
                let out = node.output[0].clone();
                let shape = self.g.value(x).ty.shape.clone();
                // 3-D input [b, s, n*d] is viewed as [b, s, n, d]; 4-D is [b, n, s, d].
                let (xv, heads_axis) = match shape.rank() {
                    4 => (x, 1usize),
                    3 => {
                        let n = attr_int(node, "num_heads", 0)?;
                        let hidden = self.shape_of(x)?[2];
                        if n <= 0 || hidden % n as u64 != 0 {
                            return Err(format!(
                                "num_heads = {n} must divide the hidden size {hidden}"
                            ));
                        }
                        let mut view = shape.dims()[..2].to_vec();
                        view.extend([Dim::Fixed(n as u64), Dim::Fixed(hidden / n as u64)]);
                        (
                            self.emit_named(
                                &format!("{out}.heads"),
                                Op::Reshape { shape: Shape(view) },
                                &[x],
                            )?,
                            2usize,
                        )
                    }
                    r => {
                        return Err(format!(
                            "input of rank {r}: RotaryEmbedding takes rank 3 or 4"
                        ));
                    }
                };
                let head = self.shape_of(xv)?[3];
                let rot = match attr_int(node, "rotary_embedding_dim", 0)? {
                    0 => head,
                    r if r > 0 && (r as u64) <= head && r % 2 == 0 => r as u64,
                    r => {
                        return Err(format!(
                            "rotary_embedding_dim = {r} must be even and at most the head size {head}"
                        ));
                    }
                };
                // Tables per token, [b, s, rot/2], then a unit heads dim to broadcast over heads.
                let has_positions = node.input.get(3).is_some_and(|n| !n.is_empty());
                let (cos, sin) = if has_positions {
                    let pos = self.input(node, 3)?;
                    (
                        self.emit_named(
                            &format!("{out}.cos"),
                            Op::Gather { axis: 0 },
                            &[cos_cache, pos],
                        )?,
                        self.emit_named(
                            &format!("{out}.sin"),
                            Op::Gather { axis: 0 },
                            &[sin_cache, pos],
                        )?,
                    )
                } else {
                    (cos_cache, sin_cache)
                };
                let mut table = self.g.value(cos).ty.shape.dims().to_vec();
                table.insert(heads_axis, Dim::Fixed(1));
                let cos = self.emit_named(
                    &format!("{out}.cos_h"),
                    Op::Reshape {
                        shape: Shape(table.clone()),
                    },
                    &[cos],
                )?;
                let sin = self.emit_named(
                    &format!("{out}.sin_h"),
                    Op::Reshape {
                        shape: Shape(table),
                    },
                    &[sin],
                )?;
                let rope = Op::Rope { interleaved };
                let rotated = if rot == head {
                    self.emit_named(&format!("{out}.rope"), rope, &[xv, cos, sin])?
                } else {
                    // Only the first `rot` channels rotate; the rest pass through.
                    let split = Op::Split {
                        axis: -1,
                        sizes: vec![rot, head - rot],
                    };
                    let id = self
                        .g
                        .add_node(format!("{out}.split"), split, vec![xv])
                        .map_err(|e| e.rule.to_string())?;
                    let parts = self.g.node(id).outputs.clone();
                    let r = self.emit_named(&format!("{out}.rope"), rope, &[parts[0], cos, sin])?;
                    self.emit_named(
                        &format!("{out}.join"),
                        Op::Concat { axis: -1 },
                        &[r, parts[1]],
                    )?
                };
                self.reshape_to(node, rotated, shape.dims().to_vec())
            }
            "GatherElements" => {
                // Exporters use it on constant buffers (BERT's token-type ids); it is folded
                // at import, so both operands must be constants.
                check_attrs(node, &["axis"])?;
                let constant = |i: usize| -> NResult<Tensor> {
                    let name = node
                        .input
                        .get(i)
                        .ok_or_else(|| format!("input {i} is missing"))?;
                    self.vals.get(name).and_then(|v| v.constant.clone()).ok_or_else(|| {
                        format!("input {i} ({name:?}) must be a constant (an initializer or a Constant node): GatherElements is folded at import")
                    })
                };
                let (data, idx) = (constant(0)?, constant(1)?);
                let folded = gather_elements(&data, &idx, attr_int(node, "axis", 0)?)?;
                self.vals.insert(
                    node.output[0].clone(),
                    Val {
                        id: None,
                        constant: Some(folded),
                    },
                );
                Ok(())
            }
            "Expand" => {
                check_attrs(node, &[])?;
                let x = self.input(node, 0)?;
                let shape = self
                    .const_ints(node, 1)?
                    .ok_or("input 1 (shape) is missing")?;
                let dims = shape
                    .iter()
                    .map(|&d| {
                        u64::try_from(d)
                            .map(Dim::Fixed)
                            .map_err(|_| format!("shape {shape:?} has a negative entry"))
                    })
                    .collect::<NResult<Vec<_>>>()?;
                self.emit(node, Op::Expand { shape: Shape(dims) }, &[x])
            }
            "Where" => {
                check_attrs(node, &[])?;
                let (c, a, b) = (
                    self.input(node, 0)?,
                    self.input(node, 1)?,
                    self.input(node, 2)?,
                );
                self.emit(node, Op::Where, &[c, a, b])
            }
            "IsNaN" => {
                check_attrs(node, &[])?;
                let x = self.input(node, 0)?;
                self.emit(node, Op::IsNan, &[x])
            }
            "TopK" => {
                check_attrs(node, &["axis", "largest", "sorted"])?;
                let x = self.input(node, 0)?;
                let k = self.const_ints(node, 1)?.ok_or("input 1 (K) is missing")?;
                let k = match k.as_slice() {
                    [k] if *k > 0 => *k as u64,
                    other => return Err(format!("K = {other:?} must be one positive number")),
                };
                let op = Op::TopK {
                    k,
                    axis: attr_int(node, "axis", -1)?,
                    largest: attr_int(node, "largest", 1)? != 0,
                };
                self.emit_multi(node, op, vec![x])
            }
            "GatherND" => {
                check_attrs(node, &["batch_dims"])?;
                if attr_int(node, "batch_dims", 0)? != 0 {
                    return Err("batch_dims > 0 is not supported".into());
                }
                // `indices [..., m]` picks slices `data[i0, .., i(m-1)]`: with the first m dims
                // of `data` merged into one, that is a `gather` on axis 0 at the linear index
                // `sum_j i_j * stride_j` (non-negative indices).
                let (data, idx) = (self.input(node, 0)?, self.input(node, 1)?);
                let dshape = self.shape_of(data)?;
                let ishape = self.g.value(idx).ty.shape.clone();
                let m = ishape
                    .dims()
                    .last()
                    .ok_or("indices must have rank at least 1")?
                    .eval(&self.g.dims)
                    .map_err(|e| e.to_string())? as usize;
                if m == 0 || m > dshape.len() {
                    return Err(format!(
                        "indices' last dim {m} must be in 1..={}",
                        dshape.len()
                    ));
                }
                let out = node.output.first().ok_or("the node has no output")?.clone();
                let outer: u64 = dshape[..m].iter().product();
                let mut merged = vec![Dim::Fixed(outer)];
                merged.extend(dshape[m..].iter().map(|&d| Dim::Fixed(d)));
                let flat_data = self.emit_named(
                    &format!("{out}.data"),
                    Op::Reshape {
                        shape: Shape(merged),
                    },
                    &[data],
                )?;
                let strides: Vec<f64> = (0..m)
                    .map(|j| dshape[j + 1..m].iter().product::<u64>() as f64)
                    .collect();
                let idx_dtype = self.g.value(idx).ty.dtype;
                let lead = Shape(ishape.dims()[..ishape.rank() - 1].to_vec());
                let linear = if m == 1 {
                    self.emit_named(
                        &format!("{out}.indices"),
                        Op::Reshape { shape: lead },
                        &[idx],
                    )?
                } else {
                    let st = self.emit_named(
                        &format!("{out}.strides"),
                        Op::Constant {
                            dtype: idx_dtype,
                            shape: Shape::new([m as u64]),
                            init: Init::Inline(strides),
                        },
                        &[],
                    )?;
                    let scaled = self.emit_named(&format!("{out}.scaled"), Op::Mul, &[idx, st])?;
                    let sum = Op::Reduce {
                        kind: ReduceKind::Sum,
                        axes: vec![-1],
                        keepdims: false,
                    };
                    self.emit_named(&format!("{out}.indices"), sum, &[scaled])?
                };
                self.emit(node, Op::Gather { axis: 0 }, &[flat_data, linear])
            }
            "Unsqueeze" | "Squeeze" => {
                check_attrs(node, &[])?;
                let x = self.input(node, 0)?;
                let from = self.g.value(x).ty.shape.clone();
                let axes = self.const_ints(node, 1)?;
                let dims = if op_type == "Unsqueeze" {
                    let axes = axes.ok_or("input 1 (axes) is missing")?;
                    let rank = from.rank() + axes.len();
                    let mut at: Vec<usize> = axes
                        .iter()
                        .map(|&a| {
                            weft_ir::infer::norm_axis(a, rank, "axes").map_err(|e| e.to_string())
                        })
                        .collect::<NResult<_>>()?;
                    at.sort_unstable();
                    let mut rest = from.dims().iter().cloned();
                    (0..rank)
                        .map(|i| {
                            if at.contains(&i) {
                                Some(Dim::Fixed(1))
                            } else {
                                rest.next()
                            }
                        })
                        .collect::<Option<Vec<_>>>()
                        .ok_or("axes repeat")?
                } else {
                    let rank = from.rank();
                    let drop: Vec<usize> = match axes {
                        Some(axes) => axes
                            .iter()
                            .map(|&a| {
                                weft_ir::infer::norm_axis(a, rank, "axes")
                                    .map_err(|e| e.to_string())
                            })
                            .collect::<NResult<_>>()?,
                        None => (0..rank)
                            .filter(|&i| from.dims()[i].is_one(&self.g.dims))
                            .collect(),
                    };
                    if let Some(&bad) = drop.iter().find(|&&i| !from.dims()[i].is_one(&self.g.dims))
                    {
                        return Err(format!(
                            "cannot squeeze dim {bad} of size {}",
                            from.dims()[bad]
                        ));
                    }
                    from.dims()
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !drop.contains(i))
                        .map(|(_, d)| d.clone())
                        .collect()
                };
                self.reshape_to(node, x, dims)
            }
            "ReduceMean" | "ReduceSum" | "ReduceMax" => {
                check_attrs(node, &["axes", "keepdims", "noop_with_empty_axes"])?;
                let kind = match op_type {
                    "ReduceMean" => ReduceKind::Mean,
                    "ReduceSum" => ReduceKind::Sum,
                    _ => ReduceKind::Max,
                };
                let x = self.input(node, 0)?;
                let axes = match attr_ints(node, "axes")? {
                    Some(a) => Some(a),
                    None => self.const_ints(node, 1)?,
                };
                let keepdims = attr_int(node, "keepdims", 1)? != 0;
                if kind == ReduceKind::Max && self.g.value(x).ty.dtype == DType::Bool {
                    // The max of bools is their "any": a sum of 0/1 integers is non-zero
                    // exactly when one is true (and is 0, false, over an empty set).
                    let out = node.output.first().ok_or("the node has no output")?.clone();
                    let xi = self.emit_named(
                        &format!("{out}.as_i64"),
                        Op::Cast { to: DType::I64 },
                        &[x],
                    )?;
                    let axes = match axes {
                        Some(a) if !a.is_empty() => a,
                        _ => (0..self.rank_of(x) as i64).collect(),
                    };
                    let sum = Op::Reduce {
                        kind: ReduceKind::Sum,
                        axes,
                        keepdims,
                    };
                    let m = self.emit_named(&format!("{out}.any_i64"), sum, &[xi])?;
                    return self.emit(node, Op::Cast { to: DType::Bool }, &[m]);
                }
                let axes = match axes {
                    Some(a) if !a.is_empty() => a,
                    _ if attr_int(node, "noop_with_empty_axes", 0)? != 0 => {
                        let name = node.input.first().ok_or("input 0 is missing")?.clone();
                        let val = self.vals[&name].clone();
                        self.vals.insert(node.output[0].clone(), val);
                        return Ok(());
                    }
                    _ => (0..self.rank_of(x) as i64).collect(),
                };
                self.emit(
                    node,
                    Op::Reduce {
                        kind,
                        axes,
                        keepdims,
                    },
                    &[x],
                )
            }
            "LayerNormalization" | "RMSNormalization" => {
                check_attrs(node, &["axis", "epsilon", "stash_type"])?;
                let x = self.input(node, 0)?;
                if op_type == "LayerNormalization" {
                    self.layer_norm_stats(node, x)?;
                }
                let shape = self.g.value(x).ty.shape.clone();
                let rank = shape.rank();
                let axis = weft_ir::infer::norm_axis(attr_int(node, "axis", -1)?, rank, "axis")
                    .map_err(|e| e.to_string())?;
                let eps = attr_float(node, "epsilon", 1e-5)? as f64;
                let out = node.output.first().ok_or("the node has no output")?.clone();
                let mut params = vec![self.input(node, 1)?];
                if op_type == "LayerNormalization"
                    && node.input.get(2).is_some_and(|n| !n.is_empty())
                {
                    params.push(self.input(node, 2)?);
                }
                let op = if op_type == "LayerNormalization" {
                    Op::LayerNorm { eps }
                } else {
                    Op::RmsNorm { eps }
                };
                if axis + 1 == rank && params.iter().all(|&p| self.rank_of(p) == 1) {
                    let mut inputs = vec![x];
                    inputs.extend(params);
                    return self.emit(node, op, &inputs);
                }
                // Normalising over dims axis.. is normalising the last dim of a view that
                // merges them; scale and bias (shaped like those dims) are flattened alike.
                let dims = shape.eval(&self.g.dims).map_err(|e| e.to_string())?;
                let inner: u64 = dims[axis..].iter().product();
                let mut view: Vec<Dim> = shape.dims()[..axis].to_vec();
                view.push(Dim::Fixed(inner));
                let mut inputs = vec![self.emit_named(
                    &format!("{out}.view"),
                    Op::Reshape { shape: Shape(view) },
                    &[x],
                )?];
                for (i, p) in params.into_iter().enumerate() {
                    let flat = Op::Reshape {
                        shape: Shape(vec![Dim::Fixed(inner)]),
                    };
                    inputs.push(self.emit_named(&format!("{out}.param{i}"), flat, &[p])?);
                }
                let y = self.emit_named(&format!("{out}.norm"), op, &inputs)?;
                self.reshape_to(node, y, shape.dims().to_vec())
            }
            "Split" => {
                check_attrs(node, &["axis", "split", "num_outputs"])?;
                let x = self.input(node, 0)?;
                let shape = self.shape_of(x)?;
                let axis = attr_int(node, "axis", 0)?;
                let a = weft_ir::infer::norm_axis(axis, shape.len(), "axis")
                    .map_err(|e| e.to_string())?;
                let sizes: Vec<u64> = match (attr_ints(node, "split")?, self.const_ints(node, 1)?) {
                    (Some(s), _) | (None, Some(s)) => s.iter().map(|&v| v.max(0) as u64).collect(),
                    (None, None) => {
                        let n = node.output.len() as u64;
                        let len = shape[a];
                        // Equal pieces, the last one smaller when the dim does not divide (opset 18).
                        let piece = len.div_ceil(n.max(1));
                        (0..n)
                            .map(|i| piece.min(len.saturating_sub(i * piece)))
                            .collect()
                    }
                };
                self.emit_multi(node, Op::Split { axis, sizes }, vec![x])
            }
            "Slice" => {
                check_attrs(node, &[])?;
                let mut x = self.input(node, 0)?;
                let starts = self
                    .const_ints(node, 1)?
                    .ok_or("input 1 (starts) is missing")?;
                let ends = self
                    .const_ints(node, 2)?
                    .ok_or("input 2 (ends) is missing")?;
                let rank = self.rank_of(x);
                let axes = self
                    .const_ints(node, 3)?
                    .unwrap_or_else(|| (0..starts.len() as i64).collect());
                if let Some(steps) = self.const_ints(node, 4)?
                    && steps.iter().any(|&s| s != 1)
                {
                    return Err(format!("steps {steps:?}: only step 1 is supported"));
                }
                if starts.len() != ends.len() || starts.len() != axes.len() {
                    return Err("starts, ends and axes must have one entry per sliced axis".into());
                }
                let out = node.output.first().ok_or("the node has no output")?.clone();
                for (k, ((&s, &e), &a)) in starts.iter().zip(&ends).zip(&axes).enumerate() {
                    let axis = weft_ir::infer::norm_axis(a, rank, "axes")
                        .map_err(|e| e.to_string())? as i64;
                    let last = k + 1 == starts.len();
                    let name = if last {
                        out.clone()
                    } else {
                        format!("{out}.axis{axis}")
                    };
                    x = self.emit_named(
                        &name,
                        Op::Slice {
                            axis,
                            start: s,
                            end: e,
                        },
                        &[x],
                    )?;
                }
                self.vals.insert(
                    out,
                    Val {
                        id: Some(x),
                        constant: None,
                    },
                );
                Ok(())
            }
            other => Err(format!("no importer for {other}")),
        }
    }
}

/// `out[i] = data[i with dim axis replaced by indices[i]]` on constants (ONNX GatherElements).
fn gather_elements(data: &Tensor, idx: &Tensor, axis: i64) -> NResult<Tensor> {
    let (ds, is) = (data.shape(), idx.shape());
    if ds.len() != is.len() {
        return Err(format!(
            "data {ds:?} and indices {is:?} must have the same rank"
        ));
    }
    let a = weft_ir::infer::norm_axis(axis, ds.len(), "axis").map_err(|e| e.to_string())?;
    let indices = idx.as_i64().ok_or("indices must be integers")?;
    let strides = |shape: &[usize]| {
        let mut st = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            st[d] = st[d + 1] * shape[d + 1];
        }
        st
    };
    let (dst, ist) = (strides(ds), strides(is));
    let mut src = Vec::with_capacity(indices.len());
    for (n, &i) in indices.iter().enumerate() {
        let mut flat = 0;
        for d in 0..is.len() {
            let coord = (n / ist[d]) % is[d];
            let c = if d == a {
                let len = ds[a] as i64;
                let j = if i < 0 { i + len } else { i };
                if !(0..len).contains(&j) {
                    return Err(format!(
                        "index {i} is out of range for a dimension of size {len}"
                    ));
                }
                j as usize
            } else {
                if coord >= ds[d] {
                    return Err(format!(
                        "indices {is:?} exceed data {ds:?} outside the gather axis"
                    ));
                }
                coord
            };
            flat += c * dst[d];
        }
        src.push(flat);
    }
    let shape = is.to_vec();
    let t = match data.data() {
        TensorData::Float(v) => {
            Tensor::from_f32(data.dtype(), shape, src.iter().map(|&k| v[k]).collect())
        }
        TensorData::Int(v) => {
            Tensor::from_i64(data.dtype(), shape, src.iter().map(|&k| v[k]).collect())
        }
        TensorData::Bool(v) => Tensor::from_bool(shape, src.iter().map(|&k| v[k]).collect()),
    };
    t.map_err(|e| e.to_string())
}
