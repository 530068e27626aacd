//! The eval-score dictionary of a greedy compress job as a grid (layer × candidate ratio),
//! filled from the job's `Partial` events as entries are computed or reused, so the layers
//! pane can draw it while the job runs.

use qsteer::compress::greedy::dictionary::Entry;
use qsteer::compress::record::CompressionRecord;
use qsteer::compress::LayerRatios;
use qsteer::jobs::{DictionaryPlan, JobId};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct HeatGrid {
    /// The compress job filling it; `None` when read from a variant's record.
    pub job: Option<JobId>,
    /// The number the scores are (`accuracy`, `agreement`).
    pub metric: String,
    /// The uncompressed model's score.
    pub baseline: f64,
    pub layers: Vec<String>,
    pub ratios: Vec<f64>,
    /// `scores[layer][ratio]`, `None` until its entry arrives.
    pub scores: Vec<Vec<Option<f64>>>,
    /// Per layer, the index of the ratio the selection chose (once the job finished).
    pub chosen: Vec<Option<usize>>,
}

impl HeatGrid {
    /// An empty grid from the job's plan event (`{"dictionary": {layers, candidates, …}}`).
    pub fn from_plan(job: JobId, d: &DictionaryPlan) -> HeatGrid {
        let (layers, ratios) = (d.layers.clone(), d.candidates.clone());
        HeatGrid {
            job: Some(job),
            metric: match d.metric.as_str() {
                "" => "score".to_string(),
                m => m.to_string(),
            },
            baseline: d.baseline,
            scores: vec![vec![None; ratios.len()]; layers.len()],
            chosen: vec![None; layers.len()],
            layers,
            ratios,
        }
    }

    /// The grid of a compressed variant: the dictionary cache file its record names
    /// (`{"header": {"candidates"}, "entries": [{layer, ratio, score}]}`), the layers in the
    /// order the entries were computed, the record's ratios marked.
    pub fn from_record(record: &CompressionRecord, file: &Value) -> Option<HeatGrid> {
        let ratios: Vec<f64> =
            serde_json::from_value(file.get("header")?.get("candidates")?.clone()).ok()?;
        let entries = file.get("entries")?.as_array()?;
        let mut layers: Vec<String> = Vec::new();
        for e in entries {
            let l = e["layer"].as_str()?;
            if !layers.iter().any(|x| x == l) {
                layers.push(l.to_string());
            }
        }
        let parent = &record.parent_score;
        // The record's metric names the number its scores are (old records: accuracy or
        // agreement, which `value` reads the same way).
        let baseline = match record.metric.name() {
            "accuracy" => parent.accuracy,
            "agreement" if parent.metric.is_none() => parent.agreement,
            _ => parent.value(),
        };
        let mut g = HeatGrid {
            job: None,
            metric: record.metric.name().to_string(),
            baseline: baseline.unwrap_or(0.0),
            scores: vec![vec![None; ratios.len()]; layers.len()],
            chosen: vec![None; layers.len()],
            layers,
            ratios,
        };
        for e in entries {
            if let (Some(layer), Some(ratio), Some(score)) = (
                e["layer"].as_str(),
                e["ratio"].as_f64(),
                e["score"].as_f64(),
            ) {
                g.fill_cell(layer, ratio, score);
            }
        }
        g.choose(&record.ratios);
        Some(g)
    }

    /// Fill one cell from a dictionary entry (the compress job's `DictionaryEntry` partial);
    /// false when the entry is not in this grid.
    pub fn fill(&mut self, e: &Entry) -> bool {
        self.fill_cell(&e.layer, e.ratio, e.score)
    }

    fn fill_cell(&mut self, layer: &str, ratio: f64, score: f64) -> bool {
        match (self.layer_index(layer), self.ratio_index(ratio)) {
            (Some(l), Some(r)) => {
                self.scores[l][r] = Some(score);
                true
            }
            _ => false,
        }
    }

    /// Mark the chosen ratios from the job's summary (`"ratios": {layer: ratio}`).
    pub fn choose(&mut self, ratios: &LayerRatios) {
        for (layer, &r) in ratios {
            if let (Some(l), Some(r)) = (self.layer_index(layer), self.ratio_index(r)) {
                self.chosen[l] = Some(r);
            }
        }
    }

    fn layer_index(&self, layer: &str) -> Option<usize> {
        self.layers.iter().position(|l| l == layer)
    }

    /// Ratios are k/N, so they compare to the plan's within rounding.
    fn ratio_index(&self, ratio: f64) -> Option<usize> {
        self.ratios.iter().position(|r| (r - ratio).abs() < 1e-9)
    }

    /// Cells filled so far, of all.
    pub fn filled(&self) -> (usize, usize) {
        let done = self.scores.iter().flatten().filter(|s| s.is_some()).count();
        (done, self.layers.len() * self.ratios.len())
    }

    /// The worst and best score filled so far (the colour scale's ends).
    pub fn range(&self) -> Option<(f64, f64)> {
        let mut it = self.scores.iter().flatten().flatten().copied();
        let first = it.next()?;
        Some(it.fold((first, first), |(lo, hi), s| (lo.min(s), hi.max(s))))
    }
}

/// What `Effect::LoadCompression` reads, off the UI thread: the variant's record and the
/// grid of its cached dictionary (absent when the cache file is gone or unreadable).
pub fn load(ws: &qsteer::experiment::Workspace, id: u32) -> qsteer::Result<super::action::Action> {
    let record = ws.compression(id)?;
    let grid = record.as_ref().and_then(|r| {
        let file = r.dictionary.as_ref()?.file.as_ref()?;
        let json: Value = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
        HeatGrid::from_record(r, &json)
    });
    Ok(super::action::Action::Compression(
        id,
        record.map(Box::new),
        grid,
    ))
}
