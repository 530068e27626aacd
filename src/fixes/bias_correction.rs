//! Bias correction (Nagel et al. 2019, "Data-Free Quantization", §4.2; AIMET's bias
//! correction): quantization shifts the mean of a layer's output; adding the shift back to
//! the bias removes it.
//!
//! - **Empirical**: for each layer in topological order, the per-channel mean of the layer's
//!   output over the calibration data in FP32 and in the simulation (with every earlier
//!   layer already corrected), and bias += E[y_fp32] − E[y_quant]. One FP32 pass, then one
//!   simulated pass per layer.
//! - **Analytical**: no data. The layer's input is the output of a BatchNormalization
//!   (through an optional Relu/Clip), so its per-channel mean is that of a normal N(β, γ²)
//!   through the activation (a clipped normal); the weight error ε = W_q − W shifts the
//!   output mean by ε·E[x], and bias −= ε·E[x]. Only weight noise is corrected, and border
//!   outputs of a padded conv see fewer inputs than the kernel (the usual approximation).
//! - **Hybrid**: analytical where the input's BN statistics are known, empirical elsewhere.
//!
//! The result is the FP32 model with corrected biases (a Conv or Gemm without one gets a bias
//! input); quantize it with the same settings to use it. MatMul layers have no bias input and
//! are left alone (reported).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use ndarray::{Array1, ArrayD, ArrayViewD, Axis, IxDyn};
use serde::{Deserialize, Serialize};
use tract_onnx::pb::NodeProto;

use crate::cancel::CancelToken;
use crate::data::Dataset;
use crate::experiment::evaluate::{sample_shapes, select_samples, Subset};
use crate::fixes::BnStats;
use crate::model::graph::{node_label, Producer};
use crate::model::tensor::tensor_from_array;
use crate::model::{attrs, Layer, LayerKind, Model};
use crate::quant::qdq::Names;
use crate::quant::simulate::{prepare, simulate, Prepared, QuantsimRequest};
use crate::runtime::{CompiledModel, RunOptions};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BcMode {
    Empirical,
    Analytical,
    #[default]
    Hybrid,
}

impl fmt::Display for BcMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BcMode::Empirical => "empirical",
            BcMode::Analytical => "analytical",
            BcMode::Hybrid => "hybrid",
        })
    }
}

impl FromStr for BcMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "empirical" => Ok(BcMode::Empirical),
            "analytical" => Ok(BcMode::Analytical),
            "hybrid" => Ok(BcMode::Hybrid),
            _ => Err(Error::input(format!(
                "unknown bias correction mode '{s}' (expected empirical, analytical or hybrid)"
            ))),
        }
    }
}

/// What happened to one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerCorrection {
    pub layer: String,
    /// `empirical`, `analytical`, or why it was skipped.
    pub how: String,
    /// Largest and mean absolute bias change.
    pub max_abs: f32,
    pub mean_abs: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BcReport {
    pub mode: BcMode,
    pub layers: Vec<LayerCorrection>,
    /// Simulated passes over the calibration data (plus one FP32 pass when any layer was
    /// corrected empirically).
    pub simulated_passes: usize,
    pub samples: usize,
}

/// Correct the biases of `model` for `req.settings`. `bn_stats` holds the statistics of
/// BatchNormalizations folded into layers (kept by BN folding); BNs still in the graph are
/// read from it directly. `progress(stage, done, total)`.
pub fn bias_correct(
    model: &Model,
    req: &QuantsimRequest,
    mode: BcMode,
    bn_stats: &BnStats,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<(Model, BcReport)> {
    let prepared = prepare(model, req, true, cancel, progress)?;
    let mut corrected = with_biases(model, &prepared.layers)?;
    let data = select_samples(
        &req.data,
        Subset::Calibration,
        req.calibration_size,
        req.seed,
    )?
    .data;
    let shapes = sample_shapes(model, &data)?;
    let options = req.options;

    // Which layers go which way.
    let plan: Vec<std::result::Result<Route, &str>> = prepared
        .layers
        .iter()
        .map(|l| route(&corrected, l, mode, bn_stats))
        .collect();
    let empirical: Vec<usize> = (0..plan.len())
        .filter(|&i| matches!(plan[i], Ok(Route::Empirical)))
        .collect();
    let fp32_means = if empirical.is_empty() {
        BTreeMap::new()
    } else {
        let outputs: Vec<String> = empirical
            .iter()
            .map(|&i| prepared.layers[i].output.clone())
            .collect();
        progress("fp32 means", 0, 1);
        let means = channel_means(
            &corrected, &prepared, &outputs, &data, &shapes, options, cancel,
        )?;
        progress("fp32 means", 1, 1);
        means
    };

    let mut report = BcReport {
        mode,
        layers: Vec::new(),
        simulated_passes: 0,
        samples: data.len(),
    };
    let total = prepared.layers.len();
    // Biases stay FP32 in the simulation under the same names, so one simulated model is
    // built and each correction is written into both.
    let mut sim = simulate(&corrected, &prepared, &req.settings)?;
    for (i, layer) in prepared.layers.iter().enumerate() {
        progress("bias correction", i, total);
        cancel.check()?;
        let how = match &plan[i] {
            Ok(how) => how,
            Err(why) => {
                report.layers.push(skipped(layer, why));
                continue;
            }
        };
        let Some(quantized) = sim.weights.iter().find(|w| w.weight == layer.weight) else {
            report.layers.push(skipped(layer, "left FP32"));
            continue;
        };
        let delta = match how {
            Route::Empirical => {
                let q = channel_means(
                    &sim.model,
                    &prepared,
                    std::slice::from_ref(&layer.output),
                    &data,
                    &shapes,
                    options,
                    cancel,
                )?;
                report.simulated_passes += 1;
                let (Some(f), Some(q)) = (fp32_means.get(&layer.output), q.get(&layer.output))
                else {
                    report.layers.push(skipped(layer, "output not captured"));
                    continue;
                };
                f - q
            }
            Route::Analytical(input_mean) => {
                let w = corrected
                    .weight(&layer.weight)
                    .expect("layer weight exists");
                let wq = sim
                    .model
                    .weight(&quantized.weight)
                    .expect("quantized weight");
                -(weight_error_times_mean(layer, &(wq - w), input_mean)?)
            }
        };
        let bias_name = layer_bias(&corrected, layer)?;
        let mut bias = corrected
            .weight(&bias_name)
            .expect("bias added")
            .clone()
            .into_shape_with_order(IxDyn(&[delta.len()]))
            .map_err(|e| Error::runtime(format!("bias of '{}': {e}", layer.name)))?;
        bias += &delta.view().into_dyn();
        let shape = corrected
            .weight(&bias_name)
            .expect("bias added")
            .shape()
            .to_vec();
        let bias = bias
            .into_shape_with_order(IxDyn(&shape))
            .map_err(|e| Error::runtime(format!("bias of '{}': {e}", layer.name)))?;
        sim.model.set_weight(&bias_name, bias.clone())?;
        corrected.set_weight(&bias_name, bias)?;
        let abs = delta.mapv(f32::abs);
        report.layers.push(LayerCorrection {
            layer: layer.name.clone(),
            how: match how {
                Route::Empirical => "empirical".into(),
                Route::Analytical(_) => "analytical".into(),
            },
            max_abs: abs.fold(0.0, |a, &b| a.max(b)),
            mean_abs: abs.mean().unwrap_or(0.0),
        });
    }
    progress("bias correction", total, total);
    Ok((corrected, report))
}

fn skipped(layer: &Layer, why: &str) -> LayerCorrection {
    LayerCorrection {
        layer: layer.name.clone(),
        how: format!("skipped: {why}"),
        max_abs: 0.0,
        mean_abs: 0.0,
    }
}

enum Route {
    Empirical,
    /// The per-channel mean of the layer's input.
    Analytical(Vec<f32>),
}

fn route(
    model: &Model,
    layer: &Layer,
    mode: BcMode,
    bn_stats: &BnStats,
) -> std::result::Result<Route, &'static str> {
    if layer.kind == LayerKind::MatMul {
        return Err("no bias input (MatMul)");
    }
    let analytical = || input_mean(model, layer, bn_stats).map(Route::Analytical);
    match mode {
        BcMode::Empirical => Ok(Route::Empirical),
        BcMode::Analytical => {
            analytical().ok_or("input is not a BatchNormalization output (through Relu/Clip)")
        }
        BcMode::Hybrid => Ok(analytical().unwrap_or(Route::Empirical)),
    }
}

/// The per-channel mean of the layer's input when it is a BN output (in the graph, or folded
/// with known statistics) through an optional Relu / Clip.
fn input_mean(model: &Model, layer: &Layer, bn_stats: &BnStats) -> Option<Vec<f32>> {
    let graph = model.graph();
    let mut value = layer.input.clone();
    let (mut lo, mut hi) = (f32::NEG_INFINITY, f32::INFINITY);
    if let Some(Producer::Node { node, .. }) = model.index().producer(&value) {
        let n = &graph.node[node];
        if let Some((a, b)) = activation_bounds(model, n) {
            lo = a;
            hi = b;
            value = n.input.first()?.clone();
        }
    }
    let (mean, std) = output_stats(model, &value, bn_stats)?;
    Some(
        mean.iter()
            .zip(&std)
            .map(|(&b, &g)| {
                clipped_normal_mean(b as f64, g.abs() as f64, lo as f64, hi as f64) as f32
            })
            .collect(),
    )
}

/// Relu → [0, ∞); Clip(min, max) → its bounds (attributes or constant inputs).
fn activation_bounds(model: &Model, n: &NodeProto) -> Option<(f32, f32)> {
    match n.op_type.as_str() {
        "Relu" => Some((0.0, f32::INFINITY)),
        "Clip" => {
            let input = |k: usize| {
                n.input
                    .get(k)
                    .filter(|v| !v.is_empty())
                    .and_then(|v| model.weight(v))
                    .and_then(|w| w.iter().next().copied())
            };
            let lo = attrs::float(n, "min")
                .or_else(|| input(1))
                .unwrap_or(f32::NEG_INFINITY);
            let hi = attrs::float(n, "max")
                .or_else(|| input(2))
                .unwrap_or(f32::INFINITY);
            Some((lo, hi))
        }
        _ => None,
    }
}

/// Per-channel mean and std of `value`: the output of a BatchNormalization (β, |γ|), or of a
/// layer a BN was folded into (the statistics folding kept).
fn output_stats(model: &Model, value: &str, bn_stats: &BnStats) -> Option<(Vec<f32>, Vec<f32>)> {
    let Producer::Node { node, .. } = model.index().producer(value)? else {
        return None;
    };
    if let Some(s) = bn_stats.get(&node_label(model.graph(), node)) {
        return Some((s.mean.clone(), s.std.clone()));
    }
    let n = &model.graph().node[node];
    if n.op_type != "BatchNormalization" {
        return None;
    }
    let scale = model.weight(n.input.get(1)?)?;
    let bias = model.weight(n.input.get(2)?)?;
    Some((
        bias.iter().copied().collect(),
        scale.iter().map(|g| g.abs()).collect(),
    ))
}

/// E[clip(X, lo, hi)] for X ~ N(mu, sigma²).
pub fn clipped_normal_mean(mu: f64, sigma: f64, lo: f64, hi: f64) -> f64 {
    if sigma <= 0.0 {
        return mu.clamp(lo, hi);
    }
    let a = (lo - mu) / sigma;
    let b = (hi - mu) / sigma;
    let (cdf_a, cdf_b) = (normal_cdf(a), normal_cdf(b));
    let low = if lo.is_finite() { lo * cdf_a } else { 0.0 };
    let high = if hi.is_finite() {
        hi * (1.0 - cdf_b)
    } else {
        0.0
    };
    low + high + mu * (cdf_b - cdf_a) + sigma * (normal_pdf(a) - normal_pdf(b))
}

fn normal_pdf(x: f64) -> f64 {
    if x.is_infinite() {
        return 0.0;
    }
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// erf by its Maclaurin series near 0 and the continued fraction of erfc beyond (|error| <
/// 1e-12 over the line), enough for expectations in f32.
fn erf(x: f64) -> f64 {
    if x.is_infinite() {
        return x.signum();
    }
    let ax = x.abs();
    let v = if ax < 2.5 {
        // Σ (−1)^n x^(2n+1) / (n! (2n+1)), 2/√π
        let mut term = ax;
        let mut sum = ax;
        let x2 = ax * ax;
        for n in 1..100 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(x) = exp(−x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …))))
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (ax + f);
        }
        1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f)
    };
    v.copysign(x)
}

/// Per output channel Σ over input channels and kernel positions of ε · E[x].
fn weight_error_times_mean(layer: &Layer, eps: &ArrayD<f32>, mean: &[f32]) -> Result<Array1<f32>> {
    let out = layer.out_channels;
    let groups = layer.groups.max(1);
    let bad = || {
        Error::runtime(format!(
            "layer '{}': weight {:?} does not fit {} input channel means",
            layer.name,
            eps.shape(),
            mean.len()
        ))
    };
    let mut delta = Array1::<f32>::zeros(out);
    match layer.kind {
        LayerKind::Conv | LayerKind::GroupedConv | LayerKind::DepthwiseConv => {
            // [Cout, Cin/g, k…]
            let cin_g = eps.shape()[1];
            let per_group = out / groups;
            for (o, w) in eps.axis_iter(Axis(0)).enumerate() {
                let g = o / per_group.max(1);
                for (c, wc) in w.axis_iter(Axis(0)).enumerate() {
                    let m = *mean.get(g * cin_g + c).ok_or_else(bad)?;
                    delta[o] += wc.sum() * m;
                }
            }
        }
        LayerKind::ConvTranspose => {
            // [Cin, Cout/g, k…]
            let cout_g = eps.shape()[1];
            let cin_g = eps.shape()[0] / groups;
            for (c, w) in eps.axis_iter(Axis(0)).enumerate() {
                let g = c / cin_g.max(1);
                let m = *mean.get(c).ok_or_else(bad)?;
                for (k, wk) in w.axis_iter(Axis(0)).enumerate() {
                    delta[g * cout_g + k] += wk.sum() * m;
                }
            }
        }
        LayerKind::Gemm => {
            // Output channels on the axis of length `out` (transB decides which).
            let axis = if eps.shape()[0] == out && eps.shape().get(1) == Some(&mean.len()) {
                0
            } else {
                1
            };
            for (o, w) in eps.axis_iter(Axis(axis)).enumerate() {
                for (c, &e) in w.iter().enumerate() {
                    delta[o] += e * *mean.get(c).ok_or_else(bad)?;
                }
            }
        }
        LayerKind::MatMul => return Err(bad()),
    }
    Ok(delta)
}

/// The layer's bias value name (every layer has one after [`with_biases`]).
fn layer_bias(model: &Model, layer: &Layer) -> Result<String> {
    let node = &model.graph().node[layer.node];
    node.input
        .get(2)
        .filter(|b| !b.is_empty() && model.weight(b).is_some())
        .cloned()
        .ok_or_else(|| Error::runtime(format!("layer '{}' has no float bias", layer.name)))
}

/// `model` with a zero bias on every Conv / ConvTranspose / Gemm layer that has none (the
/// function is unchanged).
pub fn with_biases(model: &Model, layers: &[Layer]) -> Result<Model> {
    let mut proto = model.proto().clone();
    let graph = proto.graph.as_mut().expect("graph checked at load");
    let mut names = Names::of(graph);
    let mut added = false;
    for layer in layers {
        if layer.kind == LayerKind::MatMul {
            continue;
        }
        let node = &mut graph.node[layer.node];
        let has = node.input.get(2).is_some_and(|b| !b.is_empty());
        if has {
            continue;
        }
        let name = names.fresh(&format!("{}_bias", layer.name));
        graph.initializer.push(tensor_from_array(
            &name,
            &ArrayD::<f32>::zeros(IxDyn(&[layer.out_channels])),
        ));
        node.input.resize(2, String::new());
        node.input.push(name);
        added = true;
    }
    if !added {
        return Ok(model.clone());
    }
    Model::from_proto(proto, model.source())
}

/// Per-channel means of `outputs` of `model` over `data` (channel axis 1, or the last axis of
/// a MatMul output).
fn channel_means(
    model: &Model,
    prepared: &Prepared,
    outputs: &[String],
    data: &Dataset,
    shapes: &[Vec<usize>],
    options: RunOptions,
    cancel: &CancelToken,
) -> Result<BTreeMap<String, Array1<f32>>> {
    let compiled = CompiledModel::compile(model, shapes, options.batch_size, outputs)?;
    let slots: Vec<(String, usize, usize)> = outputs
        .iter()
        .filter_map(|name| {
            let slot = compiled.output_names().iter().position(|n| n == name)?;
            let matmul = prepared
                .layers
                .iter()
                .any(|l| &l.output == name && l.kind == LayerKind::MatMul);
            Some((name.clone(), slot, if matmul { usize::MAX } else { 1 }))
        })
        .collect();
    let mut sums: BTreeMap<String, (Array1<f64>, u64)> = BTreeMap::new();
    compiled.run_dataset_streaming(data, options, cancel, &|_, _| {}, &mut |_, outs| {
        for (name, slot, axis) in &slots {
            let out = &outs[*slot];
            let axis = if *axis == usize::MAX {
                out.ndim() - 1
            } else {
                *axis
            };
            let (sum, count) = channel_sums(out.view(), axis)?;
            let entry = sums
                .entry(name.clone())
                .or_insert_with(|| (Array1::zeros(sum.len()), 0));
            entry.0 += &sum;
            entry.1 += count;
        }
        Ok(())
    })?;
    Ok(sums
        .into_iter()
        .map(|(k, (s, n))| (k, s.mapv(|v| (v / n.max(1) as f64) as f32)))
        .collect())
}

fn channel_sums(a: ArrayViewD<f32>, axis: usize) -> Result<(Array1<f64>, u64)> {
    if axis >= a.ndim() {
        return Err(Error::runtime(format!(
            "output of rank {} has no channel axis {axis}",
            a.ndim()
        )));
    }
    let per_channel = a.len() / a.shape()[axis].max(1);
    let sums = a
        .axis_iter(Axis(axis))
        .map(|c| c.iter().map(|&v| v as f64).sum())
        .collect();
    Ok((sums, per_channel as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_normal_mean_matches_closed_forms_and_sampling() {
        // No clipping: the mean.
        assert!(
            (clipped_normal_mean(0.7, 2.0, f64::NEG_INFINITY, f64::INFINITY) - 0.7).abs() < 1e-12
        );
        // ReLU of N(0, 1): 1/√(2π).
        let relu = clipped_normal_mean(0.0, 1.0, 0.0, f64::INFINITY);
        assert!(
            (relu - 1.0 / (2.0 * std::f64::consts::PI).sqrt()).abs() < 1e-9,
            "{relu}"
        );
        // ReLU6 of N(2, 3²) against a fine quadrature.
        let (mu, s) = (2.0f64, 3.0f64);
        let n = 200_000;
        let mut q = 0.0;
        for k in 0..n {
            let x = mu - 10.0 * s + 20.0 * s * (k as f64 + 0.5) / n as f64;
            q += x.clamp(0.0, 6.0) * normal_pdf((x - mu) / s) / s * (20.0 * s / n as f64);
        }
        let e = clipped_normal_mean(mu, s, 0.0, 6.0);
        assert!((e - q).abs() < 1e-6, "{e} vs {q}");
        // Zero spread: the clipped mean.
        assert_eq!(clipped_normal_mean(7.0, 0.0, 0.0, 6.0), 6.0);
    }

    #[test]
    fn erf_is_accurate_across_the_line() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (3.0, 0.9999779095030014),
            (-1.5, -0.9661051464753108),
        ] {
            assert!(
                (erf(x) - want).abs() < 1e-12,
                "erf({x}) = {} not {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn analytical_shift_sums_weight_error_times_input_mean_per_group() {
        // Depthwise 2 channels, 1×2 kernel: each output sees only its own channel.
        let layer = Layer {
            name: "dw".into(),
            node: 0,
            kind: LayerKind::DepthwiseConv,
            weight: "w".into(),
            bias: None,
            weight_shape: vec![2, 1, 1, 2],
            in_channels: 2,
            out_channels: 2,
            kernel: vec![1, 2],
            groups: 2,
            strides: vec![1, 1],
            pads: vec![0; 4],
            dilations: vec![1, 1],
            input: "x".into(),
            output: "y".into(),
            input_shape: None,
            output_shape: None,
            params: 4,
            macs: None,
        };
        let eps = ArrayD::from_shape_vec(IxDyn(&[2, 1, 1, 2]), vec![0.1, 0.2, -0.5, 0.0]).unwrap();
        let d = weight_error_times_mean(&layer, &eps, &[2.0, 4.0]).unwrap();
        assert!(
            (d[0] - 0.6).abs() < 1e-6 && (d[1] + 2.0).abs() < 1e-6,
            "{d:?}"
        );
    }
}

#[cfg(test)]
mod model_tests {
    use super::*;
    use crate::quant::points::tests::sample_model;
    use crate::quant::simulate::tests::request;
    use crate::quant::simulate::{quantsim, QuantsimSettings};

    fn accuracy(model: &Model, req: &QuantsimRequest) -> f64 {
        quantsim(model, req, &CancelToken::new(), &|_, _, _| {})
            .unwrap()
            .report
            .score
            .accuracy
            .unwrap()
    }

    /// W4A8 per tensor on the sample MobileNetV2 is where quantization hurts (≈70 %); both
    /// corrections must recover a large part of it, and leave the FP32 function untouched
    /// where nothing is quantized.
    #[test]
    fn bias_correction_recovers_w4a8_on_mbv2() {
        let model = sample_model("mbv2_digits.onnx");
        let req = request(QuantsimSettings {
            w_bits: 4,
            ..Default::default()
        });
        let plain = accuracy(&model, &req);
        let correct = |mode| {
            bias_correct(
                &model,
                &req,
                mode,
                &BnStats::default(),
                &CancelToken::new(),
                &|_, _, _| {},
            )
            .unwrap()
        };
        let (hybrid, report) = correct(BcMode::Hybrid);
        let hows: Vec<&str> = report.layers.iter().map(|l| l.how.as_str()).collect();
        assert!(
            hows.contains(&"analytical") && hows.contains(&"empirical"),
            "{hows:?}"
        );
        let after = accuracy(&hybrid, &req);
        assert!(after > plain + 0.1, "hybrid {after} vs plain {plain}");
        let (analytical, report) = correct(BcMode::Analytical);
        assert_eq!(report.simulated_passes, 0);
        assert!(report
            .layers
            .iter()
            .any(|l| l.how.starts_with("skipped: input is not")));
        assert!(
            accuracy(&analytical, &req) > plain,
            "analytical vs plain {plain}"
        );
    }
}

#[cfg(test)]
mod bias_tests {
    use super::*;
    use crate::quant::points::tests::sample_model;

    #[test]
    fn zero_biases_leave_the_function_unchanged() {
        let model = sample_model("mbv2_digits.onnx");
        let shapes = model.shapes(None).unwrap();
        let layers = model.layers(&shapes).unwrap();
        let with = with_biases(&model, &layers).unwrap();
        let missing = layers.iter().filter(|l| l.bias.is_none()).count();
        assert!(missing > 0, "the sample has convs without bias");
        for l in &layers {
            assert!(layer_bias(&with, l).is_ok(), "{}", l.name);
        }
        let data = select_samples(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/digits"),
            Subset::Evaluation,
            200,
            0,
        )
        .unwrap()
        .data;
        let shapes = sample_shapes(&model, &data).unwrap();
        let run = |m: &Model| {
            CompiledModel::compile(m, &shapes, 16, &[])
                .unwrap()
                .run_dataset(
                    &data,
                    RunOptions::default(),
                    &CancelToken::new(),
                    &|_, _| {},
                )
                .unwrap()
                .outputs
                .remove(0)
        };
        assert_eq!(run(&model), run(&with));
    }
}
