//! Writing a model back to ONNX (prost, the encoder of tract's own protobuf types).

use super::Model;
use crate::fsutil::write_atomic;
use crate::Result;
use std::path::Path;

/// Encode and write atomically; a crash mid-write leaves the old file intact.
pub fn save(model: &Model, path: &Path) -> Result<()> {
    write_atomic(path, &model.to_bytes())
}
