//! The sample model and its digits data, compiled into the binary so that `qsteer`
//! with no arguments works from any directory. On first use they are written to
//! `<data dir>/samples/` and used from there like any user files.
//!
//! The embedded model is the ResNet-style sample: every step of the loop reaches a deliverable
//! model on it with the dialogs' defaults, the SSVD→CP sweep to 0.5 MACs included. The
//! MobileNetV2-style sample (sample-models/mbv2_digits.onnx) is mostly 1×1 and depthwise convs,
//! where spatial SVD has little to take, so its default sweep cannot end at a usable model.

use crate::experiment::qsteer_data_dir;
use crate::fsutil::write_atomic;
use crate::Result;
use std::path::PathBuf;

pub const SAMPLE_NAME: &str = "resnet_digits";

const FILES: &[(&str, &[u8])] = &[
    (
        "resnet_digits.onnx",
        include_bytes!("../sample-models/resnet_digits.onnx"),
    ),
    (
        "digits/calibration/inputs.npy",
        include_bytes!("../sample-models/digits/calibration/inputs.npy"),
    ),
    (
        "digits/calibration/labels.npy",
        include_bytes!("../sample-models/digits/calibration/labels.npy"),
    ),
    (
        "digits/evaluation/inputs.npy",
        include_bytes!("../sample-models/digits/evaluation/inputs.npy"),
    ),
    (
        "digits/evaluation/labels.npy",
        include_bytes!("../sample-models/digits/evaluation/labels.npy"),
    ),
    // The training split, so fine-tuning in the app offers a set apart from calibration.
    (
        "digits/training/inputs.npy",
        include_bytes!("../sample-models/digits/training/inputs.npy"),
    ),
    (
        "digits/training/labels.npy",
        include_bytes!("../sample-models/digits/training/labels.npy"),
    ),
];

/// Paths of the materialized sample: (model file, dataset directory).
pub struct SamplePaths {
    pub model: PathBuf,
    pub data: PathBuf,
}

/// Write the embedded sample under the data dir (once; rewritten if a file differs).
pub fn materialize() -> Result<SamplePaths> {
    let dir = qsteer_data_dir()?.join("samples");
    for (rel, bytes) in FILES {
        let path = dir.join(rel);
        let same = std::fs::read(&path).map(|b| b == *bytes).unwrap_or(false);
        if !same {
            write_atomic(&path, bytes)?;
        }
    }
    Ok(SamplePaths {
        model: dir.join(format!("{SAMPLE_NAME}.onnx")),
        data: dir.join("digits"),
    })
}
