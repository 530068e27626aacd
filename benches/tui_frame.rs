//! The app's responsiveness: the time to render a full frame of a 300-layer model at
//! 200×60, and the time from a key event to the finished next frame while a heavy job keeps
//! every core busy (the app draws right after handling a key). Targets: < 5 ms per frame,
//! < 50 ms key-to-frame.

use criterion::{criterion_group, criterion_main, Criterion};
use prost::Message;
use qsteer::cancel::CancelToken;
use qsteer::data::load_dataset;
use qsteer::model::Model;
use qsteer::runtime::{CompiledModel, RunOptions};
use qsteer::tui::action::Action;
use qsteer::tui::{init, theme::Theme, ui, update::update};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tract_onnx::pb;

/// A chain of `n` 1×1 convs (16 channels) with ReLUs and a residual Add every third layer.
fn deep_model(n: usize) -> Vec<u8> {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = |v: Value| Dimension {
        value: Some(v),
        ..Default::default()
    };
    let vi = |name: &str, dims: Vec<Dimension>| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let shape = |b: Value| {
        vec![
            dim(b),
            dim(Value::DimValue(16)),
            dim(Value::DimValue(8)),
            dim(Value::DimValue(8)),
        ]
    };
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let mut prev = "input".to_string();
    let mut skip = prev.clone();
    for i in 0..n {
        let w = format!("conv{i}.weight");
        let data: Vec<f32> = (0..256)
            .map(|k| ((k * 7 + i) % 13) as f32 / 100.0 - 0.06)
            .collect();
        inits.push(pb::TensorProto {
            name: w.clone(),
            dims: vec![16, 16, 1, 1],
            data_type: 1,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        let conv_out = format!("conv{i}.out");
        nodes.push(pb::NodeProto {
            name: format!("conv{i}"),
            op_type: "Conv".into(),
            input: vec![prev.clone(), w],
            output: vec![conv_out.clone()],
            ..Default::default()
        });
        let relu_out = format!("relu{i}.out");
        nodes.push(pb::NodeProto {
            name: format!("relu{i}"),
            op_type: "Relu".into(),
            input: vec![conv_out],
            output: vec![relu_out.clone()],
            ..Default::default()
        });
        prev = relu_out;
        if i % 3 == 2 {
            let add_out = format!("add{i}.out");
            nodes.push(pb::NodeProto {
                name: format!("add{i}"),
                op_type: "Add".into(),
                input: vec![prev.clone(), skip.clone()],
                output: vec![add_out.clone()],
                ..Default::default()
            });
            prev = add_out;
            skip = prev.clone();
        }
    }
    nodes.push(pb::NodeProto {
        name: "out".into(),
        op_type: "Identity".into(),
        input: vec![prev],
        output: vec!["output".into()],
        ..Default::default()
    });
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: "deep".into(),
            node: nodes,
            initializer: inits,
            input: vec![vi("input", shape(Value::DimParam("N".into())))],
            output: vec![vi("output", shape(Value::DimParam("N".into())))],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

fn tui_frame(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let model_path = dir.path().join("deep300.onnx");
    std::fs::write(&model_path, deep_model(300)).expect("write model");
    let opened = init::open(
        &model_path,
        None,
        Some(dir.path().join("ws")),
        Theme::load("default").unwrap(),
    )
    .expect("open app");
    let mut app = opened.app;
    assert_eq!(app.layers.len(), 300);
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).expect("terminal");
    let mut group = c.benchmark_group("tui");
    group.bench_function("full_frame_300_layers_200x60", |b| {
        b.iter(|| {
            terminal.draw(|f| ui::draw(f, &app)).expect("draw");
        })
    });

    // A heavy job on every core: evaluate the sample model over and over.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        let model = Model::load(&root.join("sample-models/resnet_digits.onnx")).expect("model");
        let data = load_dataset(&root.join("sample-models/digits/evaluation")).expect("data");
        std::thread::spawn(move || {
            let shapes = vec![data.sample_shape(0).to_vec()];
            let compiled = CompiledModel::compile(&model, &shapes, 1, &[]).expect("compile");
            while !stop.load(Ordering::Relaxed) {
                let _ = compiled.run_dataset(
                    &data,
                    RunOptions::default(),
                    &CancelToken::new(),
                    &|_, _| {},
                );
            }
        })
    };
    group.bench_function("key_to_frame_while_job_runs", |b| {
        let mut down = true;
        b.iter(|| {
            update(&mut app, if down { Action::Down } else { Action::Up });
            down = !down;
            terminal.draw(|f| ui::draw(f, &app)).expect("draw");
        })
    });
    stop.store(true, Ordering::Relaxed);
    let _ = busy.join();
    group.finish();
}

criterion_group!(benches, tui_frame);
criterion_main!(benches);
