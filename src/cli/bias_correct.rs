//! `qsteer bias-correct MODEL --data DIR`: correct the model's biases for one set of quantsim
//! settings; the corrected model is a child of the base variant and its quantsim a grandchild.

use super::executor_flags::ExecutorFlags;
use super::outputs::{check_output, Output};
use super::quant_flags::QuantFlags;
use super::{
    lock, open_workspace, print_json, resolve_model, run_job, variant_path, with_model, Common,
    SharedWorkspace,
};
use clap::Args;
use qsteer::fixes::bias_correction::BcMode;
use qsteer::jobs::{BiasCorrectOutcome, HeadlessJob, JobKind};
use qsteer::model::Model;
use qsteer::{Error, Result};
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct BiasCorrectArgs {
    /// The ONNX model (default: the embedded sample model)
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub quant: QuantFlags,
    /// empirical (calibration data, layer by layer), analytical (BN statistics, no data) or
    /// hybrid (analytical where BN statistics exist)
    #[arg(long, default_value = "hybrid", value_parser = parse_mode)]
    pub bc_mode: BcMode,
    /// Also write the corrected FP32 model to this ONNX file
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub executor: ExecutorFlags,
}

/// The `--json` document of a bias-correction job started from `model`: the summary with
/// the model, the corrected variant's file as `output` (the command's `--out` replaces it)
/// and the workspace.
pub(crate) fn document(
    outcome: &BiasCorrectOutcome,
    model: &std::path::Path,
    ws: &SharedWorkspace,
) -> Result<serde_json::Value> {
    let mut doc = with_model(json!(outcome), model);
    let corrected = variant_path(ws, outcome.corrected_variant)?;
    doc["output"] = json!(corrected.display().to_string());
    doc["workspace"] = json!(lock(ws).dir().display().to_string());
    Ok(doc)
}

fn parse_mode(s: &str) -> std::result::Result<BcMode, String> {
    s.parse::<BcMode>().map_err(|e| e.to_string())
}

pub fn run(args: BiasCorrectArgs, common: &Common) -> Result<()> {
    if let Some(out) = &args.out {
        check_output("--out", out, Output::File)?;
    }
    let (path, data) = resolve_model(args.model.as_ref(), common.data.as_ref())?;
    let data = data.ok_or_else(|| Error::input("bias-correct needs a dataset: --data DIR"))?;
    let settings = args.quant.settings()?;
    let options = args.quant.run_options()?;
    let model = super::open_model(&path, common, Some(&data))?;
    let (dir, ws) = open_workspace(&path, &model, common)?;
    let executor = args.executor.resolve(&mut lock(&ws))?;
    let kind = JobKind::BiasCorrect {
        variant: 0,
        data: std::path::absolute(&data).unwrap_or(data.clone()),
        settings,
        mode: args.bc_mode,
        calibration_size: args.quant.calibration_size,
        seed: args.quant.seed,
        threads: options.threads,
        metric: args.quant.metric.resolve(&ws)?,
    };
    let outcome: BiasCorrectOutcome =
        run_job(ws.clone(), HeadlessJob::on(kind, executor), common)?.try_into()?;
    let corrected = outcome.corrected_variant;
    let corrected_path = variant_path(&ws, corrected)?;
    if let Some(out) = &args.out {
        Model::load(&corrected_path)?.save(out)?;
    }
    let output = args.out.clone().unwrap_or(corrected_path);
    if common.json {
        let mut doc = document(&outcome, &path, &ws)?;
        doc["output"] = json!(output.display().to_string());
        return print_json(&doc);
    }
    println!("{}", outcome.result);
    for l in &outcome.layers {
        println!("  {:<28} {:<12} max |Δb| {:.4}", l.layer, l.how, l.max_abs);
    }
    println!(
        "corrected model: variant {corrected} ({}); its quantsim: variant {} in workspace {}",
        output.display(),
        outcome.variant,
        dir.display()
    );
    Ok(())
}
