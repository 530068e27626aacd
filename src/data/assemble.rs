//! Turn arrays named `inputs`, `inputs.<name>` and `labels` (from .npy files or an .npz) into a
//! checked [`Dataset`]. Shared by both array formats so they accept and reject the same things.

use std::ops::Range;

use super::npy::{read_npy_bytes, NpyArray};
use super::npy_store::{Bytes, NpyStore};
use super::samples::Samples;
use super::{Dataset, LabelOrigin, NamedInput};
use crate::{Error, Result};

/// What an array's key (file stem or .npz member) says it is.
#[derive(Debug, PartialEq, Eq)]
pub enum Role {
    Inputs(Option<String>),
    Labels,
    /// Looks like a typo of a known key (`input`, `label`, `Inputs`...): an error, not ignored.
    NearMiss,
    Other,
}

pub fn role(key: &str) -> Role {
    if key == "inputs" {
        return Role::Inputs(None);
    }
    if key == "labels" {
        return Role::Labels;
    }
    if let Some(name) = key.strip_prefix("inputs.") {
        if !name.is_empty() {
            return Role::Inputs(Some(name.to_string()));
        }
    }
    let lower = key.to_ascii_lowercase();
    if lower.starts_with("input") || lower.starts_with("label") {
        Role::NearMiss
    } else {
        Role::Other
    }
}

pub const KEY_HELP: &str = "expected 'inputs', 'inputs.<model_input_name>' or 'labels'";

/// A .npy array in place (a mapped file, a stored .npz member, decompressed bytes) and where it
/// came from. Inputs are read from it a batch at a time; labels (one integer per sample) whole.
pub struct Source {
    pub source: String,
    pub bytes: Bytes,
    pub region: Range<usize>,
    /// Size and time of the file holding it, for the fingerprint of big sets.
    pub stamp: Vec<u8>,
}

impl Source {
    fn array(&self) -> Result<NpyArray> {
        read_npy_bytes(&self.source, &self.bytes.as_slice()[self.region.clone()])
    }
}

/// Build a dataset from keyed arrays. `inputs` must be non-empty and sorted as they should appear.
pub fn assemble(
    name: String,
    inputs: Vec<(Option<String>, Source)>,
    labels: Option<Source>,
) -> Result<Dataset> {
    let unnamed = inputs.iter().filter(|(n, _)| n.is_none()).count();
    if unnamed > 0 && inputs.len() > 1 {
        let sources: Vec<&str> = inputs.iter().map(|(_, s)| s.source.as_str()).collect();
        return Err(Error::input(format!(
            "{name}: both 'inputs' and 'inputs.<name>' arrays are present ({}); use 'inputs' \
             for a single-input model or only 'inputs.<name>' arrays for several inputs",
            sources.join(", ")
        )));
    }
    if inputs.is_empty() {
        return Err(Error::input(format!(
            "{name}: no inputs array found ({KEY_HELP})"
        )));
    }

    let inputs = inputs
        .into_iter()
        .map(|(input_name, s)| float_input(input_name, s))
        .collect::<Result<Vec<_>>>()?;
    let label_source = labels.as_ref().map(|l| l.source.clone());
    let labels = labels.map(integer_labels).transpose()?;
    let label_origin = label_source.clone().map(|source| LabelOrigin {
        source,
        index: None,
    });
    let dataset = Dataset {
        name,
        inputs,
        labels,
        classes: None,
        label_origin,
    };
    validate(&dataset, label_source.as_deref().unwrap_or(""))?;
    Ok(dataset)
}

fn float_input(name: Option<String>, s: Source) -> Result<NamedInput> {
    let store = NpyStore::in_region(s.source.clone(), s.bytes, s.region, s.stamp)?;
    Ok(NamedInput {
        name,
        source: s.source,
        data: Samples::new(store),
    })
}

fn integer_labels(s: Source) -> Result<Vec<i64>> {
    let array = s.array()?;
    let Some(labels) = array.to_i64() else {
        return Err(Error::input(format!(
            "{}: labels are {}; expected integer class indices, int64 (convert with \
             `arr.astype(np.int64)`)",
            s.source,
            array.dtype().name()
        )));
    };
    if labels.ndim() != 1 {
        return Err(Error::input(format!(
            "{}: labels have shape {:?}; expected [N] (one class index per sample, e.g. \
             `arr.reshape(-1)`)",
            s.source,
            labels.shape()
        )));
    }
    Ok(labels.iter().copied().collect())
}

/// Checks every dataset passes, whatever it was loaded from. `label_source` names the labels
/// file in messages (empty: use the dataset name).
pub fn validate(dataset: &Dataset, label_source: &str) -> Result<()> {
    let Some(first) = dataset.inputs.first() else {
        return Err(Error::input(format!(
            "{}: dataset has no inputs",
            dataset.name
        )));
    };
    let n = dataset.len();
    for input in &dataset.inputs {
        let count = input.data.len();
        if input.data.is_scalar() {
            return Err(Error::input(format!(
                "{}: inputs are a 0-d scalar; expected shape [N, ...sample shape]",
                input.source
            )));
        }
        if count != n {
            return Err(Error::input(format!(
                "{}: {count} samples, but {} has {n}; every input needs the same number of \
                 samples",
                input.source, first.source
            )));
        }
    }
    if n == 0 {
        return Err(Error::input(format!(
            "{}: dataset is empty (0 samples)",
            first.source
        )));
    }
    if let Some(labels) = &dataset.labels {
        let label_source = if label_source.is_empty() {
            dataset.name.as_str()
        } else {
            label_source
        };
        if labels.len() != n {
            return Err(Error::input(format!(
                "{label_source} has {} labels but {} has {n} samples",
                labels.len(),
                first.source
            )));
        }
        if let Some((i, v)) = labels.iter().enumerate().find(|(_, &v)| v < 0) {
            return Err(Error::input(format!(
                "{label_source}: label {v} at sample {i} is negative; labels are class indices \
                 0..C-1"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, ArrayD, IxDyn};

    fn src(name: &str, array: NpyArray) -> Source {
        let bytes = crate::data::npy::npy_bytes(&array);
        let len = bytes.len();
        Source {
            source: name.into(),
            bytes: Bytes::Owned(std::sync::Arc::new(bytes)),
            region: 0..len,
            stamp: Vec::new(),
        }
    }

    fn floats(shape: &[usize]) -> NpyArray {
        NpyArray::F32(ArrayD::zeros(IxDyn(shape)))
    }

    fn labels(v: Vec<i64>) -> NpyArray {
        NpyArray::I64(Array::from_vec(v).into_dyn())
    }

    fn err(r: Result<Dataset>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn roles() {
        assert_eq!(role("inputs"), Role::Inputs(None));
        assert_eq!(role("inputs.image"), Role::Inputs(Some("image".into())));
        assert_eq!(role("inputs.a.b"), Role::Inputs(Some("a.b".into())));
        assert_eq!(role("labels"), Role::Labels);
        assert_eq!(role("input"), Role::NearMiss);
        assert_eq!(role("Labels"), Role::NearMiss);
        assert_eq!(role("inputs."), Role::NearMiss);
        assert_eq!(role("reference_outputs"), Role::Other);
    }

    #[test]
    fn accepts_int32_and_uint8_labels() {
        let d = assemble(
            "d".into(),
            vec![(None, src("d/inputs.npy", floats(&[2, 3])))],
            Some(src(
                "d/labels.npy",
                NpyArray::I32(Array::from_vec(vec![1, 0]).into_dyn()),
            )),
        )
        .unwrap();
        assert_eq!(d.labels, Some(vec![1, 0]));
    }

    /// float64, integer and bool inputs load (as exact f32 values), read when a batch is.
    #[test]
    fn accepts_float64_integer_and_bool_inputs() {
        let f64s = NpyArray::F64(Array::from_vec(vec![0.5, -1.25]).into_dyn());
        let ints = NpyArray::I64(Array::from_vec(vec![7, -(1 << 24)]).into_dyn());
        let bools = NpyArray::Bool(Array::from_vec(vec![true, false]).into_dyn());
        let u8s = NpyArray::U8(Array::from_vec(vec![255, 0]).into_dyn());
        for (array, want, dtype) in [
            (f64s, [0.5, -1.25], "float64"),
            (ints, [7.0, -16777216.0], "int64"),
            (bools, [1.0, 0.0], "bool"),
            (u8s, [255.0, 0.0], "uint8"),
        ] {
            let d = assemble("d".into(), vec![(None, src("d/inputs.npy", array))], None).unwrap();
            assert_eq!(d.inputs[0].data.stored_type(), dtype);
            let x = d.inputs[0].data.read_all().unwrap();
            assert_eq!(x.as_slice().unwrap(), &want);
        }
    }

    /// A NaN is found when the batch holding it is read, naming the file and sample.
    #[test]
    fn rejects_nan_naming_the_sample() {
        let mut a = ArrayD::<f32>::zeros(IxDyn(&[4, 2, 2]));
        a[[2, 1, 0]] = f32::NAN;
        let d = assemble(
            "d".into(),
            vec![(None, src("d/inputs.npy", NpyArray::F32(a.clone())))],
            None,
        )
        .unwrap();
        d.batch(0..2).unwrap();
        let e = d.batch(2..4).unwrap_err().to_string();
        assert!(e.contains("d/inputs.npy: sample 2 contains NaN"), "{e}");
        a[[2, 1, 0]] = 0.0;
        a[[3, 0, 0]] = f32::NEG_INFINITY;
        let d = assemble(
            "d".into(),
            vec![(None, src("d/inputs.npy", NpyArray::F32(a)))],
            None,
        )
        .unwrap();
        let e = d.read_all().unwrap_err().to_string();
        assert!(e.contains("sample 3 contains -inf"), "{e}");
    }

    #[test]
    fn rejects_count_mismatches_naming_both_files() {
        let e = err(assemble(
            "d".into(),
            vec![(None, src("d/inputs.npy", floats(&[3, 2])))],
            Some(src("d/labels.npy", labels(vec![0, 1]))),
        ));
        assert!(
            e.contains("d/labels.npy has 2 labels but d/inputs.npy has 3"),
            "{e}"
        );
        let e = err(assemble(
            "d".into(),
            vec![
                (Some("a".into()), src("d/inputs.a.npy", floats(&[3, 2]))),
                (Some("b".into()), src("d/inputs.b.npy", floats(&[4, 2]))),
            ],
            None,
        ));
        assert!(
            e.contains("d/inputs.b.npy: 4 samples, but d/inputs.a.npy has 3"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_labels_and_empty_sets() {
        let e = err(assemble(
            "d".into(),
            vec![(None, src("d/inputs.npy", floats(&[2, 2])))],
            Some(src("d/labels.npy", labels(vec![0, -1]))),
        ));
        assert!(e.contains("label -1 at sample 1 is negative"), "{e}");
        let e = err(assemble(
            "d".into(),
            vec![(None, src("d/inputs.npy", floats(&[2, 2])))],
            Some(src("d/labels.npy", floats(&[2]))),
        ));
        assert!(
            e.contains("labels are float32") && e.contains("int64"),
            "{e}"
        );
        let e = err(assemble(
            "d".into(),
            vec![(None, src("d/inputs.npy", floats(&[2, 2])))],
            Some(src(
                "d/labels.npy",
                NpyArray::I64(ArrayD::zeros(IxDyn(&[2, 1]))),
            )),
        ));
        assert!(
            e.contains("shape [2, 1]") && e.contains("expected [N]"),
            "{e}"
        );
        let e = err(assemble(
            "d".into(),
            vec![(None, src("d/inputs.npy", floats(&[0, 2])))],
            None,
        ));
        assert!(e.contains("empty"), "{e}");
        let e = err(assemble(
            "d".into(),
            vec![(None, src("d/inputs.npy", floats(&[])))],
            None,
        ));
        assert!(e.contains("0-d"), "{e}");
        let e = err(assemble("d".into(), vec![], None));
        assert!(e.contains("no inputs"), "{e}");
        let e = err(assemble(
            "d".into(),
            vec![
                (None, src("d/inputs.npy", floats(&[2, 2]))),
                (Some("b".into()), src("d/inputs.b.npy", floats(&[2, 2]))),
            ],
            None,
        ));
        assert!(e.contains("both 'inputs' and 'inputs.<name>'"), "{e}");
    }
}
