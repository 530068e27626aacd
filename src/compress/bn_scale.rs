//! The per-output-channel gain a BatchNormalization applies after a layer it alone reads:
//! `|γ| / √(σ² + ε)`. An SVD of the raw weight treats every output channel alike, but an
//! unfolded BN multiplies channel c's error by this gain before anything downstream sees
//! it (on the sample ResNet they are 1.7–3.7× apart within a layer, enough to take
//! `layer1.conv1` at ratio 0.9 from 76 % to 95 % top-1). Factoring the
//! weight scaled by the gain, then dividing the gain back out of the output-side factor,
//! gives the best rank-r approximation of the layer *with* its BN — what a BN-folded model
//! would get — while the graph keeps its BN (DESIGN.md §3, Spatial/Weight SVD).

use crate::model::graph::Producer;
use crate::model::{attrs, Layer, LayerKind, Model};

/// The gains when the layer's output is read by exactly one node, an inference-mode
/// BatchNormalization with constant scale and variance of one value per output channel;
/// `None` otherwise (then the plain SVD is the right one). Zero gains (a channel the BN
/// silences) are raised to a millionth of the largest, so the division back stays finite.
pub(crate) fn bn_output_gains(model: &Model, layer: &Layer) -> Option<Vec<f32>> {
    // A BN normalizes axis 1: the output channels of a Conv or a Gemm, not of an N-D MatMul.
    if layer.kind == LayerKind::MatMul {
        return None;
    }
    let graph = model.graph();
    if graph.output.iter().any(|o| o.name == layer.output) {
        return None;
    }
    let &[(bn, 0)] = model.index().consumers(&layer.output) else {
        return None;
    };
    let node = &graph.node[bn];
    if node.op_type != "BatchNormalization" || attrs::int(node, "training_mode").unwrap_or(0) != 0 {
        return None;
    }
    if !matches!(
        model.index().producer(&layer.output),
        Some(Producer::Node { slot: 0, .. })
    ) {
        return None;
    }
    let param = |slot: usize| -> Option<Vec<f32>> {
        let name = crate::fixes::edit::constant_behind(model, node.input.get(slot)?)?;
        let values: Vec<f32> = model.weight(&name)?.iter().copied().collect();
        (values.len() == layer.out_channels).then_some(values)
    };
    let (gamma, var) = (param(1)?, param(4)?);
    let eps = attrs::float(node, "epsilon").unwrap_or(1e-5);
    let gains: Vec<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| g.abs() / (v + eps).sqrt())
        .collect();
    if gains.iter().any(|g| !g.is_finite()) {
        return None;
    }
    let floor = gains.iter().fold(0f32, |a, &g| a.max(g)) * 1e-6;
    if floor <= 0.0 {
        return None;
    }
    Some(gains.into_iter().map(|g| g.max(floor)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel::CancelToken;
    use crate::compress::testing::{digits, outputs, random, root, sample};
    use crate::compress::{SpatialSvd, WeightSvd};
    use crate::data::{load_dataset, SplitMix64};
    use crate::model::builder::{attr_ints, ProtoBuilder};
    use ndarray::{ArrayD, Axis, IxDyn};
    use std::collections::BTreeMap;

    /// Conv 3×3 8→8 → BN whose channel 0 has a gain 1000× the others' → graph output.
    fn conv_bn() -> Model {
        let mut rng = SplitMix64(3);
        let mut b = ProtoBuilder::new(13);
        let c = 8;
        let gamma = ArrayD::from_shape_fn(IxDyn(&[c]), |i| if i[0] == 0 { 10.0 } else { 0.01 });
        b.input("x", &[c, 10, 10])
            .initializer("w", &random(&mut rng, &[c, c, 3, 3], 0.5))
            .node(
                "Conv",
                "conv",
                &["x", "w"],
                &["y"],
                vec![
                    attr_ints("kernel_shape", &[3, 3]),
                    attr_ints("pads", &[1; 4]),
                ],
            )
            .initializer("g", &gamma)
            .initializer("b", &ArrayD::zeros(IxDyn(&[c])))
            .initializer("m", &ArrayD::zeros(IxDyn(&[c])))
            .initializer("v", &ArrayD::ones(IxDyn(&[c])))
            .node(
                "BatchNormalization",
                "bn",
                &["y", "g", "b", "m", "v"],
                &["z"],
                vec![],
            )
            .output("z");
        b.model("conv-bn").unwrap()
    }

    /// Relative error of channel 0 of the output, and of the whole output.
    fn errors(before: &ArrayD<f32>, after: &ArrayD<f32>) -> (f32, f32) {
        let rel = |a: ndarray::ArrayViewD<f32>, b: ndarray::ArrayViewD<f32>| {
            let d: f32 = (&a - &b).iter().map(|v| v * v).sum();
            (d / a.iter().map(|v| v * v).sum::<f32>()).sqrt()
        };
        let ch0 = |a: &ArrayD<f32>| a.index_axis(Axis(1), 0).to_owned();
        (
            rel(ch0(before).view(), ch0(after).view()),
            rel(before.view(), after.view()),
        )
    }

    #[test]
    fn the_gains_of_the_bn_after_a_conv() {
        let model = conv_bn();
        let shapes = model.shapes(Some(&[vec![8, 10, 10]])).unwrap();
        let layers = model.layers(&shapes).unwrap();
        let gains = bn_output_gains(&model, &layers[0]).unwrap();
        assert!((gains[0] - 10.0 / (1.0f32 + 1e-5).sqrt()).abs() < 1e-5);
        assert!((gains[1] - 0.01 / (1.0f32 + 1e-5).sqrt()).abs() < 1e-7);
    }

    /// Both SVD methods put the truncation error where the BN shrinks it: channel 0, which
    /// the BN amplifies 1000× over the others, comes through a low-rank split almost exact.
    /// (The SVD of the raw weight spreads the error over all channels alike, tens of percent.)
    #[test]
    fn a_low_rank_split_keeps_the_channel_the_bn_amplifies() {
        let model = conv_bn();
        let x = random(&mut SplitMix64(9), &[4, 8, 10, 10], 1.0);
        let before = outputs(&model, &x);
        let shapes = Some(vec![vec![8, 10, 10]]);
        let ranks = BTreeMap::from([("conv".to_string(), 4)]);
        let cancel = CancelToken::new();
        for (method, out) in [
            (
                "ssvd",
                SpatialSvd::new(shapes.clone()).apply_ranks(&model, &ranks, &cancel),
            ),
            (
                "wsvd",
                WeightSvd::new(shapes.clone()).apply_ranks(&model, &ranks, &cancel),
            ),
        ] {
            let after = outputs(&out.unwrap().model, &x);
            let (ch0, _) = errors(&before, &after);
            assert!(ch0 < 0.02, "{method}: channel 0 off by {ch0}");
        }
    }

    /// On the sample ResNet, layer1.conv1 (BN after it, gains spread ~30×) at ratio 0.9
    /// (rank 21 of 48) keeps the top-1 accuracy on the 400 evaluation digits above 90 %
    /// (the plain SVD of the raw weight: 76 %, as aimet-torch's).
    #[test]
    fn the_sample_resnets_first_block_conv_survives_ratio_0_9() {
        let model = sample("resnet_digits");
        let ratios = BTreeMap::from([("layer1.conv1".to_string(), 0.9)]);
        let s = SpatialSvd::new(Some(vec![vec![1, 16, 16]]));
        let out = crate::compress::LayerCompressor::apply(&s, &model, &ratios, &CancelToken::new())
            .unwrap();
        assert_eq!(
            out.changes[0].detail,
            crate::compress::ChangeDetail::Rank {
                rank: 21,
                full_rank: 48
            }
        );
        let labels = load_dataset(&root().join("digits/evaluation"))
            .unwrap()
            .labels
            .unwrap();
        let logits = outputs(&out.model, &digits(labels.len()));
        let correct = logits
            .outer_iter()
            .zip(&labels)
            .filter(|(row, &y)| {
                let best = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap()
                    .0;
                best as i64 == y
            })
            .count();
        let accuracy = correct as f64 / labels.len() as f64;
        assert!(accuracy > 0.9, "accuracy {accuracy}");
    }
}
