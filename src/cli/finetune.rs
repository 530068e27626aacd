//! `qsteer finetune MODEL --data DIR [--epochs N] [--lr X] …`: fine-tune the model with
//! backpropagation (built-in trainer, CPU) as a job on its workspace; the trained model is a
//! child of the base variant, optionally copied to `--out FILE`.

use super::executor_flags::ExecutorFlags;
use super::{job_data, job_workspace, lock, print_json, run_headless_on, Common};
use clap::{Args, ValueEnum};
use qsteer::fsutil::write_atomic;
use qsteer::jobs::{Executor, JobKind};
use qsteer::train::{FineTuneSettings, Loss, Optimizer, Schedule, TrainLayers};
use qsteer::{Error, Result};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    Sgd,
    Adam,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    Constant,
    Cosine,
    Step,
}

#[derive(Debug, Args)]
pub struct FinetuneArgs {
    /// The ONNX model (default: the embedded sample model)
    pub model: Option<PathBuf>,
    /// Passes over the training subset
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Learning rate (the schedule's peak)
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Samples per training step
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adam)]
    pub optimizer: OptimizerArg,
    /// SGD momentum
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Learning-rate schedule: constant, cosine (to 0 over the run), step (×--gamma every --step-every epochs)
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    pub schedule: ScheduleArg,
    #[arg(long, default_value_t = 1)]
    pub step_every: usize,
    #[arg(long, default_value_t = 0.1)]
    pub gamma: f64,
    /// L2 weight decay
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Distil the model's own FP32 outputs (KL on logits) instead of cross-entropy with labels
    #[arg(long)]
    pub distill: bool,
    /// Distillation temperature
    #[arg(long, default_value_t = 2.0)]
    pub temperature: f64,
    /// Train only these layers (node names): LAYER,…
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<String>,
    /// Stop after this many epochs without a better evaluation score, keeping the best (0: never)
    #[arg(long, default_value_t = 0)]
    pub patience: usize,
    /// Samples of the training (calibration) subset when the dataset is split
    #[arg(long, default_value_t = 200)]
    pub calibration_size: usize,
    /// Seed of the split and of the batch order
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads of the scoring runs (0: one per core)
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Also write the trained model to this ONNX file
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Fine-tune this variant of the workspace instead of MODEL (its base variant 0)
    #[arg(long)]
    pub variant: Option<u32>,
    #[command(flatten)]
    pub executor: ExecutorFlags,
}

impl FinetuneArgs {
    fn settings(&self) -> FineTuneSettings {
        FineTuneSettings {
            epochs: self.epochs,
            lr: self.lr,
            schedule: match self.schedule {
                ScheduleArg::Constant => Schedule::Constant,
                ScheduleArg::Cosine => Schedule::Cosine,
                ScheduleArg::Step => Schedule::Step {
                    every: self.step_every,
                    gamma: self.gamma,
                },
            },
            optimizer: match self.optimizer {
                OptimizerArg::Sgd => Optimizer::Sgd,
                OptimizerArg::Adam => Optimizer::Adam,
            },
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            batch_size: self.batch_size,
            train_layers: if self.layers.is_empty() {
                TrainLayers::All
            } else {
                TrainLayers::Only(self.layers.clone())
            },
            loss: if self.distill {
                Loss::Distill {
                    temperature: self.temperature,
                }
            } else {
                Loss::CrossEntropy
            },
            early_stop_patience: self.patience,
            calibration_size: self.calibration_size,
            seed: self.seed,
        }
    }
}

/// The job these arguments ask for, on its workspace and executor; the model file is
/// the trained variant's parent.
pub(crate) fn job(
    args: &FinetuneArgs,
    common: &Common,
) -> Result<(PathBuf, super::SharedWorkspace, JobKind, Executor)> {
    let data = job_data(args.model.as_ref(), common, "finetune")?;
    let settings = args.settings();
    settings.check()?;
    let (path, ws, variant) = job_workspace(args.model.as_ref(), args.variant, common)?;
    let executor = args.executor.executor(&lock(&ws).settings().slurm)?;
    let kind = JobKind::FineTune {
        variant,
        data: std::path::absolute(&data).unwrap_or(data),
        settings,
        threads: args.threads,
    };
    Ok((path, ws, kind, executor))
}

pub fn run(args: FinetuneArgs, common: &Common) -> Result<()> {
    let (path, ws, kind, executor) = job(&args, common)?;
    let mut summary = run_headless_on(ws, kind, common, executor)?;
    if let Some(out) = &args.out {
        let child = PathBuf::from(text(&summary["output"]));
        let bytes = std::fs::read(&child).map_err(|e| Error::io(&child, e))?;
        write_atomic(out, &bytes)?;
        summary["variant_model"] = summary["output"].clone();
        summary["output"] = json!(out.display().to_string());
    }
    summary["model"] = json!(path.display().to_string());
    if common.json {
        return print_json(&summary);
    }
    print_table(&summary);
    Ok(())
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn print_table(s: &Value) {
    println!("{}  {}", text(&s["model"]), text(&s["step"]));
    for e in s["epochs"].as_array().into_iter().flatten() {
        println!(
            "epoch {:>3}  loss {:.4}  {} {:.4}  {:.1} s",
            e["epoch"],
            e["loss"].as_f64().unwrap_or(f64::NAN),
            text(&s["metric"]),
            e["score"].as_f64().unwrap_or(f64::NAN),
            e["seconds"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "{} {:.2} % → {:.2} % on {} samples; {} trained params",
        text(&s["metric"]),
        100.0 * s["score_before"].as_f64().unwrap_or(0.0),
        100.0 * s["score_after"].as_f64().unwrap_or(0.0),
        s["samples"],
        s["trained_params"]
    );
    println!(
        "variant {} in workspace {}; model {}; {:.1} s",
        s["variant"],
        text(&s["workspace"]),
        text(&s["output"]),
        s["seconds"].as_f64().unwrap_or(0.0)
    );
}
