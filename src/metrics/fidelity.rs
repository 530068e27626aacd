//! Fidelity of a model's outputs to reference outputs (the FP32 parent), chosen by each
//! output's shape (see the README's "Scores without labels"):
//!
//! - `[N, C]` with C > 1 (also `[N, C, 1, 1]`: every sample dim but one is 1): top-1
//!   agreement, the fraction of samples whose argmax class is the reference's.
//! - rank 3 `[N, T, C]` with C > 1: per-position agreement, the argmax over the last axis
//!   at every (sample, position), compared over all N·T positions.
//! - anything else (`[N, 1]`, `[N, T, 1]`, `[N, 1, H, W]` probability maps, `[N, C, H, W]`
//!   feature maps): a dense map. When every reference value is in [0, 1] the score is the
//!   agreement of the maps thresholded at 0.5 (the fraction of elements on the same side);
//!   otherwise the mean per-sample cosine similarity (over all N values when a sample is
//!   one value).
//! - an output holding a state (an LSTM's `Y_h`/`Y_c`, an output shaped like a graph input:
//!   [`super::state_outputs`]): the mean per-sample cosine, whatever its shape.
//!
//! SQNR (dB over all elements) and the cosine similarity are reported for every output. With
//! several outputs each is scored on its own and the score is the **minimum** over them (a
//! change that breaks one head is a broken model).

use ndarray::{ArrayViewD, Axis, Ix2};
use serde::{Deserialize, Serialize};

use super::{agreement, clamp_db, sqnr_db};
use crate::{Error, Result};

/// Which number scores a model (`--metric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MetricChoice {
    /// Accuracy with labels on `[N, C]` outputs; without, the fidelity rule by output shape.
    #[default]
    Auto,
    /// Top-1 agreement of the flattened sample (today's classifier rule).
    Top1,
    /// Argmax agreement per position: the last axis of a rank-3 output, axis 1 (channels)
    /// of a rank ≥ 4 one.
    #[value(name = "per_position")]
    PerPosition,
    /// Output SQNR in dB.
    Sqnr,
    /// Mean per-sample cosine similarity.
    Cosine,
    /// Agreement of the thresholded maps (0.5 for maps in [0, 1], else 0: the sign).
    #[value(name = "map_agreement")]
    MapAgreement,
    /// The user's metric command (`--metric-command`).
    External,
}

impl MetricChoice {
    pub fn name(self) -> &'static str {
        match self {
            MetricChoice::Auto => "auto",
            MetricChoice::Top1 => "top1",
            MetricChoice::PerPosition => "per_position",
            MetricChoice::Sqnr => "sqnr",
            MetricChoice::Cosine => "cosine",
            MetricChoice::MapAgreement => "map_agreement",
            MetricChoice::External => "external",
        }
    }

    pub const ALL: [MetricChoice; 7] = [
        MetricChoice::Auto,
        MetricChoice::Top1,
        MetricChoice::PerPosition,
        MetricChoice::Sqnr,
        MetricChoice::Cosine,
        MetricChoice::MapAgreement,
        MetricChoice::External,
    ];
}

/// The metric a job scores with: a choice, and for `external` the command template.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MetricSpec {
    #[serde(default)]
    pub choice: MetricChoice,
    /// The external metric's command template (`{outputs}`, `{output}`, `{indices}`,
    /// `{data}`, `{workdir}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

impl MetricSpec {
    pub fn external(command: &str) -> MetricSpec {
        MetricSpec {
            choice: MetricChoice::External,
            command: Some(command.to_string()),
        }
    }

    /// An external choice has a (well-formed) command, and only it has one.
    pub fn validate(&self) -> Result<()> {
        match (self.choice, &self.command) {
            (MetricChoice::External, Some(c)) => super::external::check_template(c),
            (MetricChoice::External, None) => Err(Error::input(
                "--metric external needs the command: --metric-command 'TEMPLATE'",
            )),
            (other, Some(_)) => Err(Error::input(format!(
                "--metric-command is the external metric's; it cannot go with --metric {}",
                other.name()
            ))),
            _ => Ok(()),
        }
    }

    /// For people: `auto`, `cosine`, `external (sh my_map.sh {outputs})`.
    pub fn label(&self) -> String {
        match &self.command {
            Some(c) => format!("external ({c})"),
            None => self.choice.name().to_string(),
        }
    }
}

/// One output's fidelity to its reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputScore {
    pub output: String,
    pub shape: Vec<usize>,
    /// The metric that scored this output: `agreement` (top-1), `per_position`,
    /// `map_agreement`, `cosine` or `sqnr`.
    pub metric: String,
    /// Its value (a fraction; dB for `sqnr`).
    pub value: f64,
    /// The agreement figure for this shape (top-1, per position, or thresholded map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    pub sqnr_db: f64,
    pub cosine: f64,
    /// The threshold of the map agreement, where one was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
}

/// How an output of this shape is read (the `auto` rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// `[N, C]` (or `[N, C, 1, 1]`, …): one class per sample.
    Classes,
    /// `[N, T, C]`: one class per position.
    Sequence,
    /// Everything else.
    Dense,
    /// A recurrent or fed-back state, whatever its shape (never from [`output_kind`]: the
    /// graph tells, [`super::state_outputs`]): cosine.
    State,
}

/// The `auto` reading of an output of `shape` (N first).
pub fn output_kind(shape: &[usize]) -> OutputKind {
    let wide: Vec<usize> = (1..shape.len()).filter(|&i| shape[i] > 1).collect();
    match shape.len() {
        2 if shape[1] > 1 => OutputKind::Classes,
        3 if shape[2] > 1 => OutputKind::Sequence,
        r if r >= 4 && wide == [1] => OutputKind::Classes,
        _ => OutputKind::Dense,
    }
}

/// Agreement of the argmax over `axis` at every other position.
fn argmax_agreement(out: ArrayViewD<f32>, reference: ArrayViewD<f32>, axis: usize) -> Result<f64> {
    let rows = |a: ArrayViewD<f32>| -> Result<ndarray::Array2<f32>> {
        let mut moved = a.to_owned();
        let last = moved.ndim() - 1;
        moved.swap_axes(axis, last);
        let c = moved.shape()[last];
        let n = moved.len().checked_div(c).unwrap_or(0);
        let standard = moved.as_standard_layout().into_owned();
        standard
            .into_shape_with_order((n, c))
            .map_err(|e| Error::runtime(format!("outputs as positions: {e}")))?
            .into_dimensionality::<Ix2>()
            .map_err(|e| Error::runtime(format!("outputs as positions: {e}")))
    };
    Ok(agreement(rows(out)?.view(), rows(reference)?.view()))
}

/// Fraction of elements on the same side of `t`.
fn map_agreement(out: ArrayViewD<f32>, reference: ArrayViewD<f32>, t: f32) -> f64 {
    let n = out.len();
    if n == 0 {
        return 0.0;
    }
    let same = out
        .iter()
        .zip(reference.iter())
        .filter(|(&o, &r)| (o > t) == (r > t))
        .count();
    same as f64 / n as f64
}

/// Mean over samples of cos(out_i, ref_i); two all-zero samples count 1, one 0. With one
/// value per sample (`[N]`, `[N, 1]`: a probability, a score) a per-sample cosine is only
/// its sign, so the cosine is taken over the N values as one vector.
fn cosine(out: ArrayViewD<f32>, reference: ArrayViewD<f32>) -> f64 {
    let n = out.shape().first().copied().unwrap_or(0);
    if n == 0 {
        return 0.0;
    }
    if out.len() == n {
        return cosine_of(out.iter(), reference.iter());
    }
    let total: f64 = out
        .axis_iter(Axis(0))
        .zip(reference.axis_iter(Axis(0)))
        .map(|(o, r)| cosine_of(o.iter(), r.iter()))
        .sum();
    let mean = total / n as f64;
    if mean.is_nan() {
        -1.0
    } else {
        mean
    }
}

/// cos(a, b) of two value sequences; both all zero count 1, one of them 0.
fn cosine_of<'a>(a: impl Iterator<Item = &'a f32>, b: impl Iterator<Item = &'a f32>) -> f64 {
    let (mut dot, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    match (aa == 0.0, bb == 0.0) {
        (true, true) => 1.0,
        (true, false) | (false, true) => 0.0,
        _ => dot / (aa.sqrt() * bb.sqrt()),
    }
}

/// The threshold of a map: 0.5 when every reference value is in [0, 1], else 0.
fn map_threshold(reference: ArrayViewD<f32>) -> f32 {
    if reference.iter().all(|&v| (0.0..=1.0).contains(&v)) {
        0.5
    } else {
        0.0
    }
}

/// Score one output against its reference with `choice` (`auto`: by shape).
pub fn output_fidelity(
    name: &str,
    out: ArrayViewD<f32>,
    reference: ArrayViewD<f32>,
    choice: MetricChoice,
) -> Result<OutputScore> {
    output_fidelity_of(name, out, reference, choice, false)
}

/// [`output_fidelity`] of an output that may hold a state (`state`: the `auto` rule reads
/// it by cosine whatever its shape; see [`super::state_outputs`]).
pub fn output_fidelity_of(
    name: &str,
    out: ArrayViewD<f32>,
    reference: ArrayViewD<f32>,
    choice: MetricChoice,
    state: bool,
) -> Result<OutputScore> {
    if out.shape() != reference.shape() {
        return Err(Error::runtime(format!(
            "output '{name}': shape {:?}, the reference's is {:?}",
            out.shape(),
            reference.shape()
        )));
    }
    if out.shape().first().copied().unwrap_or(0) == 0 || out.is_empty() {
        return Err(Error::runtime(format!(
            "output '{name}': cannot score outputs of shape {:?}: no samples",
            out.shape()
        )));
    }
    let shape = out.shape().to_vec();
    let sqnr = clamp_db(sqnr_db(reference.view(), out.view()));
    let cos = cosine(out.view(), reference.view());
    let kind = if state {
        OutputKind::State
    } else {
        output_kind(&shape)
    };
    let flat_top1 = || -> Result<f64> {
        let n = shape[0];
        let c = out.len() / n;
        let o = out
            .to_shape((n, c))
            .map_err(|e| Error::runtime(e.to_string()))?;
        let r = reference
            .to_shape((n, c))
            .map_err(|e| Error::runtime(e.to_string()))?;
        Ok(agreement(o.view(), r.view()))
    };
    let per_position = || -> Result<f64> {
        match shape.len() {
            0..=2 => flat_top1(),
            3 => argmax_agreement(out.view(), reference.view(), 2),
            _ => argmax_agreement(out.view(), reference.view(), 1),
        }
    };
    let threshold = map_threshold(reference.view());
    let mut used_threshold = None;
    let mut map = || {
        used_threshold = Some(threshold);
        map_agreement(out.view(), reference.view(), threshold)
    };
    // The shape's own agreement figure.
    let (auto_metric, auto_agreement) = match kind {
        OutputKind::Classes => ("agreement", Some(flat_top1()?)),
        OutputKind::Sequence => ("per_position", Some(per_position()?)),
        OutputKind::Dense if threshold == 0.5 => ("map_agreement", Some(map())),
        OutputKind::Dense | OutputKind::State => ("cosine", None),
    };
    let (metric, value, agreement) = match choice {
        MetricChoice::Auto | MetricChoice::External => {
            (auto_metric, auto_agreement.unwrap_or(cos), auto_agreement)
        }
        MetricChoice::Top1 => {
            let a = flat_top1()?;
            ("agreement", a, Some(a))
        }
        MetricChoice::PerPosition => {
            let a = per_position()?;
            ("per_position", a, Some(a))
        }
        MetricChoice::MapAgreement => {
            let a = map();
            ("map_agreement", a, Some(a))
        }
        MetricChoice::Cosine => ("cosine", cos, auto_agreement),
        MetricChoice::Sqnr => ("sqnr", sqnr, auto_agreement),
    };
    Ok(OutputScore {
        output: name.to_string(),
        shape,
        metric: metric.to_string(),
        value,
        agreement,
        sqnr_db: sqnr,
        cosine: cos,
        threshold: used_threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, ArrayD, IxDyn};

    #[test]
    fn kinds_by_shape() {
        assert_eq!(output_kind(&[4, 10]), OutputKind::Classes);
        assert_eq!(output_kind(&[4, 10, 1, 1]), OutputKind::Classes);
        assert_eq!(output_kind(&[4, 25, 6625]), OutputKind::Sequence);
        assert_eq!(output_kind(&[4, 1]), OutputKind::Dense);
        assert_eq!(output_kind(&[4, 25, 1]), OutputKind::Dense);
        assert_eq!(output_kind(&[4, 1, 32, 32]), OutputKind::Dense);
        assert_eq!(output_kind(&[4, 8, 32, 32]), OutputKind::Dense);
        assert_eq!(output_kind(&[4, 1, 10]), OutputKind::Sequence);
    }

    /// [N, T, C]: 2 samples × 4 positions × 3 classes; the test differs at one position.
    /// The flattened argmax (old rule) compares one position per sample instead.
    #[test]
    fn per_position_counts_every_position() {
        let mut reference = ArrayD::<f32>::zeros(IxDyn(&[2, 4, 3]));
        for n in 0..2 {
            for t in 0..4 {
                reference[[n, t, (n + t) % 3]] = 1.0 + t as f32;
            }
        }
        let mut test = reference.clone();
        // Sample 0, position 3: class 0 (the reference's) → class 1.
        test[[0, 3, 0]] = 0.0;
        test[[0, 3, 1]] = 4.0;
        let s = output_fidelity("seq", test.view(), reference.view(), MetricChoice::Auto).unwrap();
        assert_eq!(s.metric, "per_position");
        assert_eq!(s.value, 7.0 / 8.0);
        // The old rule: one argmax over 12 values per sample; sample 0's maximum moved.
        let old =
            output_fidelity("seq", test.view(), reference.view(), MetricChoice::Top1).unwrap();
        assert_eq!(old.value, 0.5);
    }

    #[test]
    fn dense_probability_map_thresholds_at_half() {
        let reference = Array::from_shape_fn(IxDyn(&[2, 1, 2, 5]), |d| {
            (d[0] * 10 + d[2] * 5 + d[3]) as f32 / 20.0
        });
        let mut test = reference.clone();
        // One element crosses 0.5 (0.45 → 0.55), one moves without crossing.
        test[[0, 0, 1, 4]] = 0.55;
        test[[1, 0, 0, 1]] = 0.9;
        let s = output_fidelity("map", test.view(), reference.view(), MetricChoice::Auto).unwrap();
        assert_eq!(s.metric, "map_agreement");
        assert_eq!(s.threshold, Some(0.5));
        assert_eq!(s.value, 19.0 / 20.0);
        assert!(s.cosine > 0.9 && s.cosine < 1.0, "{}", s.cosine);
        assert!(s.sqnr_db > 5.0 && s.sqnr_db < 40.0, "{}", s.sqnr_db);
        // A feature map outside [0, 1] is scored by cosine.
        let features = reference.mapv(|v| v * 4.0 - 2.0);
        let s = output_fidelity("f", features.view(), features.view(), MetricChoice::Auto).unwrap();
        assert_eq!((s.metric.as_str(), s.value), ("cosine", 1.0));
        let s = output_fidelity("f", features.view(), features.view(), MetricChoice::Sqnr).unwrap();
        assert_eq!(
            (s.metric.as_str(), s.value),
            ("sqnr", super::super::SQNR_DB_CAP)
        );
    }

    #[test]
    fn cosine_by_hand_and_shape_mismatch() {
        let a = ndarray::array![[1.0f32, 0.0], [0.0, 2.0]].into_dyn();
        let b = ndarray::array![[1.0f32, 1.0], [0.0, 5.0]].into_dyn();
        let c = cosine(a.view(), b.view());
        assert!((c - (0.5f64.sqrt() + 1.0) / 2.0).abs() < 1e-9, "{c}");
        // One value per sample: the cosine of the N values, not N signs (which gave 1.0).
        let p = ndarray::array![[0.9f32], [0.1], [0.6]].into_dyn();
        let q = ndarray::array![[0.8f32], [0.4], [0.6]].into_dyn();
        let c = cosine(p.view(), q.view());
        let by_hand = (0.72 + 0.04 + 0.36) / ((1.18f64).sqrt() * (1.16f64).sqrt());
        assert!((c - by_hand).abs() < 1e-6 && c < 0.99, "{c}");
        let e = output_fidelity(
            "x",
            a.view(),
            b.slice(ndarray::s![.., ..1]).into_dyn(),
            MetricChoice::Auto,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("output 'x'"), "{e}");
    }
}
