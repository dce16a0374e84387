//! The `.npy` format: one array, a small text header, then the raw elements.
//!
//! Writing goes through `npyz`. Reading parses the header here instead, because `npyz`'s
//! reader multiplies the declared shape out unchecked (a header such as
//! `'shape': (4294967296, 4294967296, 0)` panics on overflow in debug builds) and
//! allocates whatever header length the file declares; tensor files come from users, and
//! no input may crash Weft. The header is a Python dict literal; this reader accepts the
//! subset every writer produces (string keys; string, bool and int-tuple values).

use std::io;

use half::f16;
use weft_ir::{DType, Tensor, TensorData, TensorError};

/// Why bytes are not an array Weft can read.
#[derive(Debug)]
pub(super) enum NpyError {
    /// The bytes are not a well-formed `.npy` file; the text says how.
    Malformed(String),
    UnsupportedDtype {
        descr: String,
        reason: &'static str,
    },
    FortranOrder,
    Tensor(TensorError),
}

/// The `.npy` bytes of a tensor. bf16 and f8e4m3 are written as `<f4`: numpy has no such
/// dtypes, and every value they hold is exactly an f32, so nothing is lost. f16 is `<f2`.
pub(super) fn encode(t: &Tensor) -> io::Result<Vec<u8>> {
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    match (t.dtype(), t.data()) {
        (DType::F16, TensorData::Float(v)) => {
            write("<f2", &shape, v.iter().map(|&x| f16::from_f32(x)))
        }
        (_, TensorData::Float(v)) => write("<f4", &shape, v.iter().copied()),
        // A Tensor keeps i32 values in i32 range, so the cast is exact.
        (DType::I32, TensorData::Int(v)) => write("<i4", &shape, v.iter().map(|&x| x as i32)),
        (_, TensorData::Int(v)) => write("<i8", &shape, v.iter().copied()),
        (_, TensorData::Bool(v)) => write("|b1", &shape, v.iter().copied()),
    }
}

fn write<T: npyz::Serialize>(
    descr: &str,
    shape: &[u64],
    values: impl IntoIterator<Item = T>,
) -> io::Result<Vec<u8>> {
    use npyz::WriterBuilder;
    let type_str: npyz::TypeStr = descr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut out = Vec::new();
    let mut writer = npyz::WriteOptions::new()
        .dtype(npyz::DType::Plain(type_str))
        .shape(shape)
        .writer(&mut out)
        .begin_nd()?;
    writer.extend(values)?;
    writer.finish()?;
    Ok(out)
}

/// Element types read, by the descr without its byte-order character.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    F32,
    F16,
    F64,
    I64,
    I32,
    Bool,
}

const SUPPORTED: &str =
    "Weft reads float32, float16, float64 (as f32), int64, int32 and bool arrays";

/// Weft has no 8-, 16-bit or unsigned integer types; widening would silently change what
/// the model computes (wrap-around, the output's dtype), so such arrays are refused.
const NARROW: &str = "Weft's integer types are int64 and int32, and it does not widen int8, \
                      int16 or unsigned arrays silently; convert them (arr.astype(np.int64)) \
                      if the model's input is an integer of that type";

impl Elem {
    fn parse(descr: &str) -> Result<Elem, NpyError> {
        let unsupported = |reason| NpyError::UnsupportedDtype {
            descr: descr.to_owned(),
            reason,
        };
        let (order, code) = match descr.char_indices().nth(1) {
            Some((i, _)) => descr.split_at(i),
            None => return Err(unsupported(SUPPORTED)),
        };
        let elem = match code {
            "f4" => Elem::F32,
            "f2" => Elem::F16,
            "f8" => Elem::F64,
            "i8" => Elem::I64,
            "i4" => Elem::I32,
            "i2" | "i1" | "u8" | "u4" | "u2" | "u1" => return Err(unsupported(NARROW)),
            "b1" => Elem::Bool,
            _ => return Err(unsupported(SUPPORTED)),
        };
        match order {
            "<" => Ok(elem),
            "|" if elem.width() == 1 => Ok(elem),
            ">" if elem.width() == 1 => Ok(elem),
            ">" => Err(unsupported(
                "big-endian arrays are not supported; save a little-endian copy \
                 (arr.astype(arr.dtype.newbyteorder('<')))",
            )),
            _ => Err(unsupported(
                "the byte order must be '<' (or '|' for one-byte types)",
            )),
        }
    }

    fn width(self) -> usize {
        match self {
            Elem::F64 | Elem::I64 => 8,
            Elem::F32 | Elem::I32 => 4,
            Elem::F16 => 2,
            Elem::Bool => 1,
        }
    }
}

/// Decodes a whole `.npy` file. The data must be exactly as long as the shape says.
pub(super) fn decode(bytes: &[u8]) -> Result<Tensor, NpyError> {
    let malformed = |s: &str| NpyError::Malformed(s.to_owned());
    let rest = bytes
        .strip_prefix(b"\x93NUMPY")
        .ok_or_else(|| malformed("not a .npy file (it does not start with \\x93NUMPY)"))?;
    let (len, rest) = match rest {
        [1, _, a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]) as usize, rest),
        [2 | 3, _, a, b, c, d, rest @ ..] => (u32::from_le_bytes([*a, *b, *c, *d]) as usize, rest),
        [major, _, ..] => {
            return Err(NpyError::Malformed(format!(
                "unknown .npy format version {major}"
            )));
        }
        _ => return Err(malformed("the file ends inside the .npy preamble")),
    };
    if rest.len() < len {
        return Err(malformed("the file ends inside the .npy header"));
    }
    let (header, data) = rest.split_at(len);
    let header =
        std::str::from_utf8(header).map_err(|_| malformed("the .npy header is not valid text"))?;
    let header = Header::parse(header)?;
    let elem = Elem::parse(&header.descr)?;
    // Fortran order only differs from C order when two or more dims exceed 1.
    if header.fortran_order && header.shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(NpyError::FortranOrder);
    }
    let numel = header
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| malformed("the shape's element count overflows"))?;
    let want = numel as u128 * elem.width() as u128;
    if data.len() as u128 != want {
        return Err(NpyError::Malformed(format!(
            "the data is {} bytes, but shape {:?} of '{}' needs {want}",
            data.len(),
            header.shape,
            header.descr
        )));
    }
    elements(elem, header.shape, data)
}

fn elements(elem: Elem, shape: Vec<usize>, data: &[u8]) -> Result<Tensor, NpyError> {
    let bits = data.chunks_exact(elem.width()).map(le_bits);
    #[rustfmt::skip] // a table: one element type a line
    let tensor = match elem {
        Elem::F32 => Tensor::from_f32(DType::F32, shape, bits.map(|b| f32::from_bits(b as u32)).collect()),
        Elem::F16 => Tensor::from_f32(DType::F16, shape, bits.map(|b| f16::from_bits(b as u16).to_f32()).collect()),
        // Weft has no f64: values are rounded to the nearest f32.
        Elem::F64 => Tensor::from_f32(DType::F32, shape, bits.map(|b| f64::from_bits(b) as f32).collect()),
        Elem::I64 => Tensor::from_i64(DType::I64, shape, bits.map(|b| b as i64).collect()),
        Elem::I32 => Tensor::from_i64(DType::I32, shape, bits.map(|b| i64::from(b as u32 as i32)).collect()),
        // numpy writes bools as 0 and 1; any other byte counts as true.
        Elem::Bool => Tensor::from_bool(shape, bits.map(|b| b != 0).collect()),
    };
    tensor.map_err(NpyError::Tensor)
}

/// At most 8 bytes as a little-endian integer, zero-extended.
fn le_bits(chunk: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    for (b, c) in bytes.iter_mut().zip(chunk) {
        *b = *c;
    }
    u64::from_le_bytes(bytes)
}

/// The three keys of a `.npy` header.
#[derive(Clone, Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

impl Header {
    /// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` and its
    /// variations in spacing, quotes and trailing commas. Exactly these three keys are
    /// allowed, as numpy requires. Structured dtypes (a list as `descr`) are reported as
    /// unsupported rather than malformed.
    fn parse(text: &str) -> Result<Header, NpyError> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let (mut descr, mut fortran_order, mut shape) = (None, None, None);
        p.expect(b'{')?;
        while !p.eat(b'}') {
            let key = p.string()?;
            p.expect(b':')?;
            match key.as_str() {
                "descr" if descr.is_none() => descr = Some(p.descr()?),
                "fortran_order" if fortran_order.is_none() => fortran_order = Some(p.bool()?),
                "shape" if shape.is_none() => shape = Some(p.shape()?),
                _ => return Err(p.error(&format!("unexpected key '{key}'"))),
            }
            if !p.eat(b',') {
                p.expect(b'}')?;
                break;
            }
        }
        p.skip_ws();
        if p.i != p.s.len() {
            return Err(p.error("text after the header dict"));
        }
        match (descr, fortran_order, shape) {
            (Some(descr), Some(fortran_order), Some(shape)) => Ok(Header {
                descr,
                fortran_order,
                shape,
            }),
            _ => Err(p.error("the header needs 'descr', 'fortran_order' and 'shape'")),
        }
    }
}

/// A cursor over header text. Nothing nests, so nothing recurses.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> NpyError {
        NpyError::Malformed(format!("bad .npy header at byte {}: {what}", self.i))
    }

    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    /// Skips spaces, then consumes `c` if it comes next.
    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        let found = self.s.get(self.i) == Some(&c);
        if found {
            self.i += 1;
        }
        found
    }

    fn expect(&mut self, c: u8) -> Result<(), NpyError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", c as char)))
        }
    }

    /// A quoted string without escapes (descrs and keys need none).
    fn string(&mut self) -> Result<String, NpyError> {
        self.skip_ws();
        let quote = match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err(self.error("expected a quoted string")),
        };
        let start = self.i + 1;
        let len = self.s[start..]
            .iter()
            .position(|&c| c == quote || c == b'\\')
            .ok_or_else(|| self.error("unterminated string"))?;
        if self.s[start + len] == b'\\' {
            return Err(self.error("escapes in strings are not supported"));
        }
        self.i = start + len + 1;
        String::from_utf8(self.s[start..start + len].to_vec())
            .map_err(|_| self.error("the string is not valid text"))
    }

    fn descr(&mut self) -> Result<String, NpyError> {
        self.skip_ws();
        if self.s.get(self.i) == Some(&b'[') {
            return Err(NpyError::UnsupportedDtype {
                descr: "a structured dtype".into(),
                reason: SUPPORTED,
            });
        }
        self.string()
    }

    fn bool(&mut self) -> Result<bool, NpyError> {
        self.skip_ws();
        for (word, value) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(value);
            }
        }
        Err(self.error("expected True or False"))
    }

    /// A tuple of non-negative ints: `()`, `(3,)`, `(2, 3)`; Python 2's `3L` is accepted.
    fn shape(&mut self) -> Result<Vec<usize>, NpyError> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        while !self.eat(b')') {
            self.skip_ws();
            let digits = self.s[self.i..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if digits == 0 {
                return Err(self.error("expected a dimension"));
            }
            let text = std::str::from_utf8(&self.s[self.i..self.i + digits]).unwrap_or_default();
            let dim = text
                .parse::<usize>()
                .map_err(|_| self.error("a dimension is too large"))?;
            self.i += digits;
            self.eat(b'L');
            dims.push(dim);
            if !self.eat(b',') {
                self.expect(b')')?;
                break;
            }
        }
        Ok(dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text: &str) -> Result<Header, String> {
        Header::parse(text).map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn headers_numpy_and_others_write() {
        let want = Header {
            descr: "<f4".into(),
            fortran_order: false,
            shape: vec![2, 3],
        };
        for text in [
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }          \n",
            "{\"shape\":(2,3),\"fortran_order\":False,\"descr\":\"<f4\"}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L)}",
        ] {
            assert_eq!(header(text), Ok(want.clone()), "{text}");
        }
        let scalar = header("{'descr': '|b1', 'fortran_order': True, 'shape': (), }").unwrap();
        assert_eq!((scalar.shape, scalar.fortran_order), (vec![], true));
        assert_eq!(
            header("{'descr':'<i8','fortran_order':False,'shape':(5,),}")
                .unwrap()
                .shape,
            vec![5]
        );
    }

    #[test]
    fn bad_headers_are_errors() {
        for text in [
            "",
            "{",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}",
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': ()}",
            "{'descr': '<f4', 'fortran_order': Maybe, 'shape': ()}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2 3)}",
            "{'descr': '<f\\4', 'fortran_order': False, 'shape': ()}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': ()} trailing",
            "{'descr: '<f4', 'fortran_order': False, 'shape': ()}",
        ] {
            assert!(Header::parse(text).is_err(), "{text}");
        }
        assert!(matches!(
            Header::parse("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': ()}"),
            Err(NpyError::UnsupportedDtype { .. })
        ));
    }

    #[test]
    fn descrs() {
        assert_eq!(Elem::parse("<f4").unwrap(), Elem::F32);
        for narrow in ["|i1", "<i2", "|u1", "<u2", "<u4", "<u8"] {
            match Elem::parse(narrow) {
                Err(NpyError::UnsupportedDtype { reason, .. }) => {
                    assert!(reason.contains("does not widen"), "{narrow}: {reason}")
                }
                other => panic!("{narrow}: {other:?}"),
            }
        }
        assert_eq!(Elem::parse("|b1").unwrap(), Elem::Bool);
        for bad in ["", "<", "<c8", "<U3", "|f4", "=f4", "<f4x", "é"] {
            assert!(Elem::parse(bad).is_err(), "{bad}");
        }
        match Elem::parse(">f4") {
            Err(NpyError::UnsupportedDtype { reason, .. }) => {
                assert!(reason.contains("big-endian"))
            }
            other => panic!("{other:?}"),
        }
    }
}
