//! Gradient checks: for every op the interpreter supports, the autodiff gradient (w.r.t.
//! the graph input and every float weight) against central finite differences, in f64, on
//! tiny random graphs. A wrong backward formula shows as a relative error far above 1e-6.

use super::graph::{TrainGraph, SUPPORTED_OPS};
use super::value::{physical, Value};
use crate::data::SplitMix64;
use crate::model::builder::{attr_float, attr_int, attr_ints, ProtoBuilder};
use crate::model::Model;
use burn_tensor::{DType, Device, Tensor, TensorData};
use ndarray::ArrayD;
use std::collections::BTreeSet;
use std::sync::Mutex;
use tract_onnx::pb::AttributeProto;

/// Ops covered by a check below; the last test asserts every supported op is in it.
static COVERED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn rand_array(shape: &[usize], seed: u64, lo: f32, hi: f32) -> ArrayD<f32> {
    let mut rng = SplitMix64(seed);
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| lo + (hi - lo) * (rng.symmetric() + 1.0) / 2.0)
        .collect();
    ArrayD::from_shape_vec(shape.to_vec(), v).unwrap()
}

fn device() -> Device {
    Device::flex().autodiff()
}

fn tensor(v: &[f64], shape: &[usize], dev: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(v.to_vec(), physical(shape)),
        (dev, DType::F64),
    )
}

/// `sum(out · r)` for the graph with the given leaf values (input first, then weights).
fn objective(g: &TrainGraph, leaves: &[(Vec<f64>, Vec<usize>)], r: &[f64], dev: &Device) -> f64 {
    let vals: Vec<Value> = leaves
        .iter()
        .map(|(v, s)| Value::new(tensor(v, s, dev), s.clone()))
        .collect();
    let out = g.forward(&vals[..1], &vals[1..]).unwrap();
    let rt = tensor(r, &out.shape, dev);
    out.t.mul(rt).sum().into_scalar::<f64>()
}

/// Check d objective / d (input and each float weight) against central differences.
fn check(model: &Model, input: &[usize], seed: u64) {
    let dev = device();
    let names: Vec<String> = model
        .weights()
        .map(|(n, _)| n.clone())
        .filter(|n| !model.index().consumers(n).is_empty())
        .collect();
    let g = TrainGraph::build(model, &names, &dev, DType::F64).unwrap();
    let mut leaves: Vec<(Vec<f64>, Vec<usize>)> = vec![(
        rand_array(input, seed, -1.0, 1.0)
            .iter()
            .map(|&x| x as f64)
            .collect(),
        input.to_vec(),
    )];
    for n in &names {
        let a = model.weight(n).unwrap();
        leaves.push((a.iter().map(|&x| x as f64).collect(), a.shape().to_vec()));
    }
    // Output shape from one plain run, then the fixed random projection.
    let probe: Vec<Value> = leaves
        .iter()
        .map(|(v, s)| Value::new(tensor(v, s, &dev), s.clone()))
        .collect();
    let out_shape = g.forward(&probe[..1], &probe[1..]).unwrap().shape;
    let r: Vec<f64> = rand_array(&out_shape, seed + 99, -1.0, 1.0)
        .iter()
        .map(|&x| x as f64)
        .collect();
    // Autodiff.
    let tracked: Vec<Value> = leaves
        .iter()
        .map(|(v, s)| Value::new(tensor(v, s, &dev).require_grad(), s.clone()))
        .collect();
    let out = g.forward(&tracked[..1], &tracked[1..]).unwrap();
    let grads = out.t.mul(tensor(&r, &out_shape, &dev)).sum().backward();
    let eps = 1e-6;
    for (k, leaf) in tracked.iter().enumerate() {
        let what = if k == 0 {
            "input".to_string()
        } else {
            names[k - 1].clone()
        };
        let auto: Vec<f64> = match leaf.t.grad(&grads) {
            Some(t) => t.into_data_as::<f64>().try_to_vec().unwrap(),
            None => vec![0.0; leaves[k].0.len()],
        };
        for (i, &a) in auto.iter().enumerate() {
            let mut plus = leaves.clone();
            plus[k].0[i] += eps;
            let mut minus = leaves.clone();
            minus[k].0[i] -= eps;
            let numeric =
                (objective(&g, &plus, &r, &dev) - objective(&g, &minus, &r, &dev)) / (2.0 * eps);
            let err = (a - numeric).abs() / (a.abs() + numeric.abs()).max(1e-3);
            assert!(
                err < 1e-5,
                "{}: d/d {what}[{i}]: autodiff {a} vs finite differences {numeric}",
                model.source()
            );
        }
    }
    let mut covered = COVERED.lock().unwrap();
    for n in &model.graph().node {
        covered.insert(n.op_type.clone());
    }
}

fn one_op(
    opset: i64,
    op: &str,
    input: &[usize],
    weights: &[(&str, ArrayD<f32>)],
    attrs: Vec<AttributeProto>,
) -> Model {
    let mut b = ProtoBuilder::new(opset);
    b.input("x", &input[1..]);
    let mut ins = vec!["x"];
    for (n, a) in weights {
        if n.is_empty() {
            ins.push("");
        } else {
            b.initializer(n, a);
            ins.push(n);
        }
    }
    b.node(op, op, &ins, &["y"], attrs).output("y");
    b.model(&format!("{op} check")).unwrap()
}

#[test]
fn conv_grouped_strided_dilated_asymmetric_pads() {
    let m = one_op(
        13,
        "Conv",
        &[2, 4, 7, 7],
        &[
            ("w", rand_array(&[4, 2, 3, 3], 1, -1.0, 1.0)),
            ("b", rand_array(&[4], 2, -1.0, 1.0)),
        ],
        vec![
            attr_int("group", 2),
            attr_ints("strides", &[2, 1]),
            attr_ints("pads", &[1, 0, 0, 2]),
            attr_ints("dilations", &[2, 1]),
        ],
    );
    check(&m, &[2, 4, 7, 7], 3);
}

#[test]
fn conv_depthwise_same_upper() {
    let mut m = one_op(
        13,
        "Conv",
        &[1, 3, 6, 5],
        &[("w", rand_array(&[3, 1, 3, 3], 4, -1.0, 1.0))],
        vec![attr_int("group", 3), attr_ints("strides", &[2, 2])],
    );
    let mut p = m.into_proto();
    p.graph.as_mut().unwrap().node[0]
        .attribute
        .push(AttributeProto {
            name: "auto_pad".into(),
            r#type: tract_onnx::pb::attribute_proto::AttributeType::String as i32,
            s: b"SAME_UPPER".to_vec(),
            ..Default::default()
        });
    m = Model::from_proto(p, "Conv SAME_UPPER check").unwrap();
    check(&m, &[1, 3, 6, 5], 5);
}

#[test]
fn gemm_transposed_scaled_with_broadcast_c() {
    let m = one_op(
        13,
        "Gemm",
        &[3, 4],
        &[
            ("b", rand_array(&[5, 3], 6, -1.0, 1.0)),
            ("c", rand_array(&[5], 7, -1.0, 1.0)),
        ],
        vec![
            attr_int("transA", 1),
            attr_int("transB", 1),
            attr_float("alpha", 0.7),
            attr_float("beta", 1.3),
        ],
    );
    check(&m, &[3, 4], 8);
}

#[test]
fn matmul_batched_broadcast() {
    let m = one_op(
        13,
        "MatMul",
        &[2, 3, 4],
        &[("w", rand_array(&[4, 5], 9, -1.0, 1.0))],
        vec![],
    );
    check(&m, &[2, 3, 4], 10);
}

#[test]
fn batch_norm_inference_mode() {
    let m = one_op(
        13,
        "BatchNormalization",
        &[2, 3, 2, 2],
        &[
            ("scale", rand_array(&[3], 11, 0.5, 1.5)),
            ("bias", rand_array(&[3], 12, -1.0, 1.0)),
            ("mean", rand_array(&[3], 13, -0.5, 0.5)),
            ("var", rand_array(&[3], 14, 0.5, 2.0)),
        ],
        vec![attr_float("epsilon", 1e-3)],
    );
    check(&m, &[2, 3, 2, 2], 15);
}

#[test]
fn activations() {
    let s = [2, 3, 3, 3];
    check(&one_op(13, "Relu", &s, &[], vec![]), &s, 16);
    check(&one_op(13, "Sigmoid", &s, &[], vec![]), &s, 17);
    check(
        &one_op(
            13,
            "HardSigmoid",
            &s,
            &[],
            vec![attr_float("alpha", 0.4), attr_float("beta", 0.3)],
        ),
        &s,
        18,
    );
    check(&one_op(14, "HardSwish", &s, &[], vec![]), &s, 19);
    check(&one_op(13, "Identity", &s, &[], vec![]), &s, 20);
    check(&one_op(13, "Dropout", &s, &[], vec![]), &s, 21);
    let lo = ndarray::arr0(-0.4f32).into_dyn();
    let hi = ndarray::arr0(0.5f32).into_dyn();
    check(
        &one_op(13, "Clip", &s, &[("lo", lo), ("hi", hi)], vec![]),
        &s,
        22,
    );
    check(
        &one_op(
            6,
            "Clip",
            &s,
            &[],
            vec![attr_float("min", -0.3), attr_float("max", 0.2)],
        ),
        &s,
        23,
    );
}

#[test]
fn softmax_new_and_legacy_axis() {
    let s = [2, 3, 4];
    check(
        &one_op(13, "Softmax", &s, &[], vec![attr_int("axis", 1)]),
        &s,
        24,
    );
    check(
        &one_op(11, "Softmax", &s, &[], vec![attr_int("axis", 1)]),
        &s,
        25,
    );
}

#[test]
fn elementwise_with_broadcasting() {
    let s = [2, 3, 2, 2];
    for (i, op) in ["Add", "Sub", "Mul", "Div"].iter().enumerate() {
        // Divisors kept away from 0.
        let w = rand_array(&[3, 1, 1], 26 + i as u64, 0.5, 1.5);
        check(&one_op(13, op, &s, &[("w", w)], vec![]), &s, 30 + i as u64);
    }
}

#[test]
fn pools_with_padding() {
    let s = [1, 2, 5, 6];
    let pads = attr_ints("pads", &[1, 1, 1, 0]);
    check(
        &one_op(
            13,
            "MaxPool",
            &s,
            &[],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("strides", &[2, 2]),
                pads.clone(),
            ],
        ),
        &s,
        40,
    );
    for include in [0, 1] {
        check(
            &one_op(
                13,
                "AveragePool",
                &s,
                &[],
                vec![
                    attr_ints("kernel_shape", &[3, 2]),
                    attr_ints("strides", &[2, 1]),
                    pads.clone(),
                    attr_int("count_include_pad", include),
                ],
            ),
            &s,
            41 + include as u64,
        );
    }
    check(&one_op(13, "GlobalAveragePool", &s, &[], vec![]), &s, 43);
}

#[test]
fn concat_flatten_reshape() {
    let s = [2, 3, 2, 2];
    check(
        &one_op(
            13,
            "Concat",
            &s,
            &[("w", rand_array(&[2, 1, 2, 2], 50, -1.0, 1.0))],
            vec![attr_int("axis", 1)],
        ),
        &s,
        51,
    );
    check(
        &one_op(13, "Flatten", &s, &[], vec![attr_int("axis", 2)]),
        &s,
        52,
    );
    let mut b = ProtoBuilder::new(13);
    b.input("x", &s[1..]);
    let shape = tract_onnx::pb::TensorProto {
        name: "shape".into(),
        dims: vec![3],
        data_type: tract_onnx::pb::tensor_proto::DataType::Int64 as i32,
        int64_data: vec![0, -1, 4],
        ..Default::default()
    };
    b.node("Reshape", "Reshape", &["x", "shape"], &["y"], vec![])
        .output("y");
    let mut p = b.build();
    p.graph.as_mut().unwrap().initializer.push(shape);
    let m = Model::from_proto(p, "Reshape check").unwrap();
    check(&m, &s, 53);
}

#[test]
fn unsupported_op_is_an_error_naming_node_and_op() {
    let s = [1, 2, 3, 3];
    let m = one_op(13, "LeakyRelu", &s, &[], vec![]);
    let err = TrainGraph::build(&m, &[], &device(), DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("node 'LeakyRelu'") && err.contains("op 'LeakyRelu' is not supported"),
        "{err}"
    );
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    // Weight for 3 input channels on a 2-channel input.
    let m = one_op(
        13,
        "Conv",
        &[1, 2, 4, 4],
        &[("w", rand_array(&[2, 3, 3, 3], 60, -1.0, 1.0))],
        vec![],
    );
    let g = TrainGraph::build(&m, &[], &device(), DType::F32).unwrap();
    let x = Value::from_array(
        &rand_array(&[1, 2, 4, 4], 61, -1.0, 1.0),
        &device(),
        DType::F32,
        "x",
    )
    .unwrap();
    let err = g.forward(&[x], &[]).unwrap_err().to_string();
    assert!(
        err.contains("node 'Conv' (Conv)") && err.contains("channels"),
        "{err}"
    );
}

#[test]
fn every_supported_op_has_a_gradient_check() {
    // Runs the checks itself so the coverage does not depend on test order.
    conv_grouped_strided_dilated_asymmetric_pads();
    conv_depthwise_same_upper();
    gemm_transposed_scaled_with_broadcast_c();
    matmul_batched_broadcast();
    batch_norm_inference_mode();
    activations();
    softmax_new_and_legacy_axis();
    elementwise_with_broadcasting();
    pools_with_padding();
    concat_flatten_reshape();
    let covered = COVERED.lock().unwrap();
    let missing: Vec<_> = SUPPORTED_OPS
        .iter()
        .filter(|o| !covered.contains(**o))
        .collect();
    assert!(missing.is_empty(), "no gradient check for {missing:?}");
}
