//! `qsteer quantsim MODEL --data DIR`: calibrate, simulate and score a quantized variant;
//! the result is a child of the base variant in the model's workspace.

use super::export::{print_report, warn_float_ops};
use super::{model_name, print_json, resolve_model, Common};
use clap::Args;
use qsteer::cancel::CancelToken;
use qsteer::experiment::{default_workspace_dir, now, EvalRecord, Workspace};
use qsteer::model::Model;
use qsteer::quant::export::write_export;
use qsteer::quant::import::quantsim_from_file;
use qsteer::quant::qdq::QuantMode;
use qsteer::quant::simulate::{encodings_json, quantsim, QuantsimRequest, QuantsimSettings};
use qsteer::quant::Scheme;
use qsteer::runtime::RunOptions;
use qsteer::{Error, Result};
use serde_json::json;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct QuantsimArgs {
    /// The ONNX model (default: the embedded sample model)
    pub model: Option<PathBuf>,
    /// Weight bitwidth (2–16)
    #[arg(long, default_value_t = 8)]
    pub w_bits: u8,
    /// Activation bitwidth (2–16)
    #[arg(long, default_value_t = 8)]
    pub a_bits: u8,
    /// One weight encoding per output channel (default: per tensor)
    #[arg(long)]
    pub per_channel: bool,
    /// Symmetric encodings (default: asymmetric)
    #[arg(long)]
    pub symmetric: bool,
    /// Calibration scheme: minmax, tf_enhanced, percentile[:P], mse
    #[arg(long, default_value = "tf_enhanced", value_parser = parse_scheme)]
    pub scheme: Scheme,
    /// What to quantize: wa (weights and activations), w, a
    #[arg(long, default_value = "wa", value_parser = parse_mode)]
    pub mode: QuantMode,
    /// Samples set aside for calibration when the dataset is split
    #[arg(long, default_value_t = 200)]
    pub calibration_size: usize,
    /// Seed of the calibration / evaluation split
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: one per core)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also write the simulated model to this ONNX file
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the QDQ ONNX model and the encodings (AIMET 1.0.0) into this directory
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Use these encodings (AIMET JSON, 1.0.0 or 0.6.1) instead of calibrating; the bitwidth,
    /// per-channel, symmetric, scheme and mode settings are then the file's
    #[arg(long)]
    pub encodings: Option<PathBuf>,
}

fn parse_scheme(s: &str) -> std::result::Result<Scheme, String> {
    s.parse::<Scheme>().map_err(|e| e.to_string())
}

fn parse_mode(s: &str) -> std::result::Result<QuantMode, String> {
    s.parse::<QuantMode>().map_err(|e| e.to_string())
}

pub fn run(args: QuantsimArgs, common: &Common) -> Result<()> {
    let (path, data) = resolve_model(args.model.as_ref(), common.data.as_ref())?;
    let data = data.ok_or_else(|| Error::input("quantsim needs a dataset: --data DIR"))?;
    if args.threads == Some(0) {
        return Err(Error::input("--threads must be at least 1"));
    }
    // Bad bitwidths fail before any work is done.
    qsteer::quant::QuantSpec::new(args.w_bits, args.symmetric)
        .map_err(|e| Error::input(format!("--w-bits: {e}")))?;
    qsteer::quant::QuantSpec::new(args.a_bits, args.symmetric)
        .map_err(|e| Error::input(format!("--a-bits: {e}")))?;
    let model = Model::load(&path)?;
    let mut options = RunOptions::default();
    if let Some(t) = args.threads {
        options.threads = t;
    }
    let settings = QuantsimSettings {
        w_bits: args.w_bits,
        a_bits: args.a_bits,
        per_channel: args.per_channel,
        symmetric: args.symmetric,
        scheme: args.scheme,
        mode: args.mode,
        overrides: Vec::new(),
    };
    let req = QuantsimRequest {
        data: std::path::absolute(&data).unwrap_or(data.clone()),
        calibration_size: args.calibration_size,
        seed: args.seed,
        settings: settings.clone(),
        options,
    };
    let show = std::io::stderr().is_terminal();
    let progress = move |stage: &str, done: usize, total: usize| {
        if show {
            eprint!("\r{stage} {done}/{total}   ");
        }
    };
    let outcome = match &args.encodings {
        Some(file) => quantsim_from_file(&model, file, &req, &CancelToken::new(), &progress)?,
        None => quantsim(&model, &req, &CancelToken::new(), &progress)?,
    };
    let step = match &args.encodings {
        Some(file) => format!("quantsim{{encodings:{}}}", file.display()),
        None => settings.step(),
    };
    if show {
        eprintln!();
    }
    let name = model_name(&path);
    let dir = match &common.workspace {
        Some(d) => d.clone(),
        None => default_workspace_dir(&name, &model.content_hash())?,
    };
    let mut ws = Workspace::open_or_create(&dir, &model, &name)?;
    let id = ws.add_variant(0, &step, &outcome.sim.model)?;
    ws.set_encodings(id, &encodings_json(&outcome.sim)?)?;
    let r = &outcome.report;
    ws.set_costs(id, r.macs, Some(r.params))?;
    ws.record_result(
        id,
        EvalRecord {
            dataset: req.data.display().to_string(),
            dataset_fingerprint: r.dataset_fingerprint.clone(),
            subset: "evaluation".into(),
            split: r.split.clone(),
            score: r.score.clone(),
            seconds: r.seconds,
            samples_per_second: r.samples_per_second,
            batch_size: options.batch_size,
            threads: options.threads,
            reference: None,
            when: now(),
        },
    )?;
    if let Some(out) = &args.out {
        outcome.sim.model.save(out)?;
    }
    let export = match &args.export {
        Some(dir) => {
            let (weights, acts) = (&outcome.sim.weights, &outcome.sim.activations);
            let name = format!("{name}_v{id}");
            let report = write_export(dir, &name, &model, weights, acts, Default::default())?;
            warn_float_ops(&report);
            Some(report)
        }
        None => None,
    };
    let s = &r.score;
    if common.json {
        return print_json(&json!({
            "model": path.display().to_string(),
            "dataset": data.display().to_string(),
            "settings": settings,
            "step": step,
            "variant": id,
            "workspace": dir.display().to_string(),
            "output": args.out.as_ref().map(|p| p.display().to_string()),
            "encodings": dir.join(format!("variants/{id}.encodings.json")).display().to_string(),
            "activation_points": outcome.activation_points,
            "calibration_seconds": outcome.calibration_seconds,
            "samples": r.samples,
            "accuracy": s.accuracy,
            "top5_accuracy": s.top5_accuracy,
            "seconds": r.seconds,
            "samples_per_second": r.samples_per_second,
            "export": export,
        }));
    }
    println!("{}  {step}", path.display());
    println!(
        "{} activation quantizers, calibrated in {:.2} s",
        outcome.activation_points, outcome.calibration_seconds
    );
    if let Some(a) = s.accuracy {
        println!(
            "accuracy   top-1 {:.2}% on {} evaluation samples",
            100.0 * a,
            r.samples
        );
    }
    println!("variant {id} in workspace {}", dir.display());
    if let Some(report) = &export {
        print_report(report);
    }
    Ok(())
}
