//! Loading, analysing, running and saving models: outputs against ONNX Runtime, weights in
//! Constant nodes, symbolic / `-1` / named / fixed batch, MAC counts, round trips, capture.

use crate::common::*;
use ndarray::ArrayD;
use prost::Message;
use qsteer::cancel::CancelToken;
use qsteer::model::{Dim, Layer, LayerKind, Model, WeightLocation};
use qsteer::runtime::{CompiledModel, RunOptions};
use std::collections::BTreeMap;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::pb::type_proto::Value as TypeValue;
use tract_onnx::pb::ModelProto;

/// Run every sample of `data` through `model` compiled for `batch` samples per call.
fn run_all(model: &Model, data: &qsteer::data::Dataset, batch: usize) -> ArrayD<f32> {
    let compiled = CompiledModel::compile(model, &sample_shapes(data), batch, &[])
        .unwrap_or_else(|e| panic!("{}: compile: {e}", model.source()));
    let out = compiled
        .run_dataset(
            data,
            RunOptions {
                batch_size: batch,
                threads: 2,
            },
            &CancelToken::new(),
            &|_, _| {},
        )
        .unwrap_or_else(|e| panic!("{}: run: {e}", model.source()));
    assert_eq!(out.samples, data.len());
    out.outputs.into_iter().next().expect("one output")
}

fn evaluation_samples(n: usize) -> qsteer::data::Dataset {
    let x = read_f32(&digits().join("evaluation/inputs.npy"));
    dataset("digits/evaluation", first(&x, n))
}

fn layers_of(model: &Model) -> Vec<Layer> {
    let shapes = model.shapes(None).expect("shapes");
    model.layers(&shapes).expect("layers")
}

fn layer<'a>(layers: &'a [Layer], name: &str) -> &'a Layer {
    layers
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no layer {name}"))
}

fn decode(path: &std::path::Path) -> ModelProto {
    ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

/// The first dim of graph input 0 as written in the file.
fn first_input_dim(proto: &ModelProto) -> Option<DimValue> {
    let input = &proto.graph.as_ref()?.input[0];
    let Some(TypeValue::TensorType(t)) = input.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    t.shape.as_ref()?.dim.first()?.value.clone()
}

fn set_first_input_dim(proto: &mut ModelProto, value: DimValue) {
    let input = &mut proto.graph.as_mut().unwrap().input[0];
    let Some(TypeValue::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut() else {
        panic!("input 0 is not a tensor");
    };
    t.shape.as_mut().unwrap().dim[0].value = Some(value);
}

#[test]
fn fixtures_match_onnx_runtime_at_batch_1_and_3() {
    for name in FIXTURES {
        let model = Model::load(&fixture_model(name)).unwrap();
        let inputs = read_f32(&fixture_dir(name).join("inputs.npy"));
        let expected = read_f32(&fixture_dir(name).join("ort_outputs.npy"));
        assert_eq!(inputs.shape()[0], 8, "{name}: fixture has 8 samples");
        let data = dataset(name, inputs);
        let tol = 1e-4 * max_abs(&expected).max(1.0);
        // batch 3 over 8 samples: batches of 3, 3 and 2 (the last padded to 3)
        for batch in [1, 3] {
            let got = run_all(&model, &data, batch);
            assert_eq!(got.shape(), expected.shape(), "{name} batch {batch}");
            let diff = max_abs_diff(&got, &expected);
            assert!(
                diff <= tol,
                "{name} batch {batch}: max |tract − ORT| = {diff} > {tol}"
            );
            assert_eq!(
                argmax(rows(&got).view()),
                argmax(rows(&expected).view()),
                "{name} batch {batch}: argmax differs from ONNX Runtime"
            );
        }
    }
}

#[test]
fn opset_variants_give_the_same_outputs() {
    let data = dataset(
        "opset_variants",
        read_f32(&fixture_dir("opset_variants_11").join("inputs.npy")),
    );
    let a = run_all(
        &Model::load(&fixture_model("opset_variants_11")).unwrap(),
        &data,
        1,
    );
    let b = run_all(
        &Model::load(&fixture_model("opset_variants_15")).unwrap(),
        &data,
        1,
    );
    assert!(max_abs_diff(&a, &b) <= 1e-6);
}

#[test]
fn constant_node_weights_and_minus_one_batch() {
    let path = fixture_model("constant_weights");
    let proto = decode(&path);
    assert!(
        proto.graph.as_ref().unwrap().initializer.is_empty(),
        "the fixture stores no initializers"
    );
    assert_eq!(
        first_input_dim(&proto),
        Some(DimValue::DimValue(-1)),
        "the fixture writes its batch as dim_value -1"
    );
    let model = Model::load(&path).unwrap();
    let weights: BTreeMap<&String, &qsteer::model::Weight> = model.weights().collect();
    for (name, shape) in [
        ("conv1.weight", vec![8, 3, 3, 3]),
        ("conv1.bias", vec![8]),
        ("conv2.weight", vec![16, 8, 3, 3]),
        ("fc.weight", vec![5, 16]),
    ] {
        let w = weights
            .get(&name.to_string())
            .unwrap_or_else(|| panic!("weight {name} not found"));
        assert!(
            matches!(w.location, WeightLocation::ConstantNode(_)),
            "{name}: {:?}",
            w.location
        );
        assert_eq!(w.array.shape(), shape.as_slice(), "{name}");
        if let WeightLocation::ConstantNode(i) = w.location {
            let node = &model.graph().node[i];
            assert_eq!(node.op_type, "Constant");
            assert_eq!(node.output[0], name);
        }
    }
    let shapes = model.shapes(None).unwrap();
    assert_eq!(shapes.fixed_batch, None);
    assert_eq!(
        shapes.inputs[0].shape,
        vec![Dim::Batch, Dim::Known(3), Dim::Known(16), Dim::Known(16)]
    );
    assert_eq!(
        shapes.get("output").unwrap(),
        &vec![Dim::Batch, Dim::Known(5)]
    );
    let layers = model.layers(&shapes).unwrap();
    let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["conv1", "conv2", "fc"]);
    assert_eq!(layer(&layers, "conv1").weight, "conv1.weight");
    assert_eq!(layer(&layers, "conv1").bias.as_deref(), Some("conv1.bias"));
    assert_eq!(layer(&layers, "fc").kind, LayerKind::Gemm);
}

#[test]
fn named_batch_dim_is_the_batch() {
    let path = fixture_model("named_batch_ops");
    assert_eq!(
        first_input_dim(&decode(&path)),
        Some(DimValue::DimParam("batch_size".into()))
    );
    let model = Model::load(&path).unwrap();
    let shapes = model.shapes(None).unwrap();
    assert_eq!(shapes.fixed_batch, None);
    assert_eq!(shapes.inputs[0].shape[0], Dim::Batch);
    assert_eq!(
        shapes.get("logits").unwrap(),
        &vec![Dim::Batch, Dim::Known(10)]
    );
}

#[test]
fn grouped_strided_macs_match_the_hand_computed_file() {
    let model = Model::load(&fixture_model("grouped_strided")).unwrap();
    let layers = layers_of(&model);
    let text = std::fs::read_to_string(fixture_dir("grouped_strided").join("macs.json")).unwrap();
    let expected: BTreeMap<String, u64> = serde_json::from_str(&text).unwrap();
    assert_eq!(layers.len(), expected.len());
    for (name, macs) in &expected {
        assert_eq!(layer(&layers, name).macs, Some(*macs), "{name}");
    }
    let kinds: Vec<(&str, LayerKind)> = layers.iter().map(|l| (l.name.as_str(), l.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("conv_grouped", LayerKind::GroupedConv),
            ("conv_dw", LayerKind::DepthwiseConv),
            ("conv_pw", LayerKind::Conv),
            ("matmul", LayerKind::MatMul),
        ]
    );
    let g = layer(&layers, "conv_grouped");
    assert_eq!((g.groups, g.strides.as_slice()), (2, &[2usize, 2][..]));
    assert_eq!((g.in_channels, g.out_channels), (8, 16));
    assert_eq!(layer(&layers, "conv_dw").groups, 16);
    let m = layer(&layers, "matmul");
    assert_eq!((m.in_channels, m.out_channels), (100, 6));
    let total: u64 = layers.iter().map(|l| l.macs.unwrap()).sum();
    assert_eq!(total, 20_200);
}

#[test]
fn sample_model_macs_by_hand() {
    let mbv2 = layers_of(&Model::load(&sample_model("mbv2_digits")).unwrap());
    assert_eq!(mbv2.len(), 17);
    // stem.conv: 3×3, 1→16, stride 1, same padding: out 16×16×16 = 4096 elements,
    // × (Cin/groups = 1) × 3×3 = 36 864
    assert_eq!(layer(&mbv2, "stem.conv").macs, Some(16 * 16 * 16 * 9));
    assert_eq!(layer(&mbv2, "stem.conv").macs, Some(36_864));
    // block2.dw.conv: depthwise 3×3 stride 2 on 64×16×16: out 64×8×8 = 4096, × 1 × 9 = 36 864
    let dw = layer(&mbv2, "block2.dw.conv");
    assert_eq!(dw.kind, LayerKind::DepthwiseConv);
    assert_eq!((dw.groups, dw.strides.as_slice()), (64, &[2usize, 2][..]));
    assert_eq!(
        dw.output_shape.as_deref(),
        Some(&[Dim::Batch, Dim::Known(64), Dim::Known(8), Dim::Known(8)][..])
    );
    assert_eq!(dw.macs, Some(64 * 8 * 8 * 9));
    // block4.dw.conv: depthwise 3×3 stride 2 on 96×8×8: out 96×4×4 = 1536, × 9 = 13 824
    assert_eq!(layer(&mbv2, "block4.dw.conv").macs, Some(13_824));
    // block2.expand.conv: 1×1 16→64 at 16×16: 64·256 out × 16 = 262 144
    assert_eq!(layer(&mbv2, "block2.expand.conv").macs, Some(64 * 256 * 16));
    // fc: Gemm M=1 (per sample) × K=64 × N=10 = 640 (weight [10, 64], transB=1)
    let fc = layer(&mbv2, "fc");
    assert_eq!(fc.kind, LayerKind::Gemm);
    assert_eq!((fc.in_channels, fc.out_channels), (64, 10));
    assert_eq!(fc.macs, Some(640));
    assert_eq!(fc.params, 650);
    let total: u64 = mbv2.iter().map(|l| l.macs.unwrap()).sum();
    assert_eq!(total, 1_280_128);

    let resnet = layers_of(&Model::load(&sample_model("resnet_digits")).unwrap());
    // layer2.conv1: 3×3 stride 2, 16→32: out 32×8×8 = 2048, × 16 × 9 = 294 912
    assert_eq!(layer(&resnet, "layer2.conv1").macs, Some(2048 * 16 * 9));
    // layer3.downsample.conv: 1×1 stride 2, 32→64: out 64×4×4 = 1024, × 32 = 32 768
    assert_eq!(
        layer(&resnet, "layer3.downsample.conv").macs,
        Some(1024 * 32)
    );
    let total: u64 = resnet.iter().map(|l| l.macs.unwrap()).sum();
    assert_eq!(total, 3_052_160);
}

#[test]
fn conv_transpose_matmul_and_gemm_macs_by_hand() {
    let layers = layers_of(&Model::load(&fixture_model("named_batch_ops")).unwrap());
    let kinds: Vec<(&str, LayerKind)> = layers.iter().map(|l| (l.name.as_str(), l.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("conv1", LayerKind::Conv),
            ("conv2", LayerKind::Conv),
            ("deconv", LayerKind::ConvTranspose),
            ("proj", LayerKind::MatMul),
            ("head", LayerKind::Gemm),
        ]
    );
    // conv1: 3×3 stride 2 pad 1, 3→8 on 16×16: out 8×8×8 = 512, × 3 × 9 = 13 824
    assert_eq!(layer(&layers, "conv1").macs, Some(512 * 3 * 9));
    // conv2: 3×3 stride 2, 8→16 on 8×8: out 16×4×4 = 256, × 8 × 9 = 18 432
    assert_eq!(layer(&layers, "conv2").macs, Some(256 * 8 * 9));
    // deconv: ConvTranspose k2 s2, 16→8 on 4×4: each input element (16×4×4 = 256) is
    // spread over (Cout/groups = 8) × 2×2 outputs: 256 × 8 × 4 = 8 192
    let d = layer(&layers, "deconv");
    assert_eq!((d.in_channels, d.out_channels), (16, 8));
    assert_eq!(
        d.output_shape.as_deref(),
        Some(&[Dim::Batch, Dim::Known(8), Dim::Known(8), Dim::Known(8)][..])
    );
    assert_eq!(d.macs, Some(8_192));
    // proj: MatMul [N, T=64, C=24] × [24, 16]: M=64 × K=24 × N=16 = 24 576
    let p = layer(&layers, "proj");
    assert_eq!(p.weight_shape, [24, 16]);
    assert_eq!((p.in_channels, p.out_channels), (24, 16));
    assert_eq!(p.macs, Some(64 * 24 * 16));
    // head: Gemm transB=0 with the weight stored [16, 10]: 1 × 16 × 10 = 160
    let h = layer(&layers, "head");
    assert_eq!(h.weight_shape, [16, 10]);
    assert_eq!((h.in_channels, h.out_channels), (16, 10));
    assert_eq!(h.macs, Some(160));
    let total: u64 = layers.iter().map(|l| l.macs.unwrap()).sum();
    assert_eq!(total, 13_824 + 18_432 + 8_192 + 24_576 + 160);
}

#[test]
fn round_trip_is_bit_identical() {
    let data = evaluation_samples(50);
    for name in ["mbv2_digits", "resnet_digits"] {
        let original = Model::load(&sample_model(name)).unwrap();
        let bytes = original.to_bytes();
        let reloaded = Model::from_bytes(&bytes, "round trip").unwrap();
        assert_eq!(
            reloaded.to_bytes(),
            bytes,
            "{name}: encoding is not stable across a round trip"
        );
        assert_eq!(reloaded.content_hash(), original.content_hash());
        let a = run_all(&original, &data, 1);
        let b = run_all(&reloaded, &data, 1);
        assert_eq!(a.shape(), &[50, 10]);
        assert_eq!(
            bits(&a),
            bits(&b),
            "{name}: outputs changed after a round trip"
        );
        for ((na, wa), (nb, wb)) in original.weights().zip(reloaded.weights()) {
            assert_eq!(na, nb);
            assert_eq!(wa.location, wb.location, "{na}");
            assert_eq!(bits(&wa.array), bits(&wb.array), "{na}");
        }
    }
}

/// Scale a weight, save, reload: the edit reads back bit-identical, every other weight is
/// untouched, the location is kept, and the outputs change.
fn edit_weight_and_reload(path: &std::path::Path, weight: &str, data: &qsteer::data::Dataset) {
    let mut model = Model::load(path).unwrap();
    let before = run_all(&model, data, 1);
    let location = model
        .weights()
        .find(|(n, _)| *n == weight)
        .unwrap()
        .1
        .location;
    let old = model.weight(weight).unwrap().clone();
    // an odd edit that no rounding could hide: scale and shift by an index-dependent amount
    let mut edited = old.clone();
    for (k, v) in edited.iter_mut().enumerate() {
        *v = *v * 1.5 + 0.01 * ((k % 7) as f32 + 1.0);
    }
    model.set_weight(weight, edited.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("edited.onnx");
    model.save(&saved).unwrap();
    let reloaded = Model::load(&saved).unwrap();
    assert_eq!(bits(reloaded.weight(weight).unwrap()), bits(&edited));
    let (_, w) = reloaded.weights().find(|(n, _)| *n == weight).unwrap();
    assert_eq!(w.location, location, "{weight} moved");
    let original = Model::load(path).unwrap();
    for (name, w) in original.weights() {
        if name != weight {
            assert_eq!(
                bits(&w.array),
                bits(reloaded.weight(name).unwrap()),
                "{name} changed"
            );
        }
    }
    assert_eq!(reloaded.weights().count(), original.weights().count());
    let after = run_all(&reloaded, data, 1);
    assert!(
        max_abs_diff(&before, &after) > 1e-3,
        "{weight}: editing it did not change the outputs"
    );
    // the in-memory edited model and the reloaded one agree exactly
    assert_eq!(bits(&run_all(&model, data, 1)), bits(&after));
    assert!(model
        .set_weight("no.such.weight", edited)
        .unwrap_err()
        .to_string()
        .contains("no.such.weight"));
}

#[test]
fn set_weight_save_reload_initializer() {
    edit_weight_and_reload(
        &sample_model("mbv2_digits"),
        "stem.conv.weight",
        &evaluation_samples(10),
    );
}

#[test]
fn set_weight_save_reload_constant_node() {
    let data = dataset(
        "constant_weights",
        read_f32(&fixture_dir("constant_weights").join("inputs.npy")),
    );
    edit_weight_and_reload(&fixture_model("constant_weights"), "conv2.weight", &data);
}

#[test]
fn fixed_batch_one_runs_a_dataset_sample_by_sample() {
    let path = sample_model("mbv2_digits");
    let mut proto = decode(&path);
    assert_eq!(
        first_input_dim(&proto),
        Some(DimValue::DimParam("N".into()))
    );
    set_first_input_dim(&mut proto, DimValue::DimValue(1));
    let fixed = Model::from_proto(proto, "mbv2 batch 1").unwrap();
    let shapes = fixed.shapes(None).unwrap();
    assert_eq!(shapes.fixed_batch, Some(1));
    assert_eq!(shapes.inputs[0].shape[0], Dim::Known(1));
    // MACs stay per sample
    let macs: u64 = fixed
        .layers(&shapes)
        .unwrap()
        .iter()
        .map(|l| l.macs.unwrap())
        .sum();
    assert_eq!(macs, 1_280_128);

    let data = evaluation_samples(10);
    // ask for batches of 4: the file's batch of 1 wins
    let compiled = CompiledModel::compile(&fixed, &sample_shapes(&data), 4, &[]).unwrap();
    assert_eq!(compiled.batch(), 1);
    let out = compiled
        .run_dataset(
            &data,
            RunOptions {
                batch_size: 4,
                threads: 2,
            },
            &CancelToken::new(),
            &|_, _| {},
        )
        .unwrap();
    let got = out.outputs.into_iter().next().unwrap();
    assert_eq!(got.shape(), &[10, 10]);
    let symbolic = run_all(&Model::load(&path).unwrap(), &data, 1);
    assert!(max_abs_diff(&got, &symbolic) <= 1e-5);
    assert_eq!(argmax(rows(&got).view()), argmax(rows(&symbolic).view()));
}

#[test]
fn fixed_batch_four_counts_macs_per_sample() {
    let mut proto = decode(&sample_model("mbv2_digits"));
    set_first_input_dim(&mut proto, DimValue::DimValue(4));
    let fixed = Model::from_proto(proto, "mbv2 batch 4").unwrap();
    let shapes = fixed.shapes(None).unwrap();
    assert_eq!(shapes.fixed_batch, Some(4));
    let layers = fixed.layers(&shapes).unwrap();
    assert_eq!(layer(&layers, "stem.conv").macs, Some(36_864));
    assert_eq!(layer(&layers, "fc").macs, Some(640));
}

#[test]
fn capture_an_intermediate_value() {
    let model = Model::load(&sample_model("mbv2_digits")).unwrap();
    let data = evaluation_samples(3);
    let capture = vec!["block2.dw.conv.out".to_string()];
    let compiled = CompiledModel::compile(&model, &sample_shapes(&data), 2, &capture).unwrap();
    assert_eq!(compiled.output_names(), ["logits", "block2.dw.conv.out"]);
    let out = compiled
        .run_dataset(
            &data,
            RunOptions {
                batch_size: 2,
                threads: 1,
            },
            &CancelToken::new(),
            &|_, _| {},
        )
        .unwrap();
    assert_eq!(out.outputs.len(), 2);
    assert_eq!(out.outputs[0].shape(), &[3, 10]);
    assert_eq!(out.outputs[1].shape(), &[3, 64, 8, 8]);
    // the capture does not change the model's own output
    let plain = run_all(&model, &data, 2);
    assert!(max_abs_diff(&plain, &out.outputs[0]) <= 1e-5);
    // the captured value is a conv output (not a copy of the input, not all zeros)
    assert!(max_abs(&out.outputs[1]) > 0.0);

    let e = CompiledModel::compile(
        &model,
        &sample_shapes(&data),
        1,
        &["no.such.value".to_string()],
    )
    .err()
    .expect("capturing an unknown value fails")
    .to_string();
    assert!(e.contains("no.such.value"), "{e}");
}
