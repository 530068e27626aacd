//! FP32 evaluation throughput of the sample models on tract, at batch 1 and 32, on one
//! thread (the figure to compare with ONNX Runtime's single-thread numbers from
//! `tests/interop/run.sh --bench`) and on all cores.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qsteer::cancel::CancelToken;
use qsteer::data::load_dataset;
use qsteer::model::Model;
use qsteer::runtime::{CompiledModel, RunOptions};
use std::path::Path;

fn eval_throughput(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = load_dataset(&root.join("sample-models/digits/evaluation")).expect("evaluation set");
    let shapes = vec![data.sample_shape(0).to_vec()];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut group = c.benchmark_group("fp32_eval");
    group.sample_size(10);
    group.throughput(Throughput::Elements(data.len() as u64));
    for name in ["mbv2_digits", "resnet_digits"] {
        let model =
            Model::load(&root.join(format!("sample-models/{name}.onnx"))).expect("sample model");
        for batch in [1usize, 32] {
            let compiled = CompiledModel::compile(&model, &shapes, batch, &[]).expect("compile");
            for threads in [1usize, cores] {
                let options = RunOptions {
                    batch_size: batch,
                    threads,
                };
                group.bench_function(format!("{name}/batch{batch}/threads{threads}"), |b| {
                    b.iter(|| {
                        compiled
                            .run_dataset(&data, options, &CancelToken::new(), &|_, _| {})
                            .expect("run")
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, eval_throughput);
criterion_main!(benches);
