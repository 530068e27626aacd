//! The image-folder dataset (`sample-models/digits/images`: the first 100 evaluation samples
//! as 8-bit PNGs with a preprocess.json) gives the same inputs, labels and predictions as the
//! .npy evaluation set.

use crate::common::*;
use qsteer::cancel::CancelToken;
use qsteer::data::load_image_folder;
use qsteer::model::Model;
use qsteer::runtime::{CompiledModel, RunOptions};
use std::path::PathBuf;

fn images_dir() -> PathBuf {
    digits().join("images")
}

/// Evaluation-set index of every image, in the loader's order (class folders by name,
/// files by name); a file is named after its index (`NNN.png`).
fn image_indices() -> Vec<usize> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(images_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    let mut out = Vec::new();
    for c in classes {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&c)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "png"))
            .collect();
        files.sort();
        out.extend(files.iter().map(|f| {
            f.file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        }));
    }
    out
}

/// Logits of the .npy evaluation samples `0..n` (library path, batch 1).
fn npy_logits(model: &str, n: usize) -> ndarray::Array2<f32> {
    let m = Model::load(&sample_model(model)).unwrap();
    let data = dataset(
        "evaluation",
        first(&read_f32(&digits().join("evaluation/inputs.npy")), n),
    );
    let c = CompiledModel::compile(&m, &sample_shapes(&data), 1, &[]).unwrap();
    let out = c
        .run_dataset(
            &data,
            RunOptions::default(),
            &CancelToken::new(),
            &|_, _| {},
        )
        .unwrap();
    rows(&out.outputs[0])
}

#[test]
fn image_folder_matches_the_npy_samples() {
    let indices = image_indices();
    assert_eq!(indices.len(), 100);
    let mut sorted = indices.clone();
    sorted.sort();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());

    let images = load_image_folder(&images_dir()).unwrap();
    assert_eq!(images.len(), 100);
    assert_eq!(images.sample_shape(0), &[1, 16, 16]);
    let npy = read_f32(&digits().join("evaluation/inputs.npy"));
    let labels = read_i64(&digits().join("evaluation/labels.npy"));
    // labels from the folder names agree with labels.npy
    let folder_labels = images.labels.as_ref().unwrap();
    for (k, &i) in indices.iter().enumerate() {
        assert_eq!(folder_labels[k], labels[i], "image {k} (sample {i})");
    }
    // pixel = round(x × 255) → the decoded value is within 1/510 of the float sample
    let x = images.inputs[0].data.read_all().unwrap();
    let mut worst = 0f32;
    for (k, &i) in indices.iter().enumerate() {
        let a = x.index_axis(ndarray::Axis(0), k);
        let b = npy.index_axis(ndarray::Axis(0), i);
        for (p, q) in a.iter().zip(b.iter()) {
            worst = worst.max((p - q).abs());
        }
    }
    assert!(worst <= 1.0 / 510.0 + 1e-6, "max |image − npy| = {worst}");
}

#[test]
fn eval_on_images_predicts_like_the_npy_set() {
    let indices = image_indices();
    let home = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let labels = read_i64(&digits().join("evaluation/labels.npy"));
    for model in ["mbv2_digits", "resnet_digits"] {
        let out = out_dir.path().join(format!("{model}.npy"));
        let o = run(
            home.path(),
            &[
                "eval",
                sample_model(model).to_str().unwrap(),
                "--data",
                images_dir().to_str().unwrap(),
                "--split",
                "all",
                "--save-outputs",
                out.to_str().unwrap(),
                "--no-workspace",
                "--json",
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{model}: {}", stderr(&o));
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(doc["samples"], 100);

        let from_images = argmax(rows(&read_f32(&out)).view());
        let npy = argmax(npy_logits(model, 100).view());
        let agree = indices
            .iter()
            .enumerate()
            .filter(|(k, &i)| from_images[*k] == npy[i])
            .count();
        assert!(
            agree >= 99,
            "{model}: images agree with the npy samples on {agree}/100"
        );
        // the reported accuracy is the images' own, against the folder labels
        let correct = indices
            .iter()
            .enumerate()
            .filter(|(k, &i)| from_images[*k] as i64 == labels[i])
            .count();
        let accuracy = doc["accuracy"].as_f64().unwrap();
        assert_eq!(correct, (accuracy * 100.0).round() as usize, "{model}");
        assert!(accuracy >= 0.97, "{model}: {accuracy}");
    }
}
