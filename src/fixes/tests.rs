//! Function preservation of the fixes: on the sample models with their digits data, and on
//! small synthetic nets built for one structure each. Outputs before and after must agree
//! to 1e-4 of the output range (float reassociation is all that may differ).

use super::*;
use crate::cancel::CancelToken;
use crate::data::{load_dataset, SplitMix64};
use crate::model::builder::{attr_int, attr_ints, ProtoBuilder};
use crate::model::Model;
use crate::runtime::CompiledModel;
use ndarray::{ArrayD, Axis, IxDyn};
use std::path::Path;

pub(crate) fn sample(name: &str) -> Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample-models")
        .join(format!("{name}.onnx"));
    Model::load(&path).unwrap()
}

/// The first `n` evaluation digits, [n, 1, 16, 16].
pub(crate) fn digits(n: usize) -> ArrayD<f32> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/digits/evaluation");
    let data = load_dataset(&dir).unwrap();
    data.inputs[0].data.read_range(0..n).unwrap()
}

pub(crate) fn outputs(model: &Model, x: &ArrayD<f32>) -> ArrayD<f32> {
    let shape = vec![x.shape()[1..].to_vec()];
    let compiled = CompiledModel::compile(model, &shape, x.shape()[0], &[]).unwrap();
    compiled.run(&[x.view()]).unwrap().remove(0)
}

/// max |a − b| relative to a's range.
pub(crate) fn relative_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let range = a.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
        - a.iter().fold(f32::INFINITY, |m, &v| m.min(v));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / range.max(f32::MIN_POSITIVE)
}

pub(crate) fn assert_same_function(before: &Model, after: &Model, x: &ArrayD<f32>, what: &str) {
    let d = relative_diff(&outputs(before, x), &outputs(after, x));
    assert!(d <= 1e-4, "{what}: outputs differ by {d} of their range");
}

fn cle(model: &Model, options: &CleOptions) -> CleOutcome {
    equalize(model, &BnStats::default(), options, &CancelToken::new()).unwrap()
}

fn ops(model: &Model) -> Vec<String> {
    model
        .graph()
        .node
        .iter()
        .map(|n| n.op_type.clone())
        .collect()
}

/// Seeded values in [-scale, scale].
pub(crate) struct Rng(SplitMix64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(SplitMix64(seed))
    }

    pub(crate) fn next(&mut self) -> f32 {
        self.0.symmetric()
    }

    pub(crate) fn array(&mut self, shape: &[usize], scale: f32) -> ArrayD<f32> {
        ArrayD::from_shape_fn(IxDyn(shape), |_| self.next() * scale)
    }

    /// Per-channel scales spread over two orders of magnitude: what CLE is for.
    fn spread(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| 10f32.powf(self.next())).collect()
    }
}

/// Multiply output channel o (axis 0) of `w` by `f[o]`.
fn spread_rows(mut w: ArrayD<f32>, f: &[f32]) -> ArrayD<f32> {
    for (o, mut row) in w.axis_iter_mut(Axis(0)).enumerate() {
        row.mapv_inplace(|v| v * f[o]);
    }
    w
}

/// A BatchNormalization `name` with the given scale, bias, mean and variance.
fn bn_with(b: &mut ProtoBuilder, name: &str, input: &str, output: &str, params: [ArrayD<f32>; 4]) {
    let names = ["scale", "bias", "mean", "var"].map(|p| format!("{name}.{p}"));
    for (n, a) in names.iter().zip(&params) {
        b.initializer(n, a);
    }
    let mut inputs = vec![input];
    inputs.extend(names.iter().map(|n| n.as_str()));
    b.node("BatchNormalization", name, &inputs, &[output], vec![]);
}

/// BN parameters for `c` channels, with variance and a mean far from 0.
fn bn(b: &mut ProtoBuilder, rng: &mut Rng, name: &str, c: usize, input: &str, output: &str) {
    let pos = |rng: &mut Rng| rng.array(&[c], 0.5).mapv(|v| v + 1.0);
    let params = [
        pos(rng),
        rng.array(&[c], 1.0),
        rng.array(&[c], 2.0),
        pos(rng),
    ];
    bn_with(b, name, input, output, params);
}

/// A BN whose output sits near `beta` (huge variance makes the normalized input tiny):
/// through a Relu it never drops below β − 3|γ| = β − 3, so HBA is exact there.
fn high_bn(b: &mut ProtoBuilder, name: &str, input: &str, output: &str, beta: ArrayD<f32>) {
    let fill = |v: f32| ArrayD::from_elem(beta.raw_dim(), v);
    let params = [fill(1.0), beta.clone(), fill(0.0), fill(1e6)];
    bn_with(b, name, input, output, params);
}

fn conv_attrs(k: i64, group: i64) -> Vec<tract_onnx::pb::AttributeProto> {
    let p = k / 2;
    vec![
        attr_ints("kernel_shape", &[k, k]),
        attr_ints("pads", &[p, p, p, p]),
        attr_int("group", group),
    ]
}

#[test]
fn bn_folding_keeps_the_sample_models_function() {
    let x = digits(64);
    for (name, bns) in [("mbv2_digits", 16), ("resnet_digits", 9)] {
        let model = sample(name);
        let out = fold_batchnorms(&model).unwrap();
        assert_eq!(out.report.folded.len(), bns, "{name}: {:?}", out.report);
        assert!(out.report.skipped.is_empty(), "{:?}", out.report.skipped);
        assert!(!ops(&out.model).contains(&"BatchNormalization".to_string()));
        assert_eq!(out.stats.layers.len(), bns);
        assert!(out
            .report
            .folded
            .iter()
            .all(|f| f.bias_added && f.op == "Conv"));
        // The BN parameters went with their nodes.
        assert!(out.model.weight("stem.bn.running_var").is_none());
        let s = out.stats.get("stem.conv").unwrap();
        assert_eq!(s.bn, "stem.bn");
        let gamma = model.weight("stem.bn.weight").unwrap();
        assert_eq!(s.std[3], gamma[3].abs());
        assert_eq!(s.mean[3], model.weight("stem.bn.bias").unwrap()[3]);
        assert_same_function(&model, &out.model, &x, name);
        // Folding again finds nothing.
        assert!(fold_batchnorms(&out.model)
            .unwrap()
            .report
            .folded
            .is_empty());
    }
}

/// Conv (no bias, weight in a Constant node) → BN → Relu → BN (behind the activation) →
/// ConvTranspose (group 2) → BN, plus a BN on a value read twice.
fn conv_family_net() -> Model {
    let mut rng = Rng::new(1);
    let mut b = ProtoBuilder::new(13);
    b.input("x", &[4, 6, 6])
        .constant("conv.w", &rng.array(&[6, 4, 3, 3], 0.5))
        .node("Conv", "conv", &["x", "conv.w"], &["c"], conv_attrs(3, 1));
    bn(&mut b, &mut rng, "bn1", 6, "c", "b1");
    b.node("Relu", "relu", &["b1"], &["r"], vec![]);
    bn(&mut b, &mut rng, "bn_after_relu", 6, "r", "b2");
    b.initializer("convt.w", &rng.array(&[6, 2, 2, 2], 0.5))
        .initializer("convt.b", &rng.array(&[4], 0.5))
        .node(
            "ConvTranspose",
            "convt",
            &["b2", "convt.w", "convt.b"],
            &["t"],
            vec![attr_ints("strides", &[2, 2]), attr_int("group", 2)],
        );
    bn(&mut b, &mut rng, "bn_t", 4, "t", "bt");
    // A conv whose output is read by a BN and by the Add: the BN cannot fold.
    b.initializer("side.w", &rng.array(&[4, 4, 1, 1], 0.5))
        .node("Conv", "side", &["bt", "side.w"], &["s"], vec![]);
    bn(&mut b, &mut rng, "bn_shared", 4, "s", "bs");
    b.node("Add", "add", &["bs", "s"], &["y"], vec![])
        .output("y");
    b.model("conv family").unwrap()
}

#[test]
fn bn_folding_handles_constant_weights_missing_biases_and_conv_transpose() {
    let model = conv_family_net();
    let out = fold_batchnorms(&model).unwrap();
    let folded: Vec<(&str, &str, bool)> = out
        .report
        .folded
        .iter()
        .map(|f| (f.bn.as_str(), f.layer.as_str(), f.bias_added))
        .collect();
    assert_eq!(folded, [("bn1", "conv", true), ("bn_t", "convt", false)]);
    let skipped: Vec<(&str, &str)> = out
        .report
        .skipped
        .iter()
        .map(|s| (s.bn.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0].0 == "bn_after_relu" && skipped[0].1.contains("Relu 'relu'"));
    assert!(skipped[1].0 == "bn_shared" && skipped[1].1.contains("also read by 1"));
    // The Constant-node weight was rewritten in place, not duplicated.
    assert_eq!(
        ops(&out.model).iter().filter(|o| *o == "Constant").count(),
        1
    );
    assert_eq!(out.stats.layers.len(), 2);
    let mut rng = Rng::new(7);
    let x = rng.array(&[3, 4, 6, 6], 1.0);
    assert_same_function(&model, &out.model, &x, "conv family");
}

fn gemm_net(trans_b: bool) -> Model {
    let mut rng = Rng::new(if trans_b { 3 } else { 4 });
    let mut b = ProtoBuilder::new(13);
    let w = if trans_b { [5, 8] } else { [8, 5] };
    b.input("x", &[8])
        .initializer("fc.w", &rng.array(&w, 0.5))
        .initializer("fc.b", &rng.array(&[5], 0.5))
        .node(
            "Gemm",
            "fc",
            &["x", "fc.w", "fc.b"],
            &["y0"],
            vec![
                attr_int("transB", trans_b as i64),
                crate::model::builder::attr_float("beta", 0.5),
                crate::model::builder::attr_float("alpha", 1.5),
            ],
        );
    bn(&mut b, &mut rng, "bn", 5, "y0", "y");
    b.output("y");
    b.model("gemm").unwrap()
}

#[test]
fn bn_folding_into_gemm_either_layout() {
    for trans_b in [false, true] {
        let model = gemm_net(trans_b);
        let out = fold_batchnorms(&model).unwrap();
        assert_eq!(out.report.folded.len(), 1, "{:?}", out.report);
        assert_eq!(out.report.folded[0].op, "Gemm");
        assert_eq!(ops(&out.model), ["Gemm"]);
        let x = Rng::new(9).array(&[4, 8], 2.0);
        assert_same_function(&model, &out.model, &x, &format!("gemm transB={trans_b}"));
    }
}

/// Conv → Relu → DWConv → Relu → Conv → Relu → Conv, channels with ranges spread wide; BNs
/// after the first two so HBA has statistics.
fn chain_net(activation: &str) -> Model {
    let mut rng = Rng::new(11);
    let mut b = ProtoBuilder::new(13);
    let spread1 = rng.spread(8);
    let spread2 = rng.spread(8);
    b.input("x", &[3, 8, 8])
        .initializer(
            "c1.w",
            &spread_rows(rng.array(&[8, 3, 1, 1], 0.5), &spread1),
        )
        .node("Conv", "c1", &["x", "c1.w"], &["c1"], vec![]);
    bn(&mut b, &mut rng, "bn1", 8, "c1", "b1");
    b.node(activation, "a1", &["b1"], &["a1"], vec![])
        .initializer(
            "dw.w",
            &spread_rows(rng.array(&[8, 1, 3, 3], 0.5), &spread2),
        )
        .node("Conv", "dw", &["a1", "dw.w"], &["dw"], conv_attrs(3, 8));
    high_bn(
        &mut b,
        "bn2",
        "dw",
        "b2",
        rng.array(&[8], 0.5).mapv(|v| v + 5.0),
    );
    b.node(activation, "a2", &["b2"], &["a2"], vec![])
        .initializer("c2.w", &rng.array(&[6, 8, 1, 1], 0.5))
        .initializer("c2.b", &rng.array(&[6], 0.5))
        .node("Conv", "c2", &["a2", "c2.w", "c2.b"], &["c2"], vec![])
        .node(activation, "a3", &["c2"], &["a3"], vec![])
        .initializer("c3.w", &rng.array(&[4, 6, 1, 1], 0.5))
        .node("Conv", "c3", &["a3", "c3.w"], &["y"], vec![])
        .output("y");
    b.model("chain").unwrap()
}

fn ranges_out(model: &Model, w: &str) -> Vec<f32> {
    let a = model.weight(w).unwrap();
    a.axis_iter(Axis(0))
        .map(|c| c.iter().fold(0.0f32, |m, v| m.max(v.abs())))
        .collect()
}

fn ranges_in(model: &Model, w: &str) -> Vec<f32> {
    let a = model.weight(w).unwrap();
    a.axis_iter(Axis(1))
        .map(|c| c.iter().fold(0.0f32, |m, v| m.max(v.abs())))
        .collect()
}

#[test]
fn cle_equalizes_a_three_layer_chain_and_its_successor() {
    let model = chain_net("Relu");
    let options = CleOptions {
        hba: false,
        scaling: CleScaling::Settle,
        ..Default::default()
    };
    let out = cle(&model, &options);
    let r = &out.report;
    assert_eq!(r.folded.as_ref().map(|f| f.folded.len()), Some(2));
    let sets: Vec<Vec<&str>> = r
        .sets
        .iter()
        .map(|s| s.layers.iter().map(|l| l.as_str()).collect())
        .collect();
    assert_eq!(sets, [vec!["c1", "dw", "c2"], vec!["c2", "c3"]]);
    assert!(
        r.converged && r.iterations > 1,
        "{} iterations",
        r.iterations
    );
    let m = &out.model;
    // The last pair is equalized exactly (it ran last); the triple up to the tolerance.
    for (a, b) in ranges_out(m, "c2.w").iter().zip(ranges_in(m, "c3.w")) {
        assert!((a / b - 1.0).abs() < 1e-4, "{a} vs {b}");
    }
    let (r1, r2) = (ranges_out(m, "c1.w"), ranges_out(m, "dw.w"));
    for ((a, d), c) in r1.iter().zip(&r2).zip(ranges_in(m, "c2.w")) {
        assert!(
            (a / d - 1.0).abs() < 1e-3 && (d / c - 1.0).abs() < 1e-3,
            "{a} {d} {c}"
        );
    }
    let c1 = r.layers.iter().find(|l| l.layer == "c1").unwrap();
    assert!(
        c1.before.max_median_ratio > 3.0 * c1.after.max_median_ratio,
        "{c1:?}"
    );
    let x = Rng::new(5).array(&[4, 3, 8, 8], 1.0);
    assert_same_function(&model, m, &x, "chain");
}

/// A ResNet bottleneck without BNs: Conv 1×1 → Relu → Conv 3×3 → Relu → Conv 1×1, the
/// first two with channel ranges spread wide. Two pairs share the 3×3 conv.
fn bottleneck_net() -> Model {
    let mut rng = Rng::new(41);
    let (s1, s2) = (rng.spread(6), rng.spread(5));
    let mut b = ProtoBuilder::new(13);
    b.input("x", &[4, 6, 6])
        .initializer("a.w", &spread_rows(rng.array(&[6, 4, 1, 1], 0.5), &s1))
        .initializer("a.b", &rng.array(&[6], 0.5))
        .node("Conv", "a", &["x", "a.w", "a.b"], &["a"], vec![])
        .node("Relu", "ra", &["a"], &["ra"], vec![])
        .initializer("b.w", &spread_rows(rng.array(&[5, 6, 3, 3], 0.5), &s2))
        .initializer("b.b", &rng.array(&[5], 0.5))
        .node("Conv", "b", &["ra", "b.w", "b.b"], &["b"], conv_attrs(3, 1))
        .node("Relu", "rb", &["b"], &["rb"], vec![])
        .initializer("c.w", &rng.array(&[7, 5, 1, 1], 0.5))
        .node("Conv", "c", &["rb", "c.w"], &["y"], vec![])
        .output("y");
    b.model("bottleneck").unwrap()
}

/// The plain form of CLE on pairs of group-1 convs: each iteration equalizes every pair in
/// order, scaling the whole weights, recomputing every range from them.
fn reference_cle(model: &Model, pairs: &[[&str; 2]], iterations: usize) -> Vec<ArrayD<f32>> {
    let names: Vec<String> = ["a", "b", "c"].map(|l| format!("{l}.w")).to_vec();
    let mut w: Vec<ArrayD<f32>> = names
        .iter()
        .map(|n| model.weight(n).unwrap().clone())
        .collect();
    let at = |l: &str| names.iter().position(|n| *n == format!("{l}.w")).unwrap();
    let max_abs = |v: ndarray::ArrayViewD<f32>| v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    for _ in 0..iterations {
        for [p, q] in pairs {
            let (i, j) = (at(p), at(q));
            let r1: Vec<f32> = w[i].axis_iter(Axis(0)).map(max_abs).collect();
            let r2: Vec<f32> = w[j].axis_iter(Axis(1)).map(max_abs).collect();
            let s: Vec<f32> = r1.iter().zip(&r2).map(|(a, b)| (a / b).sqrt()).collect();
            for (o, mut row) in w[i].axis_iter_mut(Axis(0)).enumerate() {
                row.mapv_inplace(|v| v / s[o]);
            }
            for (c, mut col) in w[j].axis_iter_mut(Axis(1)).enumerate() {
                col.mapv_inplace(|v| v * s[c]);
            }
        }
    }
    w
}

#[test]
fn cle_iterations_converge_on_shared_layers_and_match_the_plain_form() {
    let model = bottleneck_net();
    let options = CleOptions {
        hba: false,
        scaling: CleScaling::Settle,
        ..Default::default()
    };
    let out = cle(&model, &options);
    let r = &out.report;
    assert_eq!(set_layers(r), [["a", "b"], ["b", "c"]]);
    assert!(r.converged && r.iterations > 2, "{r:?}");
    assert!(r.last_change <= options.tolerance);
    let m = &out.model;
    // Both pairs balanced: the last exactly, the first up to what the last iteration moved.
    for (p, q, tol) in [("a.w", "b.w", 1e-3), ("b.w", "c.w", 1e-5)] {
        for (x, y) in ranges_out(m, p).iter().zip(ranges_in(m, q)) {
            assert!((x / y - 1.0).abs() < tol, "{p}/{q}: {x} vs {y}");
        }
    }
    // The same numbers as scaling the whole weights every iteration.
    let reference = reference_cle(&model, &[["a", "b"], ["b", "c"]], r.iterations);
    for (name, want) in ["a.w", "b.w", "c.w"].iter().zip(&reference) {
        let got = m.weight(name).unwrap();
        let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let diff = (got - want).iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert!(
            diff <= 1e-5 * scale,
            "{name}: off by {diff} (range {scale})"
        );
    }
    let x = Rng::new(42).array(&[4, 4, 6, 6], 1.0);
    assert_same_function(&model, m, &x, "bottleneck");
}

#[test]
fn cle_through_leaky_relu() {
    let x = Rng::new(6).array(&[4, 3, 8, 8], 1.0);
    let leaky = chain_net("LeakyRelu");
    let out = cle(&leaky, &CleOptions::default());
    assert_eq!(out.report.sets.len(), 2);
    // HBA is Relu only.
    assert!(out.report.hba.as_ref().unwrap().absorbed.is_empty());
    assert_same_function(&leaky, &out.model, &x, "leaky chain");
}

#[test]
fn high_bias_absorption_moves_bias_where_no_padding_is_in_the_way() {
    let model = chain_net("Relu");
    let out = cle(&model, &CleOptions::default());
    let hba = out.report.hba.as_ref().unwrap();
    // c1 → dw: dw pads its input (and c1's BN has little to give); dw → c2 (1×1): absorbed.
    assert!(hba.skipped.iter().any(|s| s.layer == "c1"), "{hba:?}");
    assert_eq!(hba.absorbed.len(), 1, "{hba:?}");
    let a = &hba.absorbed[0];
    assert_eq!(
        (a.layer.as_str(), a.into.as_str(), a.channels),
        ("dw", "c2", 8)
    );
    // The statistics follow: dw's output mean dropped by c, to 3|γ| above zero.
    let s = out.stats.get("dw").unwrap();
    for (m, d) in s.mean.iter().zip(&s.std) {
        assert!((m - 3.0 * d).abs() <= 1e-4 * m.abs().max(1.0), "{m} {d}");
    }
    let x = Rng::new(8).array(&[16, 3, 8, 8], 1.0);
    assert_same_function(&model, &out.model, &x, "chain + hba");
    // Without HBA the dw bias stays high.
    let plain = CleOptions {
        hba: false,
        ..Default::default()
    };
    let no_hba = cle(&model, &plain);
    let dw_bias = |m: &Model| {
        m.weight("dw.bias")
            .unwrap()
            .iter()
            .fold(0.0f32, |a, &v| a.max(v))
    };
    assert!(dw_bias(&out.model) < dw_bias(&no_hba.model));
}

fn set_layers(r: &CleReport) -> Vec<Vec<String>> {
    r.sets.iter().map(|s| s.layers.clone()).collect()
}

#[test]
fn cle_on_resnet_keeps_its_function() {
    let model = sample("resnet_digits");
    let out = cle(&model, &CleOptions::default());
    let r = &out.report;
    assert_eq!(r.folded.as_ref().unwrap().folded.len(), 9);
    let sets = set_layers(r);
    assert_eq!(sets.len(), 3, "{sets:?}");
    assert_eq!(sets[0], ["layer1.conv1", "layer1.conv2"]);
    assert!(r.sets.iter().all(|s| s.activations == ["Relu"]));
    assert!(r.converted.is_empty());
    // The stem's output also feeds the residual Add: no chain starts there.
    let stem = r.ends.iter().find(|e| e.layer == "stem.conv").unwrap();
    assert!(stem.reason.contains("read by 2 nodes"), "{stem:?}");
    assert_same_function(&model, &out.model, &digits(64), "resnet cle+hba");
}

#[test]
fn cle_on_mbv2_goes_through_relu6_only_with_consent() {
    let model = sample("mbv2_digits");
    let x = digits(64);
    let refused = cle(&model, &CleOptions::default());
    assert!(refused.report.sets.is_empty(), "{:?}", refused.report.sets);
    assert!(refused.report.converted.is_empty());
    let through_clip = refused
        .report
        .ends
        .iter()
        .filter(|e| e.reason.contains("needs relu6_to_relu"))
        .count();
    assert_eq!(through_clip, 9, "{:?}", refused.report.ends);
    assert_same_function(&model, &refused.model, &x, "mbv2 without consent");

    let options = CleOptions {
        relu6_to_relu: true,
        hba: false,
        ..Default::default()
    };
    let out = cle(&model, &options);
    let r = &out.report;
    let sets = set_layers(r);
    assert_eq!(sets.len(), 5, "{sets:?}");
    assert_eq!(sets[0], ["block1.dw.conv", "block1.project.conv"]);
    assert_eq!(
        sets[1],
        [
            "block2.expand.conv",
            "block2.dw.conv",
            "block2.project.conv"
        ]
    );
    let converted: Vec<&str> = r.converted.iter().map(|c| c.node.as_str()).collect();
    assert_eq!(converted.len(), 9);
    assert!(converted.contains(&"block2.expand.relu6") && converted.contains(&"block1.dw.relu6"));
    assert!(r.converted.iter().all(|c| c.was == "Clip(0, 6)"));
    // The scaling itself changes nothing: compare with the same Relu6 → Relu, unscaled.
    let names: Vec<String> = r.converted.iter().map(|c| c.node.clone()).collect();
    let reference = convert_to_relu(&fold_batchnorms(&model).unwrap().model, &names).unwrap();
    assert_same_function(&reference, &out.model, &x, "mbv2 cle");
    // The stem and head keep their Relu6.
    let clips = ops(&out.model).iter().filter(|o| *o == "Clip").count();
    assert_eq!(clips, 16 - 9 - 5);
}

#[test]
fn reach_tells_when_relu6_stops_every_chain() {
    let mbv2 = crate::fixes::reach(&sample("mbv2_digits")).unwrap();
    assert_eq!((mbv2.sets, mbv2.sets_with_relu), (0, 5));
    assert!(mbv2.relu6_stops_every_chain());
    let resnet = crate::fixes::reach(&sample("resnet_digits")).unwrap();
    assert_eq!((resnet.sets, resnet.sets_with_relu), (3, 3));
    assert!(!resnet.relu6_stops_every_chain());
}

/// Conv 1×1 → BN (output ≈ 5 ± tiny) → Relu → Conv 3×3 with zero padding.
fn padded_pair() -> Model {
    let mut rng = Rng::new(21);
    let mut b = ProtoBuilder::new(13);
    b.input("x", &[3, 6, 6])
        .initializer("c1.w", &rng.array(&[4, 3, 1, 1], 0.5))
        .node("Conv", "c1", &["x", "c1.w"], &["c1"], vec![]);
    high_bn(&mut b, "bn", "c1", "b", ArrayD::from_elem(IxDyn(&[4]), 5.0));
    b.node("Relu", "relu", &["b"], &["r"], vec![])
        .initializer("c2.w", &rng.array(&[2, 4, 3, 3], 0.5))
        .node("Conv", "c2", &["r", "c2.w"], &["y"], conv_attrs(3, 1))
        .output("y");
    b.model("padded pair").unwrap()
}

#[test]
fn absorbing_into_a_zero_padded_conv_changes_only_its_border() {
    let model = padded_pair();
    let x = Rng::new(22).array(&[8, 3, 6, 6], 1.0);
    let reference = outputs(&model, &x);
    let exact = cle(&model, &CleOptions::default());
    let hba = exact.report.hba.as_ref().unwrap();
    assert!(hba.absorbed.is_empty() && hba.skipped[0].reason.contains("zero-pads"));
    assert_same_function(&model, &exact.model, &x, "padded conv skipped");
    let aimet = cle(
        &model,
        &CleOptions {
            hba_padded: true,
            ..Default::default()
        },
    );
    let a = aimet.report.hba.as_ref().unwrap();
    assert_eq!(a.absorbed.len(), 1, "{a:?}");
    assert!(a.absorbed[0].max > 1.9, "c = β − 3|γ| ≈ 2: {a:?}");
    let got = outputs(&aimet.model, &x);
    let range = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let (mut inner, mut border) = (0.0f32, 0.0f32);
    for ((idx, r), g) in reference.indexed_iter().zip(got.iter()) {
        let (h, w) = (idx[2], idx[3]);
        let d = (r - g).abs() / range;
        if (1..5).contains(&h) && (1..5).contains(&w) {
            inner = inner.max(d);
        } else {
            border = border.max(d);
        }
    }
    eprintln!("HBA into a padded 3×3 conv: border outputs off by {border:.3} of the output range, interior {inner:.1e}");
    assert!(inner < 1e-4, "{inner}");
    assert!(border > 0.05, "{border}");
}

#[test]
fn cle_equalizes_gemm_pairs_in_both_weight_layouts() {
    let mut rng = Rng::new(31);
    let spread = rng.spread(6);
    // fc1 stores [K=8, N=6] (transB=0): output channel n is column n.
    let mut w1 = rng.array(&[8, 6], 0.5);
    for (n, mut col) in w1.axis_iter_mut(Axis(1)).enumerate() {
        col.mapv_inplace(|v| v * spread[n]);
    }
    let mut b = ProtoBuilder::new(13);
    b.input("x", &[8])
        .initializer("fc1.w", &w1)
        .initializer("fc1.b", &rng.array(&[6], 0.5))
        .node("Gemm", "fc1", &["x", "fc1.w", "fc1.b"], &["h"], vec![])
        .node("Relu", "relu", &["h"], &["r"], vec![])
        .initializer("fc2.w", &rng.array(&[4, 6], 0.5))
        .node(
            "Gemm",
            "fc2",
            &["r", "fc2.w"],
            &["y"],
            vec![attr_int("transB", 1)],
        )
        .output("y");
    let model = b.model("gemm pair").unwrap();
    let out = cle(&model, &CleOptions::default());
    assert_eq!(set_layers(&out.report), [["fc1", "fc2"]]);
    let m = &out.model;
    let cols = |w: &str| -> Vec<f32> {
        m.weight(w)
            .unwrap()
            .axis_iter(Axis(1))
            .map(|c| c.iter().fold(0.0f32, |a, v| a.max(v.abs())))
            .collect()
    };
    for (a, b) in cols("fc1.w").iter().zip(cols("fc2.w")) {
        assert!((a / b - 1.0).abs() < 1e-5, "{a} vs {b}");
    }
    let x = Rng::new(32).array(&[16, 8], 2.0);
    assert_same_function(&model, m, &x, "gemm pair");
}

/// Conv 1×1 → BN (β − 3|γ| = 2 or 6: HBA's c) → Relu → Conv 1×1. Real inputs reach far
/// below β − 3|γ| (c1's output spans about ±6), which the BN statistics do not show.
fn statistically_high_pair() -> Model {
    let mut rng = Rng::new(41);
    let mut b = ProtoBuilder::new(13);
    let fill = |v: f32| ArrayD::from_elem(IxDyn(&[4]), v);
    let beta = ArrayD::from_shape_vec(IxDyn(&[4]), vec![5.0, 5.0, 9.0, 9.0]).unwrap();
    b.input("x", &[3, 6, 6])
        .initializer("c1.w", &rng.array(&[4, 3, 1, 1], 0.8))
        .node("Conv", "c1", &["x", "c1.w"], &["c1"], vec![]);
    bn_with(
        &mut b,
        "bn",
        "c1",
        "b",
        [fill(1.0), beta, fill(0.0), fill(1.0)],
    );
    b.node("Relu", "relu", &["b"], &["r"], vec![])
        .initializer("c2.w", &rng.array(&[2, 4, 1, 1], 0.5))
        .initializer("c2.b", &rng.array(&[2], 0.5))
        .node("Conv", "c2", &["r", "c2.w", "c2.b"], &["y"], vec![])
        .output("y");
    b.model("statistically high pair").unwrap()
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn high_bias_absorption_checked_on_samples_keeps_their_outputs() {
    let model = statistically_high_pair();
    let x = Rng::new(42).array(&[32, 3, 6, 6], 4.0);
    let reference = outputs(&model, &x);
    // The statistics alone: c = β − 3|γ| moves although the inputs go below it.
    let statistical = cle(&model, &CleOptions::default());
    let h = statistical.report.hba.as_ref().unwrap();
    assert_eq!(h.absorbed.len(), 1, "{h:?}");
    assert!(h.checked_on.is_none());
    let moved = max_abs_diff(&reference, &outputs(&statistical.model, &x));
    assert!(
        moved > 0.05,
        "statistical HBA changed the outputs by only {moved}"
    );
    // Limited to what the samples allow: the same outputs on them.
    let data = crate::data::Dataset::from_arrays(
        "x",
        vec![crate::data::NamedInput::from_array(None, "x", x.clone())],
        None,
    )
    .unwrap();
    let samples = HbaSamples {
        data: &data,
        options: crate::runtime::RunOptions::default(),
    };
    let checked = equalize_checked(
        &model,
        &BnStats::default(),
        &CleOptions::default(),
        Some(samples),
        &CancelToken::new(),
    )
    .unwrap();
    let h = checked.report.hba.as_ref().unwrap();
    assert_eq!(h.checked_on, Some(32));
    let a = &h.absorbed[0];
    assert!(a.reduced > 0 && a.max > 0.0, "{a:?}");
    assert!(a.max < a.max_from_statistics.unwrap(), "{a:?}");
    let d = max_abs_diff(&reference, &outputs(&checked.model, &x));
    assert!(
        d < 1e-4,
        "checked HBA changed the outputs on its samples by {d}"
    );
    eprintln!("statistical HBA: max |Δ| {moved:.3}; checked on the samples: {d:.1e} ({a:?})");
}

/// Three 1×1 convs a → Relu → b → Relu → c on one input channel, weights picked so one pass
/// by hand stays in small numbers (see `cle_once_is_one_pass_over_the_sets_by_hand`).
fn three_pair_net() -> Model {
    let arr =
        |shape: &[usize], v: &[f32]| ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap();
    let mut b = ProtoBuilder::new(13);
    b.input("x", &[1, 2, 2])
        .initializer("a.w", &arr(&[2, 1, 1, 1], &[4.0, 1.0]))
        .initializer("a.b", &arr(&[2], &[4.0, 1.0]))
        .node("Conv", "a", &["x", "a.w", "a.b"], &["a"], vec![])
        .node("Relu", "ra", &["a"], &["ra"], vec![])
        .initializer("b.w", &arr(&[2, 2, 1, 1], &[1.0, 4.0, 1.0, 16.0]))
        .initializer("b.b", &arr(&[2], &[2.0, 2.0]))
        .node("Conv", "b", &["ra", "b.w", "b.b"], &["b"], vec![])
        .node("Relu", "rb", &["b"], &["rb"], vec![])
        .initializer("c.w", &arr(&[1, 2, 1, 1], &[8.0, 1.0]))
        .node("Conv", "c", &["rb", "c.w"], &["y"], vec![])
        .output("y");
    b.model("three_pair").unwrap()
}

#[test]
fn cle_once_is_one_pass_over_the_sets_by_hand() {
    let model = three_pair_net();
    let once = CleOptions {
        hba: false,
        scaling: CleScaling::Once,
        ..Default::default()
    };
    let out = cle(&model, &once);
    let r = &out.report;
    assert_eq!(set_layers(r), [["a", "b"], ["b", "c"]]);
    assert_eq!((r.scaling, r.iterations), (CleScaling::Once, 1));
    // Set (a, b): r_a = (4, 1), b's input ranges (1, 16) → s = (√(4/1), √(1/16)) = (2, 1/4):
    // a = (4, 1)/s = (2, 4), bias (4, 1)/s = (2, 4); b's columns ·s → [[2, 1], [2, 4]].
    // Set (b, c): b's output ranges (2, 4), c's input ranges (8, 1) → s = (1/2, 2):
    // b's rows /s → [[4, 2], [1, 2]], bias (2, 2)/s = (4, 1); c's columns ·s → [4, 2].
    let want = [
        ("a.w", vec![2.0, 4.0]),
        ("a.b", vec![2.0, 4.0]),
        ("b.w", vec![4.0, 2.0, 1.0, 2.0]),
        ("b.b", vec![4.0, 1.0]),
        ("c.w", vec![4.0, 2.0]),
    ];
    for (name, w) in want {
        let got: Vec<f32> = out.model.weight(name).unwrap().iter().copied().collect();
        for (g, e) in got.iter().zip(&w) {
            assert!((g - e).abs() < 1e-6, "{name}: {got:?}, by hand {w:?}");
        }
    }
    // The first pair is left as the second set scaled b: a's ranges (2, 4) against b's
    // input ranges (4, 2). Settling balances it too, so the two options differ here.
    assert_eq!(ranges_in(&out.model, "b.w"), [4.0, 2.0]);
    let settle = cle(
        &model,
        &CleOptions {
            scaling: CleScaling::Settle,
            ..once.clone()
        },
    );
    assert!(settle.report.iterations > 1, "{:?}", settle.report);
    for (x, y) in ranges_out(&settle.model, "a.w")
        .iter()
        .zip(ranges_in(&settle.model, "b.w"))
    {
        assert!((x / y - 1.0).abs() < 1e-3, "settled: {x} vs {y}");
    }
    let x = Rng::new(9).array(&[3, 1, 2, 2], 2.0);
    assert_same_function(&model, &out.model, &x, "one pass");
    assert_same_function(&model, &settle.model, &x, "settled");
}

#[test]
fn cle_once_matches_the_plain_form_after_one_iteration() {
    let model = bottleneck_net();
    let options = CleOptions {
        hba: false,
        scaling: CleScaling::Once,
        ..Default::default()
    };
    let out = cle(&model, &options);
    assert_eq!(out.report.iterations, 1);
    let reference = reference_cle(&model, &[["a", "b"], ["b", "c"]], 1);
    for (name, want) in ["a.w", "b.w", "c.w"].iter().zip(&reference) {
        let got = out.model.weight(name).unwrap();
        let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let diff = (got - want).iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert!(diff <= 1e-6 * scale, "{name}: off by {diff}");
    }
    let x = Rng::new(43).array(&[4, 4, 6, 6], 1.0);
    assert_same_function(&model, &out.model, &x, "bottleneck, one pass");
}
