//! Image-folder datasets: `ROOT/<class>/<file>.png|jpg|jpeg`, classes sorted by name give the
//! label indices (like torchvision's ImageFolder). Images directly in ROOT, with no class folders,
//! make an unlabeled dataset.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};

use super::preprocess::{Preprocess, PREPROCESS_FILE};
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

    let data = decode_all(&root_name, spec, &files)?;
    let label_origin = labels.as_ref().map(|_| super::LabelOrigin {
        source: root_name.clone(),
        index: None,
    });
    let dataset = Dataset {
        name: root_name.clone(),
        inputs: vec![NamedInput {
            name: None,
            source: root_name,
            data,
        }],
        label_origin,
        labels,
        classes: class_names,
    };
    assemble::validate(&dataset, "")?;
    Ok(dataset)
}

/// Decode and preprocess every file into one `[N, ...sample]` array; all samples must agree.
fn decode_all(root_name: &str, spec: &Preprocess, files: &[PathBuf]) -> Result<ArrayD<f32>> {
    let mut first: Option<(String, Vec<usize>)> = None;
    let mut values = Vec::new();
    for path in files {
        let file = path.display().to_string();
        let image = image::ImageReader::open(path)
            .map_err(|e| Error::io(path, e))?
            .with_guessed_format()
            .map_err(|e| Error::io(path, e))?
            .decode()
            .map_err(|e| Error::input(format!("{file}: cannot decode image: {e}")))?;
        let (shape, sample) = spec.apply(&file, image)?;
        match &first {
            None => first = Some((file, shape)),
            Some((first_file, first_shape)) if *first_shape != shape => {
                return Err(Error::input(format!(
                    "{file}: preprocessed sample shape {shape:?} differs from {first_shape:?} \
                     of {first_file}; images must end up the same size (set \"resize\" and/or \
                     \"center_crop\" in {root_name}/{PREPROCESS_FILE})"
                )));
            }
            Some(_) => {}
        }
        values.extend(sample);
    }
    let sample_shape = first.map(|(_, s)| s).unwrap_or_default();
    let mut shape = vec![files.len()];
    shape.extend(sample_shape);
    ArrayD::from_shape_vec(IxDyn(&shape), values)
        .map_err(|e| Error::input(format!("{root_name}: images do not stack: {e}")))
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
        assert_eq!(d.inputs[0].data.shape(), &[3, 3, 4, 4]);
        // cat/a.png (green) sorts before cat/b.png (red); default scale 1/255, NCHW.
        assert_eq!(d.inputs[0].data[[0, 1, 2, 2]], 1.0);
        assert_eq!(d.inputs[0].data[[1, 0, 0, 0]], 1.0);
        assert_eq!(d.inputs[0].data[[2, 2, 3, 3]], 1.0);
        assert_eq!(d.inputs[0].data[[2, 0, 3, 3]], 0.0);
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
        assert_eq!(d.inputs[0].data.shape(), &[4, 2, 2, 3]);
        // dog/big.png is sample 2 ("big" < "x.PNG"): blue first in BGR, (1 - 0.5) / 0.5 = 1.
        let px: Vec<f32> = (0..3).map(|c| d.inputs[0].data[[2, 1, 1, c]]).collect();
        assert_eq!(px, vec![1.0, -1.0, -1.0]);
        assert_eq!(d.labels, Some(vec![0, 0, 1, 1]));
    }

    #[test]
    fn size_mismatch_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        two_class_folder(dir.path());
        write_png(dir.path(), "dog/y.png", 5, 4, [1, 2, 3]);
        let e = load_image_folder(dir.path()).unwrap_err().to_string();
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
        assert_eq!(d.inputs[0].data.shape(), &[1, 1, 3, 3]);

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
