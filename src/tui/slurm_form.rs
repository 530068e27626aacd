//! The Slurm settings dialog (`S`): partition (from `sinfo`), CPUs, time limit, memory and
//! GPUs that every job sent to Slurm asks for; Enter stores them in the workspace
//! (`settings.slurm`, the defaults the CLI's `--executor slurm` uses too).

use super::action::Action;
use super::form;
use super::popups::{boxed, centered, form_fields};
use super::run_on::settings_text;
use super::state::{App, Popup};
use super::update::Effect;
use qsteer::jobs::SlurmSettings;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

const CPUS_MAX: usize = 1024;
/// Minutes: up to 30 days.
const MINUTES_MAX: usize = 43_200;
const MEM_GB_MAX: usize = 16_384;
/// GPU counts offered (0: none).
const GPUS: [usize; 5] = [0, 1, 2, 4, 8];
const ARRAY_MAX: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Partition,
    Cpus,
    Minutes,
    MemGb,
    Gpus,
    ArrayTasks,
}

impl Field {
    pub const ALL: [Field; 6] = [
        Field::Partition,
        Field::Cpus,
        Field::Minutes,
        Field::MemGb,
        Field::Gpus,
        Field::ArrayTasks,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::Partition => "partition",
            Field::Cpus => "CPUs",
            Field::Minutes => "time limit",
            Field::MemGb => "memory",
            Field::Gpus => "GPUs",
            Field::ArrayTasks => "dictionary",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SlurmForm {
    /// The cluster's partitions; index 0 of the choice is "the cluster's default".
    pub partitions: Vec<String>,
    pub partition: usize,
    /// 0: the cluster's default, for each of the numbers.
    pub cpus: usize,
    pub minutes: usize,
    pub mem_gb: usize,
    /// Index into [`GPUS`].
    pub gpus: usize,
    /// A greedy compress job's dictionary filled by an array job of this many tasks first
    /// (0 or 1: by the compress job itself).
    pub array_tasks: usize,
    /// Fields this dialog does not edit (account, extra arguments, binary), kept as they are.
    pub rest: SlurmSettings,
    pub field: usize,
    pub fresh: bool,
}

/// Minutes of a Slurm time limit: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`.
pub fn minutes(time: &str) -> Option<usize> {
    let (days, rest) = match time.split_once('-') {
        Some((d, r)) => (d.parse::<usize>().ok()?, r),
        None => (0, time),
    };
    let parts: Vec<usize> = rest
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let hm = match (time.contains('-'), parts.as_slice()) {
        (false, [m]) | (false, [m, _]) => *m,
        (false, [h, m, _]) => h * 60 + m,
        (true, [h]) => h * 60,
        (true, [h, m]) | (true, [h, m, _]) => h * 60 + m,
        _ => return None,
    };
    Some(days * 24 * 60 + hm)
}

/// `8G` → 8.
fn mem_gb(mem: &str) -> Option<usize> {
    mem.strip_suffix('G')?.parse().ok()
}

/// `gpu:2` → the index of 2 in [`GPUS`].
fn gpus_index(gres: &str) -> Option<usize> {
    let n: usize = gres.strip_prefix("gpu:")?.parse().ok()?;
    GPUS.iter().position(|&k| k == n)
}

impl SlurmForm {
    pub fn new(settings: &SlurmSettings, cluster_partitions: &[String]) -> SlurmForm {
        let mut partitions = cluster_partitions.to_vec();
        if let Some(p) = &settings.partition {
            if !partitions.contains(p) {
                partitions.push(p.clone());
            }
        }
        let partition = settings
            .partition
            .as_ref()
            .and_then(|p| partitions.iter().position(|q| q == p))
            .map_or(0, |i| i + 1);
        let mem_gb = settings.mem.as_deref().and_then(mem_gb).unwrap_or(0);
        let gpus = settings.gres.as_deref().and_then(gpus_index).unwrap_or(0);
        SlurmForm {
            partitions,
            partition,
            cpus: settings.cpus.unwrap_or(0) as usize,
            minutes: settings.time.as_deref().and_then(minutes).unwrap_or(0),
            mem_gb,
            gpus,
            array_tasks: settings.array_tasks.unwrap_or(0) as usize,
            rest: settings.clone(),
            field: 0,
            fresh: true,
        }
    }

    pub fn field(&self) -> Field {
        Field::ALL[self.field.min(Field::ALL.len() - 1)]
    }

    /// The settings as edited. Memory and GPUs the dialog could not show (e.g. `4096M`,
    /// `gpu:a100:2`) are kept while their field is left at "default"/"none".
    pub fn settings(&self) -> SlurmSettings {
        let some = |n: usize| (n > 0).then_some(n);
        let rest = &self.rest;
        SlurmSettings {
            partition: self
                .partition
                .checked_sub(1)
                .and_then(|i| self.partitions.get(i).cloned()),
            cpus: some(self.cpus).map(|c| c as u32),
            time: some(self.minutes).map(|m| m.to_string()),
            array_tasks: (self.array_tasks >= 2).then_some(self.array_tasks as u32),
            mem: match some(self.mem_gb) {
                Some(g) => Some(format!("{g}G")),
                None => rest.mem.clone().filter(|m| mem_gb(m).is_none()),
            },
            gres: match GPUS[self.gpus.min(GPUS.len() - 1)] {
                0 => rest.gres.clone().filter(|g| gpus_index(g).is_none()),
                n => Some(format!("gpu:{n}")),
            },
            ..rest.clone()
        }
    }

    fn value_text(&self, f: Field) -> String {
        let default = "cluster default".to_string();
        match f {
            Field::Partition => match self.partition.checked_sub(1) {
                Some(i) => self.partitions.get(i).cloned().unwrap_or(default),
                None => default,
            },
            Field::Cpus if self.cpus == 0 => default,
            Field::Cpus => self.cpus.to_string(),
            Field::Minutes if self.minutes == 0 => default,
            Field::Minutes => format!("{} min", self.minutes),
            Field::MemGb if self.mem_gb == 0 => default,
            Field::MemGb => format!("{} GB", self.mem_gb),
            Field::Gpus => match GPUS[self.gpus.min(GPUS.len() - 1)] {
                0 => "none".into(),
                n => format!("{n} (--gres gpu:{n})"),
            },
            Field::ArrayTasks if self.array_tasks < 2 => "filled by the compress job".into(),
            Field::ArrayTasks => format!("filled first by an array of {} tasks", self.array_tasks),
        }
    }
}

impl form::Editable for SlurmForm {
    fn cursor(&mut self) -> (&mut usize, &mut bool, usize) {
        (&mut self.field, &mut self.fresh, Field::ALL.len())
    }

    fn change(&mut self, delta: i64) {
        match self.field() {
            Field::Partition => {
                let n = self.partitions.len() as i64 + 1;
                self.partition = (self.partition as i64 + delta).rem_euclid(n) as usize;
            }
            Field::Cpus => self.cpus = form::step(self.cpus, delta, 0, CPUS_MAX),
            Field::Minutes => self.minutes = form::step(self.minutes, delta * 5, 0, MINUTES_MAX),
            Field::MemGb => self.mem_gb = form::step(self.mem_gb, delta, 0, MEM_GB_MAX),
            Field::Gpus => self.gpus = form::step(self.gpus, delta, 0, GPUS.len() - 1),
            Field::ArrayTasks => {
                // 0 and 1 both mean "no array": skip 1.
                let next = form::step(self.array_tasks, delta, 0, ARRAY_MAX);
                self.array_tasks = match (next, delta > 0) {
                    (1, true) => 2,
                    (1, false) => 0,
                    (n, _) => n,
                }
            }
        }
    }

    fn number(&mut self) -> Option<(&mut usize, usize)> {
        match self.field() {
            Field::Cpus => Some((&mut self.cpus, CPUS_MAX)),
            Field::Minutes => Some((&mut self.minutes, MINUTES_MAX)),
            Field::MemGb => Some((&mut self.mem_gb, MEM_GB_MAX)),
            Field::ArrayTasks => Some((&mut self.array_tasks, ARRAY_MAX)),
            _ => None,
        }
    }
}

pub fn open(app: &mut App) {
    if !app.slurm.available {
        app.status = "no Slurm client (sbatch) on this machine: jobs run here".into();
        return;
    }
    let form = SlurmForm::new(&app.slurm.settings, &app.slurm.partitions);
    app.popups.push(Popup::Slurm(form));
}

/// A key in the open dialog. The form is the top popup's copy; the caller stores it back.
pub fn action(app: &mut App, form: &mut SlurmForm, action: Action) -> Vec<Effect> {
    match action {
        _ if form::edit(form, &action) => {}
        Action::Confirm => {
            let settings = form.settings();
            app.status = format!("Slurm settings: {}", settings_text(&settings));
            app.slurm.settings = settings.clone();
            app.popups.pop();
            return vec![Effect::SaveSlurm(settings)];
        }
        _ => {}
    }
    vec![]
}

pub fn draw(f: &mut Frame, app: &App, area: Rect, form: &SlurmForm) {
    let t = &app.theme;
    let r = centered(area, 64, Field::ALL.len() as u16 + 8);
    f.render_widget(Clear, r);
    let mut lines = vec![
        Line::from(Span::styled(
            "What each job sent to Slurm asks for (sbatch options):",
            t.text(),
        )),
        Line::from(""),
    ];
    let fields: Vec<(&str, String)> = Field::ALL
        .iter()
        .map(|&f| (f.name(), form.value_text(f)))
        .collect();
    lines.extend(form_fields(app, form.field, &fields));
    let rest = &form.rest;
    let mut kept = vec![];
    if let Some(a) = &rest.account {
        kept.push(format!("account {a}"));
    }
    if !rest.extra_args.is_empty() {
        kept.push(rest.extra_args.join(" "));
    }
    lines.push(Line::from(Span::styled(
        if kept.is_empty() {
            "account, more sbatch arguments: settings.slurm, workspace.json".to_string()
        } else {
            format!("also (workspace.json): {}", kept.join(", "))
        },
        t.dim(),
    )));
    lines.push(Line::from(Span::styled(
        "Enter saves  ↑↓ field  ◂▸ change  digits type  Esc closes",
        t.dim(),
    )));
    f.render_widget(Paragraph::new(lines).block(boxed(app, "Slurm settings")), r);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_time_limits_read_as_minutes() {
        for (text, want) in [
            ("30", Some(30)),
            ("30:15", Some(30)),
            ("2:00:00", Some(120)),
            ("1-00:00:00", Some(1440)),
            ("1-2", Some(1560)),
            ("1-2:30", Some(1590)),
            ("soon", None),
        ] {
            assert_eq!(minutes(text), want, "{text}");
        }
    }

    #[test]
    fn settings_round_trip_and_unshown_values_are_kept() {
        let parts = vec!["debug".to_string(), "gpu".to_string()];
        let s = SlurmSettings {
            partition: Some("gpu".into()),
            cpus: Some(4),
            time: Some("2:00:00".into()),
            mem: Some("8G".into()),
            gres: Some("gpu:2".into()),
            account: Some("ml".into()),
            ..Default::default()
        };
        let form = SlurmForm::new(&s, &parts);
        assert_eq!(form.value_text(Field::Partition), "gpu");
        assert_eq!(
            form.settings(),
            SlurmSettings {
                time: Some("120".into()),
                ..s
            }
        );
        // A partition the cluster does not list, memory in MB and a typed GRES stay.
        let odd = SlurmSettings {
            partition: Some("old".into()),
            mem: Some("4096M".into()),
            gres: Some("gpu:a100:1".into()),
            ..Default::default()
        };
        assert_eq!(SlurmForm::new(&odd, &parts).settings(), odd);
    }
}
