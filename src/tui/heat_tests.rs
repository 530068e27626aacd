//! The heat table fed by the real compress job: weight SVD of the sample ResNet on a small
//! evaluation subset, its `Partial` events replayed into the app.

use super::action::Action;
use super::heat;
use super::init;
use super::panes::compression::detail_text;
use super::state::App;
use super::tests::render;
use super::theme::Theme;
use super::update::update;
use crate::jobs::compress_tests::{compress, small_digits};
use qsteer::compress::Method;
use qsteer::experiment::Workspace;
use qsteer::jobs::{run_job_blocking, JobEvent, JobKind};
use qsteer::model::Model;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

const RESNET: &str = "sample-models/resnet_digits.onnx";

/// Run greedy weight SVD to 0.7 of the MACs (candidates 1/3, 2/3) on 30 samples; returns
/// the app opened on the workspace afterwards, and the job's events.
fn compressed() -> (App, Workspace, Vec<JobEvent>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = small_digits(dir.path(), 30);
    let ws_dir = dir.path().join("ws");
    let model = Model::load(&PathBuf::from(RESNET)).unwrap();
    let ws = Workspace::open_or_create(&ws_dir, &model, "resnet_digits").unwrap();
    let mut kind = compress(&data, Some(0.7), None);
    if let JobKind::Compress { method, .. } = &mut kind {
        *method = Method::WeightSvd;
    }
    let mut events = Vec::new();
    run_job_blocking(Arc::new(Mutex::new(ws)), kind, |e| events.push(e)).unwrap();
    let opened = init::open(
        &PathBuf::from(RESNET),
        Some(data),
        Some(ws_dir),
        Theme::load("mono").unwrap(),
    )
    .unwrap();
    let mut app = opened.app;
    app.cores = 2;
    // The job read back from history carries its timings: not for snapshots.
    app.jobs.clear();
    // Measured latencies differ from run to run: fixed ones keep the snapshots stable.
    for (v, ms) in app.variants.iter_mut().zip([0.8, 0.6]) {
        let l = v
            .latency
            .as_mut()
            .expect("the compress job measures latency");
        (l.median_ms, l.p90_ms) = (ms, ms);
    }
    (app, opened.workspace, events, dir)
}

fn partials(events: &[JobEvent]) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Partial { result, .. } => Some(serde_json::to_value(result).unwrap()),
            _ => None,
        })
        .collect()
}

/// The job's `Partial` event carrying `result`, to replay it alone.
fn partial(events: &[JobEvent], result: &serde_json::Value) -> JobEvent {
    JobEvent::Partial {
        id: events[0].id(),
        result: serde_json::from_value(result.clone()).unwrap(),
    }
}

#[test]
fn the_real_jobs_dictionary_fills_the_grid_and_marks_the_choice() {
    let (mut app, ws, events, _d) = compressed();
    let p = partials(&events);
    let entries = &p[1..];
    let finished = events.last().cloned().unwrap();
    // The plan: an empty grid, shown at once.
    update(&mut app, Action::Job(partial(&events, &p[0])));
    let g = app.shown_heat().expect("the plan shows the grid").clone();
    assert_eq!(g.ratios.len(), 2);
    assert_eq!(g.filled(), (0, g.layers.len() * 2));
    assert!(g.layers.len() >= 2, "{:?}", g.layers);
    // Half the entries: exactly those cells hold their scores, the rest `·`.
    let half = entries.len() / 2;
    for e in &entries[..half] {
        update(&mut app, Action::Job(partial(&events, e)));
    }
    assert_eq!(app.heat.as_ref().unwrap().filled().0, half);
    let g = app.heat.clone().unwrap();
    for e in &entries[..half] {
        let e = &e["dictionary_entry"];
        let l = g
            .layers
            .iter()
            .position(|n| n == e["layer"].as_str().unwrap());
        let r = g
            .ratios
            .iter()
            .position(|r| Some(*r) == e["ratio"].as_f64());
        assert_eq!(g.scores[l.unwrap()][r.unwrap()], e["score"].as_f64());
    }
    // The colour scale runs from the worst score so far to the best.
    let seen: Vec<f64> = entries[..half]
        .iter()
        .map(|e| e["dictionary_entry"]["score"].as_f64().unwrap())
        .collect();
    let lo = seen.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = seen.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(g.range(), Some((lo, hi)));
    for (w, h) in [(80u16, 24u16), (160, 48)] {
        let screen = render(&app, w, h);
        assert!(screen.contains('·'), "{screen}");
        insta::assert_snapshot!(format!("heat_half_filled_{w}x{h}"), screen);
    }
    // The rest, then the end: every cell filled, the record's ratios marked.
    for e in &entries[half..] {
        update(&mut app, Action::Job(partial(&events, e)));
    }
    update(&mut app, Action::Job(finished.clone()));
    let g = app.heat.clone().unwrap();
    assert_eq!(g.filled().0, g.filled().1);
    let JobEvent::Finished { summary, .. } = finished else {
        panic!("the job did not finish: {finished:?}");
    };
    let ratios = summary["ratios"].as_object().unwrap();
    assert!(!ratios.is_empty());
    for (layer, r) in ratios {
        let l = g.layers.iter().position(|n| n == layer).unwrap();
        assert_eq!(g.chosen[l].map(|c| g.ratios[c]), r.as_f64(), "{layer}");
    }
    let screen = render(&app, 80, 24);
    assert_eq!(screen.matches('[').count(), ratios.len(), "{screen}");
    insta::assert_snapshot!("heat_chosen_80x24", screen);
    // h switches back to the costs table.
    app.focus = super::state::Pane::Layers;
    update(&mut app, Action::ToggleHeat);
    assert!(app.shown_heat().is_none());

    // After the fact: the variant's record and its cached dictionary give the same grid.
    let Action::Compression(1, Some(record), Some(cached)) = heat::load(&ws, 1).unwrap() else {
        panic!("variant 1 has no record or no cached dictionary");
    };
    // JSON text round-trips a score to within an ulp or so.
    let flat = |g: &super::heat::HeatGrid| g.scores.concat();
    assert_eq!(cached.layers, g.layers);
    for (a, b) in flat(&cached).into_iter().zip(flat(&g)) {
        assert!((a.unwrap() - b.unwrap()).abs() < 1e-12, "{a:?} {b:?}");
    }
    assert_eq!(cached.chosen, g.chosen);
    assert_eq!(cached.job, None);
    // The MAC pane of the compressed variant: its record's choices per layer.
    app.current = 1;
    app.heat_view = false;
    update(&mut app, heat::load(&ws, 1).unwrap());
    assert!(app.heat.is_some(), "the cached grid replaces the job's");
    let first = &record.changes[0];
    for (w, h) in [(80u16, 24u16), (160, 48)] {
        let screen = render(&app, w, h);
        assert!(screen.contains(&detail_text(&first.detail)), "{screen}");
        assert!(screen.contains(&first.layer), "{screen}");
        insta::assert_snapshot!(format!("mac_pane_compressed_{w}x{h}"), screen);
    }
}
