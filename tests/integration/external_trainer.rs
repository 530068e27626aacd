//! `qsteer finetune --trainer`: the external trainer path with sh trainers that speak the
//! protocol (progress lines, text, stderr), fail, or write nothing; template errors.

use crate::common::*;
use crate::compress_cli::{setup, Setup};
use std::path::Path;

/// What the tests need beyond the compress tests' setup.
trait TrainerSetup {
    fn finetune<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str>;
    fn script(&self, name: &str, body: &str) -> String;
    fn workspace_index(&self) -> serde_json::Value;
    fn variant_count(&self) -> usize;
    fn job_log(&self, id: u64) -> String;
}

impl TrainerSetup for Setup {
    fn finetune<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        self.command("finetune", extra)
    }

    /// A trainer script in the test's directory.
    fn script(&self, name: &str, body: &str) -> String {
        let path = self.root.join(name);
        std::fs::write(&path, body).unwrap();
        path.display().to_string()
    }

    fn workspace_index(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(Path::new(&self.workspace).join("workspace.json"));
        serde_json::from_str(&text.unwrap()).unwrap()
    }

    fn variant_count(&self) -> usize {
        self.workspace_index()["variants"].as_array().unwrap().len()
    }

    fn job_log(&self, id: u64) -> String {
        let path = Path::new(&self.workspace)
            .join("logs")
            .join(format!("job-{id}.log"));
        std::fs::read_to_string(path).unwrap()
    }
}

fn example_trainer() -> String {
    root()
        .join("examples/trainers/copy-trainer.sh")
        .display()
        .to_string()
}

#[test]
fn the_example_trainer_makes_a_scored_child_variant_with_its_progress() {
    let s = setup();
    let template = format!("sh {} {{input}} {{output}} {{epochs}} 3", example_trainer());
    let out = s.root.join("tuned.onnx").display().to_string();
    let doc = json_ok(
        &s.root,
        &s.finetune(&[
            "--epochs",
            "2",
            "--trainer",
            &template,
            "--save-trainer",
            "--out",
            &out,
            "--json",
        ]),
    );
    assert_eq!(doc["variant"], 1);
    assert_eq!(doc["parent"], 0);
    assert_eq!(doc["step"], "external{epochs:2,lr:0.001}");
    assert_eq!(doc["command"], template.as_str());
    assert_eq!(doc["output"], out.as_str());
    // 2 epochs × 3 steps plus one metric line per epoch.
    assert_eq!(doc["progress_lines"], 8);
    assert_eq!(doc["epochs_seen"], 2);
    let epochs = doc["epochs"].as_array().unwrap();
    assert_eq!(epochs[1]["epoch"], 2);
    assert_eq!(epochs[1]["loss"], 0.1667); // 1/6, the example's made-up loss at step 6
    assert_eq!(epochs[1]["metric"], 0.9);
    assert_eq!(doc["loss"], 0.1667);
    // The model came back unchanged: the same score before and after.
    assert_eq!(doc["metric"], "accuracy");
    assert_eq!(doc["score_before"], doc["score_after"]);
    assert!(doc["score_after"].as_f64().unwrap() > 0.5);
    let index = s.workspace_index();
    let v = &index["variants"][1];
    assert_eq!(v["parent"], 0);
    assert_eq!(v["step"], "external{epochs:2,lr:0.001}");
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
    assert_eq!(index["settings"]["trainer"], template.as_str());
    // Text lines and stderr went to the job log, progress lines as readable text.
    let log = s.job_log(1);
    assert!(log.contains("copy-trainer: epoch 2 done"), "{log}");
    assert!(
        log.contains("epoch 2/2 step 3/3: loss 0.1667, lr 0.001"),
        "{log}"
    );
    // The work directory is gone after a success.
    assert!(!Path::new(&s.workspace).join("trainer/job-1").exists());

    // The saved template runs again without --trainer.
    let again = json_ok(
        &s.root,
        &s.finetune(&["--epochs", "1", "--saved-trainer", "--json"]),
    );
    assert_eq!(again["variant"], 2);
    assert_eq!(again["progress_lines"], 4);
}

#[test]
fn a_failing_trainer_fails_the_job_with_its_last_lines() {
    let s = setup();
    let script = s.script(
        "fail.sh",
        "echo 'loading the model'\necho '{\"epoch\": 1, \"loss\": 0.5}'\necho 'CUDA out of memory' >&2\nexit 3\n",
    );
    let template = format!("sh {script} {{input}} {{output}}");
    let out = run(&s.root, &s.finetune(&["--trainer", &template, "--json"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains("the trainer failed with exit status 3"),
        "{err}"
    );
    assert!(err.contains("CUDA out of memory"), "{err}");
    assert!(err.contains("loading the model"), "{err}");
    assert!(err.contains("work directory kept"), "{err}");
    assert_eq!(s.variant_count(), 1, "no variant for a failed run");
}

#[test]
fn a_trainer_that_writes_nothing_fails_naming_the_missing_file() {
    let s = setup();
    let script = s.script("lazy.sh", "echo 'all done'\n");
    let template = format!("sh {script} {{input}} {{output}}");
    let out = run(&s.root, &s.finetune(&["--trainer", &template]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let missing = Path::new(&s.workspace).join("trainer/job-1/output.onnx");
    assert!(
        err.contains(&format!("wrote no model at {}", missing.display())),
        "{err}"
    );
    assert!(err.contains("all done"), "{err}");
    assert_eq!(s.variant_count(), 1);
}

#[test]
fn an_output_that_is_not_a_model_is_refused() {
    let s = setup();
    let out = run(
        &s.root,
        &s.finetune(&["--trainer", "echo not-a-model > {output}"]),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("does not load"), "{err}");
    assert_eq!(s.variant_count(), 1);
}

#[test]
fn template_and_flag_errors_are_clear() {
    let s = setup();
    let line = assert_bad_input(
        &run(
            &s.root,
            &s.finetune(&["--trainer", "train {input} {outptu}"]),
        ),
        "unknown placeholder",
    );
    assert!(line.contains("unknown placeholder {outptu}"), "{line}");
    let line = assert_bad_input(
        &run(
            &s.root,
            &s.finetune(&["--trainer", "cp {input} {output}", "--optimizer", "sgd"]),
        ),
        "a built-in flag",
    );
    assert!(line.contains("--optimizer"), "{line}");
    let line = assert_bad_input(
        &run(&s.root, &s.finetune(&["--saved-trainer"])),
        "nothing saved",
    );
    assert!(line.contains("no trainer template saved"), "{line}");
}
