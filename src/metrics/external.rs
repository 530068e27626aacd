//! The user's metric command ("bring your own metric"): qsteer writes the model's outputs
//! for the evaluated samples as float32 `.npy` files (one per output) and the samples'
//! dataset indices as an int64 `.npy`, runs the command template with `sh -c`, and reads the
//! score from the last stdout line that is a JSON object with a numeric `score` (higher is
//! better). Other keys of that object are kept with the score.
//!
//! Placeholders (each one shell-quoted word): `{outputs}` the directory of the output files
//! (`<k>_<name>.npy` in output order, and `outputs.json` listing name, file and shape),
//! `{output}` the first output's file, `{indices}` the indices file, `{data}` the dataset
//! path, `{workdir}` the work directory (also the command's working directory).
//!
//! The indices are one per evaluated sample. An output whose rows are not one per sample (a
//! model with a fixed batch of 1 and a time-major output, `[T, 1, C]` per call) arrives with
//! the calls' rows stacked: `k × samples` rows, each sample's `k` together.

use crate::cancel::CancelToken;
use crate::data::{write_npy_f32, write_npy_i64};
use crate::train::external::process::{run_trainer, TrainerLine, TrainerRun};
use crate::train::external::template::shell_quote;
use crate::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const PLACEHOLDERS: [&str; 5] = ["outputs", "output", "indices", "data", "workdir"];

/// How many lines of the command's output an error shows.
const TAIL: usize = 12;

/// What the command gets.
pub struct MetricInput<'a> {
    /// Output names and their arrays (samples on axis 0), in the model's output order.
    pub outputs: &'a [(String, ArrayD<f32>)],
    /// The dataset index of each evaluated sample.
    pub indices: &'a [usize],
    /// The dataset path (`{data}`).
    pub data: &'a Path,
}

/// The command's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricAnswer {
    pub score: f64,
    /// The other keys of the score line.
    pub extra: Map<String, Value>,
}

fn bad(template: &str, what: &str) -> Error {
    Error::input(format!(
        "metric command '{template}': {what} (placeholders: {}; write {{{{ and }}}} for literal braces)",
        PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
    ))
}

/// Fill `template`; `values` gives each placeholder's value (`None`: only checking).
fn fill(template: &str, values: Option<&dyn Fn(&str) -> String>) -> Result<String> {
    if template.trim().is_empty() {
        return Err(Error::input("the metric command is empty"));
    }
    let mut out = String::new();
    let mut chars = template.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '$' if chars.peek().map(|&(_, n)| n) == Some('{') => {
                out.push('$');
                for (_, n) in chars.by_ref() {
                    out.push(n);
                    if n == '}' {
                        break;
                    }
                }
            }
            '{' if chars.peek().map(|&(_, n)| n) == Some('{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek().map(|&(_, n)| n) == Some('}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let rest = &template[at + 1..];
                let end = rest
                    .find('}')
                    .ok_or_else(|| bad(template, &format!("'{{' at byte {at} is never closed")))?;
                let name = &rest[..end];
                if !PLACEHOLDERS.contains(&name) {
                    return Err(bad(template, &format!("unknown placeholder {{{name}}}")));
                }
                if let Some(v) = values {
                    out.push_str(&shell_quote(&v(name)));
                }
                for _ in 0..=name.chars().count() {
                    chars.next();
                }
            }
            '}' => return Err(bad(template, &format!("'}}' at byte {at} closes nothing"))),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A template with only known placeholders (checked before any work).
pub fn check_template(template: &str) -> Result<()> {
    fill(template, None).map(|_| ())
}

/// `name` as a file-name part: letters, digits, `.`, `-`, `_`; anything else `_`.
fn file_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A fresh work directory under the system's temp dir, removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Result<WorkDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "qsteer-metric-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("outputs")).map_err(|e| Error::io(&dir, e))?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The score line: the last stdout line that is a JSON object with a `score` key.
pub fn parse_score_line(line: &str) -> Option<Map<String, Value>> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    let obj = v.as_object()?;
    obj.contains_key("score").then(|| obj.clone())
}

/// Run the metric command on `input` and read its score.
pub fn run_metric(
    template: &str,
    input: &MetricInput,
    cancel: &CancelToken,
) -> Result<MetricAnswer> {
    check_template(template)?;
    let work = WorkDir::new()?;
    let dir = &work.0;
    let outputs_dir = dir.join("outputs");
    let mut listed = Vec::new();
    for (k, (name, array)) in input.outputs.iter().enumerate() {
        let file = outputs_dir.join(format!("{k}_{}.npy", file_part(name)));
        write_npy_f32(&file, &array.as_standard_layout().into_owned())?;
        listed.push(
            json!({"name": name, "file": file.display().to_string(), "shape": array.shape()}),
        );
    }
    crate::fsutil::write_json_atomic(&outputs_dir.join("outputs.json"), &listed)?;
    let indices_file = dir.join("indices.npy");
    let indices = ArrayD::from_shape_vec(
        IxDyn(&[input.indices.len()]),
        input.indices.iter().map(|&i| i as i64).collect(),
    )
    .map_err(|e| Error::runtime(format!("sample indices: {e}")))?;
    write_npy_i64(&indices_file, &indices)?;
    let first = listed
        .first()
        .and_then(|v| v["file"].as_str().map(str::to_string))
        .unwrap_or_default();
    let value = |name: &str| -> String {
        match name {
            "outputs" => outputs_dir.display().to_string(),
            "output" => first.clone(),
            "indices" => indices_file.display().to_string(),
            "data" => input.data.display().to_string(),
            _ => dir.display().to_string(),
        }
    };
    let command = fill(template, Some(&value))?;
    let mut score_line = None;
    let outcome = run_trainer(
        &TrainerRun {
            command: &command,
            workdir: dir,
            cancel,
        },
        &mut |line| {
            if let TrainerLine::Stdout(text) = line {
                if let Some(obj) = parse_score_line(text) {
                    score_line = Some(obj);
                }
            }
        },
    )
    .map_err(|e| match e {
        Error::Cancelled => e,
        other => Error::runtime(format!("metric command '{template}': {other}")),
    })?;
    let tail = || {
        let from = outcome.tail.len().saturating_sub(TAIL);
        let lines = &outcome.tail[from..];
        if lines.is_empty() {
            " (it printed nothing)".to_string()
        } else {
            format!("; its last output:\n{}", lines.join("\n"))
        }
    };
    if !outcome.exit.success() {
        return Err(Error::runtime(format!(
            "metric command '{template}' failed ({}){}",
            outcome.exit,
            tail()
        )));
    }
    let Some(mut obj) = score_line else {
        return Err(Error::runtime(format!(
            "metric command '{template}' printed no score line (a JSON object like {{\"score\": 0.73}} on stdout){}",
            tail()
        )));
    };
    let score = obj.remove("score").and_then(|v| v.as_f64());
    match score {
        Some(s) if s.is_finite() => Ok(MetricAnswer {
            score: s,
            extra: obj,
        }),
        _ => Err(Error::runtime(format!(
            "metric command '{template}': the score is not a finite number{}",
            tail()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(outputs: &[(String, ArrayD<f32>)]) -> MetricInput<'_> {
        MetricInput {
            outputs,
            indices: &[3, 5],
            data: Path::new("/data/x"),
        }
    }

    fn two() -> Vec<(String, ArrayD<f32>)> {
        vec![
            ("probs/0".into(), ArrayD::zeros(IxDyn(&[2, 3]))),
            ("maps".into(), ArrayD::zeros(IxDyn(&[2, 1, 4, 4]))),
        ]
    }

    #[test]
    fn the_command_reads_the_files_and_reports_a_score() {
        // The score is the first output's file size in bytes (npy header + 6 floats).
        let t = r#"n=$(wc -c < {output}); ls {outputs} > /dev/null; test -s {indices} || exit 3; echo progress; echo "{{\"score\": $n, \"bytes\": $n}}""#;
        let a = run_metric(t, &input(&two()), &CancelToken::new()).unwrap();
        assert_eq!(a.extra["bytes"], json!(128 + 24));
        assert_eq!(a.score, 152.0);
    }

    #[test]
    fn errors_name_the_command_and_show_its_output() {
        let outs = two();
        let e = run_metric("echo oops >&2; exit 4", &input(&outs), &CancelToken::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("echo oops") && e.contains("exit status 4") && e.contains("oops"),
            "{e}"
        );
        let e = run_metric("echo hello", &input(&outs), &CancelToken::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no score line") && e.contains("hello"), "{e}");
        let e = run_metric(
            r#"echo '{{"score": NaN}}'; echo '{{"score": "x"}}'"#,
            &input(&outs),
            &CancelToken::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a finite number"), "{e}");
        let e = check_template("my_map {outputz}").unwrap_err().to_string();
        assert!(e.contains("{outputz}") && e.contains("{indices}"), "{e}");
    }
}
