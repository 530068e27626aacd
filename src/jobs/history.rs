//! Rebuilding the job list from the journal after a restart. The journal is append-only,
//! so a job's state is its last line; a job whose last line says queued or started never
//! ended — the process stopped under it — and is reported as interrupted.

use super::journal::{job_log_path, jobs_journal_path, JournalLine, Logged};
use super::kind::{JobId, JobKind};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a slot (live runner view only).
    Queued,
    /// Started and not ended (live runner view only).
    Running,
    Finished,
    Failed,
    Cancelled,
    /// Queued or started when the process that ran it stopped.
    Interrupted,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Interrupted => "interrupted",
        }
    }
}

/// A job's last known state, as the jobs pane shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub kind: JobKind,
    pub state: JobState,
    /// Seconds since the Unix epoch.
    pub queued_at: Option<f64>,
    pub started_at: Option<f64>,
    pub ended_at: Option<f64>,
    /// Seconds from start to end, once ended.
    pub seconds: Option<f64>,
    pub summary: Option<serde_json::Value>,
    pub error: Option<String>,
}

impl JobRecord {
    /// One line for people, e.g. `job 3 (evaluate v1) was interrupted while running`.
    pub fn describe(&self) -> String {
        let head = format!("job {} ({})", self.id, self.kind.label());
        match self.state {
            JobState::Interrupted if self.started_at.is_some() => {
                format!("{head} was interrupted while running")
            }
            JobState::Interrupted => format!("{head} was interrupted before it started"),
            JobState::Failed => format!(
                "{head} failed: {}",
                self.error.as_deref().unwrap_or("unknown error")
            ),
            s => format!("{head} {}", s.name()),
        }
    }
}

/// The journal read back: jobs by id, how many lines could not be read, the next id.
#[derive(Debug, Clone)]
pub struct JobHistory {
    pub jobs: Vec<JobRecord>,
    /// Lines skipped as unreadable (a cut-off last line, a foreign or corrupt line).
    pub skipped_lines: usize,
    pub next_id: JobId,
    /// Jobs whose last line is queued or started: not yet marked interrupted.
    pub(crate) unended: Vec<JobId>,
}

impl JobHistory {
    /// Jobs the last stopped process left queued or started, not yet reported: what the
    /// app names at startup. Opening a [`super::JobRunner`] marks them reported, so the
    /// next start does not repeat them (they stay `Interrupted` in `jobs`).
    pub fn interrupted(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.iter().filter(|j| self.unended.contains(&j.id))
    }
}

/// Each job's last state from `logs/jobs.jsonl` (oldest id first). No journal yet is an
/// empty history.
pub fn job_history(workspace_dir: &Path) -> Result<Vec<JobRecord>> {
    Ok(load_history(workspace_dir)?.jobs)
}

/// [`job_history`] with the count of skipped lines and the id the next job gets.
pub fn load_history(workspace_dir: &Path) -> Result<JobHistory> {
    let path = jobs_journal_path(workspace_dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(&path, e)),
    };
    // Lossy: one bad byte spoils its line only.
    let text = String::from_utf8_lossy(&bytes);
    let mut jobs: BTreeMap<JobId, JobRecord> = BTreeMap::new();
    let mut skipped = 0;
    let mut max_id = 0u64;
    let mut last: BTreeMap<JobId, Logged> = BTreeMap::new();
    for raw in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(raw) else {
            skipped += 1;
            continue;
        };
        // An id counts for numbering even when the rest of the line does not parse.
        if let Some(id) = value.get("id").and_then(|v| v.as_u64()) {
            max_id = max_id.max(id);
        }
        match serde_json::from_value::<JournalLine>(value) {
            Ok(line) => {
                last.insert(line.id, line.state);
                apply(&mut jobs, line);
            }
            Err(_) => skipped += 1,
        }
    }
    max_id = max_id.max(max_log_file_id(workspace_dir));
    Ok(JobHistory {
        jobs: jobs.into_values().collect(),
        skipped_lines: skipped,
        next_id: JobId(max_id + 1),
        unended: last
            .into_iter()
            .filter(|(_, s)| matches!(s, Logged::Queued | Logged::Started))
            .map(|(id, _)| id)
            .collect(),
    })
}

fn apply(jobs: &mut BTreeMap<JobId, JobRecord>, line: JournalLine) {
    let rec = jobs.entry(line.id).or_insert_with(|| JobRecord {
        id: line.id,
        kind: line.kind.clone(),
        state: JobState::Interrupted,
        queued_at: None,
        started_at: None,
        ended_at: None,
        seconds: None,
        summary: None,
        error: None,
    });
    rec.kind = line.kind;
    rec.state = match line.state {
        Logged::Queued => {
            rec.queued_at = Some(line.time);
            JobState::Interrupted
        }
        Logged::Started => {
            rec.started_at = Some(line.time);
            JobState::Interrupted
        }
        Logged::Interrupted => JobState::Interrupted,
        end => {
            rec.ended_at = Some(line.time);
            rec.seconds = rec.started_at.map(|s| (line.time - s).max(0.0));
            match end {
                Logged::Finished => JobState::Finished,
                Logged::Failed => JobState::Failed,
                _ => JobState::Cancelled,
            }
        }
    };
    if line.summary.is_some() {
        rec.summary = line.summary;
    }
    if line.error.is_some() {
        rec.error = line.error;
    }
}

/// The highest id among `logs/job-<id>.log`, so an id whose journal line was lost is
/// still not reused.
fn max_log_file_id(workspace_dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(workspace_dir.join("logs")) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("job-")?
                .strip_suffix(".log")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// A job's log lines as persisted (empty if it wrote none).
pub fn read_job_log(workspace_dir: &Path, id: JobId) -> Result<Vec<String>> {
    let path = job_log_path(workspace_dir, id);
    match fs::read(&path) {
        Ok(b) => Ok(String::from_utf8_lossy(&b)
            .lines()
            .map(str::to_string)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(&path, e)),
    }
}
