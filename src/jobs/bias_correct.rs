//! The bias-correction job: correct an FP32 variant's biases for one set of quantsim
//! settings (child variant), then simulate the corrected model at those settings
//! (grandchild), so the user sees the corrected score at once.

use super::exec::JobCtx;
use super::kind::JobKind;
use super::lock;
use crate::experiment::quantsim::{float_variant_path, quantsim_child, settings_label};
use crate::experiment::Workspace;
use crate::fixes::bias_correction::{bias_correct, BcMode};
use crate::quant::simulate::QuantsimRequest;
use crate::{Error, Result};
use serde_json::json;
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

pub(crate) fn run(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<serde_json::Value> {
    let corrected = correct(ctx, workspace)?;
    let (variant, mode, mut req) = inputs(ctx.kind)?;
    req.metric = super::job_metric(workspace, ctx.kind)?;
    let settings = &req.settings;
    let corrected_id = crate::jobs::summary_variant(&corrected, "variant")
        .ok_or_else(|| Error::runtime("bias correction recorded no variant"))?;
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
    let mut doc = json!({
        "variant": child.variant,
        "corrected_variant": corrected_id,
        "parent": variant,
        "result": line,
        "mode": mode,
        "settings": settings,
        "accuracy": child.outcome.report.score.accuracy,
        "agreement": child.outcome.report.score.agreement,
        "layers": corrected["layers"],
        "simulated_passes": corrected["simulated_passes"],
        "calibration_samples": corrected["calibration_samples"],
        "samples": child.outcome.report.samples,
    });
    child.outcome.report.score.add_json_fields(&mut doc);
    Ok(doc)
}

/// The correction alone: the corrected FP32 model as a child variant (`variant` in the
/// summary), without its quantsim. The fix chain runs this as its bias-correction step.
pub(crate) fn correct(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<serde_json::Value> {
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
    Ok(json!({
        "variant": corrected_id,
        "parent": variant,
        "step": step,
        "mode": mode,
        "settings": settings,
        "layers": report.layers,
        "simulated_passes": report.simulated_passes,
        "calibration_samples": report.samples,
    }))
}
