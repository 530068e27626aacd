//! The analyze job: the quantization diagnosis of a variant (scores per mode, per-layer
//! quant noise, optionally the sensitivity sweep), stored on the variant. Progress comes in
//! stages: calibration, analysis, sweep.

use super::exec::JobCtx;
use super::kind::JobKind;
use super::lock;
use super::outcome::SlurmRun;
use crate::experiment::quantsim::{float_variant_path, settings_label};
use crate::experiment::Workspace;
use crate::quant::analysis::{analyze, Analysis, AnalyzeOptions};
use crate::quant::simulate::QuantsimRequest;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// What an analyze job reports: where the analysis went and its one line. The analysis
/// itself is stored on the variant (`qsteer analyze --json` prints that).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalyzeOutcome {
    pub variant: u32,
    pub result: String,
    pub step: String,
    pub samples: usize,
    pub data_passes: usize,
    pub seconds: f64,
    /// Whether the sensitivity sweep ran.
    pub sweep: bool,
    /// The metric of the scores (none without a score).
    pub metric: Option<String>,
    pub workspace: String,
    /// Set when the job ran on a Slurm node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmRun>,
}

pub(crate) fn run(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<AnalyzeOutcome> {
    let JobKind::Analyze {
        variant,
        data,
        settings,
        calibration_size,
        seed,
        threads,
        sweep,
        ..
    } = ctx.kind
    else {
        return Err(Error::runtime(
            "the analyze job was handed another kind of job",
        ));
    };
    let mut req = QuantsimRequest::checked(data, settings, *calibration_size, *seed, *threads)?;
    req.metric = super::job_metric(workspace, ctx.kind)?;
    let (path, ws_dir) = {
        let ws = lock(workspace);
        (analyzed_model(&ws, *variant)?, ws.dir().to_path_buf())
    };
    let model = super::load_model(workspace, &path)?;
    ctx.log(format!(
        "analyze v{variant}: {} ({}){}",
        settings_label(settings),
        settings.step(),
        if *sweep {
            " with the sensitivity sweep"
        } else {
            ""
        }
    ));
    let cache_dir = ws_dir.join("cache");
    std::fs::create_dir_all(&cache_dir).map_err(|e| Error::io(&cache_dir, e))?;
    let analyze_options = AnalyzeOptions {
        sweep: *sweep,
        cache_dir: Some(cache_dir),
    };
    let (analysis, _) = analyze(
        &model,
        &req,
        &analyze_options,
        ctx.cancel,
        &|stage, d, t| ctx.progress(d, t, stage),
    )?;
    ctx.cancel.check()?;
    lock(workspace).set_analysis(*variant, &analysis)?;
    let line = summary_line(&analysis);
    ctx.log(format!("{line} → stored on variant {variant}"));
    let metric = analysis.scores.weights_and_activations.metric_name();
    Ok(AnalyzeOutcome {
        variant: *variant,
        result: line,
        step: analysis.step,
        samples: analysis.samples,
        data_passes: analysis.data_passes,
        seconds: analysis.seconds,
        sweep: *sweep,
        metric: metric.map(str::to_string),
        workspace: ws_dir.display().to_string(),
        slurm: None,
    })
}

/// The FP32 model an analysis of `variant` runs on: its own, or for a quantsim variant its
/// parent's (the analysis then explains that variant; the job passes its settings).
fn analyzed_model(ws: &Workspace, variant: u32) -> Result<std::path::PathBuf> {
    match ws.variant(variant) {
        Some(v) if v.quantsim.is_some() => {
            let parent = v.parent.ok_or_else(|| {
                Error::input(format!("variant {variant} is quantized but has no parent"))
            })?;
            float_variant_path(ws, parent, "analyze")
        }
        _ => float_variant_path(ws, variant, "analyze"),
    }
}

/// e.g. `W+A 69.75 %, W 69.25 %, A 99.25 % (FP32 99.25 %); noisiest: block5.project.conv 2.1 dB`.
pub fn summary_line(a: &Analysis) -> String {
    let pct = |s: &crate::metrics::Score| match (s.metric_name(), s.display_value()) {
        (Some("accuracy"), Some(v)) => v,
        (Some(m), Some(v)) => format!("{v} {m}"),
        _ => "-".into(),
    };
    let s = &a.scores;
    let mut line = format!(
        "W+A {}, W {}, A {} (FP32 {})",
        pct(&s.weights_and_activations),
        pct(&s.weights_only),
        pct(&s.activations_only),
        pct(&s.fp32)
    );
    let worst = a
        .layers
        .iter()
        .filter_map(|l| l.sqnr_isolated_db.map(|d| (l, d)))
        .min_by(|x, y| x.1.total_cmp(&y.1));
    if let Some((l, d)) = worst {
        line.push_str(&format!("; noisiest alone: {} {d:.1} dB", l.layer));
    }
    if let Some(advice) = &a.float_ops.advice {
        line.push_str(&format!("; float ops: {advice}"));
    }
    line
}
