//! `--executor slurm [--partition P --time T --cpus N --mem M --gres G --account A
//! --slurm-arg ARG]`: where a job runs, for the commands that can send theirs to Slurm.
//! Unset flags fall back to the workspace's Slurm defaults (`settings.slurm`).

use clap::{Args, ValueEnum};
use qsteer::jobs::{Executor, SlurmSettings};
use qsteer::{Error, Result};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorArg {
    /// In this process
    Local,
    /// As a process of its own that outlives this command (this command follows it;
    /// Ctrl-C or a hangup stops only the following)
    Detached,
    /// As a Slurm batch job on a node (this command waits for it)
    Slurm,
}

#[derive(Debug, Clone, Args)]
pub struct ExecutorFlags {
    /// Where the job runs: local, detached (a process of its own that outlives this
    /// command), or slurm (sbatch; the workspace and data must be on a filesystem the nodes
    /// share)
    #[arg(long, value_enum, default_value_t = ExecutorArg::Local)]
    pub executor: ExecutorArg,
    /// Slurm partition
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm time limit, e.g. 30, 2:00:00, 1-00:00:00
    #[arg(long)]
    pub time: Option<String>,
    /// Slurm CPUs per task (also the node job's threads when --threads is 0)
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Slurm memory, e.g. 4G
    #[arg(long)]
    pub mem: Option<String>,
    /// Slurm generic resources, e.g. gpu:1
    #[arg(long)]
    pub gres: Option<String>,
    /// Slurm account
    #[arg(long)]
    pub account: Option<String>,
    /// One more sbatch argument, as it is (repeatable), e.g. --slurm-arg=--qos=short
    #[arg(long = "slurm-arg", allow_hyphen_values = true)]
    pub slurm_args: Vec<String>,
    /// The qsteer binary the node runs (default: this one)
    #[arg(long)]
    pub slurm_binary: Option<PathBuf>,
    /// Greedy selection: fill the eval-score dictionary with a Slurm array job of N tasks
    /// first, each evaluating its share of the layer × ratio entries
    #[arg(long, value_name = "N")]
    pub array_tasks: Option<u32>,
    /// At most this many array tasks at once
    #[arg(long, value_name = "T")]
    pub array_throttle: Option<u32>,
    /// Keep these Slurm settings as the workspace's defaults (what the app's S dialog edits)
    #[arg(long)]
    pub save_slurm: bool,
}

impl ExecutorFlags {
    /// The executor, with the workspace's Slurm settings under the flags; `--save-slurm`
    /// stores the result as the workspace's new defaults.
    pub fn resolve(&self, ws: &mut qsteer::experiment::Workspace) -> Result<Executor> {
        let executor = self.executor(&ws.settings().slurm)?;
        if self.save_slurm {
            let Executor::Slurm(settings) = &executor else {
                return Err(Error::input("--save-slurm needs --executor slurm"));
            };
            ws.set_slurm(settings.clone())?;
        }
        Ok(executor)
    }

    /// The executor these flags ask for; Slurm flags without `--executor slurm` are an
    /// error rather than silently ignored.
    pub fn executor(&self, defaults: &SlurmSettings) -> Result<Executor> {
        let settings = SlurmSettings {
            partition: self.partition.clone(),
            time: self.time.clone(),
            cpus: self.cpus,
            mem: self.mem.clone(),
            gres: self.gres.clone(),
            account: self.account.clone(),
            extra_args: self.slurm_args.clone(),
            binary: self.slurm_binary.clone(),
            poll_seconds: None,
            array_tasks: self.array_tasks,
            array_throttle: self.array_throttle,
        };
        match self.executor {
            ExecutorArg::Slurm => {
                if self.cpus == Some(0) {
                    return Err(Error::input("--cpus must be at least 1"));
                }
                if self.array_tasks == Some(0) || self.array_throttle == Some(0) {
                    return Err(Error::input(
                        "--array-tasks and --array-throttle must be at least 1",
                    ));
                }
                Ok(Executor::Slurm(settings.or(defaults)))
            }
            ExecutorArg::Local | ExecutorArg::Detached if settings != SlurmSettings::default() => {
                Err(Error::input(
                    "--partition, --time, --cpus, --mem, --gres, --account, --slurm-arg, \
                 --slurm-binary, --array-tasks and --array-throttle need --executor slurm",
                ))
            }
            ExecutorArg::Local => Ok(Executor::Local),
            ExecutorArg::Detached => Ok(Executor::Detached),
        }
    }
}
