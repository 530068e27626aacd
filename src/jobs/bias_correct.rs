//! The bias-correction job: correct an FP32 variant's biases for one set of quantsim
//! settings (child variant), then simulate the corrected model at those settings
//! (grandchild), so the user sees the corrected score at once.

use super::exec::JobCtx;
use super::kind::JobKind;
use super::lock;
use crate::experiment::quantsim::{
    float_variant_path, quantsim_child, result_line, settings_label,
};
use crate::experiment::Workspace;
use crate::fixes::bias_correction::bias_correct;
use crate::model::Model;
use crate::quant::simulate::QuantsimRequest;
use crate::{Error, Result};
use serde_json::json;
use std::sync::Mutex;

pub(crate) fn run(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<serde_json::Value> {
    let JobKind::BiasCorrect {
        variant,
        data,
        settings,
        mode,
        calibration_size,
        seed,
        threads,
    } = ctx.kind
    else {
        return Err(Error::runtime(
            "the bias-correction job was handed another kind of job",
        ));
    };
    let req = QuantsimRequest::checked(data, settings, *calibration_size, *seed, *threads)?;
    let (path, bn_stats) = {
        let ws = lock(workspace);
        let path = float_variant_path(&ws, *variant, "bias correction")?;
        (path, ws.bn_stats(*variant)?.unwrap_or_default())
    };
    let model = Model::load(&path)?;
    ctx.log(format!(
        "bias correction ({mode}) of v{variant} for {}",
        settings_label(settings)
    ));
    let (corrected, report) = bias_correct(
        &model,
        &req,
        *mode,
        &bn_stats,
        ctx.cancel,
        &|stage, d, t| ctx.progress(d, t, stage),
    )?;
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
    let corrected_id = {
        let mut ws = lock(workspace);
        let id = ws.add_variant(*variant, &step, &corrected)?;
        // The same statistics describe the corrected model's BN outputs.
        if !bn_stats.is_empty() {
            ws.set_bn_stats(id, &bn_stats)?;
        }
        id
    };
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
    let parent_score = lock(workspace)
        .variant(*variant)
        .and_then(|v| v.latest_result(&child.outcome.report.dataset_fingerprint))
        .map(|r| r.score.clone());
    let line = format!(
        "bias correction ({mode}) → {}",
        result_line(settings, &child.outcome.report.score, parent_score.as_ref())
    );
    ctx.log(format!("{line} → variant {}", child.variant));
    Ok(json!({
        "variant": child.variant,
        "corrected_variant": corrected_id,
        "parent": variant,
        "result": line,
        "mode": mode,
        "settings": settings,
        "accuracy": child.outcome.report.score.accuracy,
        "agreement": child.outcome.report.score.agreement,
        "layers": report.layers,
        "simulated_passes": report.simulated_passes,
        "samples": report.samples,
    }))
}
