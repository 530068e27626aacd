//! The graph pane's rows: nodes in topological order with lanes drawn the way
//! `git log --graph` draws branches and merges. A lane is a value still waiting for a
//! consumer further down; a node sits on the lane of its first input, other input lanes
//! merge into it, and a value read by several later nodes forks extra lanes.

use qsteer::model::shapes::format_shape;
use qsteer::model::{Model, ModelShapes};

/// Ops that do arithmetic with weights; the rest may be folded into the row above.
pub fn is_compute(op: &str) -> bool {
    matches!(op, "Conv" | "ConvTranspose" | "Gemm" | "MatMul")
}

#[derive(Debug, Clone, PartialEq)]
pub struct GraphRow {
    /// Lane drawing, e.g. "│ ● │" — one cell per lane.
    pub lanes: String,
    pub name: String,
    pub op: String,
    pub shape: String,
    /// Non-compute nodes folded into this row when runs are collapsed (e.g. BN, Clip).
    pub folded: Vec<String>,
    /// The names of those folded nodes, in the same order.
    pub folded_names: Vec<String>,
    /// Node index in the graph (or usize::MAX for the input row).
    pub node: usize,
}

pub fn build_rows(model: &Model, shapes: &ModelShapes) -> Vec<GraphRow> {
    let graph = model.graph();
    let order = model.index().order();
    // lanes[i] = value names this lane carries (a lane may carry one value to several
    // consumers only via forks, so one name each).
    let mut lanes: Vec<Option<String>> = Vec::new();
    let mut rows = Vec::new();
    for input in model.inputs() {
        lanes.push(Some(input.name.clone()));
        rows.push(GraphRow {
            lanes: draw(&lanes, lanes.len() - 1, &[], &[], &[]),
            name: input.name.clone(),
            op: "input".into(),
            shape: shapes
                .get(&input.name)
                .map(|s| format_shape(s))
                .unwrap_or_default(),
            folded: vec![],
            folded_names: vec![],
            node: usize::MAX,
        });
    }
    for &i in order {
        let node = &graph.node[i];
        if node.op_type == "Constant" {
            continue;
        }
        // Lanes carrying this node's inputs.
        let mut hits: Vec<usize> = node
            .input
            .iter()
            .filter(|v| !v.is_empty())
            .filter_map(|v| lanes.iter().position(|l| l.as_deref() == Some(v.as_str())))
            .collect();
        hits.sort_unstable();
        hits.dedup();
        // The node continues the first input lane that ends here; if every input value is
        // still needed further down, it branches off onto a new lane.
        let ending: Vec<usize> = hits
            .iter()
            .copied()
            .filter(|&h| !needed_later(model, lanes[h].as_deref().unwrap_or(""), i, order))
            .collect();
        let continuing: Vec<usize> = hits
            .iter()
            .copied()
            .filter(|h| !ending.contains(h))
            .collect();
        for &h in &ending {
            lanes[h] = None;
        }
        let col = match ending.first() {
            Some(&c) => c,
            None => free_lane(&mut lanes),
        };
        let merged: Vec<usize> = ending.iter().copied().filter(|&h| h != col).collect();
        // The node's first output continues on its column; each extra output forks a lane.
        let outs: Vec<&String> = node.output.iter().filter(|o| !o.is_empty()).collect();
        let mut forks = Vec::new();
        for (k, out) in outs.iter().enumerate() {
            if model.index().consumers(out).is_empty() && !is_graph_output(model, out) {
                continue;
            }
            if k == 0 {
                lanes[col] = Some((*out).clone());
            } else {
                let f = free_lane(&mut lanes);
                lanes[f] = Some((*out).clone());
                forks.push(f);
            }
        }
        let shape = outs
            .first()
            .and_then(|o| shapes.get(o))
            .map(|s| format_shape(s))
            .unwrap_or_default();
        rows.push(GraphRow {
            lanes: draw(&lanes, col, &merged, &forks, &continuing),
            name: qsteer::model::graph::node_label(graph, i),
            op: node.op_type.clone(),
            shape,
            folded: vec![],
            folded_names: vec![],
            node: i,
        });
        while lanes.last().is_some_and(|l| l.is_none()) {
            lanes.pop();
        }
    }
    rows
}

fn is_graph_output(model: &Model, v: &str) -> bool {
    model.graph().output.iter().any(|o| o.name == v)
}

fn needed_later(model: &Model, value: &str, current: usize, order: &[usize]) -> bool {
    let pos = |n: usize| order.iter().position(|&o| o == n).unwrap_or(0);
    let here = pos(current);
    model
        .index()
        .consumers(value)
        .iter()
        .any(|&(n, _)| pos(n) > here)
}

fn free_lane(lanes: &mut Vec<Option<String>>) -> usize {
    match lanes.iter().position(|l| l.is_none()) {
        Some(i) => i,
        None => {
            lanes.push(None);
            lanes.len() - 1
        }
    }
}

/// One cell per lane: ● the node, ┘ a lane merging into it, ┐ a lane forking out of it,
/// ├ a lane it reads that goes on to later nodes, │ a lane passing by.
fn draw(
    lanes: &[Option<String>],
    col: usize,
    merged: &[usize],
    forks: &[usize],
    branch: &[usize],
) -> String {
    let width = lanes.len().max(col + 1).max(
        merged
            .iter()
            .chain(forks)
            .chain(branch)
            .map(|&m| m + 1)
            .max()
            .unwrap_or(0),
    );
    (0..width)
        .map(|i| {
            if i == col {
                '●'
            } else if merged.contains(&i) {
                '┘'
            } else if forks.contains(&i) {
                '┐'
            } else if branch.contains(&i) {
                '├'
            } else if lanes.get(i).is_some_and(|l| l.is_some()) {
                '│'
            } else {
                ' '
            }
        })
        .flat_map(|c| [c, ' '])
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// Fold runs of non-compute single-input nodes into the compute row above them
/// (Conv → BN → Clip shows as one row) when the user collapses the graph.
pub fn collapse(rows: &[GraphRow]) -> Vec<GraphRow> {
    let mut out: Vec<GraphRow> = Vec::new();
    for r in rows {
        let foldable = !is_compute(&r.op)
            && r.op != "input"
            && !r.lanes.contains('┘')
            && !r.lanes.contains('┐')
            && !r.lanes.contains('├');
        match out.last_mut() {
            Some(prev)
                if foldable && prev.lanes.replace('├', "│") == r.lanes && is_compute(&prev.op) =>
            {
                prev.folded.push(r.op.clone());
                prev.folded_names.push(r.name.clone());
                prev.shape = r.shape.clone();
            }
            _ => out.push(r.clone()),
        }
    }
    out
}
