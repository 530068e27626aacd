//! The AdaRound job: learn the rounding of an FP32 variant's weights for one set of quantsim
//! settings (child variant: the FP32 graph with rounded weights), then simulate it with the
//! frozen encodings (grandchild), so the user sees the AdaRound score at once.
//!
//! The grandchild is a quantsim from an encodings file: AdaRound's parameter encodings plus
//! activation encodings calibrated on the rounded model, written next to the child's model
//! as `variants/<child>.adaround.encodings.json`. Recalibrating the weights instead would
//! move the grid the rounding was learned for.

use super::exec::JobCtx;
use super::kind::JobKind;
use super::lock;
use super::outcome::{ScoreFields, SlurmRun};
use crate::experiment::quantsim::{float_variant_path, quantsim_child_frozen, settings_label};
use crate::experiment::Workspace;
use crate::fixes::adaround::{adaround, frozen_encodings, AdaroundOptions, LayerRound};
use crate::quant::simulate::{QuantsimRequest, QuantsimSettings};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// What the rounding alone reports (a fix chain's AdaRound step): the rounded FP32 variant
/// and its frozen encodings file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RoundedOutcome {
    pub variant: u32,
    pub parent: u32,
    pub step: String,
    pub settings: QuantsimSettings,
    /// Optimisation steps per layer.
    pub iterations: usize,
    /// The frozen encodings file (AdaRound's parameter encodings, activations calibrated
    /// on the rounded model).
    pub encodings: String,
    pub layers: Vec<LayerRound>,
    pub loaded_layers: usize,
    pub calibration_samples: usize,
    /// The rounding's time.
    pub seconds: f64,
}

/// What an AdaRound job reports (the core of `qsteer adaround --json`): the rounding
/// (`rounded_variant`) and its quantsim with the frozen encodings (`variant`), scored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AdaroundOutcome {
    /// The quantsim of the rounded model (grandchild).
    pub variant: u32,
    /// The rounded FP32 model (child).
    pub rounded_variant: u32,
    pub parent: u32,
    pub step: String,
    /// The result line, scored against the parent.
    pub result: String,
    pub settings: QuantsimSettings,
    pub iterations: usize,
    pub encodings: String,
    pub layers: Vec<LayerRound>,
    pub loaded_layers: usize,
    pub calibration_samples: usize,
    pub seconds: f64,
    pub accuracy: Option<f64>,
    /// What the score was computed on (the rounding's count is `calibration_samples`).
    pub samples: usize,
    #[serde(flatten)]
    pub score: ScoreFields,
    /// Set when the job ran on a Slurm node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmRun>,
}

/// The job's variant, iterations and checked quantsim request.
fn inputs(kind: &JobKind) -> Result<(u32, Option<usize>, QuantsimRequest)> {
    let JobKind::AdaRound {
        variant,
        data,
        settings,
        iterations,
        calibration_size,
        seed,
        threads,
        ..
    } = kind
    else {
        return Err(Error::runtime(
            "the AdaRound job was handed another kind of job",
        ));
    };
    let req = QuantsimRequest::checked(data, settings, *calibration_size, *seed, *threads)?;
    Ok((*variant, *iterations, req))
}

pub(crate) fn run(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<AdaroundOutcome> {
    let rounded = round(ctx, workspace)?;
    let (variant, _, mut req) = inputs(ctx.kind)?;
    req.metric = super::job_metric(workspace, ctx.kind)?;
    let settings = &req.settings;
    let rounded_id = rounded.variant;
    let encodings_file = std::path::PathBuf::from(&rounded.encodings);
    let n = rounded.iterations;
    ctx.log(format!(
        "rounded model → variant {rounded_id}; simulating it with the frozen encodings"
    ));
    // Read from a file, but made for these settings: kept with the variant for reruns and
    // analysis, in the same index write.
    let child = quantsim_child_frozen(
        workspace,
        rounded_id,
        &req,
        &encodings_file,
        ctx.cancel,
        &|stage, d, t| ctx.progress(d, t, stage),
    )?;
    let line = super::quantsim::fix_result_line(
        ctx,
        workspace,
        variant,
        &child,
        settings,
        &format!("AdaRound ({n} it.)"),
    );
    let score = &child.outcome.report.score;
    Ok(AdaroundOutcome {
        variant: child.variant,
        rounded_variant: rounded_id,
        parent: rounded.parent,
        step: rounded.step,
        result: line,
        settings: rounded.settings,
        iterations: rounded.iterations,
        encodings: rounded.encodings,
        layers: rounded.layers,
        loaded_layers: rounded.loaded_layers,
        calibration_samples: rounded.calibration_samples,
        seconds: rounded.seconds,
        accuracy: score.accuracy,
        samples: child.outcome.report.samples,
        score: score.into(),
        slurm: None,
    })
}

/// The rounding alone: the rounded FP32 model as a child variant (`variant` in the
/// summary) and its frozen encodings (`encodings`), without the quantsim. The fix chain
/// runs this as its AdaRound step.
pub(crate) fn round(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<RoundedOutcome> {
    let (variant, iterations, req) = inputs(ctx.kind)?;
    let settings = &req.settings;
    let (path, checkpoints) = {
        let ws = lock(workspace);
        let path = float_variant_path(&ws, variant, "AdaRound")?;
        (path, ws.dir().join("cache").join("adaround"))
    };
    let model = super::load_model(workspace, &path)?;
    let options = AdaroundOptions::new(settings.w_bits, iterations);
    let n = options.hyper.iterations;
    ctx.log(format!(
        "AdaRound of v{variant} for {} ({n} iterations per layer)",
        settings_label(settings)
    ));
    let outcome = adaround(
        &model,
        &req,
        &options,
        Some(&checkpoints),
        ctx.cancel,
        &|stage, d, t| ctx.progress(d, t, stage),
    )?;
    for l in &outcome.report.layers {
        match (l.mse_nearest, l.mse_adaround) {
            (Some(a), Some(b)) => ctx.log(format!(
                "{}: {} (output MSE nearest {a:.3e} → {b:.3e}, {:.1} % flipped)",
                l.layer,
                l.how,
                100.0 * l.flipped
            )),
            _ => ctx.log(format!("{}: {}", l.layer, l.how)),
        }
    }
    ctx.cancel.check()?;
    let doc = frozen_encodings(&outcome, &req, ctx.cancel, &|stage, d, t| {
        ctx.progress(d, t, stage)
    })?;
    ctx.cancel.check()?;
    let step = format!(
        "adaround{{w:{},a:{},per_channel:{},iterations:{n}}}",
        settings.w_bits, settings.a_bits, settings.per_channel
    );
    let (rounded_id, encodings_file) = lock(workspace).transaction(|ws| {
        let id = ws.add_variant(variant, &step, &outcome.model)?;
        let rel = ws.write_variant_file(id, "adaround.encodings", &doc)?;
        Ok((id, ws.dir().join(rel)))
    })?;
    Ok(RoundedOutcome {
        variant: rounded_id,
        parent: variant,
        step,
        settings: settings.clone(),
        iterations: n,
        encodings: encodings_file.display().to_string(),
        layers: outcome.report.layers,
        loaded_layers: outcome.report.loaded,
        calibration_samples: outcome.report.samples,
        seconds: outcome.report.seconds,
    })
}
