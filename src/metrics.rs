//! Scores of model outputs: accuracy against labels, fidelity to a reference (the FP32 parent).
//!
//! Ranking rule, used by every function here: class `j` ranks ahead of class `l` when
//! `logit[j] > logit[l]`, or when they are equal and `j < l` (lower index wins ties, like
//! `np.argmax`). NaN ranks below every number. So a tie never counts as correct for more than
//! `k` classes, and `top_k_accuracy(.., 1)` agrees with [`argmax_rows`].

use ndarray::{ArrayD, ArrayView, ArrayView1, ArrayView2, Dimension};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::cancel::CancelToken;
use crate::{Error, Result};

pub mod external;
pub mod fidelity;
pub mod state_outputs;

pub use fidelity::{
    output_fidelity, output_kind, MetricChoice, MetricSpec, OutputKind, OutputScore,
};

/// The largest |SQNR| reported in JSON: identical outputs give +inf dB, which JSON cannot hold.
pub const SQNR_DB_CAP: f64 = 200.0;

/// NaN sorts below everything, including -inf.
fn ahead(a: f32, a_index: usize, b: f32, b_index: usize) -> bool {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => a_index < b_index,
        (true, false) => false,
        (false, true) => true,
        (false, false) => a > b || (a == b && a_index < b_index),
    }
}

/// How many classes rank ahead of class `label` in `row` (0 = it is the top-1).
fn rank_of(row: ArrayView1<f32>, label: usize) -> usize {
    let Some(&own) = row.get(label) else {
        return usize::MAX;
    };
    row.iter()
        .enumerate()
        .filter(|&(j, &v)| ahead(v, j, own, label))
        .count()
}

/// Index of the top class of each row (lowest index among equal maxima; 0 for empty rows).
pub fn argmax_rows(logits: ArrayView2<f32>) -> Vec<usize> {
    logits
        .rows()
        .into_iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(None, |best: Option<(usize, f32)>, (j, &v)| match best {
                    Some((b, bv)) if !ahead(v, j, bv, b) => Some((b, bv)),
                    _ => Some((j, v)),
                })
                .map_or(0, |(j, _)| j)
        })
        .collect()
}

/// Fraction of rows whose label ranks among the top `k` (see the module doc for ties).
/// Labels outside `0..C` count as wrong; rows without a label (or labels without a row) are
/// ignored. 0.0 for no samples. [`score_outputs`] validates shapes and labels first.
pub fn top_k_accuracy(logits: ArrayView2<f32>, labels: &[i64], k: usize) -> f64 {
    let n = logits.nrows().min(labels.len());
    if n == 0 {
        return 0.0;
    }
    let correct = logits
        .rows()
        .into_iter()
        .zip(labels)
        .filter(|(row, &label)| usize::try_from(label).is_ok_and(|l| rank_of(*row, l) < k))
        .count();
    correct as f64 / n as f64
}

/// Fraction of rows where `a` and `b` pick the same top-1 class. Compares the first
/// `min(rows)` rows; 0.0 when there are none.
pub fn agreement(a: ArrayView2<f32>, b: ArrayView2<f32>) -> f64 {
    let (top_a, top_b) = (argmax_rows(a), argmax_rows(b));
    let n = top_a.len().min(top_b.len());
    if n == 0 {
        return 0.0;
    }
    let same = top_a.iter().zip(&top_b).filter(|(x, y)| x == y).count();
    same as f64 / n as f64
}

/// Signal-to-quantization-noise ratio in dB: 10·log10(Σref² / Σ(ref−test)²), summed in f64
/// over element pairs. +inf when identical (clamp with [`clamp_db`] before JSON), NaN if
/// either side has NaN.
pub fn sqnr_db<D: Dimension>(reference: ArrayView<f32, D>, test: ArrayView<f32, D>) -> f64 {
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for (&r, &t) in reference.iter().zip(test.iter()) {
        let (r, t) = (f64::from(r), f64::from(t));
        signal += r * r;
        noise += (r - t) * (r - t);
    }
    if noise == 0.0 && signal == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (signal / noise).log10()
}

/// A dB value JSON can hold: ±inf become ±[`SQNR_DB_CAP`], NaN (a broken output) becomes
/// −[`SQNR_DB_CAP`].
pub fn clamp_db(db: f64) -> f64 {
    if db.is_nan() {
        -SQNR_DB_CAP
    } else {
        db.clamp(-SQNR_DB_CAP, SQNR_DB_CAP)
    }
}

/// The score of one variant on one dataset, as reported in results and `--json`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Score {
    /// Top-1 accuracy in 0..1 (labels only).
    pub accuracy: Option<f64>,
    /// Top-5 accuracy in 0..1 (labels and more than 5 classes only).
    pub top5_accuracy: Option<f64>,
    /// Top-1 agreement with the reference outputs, 0..1.
    pub agreement: Option<f64>,
    /// Output SQNR vs the reference, clamped to ±[`SQNR_DB_CAP`].
    pub sqnr_db: Option<f64>,
    pub samples: usize,
    /// The number that ranks this score (greedy selection, sweeps, drops): `accuracy`,
    /// `agreement` (top-1), `per_position`, `map_agreement`, `cosine`, `sqnr` or `external`;
    /// several outputs' names joined by `+` (the minimum over them ranks). Absent in
    /// records written before it existed: accuracy if there is one, else agreement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The value of `metric` (a fraction; dB for `sqnr`; the command's for `external`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_value: Option<f64>,
    /// Mean per-sample cosine similarity to the reference (minimum over outputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosine: Option<f64>,
    /// Per output: its fidelity to the reference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputScore>,
    /// The external metric command's other keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Score {
    /// The metric's name (see [`Score::metric`]); `None` when nothing scored the outputs.
    pub fn metric_name(&self) -> Option<&str> {
        match &self.metric {
            Some(m) => Some(m.as_str()),
            None if self.accuracy.is_some() => Some("accuracy"),
            None if self.agreement.is_some() => Some("agreement"),
            None => None,
        }
    }

    /// The value that ranks this score (see [`Score::metric`]).
    pub fn value(&self) -> Option<f64> {
        match self.metric.as_deref() {
            None => self.accuracy.or(self.agreement),
            Some("accuracy") => self.accuracy,
            Some(_) => self.metric_value,
        }
    }

    /// Whether the metric's points are percent (see [`is_fraction_metric`]).
    pub fn is_fraction(&self) -> bool {
        is_fraction_metric(self.metric_name().unwrap_or("accuracy"))
    }

    /// The value for people: `97.50 %`, `31.2 dB`, `0.734`.
    pub fn display_value(&self) -> Option<String> {
        self.value()
            .map(|v| format_metric_value(self.metric_name().unwrap_or("accuracy"), v))
    }
}

impl Score {
    /// The keys a job's JSON document adds for this score beside `accuracy`, `agreement`
    /// and `sqnr_db`: `metric`, `metric_value`, `cosine`, `outputs` (per output) and
    /// `external` (the command's other keys), where known. Keys already in `doc` stay.
    pub fn add_json_fields(&self, doc: &mut serde_json::Value) {
        let Some(obj) = doc.as_object_mut() else {
            return;
        };
        let mut put = |k: &str, v: serde_json::Value| {
            obj.entry(k.to_string()).or_insert(v);
        };
        put("agreement", serde_json::json!(self.agreement));
        put("sqnr_db", serde_json::json!(self.sqnr_db));
        put("metric", serde_json::json!(self.metric_name()));
        put("metric_value", serde_json::json!(self.value()));
        put("cosine", serde_json::json!(self.cosine));
        if !self.outputs.is_empty() {
            put("outputs", serde_json::json!(self.outputs));
        }
        if let Some(e) = &self.external {
            put("external", serde_json::Value::Object(e.clone()));
        }
    }

    /// The fidelity / metric part of a result line, e.g. `per_position 96.80 % (SQNR 31.2
    /// dB, cosine 0.9990)` or `external 0.7340`; `None` when neither was measured.
    pub fn fidelity_text(&self) -> Option<String> {
        let metric = self.metric_name()?;
        if metric == "accuracy" && self.agreement.is_none() {
            return None;
        }
        let mut extras = Vec::new();
        if let Some(d) = self.sqnr_db.filter(|_| metric != "sqnr") {
            extras.push(format!("SQNR {d:.1} dB"));
        }
        if let Some(c) = self.cosine.filter(|_| metric != "cosine") {
            extras.push(format!("cosine {c:.4}"));
        }
        let head = match metric {
            "accuracy" => format!(
                "agreement {}",
                format_metric_value("agreement", self.agreement.unwrap_or(0.0))
            ),
            m => format!(
                "{m} {}",
                format_metric_value(m, self.value().unwrap_or(0.0))
            ),
        };
        Some(if extras.is_empty() {
            head
        } else {
            format!("{head} ({})", extras.join(", "))
        })
    }
}

/// Whether a score made without a reference lacks the number `metric` ranks by: a fidelity
/// metric was chosen, or `auto` found no usable labels. (The external metric needs none.)
pub fn needs_reference(metric: &MetricSpec, score: &Score) -> bool {
    match metric.choice {
        MetricChoice::External => false,
        MetricChoice::Auto => score.accuracy.is_none(),
        _ => true,
    }
}

/// Whether a metric's points are percent (×100): all but `sqnr` (dB). The external
/// metric's scores count as fractions too (a mAP of 0.734 → 0.720 drops 1.4 points).
pub fn is_fraction_metric(name: &str) -> bool {
    !name.split('+').any(|m| m == "sqnr")
}

/// `97.50 %` for fractions, `31.2 dB` for SQNR, `0.7340` for the external metric.
pub fn format_metric_value(metric: &str, v: f64) -> String {
    if metric == "external" {
        format!("{v:.4}")
    } else if !is_fraction_metric(metric) {
        format!("{v:.1} dB")
    } else {
        format!("{:.2} %", 100.0 * v)
    }
}

/// How outputs are scored: the metric, and what an external command gets besides the
/// outputs (the dataset path and each evaluated sample's index in it).
#[derive(Debug, Clone, Default)]
pub struct Scoring {
    pub metric: MetricSpec,
    pub data: PathBuf,
    /// Dataset index per evaluated sample; empty: 0..N.
    pub indices: Vec<usize>,
    /// Outputs holding a state, scored as dense values whatever their shape
    /// ([`state_outputs::state_outputs`]).
    pub states: std::collections::BTreeSet<String>,
}

/// Labels against a model's first output when it is `[N, C]` class scores (the only
/// output labels are scored on): a label outside `0..C` names its file and index there.
pub fn check_labels_fit(
    data: &crate::data::Dataset,
    outputs: &[(String, ndarray::ArrayD<f32>)],
) -> Result<()> {
    let Some((_, first)) = outputs.first() else {
        return Ok(());
    };
    if output_kind(first.shape()) != OutputKind::Classes {
        return Ok(());
    }
    let n = first.shape().first().copied().unwrap_or(0).max(1);
    data.check_labels(first.len() / n)
}

/// Score a model's outputs (names and arrays, samples on axis 0, in output order) against
/// labels and/or the reference model's outputs, with `scoring`'s metric:
/// - labels give top-1 / top-5 accuracy when the first output is `[N, C]` (see
///   [`output_kind`]); for other outputs they are not used (labels are one class per sample).
/// - a reference gives the per-output fidelity ([`output_fidelity`]); `agreement`,
///   `sqnr_db` and `cosine` are the minimum over the outputs.
/// - the ranking value: the external command's score for `external`; accuracy for `auto`
///   with usable labels; else the fidelity (minimum over outputs).
pub fn score_all(
    outputs: &[(String, ArrayD<f32>)],
    labels: Option<&[i64]>,
    reference: Option<&[(String, ArrayD<f32>)]>,
    scoring: &Scoring,
    cancel: &CancelToken,
) -> Result<Score> {
    let (first_name, first) = outputs
        .first()
        .ok_or_else(|| Error::runtime("the model produced no output"))?;
    let n = first.shape().first().copied().unwrap_or(0);
    let mut score = Score {
        samples: n,
        ..Score::default()
    };
    if let Some(labels) = labels {
        if output_kind(first.shape()) == OutputKind::Classes {
            let rows = first
                .to_shape((n, first.len().checked_div(n).unwrap_or(0)))
                .map_err(|e| Error::runtime(format!("output '{first_name}': {e}")))?;
            let s = score_outputs(rows.view(), Some(labels), None)?;
            score.accuracy = s.accuracy;
            score.top5_accuracy = s.top5_accuracy;
        }
    }
    let choice = scoring.metric.choice;
    if let Some(reference) = reference {
        if reference.len() != outputs.len() {
            return Err(Error::runtime(format!(
                "the reference has {} output(s), the model {}",
                reference.len(),
                outputs.len()
            )));
        }
        let per: Vec<OutputScore> = outputs
            .iter()
            .zip(reference)
            .map(|((name, o), (_, r))| {
                let state = scoring.states.contains(name);
                fidelity::output_fidelity_of(name, o.view(), r.view(), choice, state)
            })
            .collect::<Result<_>>()?;
        let min = |f: &dyn Fn(&OutputScore) -> Option<f64>| {
            per.iter()
                .filter_map(f)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))))
        };
        score.agreement = min(&|o| o.agreement);
        score.sqnr_db = min(&|o| Some(o.sqnr_db));
        score.cosine = min(&|o| Some(o.cosine));
        let mut names: Vec<&str> = Vec::new();
        for o in &per {
            if !names.contains(&o.metric.as_str()) {
                names.push(&o.metric);
            }
        }
        score.metric = Some(names.join("+"));
        score.metric_value = min(&|o| Some(o.value));
        score.outputs = per;
    }
    if choice == MetricChoice::Auto && score.accuracy.is_some() {
        score.metric = Some("accuracy".into());
        score.metric_value = score.accuracy;
    }
    if choice == MetricChoice::External {
        let command = scoring.metric.command.as_deref().ok_or_else(|| {
            Error::input("--metric external needs the command: --metric-command 'TEMPLATE'")
        })?;
        // The samples' dataset indices even when an output has several rows per sample
        // (a fixed-batch model whose output is time-major): the command sees rows = k × samples.
        let indices: Vec<usize> = if scoring.indices.is_empty() {
            (0..n).collect()
        } else {
            scoring.indices.clone()
        };
        let answer = external::run_metric(
            command,
            &external::MetricInput {
                outputs,
                indices: &indices,
                data: &scoring.data,
            },
            cancel,
        )?;
        score.metric = Some("external".into());
        score.metric_value = Some(answer.score);
        score.external = (!answer.extra.is_empty()).then_some(answer.extra);
    }
    Ok(score)
}

/// Score `[N, C]` outputs against labels and/or reference outputs of the same shape.
pub fn score_outputs(
    outputs: ArrayView2<f32>,
    labels: Option<&[i64]>,
    reference: Option<ArrayView2<f32>>,
) -> Result<Score> {
    let (n, classes) = outputs.dim();
    if n == 0 || classes == 0 {
        return Err(Error::runtime(format!(
            "cannot score outputs of shape [{n}, {classes}]: need at least one sample and one class"
        )));
    }
    if let Some(labels) = labels {
        if labels.len() != n {
            return Err(Error::input(format!(
                "{} labels for {n} model outputs; expected one label per sample",
                labels.len()
            )));
        }
        let out_of_range = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::try_from(l).map_or(true, |l| l >= classes));
        if let Some((i, label)) = out_of_range {
            return Err(Error::input(format!(
                "label {label} at sample {i} is out of range: the model outputs {classes} \
                 classes (labels must be 0..{})",
                classes - 1
            )));
        }
    }
    if let Some(reference) = reference {
        if reference.dim() != outputs.dim() {
            return Err(Error::runtime(format!(
                "reference outputs have shape {:?} but outputs have {:?}",
                reference.shape(),
                outputs.shape()
            )));
        }
    }
    Ok(Score {
        accuracy: labels.map(|l| top_k_accuracy(outputs, l, 1)),
        top5_accuracy: labels
            .filter(|_| classes > 5)
            .map(|l| top_k_accuracy(outputs, l, 5)),
        agreement: reference.map(|r| agreement(outputs, r)),
        sqnr_db: reference.map(|r| clamp_db(sqnr_db(r, outputs))),
        samples: n,
        ..Score::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2, IxDyn};

    #[test]
    fn argmax_takes_the_first_maximum_and_skips_nan() {
        let x = array![[1.0, 3.0, 3.0], [f32::NAN, -1.0, -2.0], [0.0, 0.0, 0.0]];
        assert_eq!(argmax_rows(x.view()), vec![1, 1, 0]);
        assert_eq!(argmax_rows(Array2::<f32>::zeros((2, 0)).view()), vec![0, 0]);
    }

    #[test]
    fn top_k_by_hand() {
        // 7 classes; label ranks: row0 0th, row1 2nd, row2 5th, row3 6th.
        let x = array![
            [9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            [9.0, 8.0, 7.0, 1.0, 1.0, 1.0, 1.0],
            [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0],
            [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0],
        ];
        let labels = [0, 2, 5, 6];
        assert_eq!(top_k_accuracy(x.view(), &labels, 1), 0.25);
        assert_eq!(top_k_accuracy(x.view(), &labels, 3), 0.5);
        assert_eq!(top_k_accuracy(x.view(), &labels, 5), 0.5);
        assert_eq!(top_k_accuracy(x.view(), &labels, 6), 0.75);
        assert_eq!(top_k_accuracy(x.view(), &labels, 7), 1.0);
        assert_eq!(top_k_accuracy(x.view(), &[-1, 99, 5, 6], 7), 0.5);
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        let x = array![[1.0, 1.0, 1.0, 0.0]];
        assert_eq!(top_k_accuracy(x.view(), &[0], 1), 1.0);
        assert_eq!(top_k_accuracy(x.view(), &[1], 1), 0.0);
        assert_eq!(top_k_accuracy(x.view(), &[2], 2), 0.0);
        assert_eq!(top_k_accuracy(x.view(), &[2], 3), 1.0);
        // All-equal outputs (e.g. a dead model) are right only for class 0 at top-1.
        let flat = Array2::<f32>::zeros((3, 10));
        assert_eq!(top_k_accuracy(flat.view(), &[0, 4, 9], 1), 1.0 / 3.0);
        assert_eq!(top_k_accuracy(flat.view(), &[0, 4, 9], 5), 2.0 / 3.0);
    }

    #[test]
    fn nan_label_logit_is_never_top() {
        let x = array![[f32::NAN, -5.0]];
        assert_eq!(top_k_accuracy(x.view(), &[0], 1), 0.0);
        assert_eq!(top_k_accuracy(x.view(), &[0], 2), 1.0);
    }

    #[test]
    fn agreement_by_hand() {
        let a = array![[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 3.0]];
        let b = array![[5.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0]];
        assert_eq!(agreement(a.view(), b.view()), 0.75);
        assert_eq!(agreement(a.view(), a.view()), 1.0);
    }

    #[test]
    fn sqnr_of_known_noise() {
        // Signal power 1 per element (±1), noise power 0.01 (±0.1): 20 dB.
        let r = Array2::from_shape_fn((4, 25), |(i, j)| if (i + j) % 2 == 0 { 1.0 } else { -1.0 });
        let t = Array2::from_shape_fn((4, 25), |(i, j)| {
            r[[i, j]] + if (i * 25 + j) % 3 == 0 { 0.1 } else { -0.1 }
        });
        assert!((sqnr_db(r.view(), t.view()) - 20.0).abs() < 1e-4);
        assert_eq!(sqnr_db(r.view(), r.view()), f64::INFINITY);
        // Works on any dimensionality.
        let r3 = r.clone().into_shape_with_order((2, 2, 25)).unwrap();
        let t3 = t.clone().into_shape_with_order((2, 2, 25)).unwrap();
        assert!((sqnr_db(r3.view(), t3.view()) - 20.0).abs() < 1e-4);
        assert_eq!(clamp_db(f64::INFINITY), SQNR_DB_CAP);
        assert_eq!(clamp_db(f64::NEG_INFINITY), -SQNR_DB_CAP);
        assert_eq!(clamp_db(f64::NAN), -SQNR_DB_CAP);
        assert_eq!(clamp_db(12.5), 12.5);
    }

    #[test]
    fn score_with_labels_and_reference() {
        let out = Array2::from_shape_fn((4, 10), |(i, j)| if j == i { 1.0 } else { 0.0 });
        let labels = [0, 1, 2, 9];
        let s = score_outputs(out.view(), Some(&labels), Some(out.view())).unwrap();
        assert_eq!(s.accuracy, Some(0.75));
        // Row 3: class 3 (1.0) and the 8 lower-index zeros rank ahead of label 9: rank 9.
        assert_eq!(s.top5_accuracy, Some(0.75));
        assert_eq!(s.agreement, Some(1.0));
        assert_eq!(s.sqnr_db, Some(SQNR_DB_CAP));
        assert_eq!(s.samples, 4);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["sqnr_db"], 200.0);
        assert_eq!(json["top5_accuracy"], 0.75);

        let s = score_outputs(out.view(), None, None).unwrap();
        assert_eq!((s.accuracy, s.agreement, s.samples), (None, None, 4));

        let small = Array2::<f32>::zeros((2, 3));
        let s = score_outputs(small.view(), Some(&[0, 1]), None).unwrap();
        assert_eq!(s.top5_accuracy, None, "top-5 of 3 classes says nothing");
    }

    #[test]
    fn an_external_metric_gets_one_index_per_sample_when_outputs_have_more_rows() {
        // 2 samples of a time-major model: 3 rows each, stacked.
        let outputs = vec![("y".to_string(), ArrayD::<f32>::zeros(IxDyn(&[6, 1, 3])))];
        let dir = tempfile::tempdir().unwrap();
        let two = dir.path().join("two.npy");
        crate::data::write_npy_i64(&two, &ArrayD::from_elem(IxDyn(&[2]), 0i64)).unwrap();
        let expected = std::fs::metadata(&two).unwrap().len() as f64;
        let scoring = Scoring {
            metric: MetricSpec::external(r#"echo "{{\"score\": $(wc -c < {indices})}}""#),
            data: dir.path().to_path_buf(),
            indices: vec![4, 9],
            ..Scoring::default()
        };
        let score = score_all(&outputs, None, None, &scoring, &CancelToken::new()).unwrap();
        assert_eq!(score.metric_value, Some(expected));
    }

    /// A state output shaped `[N, 1, C]` (an LSTM's `Y_h`, batch first) is scored by
    /// cosine, not by which hidden unit is largest; the same array as a sequence of class
    /// scores is scored per position.
    #[test]
    fn a_state_output_is_scored_by_cosine_not_by_argmax() {
        let reference =
            ArrayD::from_shape_vec(IxDyn(&[2, 1, 3]), vec![0.50, 0.49, -0.2, 0.1, 0.3, 0.29])
                .unwrap();
        // Every value within 0.02 of the reference; the largest unit flips in both samples.
        let out =
            ArrayD::from_shape_vec(IxDyn(&[2, 1, 3]), vec![0.49, 0.50, -0.2, 0.1, 0.29, 0.30])
                .unwrap();
        let outputs = vec![("hn".to_string(), out)];
        let reference = vec![("hn".to_string(), reference)];
        let score = |states: &[&str]| {
            let scoring = Scoring {
                states: states.iter().map(|s| s.to_string()).collect(),
                ..Scoring::default()
            };
            score_all(
                &outputs,
                None,
                Some(&reference),
                &scoring,
                &CancelToken::new(),
            )
            .unwrap()
        };
        let as_sequence = score(&[]);
        assert_eq!(as_sequence.metric.as_deref(), Some("per_position"));
        assert_eq!(as_sequence.metric_value, Some(0.0));
        let as_state = score(&["hn"]);
        assert_eq!(as_state.metric.as_deref(), Some("cosine"));
        let cosine = as_state.metric_value.unwrap();
        assert!(cosine > 0.99, "{cosine}");
        assert_eq!(as_state.outputs[0].agreement, None);
    }

    #[test]
    fn score_errors_name_counts() {
        let out = Array2::<f32>::zeros((3, 4));
        let e = score_outputs(out.view(), Some(&[0, 1]), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 labels for 3 model outputs"), "{e}");
        let e = score_outputs(out.view(), Some(&[0, 4, 1]), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("label 4 at sample 1") && e.contains("4 classes"),
            "{e}"
        );
        let e = score_outputs(out.view(), Some(&[0, -2, 1]), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("label -2"), "{e}");
        let other = Array2::<f32>::zeros((3, 5));
        let e = score_outputs(out.view(), None, Some(other.view()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[3, 5]") && e.contains("[3, 4]"), "{e}");
        let empty = Array2::<f32>::zeros((0, 4));
        assert!(score_outputs(empty.view(), None, None).is_err());
    }
}
