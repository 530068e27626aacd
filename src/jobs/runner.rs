//! The job queue on tokio. Jobs run (or are followed) on blocking threads so the UI task
//! never waits on one; heavy jobs (those that use every core) run at most `heavy_limit` at a
//! time, in submission order. Local jobs run in this process or, with
//! [`LocalJobs::Detached`] (the app's choice), as detached processes that outlive it.

use super::exec::{execute, reattach, JobCtx};
use super::executor::Executor;
use super::history::{load_history, JobRecord, JobState};
use super::journal::{Journal, Logged};
use super::kind::{JobId, JobKind};
use super::{lock, JobEvent};
use crate::cancel::CancelToken;
use crate::experiment::{DetachedJobEntry, Workspace};
use crate::Result;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedSender;

/// Runs jobs for one workspace and reports them as [`JobEvent`]s. Cheap to clone; all
/// clones drive the same queue.
#[derive(Clone)]
pub struct JobRunner {
    inner: Arc<Inner>,
}

struct Inner {
    workspace: Arc<Mutex<Workspace>>,
    journal: Journal,
    events: UnboundedSender<JobEvent>,
    handle: Handle,
    state: Mutex<State>,
    interrupted: Vec<JobRecord>,
    /// Detached jobs an earlier process started that still run (or ended unrecorded),
    /// until [`JobRunner::reattach_detached`] follows them.
    detached_left: Mutex<Vec<(JobRecord, DetachedJobEntry)>>,
}

/// Where this runner runs a job queued for the local machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalJobs {
    /// On a worker thread of this process: the job ends with the process. The default,
    /// for tests and library use.
    #[default]
    InProcess,
    /// As a detached `qsteer run-job` process of this binary (the app's choice): the job
    /// outlives this process, which only follows it.
    Detached,
}

#[derive(Clone)]
struct Entry {
    id: JobId,
    kind: JobKind,
    executor: Executor,
    cancel: CancelToken,
    /// A detached job an earlier process started, followed rather than run.
    follow: Option<DetachedJobEntry>,
}

struct State {
    next_id: u64,
    heavy_limit: usize,
    local_jobs: LocalJobs,
    queue: VecDeque<Entry>,
    running: Vec<Entry>,
}

impl Entry {
    /// Heavy here: a job that uses this machine's cores (in this process or detached).
    fn is_heavy(&self) -> bool {
        self.kind.is_heavy() && !matches!(self.executor, Executor::Slurm(_))
    }
}

impl Inner {
    fn send(&self, event: JobEvent) {
        // A front end that went away does not stop the jobs.
        let _ = self.events.send(event);
    }
}

impl JobRunner {
    /// A runner for the workspace that runs at most `heavy_limit` heavy jobs at once (1 on
    /// small machines; 0 counts as 1). Reads the job journal: ids continue after the
    /// highest one seen, and jobs left queued or started by a process that stopped are
    /// marked interrupted (see [`JobRunner::interrupted`]).
    pub fn new(
        handle: Handle,
        workspace: Arc<Mutex<Workspace>>,
        heavy_limit: usize,
        events: UnboundedSender<JobEvent>,
    ) -> Result<JobRunner> {
        let dir = lock(&workspace).dir().to_path_buf();
        let history = load_history(&dir)?;
        let journal = Journal::new(&dir);
        let mut interrupted = Vec::new();
        // A detached job outlives its starter: one whose process still runs (or that
        // wrote its outcome) is followed again, not interrupted.
        let (follow, gone) = super::detached::to_reattach(&lock(&workspace), &history.unended);
        for mut entry in gone {
            entry.state = "interrupted".into();
            // The record only says what the journal says too; a failure loses nothing.
            let _ = lock(&workspace).record_detached_job(entry);
        }
        let followed = |id: JobId| follow.iter().any(|e| e.job == id.0);
        let detached_left = (history.jobs.iter())
            .filter_map(|r| {
                let e = follow.iter().find(|e| e.job == r.id.0)?;
                Some((r.clone(), e.clone()))
            })
            .collect();
        for rec in history
            .jobs
            .iter()
            .filter(|r| history.unended.contains(&r.id) && !followed(r.id))
        {
            let cancel = CancelToken::new();
            // No events: the front end asks `interrupted()` once it is up.
            JobCtx::new(rec.id, &rec.kind, &cancel, &journal, &|_| {}).transition(
                Logged::Interrupted,
                None,
                None,
            );
            interrupted.push(rec.clone());
        }
        Ok(JobRunner {
            inner: Arc::new(Inner {
                workspace,
                journal,
                events,
                handle,
                state: Mutex::new(State {
                    next_id: history.next_id.0,
                    heavy_limit: heavy_limit.max(1),
                    local_jobs: LocalJobs::default(),
                    queue: VecDeque::new(),
                    running: Vec::new(),
                }),
                interrupted,
                detached_left: Mutex::new(detached_left),
            }),
        })
    }

    /// How many heavy jobs may run at once (at least 1). Raising it starts waiting jobs.
    pub fn set_heavy_limit(&self, n: usize) {
        lock(&self.inner.state).heavy_limit = n.max(1);
        pump(&self.inner);
    }

    pub fn heavy_limit(&self) -> usize {
        lock(&self.inner.state).heavy_limit
    }

    /// Where jobs queued for this machine run from now on (see [`LocalJobs`]).
    pub fn set_local_jobs(&self, local: LocalJobs) {
        lock(&self.inner.state).local_jobs = local;
    }

    /// Follow again the detached jobs an earlier process started that still run (or ended
    /// while nobody followed them), under their own ids: each is `Started` again and ends
    /// as its process ended. Returns them; a second call finds none.
    pub fn reattach_detached(&self) -> Vec<JobRecord> {
        let left = std::mem::take(&mut *lock(&self.inner.detached_left));
        for (rec, entry) in &left {
            let entry = Entry {
                id: rec.id,
                kind: rec.kind.clone(),
                executor: Executor::Detached,
                cancel: CancelToken::new(),
                follow: Some(entry.clone()),
            };
            // Already running: it takes a slot at once, whatever the limit.
            lock(&self.inner.state).running.push(entry.clone());
            spawn_worker(&self.inner, entry);
        }
        left.into_iter().map(|(rec, _)| rec).collect()
    }

    /// Jobs asked to stop that have not ended yet.
    pub fn cancelling(&self) -> usize {
        let st = lock(&self.inner.state);
        st.running
            .iter()
            .filter(|e| e.cancel.is_cancelled())
            .count()
    }

    /// Queue a job; it starts as soon as a slot is free. Does not wait for the job.
    pub fn submit(&self, kind: JobKind) -> JobId {
        self.submit_on(kind, Executor::Local)
    }

    /// Queue a job to run on `executor`. A Slurm job uses no local cores, so it starts at
    /// once; Slurm queues it.
    pub fn submit_on(&self, kind: JobKind, executor: Executor) -> JobId {
        let (id, local_jobs) = {
            let mut st = lock(&self.inner.state);
            st.next_id += 1;
            (JobId(st.next_id - 1), st.local_jobs)
        };
        // A Slurm job's follower is this process's own work, whatever the setting.
        let detach = local_jobs == LocalJobs::Detached
            && executor == Executor::Local
            && !matches!(kind, JobKind::SlurmFollow { .. });
        let entry = Entry {
            id,
            kind,
            executor: if detach { Executor::Detached } else { executor },
            cancel: CancelToken::new(),
            follow: None,
        };
        // Announce before the job is visible to `pump`, so `Queued` precedes `Started`.
        self.ctx(&entry, &|ev| self.inner.send(ev))
            .transition(Logged::Queued, None, None);
        lock(&self.inner.state).queue.push_back(entry);
        pump(&self.inner);
        id
    }

    /// Cancel a job: a queued one is dropped at once (`Cancelled`), a running one stops
    /// at its next batch boundary and records nothing. False if the id is not live.
    pub fn cancel(&self, id: JobId) -> bool {
        let mut st = lock(&self.inner.state);
        if let Some(pos) = st.queue.iter().position(|e| e.id == id) {
            let entry = st.queue.remove(pos);
            drop(st);
            if let Some(entry) = entry {
                self.ctx(&entry, &|ev| self.inner.send(ev)).transition(
                    Logged::Cancelled,
                    None,
                    None,
                );
            }
            return true;
        }
        match st.running.iter().find(|e| e.id == id) {
            Some(e) => {
                e.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Cancel every queued and running job (e.g. before quitting).
    pub fn cancel_all(&self) {
        let ids: Vec<JobId> = {
            let st = lock(&self.inner.state);
            st.queue.iter().chain(&st.running).map(|e| e.id).collect()
        };
        for id in ids {
            self.cancel(id);
        }
    }

    /// Jobs holding a slot now (started, or about to start), oldest first.
    pub fn running(&self) -> Vec<(JobId, JobKind)> {
        let st = lock(&self.inner.state);
        st.running.iter().map(|e| (e.id, e.kind.clone())).collect()
    }

    /// Jobs waiting for a slot, in the order they will start.
    pub fn queued(&self) -> Vec<(JobId, JobKind)> {
        let st = lock(&self.inner.state);
        st.queue.iter().map(|e| (e.id, e.kind.clone())).collect()
    }

    pub fn is_idle(&self) -> bool {
        let st = lock(&self.inner.state);
        st.queue.is_empty() && st.running.is_empty()
    }

    /// Jobs this runner found unended when it opened the workspace: what the app reports
    /// as interrupted by the last shutdown.
    pub fn interrupted(&self) -> &[JobRecord] {
        &self.inner.interrupted
    }

    /// The journal's history with this runner's live jobs shown as queued or running
    /// (the journal alone cannot tell a live job from an interrupted one).
    pub fn history(&self) -> Result<Vec<JobRecord>> {
        let mut jobs = load_history(self.inner.journal.workspace_dir())?.jobs;
        let st = lock(&self.inner.state);
        for rec in &mut jobs {
            if st.queue.iter().any(|e| e.id == rec.id) {
                rec.state = JobState::Queued;
            } else if st.running.iter().any(|e| e.id == rec.id) {
                rec.state = JobState::Running;
            }
        }
        Ok(jobs)
    }

    pub fn workspace(&self) -> &Arc<Mutex<Workspace>> {
        &self.inner.workspace
    }

    fn ctx<'a>(&'a self, e: &'a Entry, sink: super::exec::Sink<'a>) -> JobCtx<'a> {
        JobCtx::new(e.id, &e.kind, &e.cancel, &self.inner.journal, sink)
    }
}

/// Start every queued job that has a slot: light jobs at once, heavy ones while fewer
/// than the limit run. Called after each submit, each finish and a limit change.
fn pump(inner: &Arc<Inner>) {
    let mut st = lock(&inner.state);
    loop {
        let heavy = st.running.iter().filter(|e| e.is_heavy()).count();
        let limit = st.heavy_limit;
        let Some(pos) = st.queue.iter().position(|e| !e.is_heavy() || heavy < limit) else {
            break;
        };
        let Some(entry) = st.queue.remove(pos) else {
            break;
        };
        st.running.push(entry.clone());
        spawn_worker(inner, entry);
    }
}

/// Run (or follow) one job that holds a slot on a blocking thread.
fn spawn_worker(inner: &Arc<Inner>, entry: Entry) {
    let worker = inner.clone();
    inner.handle.spawn_blocking(move || {
        let id = entry.id;
        // The slot is freed as the terminal event goes out, under the state lock: a
        // front end that hears `Finished` no longer sees the job running, and the
        // next job's `Started` cannot overtake it.
        let sink = |ev: JobEvent| {
            if ev.is_terminal() {
                let mut st = lock(&worker.state);
                st.running.retain(|e| e.id != id);
                worker.send(ev);
            } else {
                worker.send(ev);
            }
        };
        let ctx = JobCtx::new(id, &entry.kind, &entry.cancel, &worker.journal, &sink);
        // The outcome has been journalled and sent as an event.
        let _ = match &entry.follow {
            Some(detached) => reattach(&worker.workspace, &ctx, detached.clone()),
            None => execute(&worker.workspace, &ctx, &entry.executor),
        };
        lock(&worker.state).running.retain(|e| e.id != id);
        pump(&worker);
    });
}
