//! The job runner every front end uses (DESIGN.md §2 "Job"). A front end submits a
//! [`JobKind`] and renders the [`JobEvent`]s; the app through [`JobRunner`] on tokio, the
//! CLI and `qsteer run-job` through [`run_job_blocking`] — the same code, the same records. Every state change
//! is journalled in `logs/jobs.jsonl`, each job's log in `logs/job-<id>.log`, so a
//! restart shows what finished and which job was interrupted.

mod adaround;
mod analyze;
mod bias_correct;
mod chain;
mod child;
mod compress;
mod detached;
mod evaluate;
mod event;
mod exec;
mod executor;
mod export;
mod external_finetune;
mod finetune;
mod fixes;
mod history;
mod journal;
mod kind;
mod latency;
mod outcome;
mod qat;
mod quantsim;
mod request;
mod runner;
mod slurm;
mod sweep;
mod sweep_rows;
mod sweep_slurm;

pub use chain::{check_chain, ChainStep, StepInputs};
pub use compress::fill_greedy_share;
pub use detached::{
    cancel as cancel_detached, current_state as detached_state, liveness as detached_liveness,
    DetachedOutcome, DetachedStart, Liveness,
};
pub use event::{DictionaryPlan, JobEvent, Partial, SlurmState, TrainEpoch, TrainStep};
pub use exec::{follow_detached, run_job_blocking, start_detached, HeadlessJob};
pub use executor::{Executor, SlurmSettings};
pub use history::{job_history, load_history, read_job_log, JobHistory, JobRecord, JobState};
pub use journal::{job_log_path, jobs_journal_path};
pub use kind::{JobId, JobKind, SweepStage};
pub use outcome::{
    AdaroundOutcome, AnalyzeOutcome, BiasCorrectOutcome, ChainScore, ChainStepOutcome, CleOutcome,
    CompressedLayer, CompressionOutcome, EvaluateOutcome, ExternalEpoch, ExternalFineTuneOutcome,
    FineTuneOutcome, FixChainOutcome, FoldBnOutcome, JobOutcome, QatOutcome, QuantsimOutcome,
    RoundedOutcome, ScoreFields, SlurmRun, SweepOutcome, TrainedFields,
};
pub use request::{JobRequest, REQUEST_VERSION};
pub use runner::{JobRunner, LocalJobs};
pub use slurm::{
    client_installed as slurm_client_installed, partitions as slurm_partitions,
    unfinished as unfinished_slurm_jobs,
};

use std::sync::{Mutex, MutexGuard};

/// The variant id a job's summary names under `key` (`variant`, `rounded_variant`, …).
pub fn summary_variant(summary: &serde_json::Value, key: &str) -> Option<u32> {
    summary[key].as_u64().and_then(|v| u32::try_from(v).ok())
}

/// The metric `kind` scores with: its own, else the workspace's saved one, else `auto`.
fn job_metric(
    workspace: &Mutex<crate::experiment::Workspace>,
    kind: &JobKind,
) -> crate::Result<crate::metrics::MetricSpec> {
    let metric = lock(workspace).metric_for(kind.metric());
    metric.validate()?;
    Ok(metric)
}

/// A panicked job must not wedge the workspace or the queue: take the lock anyway.
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Load the variant model file at `path`, named as the workspace says (the base variant's
/// copy by the user's file); the lock is held only to read that name.
fn load_model(
    workspace: &Mutex<crate::experiment::Workspace>,
    path: &std::path::Path,
) -> crate::Result<crate::model::Model> {
    let label = lock(workspace).model_label(path);
    crate::experiment::load_model_as(path, &label)
}

/// The tests' shorthand for a local, journalled run that `cancel` stops.
#[cfg(test)]
fn run_job_blocking_with(
    workspace: std::sync::Arc<Mutex<crate::experiment::Workspace>>,
    kind: JobKind,
    cancel: &crate::cancel::CancelToken,
    on_event: impl FnMut(JobEvent) + Send,
) -> crate::Result<JobOutcome> {
    let job = HeadlessJob {
        cancel: cancel.clone(),
        ..kind.into()
    };
    run_job_blocking(workspace, job, on_event)
}

#[cfg(test)]
pub(crate) mod compress_tests;
#[cfg(test)]
mod external_finetune_tests;
#[cfg(test)]
mod metric_tests;
#[cfg(test)]
mod outcome_tests;
#[cfg(test)]
mod sweep_tests;
#[cfg(test)]
mod tests;
