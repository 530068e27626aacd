//! The fine-tune job: train a variant with backpropagation on the training subset (the
//! split's calibration part), score it with tract on the evaluation subset after each
//! epoch, and keep the trained model as a child variant. Each step and epoch is a
//! `Partial` event (`train_step`, `train_epoch`) for the app's loss chart.

use super::exec::JobCtx;
use super::kind::JobKind;
use super::lock;
use crate::compress::scorer::ModelScorer;
use crate::experiment::evaluate::{as_rows, sample_shapes, select_samples, Subset};
use crate::experiment::quantsim::float_variant_path;
use crate::experiment::{now, EvalRecord, Workspace};
use crate::model::Model;
use crate::runtime::{CompiledModel, RunOptions};
use crate::train::{fine_tune, Event, FineTuneRun, Loss};
use crate::{Error, Result};
use serde_json::{json, Value};
use sha2::Digest;
use std::sync::Mutex;
use std::time::Instant;

pub(crate) fn run(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<Value> {
    let JobKind::FineTune {
        variant,
        data,
        settings,
        threads,
    } = ctx.kind
    else {
        return Err(Error::runtime(
            "the fine-tune job was handed another kind of job",
        ));
    };
    settings.check()?;
    let started = Instant::now();
    let (path, ws_dir) = {
        let ws = lock(workspace);
        (
            float_variant_path(&ws, *variant, "fine-tuning")?,
            ws.dir().to_path_buf(),
        )
    };
    let model = Model::load(&path)?;
    let mut options = RunOptions::default();
    if *threads > 0 {
        options.threads = *threads;
    }
    let train = select_samples(
        data,
        Subset::Calibration,
        settings.calibration_size,
        settings.seed,
    )?;
    let eval = select_samples(
        data,
        Subset::Evaluation,
        settings.calibration_size,
        settings.seed,
    )?;
    let split = eval.split.clone();
    let teacher = match settings.loss {
        Loss::Distill { .. } => Some(parent_rows(&model, &train.data, options, ctx)?),
        Loss::CrossEntropy => None,
    };
    ctx.log(format!(
        "{} on {} training and {} evaluation samples from {}",
        ctx.kind.label(),
        train.data.len(),
        eval.data.len(),
        data.display()
    ));
    let scorer = ModelScorer::new(&model, eval.data, options, ctx.cancel)?;
    let before = scorer.parent_score().clone();
    let settings_json = serde_json::to_vec(settings).unwrap_or_default();
    let key = {
        let mut h = sha2::Sha256::new();
        h.update(model.content_hash());
        h.update(train.data.fingerprint());
        h.update(&settings_json);
        crate::model::hex(&h.finalize())
    };
    let checkpoint = ws_dir
        .join("cache")
        .join(format!("finetune-{}.ckpt", &key[..16]));
    let score_fn = |m: &Model| -> Result<f64> { Ok(scorer.value(&scorer.score(m, ctx.cancel)?)) };
    let metric = scorer.metric().name();
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
            ctx.partial(json!({"train_step": {"epoch": epoch, "step": step, "steps": steps, "loss": loss, "lr": lr}}));
        }
        Event::Epoch(r) => {
            ctx.log(format!(
                "epoch {}: loss {:.4}, {metric} {:.4} ({:.1} s)",
                r.epoch, r.loss, r.score, r.seconds
            ));
            ctx.partial(json!({"train_epoch": {"epoch": r.epoch, "loss": r.loss, "score": r.score, "metric": metric, "seconds": r.seconds}}));
        }
        Event::Resumed { epochs_done } => ctx.log(format!(
            "resuming from the checkpoint after epoch {epochs_done}"
        )),
    };
    let run = FineTuneRun {
        model: &model,
        train: &train.data,
        teacher: teacher.as_ref(),
        settings,
        checkpoint: Some(checkpoint.clone()),
        key,
    };
    let outcome = fine_tune(&run, &score_fn, ctx.cancel, &on_event)?;
    ctx.cancel.check()?;
    // The score of the returned weights (the best epoch's under early stopping).
    let scored_at = Instant::now();
    let after = scorer.score(&outcome.model, ctx.cancel)?;
    let eval_seconds = scored_at.elapsed().as_secs_f64();
    let step = settings.step_name();
    let params: u64 = outcome
        .model
        .weights()
        .map(|(_, w)| w.array.len() as u64)
        .sum();
    let (id, output) = {
        let mut ws = lock(workspace);
        let parent_costs = ws.variant(*variant).map(|v| v.macs);
        let id = ws.add_variant(*variant, &step, &outcome.model)?;
        ws.set_costs(id, parent_costs.flatten(), Some(params))?;
        ws.record_result(
            id,
            EvalRecord {
                dataset: data.display().to_string(),
                dataset_fingerprint: scorer.data().fingerprint(),
                subset: Subset::Evaluation.name().to_string(),
                split,
                score: after.clone(),
                seconds: eval_seconds,
                samples_per_second: after.samples as f64 / eval_seconds.max(1e-9),
                batch_size: options.batch_size,
                threads: options.threads,
                reference: Some(variant.to_string()),
                when: now(),
            },
        )?;
        let output = ws.variant(id).map(|v| ws.model_path(v));
        (id, output)
    };
    // A finished run needs no resume point.
    let _ = std::fs::remove_file(&checkpoint);
    let final_loss = outcome.history.last().map(|r| r.loss);
    ctx.log(format!(
        "{step}: {metric} {:.4} → {:.4} → variant {id}",
        scorer.value(&before),
        scorer.value(&after)
    ));
    Ok(json!({
        "variant": id,
        "parent": variant,
        "step": step,
        "output": output.map(|p| p.display().to_string()),
        "metric": metric,
        "score_before": scorer.value(&before),
        "score_after": scorer.value(&after),
        "before": before,
        "after": after,
        "accuracy": after.accuracy,
        "agreement": after.agreement,
        "loss": final_loss,
        "epochs": outcome.history,
        "best_epoch": outcome.best_epoch,
        "stopped_early": outcome.stopped_early,
        "steps_per_epoch": outcome.steps_per_epoch,
        "trained_params": outcome.params,
        "params_total": params,
        "train_samples": train.data.len(),
        "samples": after.samples,
        "settings": settings,
        "seconds": started.elapsed().as_secs_f64(),
        "workspace": ws_dir.display().to_string(),
        "dataset": data.display().to_string(),
    }))
}

/// The parent's first output on the training samples, the distillation targets.
fn parent_rows(
    model: &Model,
    data: &crate::data::Dataset,
    options: RunOptions,
    ctx: &JobCtx,
) -> Result<ndarray::Array2<f32>> {
    crate::experiment::evaluate::check_fits(model, data)?;
    let compiled = CompiledModel::compile(model, &sample_shapes(data), options.batch_size, &[])?;
    let run = compiled.run_dataset(data, options, ctx.cancel, &|_, _| {})?;
    let first = run.outputs.into_iter().next().ok_or_else(|| {
        Error::runtime(format!("{}: the model produced no output", model.source()))
    })?;
    as_rows(&first, &compiled.output_names()[0])
}
