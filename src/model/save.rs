//! Writing a model back to ONNX (prost, the encoder of tract's own protobuf types).

use super::Model;
use crate::fsutil::write_atomic;
use crate::{Error, Result};
use std::path::Path;

/// The most a protobuf message can hold; weights are always written inline.
const PROTOBUF_LIMIT: u64 = 2 << 30;

/// Encode and write atomically; a crash mid-write leaves the old file intact. Weights are
/// written inline (a model loaded with external data comes out as one file), so the model
/// must fit protobuf's 2 GB.
pub fn save(model: &Model, path: &Path) -> Result<()> {
    let size: u64 = model
        .graph()
        .initializer
        .iter()
        .map(|t| t.raw_data.len() as u64 + 4 * t.float_data.len() as u64)
        .sum();
    if size >= PROTOBUF_LIMIT {
        return Err(Error::input(format!(
            "{}: {size} bytes of weights; qsteer writes weights inline and an ONNX file holds \
             at most 2 GB (external data output is not supported)",
            path.display()
        )));
    }
    write_atomic(path, &model.to_bytes())
}
