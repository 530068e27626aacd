//! qsteer against ONNX Runtime on the acceptance zoo (tests/zoo), issue #20's yardstick:
//! per model, the same first N samples one per call (batch 1) through
//!
//! - qsteer's FP32 plan, on 1 and 2 worker threads (`RunOptions::threads`, as `eval` runs),
//! - qsteer's simulated W8A8 model (default quantsim settings, calibrated on a few samples),
//! - ONNX Runtime (the zoo venv's, default graph optimisations) with 1 and 2 intra-op threads,
//!
//! in rounds that interleave all of them, so load from other processes hits each alike; the
//! medians give the ratios FP32 / ORT at 1 and 2 threads and simulation / own FP32.
//!
//! ```sh
//! cargo bench --profile dev --bench zoo_speed                 # the default few models
//! cargo bench --profile dev --bench zoo_speed -- --all        # every zoo model
//! cargo bench --profile dev --bench zoo_speed -- --only yolov8n_nudenet,ppocr_cls_v2 --profile
//! ```
//!
//! `--compare` also times, interleaved, the plans as they were before issue #20's changes
//! (no plan rewrites, fake-quant chains unfused) on one thread and prints before → after.
//! `--profile` also prints, per model, the op kinds qsteer's FP32 and simulated plans spend
//! their time in and ONNX Runtime's per-op-type times (its own profiler). Environment:
//! `QSTEER_ZOO_CACHE` (default ~/.cache/qsteer-zoo), `QSTEER_ZOO_VENV` (target/zoo-venv),
//! `QSTEER_ZOO_SPEED_SAMPLES` (16), `QSTEER_ZOO_SPEED_ROUNDS` (5), `QSTEER_ZOO_SPEED_ALL=1`
//! as `--all`. Without the cache or the venv it says so and exits 0.

use qsteer::cancel::CancelToken;
use qsteer::data::{load_dataset, Dataset};
use qsteer::experiment::evaluate::sample_shapes;
use qsteer::model::Model;
use qsteer::quant::simulate::{prepare, simulate, QuantsimRequest, QuantsimSettings};
use qsteer::runtime::{profile_compiled, CompiledModel, OpProfile, RunOptions};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

/// Quick by default: the classifiers and a YOLO, the classes issue #20 measured worst.
const DEFAULT_MODELS: [&str; 3] = ["ppocr_cls_v2", "lcnet_orientation", "yolov8n_nudenet"];
const CALIBRATION_SIZE: usize = 8;
const THREADS: [usize; 2] = [1, 2];

struct Options {
    models: Vec<String>,
    all: bool,
    profile: bool,
    compare: bool,
    samples: usize,
    rounds: usize,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --benches` runs every bench once with --test (or without --bench): keep it short.
    let smoke = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(str::to_string).collect::<Vec<_>>());
    let all = args.iter().any(|a| a == "--all") || std::env::var("QSTEER_ZOO_SPEED_ALL").is_ok();
    Options {
        models: only.unwrap_or_else(|| DEFAULT_MODELS.iter().map(|s| s.to_string()).collect()),
        all,
        profile: args.iter().any(|a| a == "--profile"),
        compare: args.iter().any(|a| a == "--compare"),
        samples: if smoke {
            2
        } else {
            env_usize("QSTEER_ZOO_SPEED_SAMPLES", 16)
        },
        rounds: if smoke {
            1
        } else {
            env_usize("QSTEER_ZOO_SPEED_ROUNDS", 5)
        },
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cache_dir() -> PathBuf {
    std::env::var_os("QSTEER_ZOO_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/qsteer-zoo")
        })
}

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("QSTEER_ZOO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/zoo-venv"));
    let venv = if venv.is_absolute() {
        venv
    } else {
        root().join(venv)
    };
    venv.join("bin/python")
}

/// ONNX Runtime in the zoo venv, serving one model (benches/zoo_speed_ort.py).
struct Ort {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Ort {
    fn start(python: &Path, cache: &Path, id: &str, samples: usize) -> Result<Ort, String> {
        let mut child = Command::new(python)
            .arg(root().join("benches/zoo_speed_ort.py"))
            .arg(root().join("tests/zoo"))
            .arg(cache)
            .arg(id)
            .arg(samples.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", python.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Ort {
            child,
            stdin,
            stdout,
        })
    }

    fn ask(&mut self, command: &str) -> Result<String, String> {
        writeln!(self.stdin, "{command}").map_err(|e| format!("ORT worker: {e}"))?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("ORT worker: {e}"))?;
        match line.trim_end().split_once(' ') {
            Some(("ok", rest)) => Ok(rest.to_string()),
            Some(("err", rest)) => Err(rest.to_string()),
            _ => Err(format!("ORT worker ended ({:?})", line.trim_end())),
        }
    }

    fn seconds(&mut self, threads: usize) -> Result<f64, String> {
        self.ask(&format!("time {threads}"))?
            .parse()
            .map_err(|e| format!("ORT worker: {e}"))
    }
}

impl Drop for Ort {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run_seconds(compiled: &CompiledModel, data: &Dataset, threads: usize) -> f64 {
    let options = RunOptions {
        batch_size: 1,
        threads,
    };
    let start = Instant::now();
    compiled
        .run_dataset(data, options, &CancelToken::new(), &|_, _| {})
        .expect("run");
    start.elapsed().as_secs_f64()
}

/// Median ms per sample of each configuration, in `THREADS` order.
#[derive(Default)]
struct Figures {
    fp32: Vec<f64>,
    sim: Vec<f64>,
    ort: Vec<Option<f64>>,
    /// `--compare`, one thread: FP32 and sim before #20's changes.
    before: Option<(f64, f64)>,
}

struct Subject {
    id: String,
    data: Dataset,
    fp32: CompiledModel,
    sim: CompiledModel,
    /// `--compare`: tract's plans as they were before #20 — no plan rewrites, and the
    /// simulation's fake-quant chains left unfused (their intermediate values captured).
    before: Option<(CompiledModel, CompiledModel)>,
}

fn model_file(cache: &Path, entry: &Value) -> Option<PathBuf> {
    let id = entry["id"].as_str()?;
    let name = Path::new(entry["path"].as_str()?).file_name()?;
    Some(cache.join("models").join(id).join(name))
}

fn prepare_subject(
    cache: &Path,
    entry: &Value,
    samples: usize,
    compare: bool,
) -> Result<Subject, String> {
    let id = entry["id"].as_str().unwrap_or("?").to_string();
    let path = model_file(cache, entry).ok_or("models.json entry without path")?;
    let data_dir = cache.join("data").join(&id);
    let model = Model::load(&path).map_err(|e| e.to_string())?;
    let all = load_dataset(&data_dir).map_err(|e| e.to_string())?;
    let data = all.subset(&(0..samples.min(all.len())).collect::<Vec<_>>());
    let shapes = sample_shapes(&model, &data).map_err(|e| e.to_string())?;
    let fp32 = CompiledModel::compile(&model, &shapes, 1, &[]).map_err(|e| e.to_string())?;
    let req = QuantsimRequest {
        data: data_dir,
        calibration_size: CALIBRATION_SIZE,
        seed: 0,
        settings: QuantsimSettings::default(),
        options: RunOptions::default(),
        metric: Default::default(),
    };
    let no_progress = |_: &str, _: usize, _: usize| {};
    let prepared = prepare(&model, &req, true, &CancelToken::new(), &no_progress)
        .map_err(|e| format!("quantsim: {e}"))?;
    let sim = simulate(&model, &prepared, &req.settings).map_err(|e| format!("quantsim: {e}"))?;
    let before = if compare {
        let scaled: Vec<String> = sim
            .model
            .graph()
            .node
            .iter()
            .filter(|n| n.op_type == "Round")
            .map(|n| n.input[0].clone())
            .collect();
        let fp32 = CompiledModel::compile_with(&model, &shapes, 1, &[], false);
        let chains = CompiledModel::compile_with(&sim.model, &shapes, 1, &scaled, false);
        Some((
            fp32.map_err(|e| e.to_string())?,
            chains.map_err(|e| e.to_string())?,
        ))
    } else {
        None
    };
    let sim = CompiledModel::compile(&sim.model, &shapes, 1, &[]).map_err(|e| e.to_string())?;
    Ok(Subject {
        id,
        data,
        fp32,
        sim,
        before,
    })
}

fn measure(s: &Subject, ort: &mut Option<Ort>, rounds: usize) -> Figures {
    let n = s.data.len() as f64;
    let per_sample = |seconds: f64| seconds * 1e3 / n;
    // Warm-up: each plan once, ORT's sessions are warmed by the worker.
    run_seconds(&s.fp32, &s.data, 1);
    run_seconds(&s.sim, &s.data, 1);
    let mut fp32 = vec![Vec::new(); THREADS.len()];
    let mut sim = vec![Vec::new(); THREADS.len()];
    let mut orts = vec![Vec::new(); THREADS.len()];
    let (mut fp32_before, mut sim_before) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        if let Some((f, q)) = &s.before {
            fp32_before.push(per_sample(run_seconds(f, &s.data, 1)));
            sim_before.push(per_sample(run_seconds(q, &s.data, 1)));
        }
        for (k, &threads) in THREADS.iter().enumerate() {
            fp32[k].push(per_sample(run_seconds(&s.fp32, &s.data, threads)));
            if let Some(o) = ort.as_mut() {
                match o.seconds(threads) {
                    Ok(t) => orts[k].push(per_sample(t)),
                    Err(e) => {
                        eprintln!("{}: ONNX Runtime failed ({e}); without it", s.id);
                        *ort = None;
                    }
                }
            }
            sim[k].push(per_sample(run_seconds(&s.sim, &s.data, threads)));
        }
    }
    Figures {
        fp32: fp32.into_iter().map(median).collect(),
        sim: sim.into_iter().map(median).collect(),
        ort: orts
            .into_iter()
            .map(|v| (!v.is_empty()).then(|| median(v)))
            .collect(),
        before: (!fp32_before.is_empty()).then(|| (median(fp32_before), median(sim_before))),
    }
}

fn print_profile(label: &str, p: &OpProfile) {
    println!("  {label}: {:.2} ms per sample in the nodes", p.total_ms);
    for op in p.by_op.iter().take(8) {
        println!(
            "    {:>5.1} %  {:>7.3} ms  {:>4} × {}",
            op.share * 100.0,
            op.ms,
            op.nodes,
            op.name
        );
    }
}

fn profile(s: &Subject, ort: &mut Option<Ort>) {
    let inputs = s.data.gather(&[0]).expect("sample 0");
    let names: Vec<String> = s.fp32.inputs().iter().map(|i| i.name.clone()).collect();
    let order = s.data.model_order(&names).expect("inputs");
    let views: Vec<_> = order.iter().map(|&i| inputs[i].view()).collect();
    println!("{}: per-op profile (batch 1, one thread, 10 runs)", s.id);
    for (label, plan) in [("qsteer FP32", &s.fp32), ("qsteer W8A8 sim", &s.sim)] {
        match profile_compiled(plan, &views, 10, 5, &CancelToken::new()) {
            Ok(p) => print_profile(label, &p),
            Err(e) => println!("  {label}: {e}"),
        }
    }
    if let Some(o) = ort.as_mut() {
        match o.ask("profile 1") {
            Ok(json) => {
                let rows: Vec<Value> = serde_json::from_str(&json).unwrap_or_default();
                let total: f64 = rows.iter().filter_map(|r| r["ms"].as_f64()).sum();
                println!("  ONNX Runtime: {total:.2} ms per sample in the kernels");
                for r in rows.iter().take(8) {
                    let ms = r["ms"].as_f64().unwrap_or(0.0);
                    println!(
                        "    {:>5.1} %  {:>7.3} ms  {:>4} × {}",
                        100.0 * ms / total.max(1e-12),
                        ms,
                        r["calls_per_sample"].as_f64().unwrap_or(0.0),
                        r["op"].as_str().unwrap_or("?")
                    );
                }
            }
            Err(e) => println!("  ONNX Runtime: {e}"),
        }
    }
}

fn ratio(a: f64, b: Option<f64>) -> String {
    b.map_or("—".into(), |b| format!("{:.2}×", a / b))
}

fn main() {
    let opts = options();
    let cache = cache_dir();
    let python = venv_python();
    let models_json = root().join("tests/zoo/models.json");
    if !cache.join("models").is_dir() {
        println!(
            "zoo_speed: the zoo cache is not present at {} (run tests/zoo/fetch.sh); skipping",
            cache.display()
        );
        return;
    }
    if !python.is_file() {
        println!(
            "zoo_speed: the zoo venv is not present ({} missing; run tests/zoo/venv.sh); skipping",
            python.display()
        );
        return;
    }
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(&models_json).expect("tests/zoo/models.json"),
    )
    .expect("models.json is JSON");
    let entries: Vec<&Value> = doc["models"]
        .as_array()
        .expect("models.json: models")
        .iter()
        .filter(|e| {
            let id = e["id"].as_str().unwrap_or("");
            opts.all || opts.models.iter().any(|m| m == id)
        })
        .collect();
    println!(
        "zoo_speed: {} model(s), first {} samples, batch 1, medians of {} interleaved rounds; \
         ms per sample; qsteer = this build's profile, threads = qsteer workers / ORT intra-op",
        entries.len(),
        opts.samples,
        opts.rounds
    );
    let mut rows = Vec::new();
    for entry in entries {
        let id = entry["id"].as_str().unwrap_or("?");
        let started = Instant::now();
        let subject = match prepare_subject(&cache, entry, opts.samples, opts.compare) {
            Ok(s) => s,
            Err(e) => {
                println!("{id}: skipped ({e})");
                continue;
            }
        };
        let mut ort = match Ort::start(&python, &cache, id, opts.samples) {
            Ok(o) => Some(o),
            Err(e) => {
                println!("{id}: ONNX Runtime not started ({e})");
                None
            }
        };
        if opts.profile {
            profile(&subject, &mut ort);
        }
        let f = measure(&subject, &mut ort, opts.rounds);
        println!(
            "{id}: fp32 {:.2} / {:.2} ms, sim {:.2} / {:.2} ms, ORT {} / {} ms (1 / 2 threads; {:.0} s)",
            f.fp32[0],
            f.fp32[1],
            f.sim[0],
            f.sim[1],
            f.ort[0].map_or("—".into(), |v| format!("{v:.2}")),
            f.ort[1].map_or("—".into(), |v| format!("{v:.2}")),
            started.elapsed().as_secs_f64()
        );
        if let Some((f0, q0)) = f.before {
            println!(
                "{id}: before → after, 1 thread: fp32 {f0:.2} → {:.2} ms ({:.2}×), sim {q0:.2} → \
                 {:.2} ms ({:.2}×); sim / FP32 {:.2}× → {:.2}×",
                f.fp32[0],
                f0 / f.fp32[0],
                f.sim[0],
                q0 / f.sim[0],
                q0 / f0,
                f.sim[0] / f.fp32[0]
            );
        }
        rows.push((id.to_string(), f));
    }
    println!();
    println!("| model | FP32 / ORT, 1 thread | FP32 / ORT, 2 threads | sim / FP32, 1 thread | sim / FP32, 2 threads |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (id, f) in &rows {
        println!(
            "| {id} | {} | {} | {:.2}× | {:.2}× |",
            ratio(f.fp32[0], f.ort[0]),
            ratio(f.fp32[1], f.ort[1]),
            f.sim[0] / f.fp32[0],
            f.sim[1] / f.fp32[1]
        );
    }
    println!("(issue #20's targets: FP32 / ORT ≤ 1.25×, sim / FP32 ≤ 1.2×)");
}
