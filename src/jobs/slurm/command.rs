//! A job as qsteer's own headless command line: what the batch script runs on the node.
//! Every field of the job maps to a flag, so the node runs the job the front end asked
//! for (checked by parsing the line back in the CLI's tests).

use crate::fsutil::write_json_atomic;
use crate::jobs::JobKind;
use crate::train::{Loss, Optimizer, Schedule, TrainLayers};
use crate::{Error, Result};
use std::path::Path;

/// The arguments after the binary for `kind` on the workspace `workspace`. Side files the
/// line refers to (manual ratios) are written to `<slurm_dir>/<stem>.*.json`. `cpus` is
/// the allocation's CPU count: a job asking for one thread per core gets that many.
pub fn headless_args(
    kind: &JobKind,
    workspace: &Path,
    slurm_dir: &Path,
    stem: &str,
    cpus: Option<u32>,
) -> Result<Vec<String>> {
    let mut a = Args(Vec::new());
    // Never more worker threads than the allocation's CPUs ("one per core": all of them).
    let threads = |t: usize| match (t, cpus) {
        (0, Some(n)) => n as usize,
        (t, Some(n)) => t.min(n as usize),
        (t, None) => t,
    };
    match kind {
        JobKind::Compress {
            variant,
            data,
            method,
            target,
            ratios,
            pin,
            exclude,
            candidates,
            selection,
            reconstruct,
            calibration_size,
            seed,
            threads: t,
            metric,
        } => {
            a.push("compress");
            a.common(workspace, *variant, data);
            a.flag("--method", method.short());
            if let Some(t) = target {
                a.flag("--target", t);
            }
            if let Some(r) = ratios {
                let file = slurm_dir.join(format!("{stem}.ratios.json"));
                write_json_atomic(&file, r)?;
                a.flag("--ratios", file.display());
            }
            for (layer, r) in pin {
                a.flag("--pin", format!("{}={r}", one_item(layer, "--pin")?));
            }
            for layer in exclude {
                a.flag("--exclude", one_item(layer, "--exclude")?);
            }
            a.flag("--candidates", candidates);
            if let Some(s) = selection {
                a.flag("--selection", s);
            }
            if *reconstruct {
                a.push("--reconstruct");
            }
            a.flag("--calibration-size", calibration_size);
            a.flag("--seed", seed);
            a.flag("--threads", threads(*t));
            if let Some(m) = metric {
                a.flag("--metric", m.choice.name());
                if let Some(c) = &m.command {
                    a.flag("--metric-command", c);
                }
            }
        }
        JobKind::FineTune {
            variant,
            data,
            settings: s,
            threads: t,
        }
        | JobKind::Qat {
            variant,
            data,
            settings: s,
            threads: t,
        } => {
            a.push("finetune");
            a.common(workspace, *variant, data);
            if matches!(kind, JobKind::Qat { .. }) {
                // The variant is the quantsim variant QAT starts from.
                a.flag("--qat", variant);
            }
            a.flag("--epochs", s.epochs);
            a.flag("--lr", s.lr);
            a.flag("--batch-size", s.batch_size);
            a.flag(
                "--optimizer",
                match s.optimizer {
                    Optimizer::Sgd => "sgd",
                    Optimizer::Adam => "adam",
                },
            );
            a.flag("--momentum", s.momentum);
            match s.schedule {
                Schedule::Constant => a.flag("--schedule", "constant"),
                Schedule::Cosine => a.flag("--schedule", "cosine"),
                Schedule::Step { every, gamma } => {
                    a.flag("--schedule", "step");
                    a.flag("--step-every", every);
                    a.flag("--gamma", gamma);
                }
            }
            a.flag("--weight-decay", s.weight_decay);
            if let Loss::Distill { temperature } = s.loss {
                a.push("--distill");
                a.flag("--temperature", temperature);
            }
            match &s.train_layers {
                TrainLayers::All => {}
                TrainLayers::Last(n) => a.flag("--train-last", n),
                TrainLayers::Only(layers) | TrainLayers::Except(layers) => {
                    let flag = match s.train_layers {
                        TrainLayers::Only(_) => "--layers",
                        _ => "--freeze",
                    };
                    if layers.is_empty() {
                        return Err(Error::input(format!(
                            "finetune: an empty {flag} list cannot run on Slurm"
                        )));
                    }
                    for layer in layers {
                        a.flag(flag, one_item(layer, flag)?);
                    }
                }
            }
            a.flag("--patience", s.early_stop_patience);
            a.flag("--calibration-size", s.calibration_size);
            a.flag("--seed", s.seed);
            if let Some(dir) = &s.train_data {
                let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
                a.flag("--train-data", dir.display());
            }
            a.flag("--augment-shift", s.augment.shift);
            if s.augment.flip {
                a.push("--augment-flip");
            }
            a.flag("--threads", threads(*t));
        }
        JobKind::ExternalFineTune {
            variant,
            data,
            command,
            epochs,
            lr,
            threads: t,
        } => {
            a.push("finetune");
            a.common(workspace, *variant, data);
            a.flag("--trainer", command);
            a.flag("--epochs", epochs);
            a.flag("--lr", lr);
            a.flag("--threads", threads(*t));
        }
        other => {
            return Err(Error::input(format!(
                "the Slurm executor runs compress and finetune jobs so far; run '{}' with \
                 the local executor",
                other.label()
            )))
        }
    }
    // One JSON document on stdout, JSON-lines events on stderr, and no journal entry of
    // its own: the submitting process journals this job.
    a.push("--json");
    a.flag("--progress", "jsonl");
    a.push("--no-journal");
    Ok(a.0)
}

struct Args(Vec<String>);

impl Args {
    fn push(&mut self, s: &str) {
        self.0.push(s.to_string());
    }

    fn flag(&mut self, name: &str, value: impl std::fmt::Display) {
        self.0.push(name.to_string());
        // f64's Display is the shortest text that parses back to the same number.
        self.0.push(value.to_string());
    }

    /// The variant (by id, as VARIANT_OR_MODEL), its workspace and the dataset.
    fn common(&mut self, workspace: &Path, variant: u32, data: &Path) {
        self.0.push(variant.to_string());
        self.flag("--workspace", workspace.display());
        // The node starts in the workspace: a relative path would point elsewhere.
        let data = std::path::absolute(data).unwrap_or_else(|_| data.to_path_buf());
        self.flag("--data", data.display());
    }
}

/// A layer name for a comma-separated flag: a comma in it would split it in two.
fn one_item<'a>(layer: &'a str, flag: &str) -> Result<&'a str> {
    if layer.contains(',') {
        return Err(Error::input(format!(
            "{flag}: layer name '{layer}' contains a comma, which the command line cannot \
             carry; run this job with the local executor"
        )));
    }
    Ok(layer)
}
