//! The evaluation job: run a model over a dataset, score it (accuracy with labels,
//! fidelity to a reference model without), and measure throughput. Shared by the CLI
//! and the app, so both report the same numbers.

use crate::cancel::CancelToken;
use crate::data::{
    load_dataset, load_split, seeded_split, Dataset, NamedInput, Samples, SplitInfo, SplitKind,
};
use crate::metrics::{score_all, MetricSpec, Score, Scoring};
use crate::model::shapes::declared_dims;
use crate::model::Model;
use crate::runtime::{CompiledModel, RunOptions};
use crate::{Error, Result};
use ndarray::{ArrayD, Ix2};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which samples of a dataset to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Subset {
    Evaluation,
    Calibration,
    All,
}

impl Subset {
    pub fn name(self) -> &'static str {
        match self {
            Subset::Evaluation => "evaluation",
            Subset::Calibration => "calibration",
            Subset::All => "all",
        }
    }
}

/// The samples chosen from a dataset path, with how they were chosen.
pub struct Selected {
    pub data: Dataset,
    pub split: Option<SplitInfo>,
}

/// Load `path` and pick `subset` (split seeded unless the directory has an explicit
/// `calibration/` + `evaluation/` split).
pub fn select_samples(
    path: &Path,
    subset: Subset,
    calibration_size: usize,
    seed: u64,
) -> Result<Selected> {
    let explicit = path.join("calibration").is_dir() && path.join("evaluation").is_dir();
    if subset == Subset::All && !explicit {
        return Ok(Selected {
            data: load_dataset(path)?,
            split: None,
        });
    }
    let pair = load_split(path, calibration_size, seed)?;
    let data = match subset {
        Subset::Evaluation => pair.evaluation,
        Subset::Calibration => pair.calibration,
        Subset::All => concat_datasets(&pair.calibration, &pair.evaluation)?,
    };
    Ok(Selected {
        data,
        split: Some(pair.split),
    })
}

fn concat_datasets(a: &Dataset, b: &Dataset) -> Result<Dataset> {
    let inputs = a
        .inputs
        .iter()
        .zip(&b.inputs)
        .map(|(x, y)| {
            let source = format!("{}+{}", x.source, y.source);
            let data = Samples::concat(source.clone(), &x.data, &y.data)?;
            Ok(NamedInput {
                name: x.name.clone(),
                source,
                data,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let labels = match (&a.labels, &b.labels) {
        (Some(x), Some(y)) => Some(x.iter().chain(y).copied().collect()),
        _ => None,
    };
    Dataset::from_arrays(a.name.clone(), inputs, labels)
}

/// The dataset index of each sample `select_samples` picked (in its order): for a seeded
/// split, the sample's index in the whole dataset; for an explicit split, its position in
/// the part (`calibration/` then `evaluation/` for `all`).
pub fn sample_indices(split: Option<&SplitInfo>, subset: Subset, n: usize) -> Vec<usize> {
    let Some(split) = split.filter(|s| s.kind == SplitKind::Seeded) else {
        return (0..n).collect();
    };
    let total = split.calibration + split.evaluation;
    let s = seeded_split(total, split.calibration, split.seed.unwrap_or(0));
    let picked = match subset {
        Subset::Evaluation => s.evaluation,
        Subset::Calibration => s.calibration,
        Subset::All => s.calibration.into_iter().chain(s.evaluation).collect(),
    };
    if picked.len() == n {
        picked
    } else {
        (0..n).collect()
    }
}

/// How `selected`'s samples of `path` are scored with `metric`.
pub fn scoring_for(
    path: &Path,
    selected: &Selected,
    subset: Subset,
    metric: &MetricSpec,
) -> Scoring {
    Scoring {
        metric: metric.clone(),
        data: path.to_path_buf(),
        indices: sample_indices(selected.split.as_ref(), subset, selected.data.len()),
        states: Default::default(),
    }
}

/// Check the samples fit the model's declared inputs (a clear error before any work). A
/// scalar input takes one value per sample (data shape `[N]`).
pub fn check_fits(model: &Model, data: &Dataset) -> Result<()> {
    let order = data.model_order(&model.input_names()).ok();
    let expected: Vec<(String, Vec<Option<usize>>)> = model
        .inputs()
        .iter()
        .enumerate()
        .map(|(k, i)| {
            let fed = order
                .as_ref()
                .and_then(|o| o.get(k))
                .and_then(|&j| data.inputs.get(j));
            let mut dims = declared_dims(i).unwrap_or_default();
            if dims.is_empty() {
                // A scalar (or no declared shape): the batch axis, then what the data has.
                let rank = fed.map_or(1, |x| x.data.shape().len());
                dims = vec![None; rank.max(1)];
            }
            (i.name.clone(), dims)
        })
        .collect();
    data.check_against_model(&expected)
}

/// Per-sample input shapes, in `model`'s input order (named dataset inputs matched by name).
pub fn sample_shapes(model: &Model, data: &Dataset) -> Result<Vec<Vec<usize>>> {
    Ok(data
        .model_order(&model.input_names())?
        .into_iter()
        .map(|i| data.sample_shape(i).to_vec())
        .collect())
}

#[derive(Debug, Clone)]
pub struct EvalRequest {
    pub model: PathBuf,
    pub data: PathBuf,
    pub subset: Subset,
    pub reference: Option<PathBuf>,
    pub options: RunOptions,
    pub calibration_size: usize,
    pub seed: u64,
    /// How outputs are scored (`auto`: by labels and output shape).
    pub metric: MetricSpec,
}

pub struct EvalReport {
    pub score: Score,
    pub samples: usize,
    pub seconds: f64,
    pub samples_per_second: f64,
    /// The model's first output for every evaluated sample, in order.
    pub outputs: ArrayD<f32>,
    pub split: Option<SplitInfo>,
    pub dataset_fingerprint: String,
    pub fallback: Option<String>,
    pub has_labels: bool,
    /// The evaluated samples' labels, in order, if the dataset has them.
    pub labels: Option<Vec<i64>>,
    /// MACs per sample of the model's layers (None if a dim stayed symbolic).
    pub macs: Option<u64>,
    /// Float weight elements.
    pub params: u64,
    /// The per-sample input shapes the model ran at.
    pub input_shapes: Vec<Vec<usize>>,
}

impl EvalReport {
    /// The record kept on a variant for this evaluation of `dataset`'s `subset`.
    pub fn record(
        &self,
        dataset: &Path,
        subset: Subset,
        options: RunOptions,
        reference: Option<String>,
    ) -> super::EvalRecord {
        super::EvalRecord {
            dataset: dataset.display().to_string(),
            dataset_fingerprint: self.dataset_fingerprint.clone(),
            subset: subset.name().to_string(),
            split: self.split.clone(),
            score: self.score.clone(),
            seconds: self.seconds,
            samples_per_second: self.samples_per_second,
            batch_size: options.batch_size,
            threads: options.threads,
            reference,
            when: super::now(),
        }
    }
}

/// First output as `[N, C]` (trailing dims flattened) for scoring.
pub(crate) fn as_rows(out: &ArrayD<f32>, name: &str) -> Result<ndarray::Array2<f32>> {
    let n = out.shape().first().copied().unwrap_or(0);
    let c = out.len().checked_div(n).unwrap_or(0);
    out.to_shape((n, c))
        .map(|a| a.into_owned())
        .map_err(|e| Error::runtime(format!("output '{name}': {e}")))?
        .into_dimensionality::<Ix2>()
        .map_err(|e| Error::runtime(format!("output '{name}': {e}")))
}

/// A reference file opened as `model` was: specialised on the input values `model` records
/// (the user's file behind a specialised base variant still holds the `If`).
fn specialised_like(reference: Model, model: &Model, shapes: &[Vec<usize>]) -> Result<Model> {
    use crate::model::fixed_inputs;
    let Some(text) = fixed_inputs::recorded_in(model) else {
        return Ok(reference);
    };
    let values = fixed_inputs::parse_values(&text).map_err(Error::input)?;
    let (reference, _) =
        fixed_inputs::specialise_with(reference, &values, None, &values, Some(shapes))?;
    Ok(reference)
}

/// Run and score. `progress(done, total)` is called from worker threads.
pub fn evaluate(
    req: &EvalRequest,
    model: &Model,
    cancel: &CancelToken,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<EvalReport> {
    req.metric.validate()?;
    let selected = select_samples(&req.data, req.subset, req.calibration_size, req.seed)?;
    let mut scoring = scoring_for(&req.data, &selected, req.subset, &req.metric);
    scoring.states = crate::metrics::state_outputs::state_outputs(model);
    let data = selected.data;
    check_fits(model, &data)?;
    let shapes = sample_shapes(model, &data)?;
    let analysed = model.shapes(Some(&shapes))?;
    let macs = model.layers(&analysed)?.iter().map(|l| l.macs).sum();
    let params = model.weights().map(|(_, w)| w.array.len() as u64).sum();
    let compiled = CompiledModel::compile(model, &shapes, req.options.batch_size, &[])?;
    let run = compiled.run_dataset(&data, req.options, cancel, progress)?;
    if run.outputs.is_empty() {
        return Err(Error::runtime("the model produced no output"));
    }
    let outputs: Vec<(String, ArrayD<f32>)> = compiled
        .output_names()
        .iter()
        .cloned()
        .zip(run.outputs)
        .collect();
    let reference_outputs = match &req.reference {
        Some(path) => {
            let reference = specialised_like(Model::load(path)?, model, &shapes)?;
            check_fits(&reference, &data)?;
            let rc = CompiledModel::compile(&reference, &shapes, req.options.batch_size, &[])?;
            let rr = rc.run_dataset(&data, req.options, cancel, &|_, _| {})?;
            if rr.outputs.is_empty() {
                return Err(Error::runtime(format!(
                    "reference {} produced no output",
                    path.display()
                )));
            }
            Some(
                rc.output_names()
                    .iter()
                    .map(|n| format!("{n} of {}", path.display()))
                    .zip(rr.outputs)
                    .collect::<Vec<_>>(),
            )
        }
        None => None,
    };
    crate::metrics::check_labels_fit(&data, &outputs)?;
    let score = score_all(
        &outputs,
        data.labels.as_deref(),
        reference_outputs.as_deref(),
        &scoring,
        cancel,
    )?;
    let first = outputs
        .into_iter()
        .next()
        .map(|(_, a)| a)
        .unwrap_or_default();
    Ok(EvalReport {
        samples: run.samples,
        seconds: run.seconds,
        samples_per_second: if run.seconds > 0.0 {
            run.samples as f64 / run.seconds
        } else {
            0.0
        },
        score,
        outputs: first,
        split: selected.split,
        dataset_fingerprint: data.fingerprint()?,
        fallback: compiled.fallback.clone(),
        has_labels: data.labels.is_some(),
        labels: data.labels.clone(),
        macs,
        params,
        input_shapes: shapes,
    })
}
