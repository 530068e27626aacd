//! Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization"; DESIGN.md §3
//! "CLE"). Per-channel scaling commutes with positively homogeneous activations
//! (f(s·x) = s·f(x) for s > 0: Relu, LeakyRelu, PRelu, none), so in a chain
//! L1 → f → L2 output channel i of L1 can be divided by s_i and input channel i of L2
//! multiplied by it without changing the function. Choosing s_i = r1_i / √(r1_i·r2_i)
//! (r = max |w| per channel) gives both the range √(r1_i·r2_i), which per-tensor
//! quantization of either layer likes far better than a few wide channels.
//!
//! Chains are found as AIMET does: maximal sequences of Conv/Gemm layers, each reading the
//! previous one's output (through at most one such activation) as its only reader; a
//! sequence is cut into pairs, and into a triple where a depthwise conv sits between two
//! layers (Conv→DWConv→Conv), scaled with the cube-root form so all three end with
//! ∛(r1·r2·r3). Sets share layers (the end of one is the start of the next): AIMET's
//! `scale_model` passes over the sets once, in chain order, so a set's shared layer is left
//! as the next set scaled it ([`CleScaling::Once`]); [`CleScaling::Settle`] equalizes the sets
//! again until no scale moves more than the tolerance.
//!
//! Relu6 (Clip(0, 6)) is not homogeneous: a chain through it is equalized only with the
//! user's consent, by turning that Clip into a Relu (which changes the function; every
//! such node is reported). Other activations (HardSwish, Sigmoid, …), residual Adds and
//! values read by several nodes end a chain.

use super::bn_fold::{fold_batchnorms, FoldReport};
use super::bn_stats::BnStats;
use super::chains::{plan, Between, Member};
use super::edit::prune_unused;
use super::hba::{absorb, pre_activation_minimums, HbaLink, HbaReport};
use super::layout::Layout;
use crate::cancel::CancelToken;
use crate::data::Dataset;
use crate::model::graph::node_label;
use crate::model::Model;
use crate::quant::analysis::WeightRanges;
use crate::runtime::RunOptions;
use crate::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// How often the sets of a chain are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleScaling {
    /// Each set once, in chain order (AIMET's `scale_model`).
    #[default]
    Once,
    /// Again and again until no scale moves more than the tolerance: every set balanced,
    /// shared layers included.
    Settle,
}

impl CleScaling {
    /// What a request or report without the field meant: before the option existed CLE
    /// always iterated until the scales settled.
    pub fn unrecorded() -> CleScaling {
        CleScaling::Settle
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CleScaling::Once => "once",
            CleScaling::Settle => "settle",
        }
    }
}

impl std::fmt::Display for CleScaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CleScaling {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "once" => Ok(CleScaling::Once),
            "settle" => Ok(CleScaling::Settle),
            other => Err(Error::input(format!(
                "unknown CLE scaling '{other}' (expected once or settle)"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleOptions {
    /// Turn Clip(0, m) activations inside chains into Relu so the chain can be equalized.
    pub relu6_to_relu: bool,
    /// High-bias absorption after the scaling (needs BN statistics).
    pub hba: bool,
    /// Absorb also into layers that zero-pad their input, as AIMET does (see `hba`).
    pub hba_padded: bool,
    pub scaling: CleScaling,
    /// Passes at most with [`CleScaling::Settle`].
    pub max_iterations: usize,
    /// Stop when no scale of an iteration differs from 1 by more than this.
    pub tolerance: f32,
}

impl Default for CleOptions {
    fn default() -> Self {
        CleOptions {
            relu6_to_relu: false,
            hba: true,
            hba_padded: false,
            scaling: CleScaling::default(),
            max_iterations: 100,
            tolerance: 1e-4,
        }
    }
}

/// Layers equalized together: two (a pair) or three (Conv→DWConv→Conv).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleSet {
    pub layers: Vec<String>,
    /// The activation between consecutive layers (op type, or "none").
    pub activations: Vec<String>,
}

/// A layer no set continues from, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainEnd {
    pub layer: String,
    pub reason: String,
}

/// An activation turned into Relu (this changes the model's function).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvertedActivation {
    pub node: String,
    /// What it was, e.g. `Clip(0, 6)`.
    pub was: String,
}

/// Per-output-channel weight ranges of a layer before and after equalization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRanges {
    pub layer: String,
    pub op: String,
    pub before: WeightRanges,
    pub after: WeightRanges,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleReport {
    /// BNs folded first, when the model still had foldable ones.
    pub folded: Option<FoldReport>,
    pub sets: Vec<CleSet>,
    pub ends: Vec<ChainEnd>,
    pub converted: Vec<ConvertedActivation>,
    #[serde(default = "CleScaling::unrecorded")]
    pub scaling: CleScaling,
    pub iterations: usize,
    /// The last pass moved no scale more than the tolerance.
    pub converged: bool,
    /// Largest |s − 1| of the last iteration.
    pub last_change: f32,
    pub layers: Vec<LayerRanges>,
    pub hba: Option<HbaReport>,
}

#[derive(Debug, Clone)]
pub struct CleOutcome {
    pub model: Model,
    pub report: CleReport,
    /// BN statistics of the result (scaled and shifted with the layers they describe).
    pub stats: BnStats,
}

/// One layer while its chain is equalized. Ranges under positive per-channel factors
/// depend only on the per-(output, input) peaks max |w| over the kernel taps, so the
/// iterations scale those (a fraction of the weight for k×k kernels), and lazily: a factor
/// on one side is folded into the peaks only when the other side's ranges are asked for.
/// A layer at the end of a chain, scaled on one side only, never takes a pass at all.
/// The weight itself is scaled once, by the accumulated factors, after the last iteration.
struct Scaled {
    /// Layout of `peaks` (the layer's layout with one tap per pair).
    layout: Layout,
    /// The peaks times the factors folded in so far.
    peaks: Vec<f32>,
    /// Factors not yet folded into `peaks`, per output and per input channel.
    pending_out: Option<Vec<f32>>,
    pending_in: Option<Vec<f32>>,
    /// Current ranges, `None` when a scaling of the other side made them stale.
    out_ranges: Option<Vec<f32>>,
    in_ranges: Option<Vec<f32>>,
    /// Products of every factor the weight's outputs and inputs were multiplied by.
    total_out: Vec<f32>,
    total_in: Vec<f32>,
}

/// s = r1 / √(r1·r2), or 1 where a range is zero (a dead channel has nothing to balance).
fn pair_scale(r1: f32, r2: f32) -> f32 {
    if r1 > 0.0 && r2 > 0.0 && r1.is_finite() && r2.is_finite() {
        (r1 / r2).sqrt()
    } else {
        1.0
    }
}

/// (s12, s23) of the three-layer form: all three ranges become ∛(r1·r2·r3).
fn triple_scales(r1: f32, r2: f32, r3: f32) -> (f32, f32) {
    let all = [r1, r2, r3];
    if all
        .iter()
        .any(|r| r.is_nan() || *r <= 0.0 || r.is_infinite())
    {
        return (1.0, 1.0);
    }
    let c = (r1 as f64 * r2 as f64 * r3 as f64).cbrt();
    ((r1 as f64 / c) as f32, (c / r3 as f64) as f32)
}

fn times(r: &mut [f32], factor: &[f32]) {
    r.iter_mut().zip(factor).for_each(|(r, f)| *r *= f);
}

fn accumulate(acc: &mut Option<Vec<f32>>, factor: &[f32]) {
    match acc {
        Some(a) => times(a, factor),
        None => *acc = Some(factor.to_vec()),
    }
}

impl Scaled {
    fn new(layout: Layout, weight: &[f32]) -> Scaled {
        Scaled {
            layout: layout.reduced(),
            peaks: layout.peaks(weight),
            pending_out: None,
            pending_in: None,
            out_ranges: None,
            in_ranges: None,
            total_out: vec![1.0; layout.out_channels()],
            total_in: vec![1.0; layout.in_channels()],
        }
    }

    fn out_ranges(&mut self) -> Vec<f32> {
        if self.out_ranges.is_none() {
            let mut r = match self.pending_in.take() {
                Some(f) => self.layout.scale_in_out_ranges(&mut self.peaks, &f),
                None => self.layout.out_ranges(&self.peaks),
            };
            if let Some(f) = &self.pending_out {
                times(&mut r, f);
            }
            self.out_ranges = Some(r);
        }
        self.out_ranges.clone().expect("computed above")
    }

    fn in_ranges(&mut self) -> Vec<f32> {
        if self.in_ranges.is_none() {
            let mut r = match self.pending_out.take() {
                Some(f) => self.layout.scale_out_in_ranges(&mut self.peaks, &f),
                None => self.layout.in_ranges(&self.peaks),
            };
            if let Some(f) = &self.pending_in {
                times(&mut r, f);
            }
            self.in_ranges = Some(r);
        }
        self.in_ranges.clone().expect("computed above")
    }

    fn scale_out(&mut self, factor: &[f32]) {
        accumulate(&mut self.pending_out, factor);
        times(&mut self.total_out, factor);
        if let Some(r) = &mut self.out_ranges {
            times(r, factor);
        }
        self.in_ranges = None;
    }

    fn scale_in(&mut self, factor: &[f32]) {
        accumulate(&mut self.pending_in, factor);
        times(&mut self.total_in, factor);
        if let Some(r) = &mut self.in_ranges {
            times(r, factor);
        }
        self.out_ranges = None;
    }
}

/// One chain's layers and biases while they are scaled.
#[derive(Default)]
struct Work {
    /// The weights, untouched until the iterations end (then scaled once).
    weights: HashMap<usize, Vec<f32>>,
    layers: HashMap<usize, Scaled>,
    biases: HashMap<usize, Vec<f32>>,
    /// Product of the factors each layer's output channels were multiplied by.
    out_scale: HashMap<usize, Vec<f32>>,
    iterations: usize,
    converged: bool,
    last_change: f32,
}

impl Work {
    fn layer(&mut self, m: &Member) -> &mut Scaled {
        self.layers.get_mut(&m.node).expect("member weight")
    }

    fn out_ranges(&mut self, m: &Member) -> Vec<f32> {
        self.layer(m).out_ranges()
    }

    fn in_ranges(&mut self, m: &Member) -> Vec<f32> {
        self.layer(m).in_ranges()
    }

    /// Multiply `m`'s weight rows by `weight_factor`; its output channels (bias, and what
    /// the statistics must follow) change by `output_factor`.
    fn scale_out(&mut self, m: &Member, weight_factor: &[f32], output_factor: &[f32]) {
        self.layer(m).scale_out(weight_factor);
        if let Some(b) = self.biases.get_mut(&m.node) {
            times(b, output_factor);
        }
        let acc = self
            .out_scale
            .entry(m.node)
            .or_insert_with(|| vec![1.0; output_factor.len()]);
        times(acc, output_factor);
    }

    /// Multiply `m`'s input channels by `factor`.
    fn scale_in(&mut self, m: &Member, factor: &[f32]) {
        self.layer(m).scale_in(factor);
    }

    /// Scale every weight by the factors its layer accumulated: the one pass over it.
    fn apply_to_weights(&mut self, members: &HashMap<usize, &Member>) {
        for (node, w) in self.weights.iter_mut() {
            let l = &self.layers[node];
            members[node]
                .layout
                .scale_both(w, &l.total_out, &l.total_in);
        }
    }

    /// Equalize one set; returns the largest |s − 1|.
    fn equalize(&mut self, set: &[&Member]) -> f32 {
        let change = |s: &[f32]| s.iter().fold(0.0f32, |m, v| m.max((v - 1.0).abs()));
        match set {
            [a, b] => {
                let (r1, r2) = (self.out_ranges(a), self.in_ranges(b));
                let s: Vec<f32> = r1
                    .iter()
                    .zip(&r2)
                    .map(|(&x, &y)| pair_scale(x, y))
                    .collect();
                let inv: Vec<f32> = s.iter().map(|v| 1.0 / v).collect();
                self.scale_out(a, &inv, &inv);
                self.scale_in(b, &s);
                change(&s)
            }
            [a, d, b] => {
                let (r1, r2, r3) = (self.out_ranges(a), self.out_ranges(d), self.in_ranges(b));
                let (s12, s23): (Vec<f32>, Vec<f32>) = (0..r1.len())
                    .map(|i| triple_scales(r1[i], r2[i], r3[i]))
                    .unzip();
                let inv12: Vec<f32> = s12.iter().map(|v| 1.0 / v).collect();
                let inv23: Vec<f32> = s23.iter().map(|v| 1.0 / v).collect();
                // The depthwise layer takes s12 on its input and gives 1/s23 on its output;
                // with one input per output both are a factor on its channel.
                let mid: Vec<f32> = s12.iter().zip(&s23).map(|(x, y)| x / y).collect();
                self.scale_out(a, &inv12, &inv12);
                self.scale_out(d, &mid, &inv23);
                self.scale_in(b, &s23);
                change(&s12).max(change(&s23))
            }
            _ => 0.0,
        }
    }
}

/// Equalize each chain until its scales settle; chains are independent, so the cores
/// take them one after another. Cancellation is checked between iterations.
fn equalize_chains(
    chains: &[Vec<Vec<&Member>>],
    works: &mut [Work],
    options: &CleOptions,
    cancel: &CancelToken,
) -> Result<()> {
    let passes = match options.scaling {
        CleScaling::Once => 1,
        CleScaling::Settle => options.max_iterations.max(1),
    };
    let run = |sets: &[Vec<&Member>], work: &mut Work| -> Result<()> {
        while !work.converged && work.iterations < passes {
            cancel.check()?;
            work.iterations += 1;
            work.last_change = sets.iter().map(|s| work.equalize(s)).fold(0.0, f32::max);
            work.converged = work.last_change <= options.tolerance;
        }
        let members = sets.iter().flatten().map(|m| (m.node, *m)).collect();
        work.apply_to_weights(&members);
        Ok(())
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(chains.len());
    if threads <= 1 {
        return chains
            .iter()
            .zip(works.iter_mut())
            .try_for_each(|(c, w)| run(c, w));
    }
    let slots: Vec<std::sync::Mutex<&mut Work>> =
        works.iter_mut().map(std::sync::Mutex::new).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(slot) = slots.get(k) else {
                            return Ok(());
                        };
                        // Each slot is taken by one worker only: the lock never waits.
                        let mut work = slot.lock().unwrap_or_else(|e| e.into_inner());
                        run(&chains[k], &mut work)?;
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(Error::runtime("a CLE worker panicked")))
        })
    })
}

/// Relu in place of Clip nodes `nodes` (indices into the graph); their bounds are dropped.
fn clips_to_relu(model: Model, nodes: &[usize]) -> Result<Model> {
    if nodes.is_empty() {
        return Ok(model);
    }
    let source = model.source().to_string();
    let mut proto = model.into_proto();
    let g = proto.graph.as_mut().expect("graph checked at load");
    let mut bounds = HashSet::new();
    for &i in nodes {
        let n = &mut g.node[i];
        bounds.extend(n.input.iter().skip(1).filter(|s| !s.is_empty()).cloned());
        n.op_type = "Relu".into();
        n.input.truncate(1);
        n.attribute.clear();
    }
    prune_unused(g, &bounds);
    Model::from_proto(proto, &source)
}

/// Turn the named Clip(0, m) nodes into Relu, nothing else: the reference a CLE with
/// `relu6_to_relu` must match exactly.
pub fn convert_to_relu(model: &Model, nodes: &[String]) -> Result<Model> {
    let graph = model.graph();
    let mut indices = Vec::new();
    for name in nodes {
        let i = (0..graph.node.len())
            .find(|&i| node_label(graph, i) == *name)
            .ok_or_else(|| Error::input(format!("{}: no node '{name}'", model.source())))?;
        if graph.node[i].op_type != "Clip" {
            return Err(Error::input(format!(
                "{}: node '{name}' is a {}, not a Clip",
                model.source(),
                graph.node[i].op_type
            )));
        }
        indices.push(i);
    }
    clips_to_relu(model.clone(), &indices)
}

/// How many sets CLE would equalize on a model (its BNs folded first, as [`equalize`] does),
/// as it is and with its Clip(0, m) activations turned into Relu: where the first is 0 and the
/// second is not, the Relu6s stop every chain and plain CLE changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CleReach {
    pub sets: usize,
    pub sets_with_relu: usize,
}

impl CleReach {
    /// The Relu6s (Clip(0, m)) stop every chain that Relu would let through.
    pub fn relu6_stops_every_chain(&self) -> bool {
        self.sets == 0 && self.sets_with_relu > 0
    }
}

/// [`CleReach`] of `model`: the chains are planned, nothing is equalized.
pub fn reach(model: &Model) -> Result<CleReach> {
    let folded = fold_batchnorms(model)?.model;
    let count = |relu: bool| plan(&folded, relu).chains.iter().map(Vec::len).sum();
    Ok(CleReach {
        sets: count(false),
        sets_with_relu: count(true),
    })
}

/// Calibration samples high-bias absorption is limited to: it moves only what keeps the
/// function exact on them (see `hba`).
#[derive(Clone, Copy)]
pub struct HbaSamples<'a> {
    pub data: &'a Dataset,
    pub options: RunOptions,
}

/// Equalize `model` (folding its BNs first when it still has foldable ones). `stats` are
/// the BN statistics of an earlier fold, if any; HBA needs them, and absorbs what they
/// suggest (statistical: it may change outputs; see [`equalize_checked`]).
pub fn equalize(
    model: &Model,
    stats: &BnStats,
    options: &CleOptions,
    cancel: &CancelToken,
) -> Result<CleOutcome> {
    equalize_checked(model, stats, options, None, cancel)
}

/// [`equalize`], with HBA limited to what keeps the outputs on `samples` unchanged.
pub fn equalize_checked(
    model: &Model,
    stats: &BnStats,
    options: &CleOptions,
    samples: Option<HbaSamples>,
    cancel: &CancelToken,
) -> Result<CleOutcome> {
    let fold = fold_batchnorms(model)?;
    let mut stats = stats.clone();
    // Nothing folded: `fold.model` is the untouched copy CLE edits from here on.
    let (model, folded) = if fold.report.folded.is_empty() {
        (fold.model, None)
    } else {
        stats.merge(fold.stats);
        (fold.model, Some(fold.report))
    };
    cancel.check()?;
    let plan = plan(&model, options.relu6_to_relu);
    let chains: Vec<Vec<Vec<&Member>>> = plan
        .chains
        .iter()
        .map(|c| {
            c.iter()
                .map(|s| s.iter().map(|i| &plan.members[i]).collect())
                .collect()
        })
        .collect();
    let mut works = Vec::with_capacity(chains.len());
    let mut layers = Vec::new();
    for chain in &chains {
        let mut work = Work::default();
        for m in chain.iter().flatten() {
            if work.weights.contains_key(&m.node) {
                continue;
            }
            let w = model.weight(&m.weight).expect("member weight");
            let flat = match w.as_slice() {
                Some(s) => s.to_vec(),
                None => w.as_standard_layout().iter().copied().collect(),
            };
            layers.push((m, WeightRanges::from_channels(m.layout.out_min_max(&flat))));
            work.layers.insert(m.node, Scaled::new(m.layout, &flat));
            work.weights.insert(m.node, flat);
            if let Some(b) = m.bias.as_ref().and_then(|b| model.weight(b)) {
                work.biases.insert(m.node, b.iter().copied().collect());
            }
        }
        works.push(work);
    }
    equalize_chains(&chains, &mut works, options, cancel)?;
    let iterations = works.iter().map(|w| w.iterations).max().unwrap_or(0);
    let converged = works.iter().all(|w| w.converged);
    let last_change = works.iter().map(|w| w.last_change).fold(0.0, f32::max);

    // Write back, report ranges, carry the statistics along.
    let mut edited = model;
    let mut ranges = Vec::with_capacity(layers.len());
    let mut all: HashMap<usize, Vec<f32>> = HashMap::new();
    let mut biases: HashMap<usize, Vec<f32>> = HashMap::new();
    for w in works {
        for (node, f) in &w.out_scale {
            stats.scale(&plan.members[node].name, f);
        }
        all.extend(w.weights);
        biases.extend(w.biases);
    }
    for (m, before) in layers {
        let data = all.remove(&m.node).unwrap_or_default();
        let after = WeightRanges::from_channels(m.layout.out_min_max(&data));
        let w = ArrayD::from_shape_vec(IxDyn(&m.shape), data)
            .map_err(|e| Error::runtime(format!("{}: {e}", m.name)))?;
        ranges.push(LayerRanges {
            layer: m.name.clone(),
            op: if m.layout.is_depthwise() {
                "DWConv".into()
            } else {
                m.op.clone()
            },
            before,
            after,
        });
        edited.set_weight(&m.weight, w)?;
        if let (Some(name), Some(b)) = (&m.bias, biases.remove(&m.node)) {
            let shape = edited.weight(name).expect("bias").shape().to_vec();
            let b = ArrayD::from_shape_vec(IxDyn(&shape), b)
                .map_err(|e| Error::runtime(format!("{name}: {e}")))?;
            edited.set_weight(name, b)?;
        }
    }
    let graph = edited.graph();
    let mut converted = Vec::new();
    let mut clips = Vec::new();
    let mut hba_links = Vec::new();
    let mut set_reports = Vec::new();
    for set in plan.chains.iter().flatten() {
        let mut activations = Vec::new();
        for pair in set.windows(2) {
            let link = &plan.links[&pair[0]];
            let (name, relu) = match link.between {
                Between::Nothing => ("none".to_string(), false),
                Between::Homogeneous { node, relu_like } => {
                    (graph.node[node].op_type.clone(), relu_like)
                }
                Between::Bounded { node, max } => {
                    if !clips.contains(&node) {
                        clips.push(node);
                        converted.push(ConvertedActivation {
                            node: node_label(graph, node),
                            was: format!("Clip(0, {max})"),
                        });
                    }
                    ("Relu (was Clip)".to_string(), true)
                }
            };
            activations.push(name);
            if relu {
                hba_links.push(HbaLink {
                    layer: plan.members[&pair[0]].name.clone(),
                    next: plan.members[&pair[1]].name.clone(),
                });
            }
        }
        set_reports.push(CleSet {
            layers: set.iter().map(|i| plan.members[i].name.clone()).collect(),
            activations,
        });
    }
    let mut result = clips_to_relu(edited, &clips)?;
    cancel.check()?;
    let hba = if options.hba {
        let mins = match samples {
            Some(s) if !hba_links.is_empty() => Some((
                pre_activation_minimums(&result, &hba_links, s.data, s.options, cancel)?,
                s.data.len(),
            )),
            _ => None,
        };
        let observed = mins.as_ref().map(|(m, n)| (m, *n));
        let (m, r) = absorb(result, &hba_links, &mut stats, options.hba_padded, observed)?;
        result = m;
        Some(r)
    } else {
        None
    };
    Ok(CleOutcome {
        model: result,
        report: CleReport {
            folded,
            sets: set_reports,
            ends: plan.ends,
            converted,
            scaling: options.scaling,
            iterations,
            converged,
            last_change,
            layers: ranges,
            hba,
        },
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_scale_equalizes_two_channels_by_hand() {
        // Channel 0: r1 = 4, r2 = 1 → s = √(4/1) = 2, both ranges become 2 (= √(4·1)).
        // Channel 1: r1 = 0.5, r2 = 8 → s = √(0.5/8) = 0.25, both become 2 (= √(0.5·8)).
        let s = [pair_scale(4.0, 1.0), pair_scale(0.5, 8.0)];
        assert_eq!(s, [2.0, 0.25]);
        assert_eq!([4.0 / s[0], 1.0 * s[0]], [2.0, 2.0]);
        assert_eq!([0.5 / s[1], 8.0 * s[1]], [2.0, 2.0]);
        // s = r1 / √(r1·r2), the paper's form, is the same number.
        assert!((4.0f32 / (4.0f32 * 1.0).sqrt() - s[0]).abs() < 1e-7);
        // A dead channel is left alone.
        assert_eq!(pair_scale(0.0, 3.0), 1.0);
        let (s12, s23) = triple_scales(8.0, 1.0, 1.0);
        // ∛8 = 2: r1/s12 = 2, r2·s12/s23 = 2, r3·s23 = 2.
        assert!((8.0 / s12 - 2.0).abs() < 1e-6 && (s12 / s23 - 2.0).abs() < 1e-6);
        assert!((s23 - 2.0).abs() < 1e-6);
    }
}
