//! Where a dialog's jobs run: in this process, or as Slurm batch jobs with the workspace's
//! Slurm settings (`S` edits them). Offered when Slurm's client is installed here.

use super::state::App;
use super::update::Effect;
use qsteer::jobs::{Executor, JobKind, SlurmSettings};

/// The Slurm side of the app: whether it can submit, the cluster's partitions, the
/// workspace's settings, and the last choice made in a dialog (the next one starts there).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmSetup {
    pub available: bool,
    pub partitions: Vec<String>,
    pub settings: SlurmSettings,
    pub last_used: bool,
}

/// A dialog's "run on" field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOn {
    pub slurm: bool,
    pub available: bool,
    pub settings: SlurmSettings,
}

impl RunOn {
    pub fn from_app(app: &App) -> RunOn {
        RunOn {
            slurm: app.slurm.available && app.slurm.last_used,
            available: app.slurm.available,
            settings: app.slurm.settings.clone(),
        }
    }

    /// Local ↔ Slurm (stays local without a Slurm client).
    pub fn toggle(&mut self) {
        self.slurm = self.available && !self.slurm;
    }

    pub fn text(&self) -> String {
        match (self.slurm, self.available) {
            (true, _) => format!("Slurm: {}", settings_text(&self.settings)),
            (false, true) => "this machine (◂▸: Slurm)".into(),
            (false, false) => "this machine (no Slurm client here)".into(),
        }
    }

    /// For the dialog's Enter line: " on Slurm" when that is where the jobs go.
    pub fn suffix(&self) -> &'static str {
        if self.slurm {
            " on Slurm"
        } else {
            ""
        }
    }
}

/// The effects that queue `jobs` where `run_on` says; the next dialog starts on that choice.
/// The Slurm settings are the workspace's as they are now (`settings` is the dialog's copy
/// for display; a decision left open for later may predate an edit with `S`).
pub fn submit(app: &mut App, run_on: &RunOn, jobs: Vec<JobKind>) -> Vec<Effect> {
    app.slurm.last_used = run_on.slurm;
    jobs.into_iter()
        .map(|kind| match run_on.slurm {
            false => Effect::Submit(kind),
            true => Effect::SubmitOn(kind, Executor::Slurm(app.slurm.settings.clone())),
        })
        .collect()
}

/// `partition debug · 4 CPUs · 30 min · 8G · gpu:1`; the cluster's defaults where unset.
pub fn settings_text(s: &SlurmSettings) -> String {
    let mut parts = vec![format!(
        "partition {}",
        s.partition.as_deref().unwrap_or("default")
    )];
    if let Some(c) = s.cpus {
        parts.push(format!("{c} CPU{}", if c == 1 { "" } else { "s" }));
    }
    if let Some(t) = &s.time {
        parts.push(match t.parse::<u32>() {
            Ok(minutes) => format!("{minutes} min"),
            Err(_) => t.clone(),
        });
    }
    if let Some(m) = &s.mem {
        parts.push(m.clone());
    }
    if let Some(g) = &s.gres {
        parts.push(g.clone());
    }
    if let Some(n) = s.array_tasks.filter(|&n| n >= 2) {
        parts.push(format!("dictionary ×{n}"));
    }
    parts.join(" · ")
}
