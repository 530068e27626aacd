//! The .npy header: a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
//! Parsed with a tiny recursive-descent reader because the format is a Python literal, not JSON.

use crate::{Error, Result};

/// Element types qsteer reads. All little-endian (or single byte) as numpy writes them on x86/ARM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F16,
    F32,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// numpy's name for the type, as users see it in `arr.dtype`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "float16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }

    pub fn item_size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::I16 | DType::F16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// The `descr` string numpy writes for this type.
    pub fn descr(self) -> &'static str {
        match self {
            DType::F16 => "<f2",
            DType::F32 => "<f4",
            DType::F64 => "<f8",
            DType::I64 => "<i8",
            DType::I32 => "<i4",
            DType::I16 => "<i2",
            DType::I8 => "|i1",
            DType::U8 => "|u1",
            DType::Bool => "|b1",
        }
    }

    fn from_descr(file: &str, descr: &str) -> Result<DType> {
        let mut chars = descr.chars();
        let order = chars.next().unwrap_or(' ');
        let code = chars.as_str();
        let dtype = match code {
            "f2" => DType::F16,
            "f4" => DType::F32,
            "f8" => DType::F64,
            "i8" => DType::I64,
            "i4" => DType::I32,
            "i2" => DType::I16,
            "i1" => DType::I8,
            "u1" => DType::U8,
            "b1" => DType::Bool,
            _ => {
                return Err(Error::input(format!(
                    "{file}: unsupported dtype '{descr}' (supported: float16, float32, float64, int64, \
                     int32, int16, int8, uint8, bool)"
                )))
            }
        };
        let ok = match order {
            '<' => true,
            // Byte order is meaningless for one-byte types; numpy writes '|'.
            '|' | '>' | '=' => dtype.item_size() == 1,
            _ => false,
        };
        if ok {
            return Ok(dtype);
        }
        if order == '>' {
            return Err(Error::input(format!(
                "{file}: big-endian dtype '{descr}' is not supported; expected little-endian \
                 '<{code}' (convert with `arr.astype(arr.dtype.newbyteorder('<'))`)"
            )));
        }
        Err(Error::input(format!(
            "{file}: dtype '{descr}' has byte order '{order}'; expected little-endian '<{code}'"
        )))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

/// A Python literal as it appears in a .npy header.
#[derive(Debug, Clone, PartialEq)]
enum PyValue {
    Str(String),
    Bool(bool),
    Int(u64),
    Tuple(Vec<PyValue>),
    List(Vec<PyValue>),
    Dict(Vec<(String, PyValue)>),
    None,
}

/// Parse the header dict and check it describes a C-order array of a supported type.
pub fn parse_header(file: &str, text: &str) -> Result<NpyHeader> {
    let mut parser = Parser { file, text, pos: 0 };
    let value = parser.value()?;
    parser.skip_ws();
    if parser.pos != text.len() {
        return Err(parser.error("unexpected text after the header dict"));
    }
    let PyValue::Dict(entries) = value else {
        return Err(Error::input(format!(
            "{file}: .npy header is not a dict: {}",
            text.trim()
        )));
    };

    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, value) in entries {
        match key.as_str() {
            "descr" => descr = Some(value),
            "fortran_order" => fortran = Some(value),
            "shape" => shape = Some(value),
            other => {
                return Err(Error::input(format!(
                    "{file}: unexpected key '{other}' in .npy header (expected descr, \
                     fortran_order, shape)"
                )))
            }
        }
    }
    let missing = |k: &str| Error::input(format!("{file}: .npy header has no '{k}' field"));

    let dtype = match descr.ok_or_else(|| missing("descr"))? {
        PyValue::Str(s) => DType::from_descr(file, &s)?,
        PyValue::List(_) => {
            return Err(Error::input(format!(
                "{file}: structured (record) dtype is not supported; save a plain numeric array"
            )))
        }
        other => {
            return Err(Error::input(format!(
                "{file}: .npy header field 'descr': expected a string, found {other:?}"
            )))
        }
    };

    match fortran.ok_or_else(|| missing("fortran_order"))? {
        PyValue::Bool(false) => {}
        PyValue::Bool(true) => {
            return Err(Error::input(format!(
                "{file}: fortran_order=True is not supported; expected C order \
                 (save `np.ascontiguousarray(arr)` instead)"
            )))
        }
        other => {
            return Err(Error::input(format!(
                "{file}: .npy header field 'fortran_order': expected True or False, found {other:?}"
            )))
        }
    }

    let shape = match shape.ok_or_else(|| missing("shape"))? {
        PyValue::Tuple(dims) => dims
            .into_iter()
            .map(|d| match d {
                PyValue::Int(n) => usize::try_from(n).map_err(|_| {
                    Error::input(format!("{file}: .npy shape dimension {n} is too large"))
                }),
                other => Err(Error::input(format!(
                    "{file}: .npy header field 'shape': expected integers, found {other:?}"
                ))),
            })
            .collect::<Result<Vec<_>>>()?,
        other => {
            return Err(Error::input(format!(
                "{file}: .npy header field 'shape': expected a tuple, found {other:?}"
            )))
        }
    };

    Ok(NpyHeader { dtype, shape })
}

/// The header dict numpy would write, without padding.
pub fn format_header(dtype: DType, shape: &[usize]) -> String {
    let dims = match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", parts.join(", "))
        }
    };
    format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {dims}, }}",
        dtype.descr()
    )
}

struct Parser<'a> {
    file: &'a str,
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> Error {
        Error::input(format!(
            "{}: malformed .npy header ({what} at character {}): {}",
            self.file,
            self.pos,
            self.text.trim()
        ))
    }

    fn rest(&self) -> &str {
        self.text.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<PyValue> {
        self.skip_ws();
        match self.peek() {
            Some('{') => self.dict(),
            Some('(') => Ok(PyValue::Tuple(self.sequence('(', ')')?)),
            Some('[') => Ok(PyValue::List(self.sequence('[', ']')?)),
            Some('\'') | Some('"') => Ok(PyValue::Str(self.string()?)),
            Some(c) if c.is_ascii_digit() => self.int(),
            Some(c) if c.is_ascii_alphabetic() => self.word(),
            Some(_) => Err(self.error("unexpected character")),
            None => Err(self.error("unexpected end")),
        }
    }

    fn dict(&mut self) -> Result<PyValue> {
        self.eat('{');
        let mut entries = Vec::new();
        loop {
            if self.eat('}') {
                return Ok(PyValue::Dict(entries));
            }
            self.skip_ws();
            let key = self.string()?;
            if !self.eat(':') {
                return Err(self.error("expected ':'"));
            }
            let value = self.value()?;
            entries.push((key, value));
            if !self.eat(',') {
                if self.eat('}') {
                    return Ok(PyValue::Dict(entries));
                }
                return Err(self.error("expected ',' or '}'"));
            }
        }
    }

    fn sequence(&mut self, open: char, close: char) -> Result<Vec<PyValue>> {
        self.eat(open);
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Ok(items);
            }
            items.push(self.value()?);
            if !self.eat(',') {
                if self.eat(close) {
                    return Ok(items);
                }
                return Err(self.error(&format!("expected ',' or '{close}'")));
            }
        }
    }

    fn string(&mut self) -> Result<String> {
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(self.error("expected a quoted string")),
        };
        self.pos += 1;
        let rest = self.rest();
        // Header strings are dtype codes and key names: no escapes needed.
        match rest.find(quote) {
            Some(end) => {
                let s = rest.get(..end).unwrap_or("").to_string();
                self.pos += end + 1;
                Ok(s)
            }
            None => Err(self.error("unterminated string")),
        }
    }

    fn int(&mut self) -> Result<PyValue> {
        let rest = self.rest();
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let text = rest.get(..digits).unwrap_or("");
        let n: u64 = text
            .parse()
            .map_err(|_| self.error("integer out of range"))?;
        self.pos += digits;
        // Python 2 wrote long integers as `3L`.
        if self.peek() == Some('L') {
            self.pos += 1;
        }
        Ok(PyValue::Int(n))
    }

    fn word(&mut self) -> Result<PyValue> {
        let rest = self.rest();
        let len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_')
                .len();
        let word = rest.get(..len).unwrap_or("");
        let value = match word {
            "True" => PyValue::Bool(true),
            "False" => PyValue::Bool(false),
            "None" => PyValue::None,
            _ => return Err(self.error(&format!("unknown name '{word}'"))),
        };
        self.pos += len;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_numpy_writes() {
        let h = parse_header(
            "x.npy",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }          \n",
        )
        .unwrap();
        assert_eq!(h.dtype, DType::F32);
        assert_eq!(h.shape, vec![2, 3]);
    }

    #[test]
    fn parses_scalar_vector_and_python2_longs() {
        let h = parse_header("x", "{'descr':'|u1','fortran_order':False,'shape':()}").unwrap();
        assert_eq!(h.shape, Vec::<usize>::new());
        let h = parse_header(
            "x",
            "{'shape': (7,), 'fortran_order': False, 'descr': '<i8'}",
        )
        .unwrap();
        assert_eq!((h.dtype, h.shape), (DType::I64, vec![7]));
        let h = parse_header(
            "x",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3L, 4L)}",
        )
        .unwrap();
        assert_eq!(h.shape, vec![3, 4]);
    }

    #[test]
    fn format_round_trips() {
        for shape in [vec![], vec![5], vec![2, 3, 4]] {
            let text = format_header(DType::I32, &shape);
            let h = parse_header("x", &text).unwrap();
            assert_eq!(
                h,
                NpyHeader {
                    dtype: DType::I32,
                    shape
                }
            );
        }
    }

    #[test]
    fn rejects_with_reasons() {
        let err = |t: &str| parse_header("f.npy", t).unwrap_err().to_string();
        assert!(
            err("{'descr': '>f4', 'fortran_order': False, 'shape': (2,)}").contains("big-endian")
        );
        assert!(
            err("{'descr': '<f4', 'fortran_order': True, 'shape': (2,)}")
                .contains("fortran_order=True")
        );
        assert!(
            err("{'descr': '<c8', 'fortran_order': False, 'shape': (2,)}")
                .contains("unsupported dtype '<c8'")
        );
        assert!(
            err("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}")
                .contains("structured")
        );
        assert!(err("{'descr': '<f4', 'shape': (2,)}").contains("'fortran_order'"));
        assert!(
            err("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}")
                .contains("unexpected key 'x'")
        );
        assert!(
            err("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}").contains("malformed")
        );
        assert!(err(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}"
        )
        .contains("out of range"));
        assert!(err("garbage").contains("f.npy"));
        assert!(err("{'descr': '<f4'").contains("malformed"));
    }
}
