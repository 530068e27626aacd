//! Small models built in code, shared by the unit tests, the integration tests and the
//! benches, so that one shape of graph is written once.

use super::builder::{attr_int, ProtoBuilder};
use ndarray::arr0;

/// A detector head's last join, as YOLOv8's ends: input `x` `[N, 4, 16]`, boxes
/// `Relu(60x + 158)` (pixels, about 0–400) and scores `Sigmoid(x)` (0–1) concatenated on axis 1
/// into `det` `[N, 8, 16]`. The caller adds what follows `det` and the graph output.
pub fn boxes_and_scores_head() -> ProtoBuilder {
    let mut b = ProtoBuilder::new(13);
    b.input("x", &[4, 16])
        .initializer("sixty", &arr0(60.0f32).into_dyn())
        .initializer("shift", &arr0(158.0f32).into_dyn())
        .node("Mul", "scale_boxes", &["x", "sixty"], &["m"], vec![])
        .node("Add", "shift_boxes", &["m", "shift"], &["a"], vec![])
        .node("Relu", "boxes", &["a"], &["boxes"], vec![])
        .node("Sigmoid", "scores", &["x"], &["scores"], vec![])
        .node(
            "Concat",
            "detect",
            &["boxes", "scores"],
            &["det"],
            vec![attr_int("axis", 1)],
        );
    b
}
