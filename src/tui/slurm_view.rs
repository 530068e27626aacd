//! What the jobs pane shows of a job's Slurm batch jobs (one for a compress or fine-tune
//! job, one per candidate for a sweep): id, state, node and queue time, from the executor's
//! `{"slurm": {...}}` partials.

use super::panes::jobs::clock;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmState {
    pub state: String,
    pub node: String,
    pub reason: String,
    pub queued_seconds: Option<f64>,
}

/// A job's Slurm batch jobs by Slurm id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmJobs(pub BTreeMap<String, SlurmState>);

impl SlurmJobs {
    /// Take what the executor reported of one batch job.
    pub fn take(&mut self, s: &qsteer::jobs::SlurmState) {
        let entry = self.0.entry(s.job_id.clone()).or_default();
        entry.state = s.state.clone();
        entry.node = s.node.clone();
        entry.reason = s.reason.clone();
        entry.queued_seconds = s.queued_seconds.or(entry.queued_seconds);
    }

    /// A finished job's summary: its `slurm` record (one batch job), if any.
    pub fn from_summary(summary: &Value) -> SlurmJobs {
        let mut jobs = SlurmJobs::default();
        let record = summary.get("slurm").cloned();
        if let Some(s) = record.and_then(|r| serde_json::from_value(r).ok()) {
            jobs.take(&s);
        }
        jobs
    }

    /// One line: the job itself when there is one, else the count per state.
    pub fn summary(&self) -> Option<String> {
        match self.0.len() {
            0 => None,
            1 => {
                let (id, s) = self.0.iter().next()?;
                let mut out = format!("slurm {id} {}", s.state);
                if !s.node.is_empty() {
                    out.push_str(&format!(" on {}", s.node));
                }
                if !s.reason.is_empty() && s.state == "PENDING" {
                    out.push_str(&format!(" ({})", s.reason));
                }
                if let Some(q) = s.queued_seconds {
                    out.push_str(&format!(", queued {}", clock(q)));
                }
                Some(out)
            }
            n => {
                let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
                for s in self.0.values() {
                    *by_state.entry(s.state.as_str()).or_default() += 1;
                }
                let counts: Vec<String> = by_state
                    .iter()
                    .map(|(state, k)| format!("{k} {state}"))
                    .collect();
                Some(format!("slurm ×{n}: {}", counts.join(", ")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The state as the executor's partial carries it (its wire form).
    fn slurm(v: Value) -> qsteer::jobs::SlurmState {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn one_job_shows_id_state_node_and_queue_time_many_show_counts() {
        let mut jobs = SlurmJobs::default();
        assert_eq!(jobs.summary(), None);
        jobs.take(&slurm(json!({"job_id": "41", "state": "PENDING"})));
        assert_eq!(jobs.summary().unwrap(), "slurm 41 PENDING");
        jobs.take(&slurm(
            json!({"job_id": "41", "state": "RUNNING", "node": "n3",
            "reason": "None", "queued_seconds": 65.0}),
        ));
        assert_eq!(
            jobs.summary().unwrap(),
            "slurm 41 RUNNING on n3, queued 1:05"
        );
        jobs.take(&slurm(
            json!({"job_id": "42", "state": "PENDING", "reason": "Resources"}),
        ));
        jobs.take(&slurm(json!({"job_id": "43", "state": "PENDING"})));
        // A finished job's summary names its one batch job under `slurm`.
        let done = SlurmJobs::from_summary(&json!({"variant": 1, "slurm": {"job_id": "44",
            "state": "COMPLETED", "node": "n1", "exit_code": "0:0"}}));
        assert_eq!(done.summary().unwrap(), "slurm 44 COMPLETED on n1");
        assert_eq!(jobs.summary().unwrap(), "slurm ×3: 2 PENDING, 1 RUNNING");
    }
}
