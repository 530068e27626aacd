//! The fine-tune job: train a variant with backpropagation on the training set the user
//! names (else the split's calibration part, with a note saying so), score it with tract
//! on the evaluation subset after each epoch, and keep the trained model as a child
//! variant. Each step and epoch is a
//! `Partial` event (`train_step`, `train_epoch`) for the app's loss chart. The QAT job
//! runs the same loop ([`train`]) with fake-quant.

use super::child::{record_child, Measured};
use super::event::{Partial, TrainEpoch, TrainStep};
use super::exec::JobCtx;
use super::kind::JobKind;
use super::lock;
use super::outcome::SlurmRun;
use crate::compress::scorer::ModelScorer;
use crate::data::SplitInfo;
use crate::experiment::evaluate::{as_rows, sample_shapes, select_samples, Subset};
use crate::experiment::quantsim::float_variant_path;
use crate::experiment::Workspace;
use crate::metrics::Score;
use crate::model::Model;
use crate::quant::import::{sim_from_encodings, ModelEncodings};
use crate::runtime::{CompiledModel, RunOptions};
use crate::train::augment::image_layout;
use crate::train::checkpoint::EpochRecord;
use crate::train::{fine_tune, Event, FineTuneRun, FineTuneSettings, Loss, Outcome};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// The result fields fine-tune and QAT share (flattened into both outcomes).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainedFields {
    /// The metric the run is scored on.
    pub metric: String,
    pub score_before: f64,
    pub score_after: f64,
    pub before: Score,
    pub after: Score,
    pub accuracy: Option<f64>,
    pub agreement: Option<f64>,
    /// The last epoch's mean loss.
    pub loss: Option<f64>,
    pub epochs: Vec<EpochRecord>,
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
    pub steps_per_epoch: usize,
    pub trained_params: usize,
    pub train_samples: usize,
    /// Which samples trained, selected the returned weights and scored them.
    pub samples_used: Value,
    pub notes: Vec<String>,
    pub samples: usize,
    pub settings: FineTuneSettings,
    pub workspace: String,
    pub dataset: String,
}

/// What a fine-tune job reports (the core of `qsteer finetune --json`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FineTuneOutcome {
    #[serde(flatten)]
    pub trained: TrainedFields,
    /// The trained model (child).
    pub variant: u32,
    pub parent: u32,
    pub step: String,
    /// The trained model's file.
    pub output: Option<String>,
    pub params_total: u64,
    pub seconds: f64,
    /// Set when the job ran on a Slurm node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmRun>,
}

pub(crate) fn run(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<FineTuneOutcome> {
    let (variant, data, settings, threads) = training_inputs(ctx.kind)?;
    let started = Instant::now();
    let path = float_variant_path(&lock(workspace), variant, "fine-tuning")?;
    let model = super::load_model(workspace, &path)?;
    let request = TrainRequest {
        model: &model,
        data,
        settings,
        threads,
        quant: None,
    };
    let t = train(ctx, workspace, &request)?;
    // The score of the returned weights (the best epoch's under early stopping).
    let scored_at = Instant::now();
    let after = t.scorer.score(&t.outcome.model, ctx.cancel)?;
    let eval_seconds = scored_at.elapsed().as_secs_f64();
    let step = settings.step_name();
    let recorded = {
        let mut ws = lock(workspace);
        let measured = t.measured(data, after.clone(), eval_seconds);
        record_child(
            &mut ws,
            variant,
            &step,
            &t.outcome.model,
            None,
            Some(measured),
        )?
    };
    t.finish(ctx, &step, &after, recorded.id, "");
    Ok(FineTuneOutcome {
        trained: t.fields(request.settings, data, &after),
        variant: recorded.id,
        parent: variant,
        step,
        output: recorded.output.map(|p| p.display().to_string()),
        params_total: recorded.params,
        seconds: started.elapsed().as_secs_f64(),
        slurm: None,
    })
}

/// The variant, data, settings and threads of a fine-tune or QAT job.
pub(crate) fn training_inputs(kind: &JobKind) -> Result<(u32, &Path, &FineTuneSettings, usize)> {
    match kind {
        JobKind::FineTune {
            variant,
            data,
            settings,
            threads,
        }
        | JobKind::Qat {
            variant,
            data,
            settings,
            threads,
        } => {
            settings.check()?;
            Ok((*variant, data, settings, *threads))
        }
        _ => Err(Error::runtime(
            "the training job was handed another kind of job",
        )),
    }
}

/// One training run of the loop, plain or quantization-aware.
pub(crate) struct TrainRequest<'a> {
    /// The FP32 model to train.
    pub model: &'a Model,
    pub data: &'a Path,
    pub settings: &'a FineTuneSettings,
    /// Worker threads of the scoring runs; 0: one per core.
    pub threads: usize,
    /// QAT: the fixed encodings the forward pass fake-quantizes with; each epoch is then
    /// scored as the simulated model with these encodings.
    pub quant: Option<&'a ModelEncodings>,
}

/// A finished run: the trained FP32 model and what scored it.
pub(crate) struct Trained<'a> {
    pub outcome: Outcome,
    pub scorer: ModelScorer,
    /// The score before training (of the simulated model under QAT).
    pub before: Score,
    pub metric: String,
    pub split: Option<SplitInfo>,
    pub options: RunOptions,
    pub train_samples: usize,
    /// Which samples trained, selected the returned weights and scored them.
    pub samples_used: Value,
    /// What the user should know about the run's data (calibration fallback, augmentation
    /// turned off, training on the scoring samples).
    pub notes: Vec<String>,
    pub workspace_dir: PathBuf,
    checkpoint: PathBuf,
    _quant: std::marker::PhantomData<&'a ModelEncodings>,
}

impl Trained<'_> {
    pub fn measured<'b>(&'b self, data: &'b Path, score: Score, seconds: f64) -> Measured<'b> {
        Measured {
            data,
            scorer: &self.scorer,
            split: self.split.clone(),
            options: self.options,
            score,
            seconds,
        }
    }

    /// The run is recorded as variant `id`: say so and drop its resume point.
    pub fn finish(&self, ctx: &JobCtx, step: &str, after: &Score, id: u32, note: &str) {
        ctx.log(format!(
            "{step}: {} {:.4} → {:.4}{note} → variant {id}",
            self.metric,
            self.scorer.value(&self.before),
            self.scorer.value(after),
        ));
        if let Err(e) = std::fs::remove_file(&self.checkpoint) {
            if e.kind() != std::io::ErrorKind::NotFound {
                ctx.log(format!(
                    "warning: {}: {e}; delete it by hand",
                    self.checkpoint.display()
                ));
            }
        }
    }

    /// The result fields fine-tune and QAT share.
    pub fn fields(&self, settings: &FineTuneSettings, data: &Path, after: &Score) -> TrainedFields {
        let o = &self.outcome;
        TrainedFields {
            metric: self.metric.clone(),
            score_before: self.scorer.value(&self.before),
            score_after: self.scorer.value(after),
            before: self.before.clone(),
            after: after.clone(),
            accuracy: after.accuracy,
            agreement: after.agreement,
            loss: o.history.last().map(|r| r.loss),
            epochs: o.history.clone(),
            best_epoch: o.best_epoch,
            stopped_early: o.stopped_early,
            steps_per_epoch: o.steps_per_epoch,
            trained_params: o.params,
            train_samples: self.train_samples,
            samples_used: self.samples_used.clone(),
            notes: self.notes.clone(),
            samples: after.samples,
            settings: settings.clone(),
            workspace: self.workspace_dir.display().to_string(),
            dataset: data.display().to_string(),
        }
    }
}

fn scored_model(model: &Model, quant: Option<&ModelEncodings>) -> Result<Model> {
    match quant {
        Some(e) => Ok(sim_from_encodings(model, e)?.model),
        None => Ok(model.clone()),
    }
}

/// Train `req.model` on the calibration subset of `req.data`, scoring each epoch on the
/// evaluation subset, with the `train_step` / `train_epoch` partials and progress. Resumes
/// from the run's checkpoint in the workspace cache.
pub(crate) fn train<'a>(
    ctx: &JobCtx,
    workspace: &Mutex<Workspace>,
    req: &TrainRequest<'a>,
) -> Result<Trained<'a>> {
    let (model, data, settings) = (req.model, req.data, req.settings);
    let ws_dir = lock(workspace).dir().to_path_buf();
    let mut options = RunOptions::default();
    if req.threads > 0 {
        options.threads = req.threads;
    }
    let pick = |subset| select_samples(data, subset, settings.calibration_size, settings.seed);
    let eval = pick(Subset::Evaluation)?;
    let split = eval.split.clone();
    let training = training_set(data, settings)?;
    let mut notes: Vec<String> = training.note.iter().cloned().collect();
    if training.data.fingerprint()? == eval.data.fingerprint()? {
        notes.push(format!(
            "warning: the training samples are the evaluation samples of {}: the score is \
             not on unseen data",
            data.display()
        ));
    }
    let (settings, augment_note) = effective_settings(settings, &training.data);
    notes.extend(augment_note);
    for note in &notes {
        ctx.log(note.clone());
    }
    let settings = &settings;
    if let Some(dir) = &settings.train_data {
        lock(workspace).set_train_data(Some(dir.clone()))?;
    }
    let samples_used = json!({
        "train": training.describe(),
        "selection": if settings.early_stop_patience > 0 {
            json!({"subset": "evaluation", "dataset": data.display().to_string(),
                   "samples": eval.data.len(), "why": "early stopping keeps the best epoch"})
        } else {
            Value::Null
        },
        "score": {"subset": "evaluation", "dataset": data.display().to_string(),
                  "samples": eval.data.len()},
        "augment": settings.augment,
    });
    let train = training;
    let teacher = match settings.loss {
        Loss::Distill { .. } => Some(parent_rows(model, &train.data, options, ctx)?),
        Loss::CrossEntropy => None,
    };
    ctx.log(format!(
        "{} on {} training samples ({}), scored on {} evaluation samples of {}",
        ctx.kind.label(),
        train.data.len(),
        train.source,
        eval.data.len(),
        data.display()
    ));
    let metric = super::job_metric(workspace, ctx.kind)?;
    let scoring =
        crate::experiment::evaluate::scoring_for(data, &eval, Subset::Evaluation, &metric);
    let scorer = ModelScorer::with_scoring(model, eval.data, options, scoring, ctx.cancel)?;
    let before = match req.quant {
        Some(q) => scorer.score(&scored_model(model, Some(q))?, ctx.cancel)?,
        None => scorer.parent_score().clone(),
    };
    let key = {
        let mut h = sha2::Sha256::new();
        h.update(model.content_hash());
        h.update(train.data.fingerprint()?);
        h.update(serde_json::to_vec(settings).unwrap_or_default());
        if let Some(q) = req.quant {
            // Encodings hold no NaN; their debug text identifies them exactly.
            h.update(format!("qat {:?} {:?}", q.weights, q.activations));
        }
        crate::model::hex(&h.finalize())
    };
    let tag = if req.quant.is_some() {
        "qat"
    } else {
        "finetune"
    };
    let checkpoint = ws_dir
        .join("cache")
        .join(format!("{tag}-{}.ckpt", &key[..16]));
    let score_fn = |m: &Model| -> Result<f64> {
        let m = scored_model(m, req.quant)?;
        Ok(scorer.value(&scorer.score(&m, ctx.cancel)?))
    };
    let metric = scorer.metric().name().to_string();
    let total_steps = train.data.len().div_ceil(settings.batch_size) * settings.epochs;
    let on_event = |ev: Event| match ev {
        Event::Step {
            epoch,
            step,
            steps,
            loss,
            lr,
        } => {
            let done = (epoch - 1) * steps + step;
            ctx.progress(done, total_steps, "training");
            ctx.partial(Partial::TrainStep {
                train_step: TrainStep {
                    epoch: epoch as u64,
                    step: step as u64,
                    steps: Some(steps as u64),
                    loss: Some(loss),
                    metric: None,
                    lr: Some(lr),
                },
            });
        }
        Event::Epoch(r) => {
            ctx.log(format!(
                "epoch {}: loss {:.4}, {metric} {:.4} ({:.1} s)",
                r.epoch, r.loss, r.score, r.seconds
            ));
            ctx.partial(Partial::TrainEpoch {
                train_epoch: TrainEpoch {
                    epoch: r.epoch,
                    loss: Some(r.loss),
                    score: Some(r.score),
                    metric: metric.to_string(),
                    seconds: r.seconds,
                },
            });
        }
        Event::Resumed { epochs_done } => ctx.log(format!(
            "resuming from the checkpoint after epoch {epochs_done}"
        )),
    };
    let run = FineTuneRun {
        model,
        train: &train.data,
        teacher: teacher.as_ref(),
        settings,
        checkpoint: Some(checkpoint.clone()),
        key,
        quant: req.quant,
    };
    let outcome = fine_tune(&run, &score_fn, ctx.cancel, &on_event)?;
    ctx.cancel.check()?;
    Ok(Trained {
        outcome,
        scorer,
        before,
        metric: metric.clone(),
        split,
        options,
        train_samples: train.data.len(),
        samples_used,
        notes,
        workspace_dir: ws_dir,
        checkpoint,
        _quant: std::marker::PhantomData,
    })
}

/// The samples a run trains on, and where they came from.
struct TrainingSet {
    data: crate::data::Dataset,
    /// For the log: `sample-models/digits/training (training set)`.
    source: String,
    /// Set when the run falls back to the calibration subset.
    note: Option<String>,
    from_training_set: bool,
    dataset: PathBuf,
}

impl TrainingSet {
    fn describe(&self) -> Value {
        json!({
            "subset": if self.from_training_set { "training" } else { "calibration" },
            "dataset": self.dataset.display().to_string(),
            "samples": self.data.len(),
        })
    }
}

/// The training set the settings name (whole), else the calibration subset of `data`.
fn training_set(data: &Path, settings: &FineTuneSettings) -> Result<TrainingSet> {
    if let Some(dir) = &settings.train_data {
        let set = crate::data::load_dataset(dir)
            .map_err(|e| Error::input(format!("--train-data {}: {e}", dir.display())))?;
        return Ok(TrainingSet {
            source: format!("{} (training set)", dir.display()),
            data: set,
            note: None,
            from_training_set: true,
            dataset: dir.clone(),
        });
    }
    let calibration = select_samples(
        data,
        Subset::Calibration,
        settings.calibration_size,
        settings.seed,
    )?
    .data;
    let n = calibration.len();
    Ok(TrainingSet {
        source: format!("calibration subset of {}", data.display()),
        note: Some(format!(
            "trained on the {n} calibration samples of {}: no training set was given \
             (--train-data DIR); a small set can lower the score",
            data.display()
        )),
        data: calibration,
        from_training_set: false,
        dataset: data.to_path_buf(),
    })
}

/// `settings` as this data can use them: augmentation off for samples that are not
/// images, with a note saying why.
fn effective_settings(
    settings: &FineTuneSettings,
    train: &crate::data::Dataset,
) -> (FineTuneSettings, Option<String>) {
    let mut s = settings.clone();
    if !s.augment.is_on() {
        return (s, None);
    }
    let shape = train
        .inputs
        .first()
        .map(|i| i.data.sample_shape().to_vec())
        .unwrap_or_default();
    match image_layout(&shape) {
        Ok(_) => (s, None),
        Err(why) => {
            s.augment = Default::default();
            let note = format!("augmentation off: {why} (shifts and flips apply to images only)");
            (s, Some(note))
        }
    }
}

/// The parent's first output on the training samples, the distillation targets.
fn parent_rows(
    model: &Model,
    data: &crate::data::Dataset,
    options: RunOptions,
    ctx: &JobCtx,
) -> Result<ndarray::Array2<f32>> {
    crate::experiment::evaluate::check_fits(model, data)?;
    let compiled =
        CompiledModel::compile(model, &sample_shapes(model, data)?, options.batch_size, &[])?;
    let run = compiled.run_dataset(data, options, ctx.cancel, &|_, _| {})?;
    let first = run.outputs.into_iter().next().ok_or_else(|| {
        Error::runtime(format!("{}: the model produced no output", model.source()))
    })?;
    as_rows(&first, &compiled.output_names()[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Dataset, NamedInput};
    use crate::train::Augment;

    fn data(sample: &[usize]) -> Dataset {
        let mut shape = vec![4];
        shape.extend_from_slice(sample);
        let x = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&shape));
        Dataset::from_arrays("d", vec![NamedInput::from_array(None, "d", x)], None).unwrap()
    }

    #[test]
    fn augmentation_is_turned_off_for_non_images_with_a_note() {
        let on = FineTuneSettings {
            augment: Augment {
                shift: 1,
                flip: true,
            },
            ..FineTuneSettings::default()
        };
        let (s, note) = effective_settings(&on, &data(&[1, 16, 16]));
        assert_eq!((s.augment, note), (on.augment, None));
        let (s, note) = effective_settings(&on, &data(&[20, 40]));
        assert!(!s.augment.is_on());
        let note = note.expect("no note");
        assert!(
            note.contains("augmentation off") && note.contains("[20, 40]"),
            "{note}"
        );
    }

    #[test]
    fn without_a_training_set_the_calibration_part_trains_with_a_note() {
        let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/digits");
        let s = FineTuneSettings::default();
        let set = training_set(&digits, &s).unwrap();
        assert_eq!(set.data.len(), 200);
        assert_eq!(set.describe()["subset"], "calibration");
        assert!(set.note.unwrap().contains("no training set was given"));
        let s = FineTuneSettings {
            train_data: Some(digits.join("training")),
            ..FineTuneSettings::default()
        };
        let set = training_set(&digits, &s).unwrap();
        assert_eq!(set.data.len(), 1197);
        assert_eq!(set.describe()["subset"], "training");
        assert!(set.note.is_none());
        let s = FineTuneSettings {
            train_data: Some(digits.join("no-such-dir")),
            ..FineTuneSettings::default()
        };
        let err = training_set(&digits, &s).err().unwrap();
        assert!(matches!(err, Error::Input(_)), "{err}");
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }
}
