//! `qsteer workspace repair [MODEL] [--workspace DIR]`: rebuild or extend a workspace's
//! index from the files in its `variants/` directory (see `experiment::repair`).

use super::{model_name, print_json, Common};
use clap::{Args, Subcommand};
use qsteer::experiment::{default_workspace_dir, repair, RepairReport};
use qsteer::{Error, Result};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct WorkspaceArgs {
    #[command(subcommand)]
    pub action: WorkspaceAction,
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceAction {
    /// Rebuild a damaged or missing workspace.json from the files in variants/, and adopt
    /// the variant files it does not list (nothing is deleted; a damaged index is moved aside)
    Repair(RepairArgs),
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// The model whose default workspace is meant (and the base of a rebuilt index);
    /// --workspace DIR names the workspace directly
    pub model: Option<PathBuf>,
}

pub fn run(args: WorkspaceArgs, common: &Common) -> Result<()> {
    match args.action {
        WorkspaceAction::Repair(a) => run_repair(a, common),
    }
}

fn run_repair(args: RepairArgs, common: &Common) -> Result<()> {
    let model = match &args.model {
        Some(path) => Some((
            super::open_model(path, common, common.data.as_deref())?,
            model_name(path),
        )),
        None => None,
    };
    let dir = match (&common.workspace, &model) {
        (Some(dir), _) => dir.clone(),
        (None, Some((m, name))) => default_workspace_dir(name, &m.content_hash())?,
        (None, None) => {
            return Err(Error::input(
                "workspace repair needs the workspace: --workspace DIR, or the MODEL whose \
                 default workspace it is",
            ))
        }
    };
    let report = repair(&dir, model.as_ref().map(|(m, n)| (m, n.as_str())))?;
    if common.json {
        let doc = serde_json::to_value(&report).map_err(|e| Error::runtime(e.to_string()))?;
        return print_json(&doc);
    }
    print_report(&report);
    Ok(())
}

fn print_report(r: &RepairReport) {
    println!("workspace {}", r.workspace.display());
    if let Some(aside) = &r.damaged_index_moved_to {
        println!("damaged index moved to {}", aside.display());
    }
    if r.rebuilt {
        println!("index rebuilt from the files in variants/");
    }
    for a in &r.adopted {
        let with = if a.files.is_empty() {
            String::new()
        } else {
            format!(" with {}", a.files.join(", "))
        };
        println!(
            "adopted variant {} ({}{with}); unknown: {}",
            a.id,
            a.model_file,
            a.unknown.join(", ")
        );
    }
    for f in &r.attached {
        println!("attached {f} to its variant");
    }
    for id in &r.missing_model_files {
        println!("variant {id}: its model file is missing (left listed)");
    }
    if !r.unknown_files.is_empty() {
        println!(
            "left alone, not a variant's: {}",
            r.unknown_files.join(", ")
        );
    }
    if !r.changed() {
        println!("nothing to repair");
    }
}

/// A note on stderr when `variants/` holds variants the index does not list (its index was
/// restored from an older copy or rebuilt): they are kept, and `repair` adopts them.
pub(crate) fn note_unlisted(ws: &qsteer::experiment::Workspace) {
    let ids = ws.unlisted();
    if ids.is_empty() {
        return;
    }
    let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    eprintln!(
        "note: {}/variants holds variant files the index does not list ({}); they are kept, \
         and `qsteer workspace repair --workspace {}` adopts them",
        ws.dir().display(),
        ids.join(", "),
        ws.dir().display()
    );
}
