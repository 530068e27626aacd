//! The Slurm executor's command line for a job, parsed back by this CLI, is the same job:
//! every field of the job kind maps to a flag.

use super::{compress, finetune, Cli, Command};
use clap::Parser;
use qsteer::compress::{LayerRatios, Method};
use qsteer::experiment::Workspace;
use qsteer::jobs::{headless_args, JobKind};
use qsteer::model::Model;
use qsteer::train::{FineTuneSettings, Loss, Optimizer, Schedule, TrainLayers};
use std::path::{Path, PathBuf};

fn workspace(dir: &Path) -> PathBuf {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/mbv2_digits.onnx");
    let model = Model::load(&sample).unwrap();
    let ws_dir = dir.join("ws");
    let mut ws = Workspace::open_or_create(&ws_dir, &model, "mbv2_digits").unwrap();
    ws.add_variant(0, "child", &model).unwrap();
    ws_dir
}

fn parsed_back(kind: &JobKind, ws_dir: &Path) -> JobKind {
    let args = headless_args(kind, ws_dir, &ws_dir.join("slurm"), "job-1", None).unwrap();
    assert!(args.ends_with(&[
        "--json".to_string(),
        "--progress".into(),
        "jsonl".into(),
        "--no-journal".into()
    ]));
    let cli = Cli::try_parse_from(std::iter::once("qsteer".to_string()).chain(args.clone()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(cli.common.no_journal && cli.common.json);
    let job = match &cli.command {
        Some(Command::Compress(a)) => compress::job(a, &cli.common),
        Some(Command::Finetune(a)) => finetune::job(a, &cli.common),
        other => panic!("{other:?}"),
    };
    let (_, back, executor) = job.unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert_eq!(
        executor,
        qsteer::jobs::Executor::Local,
        "the node runs it locally"
    );
    back
}

#[test]
fn compress_and_finetune_jobs_survive_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(dir.path());
    let data = dir.path().join("data dir");
    // `finetune` checks that a training set exists.
    let train = dir.path().join("train dir");
    std::fs::create_dir_all(&train).unwrap();
    let greedy = JobKind::Compress {
        variant: 1,
        data: data.clone(),
        method: Method::ChannelPruning,
        target: Some(0.6180339887498949),
        ratios: None,
        pin: LayerRatios::from([("conv_a".to_string(), 0.3), ("b=c".to_string(), 0.1)]),
        exclude: vec!["head".into(), "stem".into()],
        candidates: 7,
        selection: Some("greedy".into()),
        reconstruct: true,
        calibration_size: 33,
        seed: 5,
        threads: 3,
        metric: None,
    };
    assert_eq!(parsed_back(&greedy, &ws), greedy);
    let manual = JobKind::Compress {
        variant: 0,
        data: data.clone(),
        method: Method::SpatialSvd,
        target: None,
        ratios: Some(LayerRatios::from([("conv".to_string(), 0.25)])),
        pin: LayerRatios::new(),
        exclude: vec![],
        candidates: 10,
        selection: None,
        reconstruct: false,
        calibration_size: 200,
        seed: 0,
        threads: 0,
        metric: None,
    };
    assert_eq!(parsed_back(&manual, &ws), manual);
    let tuned = JobKind::FineTune {
        variant: 1,
        data: data.clone(),
        settings: FineTuneSettings {
            epochs: 3,
            lr: 3e-4,
            schedule: Schedule::Step {
                every: 2,
                gamma: 0.3,
            },
            optimizer: Optimizer::Sgd,
            momentum: 0.8,
            weight_decay: 1e-5,
            batch_size: 16,
            train_layers: TrainLayers::Only(vec!["fc".into(), "conv1".into()]),
            loss: Loss::Distill { temperature: 4.5 },
            early_stop_patience: 2,
            calibration_size: 120,
            seed: 9,
            train_data: Some(train.clone()),
            augment: qsteer::train::Augment {
                shift: 2,
                flip: true,
            },
        },
        threads: 1,
    };
    assert_eq!(parsed_back(&tuned, &ws), tuned);
    let plain = JobKind::FineTune {
        variant: 0,
        data: data.clone(),
        settings: FineTuneSettings::default(),
        threads: 0,
    };
    assert_eq!(parsed_back(&plain, &ws), plain);
    let qat = JobKind::Qat {
        variant: 1,
        data: data.clone(),
        settings: FineTuneSettings {
            train_layers: TrainLayers::Last(2),
            ..FineTuneSettings::default()
        },
        threads: 2,
    };
    assert_eq!(parsed_back(&qat, &ws), qat);
    let frozen = JobKind::FineTune {
        variant: 0,
        data: data.clone(),
        settings: FineTuneSettings {
            train_layers: TrainLayers::Except(vec!["stem".into()]),
            ..FineTuneSettings::default()
        },
        threads: 1,
    };
    assert_eq!(parsed_back(&frozen, &ws), frozen);
    let external = JobKind::ExternalFineTune {
        variant: 1,
        data,
        command: "python3 train.py --in {input} --out {output} --lr {lr}".into(),
        epochs: 4,
        lr: 0.003,
        threads: 1,
    };
    assert_eq!(parsed_back(&external, &ws), external);
}

#[test]
fn slurm_flags_need_the_slurm_executor() {
    let cli =
        Cli::try_parse_from(["qsteer", "finetune", "--data", "d", "--partition", "gpu"]).unwrap();
    let Some(Command::Finetune(a)) = &cli.command else {
        panic!()
    };
    let e = a.executor.executor(&Default::default()).unwrap_err();
    assert!(e.to_string().contains("--executor slurm"), "{e}");
}

#[test]
fn save_slurm_keeps_the_settings_as_the_workspace_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(dir.path());
    let ws_arg = ws.display().to_string();
    let parse = |extra: &[&str]| {
        let mut a = vec![
            "qsteer",
            "compress",
            "0",
            "--workspace",
            &ws_arg,
            "--data",
            "d",
        ];
        a.extend_from_slice(&["--method", "ssvd", "--target", "0.5"]);
        a.extend_from_slice(extra);
        let cli = Cli::try_parse_from(a).unwrap();
        let Some(Command::Compress(args)) = &cli.command else {
            panic!()
        };
        compress::job(args, &cli.common).map(|(_, _, executor)| executor)
    };
    let saved = parse(&[
        "--executor",
        "slurm",
        "--partition",
        "gpu",
        "--cpus",
        "3",
        "--save-slurm",
    ])
    .unwrap();
    let stored = Workspace::open(&ws).unwrap().settings().slurm.clone();
    assert_eq!(stored.partition.as_deref(), Some("gpu"));
    assert_eq!(stored.cpus, Some(3));
    // The next command gets them without the flags, and may override one.
    let next = parse(&["--executor", "slurm", "--cpus", "8"]).unwrap();
    let qsteer::jobs::Executor::Slurm(s) = next else {
        panic!("{next:?}")
    };
    assert_eq!((s.partition.as_deref(), s.cpus), (Some("gpu"), Some(8)));
    assert_ne!(saved, qsteer::jobs::Executor::Local);
    let e = parse(&["--save-slurm"]).unwrap_err();
    assert!(e.to_string().contains("--executor slurm"), "{e}");
}
