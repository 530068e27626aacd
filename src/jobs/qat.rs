//! The QAT job: quantization-aware training of a quantsim variant. The FP32 weights of the
//! variant's float parent train while the forward pass sees them (and the activations)
//! fake-quantized with the variant's encodings, held fixed (straight-through gradient).
//!
//! Recorded like AdaRound: the trained FP32 model is a child of the float parent
//! (`qat{…}`), and the new quantsim variant its child, simulated from
//! `variants/<child>.qat.encodings.json`, so export and compare work on it unchanged. Those
//! encodings keep the activation grids training saw; the weight grids are recomputed from
//! the trained weights with the variant's quantsim settings (kept as trained when the
//! variant came from an imported encodings file, which has no settings).

use super::child::record_child;
use super::exec::JobCtx;
use super::finetune::{train, training_inputs, TrainRequest, TrainedFields};
use super::lock;
use super::outcome::SlurmRun;
use crate::experiment::quantsim::{float_variant_path, quantsim_child, quantsim_child_frozen};
use crate::experiment::Workspace;
use crate::model::Model;
use crate::quant::encodings_file::{encodings_document_with_biases, EncodingsVersion};
use crate::quant::import::{load_model_encodings, sim_from_encodings, ModelEncodings};
use crate::quant::per_channel::{per_channel_encodings, per_tensor_encoding};
use crate::quant::qdq::WeightEncodings;
use crate::quant::simulate::{QuantsimRequest, QuantsimSettings};
use crate::train::FineTuneSettings;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

/// Where a QAT run starts: the quantsim variant's float parent, encodings and settings.
struct Start {
    parent: u32,
    float_model: PathBuf,
    encodings: PathBuf,
    settings: Option<QuantsimSettings>,
}

fn start(ws: &Workspace, variant: u32) -> Result<Start> {
    let v = ws
        .variant(variant)
        .ok_or_else(|| Error::input(format!("{}: no variant {variant}", ws.dir().display())))?;
    let Some(file) = &v.encodings_file else {
        return Err(Error::input(format!(
            "variant {variant} ({}) is not quantized: QAT starts from a quantsim variant \
             (run quantsim first, or pass --qat ENCODINGS_FILE)",
            v.step
        )));
    };
    let parent = v.parent.ok_or_else(|| {
        Error::input(format!(
            "variant {variant} has no parent: QAT needs the FP32 model it was simulated from"
        ))
    })?;
    Ok(Start {
        parent,
        float_model: float_variant_path(ws, parent, "QAT")?,
        encodings: ws.dir().join(file),
        settings: v.quantsim.clone(),
    })
}

/// The step name of the trained FP32 child, e.g. `qat{from:3,epochs:5,lr:0.001}`.
pub(crate) fn step_name(variant: u32, s: &FineTuneSettings) -> String {
    format!("qat{{from:{variant},epochs:{},lr:{}}}", s.epochs, s.lr)
}

/// What a QAT job reports (the core of `qsteer finetune --qat --json`): the trained FP32
/// weights (`trained_variant`) and their quantsim (`variant`), started from
/// `quantsim_variant`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct QatOutcome {
    #[serde(flatten)]
    pub trained: TrainedFields,
    /// The new quantsim variant (child of the trained weights).
    pub variant: u32,
    pub parent: u32,
    pub trained_variant: u32,
    pub quantsim_variant: u32,
    pub step: String,
    /// The new quantsim variant's file.
    pub output: Option<String>,
    pub encodings: String,
    /// The starting variant's quantsim settings (none for imported encodings).
    pub quantsim: Option<QuantsimSettings>,
    /// `recomputed` from the trained weights, or `kept` as trained.
    pub weight_encodings: String,
    /// The returned weights' epoch score, as training scored it.
    pub score_frozen_encodings: Option<f64>,
    pub eval_seconds: f64,
    pub seconds: f64,
    /// Set when the job ran on a Slurm node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmRun>,
}

pub(crate) fn run(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<QatOutcome> {
    let (variant, data, settings, threads) = training_inputs(ctx.kind)?;
    let started = Instant::now();
    let from = start(&lock(workspace), variant)?;
    let model = super::load_model(workspace, &from.float_model)?;
    let pins = lock(workspace).settings().input_shapes.clone();
    let frozen = load_model_encodings(&model, &from.encodings, pins.as_deref())?;
    let request = TrainRequest {
        model: &model,
        data,
        settings,
        threads,
        quant: Some(&frozen),
    };
    let t = train(ctx, workspace, &request)?;
    let (weights, how) = match &from.settings {
        Some(s) => (
            recompute_weights(&t.outcome.model, &frozen, s)?,
            "recomputed",
        ),
        None => (frozen.weights.clone(), "kept"),
    };
    let encodings = ModelEncodings {
        weights,
        activations: frozen.activations.clone(),
        biases: Vec::new(),
    };
    // Scored as the other epochs were, against the FP32 parent.
    let scored_at = Instant::now();
    let sim = sim_from_encodings(&t.outcome.model, &encodings)?;
    let after = t.scorer.score(&sim.model, ctx.cancel)?;
    let eval_seconds = scored_at.elapsed().as_secs_f64();
    ctx.cancel.check()?;
    let step = step_name(variant, settings);
    let (trained, file) = lock(workspace).transaction(|ws| {
        // The FP32 child is not scored on its own: the quantsim child below is what runs.
        let r = record_child(ws, from.parent, &step, &t.outcome.model, None, None)?;
        let doc = encodings_document_with_biases(
            &encodings.weights,
            &encodings.activations,
            &sim.biases,
            EncodingsVersion::V1,
        )?;
        let rel = ws.write_variant_file(r.id, "qat.encodings", &doc)?;
        Ok((r.id, ws.dir().join(rel)))
    })?;
    let mut qreq = QuantsimRequest::checked(
        data,
        &from.settings.clone().unwrap_or_default(),
        settings.calibration_size,
        settings.seed,
        threads,
    )?;
    qreq.metric = super::job_metric(workspace, ctx.kind)?;
    // Encodings made for the quantsim's settings are recorded with them, in one write.
    let progress = |stage: &str, d, n| ctx.progress(d, n, stage);
    let child = if from.settings.is_some() {
        quantsim_child_frozen(workspace, trained, &qreq, &file, ctx.cancel, &progress)?
    } else {
        quantsim_child(
            workspace,
            trained,
            &qreq,
            Some(&file),
            ctx.cancel,
            &progress,
        )?
    };
    let note = format!(" (weight encodings {how}; FP32 weights: variant {trained})");
    t.finish(ctx, &step, &after, child.variant, &note);
    let output = {
        let ws = lock(workspace);
        ws.variant(child.variant).map(|v| ws.model_path(v))
    };
    // The returned weights' epoch (the best one under early stopping), as training scored it.
    let o = &t.outcome;
    let frozen_score = o
        .history
        .iter()
        .find(|r| Some(r.epoch) == o.best_epoch && settings.early_stop_patience > 0)
        .or(o.history.last())
        .map(|r| r.score);
    Ok(QatOutcome {
        trained: t.fields(settings, data, &after),
        variant: child.variant,
        parent: trained,
        trained_variant: trained,
        quantsim_variant: variant,
        step,
        output: output.map(|p| p.display().to_string()),
        encodings: file.display().to_string(),
        quantsim: from.settings,
        weight_encodings: how.to_string(),
        score_frozen_encodings: frozen_score,
        eval_seconds,
        seconds: started.elapsed().as_secs_f64(),
        slurm: None,
    })
}

/// Weight encodings of the trained weights with `settings` (scheme, bitwidth per layer,
/// the granularity the variant used), one per weight the frozen encodings quantize.
fn recompute_weights(
    trained: &Model,
    frozen: &ModelEncodings,
    settings: &QuantsimSettings,
) -> Result<Vec<WeightEncodings>> {
    frozen
        .weights
        .iter()
        .map(|w| {
            let Some(spec) = settings.weight_spec_of(&w.layer, &w.weight)? else {
                return Ok(w.clone());
            };
            let array = trained.weight(&w.weight).ok_or_else(|| {
                Error::runtime(format!("the trained model lost weight '{}'", w.weight))
            })?;
            let context = |e: Error| {
                Error::input(format!(
                    "trained weight '{}' of '{}': {e}",
                    w.weight, w.layer
                ))
            };
            let encodings = match w.axis {
                Some(axis) => per_channel_encodings(
                    array.view(),
                    axis,
                    spec,
                    settings.weight_scheme_for(spec),
                )
                .map_err(context)?,
                None => {
                    vec![
                        per_tensor_encoding(array.view(), spec, settings.weight_scheme_for(spec))
                            .map_err(context)?,
                    ]
                }
            };
            Ok(WeightEncodings {
                encodings,
                ..w.clone()
            })
        })
        .collect()
}
