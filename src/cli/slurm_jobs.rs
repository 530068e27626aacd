//! `qsteer slurm-jobs [--follow]`: the Slurm jobs sent from a workspace with their last
//! known state; `--follow` follows the ones not seen to end (the submitting app or command
//! stopped first) to their end, recording their states and results as the submitter would.

use super::table::{text, Table};
use super::{print_json, run_job, variant_workspace, Common};
use clap::Args;
use qsteer::jobs::{unfinished_slurm_jobs, JobKind};
use qsteer::Result;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Args)]
pub struct SlurmJobsArgs {
    /// Follow the jobs not seen to end until they end
    #[arg(long)]
    pub follow: bool,
    /// The model whose default workspace it is (--workspace DIR names it directly)
    #[arg(long)]
    pub model: Option<PathBuf>,
}

pub fn run(args: SlurmJobsArgs, common: &Common) -> Result<()> {
    let (_, ws) = variant_workspace(args.model.as_ref(), common)?;
    let pending = unfinished_slurm_jobs(&ws);
    let ws = Arc::new(Mutex::new(ws));
    let mut followed = vec![];
    if args.follow {
        for kind in pending {
            let JobKind::SlurmFollow { slurm_id, .. } = &kind else {
                continue;
            };
            let slurm_id = slurm_id.clone();
            let outcome = match run_job(ws.clone(), kind, common) {
                Ok(outcome) => json!({"slurm_id": slurm_id, "result": outcome.to_json()}),
                Err(e) => json!({"slurm_id": slurm_id, "error": e.to_string()}),
            };
            followed.push(outcome);
        }
    }
    let ws = super::lock(&ws);
    let jobs = serde_json::to_value(&ws.file().slurm_jobs).unwrap_or_default();
    let doc = json!({
        "workspace": ws.dir().display().to_string(),
        "slurm_jobs": jobs,
        "followed": followed,
    });
    if common.json {
        return print_json(&doc);
    }
    print_table(&doc);
    Ok(())
}

fn print_table(doc: &Value) {
    let mut t = Table::new(
        &["job", "slurm id", "state", "files"],
        &[true, true, false, false],
    );
    for j in doc["slurm_jobs"].as_array().into_iter().flatten() {
        t.row(vec![
            format!("#{}", j["job"]),
            text(&j["slurm_id"]),
            text(&j["state"]),
            format!("slurm/{}.*", text(&j["stem"])),
        ]);
    }
    print!("{}", t.render());
    for f in doc["followed"].as_array().into_iter().flatten() {
        match f["error"].as_str() {
            Some(e) => println!("slurm {}: {e}", text(&f["slurm_id"])),
            None => println!(
                "slurm {}: {}",
                text(&f["slurm_id"]),
                f["result"]["result"].as_str().map_or_else(
                    || format!("variant {}", f["result"]["variant"]),
                    str::to_string
                )
            ),
        }
    }
}
