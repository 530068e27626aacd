//! One error type for the engine. Every message names the file, node or field at fault.

use std::path::{Path, PathBuf};

/// Errors are split by who must act: `Input` means the user's file or argument is wrong
/// (exit code 2), everything else is a failed job (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: a model, dataset, workspace or argument the user supplied.
    #[error("{0}")]
    Input(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The inference engine failed on a model that loaded.
    #[error("{0}")]
    Runtime(String),
    /// The job was cancelled by the user.
    #[error("cancelled")]
    Cancelled,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }

    pub fn runtime(msg: impl Into<String>) -> Self {
        Error::Runtime(msg.into())
    }

    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// The process exit code the CLI uses for this error (DESIGN.md §2). A path that does
    /// not lead where it should (missing, a file where a directory belongs or the reverse,
    /// not permitted) is bad input, not a failed job.
    pub fn exit_code(&self) -> i32 {
        use std::io::ErrorKind::*;
        match self {
            Error::Input(_) => 2,
            Error::Io { source, .. }
                if matches!(
                    source.kind(),
                    NotFound | NotADirectory | IsADirectory | PermissionDenied
                ) =>
            {
                2
            }
            _ => 1,
        }
    }
}
