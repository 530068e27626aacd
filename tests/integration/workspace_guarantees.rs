//! What the workspace promises (docs/workspace.md) and what the command line refuses before
//! any work starts (issue #22): nothing a user made is overwritten, a variant is recorded
//! whole or not at all, `workspace repair` adopts what an index lost, outputs and
//! contradictory flags are checked first, errors name their source.

use crate::common::*;
use ndarray::Array;
use qsteer::data::{seeded_split, write_npy_f32, write_npy_i64};
use serde_json::Value;
use std::path::Path;
use std::time::Instant;

fn index(ws: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(ws.join("workspace.json")).unwrap()).unwrap()
}

fn ids(ws: &Path) -> Vec<u64> {
    index(ws)["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `--export` / `--out` that cannot be written are refused at once (exit 2), before the job
/// runs and records a variant.
#[test]
fn output_paths_are_checked_before_any_work() {
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let m = sample_model("mbv2_digits");
    let data = digits();
    let ws = root.path().join("ws");
    let file = root.path().join("a-file");
    std::fs::write(&file, b"mine").unwrap();
    let below_file = file.join("x.onnx");
    let (file_s, dir_s, below_s) = (s(&file), s(root.path()), s(&below_file));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["quantsim", s(&m), "--export", file_s], "--export"),
        (vec!["quantsim", s(&m), "--out", dir_s], "--out"),
        (vec!["quantsim", s(&m), "--out", below_s], "--out"),
        (
            vec![
                "compress",
                s(&m),
                "--method",
                "wsvd",
                "--target",
                "0.5",
                "--out",
                below_s,
            ],
            "--out",
        ),
        (vec!["fold-bn", s(&m), "--out", below_s], "--out"),
        (vec!["bias-correct", s(&m), "--out", below_s], "--out"),
        (vec!["adaround", s(&m), "--out", dir_s], "--out"),
        (
            vec!["eval", s(&m), "--save-outputs", below_s],
            "--save-outputs",
        ),
    ];
    for (args, flag) in cases {
        let args: Vec<&str> = args
            .into_iter()
            .chain(["--data", s(&data), "--workspace", s(&ws)])
            .collect();
        let started = Instant::now();
        let o = run(home.path(), &args);
        let line = assert_bad_input(&o, &format!("{args:?}"));
        assert!(line.contains(flag), "{args:?}: {line}");
        assert!(
            started.elapsed().as_secs_f64() < 5.0,
            "{args:?}: refused only after {:?}",
            started.elapsed()
        );
        assert!(!ws.join("workspace.json").exists(), "{args:?}: a job ran");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}

/// Flags that contradict each other (one of them would be ignored) are refused, exit 2,
/// with the reason, before any work.
#[test]
fn contradictory_flags_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let m = sample_model("mbv2_digits");
    let data = digits();
    let ws = root.path().join("ws");
    let enc = root.path().join("enc.json");
    let base = ["--data", s(&data), "--workspace", s(&ws)];
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            vec![
                "quantsim",
                s(&m),
                "--encodings",
                s(&enc),
                "--scheme",
                "mse",
                "--w-bits",
                "4",
            ],
            &["--encodings", "cannot be used with"],
        ),
        (
            vec!["quantsim", s(&m), "--encodings", s(&enc), "--fp32", "conv1"],
            &["--encodings", "cannot be used with"],
        ),
        (
            vec![
                "quantsim",
                s(&m),
                "--fp32",
                "stem.conv",
                "--layer-w-bits",
                "stem.conv=4",
            ],
            &[
                "--fp32 stem.conv",
                "--layer-w-bits stem.conv=4",
                "contradict",
            ],
        ),
        (
            vec![
                "quantsim",
                s(&m),
                "--mode",
                "w",
                "--layer-a-bits",
                "stem.conv=4",
            ],
            &[
                "--layer-a-bits",
                "--mode w",
                "activations are not quantized",
            ],
        ),
        (
            vec![
                "quantsim",
                s(&m),
                "--mode",
                "a",
                "--layer-w-bits",
                "stem.conv=4",
            ],
            &["--layer-w-bits", "--mode a"],
        ),
        (
            vec!["eval", s(&m), "--no-workspace"],
            &["--no-workspace", "--workspace", "contradict"],
        ),
    ];
    for (args, needles) in cases {
        let args: Vec<&str> = args.into_iter().chain(base).collect();
        let o = run(home.path(), &args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: {err:?} lacks {n:?}");
        }
        assert!(!ws.join("workspace.json").exists(), "{args:?}: a job ran");
    }
}

/// The index moved aside (as the corrupt-index message suggested), the next run starts a
/// new one: its variant takes an id no file has, so the old variant's files stay as they
/// were; `workspace repair` then adopts them.
#[test]
fn variants_outside_the_index_are_never_overwritten_and_repair_adopts_them() {
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let m = sample_model("mbv2_digits");
    let ws = root.path().join("ws");
    let o = run(home.path(), &["fold-bn", s(&m), "--workspace", s(&ws)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(ids(&ws), [0, 1]);
    let v1 = ws.join("variants/1.onnx");
    let before = std::fs::read(&v1).unwrap();
    let side: Vec<String> = std::fs::read_dir(ws.join("variants"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("1."))
        .collect();
    std::fs::rename(ws.join("workspace.json"), root.path().join("aside.json")).unwrap();

    let o = run(home.path(), &["cle", s(&m), "--workspace", s(&ws)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("workspace repair"),
        "the run says what the index does not list: {}",
        stderr(&o)
    );
    assert_eq!(ids(&ws), [0, 2], "the new variant takes a free id");
    assert_eq!(
        std::fs::read(&v1).unwrap(),
        before,
        "variants/1.onnx overwritten"
    );

    let o = run(
        home.path(),
        &["workspace", "repair", "--workspace", s(&ws), "--json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["adopted"][0]["id"], 1, "{report}");
    assert_eq!(report["adopted"].as_array().unwrap().len(), 1, "{report}");
    let unknown = report["adopted"][0]["unknown"].to_string();
    assert!(
        unknown.contains("parent") && unknown.contains("step"),
        "{report}"
    );
    assert_eq!(ids(&ws), [0, 1, 2]);
    let adopted = &index(&ws)["variants"][1];
    assert_eq!(adopted["parent"], Value::Null);
    assert_eq!(adopted["model_file"], "variants/1.onnx");
    assert!(
        adopted["tags"].to_string().contains("recovered"),
        "{adopted}"
    );
    if side.contains(&"1.bn_stats.json".to_string()) {
        assert_eq!(adopted["bn_stats_file"], "variants/1.bn_stats.json");
    }
    // A second repair finds nothing to do.
    let o = run(home.path(), &["workspace", "repair", "--workspace", s(&ws)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("nothing to repair"), "{}", stdout(&o));
}

/// A corrupt index: the error offers `workspace repair`, which moves it aside (never
/// deletes it) and rebuilds the index from the files, after which the workspace works.
#[test]
fn a_corrupt_index_is_rebuilt_by_repair() {
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let m = sample_model("mbv2_digits");
    let ws = root.path().join("ws");
    let o = run(home.path(), &["fold-bn", s(&m), "--workspace", s(&ws)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let garbage = b"{ \"variants\": [ {\"id\": 0, oops";
    std::fs::write(ws.join("workspace.json"), garbage).unwrap();
    let o = run(home.path(), &["cle", s(&m), "--workspace", s(&ws)]);
    let line = assert_bad_input(&o, "corrupt index");
    assert!(
        line.contains("qsteer workspace repair --workspace"),
        "{line}"
    );

    let o = run(home.path(), &["workspace", "repair", "--workspace", s(&ws)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("damaged index moved to") && out.contains("adopted variant 1"),
        "{out}"
    );
    let moved: Vec<_> = std::fs::read_dir(&ws)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("workspace.json.damaged-"))
        .collect();
    assert_eq!(moved.len(), 1);
    assert_eq!(std::fs::read(ws.join(&moved[0])).unwrap(), garbage);
    assert_eq!(ids(&ws), [0, 1]);
    let o = run(
        home.path(),
        &["cle", s(&m), "--workspace", s(&ws), "--json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(ids(&ws), [0, 1, 2]);
    // The rebuilt index belongs to the model: its default workspace name and hash match.
    let model = qsteer::model::Model::load(&m).unwrap();
    assert_eq!(index(&ws)["model_hash"], model.content_hash());
}

/// A quantsim whose encodings cannot be saved where the next id's would go: on main the
/// variant was listed with its model but without encodings, settings or score. Now a
/// variant is listed complete or not at all.
#[test]
fn a_variant_is_recorded_complete_or_not_at_all() {
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let m = sample_model("mbv2_digits");
    let data = digits();
    let ws = root.path().join("ws");
    let model = qsteer::model::Model::load(&m).unwrap();
    qsteer::experiment::Workspace::open_or_create(&ws, &model, "mbv2_digits").unwrap();
    // A directory where variant 1's encodings file would be written.
    std::fs::create_dir_all(ws.join("variants/1.encodings.json")).unwrap();
    let o = run(
        home.path(),
        &[
            "quantsim",
            s(&m),
            "--data",
            s(&data),
            "--workspace",
            s(&ws),
            "--calibration-size",
            "20",
        ],
    );
    for v in index(&ws)["variants"].as_array().unwrap().iter().skip(1) {
        assert!(
            v["encodings_file"].is_string() && v["quantsim"].is_object(),
            "variant listed without its encodings or settings: {v}\n{}",
            stderr(&o)
        );
        assert!(
            !v["results"].as_array().unwrap().is_empty(),
            "no score: {v}"
        );
    }
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(ids(&ws), [0, 2], "the quantsim takes the id no file has");
    assert!(
        ws.join("variants/1.encodings.json").is_dir(),
        "what was there stays"
    );
}

/// Error text names the source: the labels file and the index in it; a scheme's value as
/// given; the supported bitwidths; a mistyped subcommand.
#[test]
fn errors_name_their_source() {
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let m = sample_model("mbv2_digits");

    // 20 samples, 8 calibrate: a bad label at an evaluation sample whose position in the
    // evaluation part differs from its index in labels.npy.
    let inputs = first(&read_f32(&digits().join("evaluation/inputs.npy")), 20);
    let split = seeded_split(20, 8, 0);
    let (pos, &bad_at) = split
        .evaluation
        .iter()
        .enumerate()
        .find(|(p, &i)| *p != i)
        .unwrap();
    let mut labels = vec![1i64; 20];
    labels[bad_at] = 12;
    let d = root.path().join("d");
    std::fs::create_dir_all(&d).unwrap();
    write_npy_f32(&d.join("inputs.npy"), &inputs).unwrap();
    write_npy_i64(&d.join("labels.npy"), &Array::from_vec(labels).into_dyn()).unwrap();
    let o = run(
        home.path(),
        &[
            "eval",
            s(&m),
            "--data",
            s(&d),
            "--calibration-size",
            "8",
            "--no-workspace",
        ],
    );
    let line = assert_bad_input(&o, "label out of range");
    let want = format!("labels.npy: label 12 at index {bad_at} is out of range");
    assert!(line.contains(&want), "{line} (position {pos} in the split)");
    assert!(line.contains("10 classes"), "{line}");

    let data = digits();
    let q = |extra: &[&str]| {
        let mut args = vec![
            "quantsim",
            s(&m),
            "--data",
            s(&data),
            "--workspace",
            "/nonexistent/ws",
        ];
        args.extend_from_slice(extra);
        run(home.path(), &args)
    };
    let o = q(&["--scheme", "percentile:-5"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("-5") && !stderr(&o).contains("_5"),
        "{}",
        stderr(&o)
    );
    for bits in [["--w-bits", "-3"], ["--a-bits", "256"], ["--w-bits", "1"]] {
        let o = q(&bits);
        assert_eq!(o.status.code(), Some(2), "{bits:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("2–16"), "{bits:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("0..=255"), "{bits:?}: {}", stderr(&o));
    }
    let o = q(&["--layer-w-bits", "stem.conv=300"]);
    assert!(stderr(&o).contains("2–16"), "{}", stderr(&o));
    assert_eq!(
        "percentile:9999e-2"
            .parse::<qsteer::quant::Scheme>()
            .unwrap(),
        qsteer::quant::Scheme::Percentile(99.99)
    );

    let o = run(home.path(), &["inspekt"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("'inspect'"), "{}", stderr(&o));
    // A model path is still the top-level argument, not a mistyped subcommand (here the
    // app then wants a terminal).
    for model in ["no-such-model.onnx", s(&m)] {
        let o = run(home.path(), &[model]);
        assert!(
            !stderr(&o).contains("unrecognized subcommand"),
            "{}",
            stderr(&o)
        );
    }
}
