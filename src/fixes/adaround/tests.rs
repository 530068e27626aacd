use super::activation::Activation;
use super::linear::{ConvGeometry, LinearOp};
use super::optimize::{self, Hyper, Problem, RowGrid, SplitMix};
use super::*;
use crate::model::tensor::tensor_from_array;
use crate::quant::import::quantsim_from_file;
use crate::quant::points::tests::sample_model;
use crate::quant::qdq::QuantMode;
use crate::quant::simulate::{quantsim, QuantsimSettings};
use crate::quant::{Encoding, QuantSpec};
use crate::runtime::CompiledModel;
use ndarray::{Array2, ArrayD, IxDyn};
use std::sync::Mutex;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = SplitMix::new(seed);
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

fn geometry() -> ConvGeometry {
    // Groups, stride 2, asymmetric padding, dilation 2.
    ConvGeometry {
        in_channels: 4,
        out_channels: 6,
        groups: 2,
        input: [9, 8],
        kernel: [3, 2],
        strides: [2, 2],
        dilations: [2, 1],
        pads: [1, 2, 2, 0],
    }
}

fn ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn info(name: &str, dims: Option<&[usize]>) -> ValueInfoProto {
    let shape = dims.map(|d| TensorShapeProto {
        dim: std::iter::once(dimension::Value::DimParam("N".into()))
            .chain(d.iter().map(|&v| dimension::Value::DimValue(v as i64)))
            .map(|v| Dimension {
                value: Some(v),
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One Conv node `y = Conv(x, W)` with geometry `g`.
fn conv_model(g: &ConvGeometry, w: &ArrayD<f32>) -> Model {
    let graph = GraphProto {
        name: "conv".into(),
        node: vec![NodeProto {
            name: "conv".into(),
            op_type: "Conv".into(),
            input: vec!["x".into(), "W".into()],
            output: vec!["y".into()],
            attribute: vec![
                ints("kernel_shape", &g.kernel),
                ints("strides", &g.strides),
                ints("dilations", &g.dilations),
                ints("pads", &g.pads),
                AttributeProto {
                    name: "group".into(),
                    r#type: AttributeType::Int as i32,
                    i: g.groups as i64,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
        initializer: vec![tensor_from_array("W", w)],
        input: vec![info("x", Some(&[g.in_channels, g.input[0], g.input[1]]))],
        output: vec![info("y", None)],
        ..Default::default()
    };
    let proto = ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(graph),
        ..Default::default()
    };
    Model::from_proto(proto, "conv").unwrap()
}

fn conv_weight_shape(g: &ConvGeometry) -> Vec<usize> {
    vec![
        g.out_channels,
        g.in_channels / g.groups,
        g.kernel[0],
        g.kernel[1],
    ]
}

#[test]
fn conv_forward_matches_tract() {
    let depthwise = ConvGeometry {
        in_channels: 3,
        out_channels: 3,
        groups: 3,
        input: [7, 7],
        kernel: [3, 3],
        strides: [1, 1],
        dilations: [1, 1],
        pads: [1, 1, 1, 1],
    };
    for (k, g) in [geometry(), depthwise].into_iter().enumerate() {
        let w = random(&conv_weight_shape(&g), 1 + k as u64);
        let model = conv_model(&g, &w);
        let x = random(&[3, g.in_channels, g.input[0], g.input[1]], 7);
        // The op as the layer table describes it.
        let shapes = model.shapes(Some(&[x.shape()[1..].to_vec()])).unwrap();
        let layer = &model.layers(&shapes).unwrap()[0];
        let op = LinearOp::of(&model, layer).unwrap();
        assert_eq!(op, LinearOp::Conv(g.clone()));
        let ours = op
            .forward(x.view(), &op.weight_matrix(&w).unwrap())
            .unwrap();
        let compiled = CompiledModel::compile(&model, &[x.shape()[1..].to_vec()], 3, &[]).unwrap();
        let theirs = compiled.run(&[x.view()]).unwrap().remove(0);
        assert_eq!(ours.shape(), theirs.shape());
        let diff = (&ours - &theirs)
            .mapv(f32::abs)
            .fold(0f32, |a, &b| a.max(b));
        assert!(diff < 1e-5, "geometry {k}: max diff {diff}");
    }
}

/// A problem on random data with a 4-bit grid per output row: the target is the FP32 layer
/// (with a bias) on inputs `x`, the columns come from `x` plus noise (the simulation's input).
struct Setup {
    op: LinearOp,
    weight: Array2<f32>,
    bias: Vec<f32>,
    grid: RowGrid,
    cols: Vec<Array2<f32>>,
    target: Array2<f32>,
    act: Activation,
    positions: usize,
    samples: usize,
}

impl Setup {
    fn new(op: LinearOp, sample: &[usize], samples: usize, act: Activation) -> Setup {
        let shape: Vec<usize> = std::iter::once(samples)
            .chain(sample.iter().copied())
            .collect();
        let x = random(&shape, 11);
        let weight = random(&[op.out_channels(), op.k()], 5)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let spec = QuantSpec::new(4, false).unwrap();
        let encodings: Vec<Encoding> = weight
            .rows()
            .into_iter()
            .map(|r| {
                spec.encoding(
                    r.fold(0f32, |a, &b| a.min(b)),
                    r.fold(0f32, |a, &b| a.max(b)),
                )
            })
            .collect();
        let grid = RowGrid::new(&encodings, weight.nrows());
        let bias: Vec<f32> = random(&[op.out_channels()], 13).iter().copied().collect();
        let fp32_cols = op.columns(x.view()).unwrap();
        let target = Problem::activated_output(&op, &weight, &bias, &act, &fp32_cols);
        let noisy = &x + &(random(x.shape(), 17) * 0.05);
        let cols = op.columns(noisy.view()).unwrap();
        let positions = op.positions(sample);
        Setup {
            op,
            weight,
            bias,
            grid,
            cols,
            target,
            act,
            positions,
            samples,
        }
    }

    fn problem(&self) -> Problem<'_> {
        Problem {
            op: &self.op,
            weight: &self.weight,
            bias: &self.bias,
            grid: &self.grid,
            cols: &self.cols,
            target: &self.target,
            act: &self.act,
            positions: self.positions,
            samples: self.samples,
        }
    }
}

/// Central differences of the full loss (reconstruction + regulariser) against the
/// analytic gradient, at V well inside the rectified sigmoid's smooth range.
fn check_gradient(setup: &Setup) {
    let p = setup.problem();
    let mut floor = p.weight.clone();
    for (r, mut row) in floor.rows_mut().into_iter().enumerate() {
        let s = p.grid.scale[r];
        row.mapv_inplace(|w| (w / s).floor());
    }
    let v = random(&[p.weight.nrows(), p.weight.ncols()], 3)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap()
        * 1.5;
    let batch: Vec<usize> = (0..p.samples).collect();
    let cols = optimize::gather(&p, &batch);
    for beta in [None, Some(4.0)] {
        let (_, grad) = optimize::loss_and_grad(&p, &floor, &v, &cols, beta, 0.05);
        let eps = 1e-2f32;
        let mut checked = 0;
        for idx in (0..v.len()).step_by(7) {
            let (r, c) = (idx / v.ncols(), idx % v.ncols());
            let mut plus = v.clone();
            plus[[r, c]] += eps;
            let mut minus = v.clone();
            minus[[r, c]] -= eps;
            let lp = optimize::loss_and_grad(&p, &floor, &plus, &cols, beta, 0.05).0;
            let lm = optimize::loss_and_grad(&p, &floor, &minus, &cols, beta, 0.05).0;
            let numeric = (lp - lm) / (2.0 * eps as f64);
            let analytic = grad[[r, c]] as f64;
            let tol = 2e-3 + 2e-2 * numeric.abs().max(analytic.abs());
            assert!(
                (numeric - analytic).abs() < tol,
                "{beta:?} [{r},{c}]: numeric {numeric} analytic {analytic}"
            );
            checked += 1;
        }
        assert!(checked > 5);
    }
}

#[test]
fn conv_gradient_matches_finite_differences() {
    let g = geometry();
    for act in [Activation::Identity, Activation::Tanh, Activation::Sigmoid] {
        let setup = Setup::new(
            LinearOp::Conv(g.clone()),
            &[g.in_channels, g.input[0], g.input[1]],
            3,
            act,
        );
        check_gradient(&setup);
    }
}

#[test]
fn gemm_gradient_matches_finite_differences() {
    let op = LinearOp::Dense {
        in_features: 12,
        out_features: 5,
        transposed: false,
    };
    for act in [Activation::Identity, Activation::Softmax] {
        check_gradient(&Setup::new(op.clone(), &[12], 8, act));
    }
}

#[test]
fn the_loss_is_taken_after_the_following_activation() {
    let op = LinearOp::Dense {
        in_features: 12,
        out_features: 5,
        transposed: false,
    };
    // Every output far below zero: behind a Relu no rounding changes anything.
    let mut relu = Setup::new(op.clone(), &[12], 8, Activation::Relu);
    relu.bias.iter_mut().for_each(|b| *b = -100.0);
    relu.target.fill(0.0);
    let mut linear = Setup::new(op, &[12], 8, Activation::Identity);
    linear.bias.iter_mut().for_each(|b| *b = -100.0);
    linear.target = Problem::activated_output(
        &linear.op,
        &linear.weight,
        &linear.bias,
        &linear.act,
        &linear.cols,
    );
    for (setup, zero) in [(&relu, true), (&linear, false)] {
        let p = setup.problem();
        let floor = p.weight.mapv(|_| 0.0);
        let v = random(&[p.weight.nrows(), p.weight.ncols()], 3)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let batch = optimize::gather(&p, &(0..p.samples).collect::<Vec<_>>());
        let (loss, grad) = optimize::loss_and_grad(&p, &floor, &v, &batch, None, 0.0);
        if zero {
            assert_eq!(loss, 0.0);
            assert!(grad.iter().all(|&g| g == 0.0));
        } else {
            assert!(loss > 0.0 && grad.iter().any(|&g| g != 0.0), "{loss}");
        }
    }
}

#[test]
fn dense_weight_matrix_round_trips_both_layouts() {
    for transposed in [false, true] {
        let op = LinearOp::Dense {
            in_features: 3,
            out_features: 2,
            transposed,
        };
        let shape = if transposed { [3, 2] } else { [2, 3] };
        let w = random(&shape, 9);
        let m = op.weight_matrix(&w).unwrap();
        assert_eq!(m.dim(), (2, 3));
        assert_eq!(op.weight_tensor(&m, &shape).unwrap(), w);
    }
}

#[test]
fn hard_rounding_lands_on_the_grid_next_to_the_weight() {
    let g = geometry();
    let setup = Setup::new(
        LinearOp::Conv(g.clone()),
        &[g.in_channels, g.input[0], g.input[1]],
        4,
        Activation::Relu,
    );
    let p = setup.problem();
    let hyper = Hyper {
        iterations: 200,
        batch_size: 2,
        ..Hyper::aimet(4)
    };
    let v = optimize::optimize(&p, &hyper, 1, &CancelToken::new(), &|_| {}).unwrap();
    let hard = optimize::hard_weight(&p, &v);
    for (r, (row, fp)) in hard.rows().into_iter().zip(p.weight.rows()).enumerate() {
        let s = p.grid.scale[r];
        let e = Encoding::from_scale_offset(4, false, s, p.grid.lo[r] as i32).unwrap();
        for (&q, &w) in row.iter().zip(fp.iter()) {
            assert_eq!(
                e.fake_quant(q).to_bits(),
                q.to_bits(),
                "row {r}: {q} off the grid"
            );
            assert!(
                (q - w).abs() <= s * 1.0001,
                "row {r}: {q} is not next to {w}"
            );
        }
    }
    // The optimised rounding reconstructs no worse than nearest on this data.
    let nearest = optimize::output_mse(&p, &optimize::nearest_weight(&p));
    let ada = optimize::output_mse(&p, &hard);
    assert!(ada <= nearest * 1.05, "adaround {ada} vs nearest {nearest}");
}

fn request(settings: QuantsimSettings, threads: usize) -> QuantsimRequest {
    QuantsimRequest::checked(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/digits"),
        &settings,
        200,
        0,
        threads,
    )
    .unwrap()
}

fn w4_weights_only() -> QuantsimSettings {
    QuantsimSettings {
        w_bits: 4,
        mode: QuantMode::WeightsOnly,
        ..Default::default()
    }
}

/// The accuracy of the rounded model simulated with its frozen encodings (the job's route).
fn frozen_accuracy(outcome: &AdaroundOutcome, req: &QuantsimRequest) -> f64 {
    let doc = frozen_encodings(outcome, req, &CancelToken::new(), &|_, _, _| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("adaround.encodings.json");
    crate::fsutil::write_json_atomic(&file, &doc).unwrap();
    quantsim_from_file(
        &outcome.model,
        &file,
        req,
        &CancelToken::new(),
        &|_, _, _| {},
    )
    .unwrap()
    .report
    .score
    .accuracy
    .unwrap()
}

#[test]
fn adaround_beats_nearest_on_mbv2_w4_per_tensor() {
    let model = sample_model("mbv2_digits.onnx");
    let req = request(w4_weights_only(), 0);
    let nearest = quantsim(&model, &req, &CancelToken::new(), &|_, _, _| {})
        .unwrap()
        .report
        .score
        .accuracy
        .unwrap();
    let options = AdaroundOptions::new(4, Some(400));
    let outcome = adaround(
        &model,
        &req,
        &options,
        None,
        &CancelToken::new(),
        &|_, _, _| {},
    )
    .unwrap();
    let rounded: Vec<&LayerRound> = outcome
        .report
        .layers
        .iter()
        .filter(|l| l.how == "adarounded")
        .collect();
    assert!(rounded.len() > 10, "{:?}", outcome.report.layers);
    let better = rounded
        .iter()
        .filter(|l| l.mse_adaround.unwrap() < l.mse_nearest.unwrap())
        .count();
    assert!(
        better * 4 > rounded.len() * 3,
        "{better} of {} layers improved",
        rounded.len()
    );
    let ada = frozen_accuracy(&outcome, &req);
    eprintln!("mbv2 W4 weights-only per-tensor: nearest {nearest:.4}, adaround(400) {ada:.4}");
    assert!(ada > nearest, "adaround {ada} vs nearest {nearest}");
}

#[test]
fn a_cancelled_run_resumes_from_its_checkpoints_and_matches_an_uninterrupted_one() {
    let model = sample_model("mbv2_digits.onnx");
    let req = request(w4_weights_only(), 1);
    let options = AdaroundOptions::new(4, Some(30));
    let dir = tempfile::tempdir().unwrap();
    // Cancel when the third layer starts: two layers are checkpointed by then.
    let cancel = CancelToken::new();
    let seen = Mutex::new(Vec::<String>::new());
    let result = adaround(
        &model,
        &req,
        &options,
        Some(dir.path()),
        &cancel,
        &|stage, _, _| {
            if let Some(layer) = stage.strip_prefix("adaround ") {
                let mut seen = seen.lock().unwrap();
                if !seen.iter().any(|s| s == layer) {
                    seen.push(layer.to_string());
                }
                if seen.len() >= 3 {
                    cancel.cancel();
                }
            }
        },
    );
    assert!(matches!(result, Err(Error::Cancelled)));
    let resumed = adaround(
        &model,
        &req,
        &options,
        Some(dir.path()),
        &CancelToken::new(),
        &|_, _, _| {},
    )
    .unwrap();
    assert_eq!(resumed.report.loaded, 2);
    let hows: Vec<&str> = resumed
        .report
        .layers
        .iter()
        .map(|l| l.how.as_str())
        .collect();
    assert_eq!(&hows[..3], &["loaded", "loaded", "adarounded"]);
    let fresh = adaround(
        &model,
        &req,
        &options,
        None,
        &CancelToken::new(),
        &|_, _, _| {},
    )
    .unwrap();
    assert_eq!(fresh.report.loaded, 0);
    for w in &fresh.weights {
        assert_eq!(
            resumed.model.weight(&w.weight),
            fresh.model.weight(&w.weight),
            "{}",
            w.layer
        );
    }
    assert_eq!(resumed.weights, fresh.weights);
}

/// The run's reconstruction errors of layer k, recomputed from a hand-made model: the FP32
/// graph with the run's rounded weights in layers 0..k and FP32 weights from k on.
fn mse_nearest_from(sim: &Model, model: &Model, req: &QuantsimRequest, p: &Planned) -> f64 {
    let cancel = CancelToken::new();
    let data = select_samples(
        &req.data,
        Subset::Calibration,
        req.calibration_size,
        req.seed,
    )
    .unwrap()
    .data;
    let none = |_: &str, _: usize, _: usize| {};
    let plan = std::slice::from_ref(p);
    let target = capture::targets(model, plan, &[0], &data, CACHE_BYTES, req, &cancel, &none)
        .unwrap()
        .remove(0)
        .unwrap();
    let inputs = capture::inputs(sim, p, &data, target.samples, req, &cancel, &none).unwrap();
    let op = p.op.as_ref().unwrap();
    let fp32 = op.weight_matrix(&p.fp32).unwrap();
    let grid = RowGrid::new(&p.encodings.encodings, fp32.nrows());
    let bias = capture::bias_of(model, p, op).unwrap();
    let act = Activation::following(model, &p.layer);
    let problem = Problem {
        op,
        weight: &fp32,
        bias: &bias,
        grid: &grid,
        cols: &inputs.cols,
        target: &target.rows,
        act: &act,
        positions: target.positions,
        samples: target.samples,
    };
    optimize::output_mse(&problem, &optimize::nearest_weight(&problem))
}

#[test]
fn layer_k_takes_its_input_from_the_model_with_layers_before_it_rounded() {
    // BN folded, so the convs feed their Relu6 directly.
    let model = crate::fixes::bn_fold::fold_batchnorms(&sample_model("mbv2_digits.onnx"))
        .unwrap()
        .model;
    let req = request(w4_weights_only(), 0);
    let outcome = adaround(
        &model,
        &req,
        &AdaroundOptions::new(4, Some(20)),
        None,
        &CancelToken::new(),
        &|_, _, _| {},
    )
    .unwrap();
    let prepared = prepare(&model, &req, false, &CancelToken::new(), &|_, _, _| {}).unwrap();
    let plan = plan_layers(&model, &req, &prepared.layers, &prepared.weights).unwrap();
    // The stem reads the graph input; the third layer sits behind two rounded ones.
    let k = 2;
    let mut sim = model.clone();
    for p in &plan[..k] {
        let w = outcome.model.weight(&p.quantizer.weight).unwrap().clone();
        assert_ne!(
            Some(&w),
            model.weight(&p.quantizer.weight),
            "{}",
            p.layer.name
        );
        sim.set_weight(&p.quantizer.weight, w).unwrap();
    }
    let reported = outcome.report.layers[k].mse_nearest.unwrap();
    assert_eq!(reported, mse_nearest_from(&sim, &model, &req, &plan[k]));
    // FP32 inputs give another error: the check can tell the two apart.
    assert_ne!(reported, mse_nearest_from(&model, &model, &req, &plan[k]));
    // block1.dw is followed by a Relu6 (Clip 0..6), the projection by nothing.
    assert_eq!(outcome.report.layers[1].activation, "Clip");
    assert_eq!(outcome.report.layers[k].activation, "none");
}
