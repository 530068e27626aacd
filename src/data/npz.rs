//! NumPy .npz archives: a zip of .npy members (`np.savez` stores, `np.savez_compressed` deflates).

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Seek};
use std::path::Path;

use super::npy::{read_npy_bytes, NpyArray};
use crate::{Error, Result};

/// Don't trust a member's declared size for more than this much up-front allocation.
const MAX_PREALLOCATION: u64 = 256 << 20;

/// Read every array of a .npz file, keyed by member name without the `.npy` suffix.
pub fn read_npz(path: &Path) -> Result<BTreeMap<String, NpyArray>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_npz_from(&path.display().to_string(), std::io::BufReader::new(file))
}

/// Read a .npz held in memory; `name` is what error messages call it.
pub fn read_npz_bytes(name: &str, bytes: &[u8]) -> Result<BTreeMap<String, NpyArray>> {
    read_npz_from(name, Cursor::new(bytes))
}

fn read_npz_from<R: Read + Seek>(name: &str, reader: R) -> Result<BTreeMap<String, NpyArray>> {
    let mut archive = zip::ZipArchive::new(reader)
        .map_err(|e| Error::input(format!("{name}: not a readable .npz (zip) archive: {e}")))?;
    let mut arrays = BTreeMap::new();
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
        let mut bytes = Vec::with_capacity(member.size().min(MAX_PREALLOCATION) as usize);
        member
            .read_to_end(&mut bytes)
            .map_err(|e| Error::input(format!("{label}: cannot decompress: {e}")))?;
        let array = read_npy_bytes(&label, &bytes)?;
        if arrays.insert(key.to_string(), array).is_some() {
            return Err(Error::input(format!(
                "{name}: archive holds '{member_name}' twice"
            )));
        }
    }
    Ok(arrays)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::npy::npy_bytes;
    use ndarray::{Array, IxDyn};
    use std::io::Write;
    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod;

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
