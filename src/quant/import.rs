//! Encodings from a file instead of calibration: match an [`EncodingsFile`] to a model
//! (every tensor exists, per-channel counts fit the weight's output axis) and build the
//! simulated model with exactly those grids — weights fake-quantized with the file's
//! encodings, activation quantizers where the file puts them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use super::aimet::AimetTensorEncoding;
use super::bias::{bias_grids, check_file_grid, put_on_grids, with_file_grids, BiasGrid};
use super::encoding::{Encoding, QuantSpec};
use super::encodings_file::{read_encodings_file, EncodingsFile};
use super::per_channel::{fake_quant_tensor, fake_quant_weight};
use super::points::{weight_quantizers, WeightQuantizer};
use super::qdq::{
    build_quantsim, ActivationOps, QuantMode, SimConfig, SimModel, WeightConfig, WeightEncodings,
};
use super::simulate::{evaluate_sim, QuantsimOutcome, QuantsimRequest};
use super::Scheme;
use crate::cancel::CancelToken;
use crate::model::graph::Producer;
use crate::model::Model;
use crate::{Error, Result};

/// A file's encodings matched to a model: weights in layer order with their channel axis,
/// activations by value name.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEncodings {
    pub weights: Vec<WeightEncodings>,
    pub activations: BTreeMap<String, Encoding>,
    /// The file's int32 bias grids (none in files without bias entries: the simulation
    /// then derives them as a calibrated quantsim does).
    pub biases: Vec<BiasGrid>,
}

/// Read `path` and match it to `model`; errors name the file and the tensor. `pins` are
/// the per-sample input shapes to analyse the model at (the dataset's), as every command
/// opens a model: symbolic sizes other than the batch often defeat the analysis.
pub fn load_model_encodings(
    model: &Model,
    path: &Path,
    pins: Option<&[Vec<usize>]>,
) -> Result<ModelEncodings> {
    let file = read_encodings_file(path)?;
    let shapes = model.shapes(pins)?;
    match_encodings_at(model, &file, &shapes)
        .map_err(|e| Error::input(format!("{}: {e}", path.display())))
}

/// Match a parsed file to `model`: parameter entries must name a layer's weight (per-channel
/// with one encoding per output channel), activation entries a value computed by a node or
/// fed as a graph input, one per-tensor encoding each.
pub fn match_encodings(model: &Model, file: &EncodingsFile) -> Result<ModelEncodings> {
    match_encodings_at(model, file, &model.shapes(None)?)
}

/// [`match_encodings`] with the model's shapes already analysed.
fn match_encodings_at(
    model: &Model,
    file: &EncodingsFile,
    shapes: &crate::model::ModelShapes,
) -> Result<ModelEncodings> {
    let layers = model.layers(shapes)?;
    let quantizers = weight_quantizers(model, &layers)?;
    let mut params: HashMap<&str, &AimetTensorEncoding> = HashMap::new();
    for p in &file.params {
        if params.insert(p.name.as_str(), p).is_some() {
            return Err(Error::input(format!(
                "param_encodings lists '{}' twice",
                p.name
            )));
        }
        if !quantizers.iter().any(|q| q.weight == p.name) {
            return Err(Error::input(format!(
                "param_encodings names '{}', which is not the weight of a Conv, ConvTranspose, \
                 Gemm or MatMul layer of {}",
                p.name,
                model.source()
            )));
        }
    }
    let weights = quantizers
        .iter()
        .filter_map(|q| {
            params
                .get(q.weight.as_str())
                .map(|p| weight_encodings(q, p))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut activations = BTreeMap::new();
    for a in &file.activations {
        let encoding = activation_encoding(model, a)?;
        if activations.insert(a.name.clone(), encoding).is_some() {
            return Err(Error::input(format!(
                "activation_encodings lists '{}' twice",
                a.name
            )));
        }
    }
    for (i, b) in file.biases.iter().enumerate() {
        check_file_grid(model, b)?;
        if file.biases[..i].iter().any(|o| o.bias == b.bias) {
            return Err(Error::input(format!(
                "param_encodings lists '{}' twice",
                b.bias
            )));
        }
    }
    Ok(ModelEncodings {
        weights,
        activations,
        biases: file.biases.clone(),
    })
}

fn weight_encodings(q: &WeightQuantizer, p: &AimetTensorEncoding) -> Result<WeightEncodings> {
    let axis = if p.per_channel {
        let axis = q.axis.ok_or_else(|| {
            Error::input(format!(
                "param_encodings '{}': per-channel encodings for the left operand of layer \
                 '{}', which has no output-channel axis",
                p.name, q.layer
            ))
        })?;
        let channels = q.shape[axis];
        if p.encodings.len() != channels {
            return Err(Error::input(format!(
                "param_encodings '{}': {} per-channel encodings, but the weight of layer '{}' \
                 (shape {:?}) has {channels} output channels on axis {axis}",
                p.name,
                p.encodings.len(),
                q.layer,
                q.shape
            )));
        }
        Some(axis)
    } else {
        None
    };
    Ok(WeightEncodings {
        layer: q.layer.clone(),
        weight: q.weight.clone(),
        axis,
        encodings: p.encodings.clone(),
    })
}

fn activation_encoding(model: &Model, a: &AimetTensorEncoding) -> Result<Encoding> {
    match model.index().producer(&a.name) {
        Some(Producer::Input) | Some(Producer::Node { .. }) => {}
        Some(Producer::Initializer) => {
            return Err(Error::input(format!(
                "activation_encodings names '{}', a stored tensor of {}, not an activation",
                a.name,
                model.source()
            )))
        }
        None => {
            return Err(Error::input(format!(
                "activation_encodings names '{}', which is not a value of {}",
                a.name,
                model.source()
            )))
        }
    }
    match a.encodings.as_slice() {
        [e] => Ok(*e),
        _ => Err(Error::input(format!(
            "activation_encodings '{}': {} encodings; activations are quantized per tensor",
            a.name,
            a.encodings.len()
        ))),
    }
}

/// The simulated model for `encodings` on the FP32 `model`, without calibration: the same
/// graph [`build_quantsim`] makes, with the file's grids.
pub fn sim_from_encodings(model: &Model, encodings: &ModelEncodings) -> Result<SimModel> {
    let mut fake_quantized = model.clone();
    for w in &encodings.weights {
        let mut array = model
            .weight(&w.weight)
            .ok_or_else(|| {
                Error::input(format!(
                    "{}: no float weight '{}'",
                    model.source(),
                    w.weight
                ))
            })?
            .clone();
        match w.axis {
            Some(axis) => fake_quant_weight(&mut array, &w.encodings, axis)?,
            None => fake_quant_tensor(&mut array, &w.encodings[0]),
        }
        fake_quantized.set_weight(&w.weight, array)?;
    }
    // The biases are rounded here: the activation pass below sees no weight encodings.
    let biases = with_file_grids(
        bias_grids(model, &encodings.weights, &encodings.activations),
        &encodings.biases,
    );
    put_on_grids(&mut fake_quantized, &biases)?;
    // Weights are done: the activation pass of build_quantsim adds the quantizers.
    let config = SimConfig {
        mode: QuantMode::ActivationsOnly,
        weights: WeightConfig {
            spec: QuantSpec::new(8, false)?,
            scheme: Scheme::Minmax,
            per_channel: false,
        },
        activation_ops: ActivationOps::Auto,
    };
    let mut sim = build_quantsim(&fake_quantized, &[], &encodings.activations, &config)?;
    sim.weights = encodings.weights.clone();
    sim.biases = biases;
    Ok(sim)
}

/// The quantsim job with encodings from `file` instead of calibration: build the simulated
/// model and score it on the evaluation samples.
pub fn quantsim_from_file(
    model: &Model,
    file: &Path,
    req: &QuantsimRequest,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<QuantsimOutcome> {
    let start = Instant::now();
    // The model is analysed at the dataset's shapes, as the calibrated quantsim does.
    let selected = crate::experiment::evaluate::select_samples(
        &req.data,
        crate::experiment::evaluate::Subset::Evaluation,
        req.calibration_size,
        req.seed,
    )?;
    let pins = crate::experiment::evaluate::sample_shapes(model, &selected.data)?;
    let encodings = load_model_encodings(model, file, Some(&pins))?;
    let sim = sim_from_encodings(model, &encodings)?;
    let load_seconds = start.elapsed().as_secs_f64();
    cancel.check()?;
    let report = evaluate_sim(model, &sim, req, cancel, progress)?;
    Ok(QuantsimOutcome {
        // The file settles every quantizer: no rule of ours applies.
        kept_fp32: Vec::new(),
        activation_points: encodings.activations.len(),
        fp32_op_points: Vec::new(),
        sim,
        report,
        calibration_seconds: load_seconds,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::experiment::evaluate::Subset;
    use crate::quant::calibration::tests::{digits, options};
    use crate::quant::calibration::{calibrate_activations, ActivationConfig};
    use crate::quant::encodings_file::{encodings_document, parse_encodings, EncodingsVersion};
    use crate::quant::points::{activation_points, tests::sample_model};
    use crate::runtime::CompiledModel;
    use ndarray::ArrayD;
    use serde_json::{json, Value};

    /// A calibrated sim of a sample model: W`w_bits` per channel or per tensor, A8.
    pub fn calibrated_sim(name: &str, w_bits: u8, per_channel: bool) -> (Model, SimModel) {
        calibrated_sim_of(sample_model(name), w_bits, per_channel)
    }

    /// [`calibrated_sim`] of a given model (e.g. a sample with its BNs folded).
    pub fn calibrated_sim_of(model: Model, w_bits: u8, per_channel: bool) -> (Model, SimModel) {
        let points = activation_points(&model).unwrap();
        let layers = model.layers(&model.shapes(None).unwrap()).unwrap();
        let weights = weight_quantizers(&model, &layers).unwrap();
        let config = ActivationConfig {
            spec: QuantSpec::new(8, false).unwrap(),
            scheme: Scheme::TfEnhanced,
        };
        let acts = calibrate_activations(
            &model,
            &points,
            &digits(Subset::Calibration),
            config,
            options(),
            &CancelToken::new(),
            &|_, _| {},
        )
        .unwrap();
        let sim_config = SimConfig {
            mode: QuantMode::WeightsAndActivations,
            weights: WeightConfig {
                spec: QuantSpec::new(w_bits, true).unwrap(),
                scheme: Scheme::TfEnhanced,
                per_channel,
            },
            activation_ops: ActivationOps::Auto,
        };
        let sim = build_quantsim(&model, &weights, &acts, &sim_config).unwrap();
        (model, sim)
    }

    /// First output of `model` on the first `n` evaluation digits.
    pub fn outputs(model: &Model, n: usize) -> ArrayD<f32> {
        let data = digits(Subset::Evaluation);
        let x = data.inputs[0].data.read_range(0..n).unwrap();
        let shape = vec![data.sample_shape(0).to_vec()];
        let compiled = CompiledModel::compile(model, &shape, n, &[]).unwrap();
        compiled.run(&[x.view()]).unwrap().remove(0)
    }

    fn bits(a: &ArrayD<f32>) -> Vec<u32> {
        a.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn round_trip_through_both_versions_is_bit_identical() {
        for (name, per_channel) in [("mbv2_digits.onnx", true), ("resnet_digits.onnx", false)] {
            let (model, sim) = calibrated_sim(name, 4, per_channel);
            let expected = outputs(&sim.model, 64);
            for version in [EncodingsVersion::V1, EncodingsVersion::Legacy] {
                let doc = encodings_document(&sim.weights, &sim.activations, version).unwrap();
                let text = serde_json::to_string(&doc).unwrap();
                let file = parse_encodings(&serde_json::from_str(&text).unwrap()).unwrap();
                let encodings = match_encodings(&model, &file).unwrap();
                assert_eq!(encodings.activations, sim.activations);
                assert_eq!(encodings.weights.len(), sim.weights.len());
                let rebuilt = sim_from_encodings(&model, &encodings).unwrap();
                let got = outputs(&rebuilt.model, 64);
                assert_eq!(bits(&got), bits(&expected), "{name} {version}");
            }
        }
    }

    #[test]
    fn aimet_offset_is_minus_the_onnx_zero_point() {
        // Hand example: [-0.3, 0.9] at 4 bit, scale 0.08, offset round(-0.3 / 0.08) = -4
        // (-3.75 rounds away from zero), so the ONNX uint4 zero point is 4.
        let e = Encoding::from_range(-0.3, 0.9, 4, false).unwrap();
        assert_eq!(e.scale, 0.08);
        assert_eq!(e.offset, -4);
        assert_eq!(e.onnx_zero_point(), 4);
        let doc = json!({
            "version": "0.6.1",
            "activation_encodings": {"input": [e.to_aimet_legacy()]},
            "param_encodings": {},
        });
        let model = sample_model("mbv2_digits.onnx");
        let file = parse_encodings(&doc).unwrap();
        let got = match_encodings(&model, &file).unwrap().activations["input"];
        assert_eq!(got.offset, -4);
        assert_eq!(got.onnx_zero_point(), 4);
        // 0 maps to quantized 4, the most negative grid value is (0 - 4) * 0.08.
        assert_eq!(got.quantize(0.0), 4);
        assert_eq!(got.dequantize(0), -4.0 * 0.08);
    }

    fn v1_doc(sim: &SimModel) -> Value {
        encodings_document(&sim.weights, &sim.activations, EncodingsVersion::V1).unwrap()
    }

    #[test]
    fn files_that_do_not_fit_the_model_are_input_errors_naming_file_and_tensor() {
        let (model, sim) = calibrated_sim("mbv2_digits.onnx", 8, true);
        let dir = tempfile::tempdir().unwrap();
        let check = |doc: Value, expect: &[&str]| {
            let path = dir.path().join("bad.encodings.json");
            std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
            let err = load_model_encodings(&model, &path, None).unwrap_err();
            assert!(matches!(err, Error::Input(_)), "{err}");
            let text = err.to_string();
            assert!(text.contains("bad.encodings.json"), "{text}");
            for e in expect {
                assert!(text.contains(e), "{text} lacks {e}");
            }
        };
        let good = v1_doc(&sim);
        let first_weight = sim.weights[0].weight.clone();

        let mut unknown = good.clone();
        unknown["param_encodings"][0]["name"] = json!("no.such.weight");
        check(unknown, &["no.such.weight", "param_encodings"]);

        let mut bias = good.clone();
        bias["param_encodings"][0]["name"] = json!("fc.bias");
        check(bias, &["fc.bias", "not the weight"]);

        let mut count = good.clone();
        let scales = count["param_encodings"][0]["scale"]
            .as_array()
            .unwrap()
            .clone();
        let offsets = count["param_encodings"][0]["offset"]
            .as_array()
            .unwrap()
            .clone();
        count["param_encodings"][0]["scale"] = json!(scales[..3]);
        count["param_encodings"][0]["offset"] = json!(offsets[..3]);
        check(
            count,
            &[&first_weight, "3 per-channel encodings", "output channels"],
        );

        let mut negative = good.clone();
        negative["activation_encodings"][0]["scale"] = json!([-1.0]);
        let act = good["activation_encodings"][0]["name"].as_str().unwrap();
        check(negative, &[act, "scale"]);

        let mut not_value = good.clone();
        not_value["activation_encodings"][0]["name"] = json!("nowhere");
        check(not_value, &["nowhere", "activation_encodings"]);

        let mut stored = good.clone();
        stored["activation_encodings"][0]["name"] = json!(first_weight.clone());
        check(stored, &[&first_weight, "not an activation"]);

        let mut twice = good.clone();
        let entry = twice["activation_encodings"][0].clone();
        twice["activation_encodings"]
            .as_array_mut()
            .unwrap()
            .push(entry);
        check(twice, &["twice"]);
    }

    /// The sample ResNet with its BNs folded: its convs carry biases on the int32 grid.
    fn folded_resnet_sim() -> (Model, SimModel) {
        let unfolded = sample_model("resnet_digits.onnx");
        let folded = crate::fixes::bn_fold::fold_batchnorms(&unfolded)
            .unwrap()
            .model;
        calibrated_sim_of(folded, 8, true)
    }

    fn reread(doc: &Value) -> EncodingsFile {
        let text = serde_json::to_string(doc).unwrap();
        parse_encodings(&serde_json::from_str(&text).unwrap()).unwrap()
    }

    #[test]
    fn bias_encodings_are_written_as_aimet_does_and_read_back_bit_for_bit() {
        let (model, sim) = folded_resnet_sim();
        assert!(
            !sim.biases.is_empty(),
            "the folded ResNet has gridded biases"
        );
        let expected = outputs(&sim.model, 64);
        for version in [EncodingsVersion::V1, EncodingsVersion::Legacy] {
            let doc = crate::quant::encodings_file::encodings_document_with_biases(
                &sim.weights,
                &sim.activations,
                &sim.biases,
                version,
            )
            .unwrap();
            let first = &sim.biases[0];
            let bits_field = match version {
                EncodingsVersion::V1 => doc["param_encodings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["name"] == first.bias.as_str())
                    .map(|e| e["bw"].clone()),
                EncodingsVersion::Legacy => {
                    Some(doc["param_encodings"][first.bias.as_str()][0]["bitwidth"].clone())
                }
            };
            assert_eq!(bits_field, Some(json!(32)), "{version}");
            let file = reread(&doc);
            // 0.6.1 is keyed by name, so its order is the names'.
            let by_name = |g: &[BiasGrid]| {
                let mut g = g.to_vec();
                g.sort_by(|a, b| a.bias.cmp(&b.bias));
                g
            };
            assert_eq!(by_name(&file.biases), by_name(&sim.biases), "{version}");
            let encodings = match_encodings(&model, &file).unwrap();
            let rebuilt = sim_from_encodings(&model, &encodings).unwrap();
            assert_eq!(rebuilt.biases.len(), sim.biases.len());
            assert_eq!(
                bits(&outputs(&rebuilt.model, 64)),
                bits(&expected),
                "{version}"
            );
        }
        // The variant's stored encodings (what export reads) carry them too.
        let stored = crate::quant::simulate::encodings_json(&sim).unwrap();
        assert_eq!(reread(&stored).biases, sim.biases);
    }

    #[test]
    fn files_without_bias_entries_load_and_simulate_as_the_calibrated_sim() {
        let (model, sim) = folded_resnet_sim();
        let file = reread(&v1_doc(&sim));
        assert!(file.biases.is_empty());
        let rebuilt = sim_from_encodings(&model, &match_encodings(&model, &file).unwrap()).unwrap();
        // The biases are rounded by the same rule as the calibrated simulation's.
        assert_eq!(rebuilt.biases, sim.biases);
        assert_eq!(
            bits(&outputs(&rebuilt.model, 64)),
            bits(&outputs(&sim.model, 64))
        );
    }

    #[test]
    fn a_files_own_bias_grid_is_used_and_a_bad_one_is_named() {
        let (model, sim) = folded_resnet_sim();
        let mut biases = sim.biases.clone();
        biases[0].scales.iter_mut().for_each(|s| *s *= 64.0);
        let doc = crate::quant::encodings_file::encodings_document_with_biases(
            &sim.weights,
            &sim.activations,
            &biases,
            EncodingsVersion::V1,
        )
        .unwrap();
        let encodings = match_encodings(&model, &reread(&doc)).unwrap();
        let rebuilt = sim_from_encodings(&model, &encodings).unwrap();
        let name = &biases[0].bias;
        let float = model.weight(name).unwrap();
        assert_eq!(
            rebuilt.model.weight(name).unwrap(),
            &biases[0].dequantize(float)
        );
        assert_ne!(rebuilt.model.weight(name), sim.model.weight(name));
        // A 32-bit entry on a value that is no layer's bias.
        let mut bad = biases[0].clone();
        bad.bias = "input".into();
        let doc = crate::quant::encodings_file::encodings_document_with_biases(
            &sim.weights,
            &sim.activations,
            &[bad],
            EncodingsVersion::V1,
        )
        .unwrap();
        let err = match_encodings(&model, &reread(&doc)).unwrap_err();
        assert!(
            matches!(err, Error::Input(_)) && err.to_string().contains("'input'"),
            "{err}"
        );
    }
}
