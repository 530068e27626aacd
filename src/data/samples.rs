//! One input's samples, read on demand: a [`Store`] (memory, a mapped .npy, an image folder,
//! parts joined end to end) seen through an optional index view, so a subset or a split is a
//! list of indices, never a copy of the data.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Where samples live. `read_into` is the only way data leaves a store, a batch at a time.
pub(crate) trait Store: Send + Sync {
    /// Samples in the store.
    fn len(&self) -> usize;
    /// Shape of one sample.
    fn sample_shape(&self) -> &[usize];
    /// Write samples `indices` (each `< len()`), in that order, into `out`
    /// (`indices.len() × sample size` values). Values are checked finite here, so a bad value is
    /// reported naming its file and sample when the batch holding it is read.
    fn read_into(&self, indices: &[usize], out: &mut [f32]) -> Result<()>;
    /// Feed the fingerprint something that changes when the content does, without reading all
    /// of it (used for sets too big to hash value by value; see `Dataset::fingerprint`).
    fn identity(&self, hasher: &mut Sha256) -> Result<()>;
    /// The element type as stored (`float32`, `int64`, `uint8 image`...), for messages.
    fn stored_type(&self) -> &str;
    /// A 0-d array given where samples were expected (only arrays from memory can be).
    fn is_scalar(&self) -> bool {
        false
    }
    /// The samples this store is a decoded copy of, whose identity it takes.
    fn original(&self) -> Option<&Samples> {
        None
    }
}

/// The samples of one input: a store and which of its samples, in which order.
#[derive(Clone)]
pub struct Samples {
    store: Arc<dyn Store>,
    /// Store indices this view shows, in order; `None`: all of them in order.
    view: Option<Arc<[usize]>>,
}

impl fmt::Debug for Samples {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Samples({} {:?})",
            self.store.stored_type(),
            self.shape()
        )
    }
}

impl Samples {
    pub(crate) fn new(store: impl Store + 'static) -> Samples {
        Samples {
            store: Arc::new(store),
            view: None,
        }
    }

    /// Samples held in memory: `array` is `[N, ...sample shape]`; `source` names it in messages.
    pub fn from_array(source: impl Into<String>, array: ArrayD<f32>) -> Samples {
        Samples::new(InMemory::new(source.into(), array))
    }

    /// `a`'s samples followed by `b`'s (an explicit split's two parts read as one set).
    pub fn concat(source: impl Into<String>, a: &Samples, b: &Samples) -> Result<Samples> {
        let source = source.into();
        if a.sample_shape() != b.sample_shape() {
            return Err(Error::input(format!(
                "{source}: sample shapes {:?} and {:?} differ",
                a.sample_shape(),
                b.sample_shape()
            )));
        }
        Ok(Samples::new(Concat {
            parts: vec![a.clone(), b.clone()],
            sample_shape: a.sample_shape().to_vec(),
        }))
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.view.as_ref().map_or(self.store.len(), |v| v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape of one sample.
    pub fn sample_shape(&self) -> &[usize] {
        self.store.sample_shape()
    }

    /// `[N, ...sample shape]`, the shape the whole set would have in memory.
    pub fn shape(&self) -> Vec<usize> {
        std::iter::once(self.len())
            .chain(self.sample_shape().iter().copied())
            .collect()
    }

    /// Values in one sample.
    pub fn sample_size(&self) -> usize {
        self.sample_shape().iter().product()
    }

    /// The element type as stored (`float32`, `int64`, `image`...).
    pub fn stored_type(&self) -> &str {
        self.store.stored_type()
    }

    /// True for a 0-d array, which has no sample axis (an input error for a dataset).
    pub fn is_scalar(&self) -> bool {
        self.store.is_scalar()
    }

    /// A view of the samples at `indices` (positions in this view), in that order; no data is
    /// read or copied.
    ///
    /// # Panics
    /// If an index is `>= self.len()`.
    pub fn select(&self, indices: &[usize]) -> Samples {
        let n = self.len();
        let mapped: Arc<[usize]> = indices
            .iter()
            .map(|&i| {
                assert!(i < n, "sample index {i} out of range for {n} samples");
                self.store_index(i)
            })
            .collect();
        Samples {
            store: self.store.clone(),
            view: Some(mapped),
        }
    }

    fn store_index(&self, i: usize) -> usize {
        self.view.as_ref().map_or(i, |v| v[i])
    }

    /// Read the samples at `indices` (positions in this view) as `[indices.len(), ...sample]`.
    pub fn read(&self, indices: &[usize]) -> Result<ArrayD<f32>> {
        let n = self.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::runtime(format!(
                "sample {bad} requested from a set of {n}"
            )));
        }
        let store_indices: Vec<usize> = indices.iter().map(|&i| self.store_index(i)).collect();
        let mut out = vec![0f32; indices.len() * self.sample_size()];
        self.store.read_into(&store_indices, &mut out)?;
        let mut shape = vec![indices.len()];
        shape.extend_from_slice(self.sample_shape());
        ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| Error::runtime(e.to_string()))
    }

    /// Read samples `range` (positions in this view).
    pub fn read_range(&self, range: Range<usize>) -> Result<ArrayD<f32>> {
        self.read(&range.collect::<Vec<_>>())
    }

    /// Read every sample into one array. Only for sets bounded by a user's setting (a
    /// calibration subset, a training batch source), never a whole evaluation set.
    pub fn read_all(&self) -> Result<ArrayD<f32>> {
        self.read_range(0..self.len())
    }

    /// The same samples decoded into memory, for algorithms that read them many times. The
    /// fingerprint and stored type stay those of the original, so cache keys do not change.
    pub fn cached(&self) -> Result<Samples> {
        let values = InMemory::new(String::new(), self.read_all()?);
        Ok(Samples::new(Cached {
            values,
            original: self.clone(),
        }))
    }

    /// Content identity for the fingerprint: the store's identity and the view's indices.
    pub(crate) fn identity(&self, hasher: &mut Sha256) -> Result<()> {
        if let (Some(original), None) = (self.store.original(), &self.view) {
            return original.identity(hasher);
        }
        self.store.identity(hasher)?;
        match &self.view {
            Some(v) => {
                hasher.update([1]);
                hasher.update((v.len() as u64).to_le_bytes());
                for &i in v.iter() {
                    hasher.update((i as u64).to_le_bytes());
                }
            }
            None => hasher.update([0]),
        }
        Ok(())
    }
}

/// The first non-finite value of `values` (`sample_size` values per sample, samples at
/// `indices` of `source`), as an input error naming the file and sample.
pub(crate) fn check_finite(
    source: &str,
    indices: &[usize],
    sample_size: usize,
    values: &[f32],
) -> Result<()> {
    let Some((flat, value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) else {
        return Ok(());
    };
    let sample = flat
        .checked_div(sample_size)
        .and_then(|k| indices.get(k))
        .copied()
        .unwrap_or(0);
    Err(Error::input(format!(
        "{source}: sample {sample} contains {value} (inputs must be finite)"
    )))
}

/// Samples already in memory (tests, synthetic data, arrays built by the engine).
struct InMemory {
    source: String,
    array: ArrayD<f32>,
    sample_shape: Vec<usize>,
}

impl InMemory {
    fn new(source: String, array: ArrayD<f32>) -> InMemory {
        let array = array.as_standard_layout().into_owned();
        let sample_shape = array.shape().get(1..).unwrap_or(&[]).to_vec();
        InMemory {
            source,
            array,
            sample_shape,
        }
    }
}

impl Store for InMemory {
    fn len(&self) -> usize {
        self.array.shape().first().copied().unwrap_or(0)
    }

    fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }

    fn read_into(&self, indices: &[usize], out: &mut [f32]) -> Result<()> {
        let size: usize = self.sample_shape.iter().product();
        let all = self.array.as_slice().unwrap_or(&[]);
        for (k, &i) in indices.iter().enumerate() {
            out[k * size..(k + 1) * size].copy_from_slice(&all[i * size..(i + 1) * size]);
        }
        check_finite(&self.source, indices, size, out)
    }

    fn identity(&self, hasher: &mut Sha256) -> Result<()> {
        hasher.update(b"memory");
        super::hash_values(hasher, self.array.iter().map(|v| v.to_le_bytes()));
        Ok(())
    }

    fn stored_type(&self) -> &str {
        "float32"
    }

    fn is_scalar(&self) -> bool {
        self.array.ndim() == 0
    }
}

/// Samples read once into memory, standing for their original.
struct Cached {
    values: InMemory,
    original: Samples,
}

impl Store for Cached {
    fn len(&self) -> usize {
        self.values.len()
    }

    fn sample_shape(&self) -> &[usize] {
        self.values.sample_shape()
    }

    fn read_into(&self, indices: &[usize], out: &mut [f32]) -> Result<()> {
        // Checked finite when they were read from the original.
        let size: usize = self.values.sample_shape.iter().product();
        let all = self.values.array.as_slice().unwrap_or(&[]);
        for (k, &i) in indices.iter().enumerate() {
            out[k * size..(k + 1) * size].copy_from_slice(&all[i * size..(i + 1) * size]);
        }
        Ok(())
    }

    fn identity(&self, hasher: &mut Sha256) -> Result<()> {
        self.original.identity(hasher)
    }

    fn stored_type(&self) -> &str {
        self.original.stored_type()
    }

    fn original(&self) -> Option<&Samples> {
        Some(&self.original)
    }
}

/// Parts read one after the other as one set.
struct Concat {
    parts: Vec<Samples>,
    sample_shape: Vec<usize>,
}

impl Store for Concat {
    fn len(&self) -> usize {
        self.parts.iter().map(Samples::len).sum()
    }

    fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }

    fn read_into(&self, indices: &[usize], out: &mut [f32]) -> Result<()> {
        let size: usize = self.sample_shape.iter().product();
        // Group runs of indices that fall in the same part, so each part reads them at once.
        let mut k = 0;
        while k < indices.len() {
            let (part, local) = self.locate(indices[k]);
            let mut run = vec![local];
            while let Some(&next) = indices.get(k + run.len()) {
                match self.locate(next) {
                    (p, l) if p == part => run.push(l),
                    _ => break,
                }
            }
            let values = self.parts[part].read(&run)?;
            let end = k + run.len();
            out[k * size..end * size].copy_from_slice(values.as_slice().unwrap_or(&[]));
            k = end;
        }
        Ok(())
    }

    fn identity(&self, hasher: &mut Sha256) -> Result<()> {
        hasher.update(b"concat");
        for p in &self.parts {
            p.identity(hasher)?;
        }
        Ok(())
    }

    fn stored_type(&self) -> &str {
        self.parts.first().map_or("float32", |p| p.stored_type())
    }
}

impl Concat {
    /// (part, index in part) of sample `i`.
    fn locate(&self, mut i: usize) -> (usize, usize) {
        for (p, part) in self.parts.iter().enumerate() {
            if i < part.len() {
                return (p, i);
            }
            i -= part.len();
        }
        (self.parts.len(), i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    fn counting(n: usize) -> Samples {
        Samples::from_array(
            "mem",
            Array::from_shape_fn(IxDyn(&[n, 2]), |i| (i[0] * 10 + i[1]) as f32),
        )
    }

    #[test]
    fn views_of_views_read_the_right_samples() {
        let s = counting(6);
        let v = s.select(&[5, 1, 3]).select(&[2, 0]);
        assert_eq!(v.len(), 2);
        assert_eq!(v.shape(), vec![2, 2]);
        let a = v.read_all().unwrap();
        assert_eq!(a.as_slice().unwrap(), &[30., 31., 50., 51.]);
        assert!(v.read(&[2]).is_err());
    }

    #[test]
    fn concat_reads_across_parts_in_order() {
        let a = counting(3);
        let b = counting(2).select(&[1, 0]);
        let c = Samples::concat("a+b", &a, &b).unwrap();
        assert_eq!(c.len(), 5);
        let got = c.read(&[4, 0, 2, 3]).unwrap();
        assert_eq!(
            got.as_slice().unwrap(),
            &[0., 1., 0., 1., 20., 21., 10., 11.]
        );
        let other = Samples::from_array("x", ArrayD::zeros(IxDyn(&[1, 3])));
        assert!(Samples::concat("a+x", &a, &other).is_err());
    }

    #[test]
    fn a_non_finite_value_names_the_source_and_sample() {
        let mut a = ArrayD::<f32>::zeros(IxDyn(&[4, 2]));
        a[[2, 1]] = f32::NAN;
        let s = Samples::from_array("d/inputs.npy", a);
        s.read(&[0, 1, 3]).unwrap();
        let e = s.select(&[3, 2]).read_all().unwrap_err().to_string();
        assert!(e.contains("d/inputs.npy: sample 2 contains NaN"), "{e}");
    }
}
