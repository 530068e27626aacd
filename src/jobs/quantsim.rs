//! The quantsim job: simulate quantization of a variant and keep the result as its child
//! (see `experiment::quantsim`). Progress comes in two stages, calibration then
//! evaluation.

use super::evaluate::save_top1;
use super::exec::JobCtx;
use super::kind::JobKind;
use super::lock;
use super::outcome::{ScoreFields, SlurmRun};
use crate::data::SplitInfo;
use crate::experiment::quantsim::{
    quantsim_child, quantsim_child_frozen, result_line, settings_label,
};
use crate::experiment::Workspace;
use crate::quant::mixed_range::KeptFp32;
use crate::quant::simulate::QuantsimRequest;
use crate::quant::simulate::QuantsimSettings;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

pub(crate) fn run(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<QuantsimOutcome> {
    run_with(ctx, workspace, false)
}

/// The quantsim job of a fix chain: encodings from a file are AdaRound's, frozen for the
/// chain's settings, which are recorded with the variant.
pub(crate) fn run_frozen(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<QuantsimOutcome> {
    run_with(ctx, workspace, true)
}

fn run_with(ctx: &JobCtx, workspace: &Mutex<Workspace>, frozen: bool) -> Result<QuantsimOutcome> {
    let JobKind::Quantsim {
        variant,
        data,
        settings,
        calibration_size,
        seed,
        threads,
        encodings,
        ..
    } = ctx.kind
    else {
        return Err(Error::runtime(
            "the quantsim job was handed another kind of job",
        ));
    };
    // Bad settings fail before any sample is loaded.
    let mut req = QuantsimRequest::checked(data, settings, *calibration_size, *seed, *threads)
        .map_err(|e| Error::input(format!("quantsim {e}")))?;
    req.metric = super::job_metric(workspace, ctx.kind)?;
    let options = req.options;
    match encodings {
        Some(file) => ctx.log(format!(
            "quantsim of v{variant} with the encodings of {}, {} threads",
            file.display(),
            options.threads
        )),
        None => ctx.log(format!(
            "quantsim of v{variant}: {} ({}), {calibration_size} calibration samples from {}, {} threads",
            settings_label(settings),
            settings.step(),
            data.display(),
            options.threads,
        )),
    }
    let progress = |stage: &str, d, t| ctx.progress(d, t, stage);
    let child = match encodings.as_deref() {
        Some(file) if frozen => {
            quantsim_child_frozen(workspace, *variant, &req, file, ctx.cancel, &progress)?
        }
        file => quantsim_child(workspace, *variant, &req, file, ctx.cancel, &progress)?,
    };
    // Noted once the run stands, so a failed run's message stays the only line.
    let notes = unfolded_bn_note(workspace, *variant)?;
    for note in &notes {
        ctx.log(format!("note: {note}"));
    }
    let o = &child.outcome;
    let r = &o.report;
    ctx.log(format!(
        "{} activation quantizers calibrated in {:.2} s; {} samples evaluated in {:.2} s",
        o.activation_points, o.calibration_seconds, r.samples, r.seconds
    ));
    if let Some(f) = &r.fallback {
        ctx.log(format!("note: {f}"));
    }
    for k in &o.kept_fp32 {
        ctx.log(format!("kept FP32: {} ({})", k.node, k.reason));
    }
    // A cache for the A/B comparison: losing it costs a rerun, not the job.
    let ws_dir = lock(workspace).dir().to_path_buf();
    if let Err(e) = save_top1(&ws_dir, child.variant, r) {
        ctx.log(format!("warning: predictions not cached: {e}"));
    }
    let mut line = result_line(settings, &r.score, child.parent_score.as_ref());
    if let Some(file) = encodings {
        // The settings are the file's, not the form's: name the file instead.
        let label = crate::experiment::quantsim::settings_label(settings);
        line = line.replacen(&label, &format!("encodings {}", file.display()), 1);
    }
    ctx.log(format!("{line} → variant {}", child.variant));
    let (output, encodings) = {
        let ws = lock(workspace);
        let v = ws.variant(child.variant);
        (
            v.map(|v| ws.model_path(v)),
            v.and_then(|v| v.encodings_file.as_ref().map(|e| ws.dir().join(e))),
        )
    };
    let s = &r.score;
    Ok(QuantsimOutcome {
        variant: child.variant,
        parent: child.parent,
        result: line,
        step: lock(workspace)
            .variant(child.variant)
            .map(|v| v.step.clone()),
        settings: settings.clone(),
        accuracy: s.accuracy,
        top5_accuracy: s.top5_accuracy,
        parent_accuracy: child.parent_score.as_ref().and_then(|p| p.accuracy),
        parent_metric_value: child.parent_score.as_ref().and_then(|p| p.value()),
        samples: r.samples,
        seconds: r.seconds,
        samples_per_second: r.samples_per_second,
        activation_points: o.activation_points,
        fp32_op_points: o.fp32_op_points.clone(),
        kept_fp32: o.kept_fp32.clone(),
        calibration_seconds: o.calibration_seconds,
        // The samples calibration used (the split caps the request at half the data).
        calibration_size: r
            .split
            .as_ref()
            .map_or(*calibration_size, |s| s.calibration),
        calibration_requested: *calibration_size,
        seed: *seed,
        threads: options.threads,
        split: r.split.clone(),
        dataset: data.display().to_string(),
        output: output.map(|p| p.display().to_string()),
        encodings: encodings.map(|p| p.display().to_string()),
        workspace: ws_dir.display().to_string(),
        notes,
        score: s.into(),
        slurm: None,
    })
}

/// What a quantsim job reports: the simulated variant and its score (the core of
/// `qsteer quantsim --json`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct QuantsimOutcome {
    /// The simulated (child) variant.
    pub variant: u32,
    pub parent: u32,
    /// The result line, e.g. `W8A8 per-tensor tf_enhanced: 97.50 % (FP32 98.00 %)`.
    pub result: String,
    /// The recipe step recorded with the variant.
    pub step: Option<String>,
    pub settings: QuantsimSettings,
    pub accuracy: Option<f64>,
    pub top5_accuracy: Option<f64>,
    pub parent_accuracy: Option<f64>,
    /// The parent's metric value, when the parent was scored on the same data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_metric_value: Option<f64>,
    pub samples: usize,
    pub seconds: f64,
    pub samples_per_second: f64,
    pub activation_points: usize,
    /// The activation points `--fp32-ops` left unquantized.
    pub fp32_op_points: Vec<String>,
    /// Quantizers a rule of ours removed (the mixed-range Concat), with the reason.
    pub kept_fp32: Vec<KeptFp32>,
    pub calibration_seconds: f64,
    /// The samples calibration used (the split caps the request at half the data).
    pub calibration_size: usize,
    pub calibration_requested: usize,
    pub seed: u64,
    pub threads: usize,
    pub split: Option<SplitInfo>,
    pub dataset: String,
    /// The simulated variant's model file.
    pub output: Option<String>,
    /// Its encodings file (AIMET JSON).
    pub encodings: Option<String>,
    pub workspace: String,
    pub notes: Vec<String>,
    #[serde(flatten)]
    pub score: ScoreFields,
    /// Set when the job ran on a Slurm node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmRun>,
}

/// Quantsim, like AIMET's, does not fold a BatchNormalization into the layer before it:
/// the weight quantizers see the unfolded weights and the BN output gets no quantizer of
/// its own. Say how many could be folded, and what to do about it.
fn unfolded_bn_note(workspace: &Mutex<Workspace>, variant: u32) -> Result<Vec<String>> {
    let path =
        crate::experiment::quantsim::float_variant_path(&lock(workspace), variant, "quantsim")?;
    let model = super::load_model(workspace, &path)?;
    if !model
        .graph()
        .node
        .iter()
        .any(|n| n.op_type == "BatchNormalization")
    {
        return Ok(vec![]);
    }
    let foldable = crate::fixes::fold_batchnorms(&model)?.report.folded.len();
    Ok(match foldable {
        0 => vec![],
        n => vec![format!(
            "{n} BatchNormalization(s) follow layers and are not folded (as in AIMET); folding \
             them first (`qsteer fold-bn`) may quantize better or worse: compare both"
        )],
    })
}

/// The result line of a fix's quantsim grandchild, e.g. `bias correction (hybrid) → W4A8 …
/// 98.50 % (FP32 99.25 %)`, scored against the variant the fix started from; also logged.
pub(super) fn fix_result_line(
    ctx: &JobCtx,
    workspace: &Mutex<Workspace>,
    original: u32,
    child: &crate::experiment::quantsim::QuantsimChild,
    settings: &crate::quant::simulate::QuantsimSettings,
    fix: &str,
) -> String {
    let report = &child.outcome.report;
    let parent_score = lock(workspace)
        .variant(original)
        .and_then(|v| v.latest_result(&report.dataset_fingerprint))
        .map(|r| r.score.clone());
    let line = format!(
        "{fix} → {}",
        result_line(settings, &report.score, parent_score.as_ref())
    );
    ctx.log(format!("{line} → variant {}", child.variant));
    line
}
