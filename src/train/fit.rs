//! The fine-tuning loop: epochs of shuffled mini-batches from the training subset, each a
//! step of the [`Trainer`]; after each epoch the weights are written back, scored by the
//! caller (with tract, on the evaluation subset) and checkpointed. Cancellable between
//! steps; a rerun with the same model, data and settings resumes after the last epoch.

use super::augment::image_layout;
use super::checkpoint::{self, EpochRecord, Header, State};
use super::settings::{FineTuneSettings, Loss};
use super::trainer::{Targets, Trainer};
use super::value::Value;
use crate::cancel::CancelToken;
use crate::data::Dataset;
use crate::data::SplitMix64;
use crate::model::Model;
use crate::quant::import::ModelEncodings;
use crate::{Error, Result};
use burn_tensor::DType;
use ndarray::{Array2, Axis};
use std::path::PathBuf;
use std::time::Instant;

pub struct FineTuneRun<'a> {
    pub model: &'a Model,
    /// The training samples (one model input; labels for cross-entropy).
    pub train: &'a Dataset,
    /// The parent's `[N, C]` outputs on `train`, for distillation.
    pub teacher: Option<&'a Array2<f32>>,
    pub settings: &'a FineTuneSettings,
    /// Where to checkpoint each epoch (`None`: no checkpoints).
    pub checkpoint: Option<PathBuf>,
    /// Identifies the run (model, data, settings) in the checkpoint.
    pub key: String,
    /// Quantization-aware training: fake-quant these weights and activations (fixed grids,
    /// straight-through gradient). `None`: plain fine-tuning.
    pub quant: Option<&'a ModelEncodings>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Step {
        epoch: usize,
        step: usize,
        steps: usize,
        loss: f64,
        lr: f64,
    },
    Epoch(EpochRecord),
    Resumed {
        epochs_done: usize,
    },
}

pub struct Outcome {
    /// The trained model (the best epoch's when early stopping is on).
    pub model: Model,
    pub history: Vec<EpochRecord>,
    pub steps_per_epoch: usize,
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
    pub params: usize,
}

/// Separates the augmentation draws from the batch order's (same seed).
const AUGMENT_STREAM: u64 = 0xA076_1D64_78BD_642F;

fn batches(n: usize, size: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64(seed);
    for i in (1..n).rev() {
        let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    order.chunks(size).map(|c| c.to_vec()).collect()
}

fn check_data(run: &FineTuneRun) -> Result<()> {
    if run.train.inputs.len() != 1 {
        return Err(Error::input(format!(
            "finetune: the training interpreter feeds one model input, the data has {}",
            run.train.inputs.len()
        )));
    }
    if run.train.is_empty() {
        return Err(Error::input("finetune: the training subset is empty"));
    }
    match run.settings.loss {
        Loss::CrossEntropy if run.train.labels.is_none() => Err(Error::input(format!(
            "finetune: {} has no labels; use distillation to the parent (--distill)",
            run.train.name
        ))),
        Loss::Distill { .. } if run.teacher.map(|t| t.nrows()) != Some(run.train.len()) => {
            Err(Error::runtime(
                "finetune: distillation needs the parent's outputs for every training sample",
            ))
        }
        _ => Ok(()),
    }
}

/// Run the loop. `score(model)` rates a written-back model (higher is better).
pub fn fine_tune(
    run: &FineTuneRun,
    score: &dyn Fn(&Model) -> Result<f64>,
    cancel: &CancelToken,
    on_event: &dyn Fn(Event),
) -> Result<Outcome> {
    run.settings.check()?;
    check_data(run)?;
    let s = run.settings;
    let mut trainer = Trainer::new(run.model, s, DType::F32)?;
    if let Some(encodings) = run.quant {
        trainer.set_quant(run.model, encodings)?;
    }
    let n = run.train.len();
    let steps_per_epoch = n.div_ceil(s.batch_size);
    let total_steps = steps_per_epoch * s.epochs;
    let mut history: Vec<EpochRecord> = Vec::new();
    let mut best: Option<(usize, f64, Vec<Value>)> = None;
    let mut start = 0;
    if let Some(path) = &run.checkpoint {
        let device = trainer.values().first().map(|v| v.t.device());
        if let Some(state) = device.and_then(|d| checkpoint::load(path, &run.key, &d, DType::F32)) {
            start = state.header.epochs_done;
            history = state.header.history.clone();
            restore(&mut trainer, state, &mut best, s.early_stop_patience > 0)?;
            on_event(Event::Resumed { epochs_done: start });
        }
    }
    let inputs = &run.train.inputs[0].data;
    let layout = if s.augment.is_on() {
        let layout = image_layout(inputs.sample_shape()).map_err(|m| {
            Error::input(format!("finetune: augmentation of {}: {m}", run.train.name))
        })?;
        Some(layout)
    } else {
        None
    };
    let mut stopped_early = false;
    for epoch in start..s.epochs {
        if early_stop_due(&history, &best, s.early_stop_patience) {
            stopped_early = true;
            break;
        }
        let began = Instant::now();
        let mut sum = 0.0;
        let plan = batches(n, s.batch_size, s.seed.wrapping_add(epoch as u64));
        // One generator per epoch, so a resumed run draws what the first run would have.
        let mut augment_rng = SplitMix64(s.seed ^ AUGMENT_STREAM.wrapping_mul(epoch as u64 + 1));
        for (k, idx) in plan.iter().enumerate() {
            cancel.check()?;
            // Only this step's samples are read (decoded) from the training set.
            let mut x = inputs.read(idx)?;
            if let Some(layout) = layout {
                let shape = x.shape().to_vec();
                let flat = x
                    .as_slice_mut()
                    .ok_or_else(|| Error::runtime("a training batch is not contiguous"))?;
                s.augment.apply(flat, &shape, layout, &mut augment_rng);
            }
            let labels: Vec<i64>;
            let teacher: Vec<f32>;
            let targets = match s.loss {
                Loss::CrossEntropy => {
                    let all = run.train.labels.as_ref().expect("checked");
                    labels = idx.iter().map(|&i| all[i]).collect();
                    Targets::Labels(&labels)
                }
                Loss::Distill { .. } => {
                    let t = run.teacher.expect("checked");
                    teacher = t.select(Axis(0), idx).iter().copied().collect();
                    Targets::Teacher(&teacher)
                }
            };
            let lr = s.lr_at(epoch, epoch * steps_per_epoch + k, total_steps);
            let loss = trainer.step(&x.view(), &targets, lr)?;
            sum += loss;
            on_event(Event::Step {
                epoch: epoch + 1,
                step: k + 1,
                steps: plan.len(),
                loss,
                lr,
            });
        }
        cancel.check()?;
        let model = trainer.write_back(run.model)?;
        let value = score(&model)?;
        let record = EpochRecord {
            epoch: epoch + 1,
            loss: sum / plan.len() as f64,
            score: value,
            seconds: began.elapsed().as_secs_f64(),
        };
        if best.as_ref().is_none_or(|b| value > b.1) {
            let keep = if s.early_stop_patience > 0 {
                trainer.values().to_vec()
            } else {
                Vec::new()
            };
            best = Some((epoch + 1, value, keep));
        }
        history.push(record.clone());
        on_event(Event::Epoch(record));
        if let Some(path) = &run.checkpoint {
            checkpoint::save(
                path,
                &snapshot(&trainer, &history, &best, &run.key, epoch + 1),
            )?;
        }
    }
    let (model, best_epoch) = match best {
        Some((e, _, values)) if s.early_stop_patience > 0 => {
            trainer.set_values(values);
            (trainer.write_back(run.model)?, Some(e))
        }
        b => (trainer.write_back(run.model)?, b.map(|b| b.0)),
    };
    Ok(Outcome {
        model,
        history,
        steps_per_epoch,
        best_epoch,
        stopped_early,
        params: trainer.param_count(),
    })
}

fn early_stop_due(
    history: &[EpochRecord],
    best: &Option<(usize, f64, Vec<Value>)>,
    patience: usize,
) -> bool {
    match (best, history.last()) {
        (Some((b, _, _)), Some(last)) if patience > 0 => last.epoch - b >= patience,
        _ => false,
    }
}

fn snapshot(
    trainer: &Trainer,
    history: &[EpochRecord],
    best: &Option<(usize, f64, Vec<Value>)>,
    key: &str,
    epochs_done: usize,
) -> State {
    let mut names = Vec::new();
    let mut tensors = Vec::new();
    let values = trainer.values();
    for (i, v) in values.iter().enumerate() {
        names.push((format!("value:{i}"), Some(v.shape.clone())));
        tensors.push(Some(v.clone()));
    }
    for (tag, moments) in [("m", &trainer.optim.m), ("v", &trainer.optim.v)] {
        for (i, m) in moments.iter().enumerate() {
            let shape = values[i].shape.clone();
            names.push((format!("{tag}:{i}"), m.as_ref().map(|_| shape.clone())));
            tensors.push(m.as_ref().map(|t| Value::new(t.clone(), shape)));
        }
    }
    if let Some((_, _, b)) = best {
        for (i, v) in b.iter().enumerate() {
            names.push((format!("best:{i}"), Some(v.shape.clone())));
            tensors.push(Some(v.clone()));
        }
    }
    State {
        header: Header {
            key: key.to_string(),
            epochs_done,
            optim_t: trainer.optim.t,
            history: history.to_vec(),
            tensors: names,
        },
        tensors,
    }
}

fn restore(
    trainer: &mut Trainer,
    state: State,
    best: &mut Option<(usize, f64, Vec<Value>)>,
    keep_best: bool,
) -> Result<()> {
    let n = trainer.values().len();
    let mut it = state.tensors.into_iter();
    let values: Vec<Value> = it.by_ref().take(n).flatten().collect();
    if values.len() != n
        || values
            .iter()
            .zip(trainer.values())
            .any(|(a, b)| a.shape != b.shape)
    {
        return Err(Error::runtime(
            "the checkpoint's tensors do not match the model",
        ));
    }
    trainer.set_values(values);
    trainer.optim.t = state.header.optim_t;
    trainer.optim.m = it.by_ref().take(n).map(|v| v.map(|v| v.t)).collect();
    trainer.optim.v = it.by_ref().take(n).map(|v| v.map(|v| v.t)).collect();
    let kept: Vec<Value> = it.flatten().collect();
    if let Some(b) = state
        .header
        .history
        .iter()
        .fold(None::<&EpochRecord>, |acc, r| match acc {
            Some(a) if a.score >= r.score => Some(a),
            _ => Some(r),
        })
    {
        let keep = if keep_best { kept } else { Vec::new() };
        *best = Some((b.epoch, b.score, keep));
    }
    Ok(())
}
