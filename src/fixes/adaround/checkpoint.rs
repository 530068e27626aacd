//! Per-layer checkpoints of an AdaRound run: after each layer its rounded weight is stored
//! under `cache/adaround/<key>/`, the key hashing everything the result depends on, so a
//! rerun (after a cancel or a crash) loads finished layers instead of optimising them again.
//!
//! One file per layer, `layer-<n>.bin`: a JSON header line, then the weight as little-endian
//! f32. Written atomically, so a file is complete or absent; a file that does not match the
//! layer is ignored (the layer is optimised again).

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use super::LayerRound;
use crate::fsutil::write_atomic;
use crate::{Error, Result};

#[derive(Serialize, Deserialize)]
struct Header {
    layer: String,
    weight: String,
    shape: Vec<usize>,
    report: LayerRound,
}

/// The checkpoint directory of one run under `root`.
pub fn run_dir(root: &Path, key: &str) -> PathBuf {
    root.join(key)
}

fn file(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("layer-{index}.bin"))
}

pub fn store(
    dir: &Path,
    index: usize,
    weight: &str,
    array: &ArrayD<f32>,
    report: &LayerRound,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let header = Header {
        layer: report.layer.clone(),
        weight: weight.to_string(),
        shape: array.shape().to_vec(),
        report: report.clone(),
    };
    let mut bytes = serde_json::to_vec(&header)
        .map_err(|e| Error::runtime(format!("checkpoint of '{}': {e}", report.layer)))?;
    bytes.push(b'\n');
    bytes.reserve(array.len() * 4);
    for v in array.iter() {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    write_atomic(&file(dir, index), &bytes)
}

/// The stored weight and report of layer `index`, if a matching checkpoint exists.
pub fn load(
    dir: &Path,
    index: usize,
    layer: &str,
    weight: &str,
    shape: &[usize],
) -> Option<(ArrayD<f32>, LayerRound)> {
    let bytes = std::fs::read(file(dir, index)).ok()?;
    let split = bytes.iter().position(|&b| b == b'\n')?;
    let header: Header = serde_json::from_slice(&bytes[..split]).ok()?;
    if header.layer != layer || header.weight != weight || header.shape != shape {
        return None;
    }
    let body = &bytes[split + 1..];
    if body.len() != shape.iter().product::<usize>() * 4 {
        return None;
    }
    let values: Vec<f32> = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let array = ArrayD::from_shape_vec(IxDyn(shape), values).ok()?;
    Some((array, header.report))
}
