//! The Slurm client tools, each call with a time limit: `sbatch --parsable`, `scontrol
//! show job` (live and recently ended jobs), `sacct -c` (the job-completion record, for
//! jobs scontrol has forgotten) and `scancel`.

use crate::{Error, Result};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A client call that takes longer than this has hung (e.g. slurmctld unreachable).
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `program args`, wait at most [`TOOL_TIMEOUT`]; stdout on success, else an error
/// with its stderr.
fn tool(program: &str, args: &[String]) -> Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::runtime(format!(
                "{program}: cannot run it ({e}); is Slurm's client installed on this machine?"
            ))
        })?;
    // Readers on threads, so a chatty tool cannot block on a full pipe while we wait.
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = child.stdout.take().map(|r| reader(Box::new(r)));
    let err = child.stderr.take().map(|r| reader(Box::new(r)));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::runtime(format!("{program}: {e}")))?
        {
            break status;
        }
        if start.elapsed() > TOOL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::runtime(format!(
                "{program} {} did not answer in {} s; is slurmctld reachable?",
                args.join(" "),
                TOOL_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = |h: Option<std::thread::JoinHandle<String>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    let (stdout, stderr) = (text(out), text(err));
    if status.success() {
        Ok(stdout)
    } else {
        Err(Error::runtime(format!(
            "{program} {}: {}",
            args.join(" "),
            stderr.trim()
        )))
    }
}

/// Whether Slurm's client (`sbatch`) is on the PATH: the app offers the Slurm executor
/// only then.
pub fn client_installed() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("sbatch").is_file()))
}

/// The cluster's partitions (`sinfo`), in its order; the default one's `*` mark dropped.
pub fn partitions() -> Result<Vec<String>> {
    let out = tool("sinfo", &["-h".into(), "-o".into(), "%P".into()])?;
    let mut names: Vec<String> = Vec::new();
    for name in out.lines().map(|l| l.trim().trim_end_matches('*')) {
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// Submit a batch script; the Slurm job id.
pub(crate) fn sbatch(script: &Path, extra_args: &[String]) -> Result<String> {
    let mut args = vec!["--parsable".to_string()];
    args.extend(extra_args.iter().cloned());
    args.push(script.display().to_string());
    let out = tool("sbatch", &args)?;
    // `--parsable` prints `id` or `id;cluster`.
    let id = out.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return Err(Error::runtime(format!(
            "sbatch: unexpected answer '{}' (expected a job id)",
            out.trim()
        )));
    }
    Ok(id)
}

pub(crate) fn scancel(id: &str) -> Result<()> {
    tool("scancel", &[id.to_string()]).map(|_| ())
}

/// The states of an array job's tasks still queued or running (`squeue -r`); empty once
/// every task has ended.
pub(crate) fn array_tasks_left(id: &str) -> Result<Vec<String>> {
    let args = ["-h", "-r", "-j", id, "-o", "%T"].map(String::from);
    match tool("squeue", &args) {
        Ok(text) => Ok(text
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()),
        // Slurm forgot the job: every task has long ended.
        Err(e) if e.to_string().contains("Invalid job id") => Ok(vec![]),
        Err(e) => Err(e),
    }
}

/// A job as Slurm reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct JobInfo {
    /// e.g. `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`, `TIMEOUT`, `NODE_FAIL`
    pub state: String,
    /// `exit:signal`, e.g. `1:0`, `0:15`
    pub exit_code: String,
    /// Empty until the job has a node.
    pub node: String,
    /// Why it waits or ended (`Priority`, `NonZeroExitCode`, …); may be empty.
    pub reason: String,
}

/// Whether a Slurm job state is an end (the job will not run again).
pub(crate) fn state_is_final(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "NODE_FAIL"
            | "OUT_OF_MEMORY"
            | "PREEMPTED"
            | "BOOT_FAIL"
            | "DEADLINE"
    )
}

impl JobInfo {
    pub(crate) fn is_ended(&self) -> bool {
        state_is_final(&self.state)
    }

    pub(crate) fn has_run(&self) -> bool {
        !matches!(self.state.as_str(), "PENDING" | "CONFIGURING" | "")
    }
}

/// The job's state: `scontrol show job` while Slurm keeps the job in memory, else its
/// line in the job-completion record (`sacct -c`). None if neither knows the id (yet).
pub(crate) fn query(id: &str) -> Result<Option<JobInfo>> {
    match tool(
        "scontrol",
        &["show".into(), "job".into(), "-o".into(), id.into()],
    ) {
        Ok(text) => {
            if let Some(info) = parse_scontrol(&text) {
                return Ok(Some(info));
            }
        }
        Err(e) if e.to_string().contains("Invalid job id") => {}
        Err(e) => return Err(e),
    }
    let text = tool(
        "sacct",
        &[
            "-c".into(),
            "-j".into(),
            id.into(),
            "-n".into(),
            "-P".into(),
            "-o".into(),
            "jobid,state,exitcode,nodelist".into(),
        ],
    )?;
    Ok(parse_sacct(&text, id))
}

/// One line of `scontrol show job -o`: space-separated `Key=Value` pairs.
fn parse_scontrol(text: &str) -> Option<JobInfo> {
    let line = text.lines().next()?;
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or("")
            .to_string()
    };
    let state = field("JobState");
    if state.is_empty() {
        return None;
    }
    let node = field("NodeList");
    Some(JobInfo {
        state,
        exit_code: field("ExitCode"),
        node: if node == "(null)" {
            String::new()
        } else {
            node
        },
        reason: Some(field("Reason"))
            .filter(|r| r != "None")
            .unwrap_or_default(),
    })
}

/// `jobid|state|exitcode|nodelist` lines of `sacct -c -n -P`; the last one for `id` (a
/// requeued job has several). sacct writes `CANCELLED by 0`: the first word is the state.
fn parse_sacct(text: &str, id: &str) -> Option<JobInfo> {
    text.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        (f.len() >= 4 && f[0] == id).then(|| JobInfo {
            state: f[1].split_whitespace().next().unwrap_or("").to_string(),
            exit_code: f[2].to_string(),
            node: f[3].to_string(),
            reason: String::new(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scontrol_and_sacct_lines_parse() {
        let line = "JobId=1 JobName=wrap JobState=FAILED Reason=NonZeroExitCode Dependency=(null) \
                    ExitCode=3:0 RunTime=00:00:02 NodeList=localhost BatchHost=localhost";
        let info = parse_scontrol(line).unwrap();
        assert_eq!(info.state, "FAILED");
        assert_eq!(info.exit_code, "3:0");
        assert_eq!(info.node, "localhost");
        assert_eq!(info.reason, "NonZeroExitCode");
        assert!(info.is_ended() && info.has_run());
        let pending =
            parse_scontrol("JobId=2 JobState=PENDING Reason=None NodeList=(null)").unwrap();
        assert_eq!((pending.node.as_str(), pending.reason.as_str()), ("", ""));
        assert!(!pending.is_ended() && !pending.has_run());
        let s = parse_sacct(
            "1|FAILED|3:0|localhost\n7|CANCELLED by 0|0:15|localhost\n",
            "7",
        )
        .unwrap();
        assert_eq!(
            (s.state.as_str(), s.exit_code.as_str()),
            ("CANCELLED", "0:15")
        );
        assert!(parse_sacct("1|FAILED|3:0|localhost\n", "2").is_none());
    }
}
