//! `qsteer compress` on the sample ResNet with a small slice of the digits data: the JSON
//! document, the target met, the dictionary reused by a rerun, manual ratios, bad arguments.

use crate::common::*;
use std::path::{Path, PathBuf};

/// A temporary directory with 40 + 40 digits samples, the sample ResNet and a workspace path.
pub(crate) struct Setup {
    _dir: tempfile::TempDir,
    pub(crate) root: PathBuf,
    pub(crate) data: String,
    pub(crate) workspace: String,
    pub(crate) model: String,
}

pub(crate) fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let data = small_digits(&root, 40).display().to_string();
    Setup {
        workspace: root.join("ws").display().to_string(),
        model: sample_model("resnet_digits").display().to_string(),
        root,
        data,
        _dir: dir,
    }
}

impl Setup {
    fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        self.command("compress", extra)
    }

    /// `command MODEL --data DIR --workspace DIR --threads 1 extra…`
    pub(crate) fn command<'a>(&'a self, command: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec![
            command,
            &self.model,
            "--data",
            &self.data,
            "--workspace",
            &self.workspace,
            "--threads",
            "1",
        ];
        a.extend_from_slice(extra);
        a
    }
}

#[test]
fn greedy_meets_the_target_and_a_rerun_reuses_the_dictionary() {
    let s = setup();
    let out = s.root.join("ssvd.onnx").display().to_string();
    let args = s.args(&[
        "--method", "ssvd", "--target", "0.5", "--out", &out, "--json",
    ]);
    let doc = json_ok(&s.root, &args);
    assert_eq!(doc["output"], out.as_str());
    assert_eq!(doc["variant"], 1);
    assert_eq!(doc["step"], "ssvd{target:0.5}");
    let ratio = doc["mac_ratio"].as_f64().unwrap();
    assert!((ratio - 0.5).abs() <= 0.01 && ratio <= 0.501, "{ratio}");
    let (before, after) = (
        doc["macs_before"].as_u64().unwrap(),
        doc["macs"].as_u64().unwrap(),
    );
    assert_eq!(doc["macs_total"], doc["macs"]);
    assert!((after as f64 / before as f64 - ratio).abs() < 1e-9);
    assert!(doc["params_total"].as_u64().unwrap() > 0);
    let accuracy = doc["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
    assert!(doc["seconds"].as_f64().unwrap() > 0.0);
    let evaluations = doc["evaluations"].as_u64().unwrap();
    assert!(evaluations > 0);
    assert_eq!(doc["dictionary"]["computed"].as_u64(), Some(evaluations));
    let layers = doc["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    for l in layers {
        assert!(l["rank"].as_u64().unwrap() < l["full_rank"].as_u64().unwrap() + 1);
        assert!(l["macs_after"].as_u64() < l["macs_before"].as_u64(), "{l}");
    }
    assert!(Path::new(&out).exists());

    // The same command again: the dictionary comes from the workspace cache.
    let again = json_ok(&s.root, &args);
    assert_eq!(again["variant"], 2);
    assert_eq!(again["evaluations"], 0);
    assert_eq!(again["dictionary"]["reused"].as_u64(), Some(evaluations));
    assert_eq!(again["mac_ratio"], doc["mac_ratio"]);
    assert_eq!(again["ratios"], doc["ratios"]);
}

#[test]
fn manual_ratios_and_bad_arguments() {
    let s = setup();
    let file = s.root.join("ratios.json");
    std::fs::write(&file, r#"{"layer2.conv2": 0.5, "layer3.conv2": 0.3}"#).unwrap();
    let ratios = file.display().to_string();
    let doc = json_ok(
        &s.root,
        &s.args(&["--method", "wsvd", "--ratios", &ratios, "--json"]),
    );
    assert_eq!(doc["step"], "wsvd{ratios:manual}");
    assert_eq!(doc["evaluations"], 0);
    let layers = doc["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0]["layer"], "layer2.conv2");
    assert!(doc["mac_ratio"].as_f64().unwrap() < 1.0);

    let bad = |extra: &[&str], what: &str| {
        let out = run(&s.root, &s.args(extra));
        let line = assert_bad_input(&out, what);
        assert!(line.contains(what), "{line}");
    };
    std::fs::write(&file, r#"{"layer9.conv": 0.5}"#).unwrap();
    bad(&["--method", "wsvd", "--ratios", &ratios], "'layer9.conv'");
    std::fs::write(&file, "[0.5]").unwrap();
    bad(&["--method", "wsvd", "--ratios", &ratios], "ratios.json");
    bad(&["--method", "ssvd", "--target", "1.5"], "--target");
    bad(
        &["--method", "ssvd", "--target", "0.5", "--pin", "nope=0.5"],
        "'nope'",
    );
    bad(
        &["--method", "ssvd", "--target", "0.5", "--pin", "stem.conv"],
        "--pin 'stem.conv'",
    );
    bad(
        &["--method", "ssvd", "--target", "0.5", "--exclude", "fc2"],
        "'fc2'",
    );
}

#[test]
fn sweep_step_one_then_latency_of_a_candidate() {
    let s = setup();
    let args = [
        "sweep",
        &s.model,
        "--data",
        &s.data,
        "--workspace",
        &s.workspace,
        "--threads",
        "1",
        "--target",
        "0.5",
        "--cssvd",
        "0.75",
        "--candidates",
        "4",
        "--calibration-size",
        "40",
        "--stage",
        "ssvd",
        "--json",
    ];
    let doc = json_ok(&s.root, &args);
    assert_eq!(doc["stage"], "ssvd");
    assert_eq!(doc["metric"], "accuracy");
    let rows = doc["ssvd"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["requested"], 0.75);
    assert_eq!(row["method"], "spatial_svd");
    let ratio = row["mac_ratio"].as_f64().unwrap();
    assert!(ratio <= 0.751 && ratio > 0.5, "{ratio}");
    assert!(row["score_after"]["accuracy"].as_f64().is_some());
    assert!(row["latency"]["median_ms"].as_f64().unwrap() > 0.0);
    assert!(doc["cp"].as_array().unwrap().is_empty());
    assert!(doc["pick"].is_null() && doc["variant"].is_null());

    // The candidate's latency, by variant id, recorded on it.
    let id = row["variant"].to_string();
    let lat = json_ok(
        &s.root,
        &[
            "latency",
            &id,
            "--workspace",
            &s.workspace,
            "--runs",
            "5",
            "--json",
        ],
    );
    assert_eq!(lat["variant"], row["variant"]);
    assert_eq!(
        (lat["runs"].as_u64(), lat["batch"].as_u64()),
        (Some(5), Some(1))
    );
    assert!(lat["median_ms"].as_f64().unwrap() > 0.0);
    assert!(lat["p90_ms"].as_f64() >= lat["median_ms"].as_f64());
    assert!(lat["macs"].as_u64().unwrap() > 0);

    let out = run(&s.root, &["latency", "99", "--workspace", &s.workspace]);
    let line = assert_bad_input(&out, "latency of a missing variant");
    assert!(line.contains("no variant 99"), "{line}");
    let mut bad = args.to_vec();
    bad[11] = "0,7";
    let out = run(&s.root, &bad);
    let line = assert_bad_input(&out, "sweep with a bad Cssvd");
    assert!(line.contains("--cssvd value 0"), "{line}");
}

#[test]
fn finetune_trains_a_child_variant_tract_loads_and_rejects_bad_input() {
    let s = setup();
    let out = s.root.join("tuned.onnx").display().to_string();
    let args = [
        "finetune",
        &s.model,
        "--data",
        &s.data,
        "--workspace",
        &s.workspace,
        "--threads",
        "1",
        "--epochs",
        "2",
        "--lr",
        "1e-4",
        "--batch-size",
        "16",
        "--out",
        &out,
        "--json",
    ];
    let doc = json_ok(&s.root, &args);
    assert_eq!(doc["variant"], 1);
    assert_eq!(doc["step"], "finetune{epochs:2,lr:0.0001}");
    assert_eq!(doc["output"], out.as_str());
    assert_eq!(doc["metric"], "accuracy");
    assert_eq!(doc["epochs"].as_array().unwrap().len(), 2);
    assert_eq!(doc["steps_per_epoch"], 3); // 40 training samples in batches of 16
    assert!(doc["loss"].as_f64().unwrap().is_finite());
    for k in ["score_before", "score_after"] {
        let v = doc[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} {v}");
    }
    // The written model keeps the graph and loads in tract (the eval command runs it).
    let eval = json_ok(
        &s.root,
        &["eval", &out, "--data", &s.data, "--threads", "1", "--json"],
    );
    assert_eq!(eval["accuracy"], doc["score_after"]);

    let bad = |extra: &[&str], what: &str| {
        let mut a = vec![
            "finetune",
            &s.model,
            "--data",
            &s.data,
            "--workspace",
            &s.workspace,
        ];
        a.extend_from_slice(extra);
        let line = assert_bad_input(&run(&s.root, &a), what);
        assert!(line.contains(what), "{line}");
    };
    bad(&["--epochs", "0"], "--epochs");
    bad(&["--batch-size", "0"], "--batch-size");
    bad(&["--layers", "nope"], "'nope'");
    bad(&["--freeze", "nope"], "'nope'");

    // Only the classifier head trains: fewer weights than the whole model, more than none.
    let mut head = args[..args.len() - 3].to_vec(); // no --out, no --json
    head.extend_from_slice(&["--train-last", "1", "--json"]);
    let head = json_ok(&s.root, &head);
    let trained = head["trained_params"].as_u64().unwrap();
    assert!(
        trained > 0 && trained < doc["trained_params"].as_u64().unwrap(),
        "{head}"
    );
}

/// `latency --profile`: the per-op profile in the JSON document (op kinds summing to the
/// whole, the slowest nodes) and in the text, next to the unchanged latency keys.
#[test]
fn latency_profile_names_the_ops_that_take_the_time() {
    let s = setup();
    let args = [
        "latency",
        s.model.as_str(),
        "--workspace",
        &s.workspace,
        "--runs",
        "3",
        "--profile",
        "--top",
        "4",
    ];
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let doc = json_ok(&s.root, &with_json);
    assert!(doc["median_ms"].as_f64().unwrap() > 0.0);
    let p = &doc["profile"];
    assert_eq!(p["runs"], 10);
    let by_op = p["by_op"].as_array().unwrap();
    let share: f64 = by_op.iter().map(|o| o["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-6, "{share}");
    // Which op is slowest depends on the machine's load; that the model's matrix products
    // are profiled under tract's name for them does not.
    assert!(by_op.iter().any(|o| o["name"] == "OptMatMul"), "{by_op:?}");
    assert_eq!(p["by_node"].as_array().unwrap().len(), 4);
    let out = run(&s.root, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("by op kind:") && text.contains("OptMatMul"),
        "{text}"
    );
}
