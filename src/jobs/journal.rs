//! The job journal in the workspace: `logs/jobs.jsonl`, one JSON line per state change,
//! and `logs/job-<id>.log`, each job's log lines. Append-only, so a crash can at worst
//! cut the last line short; the history reader tolerates that.

use super::kind::{JobId, JobKind};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A state as written to `jobs.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Logged {
    Queued,
    Started,
    Finished,
    Failed,
    Cancelled,
    /// Written when a runner opens the workspace and finds a job that never ended.
    Interrupted,
}

impl Logged {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Logged::Queued => "queued",
            Logged::Started => "started",
            Logged::Finished => "finished",
            Logged::Failed => "failed",
            Logged::Cancelled => "cancelled",
            Logged::Interrupted => "interrupted",
        }
    }
}

/// One line of `jobs.jsonl`. Every line carries the kind, so a job is known even if its
/// earlier lines were lost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JournalLine {
    pub id: JobId,
    pub state: Logged,
    /// Seconds since the Unix epoch, to the millisecond (elapsed times come from it).
    pub time: f64,
    pub kind: JobKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `<workspace>/logs/jobs.jsonl`.
pub fn jobs_journal_path(workspace_dir: &Path) -> PathBuf {
    workspace_dir.join("logs").join("jobs.jsonl")
}

/// `<workspace>/logs/job-<id>.log`.
pub fn job_log_path(workspace_dir: &Path, id: JobId) -> PathBuf {
    workspace_dir.join("logs").join(format!("job-{id}.log"))
}

/// Appends for one workspace. The mutex keeps this process's lines whole and in order.
#[derive(Debug)]
pub(crate) struct Journal {
    workspace_dir: PathBuf,
    lock: Mutex<()>,
    /// False for a Slurm node's run: the process that submitted the job journals it.
    enabled: bool,
}

impl Journal {
    pub(crate) fn new(workspace_dir: &Path) -> Journal {
        Journal {
            workspace_dir: workspace_dir.to_path_buf(),
            lock: Mutex::new(()),
            enabled: true,
        }
    }

    /// A journal that writes nothing.
    pub(crate) fn disabled(workspace_dir: &Path) -> Journal {
        Journal {
            enabled: false,
            ..Journal::new(workspace_dir)
        }
    }

    pub(crate) fn workspace_dir(&self) -> &Path {
        &self.workspace_dir
    }

    /// Record a state change. `durable` fsyncs: used for the end of a job, whose result
    /// must survive a crash as surely as the workspace file does.
    pub(crate) fn state(&self, line: &JournalLine, durable: bool) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let path = jobs_journal_path(&self.workspace_dir);
        let text = serde_json::to_string(line)
            .map_err(|e| Error::runtime(format!("{}: cannot serialize: {e}", path.display())))?;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        append_line(&path, &text, durable)
    }

    /// Append one line to the job's own log.
    pub(crate) fn log(&self, id: JobId, line: &str) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let path = job_log_path(&self.workspace_dir, id);
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        append_line(&path, line, false)
    }
}

pub(crate) fn journal_line(
    id: JobId,
    kind: &JobKind,
    state: Logged,
    summary: Option<serde_json::Value>,
    error: Option<String>,
) -> JournalLine {
    JournalLine {
        id,
        state,
        time: unix_seconds(),
        kind: kind.clone(),
        summary,
        error,
    }
}

fn unix_seconds() -> f64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    ms as f64 / 1000.0
}

/// Append `text` and a newline in one write. If an earlier crash left the file without
/// a final newline, start a fresh line first so the cut-off fragment does not swallow
/// this one.
fn append_line(path: &Path, text: &str, durable: bool) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let mut buf = String::with_capacity(text.len() + 2);
    if !ends_with_newline(&mut f).map_err(|e| Error::io(path, e))? {
        buf.push('\n');
    }
    // A log line must stay one line.
    buf.push_str(&text.replace('\n', " "));
    buf.push('\n');
    f.write_all(buf.as_bytes())
        .map_err(|e| Error::io(path, e))?;
    if durable {
        f.sync_data().map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// True for an empty file too: nothing to repair.
fn ends_with_newline(f: &mut fs::File) -> std::io::Result<bool> {
    let len = f.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(true);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_after_a_cut_off_line_starts_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/x.jsonl");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "{\"a\":1}\n{\"id\":3,\"sta").unwrap();
        append_line(&path, "{\"b\":2}", true).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"id\":3,\"sta\n{\"b\":2}\n");
    }
}
