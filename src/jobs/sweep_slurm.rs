//! A sweep's candidates through Slurm: every compress job of a step is submitted at once,
//! each followed in its own thread by the Slurm executor, so the cluster runs them side by
//! side while the sweep itself (scoring, decisions, report) stays in the submitting process.
//! A candidate an earlier run sent and did not see end is taken over, not sent again.

use super::exec::JobCtx;
use super::kind::JobKind;
use super::{slurm, SlurmSettings};
use crate::experiment::Workspace;
use crate::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The variant each job made, in the order of `jobs` (`(index, job, label)`).
pub(crate) fn make_all(
    ctx: &JobCtx,
    workspace: &Mutex<Workspace>,
    settings: &SlurmSettings,
    jobs: &[(usize, JobKind, String)],
) -> Vec<Result<u32>> {
    if jobs.is_empty() {
        return vec![];
    }
    let finished = AtomicUsize::new(0);
    ctx.progress(0, jobs.len(), "candidates submitted to Slurm");
    std::thread::scope(|scope| {
        let threads: Vec<_> = (jobs.iter())
            .map(|(_, kind, label)| {
                let finished = &finished;
                scope.spawn(move || {
                    let step = ctx.step(kind, label);
                    // A job an earlier run of this sweep sent (and stopped before it
                    // ended) is taken over rather than sent again.
                    let made = slurm::adopt(&step, workspace, kind).unwrap_or_else(|| {
                        slurm::run(&step, workspace, settings).and_then(|summary| {
                            super::summary_variant(&summary, "variant").ok_or_else(|| {
                                Error::runtime(format!("{label}: the node job reported no variant"))
                            })
                        })
                    });
                    let n = finished.fetch_add(1, Ordering::Relaxed) + 1;
                    ctx.progress(n, jobs.len(), "candidates finished on Slurm");
                    made
                })
            })
            .collect();
        (threads.into_iter())
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(Error::runtime("a Slurm candidate's thread panicked")))
            })
            .collect()
    })
}
