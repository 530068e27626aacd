//! `qsteer jobs [--follow]`: the workspace's jobs from its journal, with where each ran —
//! detached ones (a process of their own) with their pid and live state, whichever process
//! started them. `--follow` follows the detached jobs still running (or ended while nobody
//! followed them) to their end and journals that end, as the app does when it starts.

use super::table::{text, Table};
use super::{event_printer, print_json, variant_workspace, Common, Progress};
use clap::Args;
use qsteer::experiment::DetachedJobEntry;
use qsteer::jobs::{
    cancel_detached, detached_liveness, detached_state, follow_detached, load_history, JobId,
    Liveness,
};
use qsteer::{Error, Result};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Follow the detached jobs not seen to end until they end (and journal their end)
    #[arg(long)]
    pub follow: bool,
    /// Cancel the detached job with this id (SIGTERM to its process group: it stops at its
    /// next checkpoint and records itself cancelled), then follow it to its end
    #[arg(long, value_name = "ID")]
    pub cancel: Option<u64>,
    /// The model whose default workspace it is (--workspace DIR names it directly)
    #[arg(long)]
    pub model: Option<PathBuf>,
}

pub fn run(args: JobsArgs, common: &Common) -> Result<()> {
    let (dir, ws) = variant_workspace(args.model.as_ref(), common)?;
    let mut followed = vec![];
    if let Some(id) = args.cancel {
        let entry = (ws.file().detached_jobs.iter())
            .rev()
            .find(|e| e.job == id)
            .ok_or_else(|| {
                Error::input(format!(
                    "{}: job {id} is not a detached job of this workspace (qsteer jobs lists them)",
                    dir.display()
                ))
            })?;
        if !cancel_detached(&dir, entry) {
            return Err(Error::input(format!(
                "job {id} is not running (its state: {})",
                detached_state(&dir, entry)
            )));
        }
    }
    if args.follow || args.cancel.is_some() {
        let history = load_history(&dir)?;
        let open: Vec<(JobId, DetachedJobEntry)> = (ws.file().detached_jobs.iter())
            .filter(|e| history.interrupted().any(|r| r.id.0 == e.job))
            .filter(|e| detached_liveness(&dir, e) != Liveness::Gone)
            // --cancel alone follows the job it cancelled.
            .filter(|e| args.follow || args.cancel == Some(e.job))
            .map(|e| (JobId(e.job), e.clone()))
            .collect();
        let ws = Arc::new(Mutex::new(ws.clone()));
        let show = common.progress == Progress::Auto && std::io::stderr().is_terminal();
        for (id, entry) in open {
            if common.progress != Progress::Jsonl {
                eprintln!("following job {id} ({}, pid {})", entry.label, entry.pid);
            }
            let outcome =
                match follow_detached(ws.clone(), id, event_printer(common.progress, show)) {
                    Ok(outcome) => json!({"job": id, "result": outcome.to_json()}),
                    Err(e) => json!({"job": id, "error": e.to_string()}),
                };
            if show {
                eprintln!();
            }
            followed.push(outcome);
        }
    }
    let doc = json!({
        "workspace": dir.display().to_string(),
        "jobs": rows(&dir)?,
        "followed": followed,
    });
    if common.json {
        return print_json(&doc);
    }
    print_table(&doc);
    Ok(())
}

/// One row per journalled job: its id, label and state, where it ran, and for a detached
/// job its pid and output file (its state looked at now when the journal has no end yet).
fn rows(dir: &Path) -> Result<Vec<Value>> {
    let ws = qsteer::experiment::Workspace::open(dir)?;
    let history = load_history(dir)?;
    let unended: Vec<JobId> = history.interrupted().map(|r| r.id).collect();
    Ok(history
        .jobs
        .iter()
        .map(|r| {
            let detached = (ws.file().detached_jobs.iter())
                .rev()
                .find(|e| e.job == r.id.0);
            let slurm = (ws.file().slurm_jobs.iter())
                .rev()
                .find(|e| e.job == r.id.0);
            let mut row = json!({
                "id": r.id,
                "label": r.kind.label(),
                "state": r.state.name(),
                "executor": "local",
            });
            if let Some(e) = detached {
                row["executor"] = json!("detached");
                row["pid"] = json!(e.pid);
                row["output"] = json!(dir
                    .join("detached")
                    .join(format!("{}.out", e.stem))
                    .display()
                    .to_string());
                if unended.contains(&r.id) {
                    row["state"] = json!(detached_state(dir, e));
                }
            } else if let Some(s) = slurm {
                row["executor"] = json!("slurm");
                row["slurm_id"] = json!(s.slurm_id);
            }
            row
        })
        .collect())
}

fn print_table(doc: &Value) {
    let mut t = Table::new(
        &["job", "what", "state", "where"],
        &[true, false, false, false],
    );
    for j in doc["jobs"].as_array().into_iter().flatten() {
        let place = match j["executor"].as_str() {
            Some("detached") => format!("detached pid {}", j["pid"]),
            Some("slurm") => format!("slurm {}", text(&j["slurm_id"])),
            _ => "in its command's process".into(),
        };
        t.row(vec![
            format!("#{}", j["id"]),
            text(&j["label"]),
            text(&j["state"]),
            place,
        ]);
    }
    print!("{}", t.render());
    for f in doc["followed"].as_array().into_iter().flatten() {
        match f["error"].as_str() {
            Some(e) => println!("job #{}: {e}", f["job"]),
            None => println!("job #{}: finished", f["job"]),
        }
    }
}
