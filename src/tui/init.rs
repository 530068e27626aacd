//! Building the app's state for a model: analysis for the graph and layer panes, the
//! workspace's variants, and the job history (with jobs a killed app left interrupted).

use super::graph_rows::{build_rows, collapse};
use super::quant_marks::QuantMarks;
use super::state::{App, JobStatus, JobView, LayerSort, Pane};
use super::theme::Theme;
use qsteer::experiment::evaluate::{sample_shapes, select_samples, Subset};
use qsteer::experiment::{default_workspace_dir, Workspace};
use qsteer::jobs::{load_history, read_job_log, JobOutcome, JobState};
use qsteer::model::{Layer, Model};
use qsteer::Result;
use std::path::{Path, PathBuf};

pub struct Opened {
    pub app: App,
    pub workspace: Workspace,
    /// The variant to show once the app runs: the one current when it last stopped.
    pub resume: Option<u32>,
}

/// The user's model specialised on its fixed input values as the commands open it (see
/// `model::fixed_inputs`): the given ones, the data's, the workspace's record. Returns what
/// was specialised, for the status line.
fn specialised_model(
    model_path: &Path,
    data: &Option<PathBuf>,
    workspace: &Option<PathBuf>,
    given: &qsteer::model::specialise::InputValues,
    pinned: Option<&[Vec<usize>]>,
) -> Result<(Model, Vec<String>)> {
    use qsteer::model::fixed_inputs;
    let model = Model::load(model_path)?;
    let recorded = workspace
        .as_ref()
        .filter(|d| d.join("workspace.json").is_file())
        .and_then(|d| Workspace::open(d).ok())
        .and_then(|ws| ws.settings().input_values.clone())
        .map(|text| fixed_inputs::parse_values(&text))
        .transpose()
        .map_err(qsteer::Error::input)?
        .unwrap_or_default();
    let (model, done) =
        fixed_inputs::specialise_with(model, given, data.as_deref(), &recorded, pinned)?;
    Ok((model, done.iter().map(|s| s.message()).collect()))
}

/// Per output channel, max − min of the layer's weights.
pub fn channel_ranges(model: &Model, layer: &Layer) -> Vec<f32> {
    let Some(w) = model.weight(&layer.weight) else {
        return vec![];
    };
    // Conv: [Cout, ...]; ConvTranspose: [Cin, Cout/g, ...]; Gemm/MatMul: output dim last
    // unless transposed — use axis 0 for convs, and the out-channel axis for matmuls.
    use qsteer::model::LayerKind as K;
    let matmul = matches!(layer.kind, K::Gemm | K::MatMul);
    let axis = match layer.kind {
        _ if matmul && w.shape().last() == Some(&layer.out_channels) => w.ndim() - 1,
        K::ConvTranspose => 1,
        _ => 0,
    };
    w.axis_iter(ndarray::Axis(axis))
        .map(|c| {
            let (lo, hi) = c
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                    (l.min(v), h.max(v))
                });
            if lo.is_finite() {
                hi - lo
            } else {
                0.0
            }
        })
        .collect()
}

/// What the graph and layer panes show for one model.
pub struct ModelView {
    pub variant: u32,
    pub graph: Vec<super::graph_rows::GraphRow>,
    pub graph_collapsed: Vec<super::graph_rows::GraphRow>,
    pub layers: Vec<Layer>,
    pub channel_ranges: Vec<Vec<f32>>,
    pub macs_total: u64,
    /// What CLE reaches on this model, with and without Relu6 → Relu (None: not plannable).
    pub cle_reach: Option<qsteer::fixes::CleReach>,
}

/// Analyse `model` for the panes; `pinned` are per-sample input shapes from the data.
pub fn model_view(variant: u32, model: &Model, pinned: Option<&[Vec<usize>]>) -> Result<ModelView> {
    let shapes = model.shapes(pinned)?;
    let layers = model.layers(&shapes)?;
    let graph = build_rows(model, &shapes);
    Ok(ModelView {
        variant,
        graph_collapsed: collapse(&graph),
        graph,
        macs_total: layers.iter().filter_map(|l| l.macs).sum(),
        channel_ranges: layers.iter().map(|l| channel_ranges(model, l)).collect(),
        layers,
        cle_reach: qsteer::fixes::reach(model).ok(),
    })
}

impl App {
    /// Show `view` in the graph and layer panes (the current variant changed).
    pub fn set_model_view(&mut self, view: ModelView) {
        self.current = view.variant;
        self.graph = view.graph;
        self.graph_collapsed = view.graph_collapsed;
        self.layers = view.layers;
        self.channel_ranges = view.channel_ranges;
        self.macs_total = view.macs_total;
        self.cle_reach = view.cle_reach;
        self.layer_choices
            .retain_layers(self.layers.iter().map(|l| l.name.as_str()));
        for pane in [Pane::Graph, Pane::Layers] {
            let n = self.rows_in(pane);
            let c = &mut self.cursor[pane.index()];
            *c = (*c).min(n.saturating_sub(1));
        }
    }
}

pub fn open(
    model_path: &Path,
    data: Option<PathBuf>,
    workspace: Option<PathBuf>,
    theme: Theme,
) -> Result<Opened> {
    open_at(
        model_path,
        data,
        workspace,
        theme,
        None,
        &Default::default(),
    )
}

/// [`open`] with per-sample input shapes (`--input-shape`) for a model that leaves sizes
/// open; without them the data's shapes are used, else those the workspace's data had.
pub fn open_at(
    model_path: &Path,
    data: Option<PathBuf>,
    workspace: Option<PathBuf>,
    theme: Theme,
    input_shapes: Option<Vec<Vec<usize>>>,
    input_values: &qsteer::model::specialise::InputValues,
) -> Result<Opened> {
    let (model, specialised) = specialised_model(
        model_path,
        &data,
        &workspace,
        input_values,
        input_shapes.as_deref(),
    )?;
    let data_shapes = match &data {
        Some(d) => {
            let s = select_samples(d, Subset::Evaluation, 200, 0)?;
            qsteer::experiment::evaluate::check_fits(&model, &s.data)?;
            Some(sample_shapes(&model, &s.data)?)
        }
        None => None,
    };
    let model_name = model_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let dir = match workspace {
        Some(d) => d,
        None => default_workspace_dir(&model_name, &model.content_hash())?,
    };
    let mut ws = Workspace::open_or_create(&dir, &model, &model_name)?;
    if let Some(values) = qsteer::model::fixed_inputs::recorded_in(&model) {
        ws.set_input_values(Some(values))?;
    }
    if let Some(shapes) = &data_shapes {
        ws.set_input_shapes(shapes)?;
    }
    let pinned = input_shapes
        .or(data_shapes)
        .or_else(|| ws.settings().input_shapes.clone());
    let view = model_view(0, &model, pinned.as_deref())?;
    // Marks are a help, not a requirement: a model quantsim cannot place quantizers on
    // still opens, and the status line says why the marks are missing.
    let (quant_marks, marks_problem) = match QuantMarks::of(&model, &view.layers) {
        Ok(m) => (m, None),
        Err(e) => (
            QuantMarks::default(),
            Some(format!("no quantizer marks: {e}")),
        ),
    };
    let macs_total = view.macs_total;
    if ws.variant(0).is_some_and(|v| v.macs.is_none()) {
        let params = model.weights().map(|(_, w)| w.array.len() as u64).sum();
        ws.set_costs(0, Some(macs_total), Some(params))?;
    }
    let history = load_history(&dir)?;
    let mut status = String::new();
    let jobs: Vec<JobView> = history
        .jobs
        .iter()
        .map(|r| {
            let st = match r.state {
                JobState::Finished => JobStatus::Finished,
                JobState::Failed => JobStatus::Failed(r.error.clone().unwrap_or_default()),
                JobState::Cancelled => JobStatus::Cancelled,
                _ => JobStatus::Interrupted,
            };
            JobView {
                id: r.id,
                label: r.kind.label(),
                status: st,
                done: 0,
                total: 0,
                what: String::new(),
                started: None,
                elapsed: r.seconds,
                log: read_job_log(&dir, r.id).unwrap_or_default(),
                kind: Some(r.kind.clone()),
                curve: (r.summary.as_ref())
                    .and_then(|s| JobOutcome::from_summary(&r.kind, s.clone()).ok())
                    .and_then(|o| super::train_curve::TrainCurve::from_outcome(&o)),
                slurm: r
                    .summary
                    .as_ref()
                    .map(super::slurm_view::SlurmJobs::from_summary)
                    .unwrap_or_default(),
            }
        })
        .collect();
    let interrupted: Vec<String> = history
        .interrupted()
        .map(|r| format!("#{} {}", r.id, r.kind.label()))
        .collect();
    if !specialised.is_empty() {
        status = specialised.join("; ");
    }
    if let Some(p) = marks_problem {
        status = p;
    }
    if !interrupted.is_empty() {
        status = format!(
            "interrupted when the app last stopped: {} (rerun with e)",
            interrupted.join(", ")
        );
    }
    // A damaged analysis file costs the noise table, not the app.
    let analysis = match ws.analysis(0) {
        Ok(a) => a.map(|a| (0, a)),
        Err(e) => {
            status = format!("analysis not loaded: {e}");
            None
        }
    };
    let marks = ws.view_marks();
    let app = App {
        model_name,
        data_path: data,
        theme,
        graph_collapsed: view.graph_collapsed,
        graph: view.graph,
        collapsed: false,
        quant_marks,
        layers: view.layers,
        channel_ranges: view.channel_ranges,
        macs_total: view.macs_total,
        cle_reach: view.cle_reach,
        pinned,
        variants: ws.variants().to_vec(),
        current: 0,
        mark_a: marks.a,
        mark_b: marks.b,
        jobs,
        focus: Pane::Layers,
        cursor: [0; 5],
        layer_sort: LayerSort::Order,
        layer_sort_desc: false,
        layer_filter: String::new(),
        popups: vec![],
        status,
        should_quit: false,
        compare: None,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        analysis,
        noise_view: true,
        heat: None,
        heat_view: false,
        messages: Vec::new(),
        popup_scroll: 0,
        popup_scroll_max: std::cell::Cell::new(0),
        compression: None,
        pending_decision: None,
        dialogs: ws.settings().dialogs.clone(),
        reaches: Default::default(),
        workspace_dir: ws.dir().to_path_buf(),
        export_name: ws.file().model_name.clone(),
        trainer_command: ws.settings().trainer.clone(),
        train_data: ws.settings().train_data.clone(),
        metric: ws.settings().metric.clone().unwrap_or_default(),
        // `available` is probed by the running app, not here: tests see no Slurm.
        slurm: super::run_on::SlurmSetup {
            settings: ws.settings().slurm.clone(),
            ..Default::default()
        },
        layer_choices: Default::default(),
        keep_fp32: Default::default(),
    };
    Ok(Opened {
        app,
        workspace: ws,
        resume: marks.current.filter(|&id| id != 0),
    })
}
