//! Following the node job's output file as it grows: its JSON-lines events drive the
//! job's progress and log as a local job's would; other lines (the shell's, Slurm's) go
//! to the log as they are. The last lines are kept for the report of a failed job.

use crate::jobs::exec::JobCtx;
use crate::jobs::JobEvent;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// Lines a failed job's report shows.
const TAIL: usize = 12;

pub(crate) struct Follower {
    path: PathBuf,
    offset: u64,
    /// Bytes after the last newline: a line still being written.
    pending: Vec<u8>,
    tail: VecDeque<String>,
    /// The node job's own error, from its `failed` event.
    pub node_error: Option<String>,
}

impl Follower {
    pub(crate) fn new(path: PathBuf) -> Follower {
        Follower {
            path,
            offset: 0,
            pending: Vec::new(),
            tail: VecDeque::new(),
            node_error: None,
        }
    }

    /// Read what was added since the last call and report each whole line. A missing
    /// file is not an error: Slurm creates it when the job starts.
    pub(crate) fn poll(&mut self, ctx: &JobCtx) {
        let Ok(mut f) = File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        self.pending.extend_from_slice(&buf);
        while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.line(ctx, line);
        }
    }

    /// The end of the file even without a final newline (the job has ended).
    pub(crate) fn finish(&mut self, ctx: &JobCtx) {
        self.poll(ctx);
        if !self.pending.is_empty() {
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
            self.line(ctx, line);
        }
    }

    fn line(&mut self, ctx: &JobCtx, line: String) {
        let shown = match serde_json::from_str::<JobEvent>(&line) {
            Ok(JobEvent::Progress {
                done, total, what, ..
            }) => {
                ctx.progress(done, total, &what);
                None
            }
            Ok(JobEvent::Log { line, .. }) => Some(line),
            Ok(JobEvent::Partial { result, .. }) => {
                ctx.partial(result);
                None
            }
            Ok(JobEvent::Failed { error, .. }) => {
                self.node_error = Some(error.clone());
                Some(format!("failed: {error}"))
            }
            // The node's queued/started/finished: this job's own transitions say them.
            Ok(_) => None,
            Err(_) if line.trim().is_empty() => None,
            Err(_) => Some(line),
        };
        if let Some(text) = shown {
            ctx.log(text.clone());
            if self.tail.len() == TAIL {
                self.tail.pop_front();
            }
            self.tail.push_back(text);
        }
    }

    /// The last log lines, oldest first.
    pub(crate) fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }
}
