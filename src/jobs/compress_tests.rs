//! The compress job on the sample ResNet with the zero-channels test double in place of a
//! real compressor: the child variant and its record, the dictionary as `Partial` events, the
//! dictionary reused by another target, manual ratios, and bad arguments.

use super::compress::run_with;
use super::exec::JobCtx;
use super::journal::Journal;
use super::*;
use crate::cancel::CancelToken;
use crate::compress::build::CompressorSpec;
use crate::compress::test_double::ZeroChannels;
use crate::compress::{LayerCompressor, LayerRatios, Method};
use crate::data::{read_npy, write_npy_f32, write_npy_i64, NpyArray};
use crate::experiment::Workspace;
use crate::model::Model;
use crate::{Error, Result};
use ndarray::{Axis, Slice};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

fn sample(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample-models")
        .join(rel)
}

/// The first `n` samples of each half of the digits split, as a dataset directory.
pub(crate) fn small_digits(dir: &Path, n: usize) -> PathBuf {
    let root = dir.join("digits");
    for half in ["calibration", "evaluation"] {
        for file in ["inputs.npy", "labels.npy"] {
            let out = root.join(half).join(file);
            let cut = Slice::from(0..n);
            match read_npy(&sample("digits").join(half).join(file)).unwrap() {
                NpyArray::F32(x) => write_npy_f32(&out, &x.slice_axis(Axis(0), cut).to_owned()),
                other => {
                    let x = other.to_i64().unwrap();
                    write_npy_i64(&out, &x.slice_axis(Axis(0), cut).to_owned())
                }
            }
            .unwrap();
        }
    }
    root
}

fn double(spec: &CompressorSpec) -> Result<Box<dyn LayerCompressor>> {
    Ok(Box::new(ZeroChannels {
        shapes: spec.sample_shapes.clone(),
    }))
}

/// Greedy (with `target`) or manual channel pruning of variant 0, candidates 1/3, 2/3.
pub(crate) fn compress(data: &Path, target: Option<f64>, ratios: Option<LayerRatios>) -> JobKind {
    JobKind::Compress {
        variant: 0,
        data: data.to_path_buf(),
        method: Method::ChannelPruning,
        target,
        ratios,
        pin: LayerRatios::new(),
        exclude: vec![],
        candidates: 3,
        selection: None,
        reconstruct: false,
        calibration_size: 200,
        seed: 0,
        threads: 1,
        metric: None,
    }
}

/// The body of a job run on `kind`; a test's stand-in for the runner.
pub(crate) type Body<'a> = &'a dyn Fn(&JobCtx, &Mutex<Workspace>) -> Result<serde_json::Value>;

/// Run a job body; returns its summary and events.
pub(crate) fn run_body(
    ws: &Mutex<Workspace>,
    kind: &JobKind,
    body: Body,
) -> (Result<serde_json::Value>, Vec<JobEvent>) {
    run_body_until(ws, kind, body, &|_| false)
}

/// [`run_body`], cancelling the job once `stop` says so of an event.
pub(crate) fn run_body_until(
    ws: &Mutex<Workspace>,
    kind: &JobKind,
    body: Body,
    stop: &(dyn Fn(&JobEvent) -> bool + Sync),
) -> (Result<serde_json::Value>, Vec<JobEvent>) {
    let dir = lock(ws).dir().to_path_buf();
    let journal = Journal::new(&dir);
    let events = Mutex::new(Vec::new());
    let cancel = CancelToken::new();
    let sink = |ev: JobEvent| {
        if stop(&ev) {
            cancel.cancel();
        }
        lock(&events).push(ev)
    };
    let ctx = JobCtx::new(JobId(1), kind, &cancel, &journal, &sink);
    let result = body(&ctx, ws);
    (result, events.into_inner().unwrap())
}

/// Run the compress job body with the double.
fn run(ws: &Mutex<Workspace>, kind: &JobKind) -> (Result<serde_json::Value>, Vec<JobEvent>) {
    run_body(ws, kind, &|ctx, ws| {
        run_with(ctx, ws, &double).map(|o| serde_json::json!(o))
    })
}

/// The partials in their wire form.
fn partials(events: &[JobEvent]) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Partial { result, .. } => Some(serde_json::to_value(result).unwrap()),
            _ => None,
        })
        .collect()
}

#[test]
fn compress_job_records_the_child_and_reuses_its_dictionary() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_digits(dir.path(), 30);
    let model = Model::load(&sample("resnet_digits.onnx")).unwrap();
    let ws = Workspace::open_or_create(&dir.path().join("ws"), &model, "resnet_digits").unwrap();
    let ws = Mutex::new(ws);

    let (summary, events) = run(&ws, &compress(&data, Some(0.7), None));
    let s = summary.unwrap();
    assert_eq!(s["variant"], 1);
    assert_eq!(s["step"], "cp{target:0.7}");
    assert_eq!(s["metric"], "accuracy");
    let ratio = s["mac_ratio"].as_f64().unwrap();
    assert!(ratio <= 0.701 && ratio > 0.6, "{ratio}");
    assert_eq!(s["predicted_mac_ratio"], s["mac_ratio"]);
    // 9 plain Convs × candidates 1/3, 2/3.
    assert_eq!(s["evaluations"], 18);
    assert_eq!(s["dictionary"]["reused"], 0);
    assert_eq!(s["samples"], 30);
    assert!(s["layers"][0]["kept_channels"].as_u64().is_some());
    // The app sees the plan, then every entry as it is made.
    let p = partials(&events);
    assert_eq!(p.len(), 19);
    assert_eq!(p[0]["dictionary"]["layers"].as_array().unwrap().len(), 9);
    assert_eq!(p[1]["dictionary_entry"]["layer"], "stem.conv");
    assert_eq!(p[1]["computed"], true);
    {
        let ws = lock(&ws);
        let v = ws.variant(1).unwrap();
        assert_eq!(v.parent, Some(0));
        assert_eq!(v.macs, s["macs"].as_u64());
        assert_eq!(v.results.len(), 1);
        assert_eq!(v.results[0].reference.as_deref(), Some("0"));
        let record = ws.compression(1).unwrap().unwrap();
        assert_eq!(record.target, Some(0.7));
        assert_eq!(record.mac_ratio, ratio);
        assert_eq!(record.changes.len(), record.ratios.len());
        assert!(record.score.accuracy.is_some());
    }
    // Latency beside the MAC ratio, recorded on the child and the parent.
    assert!(s["latency_ms"].as_f64().unwrap() > 0.0);
    let parent_ms = s["parent_latency_ms"].as_f64().unwrap();
    let ratio_ms = s["latency_ratio"].as_f64().unwrap();
    assert!((ratio_ms - s["latency_ms"].as_f64().unwrap() / parent_ms).abs() < 1e-9);
    let parent_latency = lock(&ws).variant(0).unwrap().latency.clone().unwrap();
    assert_eq!(parent_latency.median_ms, parent_ms);
    assert_eq!(
        lock(&ws)
            .variant(1)
            .unwrap()
            .latency
            .as_ref()
            .map(|l| l.median_ms),
        s["latency_ms"].as_f64()
    );
    let child = Model::load(Path::new(s["output"].as_str().unwrap())).unwrap();
    assert_ne!(child.content_hash(), model.content_hash());

    // Another target: every entry from the cache, no evaluation.
    let (summary, events) = run(&ws, &compress(&data, Some(0.85), None));
    let s = summary.unwrap();
    assert_eq!(s["variant"], 2);
    assert_eq!(
        (
            s["evaluations"].as_u64(),
            s["dictionary"]["reused"].as_u64()
        ),
        (Some(0), Some(18))
    );
    assert!(s["mac_ratio"].as_f64().unwrap() <= 0.851);
    // The parent's latency is measured once.
    assert_eq!(
        s["parent_latency_ms"].as_f64(),
        Some(parent_latency.median_ms)
    );
    assert_eq!(partials(&events)[1]["computed"], false);

    // Manual ratios: no dictionary.
    let manual = LayerRatios::from([("layer2.conv2".to_string(), 0.5)]);
    let (summary, _) = run(&ws, &compress(&data, None, Some(manual)));
    let s = summary.unwrap();
    assert_eq!(s["step"], "cp{ratios:manual}");
    assert_eq!(s["evaluations"], 0);
    assert_eq!(s["layers"].as_array().unwrap().len(), 1);
    assert_eq!(s["layers"][0]["kept_channels"], 16);
    assert!(s["dictionary"].is_null());

    // Bad arguments are input errors naming what is wrong; nothing is recorded.
    let both = compress(&data, Some(0.5), Some(LayerRatios::new()));
    let e = run(&ws, &both).0.unwrap_err();
    assert!(
        matches!(&e, Error::Input(m) if m.contains("not both")),
        "{e}"
    );
    let e = run(&ws, &compress(&data, Some(1.5), None)).0.unwrap_err();
    assert!(
        matches!(&e, Error::Input(m) if m.contains("--target")),
        "{e}"
    );
    let mut pinned = compress(&data, Some(0.5), None);
    if let JobKind::Compress { pin, .. } = &mut pinned {
        pin.insert("layer7.conv".into(), 0.5);
    }
    let e = run(&ws, &pinned).0.unwrap_err();
    assert!(
        matches!(&e, Error::Input(m) if m.contains("'layer7.conv'")),
        "{e}"
    );
    assert_eq!(lock(&ws).variants().len(), 4);
}
