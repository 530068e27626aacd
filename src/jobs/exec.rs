//! Running one job: the same code on the runner's worker threads and in the CLI, so both
//! write the same journal lines, log files and results.

use super::event::{JobEvent, Throttle};
use super::executor::Executor;
use super::history::load_history;
use super::journal::{journal_line, Journal, Logged};
use super::kind::{JobId, JobKind};
use super::outcome::JobOutcome;
use super::{
    adaround, analyze, bias_correct, chain, compress, detached, evaluate, export,
    external_finetune, finetune, fixes, lock, qat, quantsim, slurm, sweep,
};
use crate::cancel::CancelToken;
use crate::experiment::Workspace;
use crate::{Error, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

/// Where a job's events go; called from worker threads.
pub(crate) type Sink<'a> = &'a (dyn Fn(JobEvent) + Sync);

/// What a job body reports through. Log lines and state changes go to the files and to
/// the event sink at the same point, so the live view and a reopened workspace agree.
pub(crate) struct JobCtx<'a> {
    pub id: JobId,
    pub kind: &'a JobKind,
    pub cancel: &'a CancelToken,
    journal: &'a Journal,
    sink: Sink<'a>,
    throttle: Throttle,
    /// Put before every progress label: a fix chain's "step 2/4: CLE".
    step: Option<&'a str>,
}

impl<'a> JobCtx<'a> {
    pub(crate) fn new(
        id: JobId,
        kind: &'a JobKind,
        cancel: &'a CancelToken,
        journal: &'a Journal,
        sink: Sink<'a>,
    ) -> Self {
        JobCtx {
            id,
            kind,
            cancel,
            journal,
            sink,
            throttle: Throttle::new(),
            step: None,
        }
    }

    /// The same job running one step of a chain: `kind` is the step's job kind, whose
    /// body then runs unchanged; its progress is labelled `step` first.
    pub(crate) fn step<'b>(&'b self, kind: &'b JobKind, step: &'b str) -> JobCtx<'b> {
        JobCtx {
            id: self.id,
            kind,
            cancel: self.cancel,
            journal: self.journal,
            sink: self.sink,
            throttle: Throttle::new(),
            step: Some(step),
        }
    }

    /// A line for `logs/job-<id>.log` and a `Log` event.
    pub(crate) fn log(&self, line: impl Into<String>) {
        let line = line.into();
        if let Err(e) = self.journal.log(self.id, &line) {
            self.warn(e);
        }
        (self.sink)(JobEvent::Log { id: self.id, line });
    }

    /// A piece of the result for the live view (not journalled: the finished summary is).
    pub(crate) fn partial(&self, result: super::event::Partial) {
        (self.sink)(JobEvent::Partial {
            id: self.id,
            result,
        });
    }

    /// Throttled progress; called from worker threads.
    pub(crate) fn progress(&self, done: usize, total: usize, what: &str) {
        if self.throttle.admit(what, done, total) {
            let what = match self.step {
                Some(step) => format!("{step} · {what}"),
                None => what.to_string(),
            };
            (self.sink)(JobEvent::Progress {
                id: self.id,
                done,
                total,
                what,
            });
        }
    }

    /// A journal failure does not fail the job (its result is in the workspace); the
    /// front end is told why the history will be incomplete.
    fn warn(&self, e: Error) {
        (self.sink)(JobEvent::Log {
            id: self.id,
            line: format!("warning: the job journal could not be written: {e}"),
        });
    }

    /// Journal a state change, add a line for it to the job's log file, and send its
    /// event. The line is not sent as a `Log` event: the event itself says it.
    pub(crate) fn transition(
        &self,
        state: Logged,
        summary: Option<serde_json::Value>,
        error: Option<String>,
    ) {
        let id = self.id;
        let text = match (state, &error, &summary) {
            (Logged::Queued, _, _) => format!("queued: {}", self.kind.label()),
            (Logged::Finished, _, Some(s)) => format!("finished: {s}"),
            (Logged::Failed, Some(e), _) => format!("failed: {e}"),
            (Logged::Interrupted, _, _) => {
                "interrupted: qsteer stopped before this job ended".into()
            }
            (s, _, _) => s.name().to_string(),
        };
        // The end of a job that did work must survive a crash; the others are cheap to lose.
        let durable = matches!(state, Logged::Finished | Logged::Failed);
        let entry = journal_line(id, self.kind, state, summary.clone(), error.clone());
        if let Err(e) = self.journal.state(&entry, durable) {
            self.warn(e);
        }
        if let Err(e) = self.journal.log(id, &text) {
            self.warn(e);
        }
        let event = match state {
            Logged::Queued => JobEvent::Queued {
                id,
                kind: self.kind.clone(),
            },
            Logged::Started => JobEvent::Started { id },
            Logged::Finished => JobEvent::Finished {
                id,
                summary: summary.unwrap_or_default(),
            },
            Logged::Failed => JobEvent::Failed {
                id,
                error: error.unwrap_or_default(),
            },
            Logged::Cancelled => JobEvent::Cancelled { id },
            // Found at startup; the front end asks for these, no event.
            Logged::Interrupted => return,
        };
        (self.sink)(event);
    }
}

/// Run a queued job to its end on `executor`: Started, the job body (here, or a Slurm
/// job that runs it), then Finished, Failed or Cancelled. A panic in the body is a failed
/// job, not a dead runner.
pub(crate) fn execute(
    workspace: &Mutex<Workspace>,
    ctx: &JobCtx,
    executor: &Executor,
) -> Result<JobOutcome> {
    if ctx.cancel.is_cancelled() {
        ctx.transition(Logged::Cancelled, None, None);
        return Err(Error::Cancelled);
    }
    // A detached job says it started once its process is recorded.
    if *executor != Executor::Detached {
        ctx.transition(Logged::Started, None, None);
    }
    // Another process's summary is read by the job's kind.
    let read = |summary: Result<serde_json::Value>| {
        summary.and_then(|s| JobOutcome::from_summary(ctx.kind, s))
    };
    let result = catch_unwind(AssertUnwindSafe(|| match executor {
        Executor::Local => run_body(workspace, ctx),
        Executor::Detached => read(detached::run(ctx, workspace)),
        // A sweep stays here and sends its candidates to Slurm.
        Executor::Slurm(settings) if matches!(ctx.kind, JobKind::Sweep { .. }) => {
            sweep::run_on_slurm(ctx, workspace, settings).map(JobOutcome::Sweep)
        }
        Executor::Slurm(settings) => read(slurm::run(ctx, workspace, settings)),
    }))
    .unwrap_or_else(|panic| {
        Err(Error::runtime(format!(
            "the job panicked: {}",
            panic_text(&panic)
        )))
    });
    conclude(ctx, result)
}

/// Follow a detached job an earlier process started (journalled as `ctx.id`, started and
/// not ended) to its end, and journal that end as [`execute`] would have.
pub(crate) fn reattach(
    workspace: &Mutex<Workspace>,
    ctx: &JobCtx,
    entry: crate::experiment::DetachedJobEntry,
) -> Result<JobOutcome> {
    // The journal says it started already; the front end hears it again.
    (ctx.sink)(JobEvent::Started { id: ctx.id });
    let result = catch_unwind(AssertUnwindSafe(|| {
        detached::follow(ctx, workspace, entry).and_then(|s| JobOutcome::from_summary(ctx.kind, s))
    }))
    .unwrap_or_else(|panic| {
        Err(Error::runtime(format!(
            "following the job panicked: {}",
            panic_text(&panic)
        )))
    });
    conclude(ctx, result)
}

/// Journal and announce how the job ended.
fn conclude(ctx: &JobCtx, result: Result<JobOutcome>) -> Result<JobOutcome> {
    match &result {
        Ok(outcome) => ctx.transition(Logged::Finished, Some(outcome.to_json()), None),
        Err(Error::Cancelled) => ctx.transition(Logged::Cancelled, None, None),
        Err(e) => ctx.transition(Logged::Failed, None, Some(e.to_string())),
    }
    result
}

/// The job's own work, in this process.
fn run_body(workspace: &Mutex<Workspace>, ctx: &JobCtx) -> Result<JobOutcome> {
    use JobOutcome::Untyped;
    Ok(match ctx.kind {
        JobKind::Evaluate { .. } => JobOutcome::Evaluate(evaluate::run(ctx, workspace)?),
        JobKind::Quantsim { .. } => JobOutcome::Quantsim(quantsim::run(ctx, workspace)?),
        JobKind::FoldBn { .. } => JobOutcome::FoldBn(fixes::run_fold_bn(ctx, workspace)?),
        JobKind::Cle { .. } => JobOutcome::Cle(fixes::run_cle(ctx, workspace)?),
        JobKind::Analyze { .. } => JobOutcome::Analyze(analyze::run(ctx, workspace)?),
        JobKind::Export { .. } => Untyped(export::run(ctx, workspace)?),
        JobKind::BiasCorrect { .. } => JobOutcome::BiasCorrect(bias_correct::run(ctx, workspace)?),
        JobKind::AdaRound { .. } => JobOutcome::AdaRound(adaround::run(ctx, workspace)?),
        JobKind::Compress { .. } => JobOutcome::Compress(compress::run(ctx, workspace)?),
        JobKind::FineTune { .. } => JobOutcome::FineTune(finetune::run(ctx, workspace)?),
        JobKind::ExternalFineTune { .. } => {
            JobOutcome::ExternalFineTune(external_finetune::run(ctx, workspace)?)
        }
        JobKind::Qat { .. } => JobOutcome::Qat(qat::run(ctx, workspace)?),
        JobKind::FixChain { .. } => JobOutcome::FixChain(chain::run(ctx, workspace)?),
        JobKind::Sweep { .. } => JobOutcome::Sweep(sweep::run(ctx, workspace)?),
        JobKind::SlurmFollow { .. } => Untyped(slurm::follow(ctx, workspace)?),
    })
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// How a headless run goes: the job, on which executor, whether it journals the job (a
/// Slurm node's run does not: the process that submitted it does), and the token that
/// cancels it (e.g. set from a Ctrl-C handler). A plain [`JobKind`] is a local, journalled
/// run nothing cancels.
#[derive(Debug, Clone)]
pub struct HeadlessJob {
    pub kind: JobKind,
    /// The journal id to run under; default: the next free one. A detached job's process
    /// runs under its starter's id (its trainer directory, its log lines).
    pub id: Option<JobId>,
    pub executor: Executor,
    pub journal: bool,
    pub cancel: CancelToken,
}

impl HeadlessJob {
    pub fn on(kind: JobKind, executor: Executor) -> HeadlessJob {
        HeadlessJob {
            executor,
            ..kind.into()
        }
    }
}

impl From<JobKind> for HeadlessJob {
    fn from(kind: JobKind) -> HeadlessJob {
        HeadlessJob {
            kind,
            id: None,
            executor: Executor::Local,
            journal: true,
            cancel: CancelToken::new(),
        }
    }
}

/// Run one job on the current thread, headless: the same journal, logs and results as a
/// job run by [`super::JobRunner`] — the one way every headless front end (the CLI's
/// commands, `qsteer run-job`) runs a job. Returns the job's outcome; a failed job is its
/// error (so the CLI can pick the exit code), a cancelled one `Error::Cancelled`.
pub fn run_job_blocking(
    workspace: Arc<Mutex<Workspace>>,
    job: impl Into<HeadlessJob>,
    on_event: impl FnMut(JobEvent) + Send,
) -> Result<JobOutcome> {
    let job = job.into();
    let dir = lock(&workspace).dir().to_path_buf();
    let id = match job.id {
        Some(id) => id,
        None => load_history(&dir)?.next_id,
    };
    let journal = if job.journal {
        Journal::new(&dir)
    } else {
        Journal::disabled(&dir)
    };
    // Progress comes from worker threads; the caller's callback sees one event at a time.
    let on_event = Mutex::new(on_event);
    let sink = |ev: JobEvent| (lock(&on_event))(ev);
    let ctx = JobCtx::new(id, &job.kind, &job.cancel, &journal, &sink);
    ctx.transition(Logged::Queued, None, None);
    execute(&workspace, &ctx, &job.executor)
}

/// Start a job as a detached process and return once it is recorded and journalled as
/// started, without following it (`--detach`): a restarted app or `qsteer jobs --follow`
/// follows it and records its end.
pub fn start_detached(
    workspace: Arc<Mutex<Workspace>>,
    kind: JobKind,
    on_event: impl FnMut(JobEvent) + Send,
) -> Result<detached::DetachedStart> {
    let dir = lock(&workspace).dir().to_path_buf();
    let id = load_history(&dir)?.next_id;
    let journal = Journal::new(&dir);
    let on_event = Mutex::new(on_event);
    let sink = |ev: JobEvent| (lock(&on_event))(ev);
    let cancel = CancelToken::new();
    let ctx = JobCtx::new(id, &kind, &cancel, &journal, &sink);
    ctx.transition(Logged::Queued, None, None);
    match detached::start(&ctx, &workspace) {
        // Not waited for: it is nobody's child once this process exits.
        Ok((started, _child)) => Ok(started),
        Err(e) => {
            ctx.transition(Logged::Failed, None, Some(e.to_string()));
            Err(e)
        }
    }
}

/// Follow a detached job of the workspace that an earlier process started (journalled as
/// `id`, not seen to end) to its end, journalling the end as its starter would have: what
/// `qsteer jobs --follow` does for each one. An error if the job is not such a job.
pub fn follow_detached(
    workspace: Arc<Mutex<Workspace>>,
    id: JobId,
    on_event: impl FnMut(JobEvent) + Send,
) -> Result<JobOutcome> {
    let dir = lock(&workspace).dir().to_path_buf();
    let history = load_history(&dir)?;
    let record = (history.interrupted())
        .find(|r| r.id == id)
        .ok_or_else(|| Error::input(format!("job {id}: not a job that has not ended")))?
        .clone();
    let entry = (lock(&workspace).file().detached_jobs.iter())
        .rev()
        .find(|e| e.job == id.0)
        .cloned()
        .ok_or_else(|| Error::input(format!("job {id}: not a detached job")))?;
    let journal = Journal::new(&dir);
    let on_event = Mutex::new(on_event);
    let sink = |ev: JobEvent| (lock(&on_event))(ev);
    let cancel = CancelToken::new();
    let ctx = JobCtx::new(id, &record.kind, &cancel, &journal, &sink);
    reattach(&workspace, &ctx, entry)
}
