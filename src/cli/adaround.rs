//! `qsteer adaround MODEL --data DIR`: learn the rounding of the model's weights for one set
//! of quantsim settings; the rounded model is a child of the base variant and its quantsim
//! (with the frozen encodings) a grandchild. `--out FILE` also writes the rounded model and
//! its encodings as `FILE.encodings.json`.

use super::executor_flags::ExecutorFlags;
use super::outputs::{check_output, Output};
use super::quant_flags::QuantFlags;
use super::{
    lock, open_workspace, print_json, resolve_model, run_job, variant_path, with_model, Common,
    SharedWorkspace,
};
use clap::Args;
use qsteer::jobs::{AdaroundOutcome, HeadlessJob, JobKind};
use qsteer::model::Model;
use qsteer::{Error, Result};
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct AdaroundArgs {
    /// The ONNX model (default: the embedded sample model)
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub quant: QuantFlags,
    /// Optimisation steps per layer (default AIMET's: 10000, 15000 below 8-bit weights)
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Also write the rounded FP32 model to this ONNX file (and FILE.encodings.json)
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub executor: ExecutorFlags,
}

/// The `--json` document of an AdaRound job started from `model`: the summary with the
/// model, the rounded variant's file as `output` (the command's `--out` replaces it and the
/// encodings) and the workspace.
pub(crate) fn document(
    outcome: &AdaroundOutcome,
    model: &std::path::Path,
    ws: &SharedWorkspace,
) -> Result<serde_json::Value> {
    let mut doc = with_model(json!(outcome), model);
    let rounded = variant_path(ws, outcome.rounded_variant)?;
    doc["output"] = json!(rounded.display().to_string());
    doc["workspace"] = json!(lock(ws).dir().display().to_string());
    Ok(doc)
}

pub fn run(args: AdaroundArgs, common: &Common) -> Result<()> {
    if let Some(out) = &args.out {
        check_output("--out", out, Output::File)?;
        check_output("--out", &encodings_file(out), Output::File)?;
    }
    let (path, data) = resolve_model(args.model.as_ref(), common.data.as_ref())?;
    let data = data.ok_or_else(|| Error::input("adaround needs a dataset: --data DIR"))?;
    if args.iterations == Some(0) {
        return Err(Error::input("--iterations must be at least 1"));
    }
    let settings = args.quant.settings()?;
    let options = args.quant.run_options()?;
    let model = super::open_model(&path, common, Some(&data))?;
    let (dir, ws) = open_workspace(&path, &model, common)?;
    let executor = args.executor.resolve(&mut lock(&ws))?;
    let kind = JobKind::AdaRound {
        variant: 0,
        data: std::path::absolute(&data).unwrap_or(data.clone()),
        settings,
        iterations: args.iterations,
        calibration_size: args.quant.calibration_size,
        seed: args.quant.seed,
        threads: options.threads,
        metric: args.quant.metric.resolve(&ws)?,
    };
    let outcome: AdaroundOutcome =
        run_job(ws.clone(), HeadlessJob::on(kind, executor), common)?.try_into()?;
    let rounded = outcome.rounded_variant;
    let rounded_path = variant_path(&ws, rounded)?;
    let mut encodings_out = PathBuf::from(&outcome.encodings);
    if let Some(out) = &args.out {
        Model::load(&rounded_path)?.save(out)?;
        let file = encodings_file(out);
        let bytes = std::fs::read(&encodings_out).map_err(|e| Error::io(&encodings_out, e))?;
        qsteer::fsutil::write_atomic(&file, &bytes)?;
        encodings_out = file;
    }
    let output = args.out.clone().unwrap_or(rounded_path);
    if common.json {
        let mut doc = document(&outcome, &path, &ws)?;
        doc["output"] = json!(output.display().to_string());
        doc["encodings"] = json!(encodings_out.display().to_string());
        return print_json(&doc);
    }
    println!("{}", outcome.result);
    let mse = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3e}"));
    for l in &outcome.layers {
        println!(
            "  {:<28} {:<12} MSE {} → {}",
            l.layer,
            l.how,
            mse(l.mse_nearest),
            mse(l.mse_adaround),
        );
    }
    println!(
        "rounded model: variant {rounded} ({}); its quantsim: variant {} in workspace {}",
        output.display(),
        outcome.variant,
        dir.display()
    );
    Ok(())
}

/// Where `--out FILE` puts the encodings: `FILE.encodings.json`.
fn encodings_file(out: &std::path::Path) -> PathBuf {
    PathBuf::from(format!("{}.encodings.json", out.display()))
}
