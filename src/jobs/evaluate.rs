//! The evaluate job: score a workspace variant on a dataset (and its fidelity to a
//! reference variant), then record the result on the variant.

use super::exec::JobCtx;
use super::kind::JobKind;
use super::lock;
use super::outcome::{ScoreFields, SlurmRun};
use crate::data::SplitInfo;
use crate::experiment::evaluate::{evaluate, EvalReport, EvalRequest};
use crate::experiment::{save_predictions, Predictions, Workspace};
use crate::metrics::argmax_rows;
use crate::runtime::RunOptions;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

pub(crate) fn run(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<EvaluateOutcome> {
    let JobKind::Evaluate {
        variant,
        data,
        subset,
        batch_size,
        threads,
        calibration_size,
        seed,
        reference,
        reference_model,
        save_outputs,
        metric,
    } = ctx.kind
    else {
        return Err(Error::runtime(
            "the evaluate job was handed another kind of job",
        ));
    };
    if *batch_size == 0 {
        return Err(Error::input("evaluate: the batch size must be at least 1"));
    }
    // Paths only: the workspace lock is not held while the model runs.
    let (model_path, reference_path, ws_dir, metric) = {
        let ws = lock(workspace);
        let metric = ws.metric_for(metric.as_ref());
        let path_of = |id: u32| {
            ws.variant(id)
                .map(|v| ws.model_path(v))
                .ok_or_else(|| Error::input(format!("{}: no variant {id}", ws.dir().display())))
        };
        let model = path_of(*variant)?;
        let reference = match reference {
            Some(r) => Some(path_of(*r)?),
            None => reference_model.clone(),
        };
        (model, reference, ws.dir().to_path_buf(), metric)
    };
    metric.validate()?;
    ctx.cancel.check()?;
    let mut options = RunOptions {
        batch_size: *batch_size,
        ..RunOptions::default()
    };
    if *threads > 0 {
        options.threads = *threads;
    }
    ctx.log(format!(
        "evaluating v{variant} on {} ({} subset), batch {}, {} threads{}",
        data.display(),
        subset.name(),
        options.batch_size,
        options.threads,
        reference.map_or(String::new(), |r| format!(", fidelity to v{r}")),
    ));
    let model = super::load_model(workspace, &model_path)?;
    let req = EvalRequest {
        model: model_path.clone(),
        data: data.clone(),
        subset: *subset,
        reference: reference_path,
        options,
        calibration_size: *calibration_size,
        seed: *seed,
        metric: metric.clone(),
    };
    if metric != crate::metrics::MetricSpec::default() {
        ctx.log(format!("metric: {}", metric.label()));
    }
    let report = evaluate(&req, &model, ctx.cancel, &|done, total| {
        ctx.progress(done, total, "samples")
    })?;
    // Cancelled after the last batch: still nothing is recorded.
    ctx.cancel.check()?;
    if let Some(out) = save_outputs {
        crate::data::write_npy_f32(out, &report.outputs)?;
    }
    if let Some(f) = &report.fallback {
        ctx.log(format!("note: {f}"));
    }
    let fidelity = reference.is_some() || reference_model.is_some();
    if report.has_labels && report.score.accuracy.is_none() {
        ctx.log(format!(
            "note: labels give one class per sample and need [N, C] outputs; the model's first \
             output is {:?}{}",
            report.outputs.shape(),
            if fidelity {
                ""
            } else {
                ": score it against a reference (--reference) or with --metric external"
            }
        ));
    } else if !report.has_labels && !fidelity && report.score.value().is_none() {
        ctx.log("note: the dataset has no labels and no reference was given: throughput only");
    }
    let record = report.record(
        data,
        *subset,
        options,
        reference
            .map(|r| r.to_string())
            .or_else(|| reference_model.as_ref().map(|p| p.display().to_string())),
    );
    {
        let mut ws = lock(workspace);
        ws.set_costs(*variant, report.macs, Some(report.params))?;
        ws.record_result(*variant, record)?;
    }
    // A cache for the A/B comparison: losing it costs a rerun, not the job.
    if let Err(e) = save_top1(&ws_dir, *variant, &report) {
        ctx.log(format!("warning: predictions not cached: {e}"));
    }
    ctx.log(result_line(&report));
    let s = &report.score;
    Ok(EvaluateOutcome {
        variant: *variant,
        accuracy: s.accuracy,
        top5_accuracy: s.top5_accuracy,
        samples: report.samples,
        seconds: report.seconds,
        samples_per_second: report.samples_per_second,
        reference: *reference,
        reference_model: reference_model.as_ref().map(|p| p.display().to_string()),
        model: model_path.display().to_string(),
        dataset: data.display().to_string(),
        subset: subset.name().to_string(),
        split: report.split,
        batch_size: options.batch_size,
        threads: options.threads,
        macs: report.macs,
        params: report.params,
        workspace: ws_dir.display().to_string(),
        output: save_outputs.as_ref().map(|p| p.display().to_string()),
        score: s.into(),
        slurm: None,
    })
}

/// What an evaluate job reports (`qsteer eval --json` adds nothing to it).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EvaluateOutcome {
    /// The variant scored.
    pub variant: u32,
    pub accuracy: Option<f64>,
    pub top5_accuracy: Option<f64>,
    pub samples: usize,
    pub seconds: f64,
    pub samples_per_second: f64,
    /// The reference variant fidelity was scored against.
    pub reference: Option<u32>,
    /// The reference model file (`--reference FILE`).
    pub reference_model: Option<String>,
    /// The scored model file.
    pub model: String,
    pub dataset: String,
    /// `evaluation`, `calibration` or `all`.
    pub subset: String,
    pub split: Option<SplitInfo>,
    pub batch_size: usize,
    pub threads: usize,
    /// MACs per sample (None if a dim stayed symbolic).
    pub macs: Option<u64>,
    pub params: u64,
    pub workspace: String,
    /// The `.npy` file of the first output per sample, if asked for.
    pub output: Option<String>,
    #[serde(flatten)]
    pub score: ScoreFields,
    /// Set when the job ran on a Slurm node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmRun>,
}

/// Cache the top-1 predictions for the A/B comparison.
pub(crate) fn save_top1(ws_dir: &std::path::Path, variant: u32, r: &EvalReport) -> Result<()> {
    let n = r.outputs.shape().first().copied().unwrap_or(0);
    let c = r.outputs.len().checked_div(n).unwrap_or(0);
    let rows = r
        .outputs
        .to_shape((n, c))
        .map_err(|e| Error::runtime(format!("model output: {e}")))?;
    let p = Predictions {
        variant,
        dataset_fingerprint: r.dataset_fingerprint.clone(),
        predictions: argmax_rows(rows.view())
            .into_iter()
            .map(|k| k as i64)
            .collect(),
        labels: r.labels.clone(),
    };
    save_predictions(ws_dir, &p)
}

/// The result for the job's log, e.g.
/// `accuracy 97.50% (top-5 99.75%), 400 samples in 0.41 s (975.6 samples/s)`.
fn result_line(r: &EvalReport) -> String {
    let pct = |v: f64| format!("{:.2}%", 100.0 * v);
    let mut parts = Vec::new();
    if let Some(a) = r.score.accuracy {
        let top5 = r
            .score
            .top5_accuracy
            .map_or(String::new(), |t| format!(" (top-5 {})", pct(t)));
        parts.push(format!("accuracy {}{top5}", pct(a)));
    }
    if let Some(f) = r.score.fidelity_text() {
        parts.push(f);
    }
    parts.push(format!(
        "{} samples in {:.2} s ({:.1} samples/s)",
        r.samples, r.seconds, r.samples_per_second
    ));
    parts.join(", ")
}
