//! The command line: argument parsing and dispatch. Each command is a thin wrapper over
//! the engine; `--json` prints exactly one JSON document on stdout, everything else
//! (progress, warnings) goes to stderr.

mod adaround;
mod analyze;
mod bias_correct;
mod compress;
mod eval;
mod executor_flags;
mod export;
mod external_trainer;
mod finetune;
mod fix_chain;
mod fixes;
mod input_shape;
mod inspect;
mod jobs;
mod latency;
mod metric_flags;
mod outputs;
mod quant_flags;
mod quantsim;
mod run_job;
mod slurm_jobs;
mod split_flags;
mod suggest;
mod sweep;
mod table;
mod variants;
mod workspace;

#[cfg(test)]
mod slurm_args_tests;

use clap::{Args, Parser, Subcommand};
use qsteer::{Error, Result};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "qsteer",
    version,
    about = "Steer quantization and compression experiments on ONNX models"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The ONNX model (default: the embedded sample model)
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
    /// Colour theme: default, light, mono, or a .toml file (NO_COLOR selects mono)
    #[arg(long)]
    pub theme: Option<String>,
    /// Heavy jobs the app runs at once
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Dataset: a directory of .npy (inputs.npy, labels.npy), one .npz, or an image folder
    #[arg(long, global = true)]
    pub data: Option<PathBuf>,
    /// Per-sample input sizes where the model leaves them open, e.g. images=3x320x320
    /// (repeat for several inputs; default: the dataset's sample shapes)
    #[arg(long = "input-shape", global = true, value_name = "NAME=DIMS",
          value_parser = input_shape::parse_input_shape)]
    pub input_shape: Vec<input_shape::InputShape>,
    /// The value of an input that is the same on every call, e.g. sr=16000: an `If` on it is
    /// folded and its branch inlined (default: the one value every sample of --data holds,
    /// else the value the workspace recorded)
    #[arg(long = "input-value", global = true, value_name = "NAME=VALUE",
          value_parser = qsteer::model::fixed_inputs::parse_input_value)]
    pub input_value: Vec<(String, ndarray::ArrayD<f64>)>,
    /// Workspace directory (default: one per model under the user data directory,
    /// e.g. ~/.local/share/qsteer/workspaces/NAME-HASH)
    #[arg(long, global = true)]
    pub workspace: Option<PathBuf>,
    /// Print one JSON document on stdout instead of tables
    #[arg(long, global = true)]
    pub json: bool,
    /// Progress on stderr: auto (a counter on a terminal), jsonl (every job event as one
    /// JSON line, for programs that follow the job), none
    #[arg(long, global = true, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,
    /// Do not journal the job in logs/jobs.jsonl: the process that submitted it to Slurm
    /// journals it
    #[arg(long, global = true, hide = true)]
    pub no_journal: bool,
    /// Job commands: start the job as a detached process (it outlives this command), print
    /// its job id and return at once; follow it with `qsteer jobs --follow`
    #[arg(long, global = true)]
    pub detach: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Progress {
    Auto,
    Jsonl,
    None,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Layer table (shapes, params, MACs) and totals
    Inspect(inspect::InspectArgs),
    /// Score a model on a dataset: accuracy with labels, fidelity to a reference without
    Eval(eval::EvalArgs),
    /// Quantization simulation: calibrate, fake-quantize weights and activations, score
    Quantsim(quantsim::QuantsimArgs),
    /// Diagnose quantization: scores per mode and the per-layer quant-noise table
    Analyze(analyze::AnalyzeArgs),
    /// Correct biases for quantization (empirical, analytical or hybrid)
    BiasCorrect(bias_correct::BiasCorrectArgs),
    /// Learn up/down rounding of the weights (AdaRound) for quantization
    Adaround(adaround::AdaroundArgs),
    /// Write the QDQ ONNX model and AIMET encodings of a quantized variant (or model + encodings)
    Export(export::ExportArgs),
    /// Compress to a target MAC ratio (greedy per-layer ratios) or at manual ratios (a new variant)
    Compress(compress::CompressArgs),
    /// The SSVD→CP sweep to an overall MAC ratio: candidates as variants, decisions, the pick
    Sweep(sweep::SweepArgs),
    /// Measure a model's or variant's latency (median and p90 of timed runs)
    Latency(latency::LatencyArgs),
    /// The workspace's Slurm jobs; --follow follows those not seen to end (after a restart)
    SlurmJobs(slurm_jobs::SlurmJobsArgs),
    /// The workspace's jobs (journal), with detached ones whichever process started them;
    /// --follow follows the running detached jobs to their end
    Jobs(jobs::JobsArgs),
    /// Fine-tune with backpropagation on the CPU (built-in trainer; a new variant)
    Finetune(finetune::FinetuneArgs),
    /// Fold BatchNormalizations into the Conv/Gemm before them (a new variant)
    FoldBn(fixes::FoldBnArgs),
    /// Cross-layer equalization with high-bias absorption (a new variant)
    Cle(fixes::CleArgs),
    /// A chain of fixes as one job: --chain fold-bn,cle,bc,quantsim (each step a variant)
    Fix(fix_chain::FixArgs),
    /// Run one serialized job request (a JSON file: version, workspace, job) and print its
    /// JSON document, as the job's own command would
    RunJob(run_job::RunJobArgs),
    /// Look after a workspace: `repair` rebuilds its index from the variant files
    Workspace(workspace::WorkspaceArgs),
    /// Rename, note, tag, untag or delete a variant
    Variants(variants::VariantsArgs),
}

/// Parse arguments and run; returns the process exit code.
pub fn main() -> i32 {
    let parsed = Cli::try_parse().and_then(|c| match (&c.command, &c.model) {
        (None, Some(m)) => suggest::mistyped_subcommand(m).map_or(Ok(c), Err),
        _ => Ok(c),
    });
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("qsteer: error: {e}");
            e.exit_code()
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let runs_no_job = matches!(
        cli.command,
        None | Some(
            Command::Inspect(_)
                | Command::SlurmJobs(_)
                | Command::Jobs(_)
                | Command::RunJob(_)
                | Command::Workspace(_)
                | Command::Variants(_)
        )
    );
    if cli.common.detach && runs_no_job {
        return Err(Error::input(
            "--detach starts a job command's job detached (e.g. qsteer quantsim --detach); \
             this command runs no job",
        ));
    }
    match cli.command {
        Some(Command::Inspect(args)) => inspect::run(args, &cli.common),
        Some(Command::Eval(args)) => eval::run(args, &cli.common),
        Some(Command::Quantsim(args)) => quantsim::run(args, &cli.common),
        Some(Command::Analyze(args)) => analyze::run(args, &cli.common),
        Some(Command::BiasCorrect(args)) => bias_correct::run(args, &cli.common),
        Some(Command::Adaround(args)) => adaround::run(args, &cli.common),
        Some(Command::Export(args)) => export::run(args, &cli.common),
        Some(Command::Compress(args)) => compress::run(args, &cli.common),
        Some(Command::Sweep(args)) => sweep::run(args, &cli.common),
        Some(Command::Latency(args)) => latency::run(args, &cli.common),
        Some(Command::SlurmJobs(args)) => slurm_jobs::run(args, &cli.common),
        Some(Command::Jobs(args)) => jobs::run(args, &cli.common),
        Some(Command::Finetune(args)) => finetune::run(args, &cli.common),
        Some(Command::FoldBn(args)) => fixes::run_fold_bn(args, &cli.common),
        Some(Command::Cle(args)) => fixes::run_cle(args, &cli.common),
        Some(Command::Fix(args)) => fix_chain::run(args, &cli.common),
        Some(Command::RunJob(args)) => run_job::run(args, &cli.common),
        Some(Command::Workspace(args)) => workspace::run(args, &cli.common),
        Some(Command::Variants(args)) => variants::run(args, &cli.common),
        None => {
            let (model, data) = resolve_model(cli.model.as_ref(), cli.common.data.as_ref())?;
            let input_shapes = if cli.common.input_shape.is_empty() {
                None
            } else {
                let m = open_model(&model, &cli.common, data.as_deref())?;
                input_shape::from_flags(&m, &cli.common.input_shape)?
            };
            qsteer::tui::run(qsteer::tui::AppOptions {
                model,
                data,
                input_shapes,
                input_values: cli.common.input_value.iter().cloned().collect(),
                workspace: cli.common.workspace.clone(),
                theme: cli.theme.clone(),
                max_jobs: cli.jobs.max(1),
            })
        }
    }
}

/// The model path the user gave, or the embedded sample (with its dataset directory).
pub(crate) fn resolve_model(
    model: Option<&PathBuf>,
    data: Option<&PathBuf>,
) -> Result<(PathBuf, Option<PathBuf>)> {
    match model {
        Some(m) => Ok((m.clone(), data.cloned())),
        None => {
            let s = qsteer::samples::materialize()?;
            Ok((s.model, Some(data.cloned().unwrap_or(s.data))))
        }
    }
}

pub(crate) fn print_json(value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::runtime(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// A plain number that is not an existing file is a variant id.
pub(crate) fn variant_id(target: &str) -> Option<u32> {
    target
        .parse::<u32>()
        .ok()
        .filter(|_| !std::path::Path::new(target).exists())
}

/// The workspace a variant id refers to: `--workspace DIR`, else the default one of
/// `model` (the embedded sample when none). It must exist.
pub(crate) fn variant_workspace(
    model: Option<&PathBuf>,
    common: &Common,
) -> Result<(PathBuf, qsteer::experiment::Workspace)> {
    let dir = match &common.workspace {
        Some(d) => d.clone(),
        None => {
            let (path, _) = resolve_model(model, None)?;
            let model = open_model(&path, common, common.data.as_deref())?;
            qsteer::experiment::default_workspace_dir(&model_name(&path), &model.content_hash())?
        }
    };
    if !dir.join("workspace.json").is_file() {
        return Err(Error::input(format!(
            "{}: no workspace here; pass --workspace DIR (or --model FILE for its default \
             workspace)",
            dir.display()
        )));
    }
    let ws = qsteer::experiment::Workspace::open(&dir)?;
    Ok((dir, ws))
}

/// The model's file stem, for display and workspace naming.
pub(crate) fn model_name(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

/// Load the user's model as every command opens it: specialised on the inputs whose value
/// is fixed (`--input-value`, else the one value the samples of `data` hold, else the value
/// the `--workspace` recorded) where an `If` branches on them; says so once on stderr.
pub(crate) fn open_model(
    path: &std::path::Path,
    common: &Common,
    data: Option<&std::path::Path>,
) -> Result<qsteer::model::Model> {
    use qsteer::model::fixed_inputs;
    let model = qsteer::model::Model::load(path)?;
    let given = common.input_value.iter().cloned().collect();
    let recorded = common
        .workspace
        .as_ref()
        .filter(|d| d.join("workspace.json").is_file())
        .and_then(|d| qsteer::experiment::Workspace::open(d).ok())
        .and_then(|ws| ws.settings().input_values.clone())
        .map(|text| fixed_inputs::parse_values(&text))
        .transpose()
        .map_err(Error::input)?
        .unwrap_or_default();
    let pinned = input_shape::from_flags(&model, &common.input_shape)?;
    let (model, done) =
        fixed_inputs::specialise_with(model, &given, data, &recorded, pinned.as_deref())?;
    for s in &done {
        eprintln!("note: {}", s.message());
    }
    Ok(model)
}

/// The model's workspace (`--workspace`, or its default one), opened or created, shared the
/// way jobs take it.
pub(crate) fn open_workspace(
    path: &std::path::Path,
    model: &qsteer::model::Model,
    common: &Common,
) -> Result<(
    PathBuf,
    std::sync::Arc<std::sync::Mutex<qsteer::experiment::Workspace>>,
)> {
    let name = model_name(path);
    let dir = match &common.workspace {
        Some(d) => d.clone(),
        None => qsteer::experiment::default_workspace_dir(&name, &model.content_hash())?,
    };
    let mut ws = qsteer::experiment::Workspace::open_or_create(&dir, model, &name)?;
    if let Some(values) = qsteer::model::fixed_inputs::recorded_in(model) {
        ws.set_input_values(Some(values))?;
    }
    workspace::note_unlisted(&ws);
    Ok((dir, std::sync::Arc::new(std::sync::Mutex::new(ws))))
}

/// A workspace shared the way jobs take it.
pub(crate) type SharedWorkspace = std::sync::Arc<std::sync::Mutex<qsteer::experiment::Workspace>>;

/// A shared workspace's lock, taken even if a job panicked while holding it.
pub(crate) fn lock(
    ws: &SharedWorkspace,
) -> std::sync::MutexGuard<'_, qsteer::experiment::Workspace> {
    ws.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run one job headless and wait for it — the one way every command (and `run-job`) runs
/// its job, on whichever executor the job names: its progress on stderr when that is a
/// terminal (every event as a JSON line with `--progress jsonl`), its notes and warnings
/// always; returns the job's outcome.
pub(crate) fn run_job(
    ws: SharedWorkspace,
    job: impl Into<qsteer::jobs::HeadlessJob>,
    common: &Common,
) -> Result<qsteer::jobs::JobOutcome> {
    use std::io::IsTerminal;
    let mode = common.progress;
    let show = mode == Progress::Auto && std::io::stderr().is_terminal();
    let mut job = job.into();
    job.journal = !common.no_journal;
    if common.detach {
        return detach_and_exit(ws, job, common);
    }
    let summary = qsteer::jobs::run_job_blocking(ws, job, event_printer(mode, show));
    if show {
        eprintln!();
    }
    summary
}

/// How a headless front end shows a job's events on stderr: every event as a JSON line
/// (`jsonl`), or a progress counter on a terminal (`show`) and the notes and warnings.
pub(crate) fn event_printer(
    mode: Progress,
    show: bool,
) -> impl FnMut(qsteer::jobs::JobEvent) + Send {
    use qsteer::jobs::JobEvent;
    use std::io::Write;
    move |ev| {
        if mode == Progress::Jsonl {
            if let Ok(line) = serde_json::to_string(&ev) {
                // One write per line: the reader follows a file other writers share.
                let _ = std::io::stderr()
                    .lock()
                    .write_all(format!("{line}\n").as_bytes());
            }
            return;
        }
        match ev {
            JobEvent::Progress {
                done, total, what, ..
            } if show => eprint!("\r{what} {done}/{total}   "),
            JobEvent::Log { line, .. }
                if line.starts_with("note:")
                    || line.starts_with("warning:")
                    || line.starts_with("slurm:") =>
            {
                eprintln!("{line}")
            }
            _ => {}
        }
    }
}

/// `--detach`: start the job as a detached process, print its id (and where to look), and
/// end this process with success — the command's own document belongs to the job's end,
/// which `qsteer jobs --follow` reports. Exits here rather than returning, so no command
/// goes on to print a document for a job that has not run yet.
fn detach_and_exit(
    ws: SharedWorkspace,
    job: qsteer::jobs::HeadlessJob,
    common: &Common,
) -> Result<qsteer::jobs::JobOutcome> {
    use std::io::Write;
    match job.executor {
        qsteer::jobs::Executor::Local | qsteer::jobs::Executor::Detached => {}
        _ => {
            return Err(Error::input(
                "--detach runs the job on this machine; --executor slurm jobs go on without \
                 it (qsteer slurm-jobs)",
            ))
        }
    }
    let dir = lock(&ws).dir().to_path_buf();
    let started = qsteer::jobs::start_detached(ws, job.kind, |_| {})?;
    let e = &started.entry;
    if common.json {
        print_json(&serde_json::json!({
            "job": e.job,
            "detached": true,
            "pid": e.pid,
            "label": e.label,
            "output": started.output.display().to_string(),
            "workspace": dir.display().to_string(),
        }))?;
    } else {
        println!(
            "job #{} ({}) runs detached as pid {}; follow it with: qsteer jobs --follow \
             --workspace {}",
            e.job,
            e.label,
            e.pid,
            dir.display()
        );
    }
    let _ = std::io::stdout().flush();
    std::process::exit(0)
}

/// A job's summary with the `model` key: the model file the command started from.
pub(crate) fn with_model(
    mut summary: serde_json::Value,
    model: &std::path::Path,
) -> serde_json::Value {
    if let Some(obj) = summary.as_object_mut() {
        obj.insert(
            "model".into(),
            serde_json::json!(model.display().to_string()),
        );
    }
    summary
}

/// The model file of variant `id` as recorded in the workspace.
pub(crate) fn variant_path(ws: &SharedWorkspace, id: u32) -> Result<PathBuf> {
    let ws = lock(ws);
    let v = ws
        .variant(id)
        .ok_or_else(|| Error::runtime(format!("variant {id} was not recorded")))?;
    Ok(ws.model_path(v))
}

/// What a command that makes a child variant starts from: a variant of a workspace.
pub(crate) struct Target {
    /// The variant's model file.
    pub model: PathBuf,
    /// `--data`, or the sample data when the embedded sample is meant.
    pub data: Option<PathBuf>,
    pub workspace: std::sync::Arc<std::sync::Mutex<qsteer::experiment::Workspace>>,
    pub variant: u32,
}

/// `VARIANT_OR_MODEL`: a variant id of the workspace (`--workspace`, or the default one of
/// `model`, the embedded sample when none), a variant's own model file in its workspace, or
/// an ONNX file (its workspace's base variant); nothing: the embedded sample.
pub(crate) fn resolve_target(
    target: Option<&str>,
    model: Option<&PathBuf>,
    common: &Common,
) -> Result<Target> {
    if let Some(id) = target.and_then(variant_id) {
        let (dir, ws) = variant_workspace(model, common)?;
        let v = ws.variant(id).ok_or_else(|| {
            Error::input(format!(
                "{}: no variant {id} (the workspace has {})",
                dir.display(),
                ws.variants().len()
            ))
        })?;
        let (_, data) = resolve_model(model, common.data.as_ref())?;
        return Ok(Target {
            model: ws.model_path(v),
            data,
            workspace: std::sync::Arc::new(std::sync::Mutex::new(ws)),
            variant: id,
        });
    }
    let (path, data) = resolve_model(target.map(PathBuf::from).as_ref(), common.data.as_ref())?;
    if let Some((ws, id)) = variant_file_workspace(&path)? {
        return Ok(Target {
            model: path,
            data,
            workspace: std::sync::Arc::new(std::sync::Mutex::new(ws)),
            variant: id,
        });
    }
    let model = open_model(&path, common, data.as_deref())?;
    let (_, workspace) = open_workspace(&path, &model, common)?;
    Ok(Target {
        model: path,
        data,
        workspace,
        variant: 0,
    })
}

/// A model file that is a variant's own (`<workspace>/variants/<id>.onnx`): that
/// workspace and id.
fn variant_file_workspace(
    path: &std::path::Path,
) -> Result<Option<(qsteer::experiment::Workspace, u32)>> {
    let Ok(file) = std::fs::canonicalize(path) else {
        return Ok(None);
    };
    let Some(dir) = file
        .parent()
        .filter(|d| d.ends_with("variants"))
        .and_then(|d| d.parent())
    else {
        return Ok(None);
    };
    if !dir.join("workspace.json").is_file() {
        return Ok(None);
    }
    let ws = qsteer::experiment::Workspace::open(dir)?;
    let id = ws
        .variants()
        .iter()
        .find(|v| std::fs::canonicalize(ws.model_path(v)).ok().as_ref() == Some(&file))
        .map(|v| v.id);
    Ok(id.map(|id| (ws, id)))
}

/// The end of a command whose job made a child variant: copy its model to `--out`, name
/// the starting model, print the JSON document or `table`.
pub(crate) fn finish_child_job(
    mut summary: serde_json::Value,
    out: Option<&PathBuf>,
    model: &std::path::Path,
    common: &Common,
    table: fn(&serde_json::Value),
) -> Result<()> {
    if let Some(out) = out {
        let child = PathBuf::from(summary["output"].as_str().unwrap_or_default());
        let bytes = std::fs::read(&child).map_err(|e| Error::io(&child, e))?;
        qsteer::fsutil::write_atomic(out, &bytes)?;
        summary["variant_model"] = summary["output"].clone();
        summary["output"] = serde_json::json!(out.display().to_string());
    }
    summary["model"] = serde_json::json!(model.display().to_string());
    if common.json {
        return print_json(&summary);
    }
    table(&summary);
    Ok(())
}
