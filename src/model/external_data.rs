//! Initializers stored outside the model file (`data_location: EXTERNAL`, as PyTorch writes
//! models over 2 GB and some smaller ones): read into the protobuf at load time, so tract,
//! the graph rewrites and every saved model see ordinary inline tensors. A saved model
//! therefore holds its weights inline (which protobuf allows up to 2 GB; see `save`).
//!
//! `location` is relative to the model file's directory and must stay inside it (as tract
//! and ONNX Runtime require); `offset` and `length` are optional; `checksum` is ignored.

use crate::{Error, Result};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};
use tract_onnx::pb::{GraphProto, TensorProto};

const EXTERNAL: i32 = 1;

/// Does this tensor keep its bytes in another file?
pub fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(EXTERNAL) || !t.external_data.is_empty()
}

/// Read every external initializer of `graph` into its `raw_data`. `model_dir` is the
/// directory of the model file; `source` names the model in messages.
pub fn inline_external_data(graph: &mut GraphProto, model_dir: &Path, source: &str) -> Result<()> {
    for t in graph.initializer.iter_mut().filter(|t| is_external(t)) {
        let what = format!("{source}: initializer '{}'", t.name);
        t.raw_data = read_external(t, model_dir, &what)?;
        t.external_data.clear();
        t.data_location = None;
    }
    Ok(())
}

fn entry<'a>(t: &'a TensorProto, key: &str) -> Option<&'a str> {
    t.external_data
        .iter()
        .find(|e| e.key == key)
        .map(|e| e.value.as_str())
}

fn number(t: &TensorProto, key: &str, what: &str) -> Result<Option<u64>> {
    entry(t, key)
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                Error::input(format!("{what}: external data {key} '{v}' is not a number"))
            })
        })
        .transpose()
}

fn read_external(t: &TensorProto, model_dir: &Path, what: &str) -> Result<Vec<u8>> {
    let location = entry(t, "location")
        .filter(|l| !l.is_empty())
        .ok_or_else(|| Error::input(format!("{what}: external data without a location")))?;
    let relative = Path::new(location);
    let escapes = relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(Error::input(format!(
            "{what}: external data location '{location}' must be a path inside the model's \
             directory"
        )));
    }
    let path = model_dir.join(relative);
    let offset = number(t, "offset", what)?.unwrap_or(0);
    let length = number(t, "length", what)?;
    let mut file = std::fs::File::open(&path).map_err(|e| {
        Error::input(format!(
            "{what}: cannot open its external data file {}: {e}",
            path.display()
        ))
    })?;
    let size = file.metadata().map_err(|e| Error::io(&path, e))?.len();
    let length = length.unwrap_or(size.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(Error::input(format!(
            "{what}: external data {}: bytes {offset}..{} asked for, the file has {size}",
            path.display(),
            offset.saturating_add(length)
        )));
    }
    let mut bytes = vec![0u8; length as usize];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| Error::io(&path, e))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::StringStringEntryProto;

    fn external(location: &str, offset: u64, length: u64) -> TensorProto {
        let kv = |k: &str, v: String| StringStringEntryProto {
            key: k.into(),
            value: v,
        };
        TensorProto {
            name: "w".into(),
            dims: vec![2],
            data_type: 1,
            data_location: Some(EXTERNAL),
            external_data: vec![
                kv("location", location.into()),
                kv("offset", offset.to_string()),
                kv("length", length.to_string()),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn reads_the_slice_and_names_what_is_missing_or_outside() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = [0.0f32, 1.5, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(dir.path().join("w.bin"), &bytes).unwrap();
        let mut g = GraphProto {
            initializer: vec![external("w.bin", 4, 8)],
            ..Default::default()
        };
        inline_external_data(&mut g, dir.path(), "m.onnx").unwrap();
        assert_eq!(g.initializer[0].raw_data, bytes[4..12].to_vec());
        assert!(!is_external(&g.initializer[0]));

        let mut g = GraphProto {
            initializer: vec![external("gone.bin", 0, 8)],
            ..Default::default()
        };
        let e = inline_external_data(&mut g, dir.path(), "m.onnx")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("m.onnx: initializer 'w': cannot open its external data file")
                && e.contains("gone.bin"),
            "{e}"
        );
        let mut g = GraphProto {
            initializer: vec![external("../w.bin", 0, 8)],
            ..Default::default()
        };
        let e = inline_external_data(&mut g, dir.path(), "m.onnx")
            .unwrap_err()
            .to_string();
        assert!(e.contains("inside the model's directory"), "{e}");
        let mut g = GraphProto {
            initializer: vec![external("w.bin", 8, 8)],
            ..Default::default()
        };
        let e = inline_external_data(&mut g, dir.path(), "m.onnx")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bytes 8..16 asked for, the file has 12"), "{e}");
    }
}
