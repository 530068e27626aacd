//! Everything the app shows, as plain data. Rendering reads it; only `update` changes it.

use super::graph_rows::GraphRow;
use super::theme::Theme;
use qsteer::experiment::Variant;
use qsteer::jobs::JobId;
use qsteer::model::Layer;
use qsteer::quant::analysis::{Analysis, LayerAnalysis};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pane {
    Graph,
    Layers,
    Variants,
    Jobs,
    Compare,
}

impl Pane {
    pub const ALL: [Pane; 5] = [
        Pane::Graph,
        Pane::Layers,
        Pane::Variants,
        Pane::Jobs,
        Pane::Compare,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Graph => "Graph",
            Pane::Layers => "Layers · MACs",
            Pane::Variants => "Variants",
            Pane::Jobs => "Jobs",
            Pane::Compare => "Compare A/B",
        }
    }

    pub fn index(self) -> usize {
        Pane::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobStatus {
    Queued,
    Running,
    Finished,
    Failed(String),
    Cancelled,
    /// Found started but never ended in the history: the app was killed mid-job.
    Interrupted,
}

#[derive(Debug, Clone)]
pub struct JobView {
    pub id: JobId,
    pub label: String,
    pub status: JobStatus,
    pub done: usize,
    pub total: usize,
    pub what: String,
    pub started: Option<Instant>,
    /// Seconds it ran, once ended.
    pub elapsed: Option<f64>,
    pub log: Vec<String>,
    /// What was asked for, when known (jobs of this session and of the history).
    pub kind: Option<qsteer::jobs::JobKind>,
    /// A training job's loss curve and epoch scores, as they arrive.
    pub curve: Option<super::train_curve::TrainCurve>,
    /// Its Slurm batch jobs, when it runs on the Slurm executor.
    pub slurm: super::slurm_view::SlurmJobs,
}

impl JobView {
    pub fn is_active(&self) -> bool {
        matches!(self.status, JobStatus::Queued | JobStatus::Running)
    }

    pub fn seconds(&self) -> f64 {
        self.elapsed
            .unwrap_or_else(|| self.started.map_or(0.0, |s| s.elapsed().as_secs_f64()))
    }

    /// Remaining seconds from the progress rate so far.
    pub fn eta(&self) -> Option<f64> {
        if self.status != JobStatus::Running || self.done == 0 || self.total <= self.done {
            return None;
        }
        let rate = self.done as f64 / self.seconds().max(1e-6);
        Some((self.total - self.done) as f64 / rate)
    }
}

/// Columns the layer table can sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerSort {
    Order,
    Name,
    Op,
    Kernel,
    Channels,
    Params,
    Macs,
    /// Quant-noise columns (need an analysis): cumulative and isolated output SQNR, and the
    /// per-channel weight range ratio.
    Sqnr,
    SqnrIsolated,
    RangeRatio,
}

impl LayerSort {
    pub const ALL: [LayerSort; 10] = [
        LayerSort::Order,
        LayerSort::Name,
        LayerSort::Op,
        LayerSort::Kernel,
        LayerSort::Channels,
        LayerSort::Params,
        LayerSort::Macs,
        LayerSort::Sqnr,
        LayerSort::SqnrIsolated,
        LayerSort::RangeRatio,
    ];

    pub fn label(self) -> &'static str {
        match self {
            LayerSort::Order => "graph order",
            LayerSort::Name => "name",
            LayerSort::Op => "op",
            LayerSort::Kernel => "kernel",
            LayerSort::Channels => "channels",
            LayerSort::Params => "params",
            LayerSort::Macs => "MACs",
            LayerSort::Sqnr => "SQNR",
            LayerSort::SqnrIsolated => "isolated SQNR",
            LayerSort::RangeRatio => "weight range max/median",
        }
    }
}

/// The "evaluate variants" decision dialog: candidate rows and a settings form.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub title: String,
    /// Candidate variant ids and whether each is picked.
    pub rows: Vec<(u32, bool)>,
    pub cursor: usize,
    /// Form fields after the rows: subset, batch size, threads.
    pub subset: usize,
    pub batch_size: usize,
    pub threads: usize,
    /// Index into [`Decision::metrics`]: the metric the evaluations score with (saved as
    /// the workspace's default when it changes).
    pub metric: usize,
    /// 0 = the table, 1.. = the form fields.
    pub field: usize,
}

impl Decision {
    /// The metrics offered: the built-in ones, and the workspace's saved external command.
    pub fn metrics(app: &App) -> Vec<qsteer::metrics::MetricSpec> {
        use qsteer::metrics::{MetricChoice, MetricSpec};
        let mut all: Vec<MetricSpec> = MetricChoice::ALL
            .into_iter()
            .filter(|c| *c != MetricChoice::External)
            .map(|choice| MetricSpec {
                choice,
                command: None,
            })
            .collect();
        if app.metric.command.is_some() {
            all.push(app.metric.clone());
        }
        all
    }
}

pub const SUBSETS: [&str; 3] = ["evaluation", "calibration", "all"];

#[derive(Debug, Clone, PartialEq)]
pub enum Popup {
    Help,
    /// One job full screen: its settings, status, whole error and whole log.
    Job(JobId),
    Palette {
        query: String,
        cursor: usize,
    },
    Filter,
    Decision(Decision),
    Quantsim(super::quantsim_form::QuantsimForm),
    Fix(super::fix_form::FixForm),
    Compress(super::compress_form::CompressForm),
    Sweep(super::sweep_form::SweepForm),
    SweepDecision(Box<super::sweep_decision::SweepDecision>),
    FineTune(super::finetune_form::FineTuneForm),
    Slurm(super::slurm_form::SlurmForm),
    ConfirmQuit,
    /// The status line's history, whole (`m`).
    Messages,
    /// The variants' scores against a cost, with the Pareto front (`p`).
    Scatter(super::scatter::XAxis),
    /// Where `x` exports the selected variant to, asked first.
    Export(super::export_prompt::ExportPrompt),
    /// A variant's name, note or a tag, typed (`R`, `N`, `T` in the variants pane).
    EditVariant(super::variant_edit::EditPrompt),
    /// `D`: delete this variant and its files?
    ConfirmDelete(u32),
}

impl Popup {
    /// Whether the popup is a dialog: Space, ◂▸ and digits reach its form instead of the key
    /// table. Exhaustive on purpose, so a new popup has to say which it is.
    pub fn is_dialog(&self) -> bool {
        match self {
            Popup::Decision(_)
            | Popup::Quantsim(_)
            | Popup::Fix(_)
            | Popup::Compress(_)
            | Popup::Sweep(_)
            | Popup::SweepDecision(_)
            | Popup::FineTune(_)
            | Popup::Slurm(_) => true,
            Popup::Help
            | Popup::Messages
            | Popup::Scatter(_)
            | Popup::Export(_)
            | Popup::EditVariant(_)
            | Popup::ConfirmDelete(_)
            | Popup::Job(_)
            | Popup::Palette { .. }
            | Popup::Filter
            | Popup::ConfirmQuit => false,
        }
    }

    /// Whether printable keys are typed into the popup's text field.
    pub fn takes_text(&self) -> bool {
        matches!(
            self,
            Popup::Palette { .. } | Popup::Filter | Popup::Export(_) | Popup::EditVariant(_)
        )
    }
}

pub struct App {
    pub model_name: String,
    pub data_path: Option<PathBuf>,
    pub theme: Theme,
    pub graph: Vec<GraphRow>,
    pub graph_collapsed: Vec<GraphRow>,
    pub collapsed: bool,
    /// Where the base model's quantizers sit, marked in the graph pane.
    pub quant_marks: super::quant_marks::QuantMarks,
    pub layers: Vec<Layer>,
    /// Per layer, the weight range (max − min) of each output channel.
    pub channel_ranges: Vec<Vec<f32>>,
    pub macs_total: u64,
    /// What CLE reaches on the current variant's model, with and without Relu6 → Relu.
    pub cle_reach: Option<qsteer::fixes::CleReach>,
    /// Per-sample input shapes from the dataset (pins symbolic dims when analysing).
    pub pinned: Option<Vec<Vec<usize>>>,
    pub variants: Vec<Variant>,
    pub current: u32,
    pub mark_a: Option<u32>,
    pub mark_b: Option<u32>,
    pub jobs: Vec<JobView>,
    pub focus: Pane,
    /// Row cursor of each pane, by `Pane::index`.
    pub cursor: [usize; 5],
    pub layer_sort: LayerSort,
    pub layer_sort_desc: bool,
    pub layer_filter: String,
    pub popups: Vec<Popup>,
    /// One line shown in the footer (last notice).
    pub status: String,
    pub should_quit: bool,
    /// Prediction disagreement of A vs B, filled by the compare computation.
    pub compare: Option<super::compare::CompareData>,
    /// Threads available, the default in dialogs.
    pub cores: usize,
    /// The quantization analysis of the current variant, when it has one.
    pub analysis: Option<(u32, Analysis)>,
    /// The layers pane shows the quant-noise table (when there is an analysis), not costs.
    pub noise_view: bool,
    /// The eval-score dictionary of the last greedy compress job, as it fills.
    pub heat: Option<super::heat::HeatGrid>,
    /// The layers pane shows the heat table (when there is one).
    pub heat_view: bool,
    /// Every status line message so far, oldest first (the footer cuts long ones; `m`
    /// shows them whole).
    pub messages: Vec<String>,
    /// First line shown by the scrolling popups (help, a job's full view).
    pub popup_scroll: usize,
    /// The last such popup drawn could scroll this far: the bound for `popup_scroll`, known
    /// only once the popup is laid out on the terminal.
    pub popup_scroll_max: std::cell::Cell<usize>,
    /// The compression record of the current variant, when it has one.
    pub compression: Option<(u32, qsteer::compress::record::CompressionRecord)>,
    /// Layers pinned at a ratio or left alone by the compress dialog's jobs.
    pub layer_choices: super::layer_choice::LayerChoices,
    /// Nodes (graph inputs, layers, any node) whose quantizers the quantsim dialog's jobs
    /// leave out (`F` in the graph and layers panes): sent as keep-FP32 overrides.
    pub keep_fp32: std::collections::BTreeSet<String>,
    /// The workspace's saved external trainer command (the fine-tune dialog offers it).
    pub trainer_command: Option<String>,
    /// The workspace's saved training set (`settings.train_data`), offered by the
    /// fine-tune dialog.
    pub train_data: Option<std::path::PathBuf>,
    /// The workspace's saved metric (`settings.metric`; `auto` when none): what jobs score
    /// with unless a dialog says otherwise.
    pub metric: qsteer::metrics::MetricSpec,
    /// Whether jobs can go to Slurm, its partitions and the workspace's Slurm settings.
    pub slurm: super::run_on::SlurmSetup,
    /// The workspace's directory (its `exports/` is the export prompt's first default).
    pub workspace_dir: PathBuf,
    /// The model's name in the workspace, which exported files are named after.
    pub export_name: String,
    /// The smallest MAC ratio each (variant, method, N) reaches, as the dialogs asked.
    pub reaches: super::reach::Reaches,
    /// What each dialog last launched with (the workspace's `settings.dialogs`), which it
    /// opens with.
    pub dialogs: std::collections::BTreeMap<String, serde_json::Value>,
    /// The last sweep decision offered and not yet taken (`d` reopens it).
    pub pending_decision: Option<super::sweep_decision::SweepDecision>,
}

impl App {
    pub fn graph_rows(&self) -> &[GraphRow] {
        if self.collapsed {
            &self.graph_collapsed
        } else {
            &self.graph
        }
    }

    /// Layer indices in display order (filtered, sorted).
    pub fn layer_order(&self) -> Vec<usize> {
        let f = self.layer_filter.to_lowercase();
        let mut idx: Vec<usize> = (0..self.layers.len())
            .filter(|&i| f.is_empty() || self.layers[i].name.to_lowercase().contains(&f))
            .collect();
        let l = &self.layers;
        match self.layer_sort {
            LayerSort::Order => {}
            LayerSort::Name => idx.sort_by(|&a, &b| l[a].name.cmp(&l[b].name)),
            LayerSort::Op => idx.sort_by(|&a, &b| l[a].kind.label().cmp(l[b].kind.label())),
            LayerSort::Kernel => idx.sort_by_key(|&i| l[i].kernel.iter().product::<usize>()),
            LayerSort::Channels => idx.sort_by_key(|&i| (l[i].out_channels, l[i].in_channels)),
            LayerSort::Params => idx.sort_by_key(|&i| l[i].params),
            LayerSort::Macs => idx.sort_by_key(|&i| l[i].macs.unwrap_or(0)),
            LayerSort::Sqnr | LayerSort::SqnrIsolated | LayerSort::RangeRatio => {
                // Worst first; layers without a figure last.
                let key = |i: usize| -> f64 {
                    let row = self.noise_row(&l[i].name);
                    let v = match self.layer_sort {
                        LayerSort::Sqnr => row.and_then(|r| r.sqnr_db),
                        LayerSort::SqnrIsolated => row.and_then(|r| r.sqnr_isolated_db),
                        _ => row.map(|r| -r.weights.max_median_ratio),
                    };
                    v.unwrap_or(f64::INFINITY)
                };
                idx.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
            }
        }
        if self.layer_sort_desc {
            idx.reverse();
        }
        idx
    }

    /// The current variant's analysis, if loaded.
    pub fn current_analysis(&self) -> Option<&Analysis> {
        self.analysis
            .as_ref()
            .filter(|(id, _)| *id == self.current)
            .map(|(_, a)| a)
    }

    /// The current variant's compression record, if loaded.
    pub fn current_compression(&self) -> Option<&qsteer::compress::record::CompressionRecord> {
        self.compression
            .as_ref()
            .filter(|(id, _)| *id == self.current)
            .map(|(_, r)| r)
    }

    /// The heat table, when the layers pane shows it.
    pub fn shown_heat(&self) -> Option<&super::heat::HeatGrid> {
        self.heat.as_ref().filter(|_| self.heat_view)
    }

    /// The analysis row of a layer of the current variant.
    pub fn noise_row(&self, layer: &str) -> Option<&LayerAnalysis> {
        self.current_analysis()?
            .layers
            .iter()
            .find(|r| r.layer == layer)
    }

    /// Variants in tree order with their depth (children under their parent).
    pub fn variant_tree(&self) -> Vec<(usize, &Variant)> {
        let mut out = Vec::new();
        fn walk<'a>(
            all: &'a [Variant],
            parent: Option<u32>,
            depth: usize,
            out: &mut Vec<(usize, &'a Variant)>,
        ) {
            for v in all.iter().filter(|v| v.parent == parent) {
                out.push((depth, v));
                walk(all, Some(v.id), depth + 1, out);
            }
        }
        walk(&self.variants, None, 0, &mut out);
        out
    }

    pub fn variant(&self, id: u32) -> Option<&Variant> {
        self.variants.iter().find(|v| v.id == id)
    }

    /// Rows in the focused pane (for cursor bounds).
    pub fn rows_in(&self, pane: Pane) -> usize {
        match pane {
            Pane::Graph => self.graph_rows().len(),
            Pane::Layers => match (self.shown_heat(), self.current_compression()) {
                (Some(g), _) => g.layers.len(),
                // As the pane draws it: the noise table, when shown, goes first.
                (None, Some(r)) if !(self.noise_view && self.current_analysis().is_some()) => {
                    r.changes.len()
                }
                _ => self.layer_order().len(),
            },
            Pane::Variants => self.variants.len(),
            Pane::Jobs => self.jobs.len(),
            Pane::Compare => 0,
        }
    }

    pub fn active_jobs(&self) -> usize {
        self.jobs.iter().filter(|j| j.is_active()).count()
    }

    pub fn selected_job(&self) -> Option<&JobView> {
        self.jobs.get(self.cursor[Pane::Jobs.index()])
    }

    pub fn selected_variant(&self) -> Option<u32> {
        self.variant_tree()
            .get(self.cursor[Pane::Variants.index()])
            .map(|(_, v)| v.id)
    }
}
