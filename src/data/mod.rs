//! Datasets (DESIGN.md §2): arrays or image folders in, float32 samples (+ optional labels) out.
//!
//! Formats: a directory with `inputs.npy` / `inputs.<input_name>.npy` and optional `labels.npy`;
//! one `.npz` with the same keys; an image folder `ROOT/<class>/<file>.png|jpg` with an optional
//! `ROOT/preprocess.json`. A directory with `calibration/` and `evaluation/` is an explicit split.

mod assemble;
mod images;
mod load;
mod model_check;
mod npy;
mod npy_header;
mod npy_store;
mod npz;
mod preprocess;
mod samples;
mod split;

use std::ops::Range;

use ndarray::ArrayD;
use sha2::{Digest, Sha256};

pub use images::{load_image_folder, load_image_folder_with};
pub use load::load_dataset;
pub use npy::{
    npy_bytes, read_npy, read_npy_bytes, write_npy, write_npy_f32, write_npy_i64, NpyArray,
};
pub use npy_header::DType;
pub use npz::{read_npz, read_npz_bytes};
pub use preprocess::{ChannelOrder, Layout, Preprocess, Resize, Size};
pub use samples::Samples;
pub use split::SplitMix64;
pub use split::{load_split, seeded_split, DatasetPair, Split, SplitInfo, SplitKind};

/// Samples for every model input, with optional labels. Axis 0 of every input is the sample.
/// Inputs are read on demand a batch at a time ([`Dataset::batch`]); only labels are in memory.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The path as the user gave it, for messages.
    pub name: String,
    /// One entry per model input, all with the same number of samples.
    pub inputs: Vec<NamedInput>,
    /// Class index per sample (non-negative), when the dataset has labels.
    pub labels: Option<Vec<i64>>,
    /// Class names by label index (image folders), for reporting.
    pub classes: Option<Vec<String>>,
    /// Where the labels came from, so a bad one is named in its file.
    pub label_origin: Option<LabelOrigin>,
}

/// The file (or folder) labels were read from and, for a subset (a split), each sample's
/// index in it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelOrigin {
    /// `dir/labels.npy`, `d.npz:labels`, an image folder.
    pub source: String,
    /// Index in `source` of each label; `None`: the labels are the file's, in order.
    pub index: Option<Vec<usize>>,
}

#[derive(Debug, Clone)]
pub struct NamedInput {
    /// The model input this feeds: `Some` for `inputs.<name>.npy`, `None` means "by position".
    pub name: Option<String>,
    /// Where the array came from (a file, `archive.npz:inputs.npy`, an image folder), for messages.
    pub source: String,
    /// The samples, `[N, ...sample shape]`, read on demand.
    pub data: Samples,
}

impl NamedInput {
    /// An input held in memory (`array` is `[N, ...sample shape]`).
    pub fn from_array(name: Option<String>, source: impl Into<String>, array: ArrayD<f32>) -> Self {
        let source = source.into();
        NamedInput {
            name,
            data: Samples::from_array(source.clone(), array),
            source,
        }
    }
}

/// Up to this many bytes of float32 samples, algorithms that score many models on one set keep
/// it decoded in memory ([`Dataset::cached_up_to`]); bigger sets stream on every pass.
pub const MULTI_PASS_CACHE: usize = 256 << 20;

/// Up to this many bytes of float32 samples, the fingerprint hashes every value; above it, the
/// stores' identities (file size, time, header, sampled bytes, image paths) and the view.
const VALUE_HASH_LIMIT: usize = 256 << 20;

impl Dataset {
    /// Build a dataset from inputs (usually [`NamedInput::from_array`]), with the same checks as
    /// the file loaders (equal sample counts, non-negative labels, not empty); values are
    /// checked finite when a batch reads them, as for files.
    pub fn from_arrays(
        name: impl Into<String>,
        inputs: Vec<NamedInput>,
        labels: Option<Vec<i64>>,
    ) -> crate::Result<Dataset> {
        let dataset = Dataset {
            name: name.into(),
            inputs,
            labels,
            classes: None,
            label_origin: None,
        };
        assemble::validate(&dataset, &dataset.name)?;
        Ok(dataset)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.inputs.first().map_or(0, |i| i.data.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples at `indices`, in that order: a view, no data is read or copied.
    ///
    /// # Panics
    /// If an index is `>= self.len()`; indices come from [`seeded_split`] or the caller's own range.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        Dataset {
            name: self.name.clone(),
            inputs: self
                .inputs
                .iter()
                .map(|input| NamedInput {
                    name: input.name.clone(),
                    source: input.source.clone(),
                    data: input.data.select(indices),
                })
                .collect(),
            labels: self
                .labels
                .as_ref()
                .map(|labels| indices.iter().map(|&i| labels[i]).collect()),
            classes: self.classes.clone(),
            label_origin: self.label_origin.as_ref().map(|o| LabelOrigin {
                source: o.source.clone(),
                index: Some(
                    indices
                        .iter()
                        .map(|&i| o.index.as_ref().map_or(i, |ix| ix[i]))
                        .collect(),
                ),
            }),
        }
    }

    /// Check the labels against a model with `classes` outputs: a label outside
    /// `0..classes` is an input error naming the labels file and the label's index in it
    /// (not its position in a split).
    pub fn check_labels(&self, classes: usize) -> crate::Result<()> {
        let Some(labels) = &self.labels else {
            return Ok(());
        };
        let bad = |l: i64| usize::try_from(l).map_or(true, |l| l >= classes);
        let Some(i) = labels.iter().position(|&l| bad(l)) else {
            return Ok(());
        };
        let count = labels.iter().filter(|&&l| bad(l)).count();
        let (source, at) = match &self.label_origin {
            Some(o) => (o.source.as_str(), o.index.as_ref().map_or(i, |ix| ix[i])),
            None => (self.name.as_str(), i),
        };
        let others = match count {
            1 => String::new(),
            n => format!(
                " ({n} of the {} labels used are out of range)",
                labels.len()
            ),
        };
        Err(crate::Error::input(format!(
            "{source}: label {} at index {at} is out of range: the model outputs {classes} \
             classes, so labels must be 0..{}{others}",
            labels[i],
            classes.saturating_sub(1)
        )))
    }

    /// Shape of one sample of input `input` (the input's shape without axis 0).
    ///
    /// # Panics
    /// If `input >= self.inputs.len()`.
    pub fn sample_shape(&self, input: usize) -> &[usize] {
        self.inputs[input].data.sample_shape()
    }

    /// Every input's samples `range`, each `[range.len(), ...sample shape]`, in input order.
    pub fn batch(&self, range: Range<usize>) -> crate::Result<Vec<ArrayD<f32>>> {
        self.gather(&range.collect::<Vec<_>>())
    }

    /// Every input's samples at `indices`, in that order.
    pub fn gather(&self, indices: &[usize]) -> crate::Result<Vec<ArrayD<f32>>> {
        self.inputs.iter().map(|i| i.data.read(indices)).collect()
    }

    /// Consecutive batches of `size` samples (the last may be shorter): `(first sample, inputs)`.
    pub fn batches(
        &self,
        size: usize,
    ) -> impl Iterator<Item = crate::Result<(usize, Vec<ArrayD<f32>>)>> + '_ {
        let n = self.len();
        let size = size.max(1);
        (0..n)
            .step_by(size)
            .map(move |from| Ok((from, self.batch(from..(from + size).min(n))?)))
    }

    /// For algorithms that run the same samples many times (scoring every candidate of a
    /// greedy search, every epoch): the samples decoded into memory once if they take at most
    /// `limit` bytes as float32, else the dataset as it is (streamed on every pass). The
    /// fingerprint does not change.
    pub fn cached_up_to(&self, limit: usize) -> crate::Result<Dataset> {
        if self.f32_bytes() > limit {
            return Ok(self.clone());
        }
        let mut cached = self.clone();
        for input in &mut cached.inputs {
            input.data = input.data.cached()?;
        }
        Ok(cached)
    }

    /// Size of all samples as float32.
    pub fn f32_bytes(&self) -> usize {
        self.inputs
            .iter()
            .map(|i| i.data.len() * i.data.sample_size() * 4)
            .sum()
    }

    /// Every sample of every input in memory. Only for sets a user's setting bounds (a
    /// calibration subset, training data, tests), never a whole evaluation set.
    pub fn read_all(&self) -> crate::Result<Vec<ArrayD<f32>>> {
        self.batch(0..self.len())
    }

    /// SHA-256 (hex) of input names, shapes, values and labels: a cache key that changes
    /// whenever the data a model would see changes, and not when only the path does.
    ///
    /// Sets up to [`VALUE_HASH_LIMIT`] bytes of float32 hash every value, read a batch at a
    /// time. Bigger sets and image folders hash what identifies their content without reading
    /// it all (file size and time, .npy header, 256 spread 4 KiB blocks; image paths, sizes and
    /// times and the preprocessing) plus the samples picked: one full read of 30 GB per command
    /// would cost more than the work. A copy that keeps neither size nor times is a new key.
    pub fn fingerprint(&self) -> crate::Result<String> {
        let bytes = self.f32_bytes();
        let images = self.inputs.iter().any(|i| i.data.stored_type() == "image");
        let mut hasher = Sha256::new();
        if bytes > VALUE_HASH_LIMIT || images {
            hasher.update(b"qsteer-dataset-v2-identity");
            for input in &self.inputs {
                hasher.update(input.name.as_deref().unwrap_or("").as_bytes());
                hasher.update([0]);
                input.data.identity(&mut hasher)?;
            }
        } else {
            self.hash_values(&mut hasher)?;
        }
        match &self.labels {
            Some(labels) => {
                hasher.update([1]);
                hasher.update((labels.len() as u64).to_le_bytes());
                hash_values(&mut hasher, labels.iter().map(|v| v.to_le_bytes()));
            }
            None => hasher.update([0]),
        }
        Ok(hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    /// Names, shapes and every value, in batches (the v1 fingerprint, unchanged for small sets).
    fn hash_values(&self, hasher: &mut Sha256) -> crate::Result<()> {
        hasher.update(b"qsteer-dataset-v1");
        hasher.update((self.inputs.len() as u64).to_le_bytes());
        for input in &self.inputs {
            match &input.name {
                Some(name) => {
                    hasher.update([1]);
                    hasher.update((name.len() as u64).to_le_bytes());
                    hasher.update(name.as_bytes());
                }
                None => hasher.update([0]),
            }
            let shape = input.data.shape();
            hasher.update((shape.len() as u64).to_le_bytes());
            for &d in &shape {
                hasher.update((d as u64).to_le_bytes());
            }
            let per_batch = (1 << 24) / input.data.sample_size().max(1) + 1;
            let n = input.data.len();
            let mut buffer = Vec::with_capacity(1 << 16);
            for from in (0..n).step_by(per_batch) {
                let values = input.data.read_range(from..(from + per_batch).min(n))?;
                for v in values.iter() {
                    buffer.extend_from_slice(&v.to_le_bytes());
                    if buffer.len() >= 1 << 16 {
                        hasher.update(&buffer);
                        buffer.clear();
                    }
                }
            }
            hasher.update(&buffer);
        }
        Ok(())
    }
}

/// Feed values through a buffer: one `update` per element would be slow on big datasets.
pub(crate) fn hash_values<const N: usize>(
    hasher: &mut Sha256,
    values: impl Iterator<Item = [u8; N]>,
) {
    let mut buffer = Vec::with_capacity(1 << 16);
    for bytes in values {
        buffer.extend_from_slice(&bytes);
        if buffer.len() >= 1 << 16 {
            hasher.update(&buffer);
            buffer.clear();
        }
    }
    hasher.update(&buffer);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ndarray::{Array, IxDyn};

    pub(crate) fn toy(n: usize) -> Dataset {
        let data = Array::from_shape_fn(IxDyn(&[n, 2, 3]), |i| (i[0] * 6 + i[1] * 3 + i[2]) as f32);
        Dataset::from_arrays(
            "toy",
            vec![NamedInput::from_array(None, "toy/inputs.npy", data)],
            Some((0..n as i64).map(|i| i % 3).collect()),
        )
        .unwrap()
    }

    /// The message names the file and the index in it, through a split of a split.
    #[test]
    fn an_out_of_range_label_is_named_in_its_file() {
        let mut d = toy(6);
        d.labels = Some(vec![0, 1, 2, 7, 1, 9]);
        d.label_origin = Some(LabelOrigin {
            source: "toy/labels.npy".into(),
            index: None,
        });
        let sub = d.subset(&[5, 3, 0]).subset(&[1, 2]);
        assert_eq!(sub.labels, Some(vec![7, 0]));
        let e = sub.check_labels(3).unwrap_err().to_string();
        assert!(
            e.starts_with("toy/labels.npy: label 7 at index 3 is out of range"),
            "{e}"
        );
        let e = d.check_labels(3).unwrap_err().to_string();
        assert!(
            e.contains("index 3") && e.contains("2 of the 6 labels"),
            "{e}"
        );
        d.check_labels(10).unwrap();
    }

    #[test]
    fn len_shape_and_subset() {
        let d = toy(5);
        assert_eq!(d.len(), 5);
        assert!(!d.is_empty());
        assert_eq!(d.sample_shape(0), &[2, 3]);
        let s = d.subset(&[4, 1]);
        assert_eq!(s.len(), 2);
        assert_eq!(s.labels, Some(vec![1, 1]));
        let x = s.inputs[0].data.read_all().unwrap();
        assert_eq!(x[[0, 0, 0]], 24.0);
        assert_eq!(x[[1, 1, 2]], 11.0);
        let batches: Vec<_> = d.batches(2).map(|b| b.unwrap()).collect();
        assert_eq!(batches.iter().map(|b| b.0).collect::<Vec<_>>(), [0, 2, 4]);
        assert_eq!(batches[2].1[0].shape(), &[1, 2, 3]);
        assert_eq!(batches[2].1[0][[0, 0, 0]], 24.0);
    }

    /// A cached copy reads the same samples and keeps the fingerprint; over the limit it is
    /// left streaming.
    #[test]
    fn cached_copies_keep_values_and_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        crate::data::images::tests::two_class_folder(dir.path());
        let d = load_image_folder(dir.path()).unwrap().subset(&[2, 0]);
        let cached = d.cached_up_to(MULTI_PASS_CACHE).unwrap();
        assert_eq!(cached.read_all().unwrap(), d.read_all().unwrap());
        assert_eq!(cached.fingerprint().unwrap(), d.fingerprint().unwrap());
        assert_eq!(cached.inputs[0].data.stored_type(), "image");
        // Once cached, the files are not read again.
        std::fs::remove_dir_all(dir.path().join("cat")).unwrap();
        assert_eq!(cached.batch(1..2).unwrap()[0][[0, 1, 0, 0]], 1.0);
        assert!(d.batch(1..2).is_err());
        let small = d.cached_up_to(8).unwrap();
        assert!(small.batch(1..2).is_err());
    }

    #[test]
    fn fingerprint_tracks_content_not_name() {
        let a = toy(4);
        let mut renamed = a.clone();
        renamed.name = "elsewhere".into();
        let fp = |d: &Dataset| d.fingerprint().unwrap();
        assert_eq!(fp(&a), fp(&renamed));
        assert_eq!(fp(&a).len(), 64);
        // The value hash of small sets is the one earlier versions wrote (caches stay valid).
        assert_eq!(
            fp(&a),
            "d9333bb852e5798155463bfe70b33f25393e0e0a416e69045bbb91849e4ed4c0"
        );

        let mut values = a.inputs[0].data.read_all().unwrap();
        values[[3, 1, 1]] += 1e-6;
        let mut changed = a.clone();
        changed.inputs[0] = NamedInput::from_array(None, "toy/inputs.npy", values.clone());
        assert_ne!(fp(&a), fp(&changed));

        let mut relabeled = a.clone();
        relabeled.labels = None;
        assert_ne!(fp(&a), fp(&relabeled));

        let mut reshaped = a.clone();
        let flat = a.inputs[0].data.read_all().unwrap();
        let flat = flat.to_shape(IxDyn(&[4, 3, 2])).unwrap().to_owned();
        reshaped.inputs[0] = NamedInput::from_array(None, "toy/inputs.npy", flat);
        assert_ne!(fp(&a), fp(&reshaped));

        let mut named = a.clone();
        named.inputs[0].name = Some("x".into());
        assert_ne!(fp(&a), fp(&named));
    }
}
