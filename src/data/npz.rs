//! NumPy .npz archives: a zip of .npy members (`np.savez` stores, `np.savez_compressed` deflates).

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use zip::CompressionMethod;

use super::npy::{read_npy_bytes, NpyArray};
use super::npy_store::Bytes;
use crate::{Error, Result};

/// Don't trust a member's declared size for more than this much up-front allocation.
const MAX_PREALLOCATION: u64 = 256 << 20;

/// One .npy member of an archive: in place in the mapped archive when stored
/// (`np.savez`), decompressed into memory when deflated (`np.savez_compressed`).
pub(crate) struct Member {
    /// `archive.npz:key.npy`, for messages.
    pub label: String,
    pub bytes: Bytes,
    pub region: Range<usize>,
}

impl Member {
    pub(crate) fn array(&self) -> Result<NpyArray> {
        read_npy_bytes(&self.label, &self.bytes.as_slice()[self.region.clone()])
    }
}

/// Read every array of a .npz file, keyed by member name without the `.npy` suffix.
pub fn read_npz(path: &Path) -> Result<BTreeMap<String, NpyArray>> {
    arrays(npz_members(
        &path.display().to_string(),
        &Bytes::map(path)?,
    )?)
}

/// Read a .npz held in memory; `name` is what error messages call it.
pub fn read_npz_bytes(name: &str, bytes: &[u8]) -> Result<BTreeMap<String, NpyArray>> {
    arrays(npz_members(name, &Bytes::Owned(Arc::new(bytes.to_vec())))?)
}

fn arrays(members: BTreeMap<String, Member>) -> Result<BTreeMap<String, NpyArray>> {
    members
        .into_iter()
        .map(|(k, m)| Ok((k, m.array()?)))
        .collect()
}

/// The archive's .npy members, keyed by name without `.npy`, without decoding them.
pub(crate) fn npz_members(name: &str, bytes: &Bytes) -> Result<BTreeMap<String, Member>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes.as_slice()))
        .map_err(|e| Error::input(format!("{name}: not a readable .npz (zip) archive: {e}")))?;
    let mut members = BTreeMap::new();
    for index in 0..archive.len() {
        let mut member = archive.by_index(index).map_err(|e| {
            Error::input(format!("{name}: cannot read archive member #{index}: {e}"))
        })?;
        if member.is_dir() {
            continue;
        }
        let member_name = member.name().to_string();
        let Some(key) = member_name.strip_suffix(".npy") else {
            return Err(Error::input(format!(
                "{name}: archive member '{member_name}' is not a .npy array"
            )));
        };
        let label = format!("{name}:{member_name}");
        let (bytes, region) = if member.compression() == CompressionMethod::Stored {
            let start = usize::try_from(member.data_start()).unwrap_or(usize::MAX);
            let len = usize::try_from(member.size()).unwrap_or(usize::MAX);
            let end = start.saturating_add(len);
            if end > bytes.as_slice().len() {
                return Err(Error::input(format!(
                    "{label}: member runs past the end of the archive (truncated file)"
                )));
            }
            (bytes.clone(), start..end)
        } else {
            let mut owned = Vec::with_capacity(member.size().min(MAX_PREALLOCATION) as usize);
            member
                .read_to_end(&mut owned)
                .map_err(|e| Error::input(format!("{label}: cannot decompress: {e}")))?;
            let len = owned.len();
            (Bytes::Owned(Arc::new(owned)), 0..len)
        };
        let m = Member {
            label,
            bytes,
            region,
        };
        if members.insert(key.to_string(), m).is_some() {
            return Err(Error::input(format!(
                "{name}: archive holds '{member_name}' twice"
            )));
        }
    }
    Ok(members)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::npy::npy_bytes;
    use ndarray::{Array, IxDyn};
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    /// Build a .npz in memory the way numpy does.
    pub(crate) fn npz_bytes(members: &[(&str, &NpyArray)], method: CompressionMethod) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(method);
        for (key, array) in members {
            zip.start_file(format!("{key}.npy"), options).unwrap();
            zip.write_all(&npy_bytes(array)).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn sample() -> (NpyArray, NpyArray) {
        let x = Array::from_shape_fn(IxDyn(&[3, 2, 2]), |i| i[0] as f32 + i[2] as f32 * 0.5);
        let y = Array::from_vec(vec![0i64, 2, 1]).into_dyn();
        (NpyArray::F32(x), NpyArray::I64(y))
    }

    #[test]
    fn reads_stored_and_deflated() {
        let (x, y) = sample();
        for method in [CompressionMethod::Stored, CompressionMethod::Deflated] {
            let bytes = npz_bytes(&[("inputs", &x), ("labels", &y)], method);
            let arrays = read_npz_bytes("d.npz", &bytes).unwrap();
            assert_eq!(arrays.keys().collect::<Vec<_>>(), ["inputs", "labels"]);
            assert_eq!(arrays["inputs"], x);
            assert_eq!(arrays["labels"], y);
        }
    }

    #[test]
    fn reads_from_disk() {
        let (x, _) = sample();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.npz");
        std::fs::write(
            &p,
            npz_bytes(&[("inputs", &x)], CompressionMethod::Deflated),
        )
        .unwrap();
        assert_eq!(read_npz(&p).unwrap()["inputs"], x);
    }

    #[test]
    fn errors_name_archive_and_member() {
        let e = read_npz_bytes("d.npz", b"not a zip")
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.npz") && e.contains("not a readable"), "{e}");

        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file("inputs.npy", SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"\x93NUMPY garbage").unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        let e = read_npz_bytes("d.npz", &bytes).unwrap_err().to_string();
        assert!(e.starts_with("d.npz:inputs.npy:"), "{e}");

        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file("notes.txt", SimpleFileOptions::default())
            .unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        let e = read_npz_bytes("d.npz", &bytes).unwrap_err().to_string();
        assert!(e.contains("'notes.txt' is not a .npy"), "{e}");
    }

    #[test]
    fn truncated_archive_is_an_error() {
        let (x, _) = sample();
        let bytes = npz_bytes(&[("inputs", &x)], CompressionMethod::Deflated);
        let e = read_npz_bytes("d.npz", &bytes[..bytes.len() / 2]).unwrap_err();
        assert!(e.to_string().contains("d.npz"));
    }
}
