//! The sweep job on the sample ResNet with the real compressors and a small slice of the
//! digits: every row a variant matching its record, overall ratios the product of the
//! steps', the pick by the rule, and a rerun that makes nothing new.

use super::compress_tests::{run_body, run_body_until, small_digits};
use super::sweep::run as run_sweep;

/// The sweep body with its outcome as JSON (the tests read it as a summary).
fn run(ctx: &super::exec::JobCtx, ws: &std::sync::Mutex<Workspace>) -> Result<serde_json::Value> {
    run_sweep(ctx, ws).map(|o| serde_json::json!(o))
}
use super::*;
use crate::compress::sweep::{SweepReport, SweepRow};
use crate::compress::Method;
use crate::experiment::Workspace;
use crate::model::Model;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

fn sweep(data: &Path, cssvd: &[f64], stage: SweepStage) -> JobKind {
    JobKind::Sweep {
        variant: 0,
        data: data.to_path_buf(),
        target: 0.5,
        cssvd: cssvd.to_vec(),
        // Twenty samples move the accuracy in steps of 5 points: pre-select everything.
        max_drop: 100.0,
        neighbour: 0.0,
        reconstruct: true,
        candidates: 4,
        stage,
        calibration_size: 20,
        seed: 0,
        threads: 1,
        metric: None,
    }
}

fn run_job(ws: &Mutex<Workspace>, kind: &JobKind) -> (Result<serde_json::Value>, Vec<JobEvent>) {
    run_body(ws, kind, &run)
}

fn rows(events: &[JobEvent]) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Partial {
                result: result @ crate::jobs::Partial::SweepRow { .. },
                ..
            } => Some(serde_json::to_value(result).unwrap()),
            _ => None,
        })
        .collect()
}

/// The row's variant exists, is the child of its parent, and its record agrees.
fn check_row(ws: &Workspace, row: &SweepRow, method: Method) {
    let v = ws.variant(row.variant).unwrap();
    assert_eq!(v.parent, Some(row.parent));
    assert_eq!(v.size_bytes, row.size_bytes);
    assert_eq!(v.latency, row.latency);
    assert!(row.latency.as_ref().unwrap().median_ms > 0.0);
    let record = ws.compression(row.variant).unwrap().unwrap();
    assert_eq!(record.method, method);
    assert_eq!(record.target, Some(row.requested));
    assert_eq!(record.mac_ratio, row.mac_ratio);
    assert_eq!(v.macs, Some(record.macs_after));
    assert!(row.score_after.is_some(), "reconstruction ran");
}

#[test]
fn sweep_makes_candidates_picks_by_the_rule_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_digits(dir.path(), 20);
    let model = Model::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample-models/resnet_digits.onnx"),
    )
    .unwrap();
    let ws = Workspace::open_or_create(&dir.path().join("ws"), &model, "resnet_digits").unwrap();
    let ws = Mutex::new(ws);

    let kind = sweep(&data, &[0.6, 0.75], SweepStage::Full);
    let (result, events) = run_job(&ws, &kind);
    let doc = result.unwrap();
    let report: SweepReport = serde_json::from_value(doc.clone()).unwrap();
    assert_eq!(report.metric, "accuracy");
    // The result says which samples selected and scored (the same ones) and refit.
    let used = &doc["samples_used"];
    assert_eq!(used["selection"]["subset"], "evaluation");
    assert_eq!(used["selection"]["samples"], 20);
    assert_eq!(used["score"], used["selection"]);
    assert_eq!(used["refit"]["subset"], "calibration");
    assert!(used["train"].is_null());
    assert_eq!(report.ssvd.len(), 2);
    assert_eq!(
        report.cp.len(),
        2,
        "one Ccp per SSVD candidate without neighbours"
    );
    assert!(report.base_latency.is_some());
    assert_eq!(rows(&events).len(), 4);
    let made = lock(&ws).variants().len();
    assert_eq!(made, 5);
    {
        let ws = lock(&ws);
        for s in &report.ssvd {
            check_row(&ws, s, Method::SpatialSvd);
            assert_eq!(s.parent, 0);
            assert_eq!(s.overall_mac_ratio, s.mac_ratio);
            assert!(s.preselected);
        }
        for c in &report.cp {
            check_row(&ws, c, Method::ChannelPruning);
            let parent = report.ssvd.iter().find(|s| s.variant == c.parent).unwrap();
            assert!((c.overall_mac_ratio - parent.mac_ratio * c.mac_ratio).abs() < 1e-12);
            // Measured independently: the grandchild's MACs over the base's.
            let base_macs = ws.compression(parent.variant).unwrap().unwrap().macs_before;
            let macs = ws.variant(c.variant).unwrap().macs.unwrap();
            assert!((c.overall_mac_ratio - macs as f64 / base_macs as f64).abs() < 1e-9);
            assert!((c.requested - (0.5 / parent.mac_ratio * 1e6).round() / 1e6).abs() < 1e-9);
        }
        // The pick: least drop among those within C + 0.01, else the smallest ratio.
        let within: Vec<&SweepRow> = report
            .cp
            .iter()
            .filter(|r| r.overall_mac_ratio <= 0.51)
            .collect();
        let want = if within.is_empty() {
            report
                .cp
                .iter()
                .min_by(|a, b| a.overall_mac_ratio.total_cmp(&b.overall_mac_ratio))
                .unwrap()
                .variant
        } else {
            within
                .iter()
                .min_by(|a, b| a.drop_points.total_cmp(&b.drop_points))
                .unwrap()
                .variant
        };
        let pick = report.pick.as_ref().unwrap();
        assert_eq!(pick.variant, want, "{}", pick.reason);
        assert_eq!(doc["variant"], want);
        assert!(ws
            .variant(want)
            .unwrap()
            .tags
            .contains(&"picked".to_string()));
    }

    // The same sweep again: every candidate reused, nothing made.
    let (again, _) = run_job(&ws, &kind);
    let again: SweepReport = serde_json::from_value(again.unwrap()).unwrap();
    assert_eq!(lock(&ws).variants().len(), made);
    assert_eq!(again.ssvd, report.ssvd);
    assert_eq!(again.cp, report.cp);

    // Step 1 alone on one of the values, then step 2 on a picked one: reused too.
    let (one, _) = run_job(&ws, &sweep(&data, &[0.75], SweepStage::Ssvd));
    let one: SweepReport = serde_json::from_value(one.unwrap()).unwrap();
    assert_eq!((one.ssvd.len(), one.cp.len(), one.pick), (1, 0, None));
    let picked = one.ssvd[0].variant;
    let (two, _) = run_job(
        &ws,
        &sweep(&data, &[], SweepStage::Cp { ssvd: vec![picked] }),
    );
    let two: SweepReport = serde_json::from_value(two.unwrap()).unwrap();
    assert_eq!(two.cp.len(), 1);
    assert_eq!(two.cp[0].parent, picked);
    assert_eq!(lock(&ws).variants().len(), made);

    // Cancelled after its first new candidate: that one is kept, and a rerun reuses it.
    let fresh = sweep(&data, &[0.55, 0.7], SweepStage::Ssvd);
    let first_row = |e: &JobEvent| {
        matches!(
            e,
            JobEvent::Partial {
                result: crate::jobs::Partial::SweepRow { .. },
                ..
            }
        )
    };
    let (cancelled, events) = run_body_until(&ws, &fresh, &run, &first_row);
    assert!(matches!(cancelled, Err(Error::Cancelled)), "{cancelled:?}");
    assert_eq!(rows(&events).len(), 1);
    assert_eq!(lock(&ws).variants().len(), made + 1);
    let (resumed, _) = run_job(&ws, &sweep(&data, &[0.55], SweepStage::Ssvd));
    assert_eq!(
        resumed.unwrap()["ssvd"][0]["variant"],
        rows(&events)[0]["sweep_row"]["variant"]
    );
    assert_eq!(lock(&ws).variants().len(), made + 1);

    // The recipe's "SSVD, fine-tune, pick, then CP": a fine-tuned SSVD candidate is a pick
    // for step 2, its row shows the trained score after, and CP starts from the trained model.
    let settings = crate::train::FineTuneSettings {
        epochs: 1,
        batch_size: 10,
        calibration_size: 20,
        ..Default::default()
    };
    let tune = JobKind::FineTune {
        variant: picked,
        data: data.clone(),
        settings,
        threads: 1,
    };
    let tuned = run_body(&ws, &tune, &|c, w| {
        super::finetune::run(c, w).map(|o| serde_json::json!(o))
    })
    .0
    .unwrap()["variant"]
        .as_u64()
        .unwrap() as u32;
    let (three, _) = run_job(
        &ws,
        &sweep(&data, &[], SweepStage::Cp { ssvd: vec![tuned] }),
    );
    let three: SweepReport = serde_json::from_value(three.unwrap()).unwrap();
    assert_eq!(three.ssvd[0].variant, tuned);
    assert_eq!(three.ssvd[0].parent, 0, "the compressed ancestor's parent");
    assert_eq!(
        three.ssvd[0].score_before,
        one.ssvd[0].score_after.clone().unwrap()
    );
    assert_eq!(three.cp.len(), 1);
    assert_eq!(three.cp[0].parent, tuned, "CP of the trained model");
    assert_eq!(
        lock(&ws).variant(three.cp[0].variant).unwrap().parent,
        Some(tuned)
    );

    // A CP candidate is no SSVD pick; a bad target fails before any work.
    let cp = report.cp[0].variant;
    let e = run_job(&ws, &sweep(&data, &[], SweepStage::Cp { ssvd: vec![cp] }))
        .0
        .unwrap_err();
    assert!(
        matches!(&e, Error::Input(m) if m.contains(&format!("variant {cp}"))),
        "{e}"
    );
    let mut bad = sweep(&data, &[], SweepStage::Ssvd);
    if let JobKind::Sweep { target, .. } = &mut bad {
        *target = 1.2;
    }
    let e = run_job(&ws, &bad).0.unwrap_err();
    assert!(
        matches!(&e, Error::Input(m) if m.contains("--target")),
        "{e}"
    );
}
