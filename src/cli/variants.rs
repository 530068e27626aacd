//! `qsteer variants rename|note|tag|untag|delete ID …`: what a user changes on a variant by
//! hand, in the workspace `--workspace DIR` (or `--model FILE`'s default one). `--json`
//! prints the variant as the index now holds it (`delete`: the id and the files removed).

use super::{print_json, variant_workspace, Common};
use clap::{Args, Subcommand};
use qsteer::{Error, Result};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct VariantsArgs {
    #[command(subcommand)]
    pub action: VariantAction,
    /// The model whose default workspace is meant (default: the embedded sample;
    /// --workspace DIR names the workspace directly)
    #[arg(long, global = true)]
    pub model: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum VariantAction {
    /// Give a variant a name, shown instead of its step ("" takes it off)
    Rename { id: u32, name: String },
    /// Replace a variant's note
    Note { id: u32, note: String },
    /// Add a tag to a variant
    Tag { id: u32, tag: String },
    /// Take a tag off a variant
    Untag { id: u32, tag: String },
    /// Delete a variant and its files (not the base, not one with children, not one a job
    /// has not ended on)
    Delete { id: u32 },
}

pub fn run(args: VariantsArgs, common: &Common) -> Result<()> {
    let (_, mut ws) = variant_workspace(args.model.as_ref(), common)?;
    let id = match &args.action {
        VariantAction::Rename { id, name } => ws.rename_variant(*id, name).map(|_| *id)?,
        VariantAction::Note { id, note } => ws.set_note(*id, note).map(|_| *id)?,
        VariantAction::Tag { id, tag } => tagged(&mut ws, *id, tag, true)?,
        VariantAction::Untag { id, tag } => tagged(&mut ws, *id, tag, false)?,
        VariantAction::Delete { id } => {
            let removed = ws.delete_variant(*id)?;
            if common.json {
                let files: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
                return print_json(&serde_json::json!({ "deleted": id, "files": files }));
            }
            println!("variant {id} deleted ({} file(s) removed)", removed.len());
            return Ok(());
        }
    };
    let v = ws
        .variant(id)
        .ok_or_else(|| Error::input(format!("no variant {id}")))?;
    if common.json {
        let doc = serde_json::to_value(v).map_err(|e| Error::runtime(e.to_string()))?;
        return print_json(&doc);
    }
    println!(
        "variant {id}: name {}, tags [{}], note {:?}",
        v.name.as_deref().unwrap_or("–"),
        v.tags.join(", "),
        v.notes
    );
    Ok(())
}

fn tagged(ws: &mut qsteer::experiment::Workspace, id: u32, tag: &str, add: bool) -> Result<u32> {
    let tag = tag.trim();
    if tag.is_empty() || tag.contains(char::is_whitespace) {
        return Err(Error::input(format!("tag '{tag}': one word")));
    }
    if add {
        ws.add_tag(id, tag)?;
    } else {
        ws.remove_tag(id, tag)?;
    }
    Ok(id)
}
