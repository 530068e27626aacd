//! The `--metric` flags every scoring command shares (eval, quantsim, analyze, the fixes,
//! compress, sweep): which number scores a model, the user's metric command, and saving it
//! as the workspace's default.

use clap::Args;
use qsteer::experiment::Workspace;
use qsteer::metrics::{MetricChoice, MetricSpec};
use qsteer::{Error, Result};
use std::sync::Mutex;

#[derive(Debug, Clone, Default, Args)]
pub struct MetricFlags {
    /// The score: auto (accuracy with labels on [N, C] outputs, else fidelity to the FP32
    /// model by output shape), top1, per_position, sqnr, cosine, map_agreement, or external
    /// (your --metric-command). Default: the workspace's saved metric, else auto
    #[arg(long, value_enum)]
    pub metric: Option<MetricChoice>,
    /// Your metric: a shell command template with {outputs} {output} {indices} {data}
    /// {workdir} that prints a JSON line {"score": X} (higher is better); implies
    /// --metric external
    #[arg(long, value_name = "TEMPLATE")]
    pub metric_command: Option<String>,
    /// Save the metric as the workspace's default (the app and later commands use it)
    #[arg(long)]
    pub save_metric: bool,
}

impl MetricFlags {
    /// The metric asked for on the command line (`None`: the workspace's default), checked.
    pub fn spec(&self) -> Result<Option<MetricSpec>> {
        let spec = match (self.metric, &self.metric_command) {
            (None, None) => {
                if self.save_metric {
                    return Err(Error::input(
                        "--save-metric needs the metric to save: --metric NAME or --metric-command TEMPLATE",
                    ));
                }
                return Ok(None);
            }
            (None | Some(MetricChoice::External), Some(c)) => MetricSpec::external(c),
            (Some(choice), command) => MetricSpec {
                choice,
                command: command.clone(),
            },
        };
        spec.validate()?;
        Ok(Some(spec))
    }

    /// [`MetricFlags::spec`], saved as `workspace`'s default with `--save-metric` (`auto`
    /// clears the saved one).
    pub fn resolve(&self, workspace: &Mutex<Workspace>) -> Result<Option<MetricSpec>> {
        let spec = self.spec()?;
        if let (true, Some(s)) = (self.save_metric, &spec) {
            let saved = (*s != MetricSpec::default()).then(|| s.clone());
            workspace
                .lock()
                .map_err(|_| Error::runtime("workspace lock poisoned"))?
                .set_metric(saved)?;
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(metric: Option<MetricChoice>, command: Option<&str>) -> MetricFlags {
        MetricFlags {
            metric,
            metric_command: command.map(str::to_string),
            save_metric: false,
        }
    }

    #[test]
    fn a_command_implies_external_and_bad_pairs_are_input_errors() {
        assert_eq!(flags(None, None).spec().unwrap(), None);
        let s = flags(None, Some("sh m.sh {outputs}"))
            .spec()
            .unwrap()
            .unwrap();
        assert_eq!(s.choice, MetricChoice::External);
        let e = flags(Some(MetricChoice::External), None)
            .spec()
            .unwrap_err();
        assert!(e.to_string().contains("--metric-command"), "{e}");
        let e = flags(Some(MetricChoice::Sqnr), Some("x"))
            .spec()
            .unwrap_err();
        assert!(e.to_string().contains("--metric sqnr"), "{e}");
        let e = flags(None, Some("m {nope}")).spec().unwrap_err();
        assert!(e.to_string().contains("{nope}"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
}
