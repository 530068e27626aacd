//! Per-epoch checkpoints in the workspace cache, so a killed run resumes from its last
//! finished epoch: the trainable values, the optimizer moments and the run's history.
//! Layout: 8-byte little-endian header length, a JSON header, then the tensors' f32 data.

use super::value::Value;
use crate::fsutil::write_atomic;
use crate::{Error, Result};
use burn_tensor::{DType, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Mean training loss over the epoch's steps.
    pub loss: f64,
    /// The evaluation score after the epoch (the metric the run is scored on).
    pub score: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// Hash of model, data and settings: a checkpoint of another run is never resumed.
    pub key: String,
    pub epochs_done: usize,
    pub optim_t: u64,
    pub history: Vec<EpochRecord>,
    /// Name and shape of each stored tensor, in data order (`None`: an absent moment).
    pub tensors: Vec<(String, Option<Vec<usize>>)>,
}

/// The state to store: named tensors (values, moments, best values).
pub struct State {
    pub header: Header,
    pub tensors: Vec<Option<Value>>,
}

pub fn save(path: &Path, state: &State) -> Result<()> {
    let mut data = Vec::new();
    for v in state.tensors.iter().flatten() {
        for x in v.to_array().iter() {
            data.extend_from_slice(&x.to_le_bytes());
        }
    }
    let header = serde_json::to_vec(&state.header)
        .map_err(|e| Error::runtime(format!("checkpoint header: {e}")))?;
    let mut bytes = Vec::with_capacity(8 + header.len() + data.len());
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&data);
    write_atomic(path, &bytes)
}

/// Read a checkpoint; `None` if there is none, or it belongs to another run or is damaged
/// (a fresh start is always safe).
pub fn load(path: &Path, key: &str, device: &Device, dtype: DType) -> Option<State> {
    let bytes = std::fs::read(path).ok()?;
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: Header = serde_json::from_slice(bytes.get(8..8 + len)?).ok()?;
    if header.key != key {
        return None;
    }
    let mut rest = bytes.get(8 + len..)?;
    let mut tensors = Vec::with_capacity(header.tensors.len());
    for (_, shape) in &header.tensors {
        let Some(shape) = shape else {
            tensors.push(None);
            continue;
        };
        let n: usize = shape.iter().product();
        let raw = rest.get(..n * 4)?;
        rest = &rest[n * 4..];
        let v: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let t = Tensor::<4>::from_data(
            TensorData::new(v, super::value::physical(shape)),
            (device, dtype),
        );
        tensors.push(Some(Value::new(t, shape.clone())));
    }
    rest.is_empty().then_some(State { header, tensors })
}
