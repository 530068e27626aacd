//! Samples of a .npy array read in place: the file is memory-mapped (or, for a compressed .npz
//! member, held as its decompressed bytes) and a batch converts only its own samples to f32.
//! Integers and bools become exact f32 values; an integer beyond ±2^24, where f32 stops being
//! exact, is an error naming the file and sample.

use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use memmap2::{Mmap, UncheckedAdvice};
use sha2::{Digest, Sha256};

use super::npy::{f16_le_to_f32, npy_layout};
use super::npy_header::DType;
use super::samples::{check_finite, Store};
use crate::{Error, Result};

/// Largest integer magnitude every smaller integer of which f32 holds exactly.
const EXACT_INT: i64 = 1 << 24;

/// Bytes holding a .npy (or several, for an .npz): a mapped file or owned memory.
#[derive(Clone)]
pub(crate) enum Bytes {
    Mapped(Arc<Mmap>),
    Owned(Arc<Vec<u8>>),
}

impl Bytes {
    /// Map `path` read-only. An empty file cannot be mapped and is no .npy: it is held as
    /// zero owned bytes so the header check reports it.
    pub(crate) fn map(path: &Path) -> Result<Bytes> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Ok(Bytes::Owned(Arc::new(Vec::new())));
        }
        // SAFETY: the map is read-only; a file truncated by another process while we read it
        // would fault, which is the documented risk of every mmap reader (numpy's mmap_mode too).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(Bytes::Mapped(Arc::new(map)))
    }

    /// Drop the mapped pages around `bytes[from..from + len]` from this process once read:
    /// they stay in the page cache, but a mapped page counts in the process's resident memory
    /// until unmapped, so without this a pass over a 30 GB file would show 30 GB resident. A
    /// fault maps a whole page-cache folio (up to 2 MiB), so the window is widened to 2 MiB
    /// boundaries; a neighbour being read by another thread just faults its pages in again.
    fn release(&self, from: usize, len: usize) {
        const WINDOW: usize = 2 << 20;
        if let Bytes::Mapped(m) = self {
            let start = from / WINDOW * WINDOW;
            let end = (from + len)
                .div_ceil(WINDOW)
                .saturating_mul(WINDOW)
                .min(m.len());
            // SAFETY: the map is a read-only shared file mapping: MADV_DONTNEED only makes the
            // next access fault the same bytes in again from the file, never zeroes them.
            let _ =
                unsafe { m.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start) };
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// One .npy array (axis 0 = sample) inside `bytes[region]`.
pub(crate) struct NpyStore {
    source: String,
    bytes: Bytes,
    /// Where the samples start in `bytes`.
    data_start: usize,
    dtype: DType,
    count: usize,
    sample_shape: Vec<usize>,
    /// File size and modification time, for the fingerprint of big sets.
    stamp: Vec<u8>,
}

impl NpyStore {
    /// Map the .npy file at `path`.
    #[cfg(test)]
    pub(crate) fn open(path: &Path) -> Result<NpyStore> {
        let bytes = Bytes::map(path)?;
        let len = bytes.as_slice().len();
        NpyStore::in_region(path.display().to_string(), bytes, 0..len, file_stamp(path))
    }

    /// The .npy held in `bytes[region]` (a stored .npz member, or decompressed bytes).
    pub(crate) fn in_region(
        source: String,
        bytes: Bytes,
        region: Range<usize>,
        stamp: Vec<u8>,
    ) -> Result<NpyStore> {
        let npy = bytes.as_slice().get(region.clone()).ok_or_else(|| {
            Error::input(format!("{source}: archive member lies outside the file"))
        })?;
        let (header, offset) = npy_layout(&source, npy)?;
        let Some((&count, sample_shape)) = header.shape.split_first() else {
            return Err(Error::input(format!(
                "{source}: inputs are a 0-d scalar; expected shape [N, ...sample shape] with \
                 samples on axis 0"
            )));
        };
        Ok(NpyStore {
            source,
            data_start: region.start + offset,
            dtype: header.dtype,
            count,
            sample_shape: sample_shape.to_vec(),
            bytes,
            stamp,
        })
    }

    fn sample_bytes(&self) -> usize {
        self.sample_shape.iter().product::<usize>() * self.dtype.item_size()
    }
}

/// Size and modification time of `path` (empty if unreadable).
pub(crate) fn file_stamp(path: &Path) -> Vec<u8> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    let mut stamp = meta.len().to_le_bytes().to_vec();
    if let Ok(since) = meta
        .modified()
        .map(|m| m.duration_since(std::time::UNIX_EPOCH))
    {
        let nanos = since.map_or(0, |d| d.as_nanos());
        stamp.extend(nanos.to_le_bytes());
    }
    stamp
}

impl Store for NpyStore {
    fn len(&self) -> usize {
        self.count
    }

    fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }

    fn read_into(&self, indices: &[usize], out: &mut [f32]) -> Result<()> {
        let size: usize = self.sample_shape.iter().product();
        let step = self.sample_bytes();
        let all = self.bytes.as_slice();
        for (k, &i) in indices.iter().enumerate() {
            let from = self.data_start + i * step;
            let raw = &all[from..from + step];
            let dst = &mut out[k * size..(k + 1) * size];
            if let Err((element, value)) = convert(self.dtype, raw, dst) {
                return Err(Error::input(format!(
                    "{}: sample {i} holds the integer {value} (element {element}), beyond \
                     ±2^24 = {EXACT_INT} where float32 stops being exact; qsteer carries \
                     samples as float32",
                    self.source
                )));
            }
            self.bytes.release(from, step);
        }
        check_finite(&self.source, indices, size, out)
    }

    fn identity(&self, hasher: &mut Sha256) -> Result<()> {
        hasher.update(b"npy");
        hasher.update(self.dtype.descr());
        hasher.update((self.count as u64).to_le_bytes());
        for &d in &self.sample_shape {
            hasher.update((d as u64).to_le_bytes());
        }
        hasher.update(&self.stamp);
        // A sample of the bytes too, spread evenly: content edits that keep size and time (a
        // copy with preserved times of other data) still change the key.
        let all = self.bytes.as_slice();
        let data = &all[self.data_start..self.data_start + self.count * self.sample_bytes()];
        let blocks = 256usize;
        let block = 4096usize.min(data.len());
        if block > 0 {
            for b in 0..blocks {
                let at = (data.len() - block) * b / (blocks - 1);
                hasher.update(&data[at..at + block]);
                self.bytes.release(self.data_start + at, block);
            }
        }
        Ok(())
    }

    fn stored_type(&self) -> &str {
        self.dtype.name()
    }
}

/// Convert little-endian `raw` of `dtype` into `out`; `Err((element, value))` for an integer
/// f32 cannot hold exactly.
fn convert(dtype: DType, raw: &[u8], out: &mut [f32]) -> std::result::Result<(), (usize, i64)> {
    fn each<const N: usize>(raw: &[u8], out: &mut [f32], f: impl Fn([u8; N]) -> f32) {
        let (chunks, _) = raw.as_chunks::<N>();
        for (o, c) in out.iter_mut().zip(chunks) {
            *o = f(*c);
        }
    }
    fn ints<const N: usize>(
        raw: &[u8],
        out: &mut [f32],
        f: impl Fn([u8; N]) -> i64,
    ) -> std::result::Result<(), (usize, i64)> {
        let (chunks, _) = raw.as_chunks::<N>();
        for (k, (o, c)) in out.iter_mut().zip(chunks).enumerate() {
            let v = f(*c);
            if v.unsigned_abs() > EXACT_INT as u64 {
                return Err((k, v));
            }
            *o = v as f32;
        }
        Ok(())
    }
    match dtype {
        DType::F32 => each(raw, out, f32::from_le_bytes),
        DType::F64 => each(raw, out, |b| f64::from_le_bytes(b) as f32),
        DType::F16 => each(raw, out, f16_le_to_f32),
        DType::I64 => ints(raw, out, i64::from_le_bytes)?,
        DType::I32 => ints(raw, out, |b| i64::from(i32::from_le_bytes(b)))?,
        DType::I16 | DType::I8 | DType::U8 | DType::Bool => {
            // Always exact in f32.
            match dtype {
                DType::I16 => each(raw, out, |b| f32::from(i16::from_le_bytes(b))),
                DType::I8 => each(raw, out, |b: [u8; 1]| f32::from(b[0] as i8)),
                DType::U8 => each(raw, out, |b: [u8; 1]| f32::from(b[0])),
                _ => each(raw, out, |b: [u8; 1]| f32::from(u8::from(b[0] != 0))),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::npy::{npy_bytes, read_npy, NpyArray};
    use crate::data::samples::Samples;
    use ndarray::{Array, IxDyn};

    fn mapped(dir: &Path, a: &NpyArray) -> Samples {
        let p = dir.join("inputs.npy");
        std::fs::write(&p, npy_bytes(a)).unwrap();
        Samples::new(NpyStore::open(&p).unwrap())
    }

    /// The mapped reader gives exactly what the whole-file reader gives, sample by sample.
    #[test]
    fn mapped_npy_reads_what_the_whole_file_reader_reads() {
        let dir = tempfile::tempdir().unwrap();
        let a = Array::from_shape_fn(IxDyn(&[5, 2, 3]), |i| {
            (i[0] * 100 + i[1] * 10 + i[2]) as f32 * 0.37 - 20.0
        });
        let s = mapped(dir.path(), &NpyArray::F32(a));
        let whole = match read_npy(&dir.path().join("inputs.npy")).unwrap() {
            NpyArray::F32(w) => w,
            _ => unreachable!(),
        };
        assert_eq!(s.shape(), whole.shape());
        assert_eq!(s.read_all().unwrap(), whole);
        let picked = s.read(&[4, 0]).unwrap();
        assert_eq!(
            picked.index_axis(ndarray::Axis(0), 0),
            whole.index_axis(ndarray::Axis(0), 4)
        );
        assert_eq!(
            picked.index_axis(ndarray::Axis(0), 1),
            whole.index_axis(ndarray::Axis(0), 0)
        );
    }

    #[test]
    fn integers_bools_and_halves_load_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let big = (1i64 << 24) - 1;
        let ints =
            Array::from_vec(vec![0, -7, big, -big, 1 << 24, 3]).into_shape_with_order((3, 2));
        let s = mapped(dir.path(), &NpyArray::I64(ints.unwrap().into_dyn()));
        assert_eq!(s.stored_type(), "int64");
        let got = s.read_all().unwrap();
        assert_eq!(
            got.as_slice().unwrap(),
            &[0., -7., big as f32, -big as f32, 16777216., 3.]
        );
        assert_eq!(got[[1, 0]] as i64, big);

        let bools = NpyArray::Bool(Array::from_vec(vec![true, false, true]).into_dyn());
        let s = mapped(dir.path(), &bools);
        assert_eq!(s.read_all().unwrap().as_slice().unwrap(), &[1., 0., 1.]);

        let u8s = NpyArray::U8(Array::from_vec(vec![0u8, 255]).into_dyn());
        let s = mapped(dir.path(), &u8s);
        assert_eq!(s.read_all().unwrap().as_slice().unwrap(), &[0., 255.]);

        // float16 1.0, -2.5, 65504 (max), the smallest subnormal.
        let halves = [0x3c00u16, 0xc100, 0x7bff, 0x0001];
        let raw: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
        let header = crate::data::npy_header::format_header(DType::F16, &[4]);
        let p = dir.path().join("inputs.npy");
        std::fs::write(&p, crate::data::npy::encode(&header, &raw)).unwrap();
        let s = Samples::new(NpyStore::open(&p).unwrap());
        assert_eq!(
            s.read_all().unwrap().as_slice().unwrap(),
            &[1.0, -2.5, 65504.0, 2f32.powi(-24)]
        );
    }

    #[test]
    fn an_inexact_integer_is_named_with_its_file_and_sample() {
        let dir = tempfile::tempdir().unwrap();
        let a = Array::from_vec(vec![1i64, 2, 3, (1 << 24) + 1]).into_shape_with_order((2, 2));
        let s = mapped(dir.path(), &NpyArray::I64(a.unwrap().into_dyn()));
        s.read(&[0]).unwrap();
        let e = s.read(&[1]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = e.to_string();
        assert!(
            e.contains("inputs.npy: sample 1 holds the integer 16777217 (element 1)"),
            "{e}"
        );
    }
}
