//! Outputs that carry a state, not class scores: the `auto` metric reads them as dense values
//! (cosine), never by argmax.
//!
//! An LSTM's `Y_h` is `[1, N, 128]` per call (`[N, 1, 128]` once the batch is moved first):
//! by shape a `[N, T, C]` sequence, but its last axis is 128 hidden units, not 128 classes,
//! and the per-position argmax over them scored Silero VAD's state by which unit happens to
//! be largest. The rule, by the graph, not the shape:
//!
//! - the output of a recurrent op's state (`LSTM` outputs 1 and 2, `Y_h` / `Y_c`; `GRU` and
//!   `RNN` output 1), through ops that only reshape (Squeeze, Unsqueeze, Reshape, Transpose,
//!   Flatten, Identity);
//! - an output declared with the shape of a graph input (equal rank, every pair of dims
//!   equal where both are known, at least one known dim above 1 equal): it is fed back next
//!   call, or it is the input transformed in place (a hidden state, an embedding, a
//!   signal), and class scores are as wide as the class count, not as an input.

use std::collections::BTreeSet;

use crate::model::graph::Producer;
use crate::model::shapes::declared_dims;
use crate::model::Model;

/// Ops that change only the layout of their first input.
const RESHAPING: [&str; 6] = [
    "Squeeze",
    "Unsqueeze",
    "Reshape",
    "Transpose",
    "Flatten",
    "Identity",
];

/// The names of `model`'s outputs that hold a state (see the module docs).
pub fn state_outputs(model: &Model) -> BTreeSet<String> {
    let graph = model.graph();
    let inputs: Vec<Vec<Option<usize>>> = model
        .inputs()
        .into_iter()
        .filter_map(declared_dims)
        .collect();
    graph
        .output
        .iter()
        .filter(|o| {
            recurrent_state(model, &o.name)
                || declared_dims(o).is_some_and(|d| inputs.iter().any(|i| same_shape(i, &d)))
        })
        .map(|o| o.name.clone())
        .collect()
}

/// Whether `value` is a recurrent op's state output, through reshaping ops.
fn recurrent_state(model: &Model, value: &str) -> bool {
    let graph = model.graph();
    let mut current = value.to_string();
    for _ in 0..8 {
        let Some(Producer::Node { node, slot }) = model.index().producer(&current) else {
            return false;
        };
        let n = &graph.node[node];
        match n.op_type.as_str() {
            "LSTM" => return slot == 1 || slot == 2,
            "GRU" | "RNN" => return slot == 1,
            op if RESHAPING.contains(&op) => match n.input.first() {
                Some(v) => current = v.clone(),
                None => return false,
            },
            _ => return false,
        }
    }
    false
}

/// Declared shapes that can be the same: equal rank, equal where both are known, and at
/// least one known dim above 1 in common (two all-symbolic shapes say nothing).
fn same_shape(a: &[Option<usize>], b: &[Option<usize>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        })
        && a.iter()
            .zip(b)
            .any(|(x, y)| matches!((x, y), (Some(x), Some(y)) if x == y && *x > 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::builder::{attr_int, ProtoBuilder};
    use ndarray::{ArrayD, IxDyn};

    /// An LSTM whose `Y_h` leaves through a Squeeze and whose `Y_c` leaves as is, beside its
    /// sequence output `Y` (not a state).
    #[test]
    fn an_lstms_state_outputs_are_states_and_its_sequence_is_not() {
        let w = |shape: &[usize]| ArrayD::<f32>::zeros(IxDyn(shape));
        let mut b = ProtoBuilder::new(13);
        b.input("x", &[1, 3])
            .initializer("W", &w(&[1, 16, 3]))
            .initializer("R", &w(&[1, 16, 4]))
            .node(
                "LSTM",
                "lstm",
                &["x", "W", "R"],
                &["y", "y_h", "y_c"],
                vec![attr_int("hidden_size", 4)],
            )
            .node("Squeeze", "squeeze_h", &["y_h"], &["hn"], vec![])
            .output("y")
            .output("hn")
            .output("y_c");
        let model = b.model("lstm").unwrap();
        let states: Vec<String> = state_outputs(&model).into_iter().collect();
        assert_eq!(states, ["hn", "y_c"]);
    }

    /// The fixture written as Silero VAD writes its state: `stateN` [2, N, 3] fed back as
    /// `state` [2, N, 3]; `output` [N, 2] is a head.
    #[test]
    fn an_output_shaped_like_an_input_is_a_state() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/state_axis1.onnx");
        let model = Model::load(&path).unwrap();
        let states: Vec<String> = state_outputs(&model).into_iter().collect();
        assert_eq!(states, ["stateN"]);
    }

    #[test]
    fn declared_shapes_match_only_on_a_known_common_width() {
        assert!(same_shape(
            &[Some(1), Some(1), Some(128)],
            &[Some(1), None, Some(128)]
        ));
        assert!(!same_shape(
            &[None, Some(40), Some(6625)],
            &[None, Some(3), Some(48)]
        ));
        assert!(!same_shape(&[None, None], &[None, None]));
        assert!(!same_shape(&[Some(1), Some(1)], &[Some(1), Some(1)]));
        assert!(!same_shape(&[None, Some(8)], &[None, Some(8), Some(1)]));
    }
}
