//! Export of a quantized variant: its FP32 parent's model with the variant's encodings,
//! written as the QDQ ONNX model and the encodings file (see `quant::export`). Shared by the
//! export job (the app) and `qsteer export`.

use super::Workspace;
use crate::quant::encodings_file::EncodingsVersion;
use crate::quant::export::{write_export_with_biases, ExportReport};
use crate::quant::import::load_model_encodings;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The FP32 model a quantized variant was made from and the encodings file to export with
/// (`encodings` overrides the variant's own).
pub fn export_source(
    ws: &Workspace,
    id: u32,
    encodings: Option<&Path>,
) -> Result<(PathBuf, PathBuf)> {
    let dir = ws.dir().display();
    let variant = ws
        .variant(id)
        .ok_or_else(|| Error::input(format!("{dir}: no variant {id}")))?;
    let parent = variant.parent.and_then(|p| ws.variant(p)).ok_or_else(|| {
        Error::input(format!(
            "{dir}: variant {id} has no parent variant to take the FP32 model from"
        ))
    })?;
    let encodings = match (encodings, &variant.encodings_file) {
        (Some(file), _) => file.to_path_buf(),
        (None, Some(rel)) => ws.dir().join(rel),
        (None, None) => {
            return Err(Error::input(format!(
                "{dir}: variant {id} ({}) has no encodings; export a quantsim variant or pass \
                 an encodings file",
                variant.step
            )))
        }
    };
    Ok((ws.model_path(parent), encodings))
}

/// Write `out_dir/<model>_v<id>.qdq.onnx` and its encodings file. The model is analysed
/// at `pins` (per-sample input shapes), else at the shapes the workspace's data had.
pub fn export_variant(
    ws: &Workspace,
    id: u32,
    out_dir: &Path,
    version: EncodingsVersion,
    encodings: Option<&Path>,
    pins: Option<&[Vec<usize>]>,
) -> Result<ExportReport> {
    let (model_path, encodings) = export_source(ws, id, encodings)?;
    let model = ws.load_model(&model_path)?;
    let pins = pins.or(ws.settings().input_shapes.as_deref());
    let loaded = load_model_encodings(&model, &encodings, pins)?;
    write_export_with_biases(
        out_dir,
        &format!("{}_v{id}", ws.file().model_name),
        &model,
        &loaded.weights,
        &loaded.activations,
        &loaded.biases,
        version,
    )
}
