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
mod npz;
mod preprocess;
mod split;

use ndarray::{ArrayD, Axis};
use sha2::{Digest, Sha256};

pub use images::{load_image_folder, load_image_folder_with};
pub use load::load_dataset;
pub use npy::{
    npy_bytes, read_npy, read_npy_bytes, write_npy, write_npy_f32, write_npy_i64, NpyArray,
};
pub use npy_header::DType;
pub use npz::{read_npz, read_npz_bytes};
pub use preprocess::{ChannelOrder, Layout, Preprocess, Resize, Size};
pub use split::SplitMix64;
pub use split::{load_split, seeded_split, DatasetPair, Split, SplitInfo, SplitKind};

/// Samples for every model input, with optional labels. Axis 0 of every input is the sample.
#[derive(Debug, Clone, PartialEq)]
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

#[derive(Debug, Clone, PartialEq)]
pub struct NamedInput {
    /// The model input this feeds: `Some` for `inputs.<name>.npy`, `None` means "by position".
    pub name: Option<String>,
    /// Where the array came from (a file, `archive.npz:inputs.npy`, an image folder), for messages.
    pub source: String,
    /// Shape `[N, ...sample shape]`.
    pub data: ArrayD<f32>,
}

impl Dataset {
    /// Build a dataset from arrays already in memory, with the same checks as the file loaders
    /// (equal sample counts, finite values, non-negative labels, not empty).
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
        self.inputs
            .first()
            .and_then(|i| i.data.shape().first().copied())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples at `indices`, in that order.
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
                    data: input.data.select(Axis(0), indices),
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
        self.inputs[input].data.shape().get(1..).unwrap_or(&[])
    }

    /// SHA-256 (hex) of input names, shapes, values and labels: a cache key that changes
    /// whenever the data a model would see changes, and not when only the path does.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
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
            hasher.update((input.data.ndim() as u64).to_le_bytes());
            for &d in input.data.shape() {
                hasher.update((d as u64).to_le_bytes());
            }
            hash_values(&mut hasher, input.data.iter().map(|v| v.to_le_bytes()));
        }
        match &self.labels {
            Some(labels) => {
                hasher.update([1]);
                hasher.update((labels.len() as u64).to_le_bytes());
                hash_values(&mut hasher, labels.iter().map(|v| v.to_le_bytes()));
            }
            None => hasher.update([0]),
        }
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Feed values through a buffer: one `update` per element would be slow on big datasets.
fn hash_values<const N: usize>(hasher: &mut Sha256, values: impl Iterator<Item = [u8; N]>) {
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
            vec![NamedInput {
                name: None,
                source: "toy/inputs.npy".into(),
                data,
            }],
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
        assert_eq!(s.inputs[0].data[[0, 0, 0]], 24.0);
        assert_eq!(s.inputs[0].data[[1, 1, 2]], 11.0);
    }

    #[test]
    fn fingerprint_tracks_content_not_name() {
        let a = toy(4);
        let mut renamed = a.clone();
        renamed.name = "elsewhere".into();
        assert_eq!(a.fingerprint(), renamed.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);

        let mut changed = a.clone();
        changed.inputs[0].data[[3, 1, 1]] += 1e-6;
        assert_ne!(a.fingerprint(), changed.fingerprint());

        let mut relabeled = a.clone();
        relabeled.labels = None;
        assert_ne!(a.fingerprint(), relabeled.fingerprint());

        let mut reshaped = a.clone();
        reshaped.inputs[0].data = a.inputs[0]
            .data
            .to_shape(IxDyn(&[4, 3, 2]))
            .unwrap()
            .to_owned();
        assert_ne!(a.fingerprint(), reshaped.fingerprint());

        let mut named = a.clone();
        named.inputs[0].name = Some("x".into());
        assert_ne!(a.fingerprint(), named.fingerprint());
    }
}
