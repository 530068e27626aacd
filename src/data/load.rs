//! `load_dataset`: recognise which of the dataset formats a path holds and load it.

use std::path::{Path, PathBuf};

use super::assemble::{assemble, role, Role, Source, KEY_HELP};
use super::images::{load_image_folder, looks_like_image_folder};
use super::npy_store::{file_stamp, Bytes};
use super::npz::npz_members;
use super::preprocess::PREPROCESS_FILE;
use super::Dataset;
use crate::{Error, Result};

const FORMATS_HELP: &str = "expected a directory with inputs.npy (+ optional labels.npy), a \
                            .npz file, or an image folder (<class>/<image>.png|jpg)";

/// Load a dataset from a directory of .npy files, a .npz file (or a directory holding exactly
/// one), or an image folder.
pub fn load_dataset(path: &Path) -> Result<Dataset> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return match extension(path).as_deref() {
            Some("npz") => load_npz_dataset(path),
            Some("npy") => Err(Error::input(format!(
                "{}: a single .npy file is not a dataset; pass the directory that holds \
                 inputs.npy (and labels.npy)",
                path.display()
            ))),
            _ => Err(Error::input(format!(
                "{}: not a dataset ({FORMATS_HELP})",
                path.display()
            ))),
        };
    }
    load_directory(path)
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

fn load_directory(dir: &Path) -> Result<Dataset> {
    let name = dir.display().to_string();
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|entry| entry.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<Vec<PathBuf>>>()?;
    entries.sort();

    let files = |ext: &str| -> Vec<PathBuf> {
        entries
            .iter()
            .filter(|p| p.is_file() && extension(p).as_deref() == Some(ext))
            .cloned()
            .collect()
    };
    let npy_files = files("npy");
    let npz_files = files("npz");
    let mut inputs = Vec::new();
    let mut labels = None;
    for path in &npy_files {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match role(&stem) {
            Role::Inputs(input) => inputs.push((input, path)),
            Role::Labels => labels = Some(path),
            Role::NearMiss => {
                return Err(Error::input(format!(
                    "{}: unexpected array name '{stem}' ({KEY_HELP})",
                    path.display()
                )))
            }
            Role::Other => {}
        }
    }

    if !inputs.is_empty() || labels.is_some() {
        if let Some(npz) = npz_files.first() {
            return Err(Error::input(format!(
                "{name}: holds both .npy arrays and {}; keep one format",
                npz.display()
            )));
        }
        let inputs = inputs
            .into_iter()
            .map(|(input, path)| Ok((input, source(path)?)))
            .collect::<Result<Vec<_>>>()?;
        let labels = labels.map(|p| source(p)).transpose()?;
        return assemble(name, inputs, labels);
    }

    match npz_files.as_slice() {
        [one] => return load_npz_dataset(one),
        [] => {}
        many => {
            let names: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
            return Err(Error::input(format!(
                "{name}: holds {} .npz files ({}); expected exactly one",
                many.len(),
                names.join(", ")
            )));
        }
    }

    if dir.join("calibration").is_dir() && dir.join("evaluation").is_dir() {
        return Err(Error::input(format!(
            "{name}: holds a calibration/ and evaluation/ split; load it as a split, or point \
             at one of the two folders"
        )));
    }
    if looks_like_image_folder(dir)? || dir.join(PREPROCESS_FILE).is_file() {
        return load_image_folder(dir);
    }
    Err(Error::input(format!(
        "{name}: no dataset found ({FORMATS_HELP})"
    )))
}

/// A .npy file, memory-mapped: nothing is read until a batch asks for its samples.
fn source(path: &Path) -> Result<Source> {
    let bytes = Bytes::map(path)?;
    let region = 0..bytes.as_slice().len();
    Ok(Source {
        source: path.display().to_string(),
        bytes,
        region,
        stamp: file_stamp(path),
    })
}

fn load_npz_dataset(path: &Path) -> Result<Dataset> {
    let name = path.display().to_string();
    let mut inputs = Vec::new();
    let mut labels = None;
    let stamp = file_stamp(path);
    for (key, member) in npz_members(&name, &Bytes::map(path)?)? {
        let source = Source {
            source: format!("{name}:{key}"),
            bytes: member.bytes,
            region: member.region,
            stamp: stamp.clone(),
        };
        match role(&key) {
            Role::Inputs(input) => inputs.push((input, source)),
            Role::Labels => labels = Some(source),
            Role::NearMiss => {
                return Err(Error::input(format!(
                    "{name}: unexpected array name '{key}' ({KEY_HELP})"
                )))
            }
            Role::Other => {}
        }
    }
    if inputs.is_empty() {
        return Err(Error::input(format!(
            "{name}: no inputs array in the archive ({KEY_HELP})"
        )));
    }
    assemble(name, inputs, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::images::tests::two_class_folder;
    use crate::data::npy::{npy_bytes, NpyArray};
    use crate::data::npz::tests::npz_bytes;
    use ndarray::{Array, ArrayD, IxDyn};
    use zip::CompressionMethod;

    fn inputs(n: usize) -> NpyArray {
        NpyArray::F32(Array::from_shape_fn(IxDyn(&[n, 1, 2, 2]), |i| i[0] as f32))
    }

    fn labels(v: Vec<i64>) -> NpyArray {
        NpyArray::I64(Array::from_vec(v).into_dyn())
    }

    fn write(dir: &Path, file: &str, a: &NpyArray) {
        std::fs::write(dir.join(file), npy_bytes(a)).unwrap();
    }

    #[test]
    fn npy_directory_with_labels() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "inputs.npy", &inputs(3));
        write(dir.path(), "labels.npy", &labels(vec![2, 0, 1]));
        write(dir.path(), "reference.npy", &inputs(1));
        let d = load_dataset(dir.path()).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d.labels, Some(vec![2, 0, 1]));
        assert_eq!(d.inputs[0].name, None);
        assert!(d.inputs[0].source.ends_with("inputs.npy"));
        assert_eq!(d.sample_shape(0), &[1, 2, 2]);
    }

    #[test]
    fn named_inputs() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "inputs.image.npy", &inputs(2));
        write(dir.path(), "inputs.mask.npy", &inputs(2));
        let d = load_dataset(dir.path()).unwrap();
        let names: Vec<_> = d.inputs.iter().map(|i| i.name.clone().unwrap()).collect();
        assert_eq!(names, ["image", "mask"]);
        assert_eq!(d.labels, None);

        write(dir.path(), "inputs.other.npy", &inputs(3));
        let e = load_dataset(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("inputs.other.npy: 3 samples") && e.contains("has 2"),
            "{e}"
        );
    }

    #[test]
    fn near_miss_names_and_lonely_labels_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "input.npy", &inputs(2));
        let e = load_dataset(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("'input'") && e.contains("expected 'inputs'"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "labels.npy", &labels(vec![1]));
        let e = load_dataset(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no inputs array"), "{e}");
    }

    #[test]
    fn npz_file_and_directory_with_one_npz() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = npz_bytes(
            &[("inputs", &inputs(2)), ("labels", &labels(vec![1, 1]))],
            CompressionMethod::Deflated,
        );
        std::fs::write(dir.path().join("data.npz"), &bytes).unwrap();
        let from_file = load_dataset(&dir.path().join("data.npz")).unwrap();
        let from_dir = load_dataset(dir.path()).unwrap();
        assert_eq!(
            from_file.inputs[0].data.read_all().unwrap(),
            from_dir.inputs[0].data.read_all().unwrap()
        );
        assert_eq!(from_file.labels, from_dir.labels);
        assert_eq!(from_file.labels, Some(vec![1, 1]));
        assert!(from_file.inputs[0].source.ends_with("data.npz:inputs"));

        std::fs::write(dir.path().join("more.npz"), &bytes).unwrap();
        let e = load_dataset(dir.path()).unwrap_err().to_string();
        assert!(e.contains("2 .npz files"), "{e}");
    }

    #[test]
    fn npz_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.npz");
        // float64 loads now (exactly converted); a stored member is read in place.
        let f64_inputs = NpyArray::F64(ArrayD::from_elem(IxDyn(&[2, 3]), 0.25));
        std::fs::write(
            &p,
            npz_bytes(&[("inputs", &f64_inputs)], CompressionMethod::Stored),
        )
        .unwrap();
        let d = load_dataset(&p).unwrap();
        assert_eq!(d.inputs[0].data.stored_type(), "float64");
        assert_eq!(d.batch(1..2).unwrap()[0].as_slice().unwrap(), &[0.25; 3]);

        std::fs::write(
            &p,
            npz_bytes(&[("x", &inputs(2))], CompressionMethod::Stored),
        )
        .unwrap();
        let e = load_dataset(&p).unwrap_err().to_string();
        assert!(e.contains("no inputs array"), "{e}");

        let bytes = npz_bytes(
            &[("inputs", &inputs(2)), ("labels", &labels(vec![1, 1, 0]))],
            CompressionMethod::Stored,
        );
        std::fs::write(&p, bytes).unwrap();
        let e = load_dataset(&p).unwrap_err().to_string();
        assert!(e.contains("d.npz:labels has 3 labels but") && e.contains("d.npz:inputs has 2"));
    }

    #[test]
    fn image_folder_and_unknown_things() {
        let dir = tempfile::tempdir().unwrap();
        two_class_folder(dir.path());
        assert_eq!(load_dataset(dir.path()).unwrap().len(), 3);

        let empty = tempfile::tempdir().unwrap();
        let e = load_dataset(empty.path()).unwrap_err().to_string();
        assert!(e.contains("no dataset found"), "{e}");

        let e = load_dataset(&empty.path().join("missing")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("missing"));

        let npy = empty.path().join("inputs.npy");
        write(empty.path(), "inputs.npy", &inputs(1));
        let e = load_dataset(&npy).unwrap_err().to_string();
        assert!(e.contains("pass the directory"), "{e}");
    }
}
