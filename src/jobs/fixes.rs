//! The fold-bn and cle jobs: a post-training fix of a variant (see `fixes`), kept as its
//! child with the BN statistics beside it. Both are quick weight arithmetic; CLE checks
//! for cancellation between its iterations.

use super::exec::JobCtx;
use super::kind::JobKind;
use super::lock;
use crate::experiment::quantsim::float_variant_path;
use crate::experiment::Workspace;
use crate::fixes::{equalize, fold_batchnorms, BnStats, CleOptions, CleReport};
use crate::model::Model;
use crate::{Error, Result};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

/// The parent's model and BN statistics (from an earlier fold), read under the lock.
fn load_parent(workspace: &Mutex<Workspace>, variant: u32, what: &str) -> Result<(Model, BnStats)> {
    let (path, stats) = {
        let ws = lock(workspace);
        (
            float_variant_path(&ws, variant, what)?,
            ws.bn_stats(variant)?,
        )
    };
    Ok((
        super::load_model(workspace, &path)?,
        stats.unwrap_or_default(),
    ))
}

/// Keep `model` as a child of `parent` made by `step`, with the parent's MACs (the fixes
/// change no layer's shape), its parameter count and the BN statistics. Returns the
/// child's id and model file.
fn record_child(
    workspace: &Mutex<Workspace>,
    parent: u32,
    step: &str,
    model: &Model,
    stats: &BnStats,
) -> Result<(u32, PathBuf)> {
    lock(workspace).transaction(|ws| record(ws, parent, step, model, stats))
}

fn record(
    ws: &mut Workspace,
    parent: u32,
    step: &str,
    model: &Model,
    stats: &BnStats,
) -> Result<(u32, PathBuf)> {
    let macs = ws.variant(parent).and_then(|v| v.macs);
    let id = ws.add_variant(parent, step, model)?;
    let params = model.weights().map(|(_, w)| w.array.len() as u64).sum();
    ws.set_costs(id, macs, Some(params))?;
    if !stats.is_empty() {
        ws.set_bn_stats(id, stats)?;
    }
    let path = ws
        .variant(id)
        .map(|v| ws.model_path(v))
        .ok_or_else(|| Error::runtime(format!("variant {id} vanished")))?;
    Ok((id, path))
}

pub(crate) fn run_fold_bn(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<serde_json::Value> {
    let JobKind::FoldBn { variant } = ctx.kind else {
        return Err(Error::runtime(
            "the fold-bn job was handed another kind of job",
        ));
    };
    let (model, mut stats) = load_parent(workspace, *variant, "BN folding")?;
    let started = Instant::now();
    let out = fold_batchnorms(&model)?;
    ctx.cancel.check()?;
    for s in &out.report.skipped {
        ctx.log(format!("note: BN '{}' stays: {}", s.bn, s.reason));
    }
    stats.merge(out.stats);
    let (id, path) = record_child(workspace, *variant, "fold_bn", &out.model, &stats)?;
    let seconds = started.elapsed().as_secs_f64();
    ctx.log(format!(
        "{} BatchNormalization(s) folded, {} left → variant {id}",
        out.report.folded.len(),
        out.report.skipped.len()
    ));
    Ok(json!({
        "variant": id,
        "parent": variant,
        "step": "fold_bn",
        "output": path.display().to_string(),
        "folded": out.report.folded,
        "skipped": out.report.skipped,
        "seconds": seconds,
        "workspace": lock(workspace).dir().display().to_string(),
    }))
}

/// `cle{relu6_to_relu:…,hba:…}` (and `hba_padded:true` when set).
fn cle_step(o: &CleOptions) -> String {
    let padded = if o.hba && o.hba_padded {
        ",hba_padded:true"
    } else {
        ""
    };
    format!(
        "cle{{relu6_to_relu:{},hba:{}{padded}}}",
        o.relu6_to_relu, o.hba
    )
}

pub(crate) fn run_cle(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<serde_json::Value> {
    let JobKind::Cle {
        variant,
        relu6_to_relu,
        hba,
        hba_padded,
    } = ctx.kind
    else {
        return Err(Error::runtime("the cle job was handed another kind of job"));
    };
    let options = CleOptions {
        relu6_to_relu: *relu6_to_relu,
        hba: *hba,
        hba_padded: *hba_padded,
        ..CleOptions::default()
    };
    let (model, stats) = load_parent(workspace, *variant, "CLE")?;
    let started = Instant::now();
    let out = equalize(&model, &stats, &options, ctx.cancel)?;
    ctx.cancel.check()?;
    let r = &out.report;
    if let Some(f) = &r.folded {
        ctx.log(format!(
            "note: the model still had BatchNormalizations: {} folded first",
            f.folded.len()
        ));
    }
    for c in &r.converted {
        ctx.log(format!(
            "note: {} '{}' became Relu (this changes the function)",
            c.was, c.node
        ));
    }
    let step = cle_step(&options);
    let (id, path) = record_child(workspace, *variant, &step, &out.model, &out.stats)?;
    let seconds = started.elapsed().as_secs_f64();
    ctx.log(format!(
        "{} set(s) equalized in {} iteration(s){} → variant {id}",
        r.sets.len(),
        r.iterations,
        if r.converged { "" } else { " (not converged)" }
    ));
    let mut summary = cle_summary(r);
    summary["variant"] = json!(id);
    summary["parent"] = json!(variant);
    summary["step"] = json!(step);
    summary["output"] = json!(path.display().to_string());
    summary["seconds"] = json!(seconds);
    summary["workspace"] = json!(lock(workspace).dir().display().to_string());
    Ok(summary)
}

/// The report without the per-channel lists (they belong to the app's chart, not the job
/// journal): per layer the max/median range ratio before and after.
fn cle_summary(r: &CleReport) -> serde_json::Value {
    let layers: Vec<serde_json::Value> = r
        .layers
        .iter()
        .map(|l| {
            json!({
                "layer": l.layer,
                "op": l.op,
                "channels": l.after.channels.len(),
                "ratio_before": l.before.max_median_ratio,
                "ratio_after": l.after.max_median_ratio,
            })
        })
        .collect();
    json!({
        "folded": r.folded.as_ref().map(|f| &f.folded),
        "sets": r.sets,
        "converted": r.converted,
        "iterations": r.iterations,
        "converged": r.converged,
        "layers": layers,
        "hba": r.hba,
        "ends": r.ends,
    })
}
