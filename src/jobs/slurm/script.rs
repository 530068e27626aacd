//! The batch script: Slurm's resource lines from the settings, a check that the node
//! sees the workspace (it leaves `<stem>.started` there), then the headless command with
//! its JSON document kept as `<stem>.json`.

use crate::jobs::SlurmSettings;
use crate::{Error, Result};
use std::path::Path;

/// The exit code of a node that cannot enter the workspace directory.
pub(crate) const NO_WORKSPACE_EXIT: i32 = 97;

pub(crate) fn batch_script(
    binary: &Path,
    args: &[String],
    workspace: &Path,
    stem: &str,
    label: &str,
    settings: &SlurmSettings,
) -> Result<String> {
    let out = workspace.join("slurm").join(format!("{stem}.out"));
    let mut s = String::from("#!/bin/bash\n");
    let mut directive = |flag: &str, value: &str| -> Result<()> {
        if value.contains('\n') || value.trim().is_empty() {
            return Err(Error::input(format!(
                "slurm setting {flag} '{value}': must be one non-empty line"
            )));
        }
        s.push_str(&format!("#SBATCH {flag}={value}\n"));
        Ok(())
    };
    directive("--job-name", &format!("qsteer-{stem}"))?;
    directive("--output", &out.display().to_string())?;
    directive("--ntasks", "1")?;
    let opt = [
        ("--partition", settings.partition.clone()),
        ("--time", settings.time.clone()),
        ("--cpus-per-task", settings.cpus.map(|c| c.to_string())),
        ("--mem", settings.mem.clone()),
        ("--gres", settings.gres.clone()),
        ("--account", settings.account.clone()),
    ];
    for (flag, value) in opt {
        if let Some(v) = value {
            directive(flag, &v)?;
        }
    }
    let ws = quote(&workspace.display().to_string());
    let started = quote(&format!("slurm/{stem}.started"));
    let part = quote(&format!("slurm/{stem}.json.part"));
    let json = quote(&format!("slurm/{stem}.json"));
    let command: Vec<String> = std::iter::once(binary.display().to_string())
        .chain(args.iter().cloned())
        .map(|a| quote(&a))
        .collect();
    s.push_str(&format!(
        "# qsteer: {}\n\
         # The workspace must be on a filesystem this node shares with the submitting machine.\n\
         cd {ws} || {{ echo \"qsteer: the workspace {} is not visible on $(hostname)\" >&2; exit {NO_WORKSPACE_EXIT}; }}\n\
         touch {started}\n\
         {} > {part} && mv {part} {json}\n",
        label.replace('\n', " "),
        workspace.display(),
        command.join(" ")
    ));
    Ok(s)
}

/// One shell word: single quotes, with `'` as `'\''`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_directives_and_words_are_quoted() {
        let settings = SlurmSettings {
            partition: Some("debug".into()),
            time: Some("0:10:00".into()),
            cpus: Some(2),
            ..Default::default()
        };
        let s = batch_script(
            Path::new("/opt/q steer"),
            &["compress".into(), "--pin".into(), "it's=0.5".into()],
            Path::new("/shared/ws"),
            "job-3",
            "compress v0",
            &settings,
        )
        .unwrap();
        assert!(s.contains("#SBATCH --partition=debug\n"), "{s}");
        assert!(s.contains("#SBATCH --time=0:10:00\n"));
        assert!(s.contains("#SBATCH --cpus-per-task=2\n"));
        assert!(s.contains("#SBATCH --output=/shared/ws/slurm/job-3.out\n"));
        assert!(!s.contains("--mem"));
        assert!(
            s.contains(r"'/opt/q steer' 'compress' '--pin' 'it'\''s=0.5'"),
            "{s}"
        );
        let bad = SlurmSettings {
            mem: Some("4G\n#SBATCH --x".into()),
            ..Default::default()
        };
        let e = batch_script(Path::new("q"), &[], Path::new("/w"), "j", "", &bad).unwrap_err();
        assert!(e.to_string().contains("--mem"), "{e}");
    }
}
