//! How a detached job ended, written by the job's own process (`qsteer run-job --outcome
//! FILE`) as its last act, so whoever follows it — the app that started it, a restarted
//! app, `qsteer jobs --follow` — records the same end.

use crate::fsutil::write_json_atomic;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DetachedOutcome {
    /// The job's summary (what the submitting process journals).
    Finished {
        summary: serde_json::Value,
    },
    Failed {
        error: String,
        /// The request or its inputs were at fault (exit code 2), not the job.
        #[serde(default)]
        input: bool,
    },
    Cancelled,
}

impl DetachedOutcome {
    /// The outcome of a job run that returned `result`.
    pub fn of(result: &Result<serde_json::Value>) -> DetachedOutcome {
        match result {
            Ok(summary) => DetachedOutcome::Finished {
                summary: summary.clone(),
            },
            Err(Error::Cancelled) => DetachedOutcome::Cancelled,
            Err(e) => DetachedOutcome::Failed {
                error: e.to_string(),
                input: e.exit_code() == 2,
            },
        }
    }

    /// Written atomically: a reader sees the whole outcome or none.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_json_atomic(path, self)
    }

    /// The outcome at `path`, None while there is none. A file that is there but not an
    /// outcome is an error naming it.
    pub(crate) fn load(path: &Path) -> Result<Option<DetachedOutcome>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::runtime(format!(
                "{}: not a detached job's outcome: {e}",
                path.display()
            ))
        })
    }

    /// The job's result as its submitter returns it.
    pub fn into_result(self) -> Result<serde_json::Value> {
        match self {
            DetachedOutcome::Finished { summary } => Ok(summary),
            DetachedOutcome::Failed { error, input: true } => Err(Error::Input(error)),
            DetachedOutcome::Failed { error, .. } => Err(Error::Runtime(error)),
            DetachedOutcome::Cancelled => Err(Error::Cancelled),
        }
    }

    /// The error of a job that did not finish (`Ok` for a finished one), with the exit
    /// code its kind of failure has.
    pub fn into_error(self) -> Result<()> {
        self.into_result().map(|_| ())
    }

    /// The `state` a workspace record keeps.
    pub(crate) fn state(&self) -> &'static str {
        match self {
            DetachedOutcome::Finished { .. } => "finished",
            DetachedOutcome::Failed { .. } => "failed",
            DetachedOutcome::Cancelled => "cancelled",
        }
    }
}
