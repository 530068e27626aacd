//! One end-to-end run of the real binary in a real terminal (tmux): open the sample model,
//! start an evaluation from the dialog, see it finish in the jobs pane, mark A and B,
//! open the compare view, and quit. Polls the screen with a generous deadline: it checks
//! that things happen, not how fast.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub(crate) struct Session {
    name: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn screen(s: &Session) -> String {
    tmux(&["capture-pane", "-p", "-t", &s.name])
}

pub(crate) fn keys(s: &Session, k: &[&str]) {
    let mut args = vec!["send-keys", "-t", &s.name];
    args.extend_from_slice(k);
    tmux(&args);
    std::thread::sleep(Duration::from_millis(150));
}

pub(crate) fn wait_for(s: &Session, what: &str, deadline: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = screen(s);
        if text.contains(what) {
            return text;
        }
        assert!(
            start.elapsed() < deadline,
            "'{what}' never appeared; screen:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The app on the embedded sample in a 120×36 tmux session, with its workspace in `dir`;
/// None when tmux is missing.
fn start(dir: &std::path::Path, tag: &str) -> Option<Session> {
    let bin = env!("CARGO_BIN_EXE_qsteer");
    let cmd = format!(
        "QSTEER_DATA_DIR={} {bin} --workspace {} ; sleep 30",
        dir.join("data").display(),
        dir.join("ws").display()
    );
    start_cmd(tag, 120, 36, &cmd)
}

/// A tmux session of `width`×`height` running `cmd`; None when tmux is missing.
pub(crate) fn start_cmd(tag: &str, width: u16, height: u16, cmd: &str) -> Option<Session> {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("tmux is not installed; .ci/run installs it");
        return None;
    }
    let name = format!("qsteer-e2e-{tag}-{}", std::process::id());
    let (w, h) = (width.to_string(), height.to_string());
    let status = Command::new("tmux")
        .args(["new-session", "-d", "-s", &name, "-x", &w, "-y", &h, cmd])
        .status()
        .expect("tmux starts");
    assert!(status.success());
    Some(Session { name })
}

/// Quit with `q` and wait until the shell's `sleep` is what the pane runs.
pub(crate) fn quit(s: &Session) {
    keys(s, &["q"]);
    let start = Instant::now();
    loop {
        let cmd = tmux(&[
            "display-message",
            "-p",
            "-t",
            &s.name,
            "#{pane_current_command}",
        ]);
        if cmd.trim() == "sleep" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "app did not quit: {cmd}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn evaluate_mark_compare_quit_in_a_real_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s) = start(dir.path(), "eval") else {
        return;
    };
    wait_for(&s, "Layers · MACs", Duration::from_secs(60));
    keys(&s, &["e"]);
    wait_for(&s, "Evaluate variants", Duration::from_secs(10));
    keys(&s, &["Enter"]);
    let done = wait_for(&s, "✓ #1 evaluate", Duration::from_secs(120));
    keys(&s, &["3", "a", "b", "="]);
    let cmp = wait_for(&s, "disagree", Duration::from_secs(30));
    assert!(cmp.contains("Compare A/B"), "{cmp}");
    wait_for(&s, "0 of 400 samples", Duration::from_secs(30));
    quit(&s);
    let ws = std::fs::read_to_string(dir.path().join("ws/workspace.json")).unwrap();
    assert!(ws.contains("\"accuracy\""), "the result was recorded: {ws}");
    let shown = percent(&recorded_accuracy(dir.path(), 0));
    assert!(
        done.contains(&shown),
        "score {shown} shown in the variants pane:\n{done}"
    );
}

/// The accuracy the workspace recorded for `variant`'s last evaluation.
fn recorded_accuracy(dir: &std::path::Path, variant: usize) -> serde_json::Value {
    let ws: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("ws/workspace.json")).unwrap()).unwrap();
    let v = &ws["variants"][variant];
    let results = v["results"].as_array().unwrap_or_else(|| panic!("{v}"));
    results.last().unwrap()["score"]["accuracy"].clone()
}

/// An accuracy as the variants pane prints it.
fn percent(accuracy: &serde_json::Value) -> String {
    format!("{:.2}%", accuracy.as_f64().unwrap() * 100.0)
}

#[test]
fn quantsim_from_the_dialog_adds_a_variant_in_a_real_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s) = start(dir.path(), "quantsim") else {
        return;
    };
    let first = wait_for(&s, "Layers · MACs", Duration::from_secs(60));
    assert!(first.contains("◆w") && first.contains("◆a"), "{first}");
    keys(&s, &["s"]);
    let dialog = wait_for(&s, "Quantsim", Duration::from_secs(10));
    assert!(
        dialog.contains("Enter runs W8A8 per-tensor tf_enhanced"),
        "{dialog}"
    );
    keys(&s, &["Enter"]);
    wait_for(&s, "✓ #1 quantsim v0", Duration::from_secs(180));
    let tree = wait_for(&s, "W8A8 pt tf_enh", Duration::from_secs(10));
    quit(&s);
    let shown = percent(&recorded_accuracy(dir.path(), 1));
    assert!(tree.contains(&shown), "the child's score {shown}:\n{tree}");
    let ws: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("ws/workspace.json")).unwrap())
            .unwrap();
    let child = &ws["variants"][1];
    assert_eq!(child["parent"], 0, "{ws}");
    assert!(child["encodings_file"].is_string(), "{ws}");
    assert!(dir.path().join("ws/variants/1.encodings.json").exists());
}

/// Jobs outlive the terminal: a quantsim started in the app runs as a detached process, so
/// killing the tmux session (the app gets SIGHUP) leaves it running; the app started again
/// follows it (or finds it finished) under its own id, and its variant is in the tree.
#[test]
fn a_job_outlives_the_killed_terminal_and_the_next_app_shows_its_variant() {
    let dir = tempfile::tempdir().unwrap();
    let Some(first) = start(dir.path(), "detach-a") else {
        return;
    };
    wait_for(&first, "Layers · MACs", Duration::from_secs(60));
    keys(&first, &["s"]);
    wait_for(&first, "Quantsim", Duration::from_secs(10));
    keys(&first, &["Enter"]);
    // The app records the job's process before it shows the job started.
    let ws = dir.path().join("ws");
    let start_wait = Instant::now();
    let job = loop {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(ws.join("workspace.json")).unwrap())
                .unwrap_or_default();
        if let Some(j) = index["detached_jobs"].get(0) {
            break j.clone();
        }
        assert!(start_wait.elapsed() < Duration::from_secs(60), "no job");
        std::thread::sleep(Duration::from_millis(20));
    };
    let outcome = ws
        .join("detached")
        .join(format!("{}.outcome.json", job["stem"].as_str().unwrap()));
    let was_running = !outcome.exists();
    drop(first); // tmux kill-session: the app goes with its terminal
    let pid = job["pid"].as_u64().unwrap();
    eprintln!("the job was running when the terminal went: {was_running}");
    if was_running {
        // The job's process did not go with the terminal.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            Path::new(&format!("/proc/{pid}")).exists() || outcome.exists(),
            "the job died with the terminal"
        );
    }
    let Some(second) = start(dir.path(), "detach-b") else {
        return;
    };
    wait_for(&second, "✓ #1 quantsim v0", Duration::from_secs(180));
    let tree = wait_for(&second, "W8A8 pt tf_enh", Duration::from_secs(10));
    quit(&second);
    let shown = percent(&recorded_accuracy(dir.path(), 1));
    assert!(tree.contains(&shown), "the job's variant {shown}:\n{tree}");
    let journal = std::fs::read_to_string(ws.join("logs/jobs.jsonl")).unwrap();
    assert!(
        !journal.contains("\"interrupted\""),
        "the job was never interrupted:\n{journal}"
    );
    assert!(journal.contains("\"finished\""), "{journal}");
}
