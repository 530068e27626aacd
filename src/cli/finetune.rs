//! `qsteer finetune VARIANT_OR_MODEL --data DIR [--epochs N] [--lr X] …`: fine-tune a
//! variant with backpropagation (built-in trainer, CPU) as a job on its workspace; the
//! trained model is a child variant, optionally copied to `--out FILE`. With `--qat`, the
//! training is quantization-aware and the result a new quantsim variant.

use super::executor_flags::ExecutorFlags;
use super::quant_flags::GridFlags;
use super::table::text;
use super::{finish_child_job, lock, resolve_target, run_job, variant_id, Common, Target};
use clap::{Args, ValueEnum};
use qsteer::jobs::{Executor, HeadlessJob, JobKind};
use qsteer::train::{Augment, FineTuneSettings, Loss, Optimizer, Schedule, TrainLayers};
use qsteer::{Error, Result};
use serde_json::Value;
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
    /// A variant id in the workspace, or an ONNX model file (default: the embedded sample)
    #[arg(value_name = "VARIANT_OR_MODEL")]
    pub target: Option<String>,
    /// For a variant id: the model whose default workspace holds it (default: the embedded
    /// sample; --workspace DIR names the workspace directly)
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Quantization-aware training, from a quantsim variant id of the workspace, an AIMET
    /// encodings file (simulated first, as `quantsim --encodings`), or, given alone, a new
    /// quantsim of VARIANT_OR_MODEL with the quantsim flags below; the result is a new
    /// quantsim variant
    #[arg(long, value_name = "VARIANT_OR_ENCODINGS", num_args = 0..=1, default_missing_value = "")]
    pub qat: Option<String>,
    #[command(flatten)]
    pub quant: GridFlags,
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
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["freeze", "train_last"])]
    pub layers: Vec<String>,
    /// Train every layer but these (node names): LAYER,…
    #[arg(long, value_delimiter = ',', conflicts_with = "train_last")]
    pub freeze: Vec<String>,
    /// Train only the last N layers with weights (1: the classifier head)
    #[arg(long, value_name = "N")]
    pub train_last: Option<usize>,
    /// Stop after this many epochs without a better evaluation score, keeping the best (0: never)
    #[arg(long, default_value_t = 0)]
    pub patience: usize,
    /// The training set (a dataset directory, used whole). Without it training uses the
    /// calibration subset of --data, and the result says so
    #[arg(long, value_name = "DIR")]
    pub train_data: Option<PathBuf>,
    /// Augment training images: shift each by up to PX pixels (zero fill; 0: off)
    #[arg(long, value_name = "PX", default_value_t = 0)]
    pub augment_shift: usize,
    /// Augment training images: mirror half of them left to right
    #[arg(long)]
    pub augment_flip: bool,
    /// Samples of the calibration subset when the dataset is split (the training samples
    /// when no --train-data is given)
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
    #[command(flatten)]
    pub executor: ExecutorFlags,
    #[command(flatten)]
    pub external: super::external_trainer::ExternalTrainerArgs,
}

impl FinetuneArgs {
    pub(crate) fn settings(&self) -> FineTuneSettings {
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
            train_layers: match self.train_last {
                Some(n) => TrainLayers::Last(n),
                None if !self.layers.is_empty() => TrainLayers::Only(self.layers.clone()),
                None if !self.freeze.is_empty() => TrainLayers::Except(self.freeze.clone()),
                None => TrainLayers::All,
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
            train_data: self
                .train_data
                .as_ref()
                .map(|d| std::path::absolute(d).unwrap_or(d.clone())),
            augment: Augment {
                shift: self.augment_shift,
                flip: self.augment_flip,
            },
        }
    }
}

/// The job these arguments ask for (a QAT from quantsim flags runs its quantsim first), on
/// its target and executor.
pub(crate) fn job(args: &FinetuneArgs, common: &Common) -> Result<(Target, JobKind, Executor)> {
    if args.external.wanted() {
        return super::external_trainer::job(args, &args.external, common);
    }
    let settings = args.settings();
    settings.check()?;
    if let Some(dir) = &settings.train_data {
        if !dir.exists() {
            return Err(Error::input(format!(
                "--train-data {}: no such directory",
                dir.display()
            )));
        }
    }
    let target = resolve_target(args.target.as_deref(), args.model.as_ref(), common)?;
    let executor = args.executor.resolve(&mut lock(&target.workspace))?;
    let data = target
        .data
        .clone()
        .ok_or_else(|| Error::input("finetune needs a dataset: --data DIR"))?;
    let data = std::path::absolute(&data).unwrap_or(data);
    let kind = match &args.qat {
        None => JobKind::FineTune {
            variant: target.variant,
            data,
            settings,
            threads: args.threads,
        },
        Some(from) => JobKind::Qat {
            variant: qat_start(args, from, &target, &data, common)?,
            data,
            settings,
            threads: args.threads,
        },
    };
    Ok((target, kind, executor))
}

pub fn run(args: FinetuneArgs, common: &Common) -> Result<()> {
    if let Some(out) = &args.out {
        super::outputs::check_output("--out", out, super::outputs::Output::File)?;
    }
    let (target, kind, executor) = job(&args, common)?;
    let external = matches!(kind, JobKind::ExternalFineTune { .. });
    let mut summary = run_job(
        target.workspace.clone(),
        HeadlessJob::on(kind, executor),
        common,
    )?
    .to_json();
    if external {
        summary["trainer_saved"] = serde_json::json!(args.external.save_trainer);
    }
    let table = if external {
        super::external_trainer::print_summary
    } else {
        print_table
    };
    finish_child_job(summary, args.out.as_ref(), &target.model, common, table)
}

/// The quantsim variant QAT starts from: `--qat N`, or a quantsim of the target (from an
/// encodings file, or calibrated with the quantsim flags) run first as its own job.
fn qat_start(
    args: &FinetuneArgs,
    from: &str,
    target: &Target,
    data: &std::path::Path,
    common: &Common,
) -> Result<u32> {
    if let Some(id) = variant_id(from) {
        return Ok(id);
    }
    let encodings = if from.is_empty() {
        None
    } else {
        let file = PathBuf::from(from);
        if !file.is_file() {
            return Err(Error::input(format!(
                "--qat {from}: neither a variant id nor an encodings file"
            )));
        }
        Some(std::path::absolute(&file).unwrap_or(file))
    };
    let kind = JobKind::Quantsim {
        variant: target.variant,
        data: data.to_path_buf(),
        settings: args.quant.settings()?,
        calibration_size: args.calibration_size,
        seed: args.seed,
        threads: args.threads,
        encodings,
        metric: None,
    };
    let sim: qsteer::jobs::QuantsimOutcome =
        run_job(target.workspace.clone(), kind, common)?.try_into()?;
    eprintln!(
        "quantsim before QAT: variant {}, {}",
        sim.variant, sim.result
    );
    Ok(sim.variant)
}

fn print_table(s: &Value) {
    println!("{}  {}", text(&s["model"]), text(&s["step"]));
    if let Some(from) = s["quantsim_variant"].as_u64() {
        println!(
            "QAT of quantsim variant {from}; weight encodings {} after training; encodings {}",
            text(&s["weight_encodings"]),
            text(&s["encodings"])
        );
    }
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
    let train = &s["samples_used"]["train"];
    println!(
        "trained on {} {} samples of {}",
        train["samples"],
        text(&train["subset"]),
        text(&train["dataset"])
    );
    for note in s["notes"].as_array().into_iter().flatten() {
        println!("note: {}", text(note));
    }
    println!(
        "{} {:.2} % → {:.2} % on {} samples; {} trained params",
        text(&s["metric"]),
        100.0 * s["score_before"].as_f64().unwrap_or(0.0),
        100.0 * s["score_after"].as_f64().unwrap_or(0.0),
        s["samples"],
        s["trained_params"]
    );
    super::table::print_variant_line(s);
}
