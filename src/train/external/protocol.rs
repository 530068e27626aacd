//! The trainer's stdout protocol: a line that is a JSON object with any of `epoch`, `step`,
//! `steps`, `epochs`, `loss`, `metric`, `lr` is progress; every other line is text for the
//! log. Lenient on purpose: a trainer's own prints never break a run.

use serde::Serialize;
use serde_json::{Map, Value};

/// One progress report; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Progress {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// Steps per epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// Epochs of the whole run (when the trainer decides, e.g. early stopping).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// The trainer's own validation metric.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Progress(Progress),
    Text(String),
}

/// Classify one line of the trainer's stdout.
pub fn parse_line(line: &str) -> Line {
    let trimmed = line.trim();
    let text = || Line::Text(line.trim_end().to_string());
    if !trimmed.starts_with('{') {
        return text();
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(trimmed) else {
        return text();
    };
    let p = Progress {
        epoch: count(&map, "epoch"),
        step: count(&map, "step"),
        steps: count(&map, "steps"),
        epochs: count(&map, "epochs"),
        loss: number(&map, "loss"),
        metric: number(&map, "metric"),
        lr: number(&map, "lr"),
    };
    if p == Progress::default() {
        // JSON, but none of ours (e.g. a config dump): the log shows it as it came.
        return text();
    }
    Line::Progress(p)
}

fn number(map: &Map<String, Value>, key: &str) -> Option<f64> {
    map.get(key)
        .and_then(Value::as_f64)
        .filter(|x| x.is_finite())
}

/// A count: a non-negative whole number (`3` or `3.0`).
fn count(map: &Map<String, Value>, key: &str) -> Option<u64> {
    let x = number(map, key)?;
    (x >= 0.0 && x.fract() == 0.0 && x <= u64::MAX as f64).then_some(x as u64)
}

impl Progress {
    /// A log line: `epoch 1 step 10/50: loss 0.3100, metric 0.9700, lr 0.001`.
    pub fn describe(&self) -> String {
        let mut head = Vec::new();
        if let Some(e) = self.epoch {
            head.push(match self.epochs {
                Some(n) => format!("epoch {e}/{n}"),
                None => format!("epoch {e}"),
            });
        }
        if let Some(s) = self.step {
            head.push(match self.steps {
                Some(n) => format!("step {s}/{n}"),
                None => format!("step {s}"),
            });
        }
        let mut values = Vec::new();
        if let Some(l) = self.loss {
            values.push(format!("loss {l:.4}"));
        }
        if let Some(m) = self.metric {
            values.push(format!("metric {m:.4}"));
        }
        if let Some(lr) = self.lr {
            values.push(format!("lr {lr}"));
        }
        match (head.is_empty(), values.is_empty()) {
            (false, false) => format!("{}: {}", head.join(" "), values.join(", ")),
            (true, _) => values.join(", "),
            (false, true) => head.join(" "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_parsed() {
        let Line::Progress(p) =
            parse_line(r#"{"epoch":1,"step":10,"steps":50,"loss":0.31,"metric":0.97,"lr":0.001}"#)
        else {
            panic!("not progress")
        };
        assert_eq!(
            p,
            Progress {
                epoch: Some(1),
                step: Some(10),
                steps: Some(50),
                epochs: None,
                loss: Some(0.31),
                metric: Some(0.97),
                lr: Some(0.001),
            }
        );
        assert_eq!(
            p.describe(),
            "epoch 1 step 10/50: loss 0.3100, metric 0.9700, lr 0.001"
        );
    }

    #[test]
    fn any_one_known_field_makes_a_progress_line() {
        assert_eq!(
            parse_line(r#"  {"epoch": 2.0, "epochs": 5, "extra": "kept out"}  "#),
            Line::Progress(Progress {
                epoch: Some(2),
                epochs: Some(5),
                ..Progress::default()
            })
        );
        assert_eq!(
            parse_line(r#"{"loss": 1e-3}"#),
            Line::Progress(Progress {
                loss: Some(0.001),
                ..Progress::default()
            })
        );
    }

    #[test]
    fn everything_else_is_text() {
        for line in [
            "Epoch 1/3 loss=0.3",
            "",
            "[1, 2]",
            r#"{"batch_size": 32}"#,
            r#"{"loss": "low"}"#,
            r#"{"epoch": -1, "step": 1.5}"#,
            r#"{"epoch": 1"#,
            "  {not json}",
        ] {
            assert_eq!(
                parse_line(line),
                Line::Text(line.trim_end().into()),
                "{line}"
            );
        }
    }
}
