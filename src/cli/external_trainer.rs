//! `qsteer finetune MODEL --data DIR --trainer 'CMD {input} {output} …'`: fine-tune with the
//! user's own trainer command (the external path) instead of the built-in one; see the
//! README's "Fine-tuning with your own trainer".

use super::finetune::FinetuneArgs;
use super::table::text;
use super::{lock, resolve_target, Common, Target};
use clap::{Args, Parser};
use qsteer::jobs::{Executor, JobKind};
use qsteer::train::external::Template;
use qsteer::{Error, Result};
use serde_json::Value;

#[derive(Debug, Clone, Default, Args)]
pub struct ExternalTrainerArgs {
    /// Fine-tune with your own trainer: a shell command template with {input} {output} {data}
    /// {epochs} {lr} {encodings} {workdir}; of the built-in flags only --epochs, --lr,
    /// --threads and --out apply
    #[arg(long, value_name = "TEMPLATE")]
    pub trainer: Option<String>,
    /// Use the trainer template saved in the workspace (see --save-trainer)
    #[arg(long, conflicts_with = "trainer")]
    pub saved_trainer: bool,
    /// Save the --trainer template as the workspace's default (the one the app offers)
    #[arg(long, requires = "trainer")]
    pub save_trainer: bool,
}

impl ExternalTrainerArgs {
    /// Whether the external path was asked for.
    pub fn wanted(&self) -> bool {
        self.trainer.is_some() || self.saved_trainer
    }
}

/// The built-in flags' defaults, to tell which ones the user set.
#[derive(Debug, Parser)]
struct Defaults {
    #[command(flatten)]
    args: FinetuneArgs,
}

/// The built-in trainer's flags that were given: they would be silently ignored.
fn builtin_flags_given(args: &FinetuneArgs) -> Vec<&'static str> {
    let Ok(defaults) = Defaults::try_parse_from(["finetune"]) else {
        return vec![];
    };
    let mut mine = serde_json::to_value(args.settings()).unwrap_or_default();
    let mut theirs = serde_json::to_value(defaults.args.settings()).unwrap_or_default();
    let (Some(mine), Some(theirs)) = (mine.as_object_mut(), theirs.as_object_mut()) else {
        return vec![];
    };
    let flag = |field: &str| match field {
        "schedule" => "--schedule/--step-every/--gamma",
        "optimizer" => "--optimizer",
        "momentum" => "--momentum",
        "weight_decay" => "--weight-decay",
        "batch_size" => "--batch-size",
        "train_layers" => "--layers/--freeze/--train-last",
        "loss" => "--distill/--temperature",
        "early_stop_patience" => "--patience",
        "calibration_size" => "--calibration-size",
        "seed" => "--seed",
        "train_data" => "--train-data (the template's {data} is --data)",
        "augment" => "--augment-shift/--augment-flip",
        _ => "",
    };
    mine.iter()
        .filter(|(k, v)| !matches!(k.as_str(), "epochs" | "lr") && theirs.get(*k) != Some(*v))
        .map(|(k, _)| flag(k))
        .filter(|f| !f.is_empty())
        .collect()
}

/// The external-trainer job these arguments ask for, on its target and executor.
pub(crate) fn job(
    args: &FinetuneArgs,
    external: &ExternalTrainerArgs,
    common: &Common,
) -> Result<(Target, JobKind, Executor)> {
    let ignored = builtin_flags_given(args);
    if !ignored.is_empty() {
        return Err(Error::input(format!(
            "{} only apply to the built-in trainer; with --trainer your command trains (it gets \
             {{epochs}} and {{lr}}), and the evaluation split is the workspace's",
            ignored.join(", ")
        )));
    }
    // A bad template fails before the workspace is touched.
    if let Some(t) = &external.trainer {
        Template::parse(t)?;
    }
    let target = resolve_target(args.target.as_deref(), args.model.as_ref(), common)?;
    let data = target
        .data
        .clone()
        .ok_or_else(|| Error::input("finetune needs a dataset: --data DIR"))?;
    let (command, executor) = {
        let mut ws = lock(&target.workspace);
        let executor = args.executor.resolve(&mut ws)?;
        let command = match &external.trainer {
            Some(t) => t.clone(),
            None => ws.settings().trainer.clone().ok_or_else(|| {
                Error::input(format!(
                    "{}: no trainer template saved; pass --trainer TEMPLATE (with --save-trainer to keep it)",
                    ws.dir().display()
                ))
            })?,
        };
        if external.save_trainer {
            ws.set_trainer(Some(command.clone()))?;
        }
        (command, executor)
    };
    let kind = JobKind::ExternalFineTune {
        variant: target.variant,
        data: std::path::absolute(&data).unwrap_or(data),
        command,
        epochs: args.epochs,
        lr: args.lr,
        threads: args.threads,
    };
    Ok((target, kind, executor))
}

pub(crate) fn print_summary(s: &Value) {
    println!(
        "{}  {}  ({})",
        text(&s["model"]),
        text(&s["step"]),
        text(&s["command"])
    );
    for e in s["epochs"].as_array().into_iter().flatten() {
        let show = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.4}"));
        println!(
            "epoch {:>3}  loss {}  trainer metric {}",
            e["epoch"],
            show(&e["loss"]),
            show(&e["metric"])
        );
    }
    println!(
        "{} {:.2} % → {:.2} % on {} samples",
        text(&s["metric"]),
        100.0 * s["score_before"].as_f64().unwrap_or(0.0),
        100.0 * s["score_after"].as_f64().unwrap_or(0.0),
        s["samples"],
    );
    super::table::print_variant_line(s);
}
