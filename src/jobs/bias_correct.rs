//! The bias-correction job: correct an FP32 variant's biases for one set of quantsim
//! settings (child variant), then simulate the corrected model at those settings
//! (grandchild), so the user sees the corrected score at once.

use super::exec::JobCtx;
use super::kind::JobKind;
use super::lock;
use super::outcome::{ScoreFields, SlurmRun};
use crate::experiment::quantsim::{float_variant_path, quantsim_child, settings_label};
use crate::experiment::Workspace;
use crate::fixes::bias_correction::{bias_correct, BcMode, LayerCorrection};
use crate::quant::simulate::{QuantsimRequest, QuantsimSettings};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// The job's variant, mode and checked quantsim request.
fn inputs(kind: &JobKind) -> Result<(u32, BcMode, QuantsimRequest)> {
    let JobKind::BiasCorrect {
        variant,
        data,
        settings,
        mode,
        calibration_size,
        seed,
        threads,
        ..
    } = kind
    else {
        return Err(Error::runtime(
            "the bias-correction job was handed another kind of job",
        ));
    };
    let req = QuantsimRequest::checked(data, settings, *calibration_size, *seed, *threads)?;
    Ok((*variant, *mode, req))
}

pub(crate) fn run(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<BiasCorrectOutcome> {
    let corrected = correct(ctx, workspace)?;
    let (variant, mode, mut req) = inputs(ctx.kind)?;
    req.metric = super::job_metric(workspace, ctx.kind)?;
    let settings = &req.settings;
    let corrected_id = corrected.variant;
    ctx.log(format!(
        "corrected model → variant {corrected_id}; simulating it"
    ));
    let child = quantsim_child(
        workspace,
        corrected_id,
        &req,
        None,
        ctx.cancel,
        &|stage, d, t| ctx.progress(d, t, stage),
    )?;
    let line = super::quantsim::fix_result_line(
        ctx,
        workspace,
        variant,
        &child,
        settings,
        &format!("bias correction ({mode})"),
    );
    let score = &child.outcome.report.score;
    Ok(BiasCorrectOutcome {
        variant: child.variant,
        corrected_variant: corrected_id,
        parent: variant,
        result: line,
        mode,
        settings: settings.clone(),
        accuracy: score.accuracy,
        layers: corrected.layers,
        simulated_passes: corrected.simulated_passes,
        calibration_samples: corrected.calibration_samples,
        samples: child.outcome.report.samples,
        score: score.into(),
        slurm: None,
    })
}

/// What a bias-correction job reports (the core of `qsteer bias-correct --json`): the
/// corrected FP32 variant and its quantsim (`variant`) with the score.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BiasCorrectOutcome {
    /// The quantsim of the corrected model (grandchild).
    pub variant: u32,
    /// The corrected FP32 model (child).
    pub corrected_variant: u32,
    pub parent: u32,
    /// The result line, scored against the parent.
    pub result: String,
    pub mode: BcMode,
    pub settings: QuantsimSettings,
    pub accuracy: Option<f64>,
    pub layers: Vec<LayerCorrection>,
    pub simulated_passes: usize,
    pub calibration_samples: usize,
    pub samples: usize,
    #[serde(flatten)]
    pub score: ScoreFields,
    /// Set when the job ran on a Slurm node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmRun>,
}

/// What the correction alone reports (a fix chain's bias-correction step): the corrected
/// FP32 variant.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CorrectedOutcome {
    pub variant: u32,
    pub parent: u32,
    pub step: String,
    pub mode: BcMode,
    pub settings: QuantsimSettings,
    pub layers: Vec<LayerCorrection>,
    pub simulated_passes: usize,
    pub calibration_samples: usize,
}

/// The correction alone: the corrected FP32 model as a child variant (`variant` in the
/// summary), without its quantsim. The fix chain runs this as its bias-correction step.
pub(crate) fn correct(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<CorrectedOutcome> {
    let (variant, mode, req) = inputs(ctx.kind)?;
    let settings = &req.settings;
    let (path, bn_stats) = {
        let ws = lock(workspace);
        let path = float_variant_path(&ws, variant, "bias correction")?;
        (path, ws.bn_stats(variant)?.unwrap_or_default())
    };
    let model = super::load_model(workspace, &path)?;
    ctx.log(format!(
        "bias correction ({mode}) of v{variant} for {}",
        settings_label(settings)
    ));
    let (corrected, report) =
        bias_correct(&model, &req, mode, &bn_stats, ctx.cancel, &|stage, d, t| {
            ctx.progress(d, t, stage)
        })?;
    for l in &report.layers {
        ctx.log(format!(
            "{}: {} (max |Δb| {:.4}, mean {:.4})",
            l.layer, l.how, l.max_abs, l.mean_abs
        ));
    }
    ctx.cancel.check()?;
    let step = format!(
        "bias_correct{{mode:{mode},w:{},a:{},per_channel:{}}}",
        settings.w_bits, settings.a_bits, settings.per_channel
    );
    let corrected_id = lock(workspace).transaction(|ws| {
        let id = ws.add_variant(variant, &step, &corrected)?;
        // The same statistics describe the corrected model's BN outputs.
        if !bn_stats.is_empty() {
            ws.set_bn_stats(id, &bn_stats)?;
        }
        Ok(id)
    })?;
    Ok(CorrectedOutcome {
        variant: corrected_id,
        parent: variant,
        step,
        mode,
        settings: settings.clone(),
        layers: report.layers,
        simulated_passes: report.simulated_passes,
        calibration_samples: report.samples,
    })
}
