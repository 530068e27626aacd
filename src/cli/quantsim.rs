//! `qsteer quantsim MODEL --data DIR`: calibrate, simulate and score a quantized variant;
//! the result is a child of the base variant in the model's workspace.

use super::executor_flags::ExecutorFlags;
use super::export::{print_report, warn_float_ops};
use super::outputs::{check_output, Output};
use super::quant_flags::QuantFlags;
use super::{
    lock, model_name, open_workspace, print_json, resolve_model, run_job, variant_path, with_model,
    Common, SharedWorkspace,
};
use clap::Args;
use qsteer::jobs::{HeadlessJob, JobKind, QuantsimOutcome};
use qsteer::model::Model;
use qsteer::quant::export::write_export_with_biases;
use qsteer::quant::import::load_model_encodings;
use qsteer::{Error, Result};
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct QuantsimArgs {
    /// The ONNX model (default: the embedded sample model)
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub quant: QuantFlags,
    /// Also write the simulated model to this ONNX file
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the QDQ ONNX model and the encodings (AIMET 1.0.0) into this directory
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Use these encodings (AIMET JSON, 1.0.0 or 0.6.1) instead of calibrating; the bitwidth,
    /// per-channel, symmetric, scheme, mode and per-layer settings are then the file's (so
    /// those flags are refused with it)
    #[arg(long, conflicts_with_all = super::quant_flags::GRID_ARGS)]
    pub encodings: Option<PathBuf>,
    #[command(flatten)]
    pub executor: ExecutorFlags,
}

/// The `--json` document of a quantsim job started from `model`: the summary with the model,
/// the simulated variant's file, and no `--out` copy or export (the command adds those).
pub(crate) fn document(
    outcome: &QuantsimOutcome,
    model: &std::path::Path,
    ws: &SharedWorkspace,
) -> Result<serde_json::Value> {
    let id = outcome.variant;
    let mut doc = with_model(json!(outcome), model);
    doc["output"] = serde_json::Value::Null;
    doc["variant_model"] = json!(variant_path(ws, id)?.display().to_string());
    doc["export"] = serde_json::Value::Null;
    Ok(doc)
}

/// The same quantsim job the app runs (recorded as a child of the base variant and in the
/// job history), then the optional copies: the simulated model and the QDQ export.
pub fn run(args: QuantsimArgs, common: &Common) -> Result<()> {
    if let Some(out) = &args.out {
        check_output("--out", out, Output::File)?;
    }
    if let Some(dir) = &args.export {
        check_output("--export", dir, Output::Dir)?;
    }
    let (path, data) = resolve_model(args.model.as_ref(), common.data.as_ref())?;
    let data = data.ok_or_else(|| Error::input("quantsim needs a dataset: --data DIR"))?;
    let settings = args.quant.settings()?;
    let options = args.quant.run_options()?;
    let model = super::open_model(&path, common, Some(&data))?;
    let (dir, ws) = open_workspace(&path, &model, common)?;
    let executor = args.executor.resolve(&mut lock(&ws))?;
    let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let kind = JobKind::Quantsim {
        variant: 0,
        data: abs(&data),
        settings: settings.clone(),
        calibration_size: args.quant.calibration_size,
        seed: args.quant.seed,
        threads: options.threads,
        encodings: args.encodings.as_deref().map(abs),
        metric: args.quant.metric.resolve(&ws)?,
    };
    let outcome: QuantsimOutcome =
        run_job(ws.clone(), HeadlessJob::on(kind, executor), common)?.try_into()?;
    let id = outcome.variant;
    let (sim_path, encodings_path) = {
        let ws = ws
            .lock()
            .map_err(|_| Error::runtime("workspace lock poisoned"))?;
        let v = ws
            .variant(id)
            .ok_or_else(|| Error::runtime(format!("variant {id} was not recorded")))?;
        (
            ws.model_path(v),
            v.encodings_file.as_ref().map(|e| ws.dir().join(e)),
        )
    };
    if let Some(out) = &args.out {
        Model::load(&sim_path)?.save(out)?;
    }
    let export = match (&args.export, &encodings_path) {
        (Some(out_dir), Some(enc)) => {
            let pins = super::lock(&ws).settings().input_shapes.clone();
            let encodings = load_model_encodings(&model, enc, pins.as_deref())?;
            let report = write_export_with_biases(
                out_dir,
                &format!("{}_v{id}", model_name(&path)),
                &model,
                &encodings.weights,
                &encodings.activations,
                &encodings.biases,
                Default::default(),
            )?;
            warn_float_ops(&report);
            Some(report)
        }
        _ => None,
    };
    if common.json {
        let mut doc = document(&outcome, &path, &ws)?;
        doc["output"] = json!(args.out.as_ref().map(|p| p.display().to_string()));
        doc["export"] = json!(export);
        return print_json(&doc);
    }
    println!(
        "{}  {}",
        path.display(),
        outcome.step.as_deref().unwrap_or("")
    );
    println!("{}", outcome.result);
    super::eval::print_fidelity(&json!(outcome), false);
    println!(
        "{} activation quantizers, {} in {:.2} s",
        outcome.activation_points,
        if args.encodings.is_some() {
            "read from the file"
        } else {
            "calibrated"
        },
        outcome.calibration_seconds
    );
    if !outcome.fp32_op_points.is_empty() {
        println!(
            "{} of them left float by --fp32-ops {}",
            outcome.fp32_op_points.len(),
            settings.fp32_ops.join(",")
        );
    }
    for k in &outcome.kept_fp32 {
        println!("kept FP32: {} ({})", k.node, k.reason);
    }
    println!("variant {id} in workspace {}", dir.display());
    if let Some(report) = &export {
        print_report(report);
    }
    Ok(())
}
