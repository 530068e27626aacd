//! Channel pruning of one layer on the sample ResNet (digits data, the 200 calibration
//! samples): channel selection, winnowing and the least-squares reconstruction, end to
//! end through `LayerCompressor::apply`, for both selection rules. `layer3.conv2` at 0.5
//! keeps 32 of 64 input channels and winnows `layer3.bn1` and `layer3.conv1`.

use criterion::{criterion_group, criterion_main, Criterion};
use qsteer::cancel::CancelToken;
use qsteer::compress::{
    CalibrationData, ChannelPruner, ChannelSelection, LayerCompressor, LayerRatios,
};
use qsteer::model::Model;
use qsteer::runtime::RunOptions;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn prune_one_layer(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models");
    let model = Model::load(&root.join("resnet_digits.onnx")).expect("sample model");
    let data = Arc::new(
        CalibrationData::load(&root.join("digits"), 200, 0, RunOptions::default())
            .expect("digits calibration split"),
    );
    let ratios: LayerRatios = [("layer3.conv2".to_string(), 0.5)].into_iter().collect();
    let mut group = c.benchmark_group("channel_pruning");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for (label, selection) in [
        (
            "resnet_layer3.conv2_0.5_magnitude",
            ChannelSelection::Magnitude,
        ),
        ("resnet_layer3.conv2_0.5_greedy", ChannelSelection::Greedy),
    ] {
        let pruner = ChannelPruner::new(data.clone(), selection);
        group.bench_function(label, |b| {
            b.iter(|| {
                pruner
                    .apply(&model, &ratios, &CancelToken::new())
                    .expect("pruning")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, prune_one_layer);
criterion_main!(benches);
