//! The external fine-tune job through the engine: a cancel kills the trainer's whole process
//! group (through the job runner), and a quantized variant goes out as QDQ + encodings and
//! comes back as a float child with its quantsim.

use super::compress_tests::small_digits;
use super::*;
use crate::experiment::Workspace;
use crate::model::Model;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn open_workspace(dir: &Path) -> Arc<Mutex<Workspace>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/resnet_digits.onnx");
    let model = Model::load(&path).unwrap();
    let ws = Workspace::open_or_create(&dir.join("ws"), &model, "resnet_digits").unwrap();
    Arc::new(Mutex::new(ws))
}

fn external(variant: u32, data: &Path, command: &str) -> JobKind {
    JobKind::ExternalFineTune {
        variant,
        data: data.to_path_buf(),
        command: command.into(),
        epochs: 1,
        lr: 0.01,
        threads: 1,
    }
}

/// Running, or a zombie nobody reaped yet (both mean the process did not stop).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn cancel_kills_the_trainer_and_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_digits(dir.path(), 20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let ws = open_workspace(dir.path());
    let runner = JobRunner::new(rt.handle().clone(), ws.clone(), 1, tx).unwrap();
    // A trainer that reports one step and then waits on a child of its own.
    let command =
        "true {output}; sleep 300 & echo $! > {workdir}/sleep.pid; echo $$ > {workdir}/sh.pid; \
                   echo '{{\"epoch\": 1, \"step\": 1, \"steps\": 4, \"loss\": 2.5}}'; wait";
    let id = runner.submit(external(0, &data, command));
    let mut next = || {
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(600), rx.recv()).await })
            .expect("no job event for 10 minutes")
            .expect("event channel closed")
    };
    loop {
        match next() {
            JobEvent::Partial { result, .. } => {
                // The wire form is the one the event had before it was typed.
                assert_eq!(
                    serde_json::to_value(result).unwrap(),
                    serde_json::json!({"train_step": {"epoch": 1, "step": 1, "steps": 4, "loss": 2.5}})
                );
                break;
            }
            ev => assert!(!ev.is_terminal(), "ended before its first step: {ev:?}"),
        }
    }
    let workdir = dir.path().join("ws/trainer").join(format!("job-{id}"));
    let pid = |name: &str| -> u32 {
        let text = std::fs::read_to_string(workdir.join(name)).unwrap();
        text.trim().parse().unwrap()
    };
    let (sleeper, shell) = (pid("sleep.pid"), pid("sh.pid"));
    assert!(alive(sleeper) && alive(shell));
    assert!(runner.cancel(id));
    loop {
        let ev = next();
        if ev.is_terminal() {
            assert_eq!(ev, JobEvent::Cancelled { id });
            break;
        }
    }
    // The job reaps the shell before it reports; the orphaned sleep is reaped by init.
    assert!(!alive(shell), "the trainer's shell still runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(sleeper) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(sleeper), "the trainer's child {sleeper} still runs");
    assert_eq!(ws.lock().unwrap().variants().len(), 1, "nothing recorded");
}

fn run(ws: &Arc<Mutex<Workspace>>, kind: JobKind) -> crate::Result<serde_json::Value> {
    run_job_blocking(ws.clone(), kind, |_| {}).map(|o| o.to_json())
}

#[test]
fn a_quantized_variant_goes_out_as_qdq_and_comes_back_with_its_quantsim() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_digits(dir.path(), 20);
    let ws = open_workspace(dir.path());
    let quantsim = JobKind::Quantsim {
        variant: 0,
        data: data.clone(),
        settings: Default::default(),
        calibration_size: 200,
        seed: 0,
        threads: 1,
        encodings: None,
        metric: None,
    };
    assert_eq!(run(&ws, quantsim).unwrap()["variant"], 1);
    let float_model: PathBuf = dir.path().join("ws/variants/0.onnx");
    let float = float_model.display();

    // The trainer sees the QDQ model and the encodings; it hands back the float model.
    let check = format!(
        "grep -q DequantizeLinear {{input}} && test -s {{encodings}} && cp '{float}' {{output}}"
    );
    let doc = run(&ws, external(1, &data, &check)).unwrap();
    assert_eq!(doc["quantized"], true);
    assert_eq!(doc["float_variant"], 2);
    assert_eq!(doc["variant"], 3);
    // The same float model quantized with the same settings scores the same.
    assert_eq!(doc["score_before"], doc["score_after"]);
    assert!(
        doc["encodings"].is_null(),
        "recalibrated with v1's settings"
    );
    {
        let ws = ws.lock().unwrap();
        let (float_child, quant_child) = (ws.variant(2).unwrap(), ws.variant(3).unwrap());
        assert_eq!(float_child.parent, Some(0));
        assert_eq!(float_child.step, "external{epochs:1,lr:0.01}");
        assert!(float_child.encodings_file.is_none());
        assert_eq!(quant_child.parent, Some(2));
        assert!(quant_child.encodings_file.is_some());
        assert_eq!(quant_child.quantsim, ws.variant(1).unwrap().quantsim);
    }

    // New encodings beside the output are used instead of recalibrating.
    let with_encodings =
        format!("cp {{encodings}} {{workdir}}/output.encodings.json && cp '{float}' {{output}}");
    let doc = run(&ws, external(1, &data, &with_encodings)).unwrap();
    assert_eq!(doc["variant"], 5);
    assert!(doc["encodings"]
        .as_str()
        .unwrap()
        .ends_with("output.encodings.json"));
    assert_eq!(doc["score_before"], doc["score_after"]);

    // A QDQ model back is refused with what to write instead.
    let e = run(&ws, external(1, &data, "cp {input} {output}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("QuantizeLinear/DequantizeLinear"), "{e}");
    assert!(e.contains("output.encodings.json"), "{e}");
    assert_eq!(ws.lock().unwrap().variants().len(), 6);
}
