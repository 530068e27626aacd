//! Scores without labels (the README's "Scores without labels"): the metric by output shape
//! — per-position agreement for `[N, T, C]`, thresholded-map agreement for `[N, 1, H, W]` —
//! label-free quantsim's fidelity on the CLI, and the user's metric command.

use crate::common::*;
use ndarray::{Array, ArrayD, Axis, Dimension, IxDyn};
use qsteer::data::write_npy_f32;
use qsteer::model::builder::{attr_ints, ProtoBuilder};
use std::path::{Path, PathBuf};

/// A tiny recognizer: `[N, T=6, 5]` features → MatMul `[5, 7]` → per-position logits
/// `[N, 6, 7]`. `shift` perturbs the weights (the "compressed" copy).
fn sequence_model(dir: &Path, name: &str, shift: f32) -> PathBuf {
    let w = Array::from_shape_fn(IxDyn(&[5, 7]), |d| {
        ((d[0] * 7 + d[1]) as f32 * 0.37).sin() + shift * ((d[0] + 2 * d[1]) as f32).cos()
    });
    let mut b = ProtoBuilder::new(13);
    b.input("x", &[6, 5])
        .initializer("w", &w)
        .node("MatMul", "proj", &["x", "w"], &["logits"], vec![])
        .output("logits");
    let path = dir.join(format!("{name}.onnx"));
    b.model(name).unwrap().save(&path).unwrap();
    path
}

/// A tiny detector head: `[N, 1, 8, 8]` → Conv 3×3 → Sigmoid → a probability map.
fn map_model(dir: &Path, name: &str, shift: f32) -> PathBuf {
    let w = Array::from_shape_fn(IxDyn(&[1, 1, 3, 3]), |d| {
        0.3 * ((d[2] * 3 + d[3]) as f32 - 4.0) / 4.0 + shift
    });
    let mut b = ProtoBuilder::new(13);
    b.input("x", &[1, 8, 8])
        .initializer("w", &w)
        .node(
            "Conv",
            "conv",
            &["x", "w"],
            &["z"],
            vec![attr_ints("pads", &[1, 1, 1, 1])],
        )
        .node("Sigmoid", "sig", &["z"], &["prob"], vec![])
        .output("prob");
    let path = dir.join(format!("{name}.onnx"));
    b.model(name).unwrap().save(&path).unwrap();
    path
}

/// A label-free dataset of `n` samples of `shape` (deterministic values in [-2, 2]).
fn unlabelled(dir: &Path, shape: &[usize], n: usize) -> PathBuf {
    let mut dims = vec![n];
    dims.extend_from_slice(shape);
    let x = Array::from_shape_fn(IxDyn(&dims), |d| {
        let k: usize = d.slice().iter().enumerate().map(|(i, v)| (i + 3) * v).sum();
        2.0 * ((k as f32) * 0.731).sin()
    });
    let data = dir.join("data");
    write_npy_f32(&data.join("inputs.npy"), &x).unwrap();
    data
}

fn argmax_agreement(a: &ArrayD<f32>, b: &ArrayD<f32>, classes: usize) -> f64 {
    let rows = |x: &ArrayD<f32>| x.to_shape((x.len() / classes, classes)).unwrap().to_owned();
    let (ra, rb) = (argmax(rows(a).view()), argmax(rows(b).view()));
    ra.iter().zip(&rb).filter(|(x, y)| x == y).count() as f64 / ra.len() as f64
}

/// Both models' outputs on the evaluation part of `data` (split as the CLI does).
fn outputs(home: &Path, model: &Path, data: &Path) -> ArrayD<f32> {
    let out = home.join(format!(
        "{}.npy",
        model.file_stem().unwrap().to_string_lossy()
    ));
    json_ok(
        home,
        &[
            "eval",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--no-workspace",
            "--save-outputs",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    read_f32(&out)
}

#[test]
fn a_sequence_output_is_scored_per_position_not_by_one_flat_argmax() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let fp32 = sequence_model(home, "rec", 0.0);
    let changed = sequence_model(home, "rec_changed", 0.45);
    let data = unlabelled(home, &[6, 5], 60);
    let (a, b) = (outputs(home, &changed, &data), outputs(home, &fp32, &data));
    assert_eq!(a.shape()[1..], [6, 7]);
    let per_position = argmax_agreement(&a, &b, 7);
    let flat = argmax_agreement(&a, &b, 42);
    assert!(
        (per_position - flat).abs() > 0.05,
        "the test needs the two rules to differ: {per_position} vs {flat}"
    );
    let args = |metric: Option<&str>| {
        let mut v = vec![
            "eval".to_string(),
            changed.display().to_string(),
            "--data".into(),
            data.display().to_string(),
            "--reference".into(),
            fp32.display().to_string(),
            "--no-workspace".into(),
            "--json".into(),
        ];
        if let Some(m) = metric {
            v.extend(["--metric".into(), m.into()]);
        }
        v
    };
    let run_json = |metric| {
        let a = args(metric);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        json_ok(home, &a)
    };
    let s = run_json(None);
    assert_eq!(s["metric"], "per_position");
    let got = s["agreement"].as_f64().unwrap();
    assert!((got - per_position).abs() < 1e-9, "{got} vs {per_position}");
    assert_eq!(s["metric_value"], s["agreement"]);
    assert!(s["sqnr_db"].as_f64().is_some() && s["cosine"].as_f64().is_some());
    let n = s["samples"].as_u64().unwrap();
    assert_eq!(s["outputs"][0]["shape"], serde_json::json!([n, 6, 7]));
    // `--metric top1` is the old flattened rule, on request.
    let s = run_json(Some("top1"));
    assert!(
        (s["agreement"].as_f64().unwrap() - flat).abs() < 1e-9,
        "{s}"
    );
    // `--metric sqnr` ranks by dB.
    let s = run_json(Some("sqnr"));
    assert_eq!(s["metric"], "sqnr");
    assert_eq!(s["metric_value"], s["sqnr_db"]);
}

#[test]
fn a_probability_map_is_scored_by_thresholded_agreement_sqnr_and_cosine() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let fp32 = map_model(home, "det", 0.0);
    let changed = map_model(home, "det_changed", 0.08);
    let data = unlabelled(home, &[1, 8, 8], 40);
    let (a, b) = (outputs(home, &changed, &data), outputs(home, &fp32, &data));
    let same = a
        .iter()
        .zip(b.iter())
        .filter(|(x, y)| (**x > 0.5) == (**y > 0.5))
        .count() as f64
        / a.len() as f64;
    let flat = argmax_agreement(&a, &b, 64);
    assert!(same < 1.0 && (same - flat).abs() > 0.05, "{same} vs {flat}");
    let s = json_ok(
        home,
        &[
            "eval",
            changed.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--reference",
            fp32.to_str().unwrap(),
            "--no-workspace",
            "--json",
        ],
    );
    assert_eq!(s["metric"], "map_agreement");
    assert!(
        (s["agreement"].as_f64().unwrap() - same).abs() < 1e-9,
        "{s}"
    );
    assert_eq!(s["outputs"][0]["threshold"], 0.5);
    let cosine = s["cosine"].as_f64().unwrap();
    assert!(cosine > 0.9 && cosine < 1.0, "{cosine}");
    let db = s["sqnr_db"].as_f64().unwrap();
    assert!(db > 0.0 && db < 100.0, "{db}");
    // Per-sample cosine by hand.
    let mean_cos: f64 = a
        .axis_iter(Axis(0))
        .zip(b.axis_iter(Axis(0)))
        .map(|(x, y)| {
            let dot: f64 = x
                .iter()
                .zip(y.iter())
                .map(|(p, q)| (*p as f64) * (*q as f64))
                .sum();
            let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            dot / (nx * ny)
        })
        .sum::<f64>()
        / a.shape()[0] as f64;
    assert!((cosine - mean_cos).abs() < 1e-9, "{cosine} vs {mean_cos}");
}

/// The sample's evaluation inputs without labels.
fn digits_without_labels(dir: &Path) -> PathBuf {
    let x = read_f32(&digits().join("evaluation/inputs.npy"));
    let data = dir.join("nolabels");
    write_npy_f32(&data.join("inputs.npy"), &first(&x, 120)).unwrap();
    data
}

#[test]
fn label_free_quantsim_prints_its_fidelity_in_the_table_and_the_json() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let data = digits_without_labels(home);
    let model = sample_model("mbv2_digits");
    let ws = home.join("ws");
    let base = [
        "quantsim",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--workspace",
        ws.to_str().unwrap(),
        "--calibration-size",
        "40",
        "--w-bits",
        "4",
    ];
    let mut with_json = base.to_vec();
    with_json.push("--json");
    let s = json_ok(home, &with_json);
    assert_eq!(s["metric"], "agreement");
    let agreement = s["agreement"].as_f64().unwrap();
    assert!(agreement > 0.2 && agreement <= 1.0, "{s}");
    assert!(s["sqnr_db"].as_f64().is_some(), "{s}");
    assert_eq!(s["accuracy"], serde_json::Value::Null);
    let out = run(home, &base);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.contains(&format!("agreement {:.2} %", 100.0 * agreement))
            && table.contains("SQNR")
            && table.contains("to FP32"),
        "{table}"
    );
}

/// A metric command in plain sh: the share of the first output file's bytes equal to the
/// ones it saw on its first call (the FP32 parent's outputs), with the byte count as an
/// extra key; each call is counted in `calls`.
fn byte_metric(dir: &Path) -> String {
    let script = dir.join("bytes.sh");
    std::fs::write(
        &script,
        r#"out="$1"; state="$2"
echo call >> "$state/calls"
[ -f "$state/ref.npy" ] || cp "$out" "$state/ref.npy"
total=$(wc -c < "$out")
diff=$(cmp -l "$out" "$state/ref.npy" | wc -l)
per10k=$(( (total - diff) * 10000 / total ))
echo "scoring $out" >&2
printf '{"score": %d.%04d, "bytes": %d}\n' $((per10k / 10000)) $((per10k % 10000)) "$total"
"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("state")).unwrap();
    format!(
        "sh {} {{output}} {}",
        script.display(),
        dir.join("state").display()
    )
}

#[test]
fn the_metric_command_scores_eval_and_is_saved_for_later_commands() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let data = digits_without_labels(home);
    let model = sample_model("mbv2_digits");
    let ws = home.join("ws");
    let command = byte_metric(home);
    let s = json_ok(
        home,
        &[
            "eval",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--workspace",
            ws.to_str().unwrap(),
            "--metric-command",
            &command,
            "--save-metric",
            "--json",
        ],
    );
    assert_eq!(s["metric"], "external");
    assert_eq!(s["metric_value"], 1.0);
    // The split's evaluation part, 10 floats each, and the npy header.
    let n = s["samples"].as_u64().unwrap();
    assert!(s["external"]["bytes"].as_u64().unwrap() > 40 * n, "{s}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.join("workspace.json")).unwrap()).unwrap();
    assert_eq!(saved["settings"]["metric"]["command"], command.as_str());
    // A later quantsim without --metric scores with the saved command.
    let s = json_ok(
        home,
        &[
            "quantsim",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--workspace",
            ws.to_str().unwrap(),
            "--w-bits",
            "4",
            "--json",
        ],
    );
    assert_eq!(s["metric"], "external");
    let v = s["metric_value"].as_f64().unwrap();
    assert!(v > 0.0 && v < 1.0, "W4 changes some output bytes: {s}");
    let calls = std::fs::read_to_string(home.join("state/calls")).unwrap();
    assert_eq!(calls.lines().count(), 2);
}

#[test]
fn metric_command_errors_name_the_command_and_show_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let data = digits_without_labels(home);
    let model = sample_model("mbv2_digits");
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--no-workspace",
        ];
        args.extend_from_slice(extra);
        run(home, &args)
    };
    let out = eval(&["--metric-command", "echo no map here >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("echo no map here") && e.contains("exit status 7") && e.contains("no map here"),
        "{e}"
    );
    let out = eval(&["--metric-command", "echo '{{\"loss\": 3}}'"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no score line"), "{}", stderr(&out));
    let out = eval(&["--metric-command", "my_map {predictions}"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("{predictions}"), "{}", stderr(&out));
    let out = eval(&["--metric", "external"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--metric-command"),
        "{}",
        stderr(&out)
    );
}
