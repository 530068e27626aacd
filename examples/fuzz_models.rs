//! The long run of the structure-aware model fuzzer (issue #22; the short, seeded run is
//! `tests/integration/fuzz.rs`, which shares the mutants in `tests/integration/fuzz/mutants.rs`).
//!
//!     cargo run --release --example fuzz_models -- --seed 7 --count 5000 [--out fuzz-crashes]
//!
//! Mutants run in a child process (this program with `--child`), in batches; the child says
//! which case it starts before starting it. When the child dies (a signal: SIGSEGV, an
//! abort, a stack overflow), panics out, or a case runs longer than `--timeout` seconds,
//! the case is saved to the output directory as `seed-S-case-I.onnx` with a `.txt` saying
//! what was mutated and how it ended, and the run goes on with the next case. Replay a saved
//! case in this process: `--replay FILE`. Exit status 1 if anything was saved.

#[path = "../tests/integration/fuzz/mutants.rs"]
mod mutants;

use mutants::{exercise, mutant, sources};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Args {
    seed: u64,
    count: u64,
    from: u64,
    out: PathBuf,
    timeout: u64,
    child: bool,
    replay: Option<PathBuf>,
}

fn parse() -> Args {
    let mut a = Args {
        seed: 1,
        count: 1000,
        from: 0,
        out: PathBuf::from("fuzz-crashes"),
        timeout: 60,
        child: false,
        replay: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let num = |v: String| {
            v.parse::<u64>()
                .unwrap_or_else(|_| usage(&format!("bad number {v}")))
        };
        match flag.as_str() {
            "--seed" => a.seed = num(value()),
            "--count" => a.count = num(value()),
            "--from" => a.from = num(value()),
            "--timeout" => a.timeout = num(value()),
            "--out" => a.out = PathBuf::from(value()),
            "--replay" => a.replay = Some(PathBuf::from(value())),
            "--child" => a.child = true,
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    a
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("fuzz_models: {msg}");
    }
    eprintln!(
        "usage: fuzz_models [--seed S] [--count N] [--from I] [--out DIR] [--timeout SECS]\n       \
         fuzz_models --replay FILE.onnx"
    );
    std::process::exit(2)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn main() {
    let args = parse();
    if let Some(path) = &args.replay {
        let bytes =
            std::fs::read(path).unwrap_or_else(|e| usage(&format!("{}: {e}", path.display())));
        // the per-sample shape the file declares (the sources declare all but the batch)
        let sample: Vec<usize> = qsteer::model::Model::from_bytes(&bytes, "replay")
            .ok()
            .and_then(|m| {
                m.inputs()
                    .first()
                    .and_then(|i| qsteer::model::shapes::declared_dims(i))
            })
            .map(|d| d.iter().skip(1).map(|v| v.unwrap_or(16)).collect())
            .unwrap_or_else(|| vec![1, 16, 16]);
        let outcome = exercise(&bytes, &path.display().to_string(), &sample, true);
        println!("{outcome:?}");
        return;
    }
    if args.child {
        child(&args);
        return;
    }
    std::process::exit(parent(&args));
}

/// Run cases `from..count`, announcing each on stdout before running it.
fn child(args: &Args) {
    let sources = sources(&root());
    let out = std::io::stdout();
    for index in args.from..args.count {
        let m = mutant(&sources, args.seed, index);
        let name = format!("mutant-{index}.onnx");
        writeln!(out.lock(), "start {index}").unwrap();
        out.lock().flush().unwrap();
        let outcome = exercise(&m.bytes, &name, &sources[m.source].sample_shape, true);
        if let Some(e) = outcome.error() {
            if !e.contains(&name) {
                writeln!(out.lock(), "unnamed {index} {}", e.replace('\n', " ")).unwrap();
            }
        }
        writeln!(out.lock(), "done {index} {}", outcome.label()).unwrap();
        out.lock().flush().unwrap();
    }
}

fn parent(args: &Args) -> i32 {
    let sources = sources(&root());
    let exe = std::env::current_exe().expect("own path");
    let started = Instant::now();
    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    let mut saved = 0;
    let mut next = args.from;
    while next < args.count {
        let mut child = Command::new(&exe)
            .args(["--child", "--seed", &args.seed.to_string()])
            .args([
                "--from",
                &next.to_string(),
                "--count",
                &args.count.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the child starts");
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let errs = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        let mut current: Option<u64> = None;
        let mut problem: Option<String> = None;
        loop {
            match rx.recv_timeout(Duration::from_secs(args.timeout)) {
                Ok(line) => {
                    let mut parts = line.splitn(3, ' ');
                    let (what, idx, rest) = (parts.next(), parts.next(), parts.next());
                    let idx: u64 = idx.and_then(|i| i.parse().ok()).unwrap_or(0);
                    match what {
                        Some("start") => current = Some(idx),
                        Some("done") => {
                            *tally.entry(rest.unwrap_or("").to_string()).or_default() += 1;
                            current = None;
                            next = idx + 1;
                            if next.is_multiple_of(500) {
                                eprintln!(
                                    "{next} cases, {:.0} s: {tally:?}",
                                    started.elapsed().as_secs_f64()
                                );
                            }
                        }
                        Some("unnamed") => {
                            saved += save(
                                args,
                                &sources,
                                idx,
                                &format!("error does not name the model: {}", rest.unwrap_or("")),
                            );
                        }
                        _ => {}
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    problem = Some(format!("no result in {} s (hang)", args.timeout));
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = child.wait().expect("wait for the child");
        let stderr = errs.join().unwrap_or_default();
        if let Some(index) = current {
            let why = problem.unwrap_or_else(|| format!("the child died: {}", describe(status)));
            let tail: String = stderr
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            saved += save(args, &sources, index, &format!("{why}\n{tail}"));
            *tally.entry("crash".into()).or_default() += 1;
            next = index + 1;
        } else if !status.success() {
            eprintln!(
                "the child failed between cases: {}\n{stderr}",
                describe(status)
            );
            return 2;
        }
    }
    println!(
        "seed {}: {} cases in {:.0} s: {tally:?}; {saved} saved in {}",
        args.seed,
        args.count - args.from,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    i32::from(saved > 0)
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (_, Some(11)) => "SIGSEGV".into(),
        (_, Some(6)) => "SIGABRT (abort)".into(),
        (_, Some(s)) => format!("signal {s}"),
        (Some(c), _) => format!("exit {c}"),
        _ => "unknown".into(),
    }
}

fn save(args: &Args, sources: &[mutants::Source], index: u64, why: &str) -> u32 {
    let m = mutant(sources, args.seed, index);
    std::fs::create_dir_all(&args.out).expect("create the output directory");
    let base: &Path = &args.out;
    let stem = format!("seed-{}-case-{index}", args.seed);
    std::fs::write(base.join(format!("{stem}.onnx")), &m.bytes).expect("save the case");
    let text = format!(
        "source: {}\nedits:\n  {}\n{why}\nreplay: cargo run --release --example fuzz_models -- --replay {}\n",
        sources[m.source].name,
        m.edits.join("\n  "),
        base.join(format!("{stem}.onnx")).display()
    );
    std::fs::write(base.join(format!("{stem}.txt")), &text).expect("save the case");
    eprintln!(
        "case {index}: {why}",
        why = why.lines().next().unwrap_or("")
    );
    1
}
