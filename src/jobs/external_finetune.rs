//! The external fine-tune job (DESIGN.md §3, path 3): hand a variant's model to the user's
//! trainer command, turn its JSON-lines stdout into progress, `train_step` partials and log
//! lines, then check the model it wrote, score it with tract on the evaluation subset and
//! keep it as a child variant.
//!
//! A quantized (quantsim) variant goes to the trainer as its QDQ export plus its encodings
//! file; the trainer writes the trained FLOAT model (the graph without Q/DQ, as AIMET's
//! export does) and optionally new encodings beside it (`output.encodings.json`). The float
//! model becomes a child of the quantsim variant's float parent and its quantsim, with the
//! new encodings or else the variant's own settings (or its encodings when it has no
//! settings), a child of that.

use super::exec::JobCtx;
use super::kind::JobKind;
use super::lock;
use super::outcome::SlurmRun;
use crate::compress::scorer::ModelScorer;
use crate::experiment::evaluate::{select_samples, Subset};
use crate::experiment::export::{export_source, export_variant};
use crate::experiment::quantsim::quantsim_child;
use crate::experiment::{now, EvalRecord, Workspace};
use crate::metrics::Score;
use crate::model::Model;
use crate::quant::encodings_file::EncodingsVersion;
use crate::quant::simulate::QuantsimRequest;
use crate::runtime::RunOptions;
use crate::train::external::process::TrainerOutcome;
use crate::train::external::{
    parse_line, run_trainer, Line, Template, TemplateValues, TrainerLine, TrainerRun,
};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Where the trainer writes its model, in the work directory.
const OUTPUT: &str = "output.onnx";
/// New encodings a trainer of a quantized variant may write beside its model.
const OUTPUT_ENCODINGS: &str = "output.encodings.json";

/// What the trainer gets and what its result is compared with.
struct Source {
    /// `{input}`: the variant's model, or a quantized variant's QDQ export.
    input: PathBuf,
    /// `{encodings}`: a quantized variant's encodings file.
    encodings: Option<PathBuf>,
    /// The float model the output must match (the variant, or a quantized one's parent).
    float_model: PathBuf,
    float_variant: u32,
    /// The variant's own model, for the score before training.
    variant_model: PathBuf,
    quantized: bool,
}

/// What an external-trainer fine-tune job reports (the core of `qsteer finetune --trainer
/// --json`): the trained variant (requantized when the source was quantized) and its score.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ExternalFineTuneOutcome {
    /// The trained variant (the requantized one for a quantized source).
    pub variant: u32,
    pub parent: u32,
    /// The trained FP32 model.
    pub float_variant: u32,
    pub step: String,
    pub output: Option<String>,
    pub metric: String,
    pub score_before: f64,
    pub score_after: f64,
    pub before: Score,
    pub after: Score,
    pub accuracy: Option<f64>,
    pub agreement: Option<f64>,
    /// The last loss the trainer printed.
    pub loss: Option<f64>,
    pub epochs: Vec<ExternalEpoch>,
    pub epochs_seen: usize,
    pub progress_lines: usize,
    pub samples: usize,
    /// Whether the source was a quantized variant.
    pub quantized: bool,
    /// The encodings the requantized variant uses.
    pub encodings: Option<String>,
    pub lr: f64,
    pub epochs_requested: usize,
    pub seconds: f64,
    /// The trainer command template.
    pub command: String,
    pub workspace: String,
    pub dataset: String,
    /// Set when the job ran on a Slurm node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmRun>,
}

/// One epoch as the external trainer reported it: its latest loss and metric.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ExternalEpoch {
    pub epoch: u64,
    pub loss: Option<f64>,
    pub metric: Option<f64>,
}

pub(crate) fn run(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<ExternalFineTuneOutcome> {
    let JobKind::ExternalFineTune {
        variant,
        data,
        command,
        epochs,
        lr,
        threads,
    } = ctx.kind
    else {
        return Err(Error::runtime(
            "the external fine-tune job was handed another kind of job",
        ));
    };
    let template = Template::parse(command)?;
    if *epochs == 0 || !lr.is_finite() || *lr < 0.0 {
        return Err(Error::input(format!(
            "external fine-tuning needs at least one epoch and a finite lr ≥ 0 (got {epochs} and {lr})"
        )));
    }
    let started = Instant::now();
    let ws = lock(workspace).clone();
    let settings = ws.settings().clone();
    let workdir = ws.dir().join("trainer").join(format!("job-{}", ctx.id));
    if workdir.exists() {
        std::fs::remove_dir_all(&workdir).map_err(|e| Error::io(&workdir, e))?;
    }
    std::fs::create_dir_all(&workdir).map_err(|e| Error::io(&workdir, e))?;
    let source = prepare_source(&ws, *variant, &workdir)?;
    let float_model = ws.load_model(&source.float_model)?;
    let mut options = RunOptions::default();
    if *threads > 0 {
        options.threads = *threads;
    }
    // The evaluation samples are checked against the model before the trainer spends time.
    let eval = select_samples(
        data,
        Subset::Evaluation,
        settings.calibration_size,
        settings.split_seed,
    )?;
    let split = eval.split.clone();
    let metric = super::job_metric(workspace, ctx.kind)?;
    let scoring =
        crate::experiment::evaluate::scoring_for(data, &eval, Subset::Evaluation, &metric);
    let scorer = ModelScorer::with_scoring(&float_model, eval.data, options, scoring, ctx.cancel)?;
    let before = if source.quantized {
        scorer.score(&ws.load_model(&source.variant_model)?, ctx.cancel)?
    } else {
        scorer.parent_score().clone()
    };
    let output = workdir.join(OUTPUT);
    let values = TemplateValues {
        input: source.input.display().to_string(),
        output: output.display().to_string(),
        data: data.display().to_string(),
        epochs: *epochs,
        lr: *lr,
        encodings: source
            .encodings
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        workdir: workdir.display().to_string(),
    };
    let line = template.render(&values);
    ctx.log(format!("{}: running {line}", ctx.kind.label()));
    let mut watch = ProgressWatch::new(*epochs);
    let outcome = run_trainer(
        &TrainerRun {
            command: &line,
            workdir: &workdir,
            cancel: ctx.cancel,
        },
        &mut |l| watch.take(ctx, l),
    )?;
    let trained = check_output(&outcome, &output, &float_model, &workdir)?;
    ctx.cancel.check()?;
    let scored_at = Instant::now();
    let after_float = scorer.score(&trained, ctx.cancel)?;
    let eval_seconds = scored_at.elapsed().as_secs_f64();
    let step = format!("external{{epochs:{epochs},lr:{lr}}}");
    let record = EvalRecord {
        dataset: data.display().to_string(),
        dataset_fingerprint: scorer.data().fingerprint()?,
        subset: Subset::Evaluation.name().to_string(),
        split,
        score: after_float.clone(),
        seconds: eval_seconds,
        samples_per_second: after_float.samples as f64 / eval_seconds.max(1e-9),
        batch_size: options.batch_size,
        threads: options.threads,
        reference: Some(source.float_variant.to_string()),
        when: now(),
    };
    let float_child = lock(workspace).transaction(|ws| {
        let parent_costs = ws.variant(source.float_variant).map(|v| v.macs);
        let params: u64 = trained.weights().map(|(_, w)| w.array.len() as u64).sum();
        let id = ws.add_variant(source.float_variant, &step, &trained)?;
        ws.set_costs(id, parent_costs.flatten(), Some(params))?;
        ws.record_result(id, record)?;
        Ok(id)
    })?;
    let (id, after, encodings_used) = if source.quantized {
        let new_encodings = workdir.join(OUTPUT_ENCODINGS);
        requantize(
            ctx,
            workspace,
            &ws,
            *variant,
            float_child,
            data,
            *threads,
            new_encodings.is_file().then_some(new_encodings.as_path()),
        )?
    } else {
        (float_child, after_float.clone(), None)
    };
    let output_path = lock(workspace)
        .variant(id)
        .map(|v| ws.model_path(v).display().to_string());
    let metric = scorer.metric();
    let metric = metric.name();
    ctx.log(format!(
        "{step}: {metric} {:.4} → {:.4} → variant {id}",
        scorer.value(&before),
        scorer.value(&after)
    ));
    // Nothing in the work directory is needed any more; a failed run keeps it to look at.
    let _ = std::fs::remove_dir_all(&workdir);
    Ok(ExternalFineTuneOutcome {
        variant: id,
        parent: *variant,
        float_variant: float_child,
        step,
        output: output_path,
        metric: metric.to_string(),
        score_before: scorer.value(&before),
        score_after: scorer.value(&after),
        accuracy: after.accuracy,
        agreement: after.agreement,
        samples: after.samples,
        before,
        after,
        loss: watch.last_loss,
        epochs: watch.epochs(),
        epochs_seen: watch.per_epoch.len(),
        progress_lines: watch.lines,
        quantized: source.quantized,
        encodings: encodings_used,
        lr: *lr,
        epochs_requested: *epochs,
        seconds: started.elapsed().as_secs_f64(),
        command: command.clone(),
        workspace: ws.dir().display().to_string(),
        dataset: data.display().to_string(),
        slurm: None,
    })
}

/// Put the variant's model (or a quantized variant's QDQ export and encodings) in `workdir`.
fn prepare_source(ws: &Workspace, id: u32, workdir: &Path) -> Result<Source> {
    let v = ws
        .variant(id)
        .ok_or_else(|| Error::input(format!("{}: no variant {id}", ws.dir().display())))?;
    let variant_model = ws.model_path(v);
    if v.encodings_file.is_none() {
        let input = workdir.join("input.onnx");
        std::fs::copy(&variant_model, &input).map_err(|e| Error::io(&variant_model, e))?;
        return Ok(Source {
            input,
            encodings: None,
            float_model: variant_model.clone(),
            float_variant: id,
            variant_model,
            quantized: false,
        });
    }
    let (float_model, _) = export_source(ws, id, None)?;
    let float_variant = v.parent.unwrap_or(0);
    let report = export_variant(ws, id, workdir, EncodingsVersion::default(), None, None)?;
    Ok(Source {
        input: report.output,
        encodings: Some(report.encodings),
        float_model,
        float_variant,
        variant_model,
        quantized: true,
    })
}

/// The trainer's model, if it ran well and wrote one that fits: else an error with the
/// last lines of its output.
fn check_output(
    outcome: &TrainerOutcome,
    output: &Path,
    reference: &Model,
    workdir: &Path,
) -> Result<Model> {
    let tail = || {
        if outcome.tail.is_empty() {
            "(the trainer printed nothing)".to_string()
        } else {
            format!("last output lines:\n{}", outcome.tail.join("\n"))
        }
    };
    let fail = |what: String| {
        Error::runtime(format!(
            "{what} (work directory kept: {})\n{}",
            workdir.display(),
            tail()
        ))
    };
    if !outcome.exit.success() {
        return Err(fail(format!("the trainer failed with {}", outcome.exit)));
    }
    if !output.is_file() {
        return Err(fail(format!(
            "the trainer exited 0 but wrote no model at {}",
            output.display()
        )));
    }
    let trained = Model::load_any(output).map_err(|e| {
        fail(format!(
            "the trainer's model {} does not load: {e}",
            output.display()
        ))
    })?;
    let names = |m: &Model| -> (Vec<String>, Vec<String>) {
        let inputs = m.inputs().iter().map(|i| i.name.clone()).collect();
        (inputs, m.output_names())
    };
    let (want_in, want_out) = names(reference);
    let (got_in, got_out) = names(&trained);
    if (&got_in, &got_out) != (&want_in, &want_out) {
        return Err(fail(format!(
            "{}: not the same graph as the model given to the trainer: inputs {got_in:?} and \
             outputs {got_out:?}, expected {want_in:?} and {want_out:?}",
            output.display()
        )));
    }
    let qdq = trained
        .proto()
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .any(|n| matches!(n.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear"));
    if qdq {
        return Err(fail(format!(
            "{}: has QuantizeLinear/DequantizeLinear nodes; write the trained float model \
             (qsteer does not read encodings back from Q/DQ nodes) and, to change the encodings, \
             an encodings file beside it ({OUTPUT_ENCODINGS})",
            output.display()
        )));
    }
    Ok(trained)
}

/// Quantsim of the trained float child: with the trainer's new encodings, else the
/// quantized variant's settings, else (imported encodings, no settings) its encodings.
/// Returns the new variant, its score and the encodings file used, if any.
#[allow(clippy::too_many_arguments)]
fn requantize(
    ctx: &JobCtx,
    workspace: &Mutex<Workspace>,
    ws: &Workspace,
    quantized: u32,
    float_child: u32,
    data: &Path,
    threads: usize,
    new_encodings: Option<&Path>,
) -> Result<(u32, crate::metrics::Score, Option<String>)> {
    let v = ws
        .variant(quantized)
        .ok_or_else(|| Error::input(format!("{}: no variant {quantized}", ws.dir().display())))?;
    let own = v.encodings_file.as_ref().map(|rel| ws.dir().join(rel));
    let encodings = match (new_encodings, &v.quantsim) {
        (Some(file), _) => Some(file.to_path_buf()),
        (None, Some(_)) => None,
        (None, None) => own,
    };
    let settings = v.quantsim.clone().unwrap_or_default();
    let mut req = QuantsimRequest::checked(
        data,
        &settings,
        ws.settings().calibration_size,
        ws.settings().split_seed,
        threads,
    )?;
    req.metric = ws.metric_for(None);
    ctx.log(match &encodings {
        Some(file) => format!("quantsim of v{float_child} with {}", file.display()),
        None => format!("quantsim of v{float_child} with v{quantized}'s settings"),
    });
    let child = quantsim_child(
        workspace,
        float_child,
        &req,
        encodings.as_deref(),
        ctx.cancel,
        &|stage, d, t| ctx.progress(d, t, stage),
    )?;
    Ok((
        child.variant,
        child.outcome.report.score,
        encodings.map(|p| p.display().to_string()),
    ))
}

/// Progress lines seen so far, turned into the job's progress and partials.
struct ProgressWatch {
    epochs: u64,
    epoch: u64,
    steps: Option<u64>,
    /// Steps reported in the current epoch, for lines without `step`.
    step_in_epoch: u64,
    lines: usize,
    last_loss: Option<f64>,
    /// The latest loss and metric of each epoch.
    per_epoch: BTreeMap<u64, (Option<f64>, Option<f64>)>,
}

impl ProgressWatch {
    fn new(epochs: usize) -> ProgressWatch {
        ProgressWatch {
            epochs: epochs as u64,
            epoch: 1,
            steps: None,
            step_in_epoch: 0,
            lines: 0,
            last_loss: None,
            per_epoch: BTreeMap::new(),
        }
    }

    fn take(&mut self, ctx: &JobCtx, line: &TrainerLine) {
        let p = match line {
            TrainerLine::Stderr(text) => return ctx.log(text.clone()),
            TrainerLine::Stdout(text) => match parse_line(text) {
                Line::Text(text) => return ctx.log(text),
                Line::Progress(p) => p,
            },
        };
        self.lines += 1;
        if let Some(e) = p.epoch {
            if e != self.epoch {
                self.step_in_epoch = 0;
            }
            self.epoch = e.max(1);
        }
        if let Some(n) = p.epochs {
            self.epochs = n.max(1);
        }
        if p.steps.is_some() {
            self.steps = p.steps;
        }
        self.step_in_epoch = p.step.unwrap_or(self.step_in_epoch + 1);
        ctx.log(p.describe());
        match self.steps {
            Some(steps) if steps > 0 => {
                let total = steps * self.epochs;
                let done = (self.epoch - 1) * steps + self.step_in_epoch.min(steps);
                ctx.progress(done.min(total) as usize, total as usize, "training");
            }
            _ => ctx.progress(
                self.epoch.min(self.epochs) as usize,
                self.epochs as usize,
                "training (epochs)",
            ),
        }
        if let Some(loss) = p.loss {
            self.last_loss = Some(loss);
            ctx.partial(super::event::Partial::TrainStep {
                train_step: super::event::TrainStep {
                    epoch: self.epoch,
                    step: self.step_in_epoch,
                    steps: self.steps,
                    loss: Some(loss),
                    metric: p.metric,
                    lr: p.lr,
                },
            });
        }
        // An epoch's loss and metric are its latest ones, wherever they were reported.
        let seen = self.per_epoch.entry(self.epoch).or_default();
        seen.0 = p.loss.or(seen.0);
        seen.1 = p.metric.or(seen.1);
    }

    fn epochs(&self) -> Vec<ExternalEpoch> {
        (self.per_epoch.iter())
            .map(|(&epoch, &(loss, metric))| ExternalEpoch {
                epoch,
                loss,
                metric,
            })
            .collect()
    }
}
