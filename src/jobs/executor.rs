//! Where a job runs: in this process (`local`, the default), as a detached process of its
//! own on this machine that outlives its starter (`detached`), or as a Slurm batch job that
//! runs qsteer's own headless command for it on a node (`slurm`, DESIGN.md §8).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "executor")]
// One per queued job, moved rarely: boxing the settings would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Executor {
    #[default]
    Local,
    /// `qsteer run-job` in a session of its own on this machine (see `jobs/detached`).
    Detached,
    Slurm(SlurmSettings),
}

impl Executor {
    pub fn name(&self) -> &'static str {
        match self {
            Executor::Local => "local",
            Executor::Detached => "detached",
            Executor::Slurm(_) => "slurm",
        }
    }
}

/// What the batch script asks Slurm for. Unset fields are left to the cluster's defaults;
/// the workspace keeps the user's defaults (`settings.slurm` in `workspace.json`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SlurmSettings {
    /// `--partition`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// `--time`, e.g. `30`, `2:00:00`, `1-00:00:00`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// `--cpus-per-task`; also the node job's worker threads when the job asks for "one
    /// per core".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// `--mem`, e.g. `4G`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    /// `--gres`, e.g. `gpu:1`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gres: Option<String>,
    /// `--account`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// More `sbatch` arguments, passed as they are (e.g. `--qos=short`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// The qsteer binary the node runs; default: this process's own executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
    /// Seconds between two looks at the job's state (default 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_seconds: Option<f64>,
    /// A greedy compress job's eval-score dictionary is first filled by a Slurm array job
    /// of this many tasks, each evaluating its share of the layer × ratio entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub array_tasks: Option<u32>,
    /// At most this many of the array's tasks run at once (`--array=…%T`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub array_throttle: Option<u32>,
}

impl SlurmSettings {
    /// `self`, with the fields it leaves unset taken from `defaults` (e.g. the
    /// workspace's settings under the flags of one command).
    pub fn or(self, defaults: &SlurmSettings) -> SlurmSettings {
        let d = defaults.clone();
        SlurmSettings {
            partition: self.partition.or(d.partition),
            time: self.time.or(d.time),
            cpus: self.cpus.or(d.cpus),
            mem: self.mem.or(d.mem),
            gres: self.gres.or(d.gres),
            account: self.account.or(d.account),
            extra_args: if self.extra_args.is_empty() {
                d.extra_args
            } else {
                self.extra_args
            },
            binary: self.binary.or(d.binary),
            poll_seconds: self.poll_seconds.or(d.poll_seconds),
            array_tasks: self.array_tasks.or(d.array_tasks),
            array_throttle: self.array_throttle.or(d.array_throttle),
        }
    }
}
