//! Output paths (`--out`, `--export`) checked before any work starts: a job that ran for
//! minutes and recorded its variant must not then fail on a path it could have refused at
//! once.

use qsteer::{Error, Result};
use std::path::{Path, PathBuf};

/// What is written at an output path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// One file (replaced if it exists); its directory is created if missing.
    File,
    /// A directory files are written into; created if missing.
    Dir,
}

/// Check that `path` (given as `flag`) can be written as `kind`: nothing of the other kind is
/// in the way, and the directory it lands in exists or can be created and is writable. An
/// input error (exit 2) naming the flag and the path otherwise.
pub(crate) fn check_output(flag: &str, path: &Path, kind: Output) -> Result<()> {
    let refuse = |why: String| Err(Error::input(format!("{flag} {}: {why}", path.display())));
    if path.as_os_str().is_empty() {
        return refuse("an empty path".into());
    }
    match (kind, std::fs::metadata(path)) {
        (Output::File, Ok(m)) if m.is_dir() => {
            return refuse("is a directory; name a file".into());
        }
        (Output::Dir, Ok(m)) if !m.is_dir() => {
            return refuse("a file is in the way (expected a directory)".into());
        }
        _ => {}
    }
    // The directory the files land in: the path itself for a directory, else its parent.
    let landing = match kind {
        Output::Dir => path.to_path_buf(),
        Output::File => match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
    };
    // The nearest existing ancestor must be a directory we can create entries in.
    let mut existing = landing.as_path();
    loop {
        match std::fs::metadata(existing) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return refuse(format!("{} is a file, not a directory", existing.display())),
            Err(_) => match existing.parent() {
                Some(p) if !p.as_os_str().is_empty() => existing = p,
                _ => {
                    existing = Path::new(".");
                    break;
                }
            },
        }
    }
    writable(existing).map_err(|e| {
        Error::input(format!(
            "{flag} {}: cannot write in {}: {e}",
            path.display(),
            existing.display()
        ))
    })
}

/// Whether entries can be created in `dir`: create and remove a probe file (permission bits
/// alone say nothing for root or on read-only mounts).
fn writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".qsteer-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_the_way_are_refused_and_new_ones_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let msg = |r: Result<()>| r.unwrap_err().to_string();
        assert!(msg(check_output("--export", &file, Output::Dir)).contains("--export"));
        assert!(msg(check_output("--out", dir.path(), Output::File)).contains("directory"));
        assert!(
            msg(check_output("--out", &file.join("a.onnx"), Output::File)).contains("is a file")
        );
        assert!(
            msg(check_output("--export", &file.join("sub/d"), Output::Dir)).contains("is a file")
        );
        check_output("--out", &file, Output::File).unwrap();
        check_output("--out", &dir.path().join("new/deeper/m.onnx"), Output::File).unwrap();
        check_output("--export", &dir.path().join("new/d"), Output::Dir).unwrap();
        check_output("--export", dir.path(), Output::Dir).unwrap();
        // nothing was created by the checks
        assert!(!dir.path().join("new").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
