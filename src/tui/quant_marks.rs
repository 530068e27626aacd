//! Where the base model's quantizers sit, for the graph pane's marks: `◆w` on a layer
//! whose weight gets a quantizer, `◆a` on a row whose output gets an activation quantizer.
//! Computed once when the app opens (the placement rules are those of quantsim), keyed by
//! node name so the marks also land on the same nodes of a variant shown later.

use super::graph_rows::GraphRow;
use qsteer::model::graph::node_label;
use qsteer::model::{Layer, Model};
use qsteer::quant::points::{activation_points, weight_quantizers};
use qsteer::Result;
use std::collections::HashSet;

/// The help popup's legend of the marks.
pub const LEGEND: &str = "◆w weight quantizer · ◆a activation quantizer";
/// The graph pane's bottom line (fits the pane at 80 columns).
pub const SHORT_LEGEND: &str = " ◆w weight ◆a activation ";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantMarks {
    /// Nodes (by label) and graph inputs (by name) whose output is quantized.
    activations: HashSet<String>,
    /// Layers (by label) whose weight is quantized.
    weights: HashSet<String>,
}

impl QuantMarks {
    pub fn of(model: &Model, layers: &[Layer]) -> Result<QuantMarks> {
        let graph = model.graph();
        let activations = activation_points(model)?
            .into_iter()
            .map(|p| match p.node {
                Some(i) => node_label(graph, i),
                None => p.value,
            })
            .collect();
        // A weight shared by several layers has one quantizer; every such layer uses it.
        let quantized: HashSet<String> = weight_quantizers(model, layers)?
            .into_iter()
            .map(|w| w.weight)
            .collect();
        let weights = layers
            .iter()
            .filter(|l| quantized.contains(&l.weight))
            .map(|l| l.name.clone())
            .collect();
        Ok(QuantMarks {
            activations,
            weights,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.activations.is_empty() && self.weights.is_empty()
    }

    /// The row's mark, always 4 cells wide so names line up: `◆w◆a`, `◆w  `, `  ◆a`, or
    /// blanks. A collapsed row carries the marks of the nodes folded into it.
    pub fn mark(&self, row: &GraphRow) -> String {
        let any = |set: &HashSet<String>| {
            set.contains(&row.name) || row.folded_names.iter().any(|n| set.contains(n))
        };
        let w = if any(&self.weights) { "◆w" } else { "  " };
        let a = if any(&self.activations) { "◆a" } else { "  " };
        format!("{w}{a}")
    }
}
