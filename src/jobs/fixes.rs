//! The fold-bn and cle jobs: a post-training fix of a variant (see `fixes`), kept as its
//! child with the BN statistics beside it. Both are quick weight arithmetic; CLE checks
//! for cancellation between its iterations.

use super::exec::JobCtx;
use super::kind::JobKind;
use super::lock;
use super::outcome::SlurmRun;
use crate::cancel::CancelToken;
use crate::data::Dataset;
use crate::experiment::evaluate::{check_fits, sample_shapes, select_samples, Subset};
use crate::experiment::quantsim::float_variant_path;
use crate::experiment::Workspace;
use crate::fixes::bn_fold::{FoldedBn, SkippedBn};
use crate::fixes::cle::{ChainEnd, CleSet, ConvertedActivation};
use crate::fixes::HbaReport;
use crate::fixes::{
    equalize_checked, fold_batchnorms, BnStats, CleOptions, CleScaling, HbaSamples,
};
use crate::metrics::clamp_db;
use crate::model::Model;
use crate::runtime::{run_together, CompiledModel, RunOptions};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
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

pub(crate) fn run_fold_bn(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<FoldBnOutcome> {
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
    Ok(FoldBnOutcome {
        variant: id,
        parent: *variant,
        step: "fold_bn".into(),
        output: path.display().to_string(),
        folded: out.report.folded,
        skipped: out.report.skipped,
        seconds,
        workspace: lock(workspace).dir().display().to_string(),
        slurm: None,
    })
}

/// What a fold-bn job reports (the core of `qsteer fold-bn --json`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FoldBnOutcome {
    /// The folded (child) variant.
    pub variant: u32,
    pub parent: u32,
    pub step: String,
    /// The child's model file.
    pub output: String,
    pub folded: Vec<FoldedBn>,
    pub skipped: Vec<SkippedBn>,
    pub seconds: f64,
    pub workspace: String,
    /// Set when the job ran on a Slurm node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmRun>,
}

/// `cle{relu6_to_relu:…,hba:…}` (and `hba_padded:true`, `scaling:settle` when set).
fn cle_step(o: &CleOptions) -> String {
    let padded = if o.hba && o.hba_padded {
        ",hba_padded:true"
    } else {
        ""
    };
    let scaling = if o.scaling == CleScaling::default() {
        String::new()
    } else {
        format!(",scaling:{}", o.scaling)
    };
    format!(
        "cle{{relu6_to_relu:{},hba:{}{padded}{scaling}}}",
        o.relu6_to_relu, o.hba
    )
}

pub(crate) fn run_cle(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<CleOutcome> {
    let JobKind::Cle {
        variant,
        relu6_to_relu,
        hba,
        hba_padded,
        scaling,
        data,
    } = ctx.kind
    else {
        return Err(Error::runtime("the cle job was handed another kind of job"));
    };
    let options = CleOptions {
        relu6_to_relu: *relu6_to_relu,
        hba: *hba,
        hba_padded: *hba_padded,
        scaling: *scaling,
        ..CleOptions::default()
    };
    let (model, stats) = load_parent(workspace, *variant, "CLE")?;
    let started = Instant::now();
    let settings = lock(workspace).settings().clone();
    let run = RunOptions::default();
    let subset = |s: Subset| -> Result<Option<Dataset>> {
        let Some(d) = data else { return Ok(None) };
        let picked = select_samples(d, s, settings.calibration_size, settings.split_seed)?.data;
        check_fits(&model, &picked)?;
        Ok(Some(picked))
    };
    let calibration = if options.hba {
        subset(Subset::Calibration)?
    } else {
        None
    };
    let samples = calibration.as_ref().map(|d| HbaSamples {
        data: d,
        options: run,
    });
    let out = equalize_checked(&model, &stats, &options, samples, ctx.cancel)?;
    ctx.cancel.check()?;
    let r = &out.report;
    if let Some(h) = &r.hba {
        for a in &h.absorbed {
            let lowered = match (a.reduced, a.max_from_statistics) {
                (0, _) => String::new(),
                (n, Some(s)) => format!(
                    "; {n} channel(s) lowered to the calibration minimum (BN statistics alone: max {s:.4})"
                ),
                (n, None) => format!("; {n} channel(s) lowered"),
            };
            ctx.log(format!(
                "high-bias absorption '{}' → '{}': {} channel(s), max {:.4}{lowered}",
                a.layer, a.into, a.channels, a.max
            ));
        }
        if h.checked_on.is_none() && !h.absorbed.is_empty() {
            ctx.log(
                "note: high-bias absorption is statistical (from BN statistics) and may change \
                 outputs; give a dataset (--data) to absorb only what the data allows",
            );
        }
    }
    // What the whole result costs in FP32, on samples the absorption was not fitted to.
    let fp32_change = match subset(Subset::Evaluation)? {
        Some(eval) => {
            let c = output_change(&model, &out.model, &eval, run, ctx.cancel)?;
            ctx.log(format!(
                "FP32 outputs vs v{variant} on {} evaluation samples: max |Δ| {:.3e}, SQNR {:.1} dB",
                c.samples, c.max_abs, c.sqnr_db
            ));
            Some(c)
        }
        None => None,
    };
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
        "{} set(s) equalized {} → variant {id}",
        r.sets.len(),
        passes_label(r.scaling, r.iterations, r.converged)
    ));
    Ok(CleOutcome {
        variant: id,
        parent: *variant,
        step,
        output: path.display().to_string(),
        seconds,
        fp32_change,
        workspace: lock(workspace).dir().display().to_string(),
        folded: r.folded.as_ref().map(|f| f.folded.clone()),
        sets: r.sets.clone(),
        converted: r.converted.clone(),
        scaling: r.scaling,
        iterations: r.iterations,
        converged: r.converged,
        layers: r.layers.iter().map(CleLayer::from).collect(),
        hba: r.hba.clone(),
        ends: r.ends.clone(),
        slurm: None,
    })
}

/// What a cle job reports (the core of `qsteer cle --json`): the report without the
/// per-channel lists (they belong to the app's chart, not the job journal).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CleOutcome {
    /// The equalized (child) variant.
    pub variant: u32,
    pub parent: u32,
    /// The recipe step, e.g. `cle{relu6_to_relu:false,hba:true}`.
    pub step: String,
    pub output: String,
    pub seconds: f64,
    /// How far the FP32 outputs moved, on the evaluation samples (with a dataset).
    pub fp32_change: Option<OutputChange>,
    pub workspace: String,
    /// The BatchNormalizations folded first.
    pub folded: Option<Vec<FoldedBn>>,
    pub sets: Vec<CleSet>,
    pub converted: Vec<ConvertedActivation>,
    /// `once` (each set scaled once, AIMET's) or `settle`; an outcome written before the
    /// option was `settle`.
    #[serde(default = "CleScaling::unrecorded")]
    pub scaling: CleScaling,
    pub iterations: usize,
    /// With `settle`: the scales settled before the iteration limit.
    pub converged: bool,
    pub layers: Vec<CleLayer>,
    pub hba: Option<HbaReport>,
    pub ends: Vec<ChainEnd>,
    /// Set when the job ran on a Slurm node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmRun>,
}

/// `in one pass` or `in 7 iteration(s)` (with ` (not converged)` when settling stopped at
/// the limit).
fn passes_label(scaling: CleScaling, iterations: usize, converged: bool) -> String {
    match scaling {
        CleScaling::Once => "in one pass".into(),
        CleScaling::Settle => format!(
            "in {iterations} iteration(s){}",
            if converged { "" } else { " (not converged)" }
        ),
    }
}

impl CleOutcome {
    /// How the sets were scaled, e.g. `in one pass`, `in 7 iteration(s)`.
    pub fn passes(&self) -> String {
        passes_label(self.scaling, self.iterations, self.converged)
    }
}

/// Per equalized layer: the max/median range ratio of its output channels before and after.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CleLayer {
    pub layer: String,
    pub op: String,
    pub channels: usize,
    pub ratio_before: f64,
    pub ratio_after: f64,
}

impl From<&crate::fixes::cle::LayerRanges> for CleLayer {
    fn from(l: &crate::fixes::cle::LayerRanges) -> CleLayer {
        CleLayer {
            layer: l.layer.clone(),
            op: l.op.clone(),
            channels: l.after.channels.len(),
            ratio_before: l.before.max_median_ratio,
            ratio_after: l.after.max_median_ratio,
        }
    }
}

/// How far a fix moved the FP32 outputs, over every output element.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OutputChange {
    pub samples: usize,
    pub max_abs: f32,
    /// SQNR of the fixed outputs against the original ones, capped for JSON.
    pub sqnr_db: f64,
}

/// How far `after`'s outputs are from `before`'s on `data`, over every output element:
/// `{samples, max_abs, sqnr_db}` (SQNR of `after` against `before`, capped for JSON).
fn output_change(
    before: &Model,
    after: &Model,
    data: &Dataset,
    options: RunOptions,
    cancel: &CancelToken,
) -> Result<OutputChange> {
    let shapes = sample_shapes(before, data)?;
    let a = CompiledModel::compile(before, &shapes, options.batch_size, &[])?;
    let b = CompiledModel::compile(after, &shapes, options.batch_size, &[])?;
    let (mut max_abs, mut signal, mut noise) = (0.0f32, 0.0f64, 0.0f64);
    run_together(
        &[&a, &b],
        data,
        options,
        cancel,
        &|_, _| {},
        &mut |_, outs| {
            for (r, t) in outs[0].iter().zip(&outs[1]) {
                for (&r, &t) in r.iter().zip(t.iter()) {
                    let d = r - t;
                    max_abs = max_abs.max(d.abs());
                    signal += f64::from(r) * f64::from(r);
                    noise += f64::from(d) * f64::from(d);
                }
            }
            Ok(())
        },
    )?;
    let sqnr = if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    };
    Ok(OutputChange {
        samples: data.len(),
        max_abs,
        sqnr_db: clamp_db(sqnr),
    })
}
