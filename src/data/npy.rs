//! NumPy .npy files (format versions 1.0, 2.0, 3.0), C order, little-endian.
//! Reading checks the header's claimed size against the bytes actually present before allocating.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};

use super::npy_header::{format_header, parse_header, DType, NpyHeader};
use crate::fsutil::write_atomic;
use crate::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// An array read from a .npy file, in its stored element type.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyArray {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    I64(ArrayD<i64>),
    I32(ArrayD<i32>),
    I16(ArrayD<i16>),
    I8(ArrayD<i8>),
    U8(ArrayD<u8>),
    Bool(ArrayD<bool>),
}

impl NpyArray {
    pub fn dtype(&self) -> DType {
        match self {
            NpyArray::F32(_) => DType::F32,
            NpyArray::F64(_) => DType::F64,
            NpyArray::I64(_) => DType::I64,
            NpyArray::I32(_) => DType::I32,
            NpyArray::I16(_) => DType::I16,
            NpyArray::I8(_) => DType::I8,
            NpyArray::U8(_) => DType::U8,
            NpyArray::Bool(_) => DType::Bool,
        }
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            NpyArray::F32(a) => a.shape(),
            NpyArray::F64(a) => a.shape(),
            NpyArray::I64(a) => a.shape(),
            NpyArray::I32(a) => a.shape(),
            NpyArray::I16(a) => a.shape(),
            NpyArray::I8(a) => a.shape(),
            NpyArray::U8(a) => a.shape(),
            NpyArray::Bool(a) => a.shape(),
        }
    }

    /// The array as int64 if it holds integers (any width); `None` for floats and bools.
    pub fn to_i64(&self) -> Option<ArrayD<i64>> {
        match self {
            NpyArray::I64(a) => Some(a.clone()),
            NpyArray::I32(a) => Some(a.mapv(i64::from)),
            NpyArray::I16(a) => Some(a.mapv(i64::from)),
            NpyArray::I8(a) => Some(a.mapv(i64::from)),
            NpyArray::U8(a) => Some(a.mapv(i64::from)),
            _ => None,
        }
    }
}

/// Read a .npy file.
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_npy_bytes(&path.display().to_string(), &bytes)
}

/// Parse .npy bytes; `name` is what error messages call the data (a path, or `archive.npz:key`).
/// float16 arrays come back as float32 (every float16 is exactly a float32).
pub fn read_npy_bytes(name: &str, bytes: &[u8]) -> Result<NpyArray> {
    let (header, start) = npy_layout(name, bytes)?;
    let data = &bytes[start..];
    let shape = IxDyn(&header.shape);
    let array = match header.dtype {
        DType::F16 => NpyArray::F32(build(name, shape, decode(data, f16_le_to_f32))?),
        DType::F32 => NpyArray::F32(build(name, shape, decode(data, f32::from_le_bytes))?),
        DType::F64 => NpyArray::F64(build(name, shape, decode(data, f64::from_le_bytes))?),
        DType::I64 => NpyArray::I64(build(name, shape, decode(data, i64::from_le_bytes))?),
        DType::I32 => NpyArray::I32(build(name, shape, decode(data, i32::from_le_bytes))?),
        DType::I16 => NpyArray::I16(build(name, shape, decode(data, i16::from_le_bytes))?),
        DType::I8 => NpyArray::I8(build(name, shape, decode(data, i8::from_le_bytes))?),
        DType::U8 => NpyArray::U8(build(name, shape, data.to_vec())?),
        DType::Bool => NpyArray::Bool(build(name, shape, data.iter().map(|&b| b != 0).collect())?),
    };
    Ok(array)
}

/// The header of .npy `bytes` and where its data starts, after checking the data present is
/// exactly what the header claims (so nothing is allocated or mapped on a lie).
pub(crate) fn npy_layout(name: &str, bytes: &[u8]) -> Result<(NpyHeader, usize)> {
    let (header_text, data) = split_header(name, bytes)?;
    let header = parse_header(name, &header_text)?;

    let count = header
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let needed = count.and_then(|c| c.checked_mul(header.dtype.item_size()));
    let shape_text = format!("{:?}", header.shape);
    let Some(needed) = needed else {
        return Err(Error::input(format!(
            "{name}: .npy shape {shape_text} is too large to be real"
        )));
    };
    if needed != data.len() {
        return Err(Error::input(format!(
            "{name}: .npy shape {shape_text} of {} needs {needed} data bytes, found {} \
             (truncated or corrupt file)",
            header.dtype.name(),
            data.len()
        )));
    }
    Ok((header, bytes.len() - data.len()))
}

/// IEEE half precision (little-endian bytes) to f32, exactly.
pub(crate) fn f16_le_to_f32(bytes: [u8; 2]) -> f32 {
    let h = u16::from_le_bytes(bytes);
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exponent = i32::from((h >> 10) & 0x1f);
    let mantissa = f32::from(h & 0x3ff);
    match exponent {
        0 => sign * mantissa * 2f32.powi(-24),
        31 if mantissa == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + mantissa / 1024.0) * 2f32.powi(e - 15),
    }
}

/// Split the magic + version + header length prefix from the data.
fn split_header<'a>(name: &str, bytes: &'a [u8]) -> Result<(String, &'a [u8])> {
    let not_npy = || {
        Error::input(format!(
            "{name}: not a .npy file (expected the magic bytes \\x93NUMPY at the start)"
        ))
    };
    let rest = bytes.strip_prefix(MAGIC).ok_or_else(not_npy)?;
    let (&[major, minor], rest) = rest.split_first_chunk::<2>().ok_or_else(not_npy)?;
    let (header_len, rest) = match major {
        1 => {
            let (len, rest) = rest.split_first_chunk::<2>().ok_or_else(not_npy)?;
            (usize::from(u16::from_le_bytes(*len)), rest)
        }
        2 | 3 => {
            let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(not_npy)?;
            let len = usize::try_from(u32::from_le_bytes(*len)).unwrap_or(usize::MAX);
            (len, rest)
        }
        _ => {
            return Err(Error::input(format!(
                "{name}: .npy format version {major}.{minor} is not supported (expected 1.0, 2.0 \
                 or 3.0)"
            )))
        }
    };
    if header_len > rest.len() {
        return Err(Error::input(format!(
            "{name}: .npy header claims {header_len} bytes but only {} remain (truncated file)",
            rest.len()
        )));
    }
    let (header, data) = rest.split_at(header_len);
    let text = if major == 3 {
        String::from_utf8(header.to_vec())
            .map_err(|_| Error::input(format!("{name}: .npy v3 header is not valid UTF-8")))?
    } else {
        // Versions 1 and 2 use latin-1: every byte is one char.
        header.iter().map(|&b| char::from(b)).collect()
    };
    Ok((text, data))
}

fn decode<T, const N: usize>(data: &[u8], from_le: fn([u8; N]) -> T) -> Vec<T> {
    let (chunks, _) = data.as_chunks::<N>();
    chunks.iter().map(|c| from_le(*c)).collect()
}

fn build<T>(name: &str, shape: IxDyn, values: Vec<T>) -> Result<ArrayD<T>> {
    ArrayD::from_shape_vec(shape, values)
        .map_err(|e| Error::input(format!("{name}: .npy data does not fit its shape: {e}")))
}

/// Element types the writer knows: their dtype and little-endian bytes.
trait NpyElement: Copy {
    const DTYPE: DType;
    fn put(self, out: &mut Vec<u8>);
}

macro_rules! npy_element {
    ($t:ty, $d:expr) => {
        impl NpyElement for $t {
            const DTYPE: DType = $d;
            fn put(self, out: &mut Vec<u8>) {
                out.extend(self.to_le_bytes());
            }
        }
    };
}
npy_element!(f32, DType::F32);
npy_element!(f64, DType::F64);
npy_element!(i64, DType::I64);
npy_element!(i32, DType::I32);
npy_element!(i16, DType::I16);
npy_element!(i8, DType::I8);
npy_element!(u8, DType::U8);

impl NpyElement for bool {
    const DTYPE: DType = DType::Bool;
    fn put(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
}

/// Encode in logical (C) order whatever the array's memory layout.
fn array_bytes<T: NpyElement>(array: &ArrayD<T>) -> Vec<u8> {
    let mut data = Vec::with_capacity(array.len() * T::DTYPE.item_size());
    array.iter().for_each(|v| v.put(&mut data));
    encode(&format_header(T::DTYPE, array.shape()), &data)
}

/// Encode an array as .npy bytes (version 1.0, or 2.0 if the header needs it).
pub fn npy_bytes(array: &NpyArray) -> Vec<u8> {
    match array {
        NpyArray::F32(a) => array_bytes(a),
        NpyArray::F64(a) => array_bytes(a),
        NpyArray::I64(a) => array_bytes(a),
        NpyArray::I32(a) => array_bytes(a),
        NpyArray::I16(a) => array_bytes(a),
        NpyArray::I8(a) => array_bytes(a),
        NpyArray::U8(a) => array_bytes(a),
        NpyArray::Bool(a) => array_bytes(a),
    }
}

pub(crate) fn encode(header: &str, data: &[u8]) -> Vec<u8> {
    // numpy pads so the data starts on a 64-byte boundary and ends the header with '\n'.
    let unpadded_v1 = MAGIC.len() + 2 + 2 + header.len() + 1;
    let v1 = unpadded_v1.div_ceil(64) * 64 - (MAGIC.len() + 4) <= usize::from(u16::MAX);
    let prefix = MAGIC.len() + 2 + if v1 { 2 } else { 4 };
    let total = (prefix + header.len() + 1).div_ceil(64) * 64;
    let header_len = total - prefix;

    let mut out = Vec::with_capacity(total + data.len());
    out.extend(MAGIC);
    if v1 {
        out.extend([1, 0]);
        out.extend((header_len as u16).to_le_bytes());
    } else {
        out.extend([2, 0]);
        out.extend((header_len as u32).to_le_bytes());
    }
    out.extend(header.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out.extend(data);
    out
}

/// Write any supported array atomically.
pub fn write_npy(path: &Path, array: &NpyArray) -> Result<()> {
    write_atomic(path, &npy_bytes(array))
}

/// Write a float32 array atomically (temp file in the same directory, fsync, rename).
pub fn write_npy_f32(path: &Path, array: &ArrayD<f32>) -> Result<()> {
    write_atomic(path, &array_bytes(array))
}

/// Write an int64 array atomically (temp file in the same directory, fsync, rename).
pub fn write_npy_i64(path: &Path, array: &ArrayD<i64>) -> Result<()> {
    write_atomic(path, &array_bytes(array))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr0, Array};

    fn round_trip(array: NpyArray) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        write_npy(&path, &array).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header_end = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        assert_eq!(header_end % 64, 0, "data is 64-byte aligned like numpy's");
        assert_eq!(read_npy(&path).unwrap(), array);
    }

    #[test]
    fn round_trips_every_dtype_and_rank() {
        let cube = Array::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 12 + j * 4 + k) as i64);
        let cube = cube.into_dyn();
        round_trip(NpyArray::F32(cube.mapv(|v| v as f32 * 0.5 - 3.0)));
        round_trip(NpyArray::F64(cube.mapv(|v| v as f64 / 7.0)));
        round_trip(NpyArray::I64(cube.mapv(|v| v - 1_000_000_000_000)));
        round_trip(NpyArray::I32(cube.mapv(|v| v as i32 - 10)));
        round_trip(NpyArray::I16(cube.mapv(|v| v as i16 - 300)));
        round_trip(NpyArray::I8(cube.mapv(|v| v as i8 - 12)));
        round_trip(NpyArray::U8(cube.mapv(|v| v as u8 * 10)));
        round_trip(NpyArray::Bool(cube.mapv(|v| v % 3 == 0)));
        round_trip(NpyArray::F32(arr0(2.5f32).into_dyn()));
        round_trip(NpyArray::I64(arr0(-7i64).into_dyn()));
        round_trip(NpyArray::U8(Array::zeros(IxDyn(&[0, 3]))));
    }

    #[test]
    fn writes_logical_order_of_non_standard_layouts() {
        let a = Array::from_shape_fn((2, 3), |(i, j)| (i * 3 + j) as f32).into_dyn();
        let t = a.t().to_owned();
        let back =
            read_npy_bytes("t", &npy_bytes(&NpyArray::F32(a.clone().reversed_axes()))).unwrap();
        assert_eq!(back, NpyArray::F32(t));
    }

    #[test]
    fn writer_helpers_write_f32_and_i64() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let a = Array::from_elem(IxDyn(&[2, 2]), 1.5f32);
        write_npy_f32(&p, &a).unwrap();
        assert_eq!(read_npy(&p).unwrap(), NpyArray::F32(a));
        let l = Array::from_vec(vec![3i64, 1, 2]).into_dyn();
        write_npy_i64(&p, &l).unwrap();
        assert_eq!(read_npy(&p).unwrap(), NpyArray::I64(l));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
    }

    /// A v2 header (4-byte length) as numpy writes for very long headers, and a v3 one.
    #[test]
    fn reads_v2_and_v3_headers() {
        for major in [2u8, 3] {
            let header = "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }\n";
            let mut bytes = MAGIC.to_vec();
            bytes.extend([major, 0]);
            bytes.extend((header.len() as u32).to_le_bytes());
            bytes.extend(header.as_bytes());
            for v in [1i32, -2, 3] {
                bytes.extend(v.to_le_bytes());
            }
            let a = read_npy_bytes("v", &bytes).unwrap();
            assert_eq!(a, NpyArray::I32(Array::from_vec(vec![1, -2, 3]).into_dyn()));
        }
    }

    #[test]
    fn writes_v2_when_the_header_is_too_long_for_v1() {
        // 30k dims of size 1 ("1, " each) make a header longer than 65535 bytes.
        let shape = vec![1usize; 30_000];
        let a = NpyArray::U8(Array::from_elem(IxDyn(&shape), 9u8));
        let bytes = npy_bytes(&a);
        assert_eq!(bytes[6], 2);
        assert_eq!(read_npy_bytes("big", &bytes).unwrap(), a);
    }

    fn err(bytes: &[u8]) -> String {
        read_npy_bytes("bad.npy", bytes).unwrap_err().to_string()
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        let good = npy_bytes(&NpyArray::F32(Array::zeros(IxDyn(&[4, 4]))));
        let e = err(&good[..good.len() - 3]);
        assert!(
            e.contains("bad.npy") && e.contains("needs 64 data bytes, found 61"),
            "{e}"
        );
        let e = err(&good[..40]);
        assert!(e.contains("truncated"), "{e}");
        assert!(err(b"PK\x03\x04 this is a zip").contains("not a .npy file"));
        assert!(err(b"").contains("not a .npy file"));
        assert!(err(b"\x93NUMPY\x01").contains("not a .npy file"));
        assert!(err(b"\x93NUMPY\x09\x00\x00\x00").contains("version 9.0"));
        let mut extra = good.clone();
        extra.push(0);
        assert!(err(&extra).contains("found 65"));
    }

    #[test]
    fn rejects_huge_claimed_shape_without_allocating() {
        for shape in ["(1000000, 1000000)", "(4294967296, 4294967296, 4294967296)"] {
            let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
            let bytes = encode(&header, &[0u8; 16]);
            let e = err(&bytes);
            assert!(e.contains("bad.npy") && (e.contains("needs") || e.contains("too large")));
        }
    }

    #[test]
    fn rejects_fortran_order_and_big_endian() {
        let f = encode(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }",
            &[0; 4],
        );
        assert!(err(&f).contains("fortran_order=True"));
        let b = encode(
            "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
            &[0; 4],
        );
        assert!(err(&b).contains("big-endian"));
    }

    #[test]
    fn integer_arrays_widen_to_i64() {
        let a = NpyArray::U8(Array::from_vec(vec![1u8, 255]).into_dyn());
        assert_eq!(a.to_i64().unwrap().as_slice().unwrap(), &[1, 255]);
        assert!(NpyArray::F32(arr0(1.0).into_dyn()).to_i64().is_none());
    }
}
