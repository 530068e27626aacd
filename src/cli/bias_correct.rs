//! `qsteer bias-correct MODEL --data DIR`: correct the model's biases for one set of quantsim
//! settings; the corrected model is a child of the base variant and its quantsim a grandchild.

use super::outputs::{check_output, Output};
use super::quant_flags::QuantFlags;
use super::{open_workspace, print_json, resolve_model, run_headless, Common};
use clap::Args;
use qsteer::fixes::bias_correction::BcMode;
use qsteer::jobs::JobKind;
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
    let model = Model::load(&path)?;
    let (dir, ws) = open_workspace(&path, &model, common)?;
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
    let mut summary = run_headless(ws.clone(), kind, common)?;
    let corrected = qsteer::jobs::summary_variant(&summary, "corrected_variant")
        .ok_or_else(|| Error::runtime("the job reported no corrected variant"))?;
    let corrected_path = {
        let ws = ws
            .lock()
            .map_err(|_| Error::runtime("workspace lock poisoned"))?;
        let v = ws
            .variant(corrected)
            .ok_or_else(|| Error::runtime(format!("variant {corrected} was not recorded")))?;
        ws.model_path(v)
    };
    if let Some(out) = &args.out {
        Model::load(&corrected_path)?.save(out)?;
    }
    let output = args.out.clone().unwrap_or(corrected_path);
    if common.json {
        if let Some(obj) = summary.as_object_mut() {
            obj.insert("model".into(), json!(path.display().to_string()));
            obj.insert("output".into(), json!(output.display().to_string()));
            obj.insert("workspace".into(), json!(dir.display().to_string()));
        }
        return print_json(&summary);
    }
    println!("{}", summary["result"].as_str().unwrap_or(""));
    for l in summary["layers"].as_array().into_iter().flatten() {
        println!(
            "  {:<28} {:<12} max |Δb| {:.4}",
            l["layer"].as_str().unwrap_or(""),
            l["how"].as_str().unwrap_or(""),
            l["max_abs"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "corrected model: variant {corrected} ({}); its quantsim: variant {} in workspace {}",
        output.display(),
        summary["variant"],
        dir.display()
    );
    Ok(())
}
