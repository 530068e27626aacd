//! Image-folder datasets: `ROOT/<class>/<file>.png|jpg|jpeg`, classes sorted by name give the
//! label indices (like torchvision's ImageFolder). Images directly in ROOT, with no class folders,
//! make an unlabeled dataset.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::npy_store::file_stamp;
use super::preprocess::{Preprocess, PREPROCESS_FILE};
use super::samples::{check_finite, Samples, Store};
use super::{assemble, Dataset, NamedInput};
use crate::{Error, Result};

const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn is_image(path: &Path) -> bool {
    path.is_file()
        && !is_hidden(path)
        && path.extension().is_some_and(|e| {
            let e = e.to_string_lossy().to_ascii_lowercase();
            IMAGE_EXTENSIONS.contains(&e.as_str())
        })
}

/// Entries of `dir`, sorted by name so labels and sample order never depend on the filesystem.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|entry| entry.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<Vec<_>>>()?;
    entries.sort();
    Ok(entries)
}

fn class_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    Ok(sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir() && !is_hidden(p))
        .collect())
}

fn images_in(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(sorted_entries(dir)?
        .into_iter()
        .filter(|p| is_image(p))
        .collect())
}

/// True when `root` has a preprocess.json, or a subfolder holding images.
pub(crate) fn looks_like_image_folder(root: &Path) -> Result<bool> {
    if root.join(PREPROCESS_FILE).is_file() {
        return Ok(true);
    }
    for dir in class_dirs(root)? {
        if !images_in(&dir)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Load an image folder with its `preprocess.json` (defaults when absent).
pub fn load_image_folder(root: &Path) -> Result<Dataset> {
    load_image_folder_with(root, &Preprocess::load(root)?)
}

/// Load an image folder with a given preprocessing spec.
pub fn load_image_folder_with(root: &Path, spec: &Preprocess) -> Result<Dataset> {
    let root_name = root.display().to_string();
    let classes = class_dirs(root)?;
    let loose = images_in(root)?;

    let (files, labels, class_names) = if classes.is_empty() {
        if loose.is_empty() {
            return Err(Error::input(format!(
                "{root_name}: no images found (expected {root_name}/<class>/<file>.png|jpg|jpeg)"
            )));
        }
        (loose, None, None)
    } else {
        if let Some(stray) = loose.first() {
            return Err(Error::input(format!(
                "{}: image directly in the image folder next to class folders; move it into \
                 a class folder (its label would be unknown)",
                stray.display()
            )));
        }
        let mut files = Vec::new();
        let mut labels = Vec::new();
        let mut names = Vec::new();
        for (label, dir) in (0i64..).zip(&classes) {
            let images = images_in(dir)?;
            if images.is_empty() {
                return Err(Error::input(format!(
                    "{}: class folder has no .png/.jpg/.jpeg images (an empty class would \
                     still take label {label}; remove the folder or add images)",
                    dir.display()
                )));
            }
            labels.extend(std::iter::repeat_n(label, images.len()));
            files.extend(images);
            names.push(
                dir.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        (files, Some(labels), Some(names))
    };

    let store = ImageStore::new(root_name.clone(), spec.clone(), files)?;
    let label_origin = labels.as_ref().map(|_| super::LabelOrigin {
        source: root_name.clone(),
        index: None,
    });
    let dataset = Dataset {
        name: root_name.clone(),
        inputs: vec![NamedInput {
            name: None,
            source: root_name,
            data: Samples::new(store),
        }],
        label_origin,
        labels,
        classes: class_names,
    };
    assemble::validate(&dataset, "")?;
    Ok(dataset)
}

/// An image folder's files, decoded and preprocessed only when a batch asks for them.
struct ImageStore {
    root_name: String,
    spec: Preprocess,
    files: Vec<PathBuf>,
    /// The first file's preprocessed shape; every other file must match it.
    sample_shape: Vec<usize>,
}

impl ImageStore {
    /// Decode the first file (the sample shape comes from it); the rest wait for their batch.
    fn new(root_name: String, spec: Preprocess, files: Vec<PathBuf>) -> Result<ImageStore> {
        let first = files
            .first()
            .ok_or_else(|| Error::input(format!("{root_name}: no images found")))?;
        let (sample_shape, _) = decode(&spec, first)?;
        Ok(ImageStore {
            root_name,
            spec,
            files,
            sample_shape,
        })
    }
}

fn decode(spec: &Preprocess, path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let file = path.display().to_string();
    let image = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| Error::input(format!("{file}: cannot decode image: {e}")))?;
    spec.apply(&file, image)
}

impl Store for ImageStore {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }

    fn read_into(&self, indices: &[usize], out: &mut [f32]) -> Result<()> {
        let size: usize = self.sample_shape.iter().product();
        for (k, &i) in indices.iter().enumerate() {
            let path = &self.files[i];
            let (shape, sample) = decode(&self.spec, path)?;
            if shape != self.sample_shape {
                return Err(Error::input(format!(
                    "{}: preprocessed sample shape {shape:?} differs from {:?} of {}; images \
                     must end up the same size (set \"resize\" and/or \"center_crop\" in \
                     {}/{PREPROCESS_FILE})",
                    path.display(),
                    self.sample_shape,
                    self.files[0].display(),
                    self.root_name
                )));
            }
            out[k * size..(k + 1) * size].copy_from_slice(&sample);
        }
        check_finite(&self.root_name, indices, size, out)
    }

    /// The preprocessing, and every file's path, size and modification time: hashing decoded
    /// pixels would cost a decode of the whole folder for each key.
    fn identity(&self, hasher: &mut Sha256) -> Result<()> {
        hasher.update(b"images");
        let spec = serde_json::to_string(&self.spec).unwrap_or_default();
        hasher.update(spec.as_bytes());
        for f in &self.files {
            let rel = f.strip_prefix(&self.root_name).unwrap_or(f);
            hasher.update(rel.to_string_lossy().as_bytes());
            hasher.update([0]);
            hasher.update(file_stamp(f));
        }
        Ok(())
    }

    fn stored_type(&self) -> &str {
        "image"
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    /// A solid-colour PNG at `root/rel`.
    pub(crate) fn write_png(root: &Path, rel: &str, w: u32, h: u32, rgb: [u8; 3]) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_pixel(w, h, Rgb(rgb)).save(&path).unwrap();
    }

    pub(crate) fn two_class_folder(root: &Path) {
        write_png(root, "cat/b.png", 4, 4, [255, 0, 0]);
        write_png(root, "cat/a.png", 4, 4, [0, 255, 0]);
        write_png(root, "dog/x.PNG", 4, 4, [0, 0, 255]);
        std::fs::write(root.join("dog/notes.txt"), "ignored").unwrap();
    }

    #[test]
    fn loads_classes_in_sorted_order_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        two_class_folder(dir.path());
        assert!(looks_like_image_folder(dir.path()).unwrap());
        let d = load_image_folder(dir.path()).unwrap();
        assert_eq!(d.classes, Some(vec!["cat".to_string(), "dog".to_string()]));
        assert_eq!(d.labels, Some(vec![0, 0, 1]));
        assert_eq!(d.inputs[0].data.shape(), vec![3, 3, 4, 4]);
        // cat/a.png (green) sorts before cat/b.png (red); default scale 1/255, NCHW.
        let x = d.inputs[0].data.read_all().unwrap();
        assert_eq!(x[[0, 1, 2, 2]], 1.0);
        assert_eq!(x[[1, 0, 0, 0]], 1.0);
        assert_eq!(x[[2, 2, 3, 3]], 1.0);
        assert_eq!(x[[2, 0, 3, 3]], 0.0);
    }

    #[test]
    fn applies_preprocess_json() {
        let dir = tempfile::tempdir().unwrap();
        two_class_folder(dir.path());
        write_png(dir.path(), "dog/big.png", 8, 6, [0, 0, 255]);
        std::fs::write(
            dir.path().join(PREPROCESS_FILE),
            r#"{"resize": {"height": 4, "width": 4}, "center_crop": {"height": 2, "width": 2},
                "mean": [0.5], "std": [0.5], "channel_order": "bgr", "layout": "nhwc"}"#,
        )
        .unwrap();
        let d = load_image_folder(dir.path()).unwrap();
        assert_eq!(d.inputs[0].data.shape(), vec![4, 2, 2, 3]);
        // dog/big.png is sample 2 ("big" < "x.PNG"): blue first in BGR, (1 - 0.5) / 0.5 = 1.
        let x = d.inputs[0].data.read_all().unwrap();
        let px: Vec<f32> = (0..3).map(|c| x[[2, 1, 1, c]]).collect();
        assert_eq!(px, vec![1.0, -1.0, -1.0]);
        assert_eq!(d.labels, Some(vec![0, 0, 1, 1]));
    }

    /// Only the first image is decoded at load; a bad one is reported, naming the file, when
    /// the batch holding it is read, and batches without it read fine.
    #[test]
    fn images_are_decoded_lazily_per_batch() {
        let dir = tempfile::tempdir().unwrap();
        two_class_folder(dir.path());
        std::fs::write(dir.path().join("dog/broken.png"), b"not a png").unwrap();
        write_png(dir.path(), "dog/y.png", 5, 4, [1, 2, 3]);
        // cat/a, cat/b, dog/broken, dog/x.PNG, dog/y
        let d = load_image_folder(dir.path()).unwrap();
        assert_eq!(d.len(), 5);
        assert_eq!(d.labels, Some(vec![0, 0, 1, 1, 1]));
        d.batch(0..2).unwrap();
        d.gather(&[3, 0]).unwrap();
        let e = d.batch(1..3).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = e.to_string();
        assert!(
            e.contains("broken.png") && e.contains("cannot decode"),
            "{e}"
        );
        let e = d.subset(&[4]).read_all().unwrap_err().to_string();
        assert!(e.contains("dog/y.png") && e.contains("[3, 4, 5]"), "{e}");
        assert!(e.contains("resize"), "{e}");
    }

    #[test]
    fn unlabeled_root_images_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        write_png(dir.path(), "a.jpg", 3, 3, [9, 9, 9]);
        std::fs::write(
            dir.path().join(PREPROCESS_FILE),
            r#"{"channel_order": "gray"}"#,
        )
        .unwrap();
        let d = load_image_folder(dir.path()).unwrap();
        assert_eq!(d.labels, None);
        assert_eq!(d.inputs[0].data.shape(), vec![1, 1, 3, 3]);

        write_png(dir.path(), "cls/b.png", 3, 3, [9, 9, 9]);
        let e = load_image_folder(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("a.jpg") && e.contains("next to class folders"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        write_png(dir.path(), "cls/b.png", 3, 3, [9, 9, 9]);
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let e = load_image_folder(dir.path()).unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains("no .png"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cls")).unwrap();
        std::fs::write(dir.path().join("cls/broken.png"), b"not a png").unwrap();
        let e = load_image_folder(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("broken.png") && e.contains("cannot decode"),
            "{e}"
        );
    }
}
