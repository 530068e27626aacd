//! Weight SVD and Spatial SVD end to end: full rank keeps the function (the sample models
//! with their digits, and a synthetic net with every geometry the splits must carry over),
//! a lower rank costs exactly what the cost model predicted (checked against the result's
//! own layer table), and bad requests are input errors naming the layer.

use super::*;
use crate::fixes::tests::{digits, outputs, relative_diff, sample, Rng};
use crate::model::builder::{attr_float, attr_int, attr_ints, ProtoBuilder};
use crate::Error;
use ndarray::ArrayD;
use std::collections::BTreeMap;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::pb::type_proto::Value as TypeValue;

/// Full-rank factors are exact up to float32 rounding in the SVD and in the two convs'
/// reassociated sums (≈1e-6 relative per layer); through a dozen layers that stays far
/// below 1e-4 of the output range, while a wrong stride, pad or factor layout is O(1).
const TOLERANCE: f32 = 1e-4;

fn digit_shape() -> Vec<Vec<usize>> {
    vec![vec![1, 16, 16]]
}

/// 3×12×13 → Conv 3×5 stride (2,1) pads (0,1,2,2), weight in a Constant → Relu → Conv 3×3
/// dilation 2 without bias → Conv 1×3 → Conv 3×4 SAME_UPPER stride 2 → Conv 2×3 SAME_LOWER
/// → Conv 2×2 VALID → Flatten → Gemm transB=1 (alpha, beta) → Relu → Gemm transB=0 →
/// MatMul with a constant [16, 10] (in a Constant node).
fn geometry_net() -> Model {
    let mut rng = Rng::new(11);
    let mut b = ProtoBuilder::new(13);
    let conv = |k: [i64; 2], extra: Vec<tract_onnx::pb::AttributeProto>| {
        let mut a = vec![attr_ints("kernel_shape", &k)];
        a.extend(extra);
        a
    };
    let auto = |mode: &str| tract_onnx::pb::AttributeProto {
        name: "auto_pad".into(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::String as i32,
        s: mode.as_bytes().to_vec(),
        ..Default::default()
    };
    b.input("x", &[3, 12, 13])
        .constant("a.w", &rng.array(&[8, 3, 3, 5], 0.4))
        .initializer("a.b", &rng.array(&[8], 0.5))
        .node(
            "Conv",
            "conv_a",
            &["x", "a.w", "a.b"],
            &["a"],
            conv(
                [3, 5],
                vec![
                    attr_ints("strides", &[2, 1]),
                    attr_ints("pads", &[0, 1, 2, 2]),
                ],
            ),
        )
        .node("Relu", "relu_a", &["a"], &["ra"], vec![])
        .initializer("b.w", &rng.array(&[8, 8, 3, 3], 0.3))
        .node(
            "Conv",
            "conv_b",
            &["ra", "b.w"],
            &["b"],
            conv(
                [3, 3],
                vec![
                    attr_ints("dilations", &[2, 2]),
                    attr_ints("pads", &[2, 2, 2, 2]),
                ],
            ),
        )
        .initializer("c.w", &rng.array(&[6, 8, 1, 3], 0.3))
        .initializer("c.b", &rng.array(&[6], 0.5))
        .node(
            "Conv",
            "conv_c",
            &["b", "c.w", "c.b"],
            &["c"],
            conv([1, 3], vec![attr_ints("pads", &[0, 1, 0, 1])]),
        )
        .initializer("d.w", &rng.array(&[8, 6, 3, 4], 0.3))
        .initializer("d.b", &rng.array(&[8], 0.5))
        .node(
            "Conv",
            "conv_d",
            &["c", "d.w", "d.b"],
            &["d"],
            conv(
                [3, 4],
                vec![auto("SAME_UPPER"), attr_ints("strides", &[2, 2])],
            ),
        )
        .initializer("e.w", &rng.array(&[8, 8, 2, 3], 0.3))
        .node(
            "Conv",
            "conv_e",
            &["d", "e.w"],
            &["e"],
            conv([2, 3], vec![auto("SAME_LOWER")]),
        )
        .initializer("f.w", &rng.array(&[8, 8, 2, 2], 0.3))
        .initializer("f.b", &rng.array(&[8], 0.5))
        .node(
            "Conv",
            "conv_f",
            &["e", "f.w", "f.b"],
            &["f"],
            conv([2, 2], vec![auto("VALID")]),
        )
        .node("Flatten", "flatten", &["f"], &["flat"], vec![])
        .initializer("g1.w", &rng.array(&[20, 80], 0.2))
        .initializer("g1.b", &rng.array(&[20], 0.5))
        .node(
            "Gemm",
            "gemm_t",
            &["flat", "g1.w", "g1.b"],
            &["g1"],
            vec![
                attr_int("transB", 1),
                attr_float("alpha", 0.5),
                attr_float("beta", 2.0),
            ],
        )
        .node("Relu", "relu_g", &["g1"], &["rg"], vec![])
        .initializer("g2.w", &rng.array(&[20, 16], 0.3))
        .initializer("g2.b", &rng.array(&[16], 0.5))
        .node(
            "Gemm",
            "gemm_n",
            &["rg", "g2.w", "g2.b"],
            &["g2"],
            vec![attr_int("transB", 0)],
        )
        .constant("m.w", &rng.array(&[16, 10], 0.3))
        .node("MatMul", "matmul", &["g2", "m.w"], &["y"], vec![])
        .output("y");
    b.model("geometry net").unwrap()
}

fn geometry_input() -> ArrayD<f32> {
    Rng::new(5).array(&[4, 3, 12, 13], 1.0)
}

fn eligible_names(c: &dyn LayerCompressor, model: &Model) -> Vec<String> {
    c.eligible(model)
        .unwrap()
        .into_iter()
        .filter(|e| e.not_eligible.is_none())
        .map(|e| e.layer)
        .collect()
}

fn at_ratio(names: &[String], ratio: f64) -> LayerRatios {
    names.iter().map(|n| (n.clone(), ratio)).collect()
}

/// The full rank of every change, from a compression at a lower ratio.
fn full_ranks(changes: &[LayerChange]) -> BTreeMap<String, usize> {
    changes
        .iter()
        .map(|c| match c.detail {
            ChangeDetail::Rank { full_rank, .. } => (c.layer.clone(), full_rank),
            ref other => panic!("{}: {other:?}", c.layer),
        })
        .collect()
}

/// Compress at 0.5, check the prediction against the result, then at full rank check the
/// function; returns the two outcomes.
fn check_method(
    model: &Model,
    c: &dyn LayerCompressor,
    full: impl Fn(&BTreeMap<String, usize>) -> CompressOutcome,
    x: &ArrayD<f32>,
    shapes: &[Vec<usize>],
    what: &str,
) -> (CompressOutcome, CompressOutcome) {
    let names = eligible_names(c, model);
    assert!(!names.is_empty(), "{what}: nothing eligible");
    let half = c
        .apply(model, &at_ratio(&names, 0.5), &CancelToken::new())
        .unwrap();
    assert_eq!(half.changes.len(), names.len(), "{what}");
    check_prediction(model, &half, shapes, what);
    // The compressed model runs and gives finite outputs of the same shape.
    let y = outputs(&half.model, x);
    assert_eq!(y.shape(), outputs(model, x).shape(), "{what}");
    assert!(y.iter().all(|v| v.is_finite()), "{what}");
    let ranks = full_ranks(&half.changes);
    let exact = full(&ranks);
    let d = relative_diff(&outputs(model, x), &outputs(&exact.model, x));
    eprintln!("{what}: full rank differs by {d:.2e} of the output range");
    assert!(
        d <= TOLERANCE,
        "{what}: full rank differs by {d} of the range"
    );
    (half, exact)
}

/// Every change's predicted MACs and params equal the two split layers' entries in the
/// compressed model's own layer table, and the totals add up.
fn check_prediction(model: &Model, out: &CompressOutcome, shapes: &[Vec<usize>], what: &str) {
    let before = ModelCost::measure(model, Some(shapes)).unwrap();
    let after = ModelCost::measure(&out.model, Some(shapes)).unwrap();
    let cmp = CostComparison::new(&before, &after);
    assert!(cmp.added.is_empty(), "{what}: {:?}", cmp.added);
    for ch in &out.changes {
        let ChangeDetail::Rank { rank, full_rank } = ch.detail else {
            panic!("{what}: {ch:?}");
        };
        assert!(rank >= 1 && rank < full_rank, "{what}: {ch:?}");
        assert!(
            rank == 1 || ch.macs_after as f64 <= ch.ratio * ch.macs_before as f64,
            "{what}: {ch:?}"
        );
        let row = cmp.rows.iter().find(|r| r.layer == ch.layer).unwrap();
        assert_eq!(row.after_layers.len(), 2, "{what}: {row:?}");
        assert_eq!(row.after_layers[1], ch.refit[0], "{what}");
        assert_eq!(
            row.macs_before,
            Some(ch.macs_before),
            "{what}: {}",
            ch.layer
        );
        assert_eq!(row.macs_after, Some(ch.macs_after), "{what}: {}", ch.layer);
        assert_eq!(row.params_before, ch.params_before, "{what}: {}", ch.layer);
        assert_eq!(row.params_after, ch.params_after, "{what}: {}", ch.layer);
    }
    assert_eq!(out.macs_before, before.macs_total, "{what}");
    assert_eq!(out.macs_after, after.macs_total, "{what}");
    let saved: u64 = out
        .changes
        .iter()
        .map(|c| c.macs_before - c.macs_after)
        .sum();
    assert_eq!(out.macs_before - out.macs_after, saved, "{what}");
    assert!(cmp.mac_ratio.unwrap() < 1.0);
}

#[test]
fn weight_svd_on_the_geometry_net() {
    let model = geometry_net();
    let shapes = vec![vec![3, 12, 13]];
    let c = WeightSvd::new(Some(shapes.clone()));
    let names = eligible_names(&c, &model);
    let all = [
        "conv_a", "conv_b", "conv_c", "conv_d", "conv_e", "conv_f", "gemm_t", "gemm_n", "matmul",
    ];
    assert_eq!(names, all);
    let x = geometry_input();
    let full = |r: &BTreeMap<String, usize>| c.apply_ranks(&model, r, &CancelToken::new()).unwrap();
    let (half, exact) = check_method(&model, &c, full, &x, &shapes, "wsvd");
    // conv_b: 8 = min(8, 8·9); at 0.5: r·(72 + 8) ≤ 0.5·8·72 → r = 3.
    let b = half.changes.iter().find(|c| c.layer == "conv_b").unwrap();
    assert_eq!(
        b.detail,
        ChangeDetail::Rank {
            rank: 3,
            full_rank: 8
        }
    );
    assert_eq!(b.refit, ["conv_b.svd1"]);
    // The second layer keeps the original output (nothing downstream changed) and bias.
    let g = exact.model.graph();
    let second = g.node.iter().find(|n| n.name == "conv_a.svd1").unwrap();
    assert_eq!(second.output, ["a"]);
    assert_eq!(second.input[2], "a.b");
    let first = g.node.iter().find(|n| n.name == "conv_a.svd0").unwrap();
    assert_eq!(first.input.len(), 2, "the first layer has no bias");
    // The old weights are gone, the Constant node included.
    assert!(exact.model.weight("a.w").is_none() && exact.model.weight("b.w").is_none());
    let gemm = g.node.iter().find(|n| n.name == "gemm_t.svd0").unwrap();
    assert_eq!(gemm.op_type, "MatMul");
}

#[test]
fn spatial_svd_on_the_geometry_net() {
    let model = geometry_net();
    let shapes = vec![vec![3, 12, 13]];
    let c = SpatialSvd::new(Some(shapes.clone()));
    let report = c.eligible(&model).unwrap();
    let reason = |l: &str| {
        report
            .iter()
            .find(|e| e.layer == l)
            .unwrap()
            .not_eligible
            .clone()
    };
    // A 1×3 kernel splits too: a 1×1 conv, then the 1×3 (AIMET offers every Conv2d).
    assert_eq!(reason("conv_c"), None);
    assert!(reason("gemm_t").unwrap().contains("not a Conv"));
    assert_eq!(reason("conv_d"), None);
    let names = eligible_names(&c, &model);
    assert_eq!(
        names,
        ["conv_a", "conv_b", "conv_c", "conv_d", "conv_e", "conv_f"]
    );
    let x = geometry_input();
    let full = |r: &BTreeMap<String, usize>| c.apply_ranks(&model, r, &CancelToken::new()).unwrap();
    let (_, exact) = check_method(&model, &c, full, &x, &shapes, "ssvd");
    // conv_a: vertical stride and pads on the first conv, horizontal ones on the second.
    let g = exact.model.graph();
    let node = |n: &str| g.node.iter().find(|x| x.name == n).unwrap().clone();
    let ints = |n: &str, a: &str| crate::model::attrs::ints(&node(n), a).unwrap();
    assert_eq!(ints("conv_a.svd0", "strides"), [2, 1]);
    assert_eq!(ints("conv_a.svd0", "pads"), [0, 0, 2, 0]);
    assert_eq!(ints("conv_a.svd1", "pads"), [0, 1, 0, 2]);
    assert_eq!(ints("conv_b.svd0", "dilations"), [2, 1]);
    assert_eq!(ints("conv_b.svd1", "dilations"), [1, 2]);
    // SAME_UPPER 3×4 stride 2 on 6×12: pads (0, 1) vertically, (1, 1) horizontally.
    assert_eq!(ints("conv_d.svd0", "pads"), [0, 0, 1, 0]);
    assert_eq!(ints("conv_d.svd1", "pads"), [0, 1, 0, 1]);
    assert!(crate::model::attrs::string(&node("conv_d.svd0"), "auto_pad").is_none());
}

/// A strided 1×1 conv (resnet's downsample shortcuts) is offered to spatial SVD as weight
/// SVD: two 1×1 convs, the stride on the first, so a rank costs Ho·Wo·(n + m) MACs.
#[test]
fn spatial_svd_splits_a_strided_1x1_conv_into_two_1x1s() {
    let model = sample("resnet_digits");
    let shapes = digit_shape();
    let s = SpatialSvd::new(Some(shapes.clone()));
    let names = eligible_names(&s, &model);
    for layer in ["layer2.downsample.conv", "layer3.downsample.conv"] {
        assert!(
            names.iter().any(|n| n == layer),
            "{layer} not offered: {names:?}"
        );
    }
    // layer2.downsample.conv: 16→32, stride 2, 8×8 outputs, 32,768 MACs; rank 4 costs
    // 4 · 64 · (16 + 32) = 12,288.
    let ranks = BTreeMap::from([("layer2.downsample.conv".to_string(), 4)]);
    let out = s.apply_ranks(&model, &ranks, &CancelToken::new()).unwrap();
    let change = &out.changes[0];
    assert_eq!((change.macs_before, change.macs_after), (32_768, 12_288));
    let g = out.model.graph();
    let node = |n: &str| g.node.iter().find(|x| x.name == n).unwrap().clone();
    let ints = |n: &str, a: &str| crate::model::attrs::ints(&node(n), a).unwrap();
    assert_eq!(ints("layer2.downsample.conv.svd0", "kernel_shape"), [1, 1]);
    assert_eq!(ints("layer2.downsample.conv.svd0", "strides"), [2, 2]);
    assert_eq!(ints("layer2.downsample.conv.svd1", "kernel_shape"), [1, 1]);
    assert_eq!(ints("layer2.downsample.conv.svd1", "strides"), [1, 1]);
    // At full rank (16) the model computes what it did.
    let x = digits(32);
    let full = BTreeMap::from([("layer2.downsample.conv".to_string(), 16)]);
    let exact = s.apply_ranks(&model, &full, &CancelToken::new()).unwrap();
    let (before, after) = (outputs(&model, &x), outputs(&exact.model, &x));
    let diff = relative_diff(&before, &after);
    assert!(diff < TOLERANCE, "full rank changed the outputs by {diff}");
}

#[test]
fn full_rank_keeps_the_sample_models_function() {
    let x = digits(64);
    let shapes = digit_shape();
    for name in ["mbv2_digits", "resnet_digits"] {
        let model = sample(name);
        let w = WeightSvd::new(Some(shapes.clone()));
        let full =
            |r: &BTreeMap<String, usize>| w.apply_ranks(&model, r, &CancelToken::new()).unwrap();
        check_method(&model, &w, full, &x, &shapes, &format!("{name} wsvd"));
        let s = SpatialSvd::new(Some(shapes.clone()));
        let full =
            |r: &BTreeMap<String, usize>| s.apply_ranks(&model, r, &CancelToken::new()).unwrap();
        check_method(&model, &s, full, &x, &shapes, &format!("{name} ssvd"));
    }
    // Depthwise layers are named as such.
    let model = sample("mbv2_digits");
    let report = WeightSvd::new(Some(digit_shape()))
        .eligible(&model)
        .unwrap();
    assert!(report.iter().any(|e| e
        .not_eligible
        .as_deref()
        .is_some_and(|r| r.contains("depthwise"))));
}

fn input_error(r: Result<CompressOutcome>) -> String {
    match r {
        Err(Error::Input(m)) => m,
        Err(e) => panic!("not an input error: {e}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn bad_requests_are_input_errors_and_ratio_one_changes_nothing() {
    let model = geometry_net();
    let s = SpatialSvd::new(None);
    let cancel = CancelToken::new();
    let one = |l: &str, r: f64| LayerRatios::from([(l.to_string(), r)]);
    let e = input_error(s.apply(&model, &one("gemm_t", 0.5), &cancel));
    assert!(e.contains("'gemm_t'") && e.contains("ssvd"), "{e}");
    let e = input_error(s.apply(&model, &one("nope", 0.5), &cancel));
    assert!(e.contains("'nope'"), "{e}");
    for r in [0.0, 1.5, f64::NAN] {
        let e = input_error(s.apply(&model, &one("conv_a", r), &cancel));
        assert!(e.contains("conv_a"), "{e}");
    }
    let w = WeightSvd::new(None);
    let e = input_error(w.apply_ranks(
        &model,
        &BTreeMap::from([("conv_b".to_string(), 9)]),
        &cancel,
    ));
    assert!(e.contains("conv_b") && e.contains("1..=8"), "{e}");
    let out = w.apply(&model, &one("conv_b", 1.0), &cancel).unwrap();
    assert!(out.changes.is_empty());
    assert_eq!(out.model.to_bytes(), model.to_bytes());
    assert_eq!(out.mac_ratio(), 1.0);
    // A cancelled job stops.
    cancel.cancel();
    assert!(matches!(
        w.apply(&model, &one("conv_b", 0.5), &cancel),
        Err(Error::Cancelled)
    ));
}

/// One strided conv (as `conv_a` of the geometry net) whose input height is symbolic.
fn symbolic_net() -> Model {
    let mut b = ProtoBuilder::new(13);
    b.input("x", &[3, 12, 13])
        .initializer("a.w", &Rng::new(2).array(&[8, 3, 3, 5], 0.4))
        .node(
            "Conv",
            "conv_a",
            &["x", "a.w"],
            &["y"],
            vec![
                attr_ints("kernel_shape", &[3, 5]),
                attr_ints("strides", &[2, 1]),
                attr_ints("pads", &[0, 1, 2, 2]),
            ],
        )
        .output("y");
    let mut proto = b.build();
    let input = &mut proto.graph.as_mut().unwrap().input[0];
    let Some(TypeValue::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut() else {
        panic!("a tensor input")
    };
    t.shape.as_mut().unwrap().dim[2].value = Some(DimValue::DimParam("H".into()));
    Model::from_proto(proto, "symbolic").unwrap()
}

#[test]
fn symbolic_macs_are_reported_not_guessed() {
    let model = symbolic_net();
    let cost = ModelCost::measure(&model, None).unwrap();
    assert!(cost.symbolic.contains(&"conv_a".to_string()), "{cost:?}");
    assert_eq!(cost.layer("conv_a").unwrap().macs, None);
    let pinned = ModelCost::measure(&model, Some(&[vec![3, 12, 13]])).unwrap();
    assert!(pinned.symbolic.is_empty());
    // conv_a: 8×6×12 outputs × 3·3·5.
    assert_eq!(pinned.layer("conv_a").unwrap().macs, Some(8 * 6 * 12 * 45));
    assert_eq!(CostComparison::new(&cost, &pinned).mac_ratio, None);
    let report = WeightSvd::new(None).eligible(&model).unwrap();
    let a = report.iter().find(|e| e.layer == "conv_a").unwrap();
    assert!(a.not_eligible.as_deref().unwrap().contains("symbolic"));
    let pinned = WeightSvd::new(Some(vec![vec![3, 12, 13]]));
    assert!(pinned.eligible(&model).unwrap()[0].not_eligible.is_none());
}

#[test]
fn cost_totals_and_table() {
    let model = sample("resnet_digits");
    let cost = ModelCost::measure(&model, Some(&digit_shape())).unwrap();
    let sum: u64 = cost.layers.iter().map(|l| l.macs.unwrap()).sum();
    assert_eq!(cost.macs_total, sum);
    assert!(cost.params_total >= cost.layers.iter().map(|l| l.params).sum::<u64>());
    assert_eq!(cost.memory_bytes, 4 * cost.params_total);
    let out = WeightSvd::new(Some(digit_shape()))
        .apply(
            &model,
            &LayerRatios::from([(cost.layers[1].layer.clone(), 0.5)]),
            &CancelToken::new(),
        )
        .unwrap();
    let after = ModelCost::measure(&out.model, Some(&digit_shape())).unwrap();
    let cmp = CostComparison::new(&cost, &after);
    let table = cmp.table();
    assert!(table.contains(&out.changes[0].refit[0]) || table.contains(&cost.layers[1].layer));
    assert!(
        table.lines().last().unwrap().starts_with("total MACs"),
        "{table}"
    );
    let json = serde_json::to_value(&cmp).unwrap();
    assert!(json["mac_ratio"].as_f64().unwrap() < 1.0);
    assert_eq!(json["rows"].as_array().unwrap().len(), cost.layers.len());
}

#[test]
fn a_constant_left_operand_is_not_eligible() {
    // y = W · x with W [4, 3] constant and x [N, 3, 5]: the weight is on the left.
    let mut b = ProtoBuilder::new(13);
    b.input("x", &[3, 5])
        .initializer("w", &Rng::new(3).array(&[4, 3], 0.5))
        .node("MatMul", "left", &["w", "x"], &["y"], vec![])
        .output("y");
    let model = b.model("left operand").unwrap();
    let report = WeightSvd::new(None).eligible(&model).unwrap();
    assert_eq!(report.len(), 1);
    let reason = report[0].not_eligible.clone().unwrap();
    assert!(reason.contains("left operand"), "{reason}");
    let e = input_error(WeightSvd::new(None).apply(
        &model,
        &LayerRatios::from([("left".to_string(), 0.5)]),
        &CancelToken::new(),
    ));
    assert!(e.contains("'left'") && e.contains("left operand"), "{e}");
}
