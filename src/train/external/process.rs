//! Running the trainer command: `sh -c` in its own process group (so a cancel stops the
//! whole pipeline, not just the shell), stdout and stderr read line by line as they come
//! and handed to the caller on its own thread, the last lines kept for error messages.

use crate::cancel::CancelToken;
use crate::{Error, Result};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// How many output lines an error shows.
pub const TAIL_LINES: usize = 20;
/// How long a cancelled trainer gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(50);

/// The command line and where it runs.
pub struct TrainerRun<'a> {
    /// A shell command line (a rendered template).
    pub command: &'a str,
    /// The working directory.
    pub workdir: &'a Path,
    pub cancel: &'a CancelToken,
}

/// One line of the trainer's output, without its line ending.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainerLine {
    Stdout(String),
    Stderr(String),
}

impl TrainerLine {
    pub fn text(&self) -> &str {
        match self {
            TrainerLine::Stdout(s) | TrainerLine::Stderr(s) => s,
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainerExit {
    Code(i32),
    Signal(i32),
}

impl TrainerExit {
    pub fn success(self) -> bool {
        self == TrainerExit::Code(0)
    }
}

impl std::fmt::Display for TrainerExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainerExit::Code(c) => write!(f, "exit status {c}"),
            TrainerExit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// A finished command: its exit and its last [`TAIL_LINES`] lines (stdout and stderr in the
/// order they arrived).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerOutcome {
    pub exit: TrainerExit,
    pub tail: Vec<String>,
}

/// Run the command to its end, calling `on_line` for every output line as it arrives. A
/// cancel terminates the command's process group and returns `Error::Cancelled`.
pub fn run_trainer(
    run: &TrainerRun,
    on_line: &mut dyn FnMut(&TrainerLine),
) -> Result<TrainerOutcome> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(run.command)
        .current_dir(run.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::runtime(format!("could not start the trainer with sh: {e}")))?;
    let group = child.id() as i32;
    let (tx, rx) = channel();
    if let Some(out) = child.stdout.take() {
        forward_lines(out, tx.clone(), TrainerLine::Stdout);
    }
    if let Some(err) = child.stderr.take() {
        forward_lines(err, tx, TrainerLine::Stderr);
    }
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let mut take = |line: TrainerLine| {
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.text().to_string());
        on_line(&line);
    };
    let mut streams_open = true;
    let status = loop {
        if run.cancel.is_cancelled() {
            terminate(&mut child, group);
            return Err(Error::Cancelled);
        }
        if streams_open {
            match rx.recv_timeout(POLL) {
                Ok(line) => take(line),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => streams_open = false,
            }
        } else {
            std::thread::sleep(POLL);
        }
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::runtime(format!("waiting for the trainer: {e}")))?
        {
            break status;
        }
    };
    // The shell is done; anything it left running in the background would hold the pipes
    // open forever. What was written before stays readable.
    signal_group(group, libc::SIGKILL);
    for line in rx.iter() {
        take(line);
    }
    let exit = match (status.code(), status.signal()) {
        (Some(code), _) => TrainerExit::Code(code),
        (None, Some(sig)) => TrainerExit::Signal(sig),
        (None, None) => TrainerExit::Code(-1),
    };
    Ok(TrainerOutcome {
        exit,
        tail: tail.into(),
    })
}

/// A thread sending each line of `stream` until it closes; invalid UTF-8 is replaced, not
/// fatal.
fn forward_lines(
    stream: impl Read + Send + 'static,
    tx: Sender<TrainerLine>,
    wrap: fn(String) -> TrainerLine,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf);
                    let line = text.trim_end_matches(['\n', '\r']).to_string();
                    if tx.send(wrap(line)).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// SIGTERM to the whole group, SIGKILL after the grace period, and reap the shell.
fn terminate(child: &mut Child, group: i32) {
    signal_group(group, libc::SIGTERM);
    let deadline = Instant::now() + TERM_GRACE;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(POLL);
    }
    // Children of the shell may outlive it after SIGTERM; the group goes in any case.
    signal_group(group, libc::SIGKILL);
    let _ = child.wait();
}

fn signal_group(group: i32, signal: i32) {
    // SAFETY: killpg only sends a signal; a group that is already gone is ESRCH, ignored.
    unsafe {
        libc::killpg(group, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(command: &str, cancel: &CancelToken) -> (Result<TrainerOutcome>, Vec<TrainerLine>) {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = Vec::new();
        let outcome = run_trainer(
            &TrainerRun {
                command,
                workdir: dir.path(),
                cancel,
            },
            &mut |l| lines.push(l.clone()),
        );
        (outcome, lines)
    }

    #[test]
    fn both_streams_arrive_line_by_line_and_the_exit_is_reported() {
        let (outcome, lines) = run(
            "echo one; echo two >&2; printf 'no newline'; exit 3",
            &CancelToken::new(),
        );
        let outcome = outcome.unwrap();
        assert_eq!(outcome.exit, TrainerExit::Code(3));
        assert!(!outcome.exit.success());
        assert!(lines.contains(&TrainerLine::Stdout("one".into())));
        assert!(lines.contains(&TrainerLine::Stderr("two".into())));
        assert!(lines.contains(&TrainerLine::Stdout("no newline".into())));
        assert_eq!(outcome.tail.len(), 3);
    }

    #[test]
    fn the_tail_keeps_the_last_lines_and_a_signal_is_reported() {
        let (outcome, lines) = run("seq 1 50; kill -9 $$", &CancelToken::new());
        let outcome = outcome.unwrap();
        assert_eq!(outcome.exit, TrainerExit::Signal(9));
        assert_eq!(lines.len(), 50);
        assert_eq!(outcome.tail.len(), TAIL_LINES);
        assert_eq!(outcome.tail.last().unwrap(), "50");
        assert_eq!(outcome.tail[0], "31");
    }

    #[test]
    fn a_background_leftover_does_not_hang_the_run() {
        let started = Instant::now();
        let (outcome, _) = run("sleep 30 & echo done", &CancelToken::new());
        assert!(outcome.unwrap().exit.success());
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}
