//! Ops kept in float by op type (`--fp32-ops Pow,Sqrt,Log,LSTM`): the activation quantizers
//! such an op would read or write, removed.
//!
//! Some ops need more than 8 bits around them to be usable. A power spectrum (`Pow`, a
//! `Sqrt` magnitude) spans ~1e9 before its `Log`: an 8-bit grid set by the loud frames rounds
//! every quiet bin to zero (openWakeWord's melspectrogram: cosine 0.896, and still 0.952 with
//! 16-bit activations). A recurrent op's state (`LSTM`'s `h`/`c` inputs, its output) has no
//! integer kernel in ONNX Runtime's static QDQ quantizer either. A deployable mixed-precision
//! graph runs these in float, so the simulation must too:
//!
//! - a node of a named op type loses the quantizer on its output and the quantizers feeding
//!   its float inputs (traced back through pass-through ops: a Slice of a Conv's output reads
//!   the Conv's quantizer, which goes);
//! - float then flows forward: a node whose float inputs are all unquantized float values
//!   (an `Add` of two power spectra, a `Mul` after the `Log`) has nothing an integer kernel
//!   could read, so it stays float too, and so on until a Conv / ConvTranspose / Gemm /
//!   MatMul: a layer reads a float input with its quantized weights and quantizes its
//!   output as usual.
//!
//! Weights are untouched: their quantizers are the layers'.

use std::collections::{BTreeSet, HashSet};

use super::points::{passes_through, point_feeding, QuantPoint, COMPUTE_HEADS};
use crate::model::Model;
use crate::{Error, Result};

/// The activation points (values) that keeping `ops` in float removes. Every op type must
/// name at least one node of the model (else a bad-input error listing its op types).
pub fn float_op_points(
    model: &Model,
    points: &[QuantPoint],
    ops: &[String],
) -> Result<BTreeSet<String>> {
    let mut removed = BTreeSet::new();
    if ops.is_empty() {
        return Ok(removed);
    }
    let graph = model.graph();
    for op in ops {
        if !graph.node.iter().any(|n| &n.op_type == op) {
            let types: BTreeSet<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
            return Err(Error::input(format!(
                "--fp32-ops: the model has no {op} node (its op types: {})",
                types.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let is_point = |v: &str| points.iter().any(|p| p.value == v);
    // Values computed in float and left unquantized.
    let mut float: HashSet<String> = HashSet::new();
    for &i in model.index().order() {
        let node = &graph.node[i];
        let outputs = node.output.iter().filter(|o| !o.is_empty());
        let keep_float = if ops.contains(&node.op_type) {
            for input in node.input.iter().filter(|v| !v.is_empty()) {
                if let Some(p) = point_feeding(model, points, input) {
                    removed.insert(p.value.clone());
                }
            }
            true
        } else if passes_through(model, node) {
            node.input.first().is_some_and(|v| float.contains(v))
        } else if COMPUTE_HEADS.contains(&node.op_type.as_str()) {
            false
        } else {
            // The float activations it reads: float values, or values on a quantizer's grid.
            // Constants, shapes and values inside a fused group are neither.
            let mut any_float = false;
            let mut all_float = true;
            for input in node.input.iter().filter(|v| !v.is_empty()) {
                if float.contains(input) {
                    any_float = true;
                } else if point_feeding(model, points, input).is_some() {
                    all_float = false;
                }
            }
            any_float && all_float
        };
        if keep_float {
            for out in outputs {
                float.insert(out.clone());
                if is_point(out) {
                    removed.insert(out.clone());
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::builder::ProtoBuilder;
    use crate::quant::points::activation_points;
    use ndarray::{arr0, ArrayD, IxDyn};

    fn filled(shape: &[usize], seed: f32) -> ArrayD<f32> {
        let n = shape.iter().product::<usize>();
        let values = (0..n).map(|k| ((k as f32 + seed) * 0.37).sin()).collect();
        ArrayD::from_shape_vec(IxDyn(shape), values).unwrap()
    }

    /// A spectrogram front end: x → two Conv (real, imaginary) → Pow² each → Add → Log →
    /// Mul (dB) → Conv, and a magnitude branch: the power's Sqrt → Conv.
    fn spectrogram() -> Model {
        let mut b = ProtoBuilder::new(13);
        b.input("x", &[1, 16])
            .initializer("wr", &filled(&[4, 1, 4], 1.0))
            .initializer("wi", &filled(&[4, 1, 4], 2.0))
            .initializer("w3", &filled(&[2, 4, 1], 3.0))
            .initializer("w4", &filled(&[2, 4, 1], 4.0))
            .initializer("two", &arr0(2.0f32).into_dyn())
            .initializer("ten", &arr0(10.0f32).into_dyn())
            .node("Conv", "conv_re", &["x", "wr"], &["re"], vec![])
            .node("Conv", "conv_im", &["x", "wi"], &["im"], vec![])
            .node("Pow", "sq_re", &["re", "two"], &["p1"], vec![])
            .node("Pow", "sq_im", &["im", "two"], &["p2"], vec![])
            .node("Add", "power", &["p1", "p2"], &["pw"], vec![])
            .node("Log", "log", &["pw"], &["lg"], vec![])
            .node("Mul", "db", &["lg", "ten"], &["db"], vec![])
            .node("Conv", "head", &["db", "w3"], &["z"], vec![])
            .node("Sqrt", "magnitude", &["pw"], &["mag"], vec![])
            .node("Conv", "mag_head", &["mag", "w4"], &["m"], vec![])
            .output("z")
            .output("m");
        b.model("spectrogram").unwrap()
    }

    fn removed(ops: &[&str]) -> Vec<String> {
        let model = spectrogram();
        let points = activation_points(&model).unwrap();
        let ops: Vec<String> = ops.iter().map(|s| s.to_string()).collect();
        float_op_points(&model, &points, &ops)
            .unwrap()
            .into_iter()
            .collect()
    }

    #[test]
    fn every_value_is_a_point_without_float_ops() {
        let model = spectrogram();
        let points: Vec<String> = activation_points(&model)
            .unwrap()
            .into_iter()
            .map(|p| p.value)
            .collect();
        assert_eq!(
            points,
            ["x", "re", "im", "p1", "p2", "pw", "lg", "db", "z", "mag", "m"]
        );
        assert!(removed(&[]).is_empty());
    }

    #[test]
    fn float_ops_drop_their_inputs_outputs_and_what_follows_until_a_layer() {
        // Pow reads the Conv outputs; the Add of two power spectra, the Mul after the Log
        // and the Sqrt read only float values; the last Convs quantize their outputs again.
        assert_eq!(
            removed(&["Pow", "Log"]),
            ["db", "im", "lg", "mag", "p1", "p2", "pw", "re"]
        );
        // Log alone: its input (the power) and what follows it, not the Pow outputs nor the
        // Sqrt, which reads the power's grid.
        assert_eq!(removed(&["Log"]), ["db", "lg", "pw"]);
    }

    #[test]
    fn an_op_type_the_model_lacks_is_refused_naming_it() {
        let model = spectrogram();
        let points = activation_points(&model).unwrap();
        let err = float_op_points(&model, &points, &["LSTM".to_string()]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("no LSTM node") && msg.contains("Pow"), "{msg}");
        assert!(matches!(err, Error::Input(_)), "{err:?}");
    }

    /// Quantsim of the magnitude branch on audio-like frames from quiet to loud: with Pow
    /// and Sqrt in float the quiet frames keep their spectrum, which an 8-bit power grid set
    /// by the loud frames rounds to zero. Both simulations run against the FP32 model.
    #[test]
    fn a_float_power_spectrum_keeps_the_quiet_frames_the_8_bit_grid_loses() {
        use crate::cancel::CancelToken;
        use crate::quant::simulate::QuantsimSettings;
        use crate::quant::simulate::{prepare, simulate, LayerOverride, QuantsimRequest};
        use crate::runtime::{CompiledModel, RunOptions};
        let model = spectrogram();
        let dir = tempfile::tempdir().unwrap();
        let mut rng = crate::quant::test_data::Rng::new(11);
        let n = 64;
        // Amplitudes log-uniform over 40 dB.
        let gains: Vec<f32> = (0..n)
            .map(|k| 10f32.powf(-2.0 * k as f32 / n as f32))
            .collect();
        let x = ndarray::Array3::from_shape_fn((n, 1, 16), |(k, _, _)| gains[k] * rng.normal());
        crate::data::write_npy_f32(&dir.path().join("inputs.npy"), &x.clone().into_dyn()).unwrap();
        // The graph input stays FP32 in both: the grid under test is the spectrum's.
        let keep_x = vec![LayerOverride {
            layer: "x".into(),
            skip: true,
            ..Default::default()
        }];
        let run = |fp32_ops: &[&str]| {
            let settings = QuantsimSettings {
                overrides: keep_x.clone(),
                fp32_ops: fp32_ops.iter().map(|s| s.to_string()).collect(),
                ..QuantsimSettings::default()
            };
            let req = QuantsimRequest {
                data: dir.path().to_path_buf(),
                calibration_size: 32,
                seed: 0,
                settings: settings.clone(),
                options: RunOptions::default(),
                metric: Default::default(),
            };
            let prepared = prepare(&model, &req, true, &CancelToken::new(), &|_, _, _| {}).unwrap();
            let sim = simulate(&model, &prepared, &settings).unwrap();
            let compiled = CompiledModel::compile(&sim.model, &[vec![1, 16]], n, &[]).unwrap();
            let out = compiled.run(&[x.view().into_dyn()]).unwrap();
            (sim, out[1].clone())
        };
        let reference = {
            let compiled = CompiledModel::compile(&model, &[vec![1, 16]], n, &[]).unwrap();
            compiled.run(&[x.view().into_dyn()]).unwrap()[1].clone()
        };
        // Mean over frames of the relative error of the magnitude branch's output.
        let error = |out: &ndarray::ArrayD<f32>| {
            (0..n)
                .map(|k| {
                    let (o, r) = (
                        out.index_axis(ndarray::Axis(0), k),
                        reference.index_axis(ndarray::Axis(0), k),
                    );
                    let noise: f32 = o.iter().zip(r.iter()).map(|(a, b)| (a - b).powi(2)).sum();
                    let signal: f32 = r.iter().map(|b| b * b).sum();
                    (noise / signal).sqrt()
                })
                .sum::<f32>()
                / n as f32
        };
        let (all, all_out) = run(&[]);
        let (float, float_out) = run(&["Pow", "Sqrt"]);
        for v in ["re", "im", "p1", "p2", "pw", "mag"] {
            assert!(all.activations.contains_key(v), "{v}");
            assert!(!float.activations.contains_key(v), "{v}");
        }
        assert!(float.activations.contains_key("m"));
        assert_eq!(float.weights, all.weights);
        let (e_all, e_float) = (error(&all_out), error(&float_out));
        assert!(e_float > 0.0, "weights and the output are still quantized");
        assert!(
            e_float * 3.0 < e_all,
            "float {e_float} vs quantized {e_all}"
        );
    }
}
