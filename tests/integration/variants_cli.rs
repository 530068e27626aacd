//! `qsteer variants rename|note|tag|untag|delete`: the variant as the index holds it after
//! each, the files a delete removes, and the refusals (exit code 2, naming why).

use crate::common::{assert_bad_input, json_ok, run, sample_model};

fn json_ok_s(d: &std::path::Path, args: &[String]) -> serde_json::Value {
    json_ok(d, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn run_s(d: &std::path::Path, args: &[String]) -> std::process::Output {
    run(d, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn rename_note_tag_and_delete_a_variant() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ws = d.join("ws");
    let w = ws.display().to_string();
    // Two generations: 1 from the base, 2 from 1.
    {
        let model = qsteer::model::Model::load(&sample_model("resnet_digits")).unwrap();
        let mut made =
            qsteer::experiment::Workspace::open_or_create(&ws, &model, "resnet").unwrap();
        let one = made.add_variant(0, "copy", &model).unwrap();
        assert_eq!(made.add_variant(one, "copy", &model).unwrap(), 2);
    }
    let at = |args: &[&'static str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--workspace".into(), w.clone(), "--json".into()]);
        all
    };
    let v = json_ok_s(d, &at(&["variants", "rename", "2", "equalized"]));
    assert_eq!(
        (v["id"].clone(), v["name"].clone()),
        (2.into(), "equalized".into())
    );
    let v = json_ok_s(d, &at(&["variants", "note", "2", "for the demo"]));
    assert_eq!(v["notes"], "for the demo");
    let v = json_ok_s(d, &at(&["variants", "tag", "2", "ship"]));
    assert_eq!(v["tags"], serde_json::json!(["ship"]));
    let v = json_ok_s(d, &at(&["variants", "untag", "2", "ship"]));
    assert_eq!(v["tags"], serde_json::json!([]));
    let err = assert_bad_input(&run_s(d, &at(&["variants", "delete", "1"])), "a parent");
    assert!(err.contains("variant 1 has children (2)"), "{err}");
    let err = assert_bad_input(&run_s(d, &at(&["variants", "delete", "0"])), "the base");
    assert!(err.contains("base model"), "{err}");
    let err = assert_bad_input(
        &run_s(d, &at(&["variants", "note", "9", "x"])),
        "no variant",
    );
    assert!(err.contains("no variant 9"), "{err}");
    let gone = json_ok_s(d, &at(&["variants", "delete", "2"]));
    assert_eq!(gone["deleted"], 2);
    let files = gone["files"].as_array().unwrap();
    assert!(!files.is_empty());
    assert!(files
        .iter()
        .all(|f| !std::path::Path::new(f.as_str().unwrap()).exists()));
    assert!(!ws.join("variants/2.onnx").exists());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.join("workspace.json")).unwrap()).unwrap();
    let ids: Vec<u64> = (index["variants"].as_array().unwrap().iter())
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [0, 1]);
    // Its parent can go now.
    json_ok_s(d, &at(&["variants", "delete", "1"]));
}
