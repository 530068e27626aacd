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
    /// Take a partial; false when it is not a Slurm one.
    pub fn take(&mut self, partial: &Value) -> bool {
        let Some(s) = partial.get("slurm") else {
            return false;
        };
        let Some(id) = s["job_id"].as_str() else {
            return false;
        };
        let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
        let entry = self.0.entry(id.to_string()).or_default();
        entry.state = text("state");
        entry.node = text("node");
        entry.reason = text("reason");
        entry.queued_seconds = s["queued_seconds"].as_f64().or(entry.queued_seconds);
        true
    }

    /// A finished job's summary: its `slurm` object (one batch job), if any.
    pub fn from_summary(summary: &Value) -> SlurmJobs {
        let mut jobs = SlurmJobs::default();
        jobs.take(summary);
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

    #[test]
    fn one_job_shows_id_state_node_and_queue_time_many_show_counts() {
        let mut jobs = SlurmJobs::default();
        assert!(!jobs.take(&json!({"train_step": {}})));
        assert_eq!(jobs.summary(), None);
        assert!(jobs.take(&json!({"slurm": {"job_id": "41", "state": "PENDING"}})));
        assert_eq!(jobs.summary().unwrap(), "slurm 41 PENDING");
        jobs.take(
            &json!({"slurm": {"job_id": "41", "state": "RUNNING", "node": "n3",
            "reason": "None", "queued_seconds": 65.0}}),
        );
        assert_eq!(
            jobs.summary().unwrap(),
            "slurm 41 RUNNING on n3, queued 1:05"
        );
        jobs.take(&json!({"slurm": {"job_id": "42", "state": "PENDING", "reason": "Resources"}}));
        jobs.take(&json!({"slurm": {"job_id": "43", "state": "PENDING"}}));
        assert_eq!(jobs.summary().unwrap(), "slurm ×3: 2 PENDING, 1 RUNNING");
    }
}
