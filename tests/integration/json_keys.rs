//! The `--json` documents keep their keys (DESIGN.md §CLI; scripts read them): for each
//! command, the set of key paths of a real run on 16 samples equals the committed list in
//! `tests/fixtures/json_keys/<name>.txt` (written from qsteer's output before the job
//! outcomes were typed, #18). A renamed, dropped or added key fails here; change the list
//! only on purpose.

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeSet;

/// Every key path of `v`: `a`, `a.b`, and `a[].b` for the keys of objects in a list.
fn key_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                key_paths(x, &p, out);
            }
        }
        Value::Array(items) => {
            for x in items {
                key_paths(x, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

fn committed(name: &str) -> BTreeSet<String> {
    let file = root().join(format!("tests/fixtures/json_keys/{name}.txt"));
    let text = std::fs::read_to_string(&file).unwrap();
    text.lines().map(str::to_string).collect()
}

#[test]
fn every_job_command_keeps_its_json_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = small_digits(d, 16).display().to_string();
    let model = sample_model("resnet_digits").display().to_string();
    let trainer = root().join("examples/trainers/copy-trainer.sh");
    let trainer = format!("sh {} {{input}} {{output}} {{epochs}} 3", trainer.display());
    // (list name, arguments after the model); one workspace, as a user's session would.
    let table: &[(&str, &[&str])] = &[
        ("eval", &["eval"]),
        ("eval_reference", &["eval", "--reference", &model]),
        ("quantsim", &["quantsim"]),
        ("fold_bn", &["fold-bn"]),
        ("cle", &["cle"]),
        ("bias_correct", &["bias-correct"]),
        ("analyze", &["analyze"]),
        ("adaround", &["adaround", "--iterations", "20"]),
        (
            "compress",
            &["compress", "--method", "ssvd", "--target", "0.5"],
        ),
        (
            "finetune",
            &[
                "finetune",
                "--epochs",
                "1",
                "--batch-size",
                "16",
                "--threads",
                "1",
            ],
        ),
        (
            "qat",
            &[
                "finetune",
                "--qat",
                "--epochs",
                "1",
                "--batch-size",
                "16",
                "--threads",
                "1",
            ],
        ),
        (
            "sweep",
            &[
                "sweep",
                "--target",
                "0.5",
                "--cssvd",
                "0.7",
                "--candidates",
                "4",
            ],
        ),
        ("fix_chain", &["fix", "--chain", "fold-bn,cle,bc,quantsim"]),
        (
            "external_finetune",
            &["finetune", "--trainer", &trainer, "--epochs", "1"],
        ),
    ];
    let mut failures = vec![];
    for (name, args) in table {
        let mut argv: Vec<&str> = vec![&model];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--data", &data, "--json"]);
        let doc = json_ok(d, &argv);
        let mut keys = BTreeSet::new();
        key_paths(&doc, "", &mut keys);
        let want = committed(name);
        if keys != want {
            failures.push(format!(
                "{name}: missing {:?}, new {:?}",
                want.difference(&keys).collect::<Vec<_>>(),
                keys.difference(&want).collect::<Vec<_>>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn key_paths_see_a_renamed_nested_key() {
    let before = serde_json::json!({"a": 1, "folded": [{"bn": "x", "op": "Conv"}]});
    let after = serde_json::json!({"a": 1, "folded": [{"bn_name": "x", "op": "Conv"}]});
    let (mut k1, mut k2) = (BTreeSet::new(), BTreeSet::new());
    key_paths(&before, "", &mut k1);
    key_paths(&after, "", &mut k2);
    assert!(k1.contains("folded[].bn"));
    assert_ne!(k1, k2);
}
