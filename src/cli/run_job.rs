//! `qsteer run-job FILE.json`: one serialized job request (see [`JobRequest`]) run on its
//! workspace exactly as the job's own command runs it — the same journal and log entries,
//! the same variant, the same `--json` document (printed whether or not `--json` is given:
//! a request is a program's interface). This is what a Slurm node runs.

use super::{
    adaround, analyze, bias_correct, compress, fix_chain, fixes, lock, print_json, quantsim,
    run_job, with_model, Common, SharedWorkspace,
};
use clap::Args;
use qsteer::cancel::CancelToken;
use qsteer::experiment::Workspace;
use qsteer::jobs::{DetachedOutcome, HeadlessJob, JobId, JobKind, JobOutcome, JobRequest};
use qsteer::{Error, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Args)]
pub struct RunJobArgs {
    /// The request: {"version": 1, "workspace": DIR, "model": FILE (optional), "job": {"type":
    /// KIND, …settings as in logs/jobs.jsonl}}
    pub file: PathBuf,
    /// Print the job's own summary (what the submitting process records) instead of the
    /// command's document: what a Slurm node prints
    #[arg(long, hide = true)]
    pub summary: bool,
    /// Only fill share I of N of a greedy compress job's dictionary (a Slurm array task)
    #[arg(long, hide = true, value_name = "I/N")]
    pub shard: Option<String>,
    /// Run under this job id (a detached job runs under its starter's)
    #[arg(long, hide = true, value_name = "ID")]
    pub job_id: Option<u64>,
    /// Write how the job ended (finished with its summary, failed, cancelled) to FILE
    /// instead of printing a document, and let SIGTERM cancel the job: what a detached job
    /// runs with
    #[arg(long, hide = true, value_name = "FILE")]
    pub outcome: Option<PathBuf>,
}

pub fn run(args: RunJobArgs, common: &Common) -> Result<()> {
    let Some(outcome_file) = args.outcome.clone() else {
        return run_request(args, common, CancelToken::new());
    };
    let cancel = CancelToken::new();
    cancel_on_sigterm(&cancel);
    let mut summary = None;
    let result = run_request_for(args, common, cancel, &mut summary);
    let outcome = DetachedOutcome::of(&result.map(|()| summary.unwrap_or_default()));
    if let Err(e) = outcome.save(&outcome_file) {
        eprintln!("qsteer: error: the job's outcome was not written: {e}");
    }
    match outcome {
        DetachedOutcome::Finished { .. } => Ok(()),
        other => other.into_error(),
    }
}

/// SIGTERM (a cancel from whoever follows the detached job) cancels the job, which then
/// ends at its next checkpoint as a cancelled job: its checkpoints kept, its outcome written.
fn cancel_on_sigterm(cancel: &CancelToken) {
    static TERMINATED: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_sigterm(_: libc::c_int) {
        TERMINATED.store(true, Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t);
    }
    let cancel = cancel.clone();
    std::thread::spawn(move || loop {
        if TERMINATED.load(Ordering::SeqCst) {
            cancel.cancel();
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    });
}

fn run_request(args: RunJobArgs, common: &Common, cancel: CancelToken) -> Result<()> {
    run_request_for(args, common, cancel, &mut None)
}

/// Run the request; with an outcome file the summary is kept in `summary` rather than
/// printed.
fn run_request_for(
    args: RunJobArgs,
    common: &Common,
    cancel: CancelToken,
    summary_out: &mut Option<Value>,
) -> Result<()> {
    let request = JobRequest::load(&args.file)?;
    let ws = open(&args.file, &request.workspace)?;
    if let Some(shard) = &args.shard {
        if !matches!(
            request.job,
            JobKind::Compress {
                target: Some(_),
                ..
            }
        ) {
            return Err(Error::input(format!(
                "{}: --shard fills a greedy compress job's dictionary; this job is '{}'",
                args.file.display(),
                request.job.label()
            )));
        }
        let shard = qsteer::compress::greedy::dictionary::Shard::parse(shard)?;
        return compress::fill_share(&ws, &request.job, shard, common);
    }
    let model = match (&request.model, request.job.variant()) {
        (Some(m), _) => m.clone(),
        (None, Some(id)) => {
            let ws = lock(&ws);
            match ws.variant(id) {
                Some(v) => ws.model_path(v),
                None => {
                    return Err(Error::input(format!(
                        "{}: field 'job.variant': the workspace {} has no variant {id}",
                        args.file.display(),
                        ws.dir().display()
                    )))
                }
            }
        }
        (None, None) => PathBuf::new(),
    };
    let job = HeadlessJob {
        id: args.job_id.map(JobId),
        cancel,
        ..request.job.clone().into()
    };
    let outcome = run_job(ws.clone(), job, common)?;
    if args.outcome.is_some() {
        *summary_out = Some(outcome.to_json());
        return Ok(());
    }
    if args.summary {
        return print_json(&outcome.to_json());
    }
    print_json(&document(&request.job, outcome, &model, &ws)?)
}

/// The request's workspace; one that is not there is the file's fault.
fn open(file: &Path, dir: &Path) -> Result<SharedWorkspace> {
    if !dir.join("workspace.json").is_file() {
        return Err(Error::input(format!(
            "{}: field 'workspace': {} is not a qsteer workspace (no workspace.json)",
            file.display(),
            dir.display()
        )));
    }
    Ok(Arc::new(Mutex::new(Workspace::open(dir)?)))
}

/// The `--json` document the job's own command prints for `summary`, started from `model`,
/// without the command-only copies (`--out`, `--export`).
fn document(
    kind: &JobKind,
    outcome: JobOutcome,
    model: &Path,
    ws: &SharedWorkspace,
) -> Result<Value> {
    let summary = outcome.to_json();
    Ok(match kind {
        JobKind::Evaluate { .. }
        | JobKind::Compress { .. }
        | JobKind::Sweep { .. }
        | JobKind::FineTune { .. }
        | JobKind::Qat { .. } => with_model(summary, model),
        JobKind::ExternalFineTune { .. } => {
            let mut doc = with_model(summary, model);
            doc["trainer_saved"] = json!(false);
            doc
        }
        JobKind::Quantsim { .. } => quantsim::document(&outcome.try_into()?, model, ws)?,
        JobKind::Analyze { variant, data, .. } => analyze::document(ws, *variant, model, data)?,
        JobKind::BiasCorrect { .. } => bias_correct::document(&outcome.try_into()?, model, ws)?,
        JobKind::AdaRound { .. } => adaround::document(&outcome.try_into()?, model, ws)?,
        JobKind::FoldBn { .. } | JobKind::Cle { .. } => fixes::document(&outcome, model)?,
        JobKind::FixChain { .. } => {
            let dir = lock(ws).dir().to_path_buf();
            fix_chain::document(&outcome.try_into()?, model, &dir)
        }
        // No command of their own runs these jobs: the summary is the document.
        JobKind::Export { .. } | JobKind::SlurmFollow { .. } => summary,
    })
}
