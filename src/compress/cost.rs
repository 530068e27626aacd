//! The cost model of compression: MACs per sample and parameters per layer and for the
//! whole model, with memory (weight bytes, float32 as qsteer writes them) as a second
//! cost, and a before/after comparison that the CLI, the job report and the app print.
//! A layer whose MACs depend on a dimension left symbolic is listed as such, never guessed.

use crate::model::{Model, ModelShapes};
use crate::units::human;
use crate::Result;
use serde::Serialize;

/// Bytes per stored weight value (qsteer writes float32).
pub const BYTES_PER_PARAM: u64 = 4;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerCost {
    pub layer: String,
    /// The layer kind's label (`Conv`, `DWConv`, `Gemm`, …).
    pub op: String,
    /// MACs per sample; `None` when a non-batch dimension is symbolic.
    pub macs: Option<u64>,
    /// Weight and bias values.
    pub params: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCost {
    /// The compute layers in graph order.
    pub layers: Vec<LayerCost>,
    /// Sum of the layers' known MACs per sample.
    pub macs_total: u64,
    /// Layers whose MACs are unknown (symbolic dims): `macs_total` leaves them out.
    pub symbolic: Vec<String>,
    /// Every float constant of the model (layer weights, biases, normalization parameters).
    pub params_total: u64,
    pub memory_bytes: u64,
}

impl ModelCost {
    /// The cost of `model` with the shapes already analysed.
    pub fn of(model: &Model, shapes: &ModelShapes) -> Result<ModelCost> {
        let layers: Vec<LayerCost> = model
            .layers(shapes)?
            .into_iter()
            .map(|l| LayerCost {
                op: l.kind.label().to_string(),
                macs: l.macs,
                params: l.params,
                memory_bytes: l.params * BYTES_PER_PARAM,
                layer: l.name,
            })
            .collect();
        let macs_total = layers.iter().filter_map(|l| l.macs).sum();
        let symbolic = layers
            .iter()
            .filter(|l| l.macs.is_none())
            .map(|l| l.layer.clone())
            .collect();
        let params_total: u64 = model.weights().map(|(_, w)| w.array.len() as u64).sum();
        Ok(ModelCost {
            layers,
            macs_total,
            symbolic,
            params_total,
            memory_bytes: params_total * BYTES_PER_PARAM,
        })
    }

    /// Analyse the shapes (symbolic dims pinned to `sample_shapes` where given) and cost it.
    pub fn measure(model: &Model, sample_shapes: Option<&[Vec<usize>]>) -> Result<ModelCost> {
        ModelCost::of(model, &model.shapes(sample_shapes)?)
    }

    pub fn layer(&self, name: &str) -> Option<&LayerCost> {
        self.layers.iter().find(|l| l.layer == name)
    }
}

/// One original layer before and after: the layers that replace it (itself when it was
/// only edited, the split layers when it was split, none when it was removed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostRow {
    pub layer: String,
    pub op: String,
    pub after_layers: Vec<String>,
    pub macs_before: Option<u64>,
    pub macs_after: Option<u64>,
    pub params_before: u64,
    pub params_after: u64,
    pub memory_before: u64,
    pub memory_after: u64,
}

impl CostRow {
    pub fn mac_ratio(&self) -> Option<f64> {
        ratio(self.macs_before?, self.macs_after?)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostComparison {
    pub rows: Vec<CostRow>,
    /// Layers of the result that no original layer accounts for.
    pub added: Vec<LayerCost>,
    pub macs_before: u64,
    pub macs_after: u64,
    pub params_before: u64,
    pub params_after: u64,
    pub memory_before: u64,
    pub memory_after: u64,
    /// `None` when either model has layers with symbolic MACs (the totals would mislead).
    pub mac_ratio: Option<f64>,
    pub param_ratio: Option<f64>,
    pub memory_ratio: Option<f64>,
}

fn ratio(before: u64, after: u64) -> Option<f64> {
    (before > 0).then(|| after as f64 / before as f64)
}

/// Sum of MACs, `None` if any is unknown.
fn sum_macs<'a>(layers: impl Iterator<Item = &'a LayerCost>) -> Option<u64> {
    layers.map(|l| l.macs).sum()
}

impl CostComparison {
    /// Match each layer of `after` to the layer of `before` it comes from: the same name,
    /// or else the original whose name followed by `.` is the longest prefix of its name
    /// (compressors name the layers they make `<layer>.<suffix>`).
    pub fn new(before: &ModelCost, after: &ModelCost) -> CostComparison {
        let mut owner: Vec<Option<usize>> = vec![None; after.layers.len()];
        for (a, layer) in after.layers.iter().enumerate() {
            owner[a] = before
                .layers
                .iter()
                .position(|b| b.layer == layer.layer)
                .or_else(|| {
                    before
                        .layers
                        .iter()
                        .enumerate()
                        .filter(|(_, b)| {
                            after.layer(&b.layer).is_none()
                                && layer.layer.starts_with(&format!("{}.", b.layer))
                        })
                        .max_by_key(|(_, b)| b.layer.len())
                        .map(|(i, _)| i)
                });
        }
        let rows = before
            .layers
            .iter()
            .enumerate()
            .map(|(b, layer)| {
                let parts: Vec<&LayerCost> = after
                    .layers
                    .iter()
                    .zip(&owner)
                    .filter(|(_, o)| **o == Some(b))
                    .map(|(l, _)| l)
                    .collect();
                let params_after = parts.iter().map(|l| l.params).sum();
                CostRow {
                    layer: layer.layer.clone(),
                    op: layer.op.clone(),
                    after_layers: parts.iter().map(|l| l.layer.clone()).collect(),
                    macs_before: layer.macs,
                    macs_after: sum_macs(parts.iter().copied()),
                    params_before: layer.params,
                    params_after,
                    memory_before: layer.memory_bytes,
                    memory_after: params_after * BYTES_PER_PARAM,
                }
            })
            .collect();
        let added = after
            .layers
            .iter()
            .zip(&owner)
            .filter(|(_, o)| o.is_none())
            .map(|(l, _)| l.clone())
            .collect();
        let exact = before.symbolic.is_empty() && after.symbolic.is_empty();
        CostComparison {
            rows,
            added,
            macs_before: before.macs_total,
            macs_after: after.macs_total,
            params_before: before.params_total,
            params_after: after.params_total,
            memory_before: before.memory_bytes,
            memory_after: after.memory_bytes,
            mac_ratio: ratio(before.macs_total, after.macs_total).filter(|_| exact),
            param_ratio: ratio(before.params_total, after.params_total),
            memory_ratio: ratio(before.memory_bytes, after.memory_bytes),
        }
    }

    /// The comparison as a plain-text table for people (changed layers first-class, totals
    /// last).
    pub fn table(&self) -> String {
        let macs = |m: Option<u64>| m.map_or("symbolic".to_string(), human);
        let frac = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.3}"));
        let width = self
            .rows
            .iter()
            .map(|r| r.layer.len())
            .chain(self.added.iter().map(|l| l.layer.len()))
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!(
            "{:width$}  {:6}  {:>9}  {:>9}  {:>6}  {:>9}  {:>9}\n",
            "layer", "op", "MACs", "after", "ratio", "params", "after"
        );
        for r in &self.rows {
            out += &format!(
                "{:width$}  {:6}  {:>9}  {:>9}  {:>6}  {:>9}  {:>9}\n",
                r.layer,
                r.op,
                macs(r.macs_before),
                macs(r.macs_after),
                frac(r.mac_ratio()),
                human(r.params_before),
                human(r.params_after)
            );
        }
        for l in &self.added {
            out += &format!(
                "{:width$}  {:6}  {:>9}  {:>9}  {:>6}  {:>9}  {:>9}\n",
                l.layer,
                l.op,
                "-",
                macs(l.macs),
                "new",
                "-",
                human(l.params)
            );
        }
        out += &format!(
            "total MACs {} → {} ({}), params {} → {} ({}), memory {} B → {} B\n",
            human(self.macs_before),
            human(self.macs_after),
            frac(self.mac_ratio),
            human(self.params_before),
            human(self.params_after),
            frac(self.param_ratio),
            human(self.memory_before),
            human(self.memory_after)
        );
        out
    }
}
