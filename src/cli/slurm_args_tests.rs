//! The executor flags: Slurm flags need `--executor slurm`, `--save-slurm` keeps them as
//! the workspace's defaults.

use super::{compress, Cli, Command};
use clap::Parser;
use qsteer::experiment::Workspace;
use qsteer::model::Model;
use std::path::{Path, PathBuf};

fn workspace(dir: &Path) -> PathBuf {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/mbv2_digits.onnx");
    let model = Model::load(&sample).unwrap();
    let ws_dir = dir.join("ws");
    let mut ws = Workspace::open_or_create(&ws_dir, &model, "mbv2_digits").unwrap();
    ws.add_variant(0, "child", &model).unwrap();
    ws_dir
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
