//! The batch script: Slurm's resource lines from the settings, a check that the node
//! sees the workspace (it leaves `<stem>.started` there), then the headless command with
//! its JSON document kept as `<stem>.json`.

use crate::jobs::SlurmSettings;
use crate::{Error, Result};
use std::path::Path;

/// The exit code of a node that cannot enter the workspace directory.
pub(crate) const NO_WORKSPACE_EXIT: i32 = 97;

/// An array job: `tasks` tasks (at most `throttle` at once), task I running the command
/// with `--shard I/tasks`, each with its own output, marker and JSON files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ArraySpec {
    pub tasks: u32,
    pub throttle: Option<u32>,
}

pub(crate) fn batch_script(
    binary: &Path,
    args: &[String],
    workspace: &Path,
    stem: &str,
    label: &str,
    settings: &SlurmSettings,
    array: Option<ArraySpec>,
) -> Result<String> {
    // Per-task names: Slurm expands %a in --output, the shell $SLURM_ARRAY_TASK_ID.
    let (out_name, task) = match array {
        Some(_) => (format!("{stem}-%a.out"), "-${SLURM_ARRAY_TASK_ID}"),
        None => (format!("{stem}.out"), ""),
    };
    let out = workspace.join("slurm").join(out_name);
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
    if let Some(a) = array {
        let throttle = a.throttle.map(|t| format!("%{t}")).unwrap_or_default();
        directive(
            "--array",
            &format!("0-{}{throttle}", a.tasks.saturating_sub(1)),
        )?;
    }
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
    // The stem is ours (job-<id>[-n][-array]): safe inside double quotes.
    let started = format!("\"slurm/{stem}{task}.started\"");
    let part = format!("\"slurm/{stem}{task}.json.part\"");
    let json = format!("\"slurm/{stem}{task}.json\"");
    let mut command: Vec<String> = std::iter::once(binary.display().to_string())
        .chain(args.iter().cloned())
        .map(|a| quote(&a))
        .collect();
    if let Some(a) = array {
        command.push("--shard".into());
        command.push(format!("\"${{SLURM_ARRAY_TASK_ID}}/{}\"", a.tasks));
    }
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
            None,
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
        let e =
            batch_script(Path::new("q"), &[], Path::new("/w"), "j", "", &bad, None).unwrap_err();
        assert!(e.to_string().contains("--mem"), "{e}");
    }

    #[test]
    fn an_array_script_gives_each_task_its_share_and_its_own_files() {
        let s = batch_script(
            Path::new("/q"),
            &["compress".into(), "3".into()],
            Path::new("/w"),
            "job-5-array",
            "compress v3",
            &SlurmSettings::default(),
            Some(ArraySpec {
                tasks: 4,
                throttle: Some(2),
            }),
        )
        .unwrap();
        assert!(s.contains("#SBATCH --array=0-3%2\n"), "{s}");
        assert!(
            s.contains("#SBATCH --output=/w/slurm/job-5-array-%a.out\n"),
            "{s}"
        );
        assert!(
            s.contains(r#"'/q' 'compress' '3' --shard "${SLURM_ARRAY_TASK_ID}/4""#),
            "{s}"
        );
        assert!(
            s.contains(r#""slurm/job-5-array-${SLURM_ARRAY_TASK_ID}.json""#),
            "{s}"
        );
    }
}
