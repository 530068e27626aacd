//! The user's metric command drives the greedy selection: every dictionary entry, the
//! parent's score and the result's come from the command, the cache key follows the
//! command, and a failing command fails the job naming it.

use super::compress::run_with;
use super::compress_tests::{compress, run_body, small_digits};
use super::*;
use crate::compress::build::CompressorSpec;
use crate::compress::test_double::ZeroChannels;
use crate::compress::LayerCompressor;
use crate::experiment::Workspace;
use crate::metrics::MetricSpec;
use crate::model::Model;
use crate::{Error, Result};
use std::path::Path;
use std::sync::Mutex;

fn double(spec: &CompressorSpec) -> Result<Box<dyn LayerCompressor>> {
    Ok(Box::new(ZeroChannels {
        shapes: spec.sample_shapes.clone(),
    }))
}

/// In plain sh: the share of the first output's bytes equal to those of its first call
/// (the parent's outputs); every score it prints is appended to `scores`.
fn byte_metric(dir: &Path) -> String {
    let script = dir.join("bytes.sh");
    std::fs::write(
        &script,
        r#"out="$1"; state="$2"
[ -f "$state/ref.npy" ] || cp "$out" "$state/ref.npy"
total=$(wc -c < "$out")
diff=$(cmp -l "$out" "$state/ref.npy" | wc -l)
per10k=$(( (total - diff) * 10000 / total ))
score=$(printf '%d.%04d' $((per10k / 10000)) $((per10k % 10000)))
echo "$score" >> "$state/scores"
echo "scored $(basename "$out")"
printf '{"score": %s, "differing_bytes": %d}\n' "$score" "$diff"
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

fn sample_resnet() -> Model {
    Model::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/resnet_digits.onnx"))
        .unwrap()
}

#[test]
fn an_external_metric_drives_the_greedy_selection() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_digits(dir.path(), 30);
    let ws = Workspace::open_or_create(&dir.path().join("ws"), &sample_resnet(), "r").unwrap();
    let ws = Mutex::new(ws);
    let command = byte_metric(dir.path());
    let mut kind = compress(&data, Some(0.7), None);
    if let JobKind::Compress { metric, .. } = &mut kind {
        *metric = Some(MetricSpec::external(&command));
    }
    let (summary, events) = run_body(&ws, &kind, &|ctx, ws| {
        run_with(ctx, ws, &double).map(|o| serde_json::json!(o))
    });
    let s = summary.unwrap();
    assert_eq!(s["metric"], "external");
    assert_eq!(s["parent_metric_value"], 1.0);
    let value = s["metric_value"].as_f64().unwrap();
    assert!(value > 0.0 && value < 1.0, "{s}");
    assert!(s["external"]["differing_bytes"].as_u64().unwrap() > 0);
    // Labels are there, but the command ranks: accuracy is only reported.
    assert!(s["accuracy"].as_f64().is_some());
    // Every dictionary entry is a score the command printed.
    let printed: Vec<f64> = std::fs::read_to_string(dir.path().join("state/scores"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let entries: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Partial {
                result:
                    crate::jobs::Partial::DictionaryEntry {
                        dictionary_entry, ..
                    },
                ..
            } => Some(dictionary_entry.score),
            _ => None,
        })
        .collect();
    assert_eq!(entries.len(), 18);
    // The parent, each entry, the result.
    assert_eq!(printed.len(), entries.len() + 2);
    assert_eq!(printed[0], 1.0);
    assert_eq!(&printed[1..=entries.len()], entries.as_slice());
    assert!(entries.iter().any(|&e| e < 1.0) && entries.iter().all(|&e| e <= 1.0));
    assert_eq!(*printed.last().unwrap(), value);

    // The same selection by accuracy is another dictionary (another key), not these scores.
    let (by_accuracy, _) = run_body(&ws, &compress(&data, Some(0.7), None), &|ctx, ws| {
        run_with(ctx, ws, &double).map(|o| serde_json::json!(o))
    });
    let by_accuracy = by_accuracy.unwrap();
    assert_eq!(by_accuracy["metric"], "accuracy");
    assert_eq!(by_accuracy["dictionary"]["reused"], 0);
    assert_ne!(by_accuracy["dictionary"]["key"], s["dictionary"]["key"]);
}

#[test]
fn a_failing_metric_command_fails_the_job_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_digits(dir.path(), 10);
    let ws = Workspace::open_or_create(&dir.path().join("ws"), &sample_resnet(), "r").unwrap();
    let ws = Mutex::new(ws);
    let with = |command: &str| {
        let mut kind = compress(&data, Some(0.7), None);
        if let JobKind::Compress { metric, .. } = &mut kind {
            *metric = Some(MetricSpec::external(command));
        }
        run_body(&ws, &kind, &|ctx, ws| {
            run_with(ctx, ws, &double).map(|o| serde_json::json!(o))
        })
        .0
    };
    let e = with("echo 'cannot read the outputs' >&2; exit 5").unwrap_err();
    assert!(matches!(e, Error::Runtime(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("exit 5") && text.contains("exit status 5") && text.contains("cannot read"),
        "{text}"
    );
    let e = with("echo '{{\"score\": \"high\"}}'").unwrap_err();
    assert!(e.to_string().contains("not a finite number"), "{e}");
    let e = with("m {outputs} {labels}").unwrap_err();
    assert!(
        matches!(e, Error::Input(_)) && e.to_string().contains("{labels}"),
        "{e}"
    );
    // Nothing was recorded.
    assert_eq!(lock(&ws).variants().len(), 1);
}
