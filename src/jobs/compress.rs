//! The compress job: per-layer ratios for a target MAC ratio by greedy selection (or the
//! user's ratios), the compressed model scored against its parent, optionally refitted
//! layer-wise, kept as a child variant with its selection record. Each dictionary entry is
//! a log line and a `Partial` event, so the app can draw the dictionary while it fills.

use super::child::{record_child, Measured};
use super::event::{DictionaryPlan, Partial};
use super::exec::JobCtx;
use super::kind::JobKind;
use super::latency::{known_or_measured, measure_variant};
use super::lock;
use super::outcome::SlurmRun;
use crate::compress::build::{build_compressor, reconstruct_outcome, CompressorSpec};
use crate::compress::greedy::dictionary::Shard;
use crate::compress::greedy::selection_samples::{layers_left_out, selection_scorer};
use crate::compress::greedy::{
    candidates as candidate_ratios, check_target, fill_share, select_greedy, select_manual,
    DictionaryReport, GreedyEvent, GreedyRequest,
};
use crate::compress::record::CompressionRecord;
use crate::compress::scorer::ModelScorer;
use crate::compress::{ChangeDetail, LayerCompressor, LayerRatios, Skipped};
use crate::experiment::evaluate::{sample_shapes, select_samples, Subset};
use crate::experiment::quantsim::float_variant_path;
use crate::experiment::Workspace;
use crate::metrics::{OutputScore, Score};
use crate::model::Model;
use crate::runtime::latency::Latency;
use crate::runtime::RunOptions;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::Instant;

/// Builds the method's compressor; the job takes it as a parameter so tests can hand it a
/// double.
pub(crate) type Factory<'a> = &'a dyn Fn(&CompressorSpec) -> Result<Box<dyn LayerCompressor>>;

pub(crate) fn run(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<CompressionOutcome> {
    run_with(ctx, workspace, &build_compressor)
}

pub(crate) fn run_with(
    ctx: &JobCtx,
    workspace: &Mutex<Workspace>,
    factory: Factory,
) -> Result<CompressionOutcome> {
    compress_one(ctx, workspace, factory).map(|c| c.outcome)
}

/// One compressed child variant (its record, size and latency are in the workspace).
pub(crate) struct Compressed {
    pub id: u32,
    /// The compress job's result.
    pub outcome: CompressionOutcome,
}

/// What a compress job reports (the core of `qsteer compress --json`): the child variant,
/// the selection, the final score (after reconstruction when it ran) and the latencies.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CompressionOutcome {
    pub variant: u32,
    pub parent: u32,
    pub step: String,
    /// The child's model file.
    pub output: Option<String>,
    /// The layer-wise reconstruction's report (null when it did not run).
    pub reconstruction: Value,
    pub seconds: f64,
    pub workspace: String,
    pub dataset: String,
    pub latency: Option<Latency>,
    pub latency_ms: f64,
    pub parent_latency_ms: f64,
    pub latency_ratio: f64,
    /// `wsvd`, `ssvd` or `cp`.
    pub method: String,
    pub target: Option<f64>,
    pub mac_ratio: f64,
    pub predicted_mac_ratio: Option<f64>,
    pub macs: u64,
    pub macs_total: u64,
    pub macs_before: u64,
    pub params_total: u64,
    /// The number the selection compared.
    pub metric: String,
    pub accuracy: Option<f64>,
    pub top5_accuracy: Option<f64>,
    pub agreement: Option<f64>,
    pub sqnr_db: Option<f64>,
    pub cosine: Option<f64>,
    pub metric_value: Option<f64>,
    pub parent_metric_value: Option<f64>,
    /// Per output (null when the score has none).
    pub outputs: Option<Vec<OutputScore>>,
    pub external: Option<serde_json::Map<String, Value>>,
    pub samples: usize,
    /// The evaluation samples the greedy's dictionary was scored on (null without one).
    pub selection_samples: Option<usize>,
    /// The score before reconstruction, when it ran.
    pub before_reconstruction: Option<Score>,
    pub parent_accuracy: Option<f64>,
    pub threshold: Option<f64>,
    pub relaxed: Vec<String>,
    pub ratios: LayerRatios,
    pub pinned: LayerRatios,
    pub excluded: Vec<String>,
    pub layers: Vec<CompressedLayer>,
    pub skipped: Vec<Skipped>,
    pub dictionary: Option<DictionaryReport>,
    /// Dictionary entries computed by this run.
    pub evaluations: usize,
    /// Layers kept as they are because the dictionary's budget left them out of the search.
    pub left_out: Vec<String>,
    /// Set when the job ran on a Slurm node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmRun>,
}

/// One changed layer of a compress outcome: rank for the SVD methods, channels for pruning.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CompressedLayer {
    pub layer: String,
    pub ratio: f64,
    pub macs_before: u64,
    pub macs_after: u64,
    pub params_before: u64,
    pub params_after: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_rank: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_channels: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_channels: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub winnowed: Option<Vec<String>>,
}

/// What the selection made, in either mode.
struct Selected {
    outcome: crate::compress::CompressOutcome,
    ratios: LayerRatios,
    record: CompressionRecord,
}

/// The compress job's body for `ctx.kind` (a `Compress`): the child variant, its record
/// and latency (and the parent's, unless it has one measured the same way).
pub(crate) fn compress_one(
    ctx: &JobCtx,
    workspace: &Mutex<Workspace>,
    factory: Factory,
) -> Result<Compressed> {
    let JobKind::Compress {
        variant,
        data,
        method,
        target,
        ratios,
        pin,
        exclude,
        candidates,
        reconstruct,
        ..
    } = ctx.kind
    else {
        return Err(Error::runtime(
            "the compress job was handed another kind of job",
        ));
    };
    // Bad arguments fail before any sample is loaded.
    match (target, ratios) {
        (Some(t), None) => {
            check_target(*t)?;
            candidate_ratios(*candidates)?;
        }
        (None, Some(_)) => {}
        (Some(_), Some(_)) => {
            return Err(Error::input(
                "compress: give a --target or manual --ratios, not both",
            ))
        }
        (None, None) => {
            return Err(Error::input(
                "compress: give a --target MAC ratio or manual --ratios FILE",
            ))
        }
    }
    let started = Instant::now();
    let Setup {
        model,
        ws_dir,
        spec,
        compressor,
        scorer,
        split,
        samples,
    } = setup(workspace, ctx.kind, factory, ctx.cancel)?;
    let options = spec.options;
    ctx.log(format!(
        "{} of v{variant} on {samples} evaluation samples from {}, {} threads",
        ctx.kind.label(),
        data.display(),
        options.threads
    ));
    let cache_dir = ws_dir.join("cache");
    let mut left_out: Vec<String> = Vec::new();
    let selected = match (target, ratios) {
        (Some(t), _) => {
            let settings = spec.settings_key();
            let selection = selection_scorer(
                &model,
                compressor.as_ref(),
                &scorer,
                pin,
                exclude,
                *candidates,
                ctx.cancel,
            )?;
            if let Some(s) = &selection {
                ctx.log(format!(
                    "the dictionary is scored on the first {} of the {samples} evaluation \
                     samples (its size × the model's MACs exceed the budget); the result on all",
                    s.data().len()
                ));
            }
            let selection_data = selection.as_ref().unwrap_or(&scorer);
            left_out = layers_left_out(
                &model,
                compressor.as_ref(),
                scorer.sample_shapes(),
                selection_data.data().len(),
                pin,
                exclude,
                *candidates,
                *t,
                ctx.cancel,
            )?;
            if !left_out.is_empty() {
                ctx.log(format!(
                    "{} layer(s) with the fewest MACs left out of the search to fit the budget \
                     (kept as they are): {}",
                    left_out.len(),
                    left_out.join(", ")
                ));
            }
            let searched_exclude: Vec<String> = exclude.iter().chain(&left_out).cloned().collect();
            let req = GreedyRequest {
                model: &model,
                compressor: compressor.as_ref(),
                scorer: selection_data,
                target: *t,
                candidates: *candidates,
                pin,
                exclude: &searched_exclude,
                cache_dir: Some(&cache_dir),
                settings: &settings,
                changed_part_only: true,
            };
            greedy(ctx, &req, &scorer)?
        }
        (None, Some(r)) => {
            let (ratios, outcome) =
                select_manual(&model, compressor.as_ref(), r, pin, exclude, ctx.cancel)?;
            let record = record_of(&scorer, &outcome, &ratios, *method, None);
            Selected {
                outcome,
                ratios,
                record,
            }
        }
        (None, None) => unreachable!("checked above"),
    };
    let Selected {
        outcome,
        ratios,
        mut record,
    } = selected;
    record.pinned = pin.clone();
    record.excluded = exclude.clone();
    ctx.cancel.check()?;
    let scored_at = Instant::now();
    record.score = scorer.score(&outcome.model, ctx.cancel)?;
    let mut eval_seconds = scored_at.elapsed().as_secs_f64();
    ctx.log(format!(
        "{} layer(s) compressed: MAC ratio {:.3}, {}",
        outcome.changes.len(),
        outcome.mac_ratio(),
        score_text(&record.score, scorer.parent_score())
    ));
    let mut reconstruction = Value::Null;
    let model_out = if *reconstruct {
        let (refit, report) =
            reconstruct_outcome(&model, &outcome, &spec, ctx.cancel, &|stage, d, t| {
                ctx.progress(d, t, stage)
            })?;
        let scored_at = Instant::now();
        let s = scorer.score(&refit, ctx.cancel)?;
        eval_seconds = scored_at.elapsed().as_secs_f64();
        ctx.log(format!(
            "after layer-wise reconstruction: {}",
            score_text(&s, scorer.parent_score())
        ));
        record.reconstructed_score = Some(s);
        reconstruction = report;
        refit
    } else {
        outcome.model.clone()
    };
    ctx.cancel.check()?;
    let step = step_name(ctx.kind);
    let final_score = record
        .reconstructed_score
        .clone()
        .unwrap_or_else(|| record.score.clone());
    let (id, output, params) = lock(workspace).transaction(|ws| {
        let measured = Measured {
            data,
            scorer: &scorer,
            split,
            options,
            score: final_score,
            seconds: eval_seconds,
        };
        let r = record_child(
            ws,
            *variant,
            &step,
            &model_out,
            Some(outcome.macs_after),
            Some(measured),
        )?;
        ws.set_compression(r.id, &record)?;
        Ok((r.id, r.output, r.params))
    })?;
    ctx.log(format!(
        "{step}: MAC ratio {:.3} → variant {id}",
        outcome.mac_ratio()
    ));
    let shapes = &spec.sample_shapes;
    let parent_latency = known_or_measured(ctx, workspace, *variant, &model, shapes)?;
    let latency = measure_variant(ctx, workspace, id, &model_out, shapes)?;
    ctx.log(format!(
        "latency {:.3} ms (parent {:.3} ms), median of {} runs, batch {}, {} caller(s)",
        latency.median_ms, parent_latency.median_ms, latency.runs, latency.batch, latency.threads
    ));
    let mut outcome = outcome_of(&record, &ratios, params);
    outcome.variant = id;
    outcome.parent = *variant;
    outcome.step = step;
    outcome.output = output.map(|p| p.display().to_string());
    outcome.reconstruction = reconstruction;
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome.workspace = ws_dir.display().to_string();
    outcome.dataset = data.display().to_string();
    outcome.latency_ms = latency.median_ms;
    outcome.parent_latency_ms = parent_latency.median_ms;
    outcome.latency_ratio = latency.median_ms / parent_latency.median_ms.max(1e-9);
    outcome.latency = Some(latency);
    outcome.left_out = left_out;
    Ok(Compressed { id, outcome })
}

/// What a compress job works with: the parent model and its workspace, the compressor,
/// and the scorer on the evaluation samples.
struct Setup {
    model: Model,
    ws_dir: std::path::PathBuf,
    spec: CompressorSpec,
    compressor: Box<dyn LayerCompressor>,
    scorer: ModelScorer,
    split: Option<crate::data::SplitInfo>,
    samples: usize,
}

fn setup(
    workspace: &Mutex<Workspace>,
    kind: &JobKind,
    factory: Factory,
    cancel: &crate::cancel::CancelToken,
) -> Result<Setup> {
    let JobKind::Compress {
        variant,
        data,
        method,
        selection,
        calibration_size,
        seed,
        threads,
        ..
    } = kind
    else {
        return Err(Error::runtime(
            "the compress job was handed another kind of job",
        ));
    };
    let (path, ws_dir) = {
        let ws = lock(workspace);
        (
            float_variant_path(&ws, *variant, "compression")?,
            ws.dir().to_path_buf(),
        )
    };
    let model = super::load_model(workspace, &path)?;
    let mut options = RunOptions::default();
    if *threads > 0 {
        options.threads = *threads;
    }
    let eval = select_samples(data, Subset::Evaluation, *calibration_size, *seed)?;
    let spec = CompressorSpec {
        method: *method,
        sample_shapes: sample_shapes(&model, &eval.data)?,
        selection: selection.clone(),
        data: data.clone(),
        calibration_size: *calibration_size,
        seed: *seed,
        options,
    };
    let compressor = factory(&spec)?;
    let samples = eval.data.len();
    let split = eval.split.clone();
    let metric = super::job_metric(workspace, kind)?;
    let scoring =
        crate::experiment::evaluate::scoring_for(data, &eval, Subset::Evaluation, &metric);
    let scorer = ModelScorer::with_scoring(&model, eval.data, options, scoring, cancel)?;
    Ok(Setup {
        model,
        ws_dir,
        spec,
        compressor,
        scorer,
        split,
        samples,
    })
}

/// One share of a greedy compress job's eval-score dictionary, computed into the
/// workspace's cache (a Slurm array task runs this; the compress job that follows finds
/// the entries there). `progress(done, total)` counts the dictionary's positions.
pub fn fill_greedy_share(
    workspace: &Mutex<Workspace>,
    kind: &JobKind,
    shard: Shard,
    cancel: &crate::cancel::CancelToken,
    progress: &dyn Fn(usize, usize),
) -> Result<Value> {
    let JobKind::Compress {
        target: Some(target),
        candidates,
        pin,
        exclude,
        ..
    } = kind
    else {
        return Err(Error::input(
            "--shard fills a greedy selection's dictionary: give --target, not --ratios",
        ));
    };
    let s = setup(workspace, kind, &build_compressor, cancel)?;
    let settings = s.spec.settings_key();
    let cache_dir = s.ws_dir.join("cache");
    // The same samples as the compress job's, so the shards fill its dictionary's key.
    let selection = selection_scorer(
        &s.model,
        s.compressor.as_ref(),
        &s.scorer,
        pin,
        exclude,
        *candidates,
        cancel,
    )?;
    let selection_data = selection.as_ref().unwrap_or(&s.scorer);
    let left_out = layers_left_out(
        &s.model,
        s.compressor.as_ref(),
        s.scorer.sample_shapes(),
        selection_data.data().len(),
        pin,
        exclude,
        *candidates,
        *target,
        cancel,
    )?;
    let searched_exclude: Vec<String> = exclude.iter().chain(&left_out).cloned().collect();
    let req = GreedyRequest {
        model: &s.model,
        compressor: s.compressor.as_ref(),
        scorer: selection_data,
        target: *target,
        candidates: *candidates,
        pin,
        exclude: &searched_exclude,
        cache_dir: Some(&cache_dir),
        settings: &settings,
        changed_part_only: true,
    };
    let report = fill_share(&req, shard, cancel, &|ev| {
        if let GreedyEvent::Progress { done, total, .. } = ev {
            progress(done, total)
        }
    })?;
    Ok(json!({
        "shard": format!("{}/{}", shard.index, shard.count),
        "dictionary": report,
    }))
}

/// Run the greedy selection, reporting progress, and each dictionary entry as a log line
/// and a `Partial` event.
/// `scorer` scores the result on every evaluation sample (`req.scorer` may hold fewer).
fn greedy(ctx: &JobCtx, req: &GreedyRequest, scorer: &ModelScorer) -> Result<Selected> {
    let metric = req.scorer.metric();
    let metric = metric.name();
    let sel = select_greedy(req, ctx.cancel, &|ev| match ev {
        GreedyEvent::Plan {
            layers,
            candidates,
            baseline,
        } => ctx.partial(Partial::DictionaryPlan {
            dictionary: DictionaryPlan {
                layers: layers.to_vec(),
                candidates: candidates.to_vec(),
                metric: metric.to_string(),
                baseline,
            },
        }),
        GreedyEvent::Progress { done, total, what } => ctx.progress(done, total, what),
        GreedyEvent::Entry {
            entry, computed, ..
        } => {
            ctx.log(format!(
                "layer {} r={} {metric} {:.4} MACs {}{}",
                entry.layer,
                entry.ratio,
                entry.score,
                entry.macs_after,
                if computed { "" } else { " (cached)" }
            ));
            ctx.partial(Partial::DictionaryEntry {
                dictionary_entry: entry.clone(),
                computed,
            });
        }
    })?;
    let d = &sel.dictionary;
    ctx.log(format!(
        "dictionary {}: {} entries reused, {} evaluated in {:.1} s",
        &d.key[..16],
        d.reused,
        d.computed,
        d.seconds
    ));
    let predicted = sel.search.predicted_mac_ratio;
    let measured = sel.outcome.mac_ratio();
    if (predicted - measured).abs() > 1e-6 {
        ctx.log(format!(
            "note: predicted MAC ratio {predicted:.4}, measured {measured:.4}: the layers' \
             savings interact (e.g. pruning winnows a layer another pick also changes)"
        ));
    }
    let mut record = record_of(
        scorer,
        &sel.outcome,
        &sel.ratios,
        req.compressor.method(),
        Some(req.target),
    );
    record.predicted_mac_ratio = Some(predicted);
    record.threshold = sel.search.threshold;
    record.relaxed = sel.search.relaxed.clone();
    record.dictionary = Some(sel.dictionary.clone());
    Ok(Selected {
        outcome: sel.outcome,
        ratios: sel.ratios,
        record,
    })
}

fn record_of(
    scorer: &ModelScorer,
    outcome: &crate::compress::CompressOutcome,
    ratios: &LayerRatios,
    method: crate::compress::Method,
    target: Option<f64>,
) -> CompressionRecord {
    CompressionRecord {
        method,
        target,
        ratios: ratios.clone(),
        pinned: LayerRatios::new(),
        excluded: vec![],
        changes: outcome.changes.clone(),
        skipped: outcome.skipped.clone(),
        macs_before: outcome.macs_before,
        macs_after: outcome.macs_after,
        mac_ratio: outcome.mac_ratio(),
        predicted_mac_ratio: None,
        threshold: None,
        relaxed: vec![],
        dictionary: None,
        metric: scorer.metric(),
        parent_score: scorer.parent_score().clone(),
        score: scorer.parent_score().clone(),
        reconstructed_score: None,
    }
}

/// `ssvd{target:0.5}`, `cp{ratios:manual,reconstruct:true}`.
fn step_name(kind: &JobKind) -> String {
    let JobKind::Compress {
        method,
        target,
        reconstruct,
        ..
    } = kind
    else {
        return "compress".into();
    };
    let what = match target {
        Some(t) => format!("target:{t}"),
        None => "ratios:manual".into(),
    };
    let refit = if *reconstruct {
        ",reconstruct:true"
    } else {
        ""
    };
    format!("{}{{{what}{refit}}}", method.short())
}

/// e.g. `accuracy 97.50 % (parent 99.25 %), agreement 98.00 %`.
fn score_text(s: &Score, parent: &Score) -> String {
    let pct = |v: f64| format!("{:.2} %", 100.0 * v);
    let mut parts = Vec::new();
    if let Some(a) = s.accuracy {
        let p = parent
            .accuracy
            .map_or(String::new(), |p| format!(" (parent {})", pct(p)));
        parts.push(format!("accuracy {}{p}", pct(a)));
    }
    if let Some(f) = s.fidelity_text() {
        parts.push(f);
    }
    parts.join(", ")
}

/// The job's summary: scores, costs, the per-layer table and the dictionary's use.
/// The outcome's selection and score part, from the workspace's record of the child.
fn outcome_of(r: &CompressionRecord, ratios: &LayerRatios, params: u64) -> CompressionOutcome {
    let final_score = r.reconstructed_score.as_ref().unwrap_or(&r.score);
    let layers = (r.changes.iter())
        .map(|c| {
            let mut l = CompressedLayer {
                layer: c.layer.clone(),
                ratio: c.ratio,
                macs_before: c.macs_before,
                macs_after: c.macs_after,
                params_before: c.params_before,
                params_after: c.params_after,
                ..CompressedLayer::default()
            };
            match &c.detail {
                ChangeDetail::Rank { rank, full_rank } => {
                    l.rank = Some(*rank);
                    l.full_rank = Some(*full_rank);
                }
                ChangeDetail::Channels {
                    kept,
                    total,
                    winnowed,
                } => {
                    l.kept_channels = Some(kept.len());
                    l.total_channels = Some(*total);
                    l.winnowed = Some(winnowed.clone());
                }
            }
            l
        })
        .collect();
    CompressionOutcome {
        method: r.method.short().to_string(),
        target: r.target,
        mac_ratio: r.mac_ratio,
        predicted_mac_ratio: r.predicted_mac_ratio,
        macs: r.macs_after,
        macs_total: r.macs_after,
        macs_before: r.macs_before,
        params_total: params,
        metric: r.metric.name().to_string(),
        accuracy: final_score.accuracy,
        top5_accuracy: final_score.top5_accuracy,
        agreement: final_score.agreement,
        sqnr_db: final_score.sqnr_db,
        cosine: final_score.cosine,
        metric_value: final_score.value(),
        parent_metric_value: r.parent_score.value(),
        outputs: (!final_score.outputs.is_empty()).then(|| final_score.outputs.clone()),
        external: final_score.external.clone(),
        samples: final_score.samples,
        selection_samples: r.dictionary.as_ref().map(|d| d.samples),
        before_reconstruction: r.reconstructed_score.as_ref().map(|_| r.score.clone()),
        parent_accuracy: r.parent_score.accuracy,
        threshold: r.threshold,
        relaxed: r.relaxed.clone(),
        ratios: ratios.clone(),
        pinned: r.pinned.clone(),
        excluded: r.excluded.clone(),
        layers,
        skipped: r.skipped.clone(),
        dictionary: r.dictionary.clone(),
        evaluations: r.dictionary.as_ref().map_or(0, |d| d.computed),
        ..CompressionOutcome::default()
    }
}
