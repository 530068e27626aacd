//! The detached job's process: started in a session of its own (no controlling terminal,
//! so a hangup of the app's terminal never reaches it), and told apart from any later
//! process that reuses its pid by its start time and the boot it belongs to.

use crate::{Error, Result};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Who a process is: enough to tell whether the process seen later is the same one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub pid: u32,
    /// Clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
    pub boot_id: String,
}

/// Start `binary args…` as a session leader: stdin from /dev/null, stdout and stderr
/// appended to `out`. Its pid is then also its process group id.
pub(crate) fn spawn_session(binary: &Path, args: &[String], out: &Path) -> Result<Child> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(out)
        .map_err(|e| Error::io(out, e))?;
    let err = log.try_clone().map_err(|e| Error::io(out, e))?;
    let mut cmd = Command::new(binary);
    cmd.args(args).stdin(Stdio::null()).stdout(log).stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| {
        Error::runtime(format!(
            "cannot start the detached job ({}): {e}",
            binary.display()
        ))
    })
}

/// The identity of the live process `pid`, if there is one (a zombie is not live).
pub(crate) fn identity(pid: u32) -> Option<Identity> {
    let (state, start_time) = read_stat(pid)?;
    if matches!(state, 'Z' | 'X' | 'x') {
        return None;
    }
    Some(Identity {
        pid,
        start_time,
        boot_id: boot_id(),
    })
}

/// Whether the process recorded as `recorded` still runs: same pid, same start time, same
/// boot. A pid reused by another process is not it.
pub(crate) fn is_alive(recorded: &Identity) -> bool {
    identity(recorded.pid).is_some_and(|now| {
        now.start_time == recorded.start_time
            && (recorded.boot_id.is_empty() || now.boot_id == recorded.boot_id)
    })
}

/// SIGTERM (or another signal) to the job's whole process group; a group that is gone
/// already is no error.
pub(crate) fn signal_group(pid: u32, signal: i32) {
    let Ok(group) = i32::try_from(pid) else {
        return;
    };
    if group <= 1 {
        return;
    }
    // SAFETY: killpg only sends a signal.
    unsafe {
        libc::killpg(group, signal);
    }
}

/// `/proc/sys/kernel/random/boot_id`: changes at every boot, so a start time of an earlier
/// boot never matches.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The state letter and start time from `/proc/<pid>/stat`. The command name (field 2) is
/// in parentheses and may hold spaces or parentheses: the fields are read after its last `)`.
fn read_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some((state, start_time))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 1 0 0 20 0 1 0 \
                    987654 1000 100";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("1 (x) R 1"), None);
    }

    /// A live process is itself; once dead (even unreaped, a zombie) or with another start
    /// time (its pid reused) it is not.
    #[test]
    fn a_dead_process_or_a_reused_pid_is_not_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn_session(
            Path::new("sleep"),
            &["30".to_string()],
            &dir.path().join("out"),
        )
        .unwrap();
        let me = identity(child.id()).expect("the child runs");
        assert!(is_alive(&me));
        // It leads its own session (and group): setsid ran.
        let sid = unsafe { libc::getsid(child.id() as i32) };
        assert_eq!(sid, child.id() as i32);
        let reused = Identity {
            start_time: me.start_time + 1,
            ..me.clone()
        };
        assert!(!is_alive(&reused), "another start time is another process");
        let other_boot = Identity {
            boot_id: "another-boot".into(),
            ..me.clone()
        };
        assert!(!is_alive(&other_boot));
        signal_group(me.pid, libc::SIGTERM);
        // Unreaped, it is a zombie: not alive.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while is_alive(&me) {
            assert!(
                std::time::Instant::now() < deadline,
                "SIGTERM did not end it"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
        assert!(!is_alive(&me));
    }
}
