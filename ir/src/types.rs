//! Element types, symbolic shapes and tensor types.

use std::collections::BTreeMap;
use std::fmt;

/// Element type of a tensor value.
///
/// Floating types narrower than f32 are *storage* types: executors compute in f32
/// and round to the storage type where a value has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum DType {
    F32,
    F16,
    Bf16,
    F8e4m3,
    I64,
    I32,
    Bool,
}

impl DType {
    /// Every dtype, in the order used by documentation and error messages.
    pub const ALL: [DType; 7] = [
        DType::F32,
        DType::F16,
        DType::Bf16,
        DType::F8e4m3,
        DType::I64,
        DType::I32,
        DType::Bool,
    ];

    /// Bytes one element occupies in memory.
    pub const fn size_bytes(self) -> u64 {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::Bf16 => 2,
            DType::F8e4m3 | DType::Bool => 1,
            DType::I64 => 8,
        }
    }

    /// Floating-point types (the ones arithmetic ops accept).
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::Bf16 | DType::F8e4m3)
    }

    /// Integer types (the ones index operands accept).
    pub const fn is_int(self) -> bool {
        matches!(self, DType::I64 | DType::I32)
    }

    /// The lowercase name used in the text form and in JSON.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
            DType::F8e4m3 => "f8e4m3",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::Bool => "bool",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One dimension of a shape: a number, or a symbolic expression over dimensions the
/// graph binds at compile time.
///
/// A symbolic expression is a product of factors (symbols such as `batch`, or whole
/// numbers), optionally divided by a whole number: `seq`, `batch*seq`, `2*seq`,
/// `seq/8`. That is all sharding and token flattening need, and equality is decided by
/// evaluating both sides under the graph's bindings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(untagged))]
pub enum Dim {
    Fixed(u64),
    Sym(String),
}

/// Why a symbolic dimension could not be evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DimError {
    #[error("symbolic dimension `{0}` is not bound (bind it in the graph's `dims`)")]
    Unbound(String),
    #[error("dimension `{0}` is not a product of symbols and numbers with an optional `/N`")]
    Malformed(String),
    #[error("dimension `{expr}` evaluates to {value}, which is not divisible by {divisor}")]
    NotDivisible {
        expr: String,
        value: u64,
        divisor: u64,
    },
    /// A size computed from user-given dims does not fit the integer that holds it; the
    /// figure is refused rather than wrapped or saturated.
    #[error("{0} does not fit in 64 bits")]
    Overflow(String),
}

impl DimError {
    /// This error about the size of the value `name`: a figure that does not fit says
    /// whose it is, so the user can find the value in the model.
    pub fn of_value(self, name: &str) -> DimError {
        match self {
            DimError::Overflow(what) => DimError::Overflow(format!("{what} (value `{name}`)")),
            other => other,
        }
    }
}

/// A parsed symbolic dimension: `coef * syms[0] * syms[1] ... / div`.
struct DimTerm {
    coef: u64,
    syms: Vec<String>,
    div: u64,
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl DimTerm {
    fn parse(expr: &str) -> Result<DimTerm, DimError> {
        let bad = || DimError::Malformed(expr.to_owned());
        let (product, div) = match expr.split_once('/') {
            Some((p, d)) => (p, d.trim().parse::<u64>().map_err(|_| bad())?),
            None => (expr, 1),
        };
        if div == 0 {
            return Err(bad());
        }
        let mut term = DimTerm {
            coef: 1,
            syms: Vec::new(),
            div,
        };
        for factor in product.split('*').map(str::trim) {
            if let Ok(n) = factor.parse::<u64>() {
                term.coef = term
                    .coef
                    .checked_mul(n)
                    .ok_or_else(|| DimError::Overflow(format!("dimension `{expr}`")))?;
            } else if is_ident(factor) {
                term.syms.push(factor.to_owned());
            } else {
                return Err(bad());
            }
        }
        Ok(term)
    }

    fn into_dim(mut self) -> Dim {
        let g = gcd(self.coef, self.div);
        self.coef /= g;
        self.div /= g;
        if self.syms.is_empty() && self.div == 1 {
            return Dim::Fixed(self.coef);
        }
        let mut text = String::new();
        if self.coef != 1 || self.syms.is_empty() {
            text.push_str(&self.coef.to_string());
        }
        for s in &self.syms {
            if !text.is_empty() {
                text.push('*');
            }
            text.push_str(s);
        }
        if self.div != 1 {
            text.push_str(&format!("/{}", self.div));
        }
        Dim::Sym(text)
    }
}

impl Dim {
    /// A symbolic dimension.
    pub fn sym(name: impl Into<String>) -> Dim {
        Dim::Sym(name.into())
    }

    /// The value of this dimension under `bindings`.
    pub fn eval(&self, bindings: &DimBindings) -> Result<u64, DimError> {
        let expr = match self {
            Dim::Fixed(n) => return Ok(*n),
            Dim::Sym(expr) => expr,
        };
        let term = DimTerm::parse(expr)?;
        let mut value = term.coef;
        for s in &term.syms {
            let v = bindings
                .get(s)
                .copied()
                .ok_or_else(|| DimError::Unbound(s.clone()))?;
            value = value
                .checked_mul(v)
                .ok_or_else(|| DimError::Overflow(format!("dimension `{expr}`")))?;
        }
        if value % term.div != 0 {
            return Err(DimError::NotDivisible {
                expr: expr.clone(),
                value,
                divisor: term.div,
            });
        }
        Ok(value / term.div)
    }

    /// The symbols this dimension mentions (empty for a fixed one or a malformed one).
    pub fn symbols(&self) -> Vec<String> {
        match self {
            Dim::Fixed(_) => Vec::new(),
            Dim::Sym(expr) => DimTerm::parse(expr).map(|t| t.syms).unwrap_or_default(),
        }
    }

    /// This dimension times `k`, kept symbolic where it was. A product past 64 bits stays
    /// an unevaluated expression (`n*k`), so evaluating it is [`DimError::Overflow`]
    /// instead of a saturated, wrong size.
    pub fn mul(&self, k: u64) -> Dim {
        match self {
            Dim::Fixed(n) => n
                .checked_mul(k)
                .map_or_else(|| Dim::Sym(format!("{n}*{k}")), Dim::Fixed),
            Dim::Sym(expr) => match DimTerm::parse(expr) {
                Ok(mut t) => match t.coef.checked_mul(k) {
                    Some(coef) => {
                        t.coef = coef;
                        t.into_dim()
                    }
                    None => {
                        let mut text = format!("{}*{k}", t.coef);
                        for s in &t.syms {
                            text.push_str(&format!("*{s}"));
                        }
                        if t.div != 1 {
                            text.push_str(&format!("/{}", t.div));
                        }
                        Dim::Sym(text)
                    }
                },
                Err(_) => self.clone(),
            },
        }
    }

    /// This dimension divided by `k`; `None` when it does not divide under `bindings`.
    pub fn div_exact(&self, k: u64, bindings: &DimBindings) -> Option<Dim> {
        if k == 0 || self.eval(bindings).ok()? % k != 0 {
            return None;
        }
        match self {
            Dim::Fixed(n) => Some(Dim::Fixed(n / k)),
            Dim::Sym(expr) => {
                let mut t = DimTerm::parse(expr).ok()?;
                t.div = t.div.checked_mul(k)?;
                Some(t.into_dim())
            }
        }
    }

    /// Whether two dims are equal under `bindings` (structurally, where either fails to evaluate).
    pub fn same(&self, other: &Dim, bindings: &DimBindings) -> bool {
        match (self.eval(bindings), other.eval(bindings)) {
            (Ok(a), Ok(b)) => a == b,
            _ => self == other,
        }
    }

    /// Whether this dim is the number 1 under `bindings`.
    pub fn is_one(&self, bindings: &DimBindings) -> bool {
        self.eval(bindings) == Ok(1)
    }
}

impl From<u64> for Dim {
    fn from(n: u64) -> Dim {
        Dim::Fixed(n)
    }
}

impl From<&str> for Dim {
    fn from(name: &str) -> Dim {
        Dim::Sym(name.to_owned())
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// Values of the symbolic dimensions, sorted by name so every printed form is stable.
pub type DimBindings = BTreeMap<String, u64>;

/// A tensor shape; each dimension is fixed or symbolic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// A shape from anything that converts into dims.
    pub fn new<D: Into<Dim>>(dims: impl IntoIterator<Item = D>) -> Shape {
        Shape(dims.into_iter().map(Into::into).collect())
    }

    /// A rank-0 shape.
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The dimensions.
    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// Concrete dimensions under `bindings`.
    pub fn eval(&self, bindings: &DimBindings) -> Result<Vec<u64>, DimError> {
        self.0.iter().map(|d| d.eval(bindings)).collect()
    }

    /// Number of elements under `bindings`; [`DimError::Overflow`] when it does not fit
    /// in a `u64`, so an absurd shape is an error instead of a wrong count.
    pub fn numel(&self, bindings: &DimBindings) -> Result<u64, DimError> {
        let dims = self.eval(bindings)?;
        dims_product(&dims).map_err(|e| {
            // A concrete shape reads the same evaluated: say it once.
            if self.0.iter().all(|d| matches!(d, Dim::Fixed(_))) {
                e
            } else {
                DimError::Overflow(format!("the element count of {self} = {dims:?}"))
            }
        })
    }

    /// Whether two shapes are equal under `bindings`, dim by dim ([`Dim::same`]): `[batch, seq]`
    /// and `[batch, 16]` are the same shape when `seq = 16`.
    pub fn same(&self, other: &Shape, bindings: &DimBindings) -> bool {
        self.rank() == other.rank()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| a.same(b, bindings))
    }
}

/// The product of concrete dims (an element count), or [`DimError::Overflow`] naming
/// them: sizes from user files are multiplied only through here or [`Shape::numel`].
pub fn dims_product(dims: &[u64]) -> Result<u64, DimError> {
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DimError::Overflow(format!("the element count of {dims:?}")))
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The type of a tensor value: element type and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Shape) -> TensorType {
        TensorType { dtype, shape }
    }

    /// Bytes of the tensor under `bindings` ([`DimError::Overflow`] past `u64`).
    pub fn size_bytes(&self, bindings: &DimBindings) -> Result<u64, DimError> {
        self.shape
            .numel(bindings)?
            .checked_mul(self.dtype.size_bytes())
            .ok_or_else(|| DimError::Overflow(format!("the byte size of {self}")))
    }

    /// Whether two types are equal under `bindings`: one dtype and the same evaluated shape.
    pub fn same(&self, other: &TensorType, bindings: &DimBindings) -> bool {
        self.dtype == other.dtype && self.shape.same(&other.shape, bindings)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bindings() -> DimBindings {
        [("batch".to_owned(), 2), ("seq".to_owned(), 16)].into()
    }

    #[test]
    fn symbolic_dims_evaluate() {
        let b = bindings();
        assert_eq!(Dim::sym("batch*seq").eval(&b), Ok(32));
        assert_eq!(Dim::sym("2*seq/8").eval(&b), Ok(4));
        assert_eq!(
            Dim::sym("tokens").eval(&b),
            Err(DimError::Unbound("tokens".into()))
        );
        assert!(matches!(
            Dim::sym("seq+1").eval(&b),
            Err(DimError::Malformed(_))
        ));
        assert!(matches!(
            Dim::sym("seq/0").eval(&b),
            Err(DimError::Malformed(_))
        ));
        assert!(matches!(
            Dim::sym("seq/3").eval(&b),
            Err(DimError::NotDivisible { .. })
        ));
    }

    #[test]
    fn dim_arithmetic_stays_symbolic() {
        let b = bindings();
        assert_eq!(Dim::sym("seq").mul(4), Dim::sym("4*seq"));
        assert_eq!(Dim::sym("seq").div_exact(4, &b), Some(Dim::sym("seq/4")));
        assert_eq!(Dim::sym("seq/4").mul(4), Dim::sym("seq"));
        assert_eq!(Dim::sym("4*seq").div_exact(2, &b), Some(Dim::sym("2*seq")));
        assert_eq!(Dim::Fixed(8).div_exact(3, &b), None);
        assert!(Dim::sym("batch*seq").same(&Dim::Fixed(32), &b));
    }

    #[test]
    fn sizes_past_64_bits_are_errors_not_saturated() {
        let b: DimBindings = [("seq".to_owned(), 1 << 40)].into();
        assert!(matches!(
            Dim::sym("seq*seq").eval(&b),
            Err(DimError::Overflow(_))
        ));
        let big = Shape::new([Dim::sym("seq"), Dim::sym("seq")]);
        assert!(matches!(big.numel(&b), Err(DimError::Overflow(_))));
        let ok = Shape::new([Dim::sym("seq"), Dim::Fixed(1 << 22)]);
        assert_eq!(ok.numel(&b), Ok(1 << 62));
        let ty = TensorType::new(DType::F32, ok);
        assert!(matches!(ty.size_bytes(&b), Err(DimError::Overflow(_))));
        // A product past 64 bits stays an expression that refuses to evaluate.
        for d in [
            Dim::Fixed(u64::MAX),
            Dim::sym("seq").mul(1 << 30),
            Dim::sym("seq/4").mul(1 << 30),
        ] {
            assert!(
                matches!(d.mul(1 << 40).eval(&b), Err(DimError::Overflow(_))),
                "{d}"
            );
        }
        assert_eq!(Dim::Fixed(3).mul(4), Dim::Fixed(12));
    }
}
