//! Who produces and who consumes each value, and a topological order of the nodes.
//! Built once at load time; it is also where a structurally broken graph is rejected
//! (dangling inputs, a value produced twice, cycles), with the node named.

use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use tract_onnx::pb::GraphProto;

/// Where a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producer {
    /// A graph input fed by the user.
    Input,
    /// A stored tensor (initializer).
    Initializer,
    /// Output `slot` of node `node` (index into `graph.node`).
    Node { node: usize, slot: usize },
}

#[derive(Debug, Clone, Default)]
pub struct GraphIndex {
    producers: HashMap<String, Producer>,
    consumers: HashMap<String, Vec<(usize, usize)>>,
    order: Vec<usize>,
}

/// Display name of node `i`: its name, else its first output, else `#i op`.
pub fn node_label(graph: &GraphProto, i: usize) -> String {
    let n = &graph.node[i];
    if !n.name.is_empty() {
        n.name.clone()
    } else if let Some(o) = n.output.iter().find(|o| !o.is_empty()) {
        o.clone()
    } else {
        format!("#{i} {}", n.op_type)
    }
}

impl GraphIndex {
    pub fn build(graph: &GraphProto, source: &str) -> Result<GraphIndex> {
        let mut producers = HashMap::new();
        for init in &graph.initializer {
            producers.insert(init.name.clone(), Producer::Initializer);
        }
        for input in &graph.input {
            producers
                .entry(input.name.clone())
                .or_insert(Producer::Input);
        }
        for (i, node) in graph.node.iter().enumerate() {
            for (slot, out) in node.output.iter().enumerate() {
                if out.is_empty() {
                    continue;
                }
                let previous = producers.insert(out.clone(), Producer::Node { node: i, slot });
                if previous.is_some() {
                    return Err(Error::input(format!(
                        "{source}: value '{out}' is produced twice (again by node '{}' ({}))",
                        node_label(graph, i),
                        node.op_type
                    )));
                }
            }
        }
        let mut consumers: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for (slot, inp) in node.input.iter().enumerate() {
                if inp.is_empty() {
                    continue; // an omitted optional input
                }
                if !producers.contains_key(inp) {
                    return Err(Error::input(format!(
                        "{source}: node '{}' ({}) reads '{inp}', which no node, initializer or \
                         graph input provides",
                        node_label(graph, i),
                        node.op_type
                    )));
                }
                consumers.entry(inp.clone()).or_default().push((i, slot));
            }
        }
        for out in &graph.output {
            if !producers.contains_key(&out.name) {
                return Err(Error::input(format!(
                    "{source}: graph output '{}' is not produced by any node",
                    out.name
                )));
            }
        }
        let order = topological_order(graph, &producers, source)?;
        Ok(GraphIndex {
            producers,
            consumers,
            order,
        })
    }

    pub fn producer(&self, value: &str) -> Option<Producer> {
        self.producers.get(value).copied()
    }

    /// Nodes reading `value`, as (node index, input slot).
    pub fn consumers(&self, value: &str) -> &[(usize, usize)] {
        self.consumers
            .get(value)
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }

    /// Node indices in an order where every node comes after its producers.
    pub fn order(&self) -> &[usize] {
        &self.order
    }
}

/// Kahn's algorithm, stable with respect to the file's node order.
fn topological_order(
    graph: &GraphProto,
    producers: &HashMap<String, Producer>,
    source: &str,
) -> Result<Vec<usize>> {
    let n = graph.node.len();
    let mut pending = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in graph.node.iter().enumerate() {
        let mut seen = HashSet::new();
        for inp in node.input.iter().filter(|s| !s.is_empty()) {
            if let Some(Producer::Node { node: p, .. }) = producers.get(inp) {
                if seen.insert(*p) {
                    pending[i] += 1;
                    dependents[*p].push(i);
                }
            }
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &dependents[i] {
            pending[d] -= 1;
            if pending[d] == 0 {
                ready.insert(d);
            }
        }
    }
    if order.len() != n {
        let stuck = (0..n).find(|&i| pending[i] > 0).unwrap_or(0);
        return Err(Error::input(format!(
            "{source}: the graph has a cycle through node '{}' ({})",
            node_label(graph, stuck),
            graph.node[stuck].op_type
        )));
    }
    Ok(order)
}
