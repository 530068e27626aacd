//! What a running job tells its front end, and the throttle that keeps progress from
//! flooding it.

use super::kind::{JobId, JobKind};
use crate::compress::greedy::dictionary::Entry;
use crate::compress::sweep::report::SweepRow;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    Queued {
        id: JobId,
        kind: JobKind,
    },
    Started {
        id: JobId,
    },
    /// `done` of `total` units of `what` (e.g. samples); never goes backwards.
    Progress {
        id: JobId,
        done: usize,
        total: usize,
        what: String,
    },
    /// A line of the job's log, the same text as in `logs/job-<id>.log`.
    Log {
        id: JobId,
        line: String,
    },
    /// A piece of the result as it is made (e.g. one entry of the compress job's eval-score
    /// dictionary), for a front end that draws the result while it fills.
    Partial {
        id: JobId,
        result: Partial,
    },
    Finished {
        id: JobId,
        summary: serde_json::Value,
    },
    Failed {
        id: JobId,
        error: String,
    },
    Cancelled {
        id: JobId,
    },
}

/// What a running job shows before it ends. On the wire (JSON lines of detached and Slurm
/// jobs, `--progress jsonl`) each is an object named by its one distinctive key, as before
/// the type existed: `{"slurm": …}`, `{"train_step": …}`, `{"dictionary_entry": …,
/// "computed": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Partial {
    /// The Slurm job's id, state, node and queue time (the jobs pane).
    Slurm { slurm: SlurmState },
    /// One optimizer step of a fine-tuning job (the loss curve).
    TrainStep { train_step: TrainStep },
    /// One epoch of the built-in trainer: its mean loss and score.
    TrainEpoch { train_epoch: TrainEpoch },
    /// The compress job's greedy dictionary is about to fill: its grid.
    DictionaryPlan { dictionary: DictionaryPlan },
    /// One cell of that grid; `computed` is false for one read from the cache.
    DictionaryEntry {
        dictionary_entry: Entry,
        computed: bool,
    },
    /// One candidate of the SSVD→CP sweep, at `stage` (`ssvd` or `cp`); boxed, as events
    /// queue in channels.
    SweepRow {
        sweep_row: Box<SweepRow>,
        stage: String,
    },
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SlurmState {
    pub job_id: String,
    pub state: String,
    /// Empty until the job has a node (and in the first partials, which name none).
    pub node: String,
    /// Slurm's reason for the state (e.g. `Priority`), if it gives one.
    pub reason: String,
    /// Set once the job has left the queue.
    pub queued_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TrainStep {
    pub epoch: u64,
    /// The step within the epoch, from 1.
    pub step: u64,
    /// Steps per epoch, when the trainer says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// `None` when it was not a number (a diverged run's NaN travels as `null`).
    pub loss: Option<f64>,
    /// An external trainer's metric value at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TrainEpoch {
    pub epoch: usize,
    /// `None` when not a number (JSON has no NaN).
    pub loss: Option<f64>,
    pub score: Option<f64>,
    /// The metric `score` is in.
    #[serde(default)]
    pub metric: String,
    #[serde(default)]
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DictionaryPlan {
    pub layers: Vec<String>,
    /// The candidate ratios k/N.
    pub candidates: Vec<f64>,
    #[serde(default)]
    pub metric: String,
    /// The uncompressed model's score.
    pub baseline: f64,
}

impl JobEvent {
    pub fn id(&self) -> JobId {
        match self {
            JobEvent::Queued { id, .. }
            | JobEvent::Started { id }
            | JobEvent::Progress { id, .. }
            | JobEvent::Log { id, .. }
            | JobEvent::Partial { id, .. }
            | JobEvent::Finished { id, .. }
            | JobEvent::Failed { id, .. }
            | JobEvent::Cancelled { id } => *id,
        }
    }

    /// The job's last event: nothing about it follows.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobEvent::Finished { .. } | JobEvent::Failed { .. } | JobEvent::Cancelled { .. }
        )
    }
}

/// At most ~20 progress events a second per job; the first and the last of each stage
/// (`what`, e.g. calibration then evaluation) always pass. Called from worker threads,
/// which may report out of order, so stale counts within a stage are dropped.
pub(crate) struct Throttle {
    gap: Duration,
    last: Mutex<Option<Seen>>,
}

struct Seen {
    at: Instant,
    done: usize,
    what: String,
}

impl Throttle {
    pub(crate) fn new() -> Self {
        Throttle {
            gap: Duration::from_millis(50),
            last: Mutex::new(None),
        }
    }

    pub(crate) fn admit(&self, what: &str, done: usize, total: usize) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let pass = match &*last {
            None => true,
            // A new stage starts its count again.
            Some(seen) if seen.what != what => true,
            Some(seen) if done <= seen.done => false,
            Some(seen) => done >= total || now.duration_since(seen.at) >= self.gap,
        };
        if pass {
            *last = Some(Seen {
                at: now,
                done,
                what: what.to_string(),
            });
        }
        pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_passes_first_and_last_of_each_stage_and_drops_stale_counts() {
        let t = Throttle::new();
        assert!(t.admit("samples", 1, 100));
        assert!(!t.admit("samples", 1, 100));
        assert!(!t.admit("samples", 0, 100));
        // Many updates in a burst: far fewer pass than arrive, but the last one does.
        let passed = (2..100).filter(|&d| t.admit("samples", d, 100)).count();
        assert!(passed < 98);
        assert!(t.admit("samples", 100, 100));
        // The next stage counts from its own start.
        assert!(t.admit("evaluation", 1, 400));
        assert!(!t.admit("evaluation", 1, 400));
    }
}
