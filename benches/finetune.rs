//! One training step (forward, cross-entropy, backward, Adam update) of the built-in
//! trainer on each sample model at batch 32 and 64, and the implied time per epoch over
//! the 200-sample training subset.

use burn_tensor::DType;
use criterion::{criterion_group, criterion_main, Criterion};
use qsteer::data::load_split;
use qsteer::model::Model;
use qsteer::train::{FineTuneSettings, Targets, Trainer};
use std::path::Path;
use std::time::{Duration, Instant};

fn finetune(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = load_split(&root.join("sample-models/digits"), 200, 0).expect("digits");
    let train = data.calibration;
    let labels = train.labels.clone().expect("labels");
    let mut group = c.benchmark_group("finetune");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    for name in ["mbv2_digits", "resnet_digits"] {
        let model = Model::load(&root.join(format!("sample-models/{name}.onnx"))).expect("sample");
        for batch in [32usize, 64] {
            let settings = FineTuneSettings {
                batch_size: batch,
                ..FineTuneSettings::default()
            };
            let mut t = Trainer::new(&model, &settings, DType::F32).expect("trainer");
            let idx: Vec<usize> = (0..batch).collect();
            let x = train.inputs[0].data.read(&idx).expect("samples");
            let y: Vec<i64> = idx.iter().map(|&i| labels[i]).collect();
            let start = Instant::now();
            t.step(&x.view(), &Targets::Labels(&y), 1e-4).expect("step");
            let one = start.elapsed().as_secs_f64();
            eprintln!(
                "{name}/batch{batch}: {} trained params, one step {one:.3} s, epoch of {} samples ≈ {:.2} s",
                t.param_count(),
                train.len(),
                one * train.len().div_ceil(batch) as f64
            );
            group.bench_function(format!("{name}/step_batch{batch}"), |b| {
                b.iter(|| t.step(&x.view(), &Targets::Labels(&y), 1e-4).expect("step"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, finetune);
criterion_main!(benches);
