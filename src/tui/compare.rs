//! The A/B comparison: cost and score side by side, how often the two variants' predictions
//! disagree on the evaluation set (and for which classes), per-layer MAC differences and,
//! where both have an analysis, per-layer SQNR differences.
//! Computed off the UI task from the workspace's files (`compute`), shown by the pane.

use qsteer::experiment::{Variant, Workspace};
use qsteer::model::Model;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct LayerDiff {
    pub name: String,
    pub macs_a: Option<u64>,
    pub macs_b: Option<u64>,
    /// Output SQNR (cumulative, dB) from each variant's stored analysis, if it has one.
    pub sqnr_a: Option<f64>,
    pub sqnr_b: Option<f64>,
    /// Per output channel, max − min of the layer's weights in each variant (CLE before
    /// and after); empty where the variant lacks the layer.
    pub ranges_a: Vec<f32>,
    pub ranges_b: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompareData {
    pub a: u32,
    pub b: u32,
    /// Samples both were evaluated on, and how many predictions differ.
    pub disagreement: Option<(usize, usize)>,
    /// Disagreements by the true class (or A's prediction when there are no labels).
    pub classes: Vec<(i64, usize)>,
    pub layers: Vec<LayerDiff>,
    pub macs_a: Option<u64>,
    pub macs_b: Option<u64>,
    pub note: Option<String>,
}

/// Compare variants `a` and `b` of the workspace. Reads small files and two models; run it
/// in a blocking task.
pub fn compute(ws: &Workspace, a: u32, b: u32) -> CompareData {
    let mut data = CompareData {
        a,
        b,
        disagreement: None,
        classes: vec![],
        layers: vec![],
        macs_a: None,
        macs_b: None,
        note: None,
    };
    let (Some(va), Some(vb)) = (ws.variant(a), ws.variant(b)) else {
        data.note = Some("unknown variant".into());
        return data;
    };
    match predictions_pair(ws, va, vb) {
        Some((pa, pb, labels)) => {
            let n = pa.len().min(pb.len());
            let mut by_class: BTreeMap<i64, usize> = BTreeMap::new();
            let mut differ = 0;
            for i in 0..n {
                if pa[i] != pb[i] {
                    differ += 1;
                    let class = labels
                        .as_ref()
                        .and_then(|l| l.get(i).copied())
                        .unwrap_or(pa[i]);
                    *by_class.entry(class).or_default() += 1;
                }
            }
            data.disagreement = Some((n, differ));
            let mut classes: Vec<(i64, usize)> = by_class.into_iter().collect();
            classes.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
            data.classes = classes;
        }
        None => {
            data.note = Some("evaluate both on the same data to see where they disagree".into())
        }
    }
    let layers = |v: &Variant| -> Option<Vec<LayerFacts>> {
        let m = Model::load(&ws.model_path(v)).ok()?;
        let s = m.shapes(None).ok()?;
        Some(
            m.layers(&s)
                .ok()?
                .into_iter()
                .map(|l| {
                    let ranges = super::init::channel_ranges(&m, &l);
                    (l.name, l.macs, ranges)
                })
                .collect(),
        )
    };
    if let (Some(la), Some(lb)) = (layers(va), layers(vb)) {
        data.macs_a = la.iter().map(|l| l.1).sum();
        data.macs_b = lb.iter().map(|l| l.1).sum();
        let mut names: Vec<String> = la.iter().map(|l| l.0.clone()).collect();
        for (n, _, _) in &lb {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let (sa, sb) = (sqnr_by_layer(ws, a), sqnr_by_layer(ws, b));
        let find = |list: &[LayerFacts], name: &str| {
            list.iter()
                .find(|l| l.0 == name)
                .map(|l| (l.1, l.2.clone()))
                .unwrap_or_default()
        };
        data.layers = names
            .into_iter()
            .map(|name| {
                let ((macs_a, ranges_a), (macs_b, ranges_b)) = (find(&la, &name), find(&lb, &name));
                LayerDiff {
                    macs_a,
                    macs_b,
                    ranges_a,
                    ranges_b,
                    sqnr_a: sa.get(&name).copied().flatten(),
                    sqnr_b: sb.get(&name).copied().flatten(),
                    name,
                }
            })
            .collect();
    }
    data
}

/// A layer's name, MACs and per-channel weight ranges in one variant.
type LayerFacts = (String, Option<u64>, Vec<f32>);

/// Cumulative output SQNR per layer from a variant's analysis (empty without one).
fn sqnr_by_layer(ws: &Workspace, id: u32) -> BTreeMap<String, Option<f64>> {
    ws.analysis(id)
        .ok()
        .flatten()
        .map(|a| a.layers.into_iter().map(|l| (l.layer, l.sqnr_db)).collect())
        .unwrap_or_default()
}

type Predictions = (Vec<i64>, Vec<i64>, Option<Vec<i64>>);

/// Predictions of both variants on the most recent dataset they were both evaluated on.
fn predictions_pair(ws: &Workspace, a: &Variant, b: &Variant) -> Option<Predictions> {
    for ra in a.results.iter().rev() {
        if let Some(rb) = b
            .results
            .iter()
            .rev()
            .find(|r| r.dataset_fingerprint == ra.dataset_fingerprint)
        {
            let pa = qsteer::experiment::load_predictions(ws.dir(), a.id, &ra.dataset_fingerprint)?;
            let pb = qsteer::experiment::load_predictions(ws.dir(), b.id, &rb.dataset_fingerprint)?;
            return Some((pa.predictions, pb.predictions, pa.labels));
        }
    }
    None
}
