//! The QDQ ONNX model ONNX Runtime and target toolchains read, from the FP32 model and its
//! encodings. Its numbers are the simulated model's ([`super::qdq::build_quantsim`]):
//!
//! - **weights** become integer initializers followed by `DequantizeLinear` (per channel with
//!   `axis`, opset 13), whose output keeps the weight's name. A signed symmetric encoding is
//!   stored `int8` with zero point 0, any other `uint8` with zero point `-offset` (AIMET's
//!   offset is minus the ONNX zero point). Bitwidths below 8 use the 8-bit container with
//!   values in their own range (4 bit signed: −8..=7); 9 to 16 bits use `int16`/`uint16` with
//!   the `com.microsoft` `DequantizeLinear`, which ONNX Runtime runs without opset 21.
//!   `DequantizeLinear` of the stored integers gives exactly the fake-quantized weights.
//! - **biases** of layers with a quantized input and weight are int32 on the grid
//!   `s_input · s_weight` with their `DequantizeLinear`, as an integer runtime stores them
//!   and as the simulation rounds them ([`super::bias`]); other biases stay FP32.
//! - **activations** get the simulation's quantizers ([`super::qdq`]): a
//!   `QuantizeLinear → DequantizeLinear` pair (`uint8`) at 8 bit; at 16 bit the same pair from
//!   the `com.microsoft` domain with `uint16` ([`super::contrib_qdq`]); other bitwidths
//!   (4 included, see there) have no integer type ONNX Runtime runs at opset 13 and keep the
//!   float-op form (`Div → Round → Clip → Mul`), listed in
//!   [`ExportContents::float_op_tensors`].
//!
//! tract cannot load the `com.microsoft` nodes: such a file is for ONNX Runtime and target
//! tools; qsteer evaluates the simulated model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{arr0, ArrayD, Axis};
use prost::Message;
use serde::Serialize;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto};

use super::bias::{bias_grids, with_file_grids, write_int32_bias, BiasGrid};
use super::contrib_qdq::{contrib_activation_bits, use_contrib_qdq, CONTRIB_DOMAIN};
use super::encoding::Encoding;
use super::encodings_file::{encodings_document_with_biases, EncodingsVersion};
use super::qdq::WeightEncodings;
use super::qdq::{ensure_opset, insert_activation_quantizers, ActivationOps, Names};
use crate::fsutil::{write_atomic, write_json_atomic};
use crate::model::tensor::tensor_from_array;
use crate::model::Model;
use crate::{Error, Result};

/// An exported QDQ model and what went into it.
#[derive(Debug, Clone)]
pub struct QdqExport {
    pub proto: ModelProto,
    pub contents: ExportContents,
}

/// How each tensor was written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportContents {
    /// Weights stored as integers.
    pub integer_weights: usize,
    /// Activation quantizers as Q/DQ pairs (standard or `com.microsoft`).
    pub qdq_activations: usize,
    /// Tensors quantized with `com.microsoft` ops (16-bit activations, 9–16-bit weights):
    /// ONNX Runtime runs them, other tools may not.
    pub contrib_tensors: Vec<String>,
    /// Activations whose bitwidth has no ONNX integer type, written as float ops.
    pub float_op_tensors: Vec<String>,
}

/// Build the QDQ model of `model` (FP32) with these weight and activation encodings.
pub fn export_qdq(
    model: &Model,
    weights: &[WeightEncodings],
    activations: &BTreeMap<String, Encoding>,
) -> Result<QdqExport> {
    export_qdq_with_biases(model, weights, activations, &[])
}

/// [`export_qdq`] with an encodings file's int32 bias grids, which take the place of the
/// derived ones for the biases they name.
pub fn export_qdq_with_biases(
    model: &Model,
    weights: &[WeightEncodings],
    activations: &BTreeMap<String, Encoding>,
    file_biases: &[BiasGrid],
) -> Result<QdqExport> {
    let mut proto = model.proto().clone();
    if !activations.is_empty() {
        insert_activation_quantizers(model, &mut proto, activations, ActivationOps::QdqAt8)?;
    }
    let mut contrib_tensors = use_contrib_qdq(&mut proto, activations)?;
    let needed = if weights.iter().any(|w| w.axis.is_some()) {
        13
    } else {
        10
    };
    ensure_opset(model, &mut proto, needed)?;
    let integer_weights = dedup_weights(weights)?;
    let graph = proto.graph.as_mut().expect("graph checked at load");
    let mut names = Names::of(graph);
    for w in &integer_weights {
        let original = model.weight(&w.weight).ok_or_else(|| {
            Error::input(format!(
                "{}: layer '{}' has no float weight '{}'",
                model.source(),
                w.layer,
                w.weight
            ))
        })?;
        let stored = StoredWeight::new(original, w)?;
        if stored.container == Container::Sixteen {
            contrib_tensors.push(w.weight.clone());
        }
        replace_weight(graph, &mut names, w, stored)?;
    }
    for grid in with_file_grids(bias_grids(model, weights, activations), file_biases) {
        if let Some(bias) = model.weight(&grid.bias) {
            write_int32_bias(graph, &mut names, &grid, bias)?;
        }
    }
    if !contrib_tensors.is_empty()
        && !proto
            .opset_import
            .iter()
            .any(|o| o.domain == CONTRIB_DOMAIN)
    {
        proto.opset_import.push(OperatorSetIdProto {
            domain: CONTRIB_DOMAIN.into(),
            version: 1,
        });
    }
    let float_op_tensors = activations
        .iter()
        .filter(|(_, e)| e.bitwidth != 8 && !contrib_activation_bits(e.bitwidth))
        .map(|(name, _)| name.clone())
        .collect::<Vec<_>>();
    Ok(QdqExport {
        proto,
        contents: ExportContents {
            integer_weights: integer_weights.len(),
            qdq_activations: activations.len() - float_op_tensors.len(),
            contrib_tensors,
            float_op_tensors,
        },
    })
}

/// One entry per weight (a weight shared by layers is listed once per layer in a sim); two
/// different encodings for the same weight cannot be exported.
fn dedup_weights(weights: &[WeightEncodings]) -> Result<Vec<&WeightEncodings>> {
    let mut seen: BTreeMap<&str, &WeightEncodings> = BTreeMap::new();
    let mut out = Vec::new();
    for w in weights {
        match seen.get(w.weight.as_str()) {
            Some(first) if first.axis == w.axis && first.encodings == w.encodings => {}
            Some(first) => {
                return Err(Error::input(format!(
                    "weight '{}' has different encodings for layers '{}' and '{}'",
                    w.weight, first.layer, w.layer
                )))
            }
            None => {
                seen.insert(&w.weight, w);
                out.push(w);
            }
        }
    }
    Ok(out)
}

/// The integer type a weight is stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Container {
    Eight,
    Sixteen,
}

/// A weight as integers plus the `DequantizeLinear` parameters giving its values back.
struct StoredWeight {
    container: Container,
    signed: bool,
    values: Vec<i32>,
    dims: Vec<i64>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
}

impl StoredWeight {
    fn new(original: &ArrayD<f32>, w: &WeightEncodings) -> Result<StoredWeight> {
        let Some(first) = w.encodings.first() else {
            return Err(Error::input(format!(
                "weight '{}' has no encodings",
                w.weight
            )));
        };
        for e in &w.encodings {
            e.validate()
                .map_err(|err| Error::input(format!("weight '{}': {err}", w.weight)))?;
        }
        if let Some(odd) = w.encodings.iter().find(|e| e.bitwidth != first.bitwidth) {
            return Err(Error::input(format!(
                "weight '{}' mixes {}-bit and {}-bit channels",
                w.weight, first.bitwidth, odd.bitwidth
            )));
        }
        let bits = first.bitwidth;
        // Signed storage exactly when every channel is signed symmetric (zero point 0).
        let signed = w.encodings.iter().all(|e| e.onnx_signed_zero_point() == 0);
        let half = 1i32 << (bits - 1);
        let store = |e: &Encoding, x: f32| e.quantize(x) - if signed { half } else { 0 };
        let values: Vec<i32> = match w.axis {
            None if w.encodings.len() == 1 => original.iter().map(|&x| store(first, x)).collect(),
            None => {
                return Err(Error::input(format!(
                    "weight '{}': {} encodings without a channel axis",
                    w.weight,
                    w.encodings.len()
                )))
            }
            Some(axis) => {
                if axis >= original.ndim() || original.len_of(Axis(axis)) != w.encodings.len() {
                    return Err(Error::input(format!(
                        "weight '{}' of shape {:?}: {} encodings for axis {axis}",
                        w.weight,
                        original.shape(),
                        w.encodings.len()
                    )));
                }
                // Logical (row-major) order, the order ONNX stores raw data in.
                original
                    .indexed_iter()
                    .map(|(ix, &x)| store(&w.encodings[ix[axis]], x))
                    .collect()
            }
        };
        let zero_point = |e: &Encoding| {
            if signed {
                e.onnx_signed_zero_point()
            } else {
                e.onnx_zero_point()
            }
        };
        Ok(StoredWeight {
            container: if bits <= 8 {
                Container::Eight
            } else {
                Container::Sixteen
            },
            signed,
            values,
            dims: original.shape().iter().map(|&d| d as i64).collect(),
            scales: w.encodings.iter().map(|e| e.onnx_scale()).collect(),
            zero_points: w.encodings.iter().map(zero_point).collect(),
        })
    }

    fn data_type(&self) -> DataType {
        match (self.container, self.signed) {
            (Container::Eight, true) => DataType::Int8,
            (Container::Eight, false) => DataType::Uint8,
            (Container::Sixteen, true) => DataType::Int16,
            (Container::Sixteen, false) => DataType::Uint16,
        }
    }

    /// An integer tensor of this weight's type, little-endian raw data.
    fn int_tensor(&self, name: &str, dims: Vec<i64>, values: &[i32]) -> TensorProto {
        let raw_data = match self.container {
            Container::Eight => values.iter().map(|&v| v as u8).collect(),
            Container::Sixteen => values
                .iter()
                .flat_map(|&v| (v as u16).to_le_bytes())
                .collect(),
        };
        TensorProto {
            name: name.to_string(),
            data_type: self.data_type() as i32,
            dims,
            raw_data,
            ..Default::default()
        }
    }
}

/// Swap the float weight for `DequantizeLinear(integers, scale, zero point)` writing the
/// same value name ([`put_in_place_of`]).
fn replace_weight(
    graph: &mut tract_onnx::pb::GraphProto,
    names: &mut Names,
    w: &WeightEncodings,
    stored: StoredWeight,
) -> Result<()> {
    let value = &w.weight;
    let q_name = names.fresh(&format!("{value}_quantized"));
    let scale_name = names.fresh(&format!("{value}_scale"));
    let zp_name = names.fresh(&format!("{value}_zero_point"));
    let channel_dims = |n: usize| match w.axis {
        Some(_) => vec![n as i64],
        None => vec![],
    };
    let scale = match w.axis {
        Some(_) => ArrayD::from_shape_vec(vec![stored.scales.len()], stored.scales.clone())
            .map_err(|e| Error::runtime(e.to_string()))?,
        None => arr0(stored.scales[0]).into_dyn(),
    };
    graph
        .initializer
        .push(stored.int_tensor(&q_name, stored.dims.clone(), &stored.values));
    graph
        .initializer
        .push(tensor_from_array(&scale_name, &scale));
    graph.initializer.push(stored.int_tensor(
        &zp_name,
        channel_dims(stored.zero_points.len()),
        &stored.zero_points,
    ));
    let mut dq = NodeProto {
        name: names.fresh(&format!("{value}_dequantizelinear")),
        op_type: "DequantizeLinear".into(),
        input: vec![q_name, scale_name, zp_name],
        output: vec![value.clone()],
        ..Default::default()
    };
    if stored.container == Container::Sixteen {
        dq.domain = CONTRIB_DOMAIN.into();
    }
    if let Some(axis) = w.axis {
        dq.attribute.push(AttributeProto {
            name: "axis".into(),
            r#type: AttributeType::Int as i32,
            i: axis as i64,
            ..Default::default()
        });
    }
    put_in_place_of(graph, value, dq, "weight")
}

/// Make `dq` the producer of the float constant `value`: an initializer's DQ goes first in
/// the node list, a `Constant` node is replaced in place, so every consumer still comes after
/// its producer. `what` names the value in the error ("weight", "bias").
pub(super) fn put_in_place_of(
    graph: &mut tract_onnx::pb::GraphProto,
    value: &str,
    dq: NodeProto,
    what: &str,
) -> Result<()> {
    if let Some(i) = graph.initializer.iter().position(|t| t.name == value) {
        graph.initializer.remove(i);
        // Old exporters list initializers as graph inputs too.
        graph.input.retain(|v| v.name != value);
        graph.node.insert(0, dq);
        return Ok(());
    }
    let constant = graph.node.iter().position(|n| {
        n.op_type == "Constant" && n.output.first().map(String::as_str) == Some(value)
    });
    match constant {
        Some(i) => {
            graph.node[i] = dq;
            Ok(())
        }
        None => Err(Error::input(format!(
            "{what} '{value}' is neither an initializer nor a Constant node's output"
        ))),
    }
}

/// What an export wrote, as the CLI reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// The QDQ model file.
    pub output: PathBuf,
    /// The encodings file.
    pub encodings: PathBuf,
    pub encodings_version: EncodingsVersion,
    #[serde(flatten)]
    pub contents: ExportContents,
}

/// Export to `dir/<name>.qdq.onnx` and `dir/<name>.encodings.json` (both written atomically).
pub fn write_export(
    dir: &Path,
    name: &str,
    model: &Model,
    weights: &[WeightEncodings],
    activations: &BTreeMap<String, Encoding>,
    version: EncodingsVersion,
) -> Result<ExportReport> {
    write_export_with_biases(dir, name, model, weights, activations, &[], version)
}

/// [`write_export`] with an encodings file's int32 bias grids (see [`export_qdq_with_biases`]);
/// the encodings file lists every bias the QDQ model stores as int32.
pub fn write_export_with_biases(
    dir: &Path,
    name: &str,
    model: &Model,
    weights: &[WeightEncodings],
    activations: &BTreeMap<String, Encoding>,
    file_biases: &[BiasGrid],
    version: EncodingsVersion,
) -> Result<ExportReport> {
    let export = export_qdq_with_biases(model, weights, activations, file_biases)?;
    let biases = with_file_grids(bias_grids(model, weights, activations), file_biases);
    let document = encodings_document_with_biases(weights, activations, &biases, version)?;
    let output = dir.join(format!("{name}.qdq.onnx"));
    let encodings = dir.join(format!("{name}.encodings.json"));
    write_atomic(&output, &export.proto.encode_to_vec())?;
    write_json_atomic(&encodings, &document)?;
    Ok(ExportReport {
        output,
        encodings,
        encodings_version: version,
        contents: export.contents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attrs;
    use crate::quant::import::tests::{calibrated_sim, calibrated_sim_of, outputs};
    use ndarray::{arr1, arr2};
    use tract_onnx::pb::{
        tensor_shape_proto::{dimension, Dimension},
        type_proto, GraphProto, TensorShapeProto, TypeProto, ValueInfoProto,
    };

    /// `y = Gemm(x, W, b, transB = 1)` with `W` = [[-0.3, 0, 0.44], [0.1, -0.2, 0.3]].
    fn gemm_model() -> Model {
        let info = |name: &str, n: i64| ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: Some(TensorShapeProto {
                        dim: [Some(dimension::Value::DimParam("N".into())), None]
                            .into_iter()
                            .map(|d| Dimension {
                                value: d.or(Some(dimension::Value::DimValue(n))),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let w = arr2(&[[-0.3f32, 0.0, 0.44], [0.1, -0.2, 0.3]]).into_dyn();
        let graph = GraphProto {
            name: "gemm".into(),
            node: vec![NodeProto {
                name: "fc".into(),
                op_type: "Gemm".into(),
                input: vec!["x".into(), "W".into(), "b".into()],
                output: vec!["y".into()],
                attribute: vec![AttributeProto {
                    name: "transB".into(),
                    r#type: AttributeType::Int as i32,
                    i: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            initializer: vec![
                tensor_from_array("W", &w),
                tensor_from_array("b", &arr1(&[0.5f32, -0.5]).into_dyn()),
            ],
            input: vec![info("x", 3)],
            output: vec![info("y", 2)],
            ..Default::default()
        };
        let proto = ModelProto {
            ir_version: 7,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 11,
            }],
            graph: Some(graph),
            ..Default::default()
        };
        Model::from_proto(proto, "gemm").unwrap()
    }

    fn initializer<'a>(proto: &'a ModelProto, name: &str) -> &'a TensorProto {
        let g = proto.graph.as_ref().unwrap();
        g.initializer
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no initializer {name}"))
    }

    fn dq_of<'a>(proto: &'a ModelProto, value: &str) -> &'a NodeProto {
        let g = proto.graph.as_ref().unwrap();
        g.node
            .iter()
            .find(|n| n.op_type == "DequantizeLinear" && n.output[0] == value)
            .unwrap_or_else(|| panic!("no DequantizeLinear writes {value}"))
    }

    fn enc(bits: u8, symmetric: bool, scale: f32, offset: i32) -> Encoding {
        Encoding::from_scale_offset(bits, symmetric, scale, offset).unwrap()
    }

    #[test]
    fn asymmetric_weight_is_uint8_with_zero_point_minus_offset_per_channel() {
        let model = gemm_model();
        // Hand example, channel 0: scale 0.1, AIMET offset -3 → ONNX zero point 3;
        // -0.3 → 0, 0 → 3, 0.44 → round(4.4) + 3 = 7.
        let w = WeightEncodings {
            layer: "fc".into(),
            weight: "W".into(),
            axis: Some(0),
            encodings: vec![enc(8, false, 0.1, -3), enc(8, false, 0.05, -100)],
        };
        let export = export_qdq(&model, &[w], &BTreeMap::new()).unwrap();
        let p = &export.proto;
        let dq = dq_of(p, "W");
        assert_eq!(attrs::int(dq, "axis"), Some(0));
        assert!(dq.domain.is_empty());
        let q = initializer(p, &dq.input[0]);
        assert_eq!(q.data_type, DataType::Uint8 as i32);
        assert_eq!(q.dims, vec![2, 3]);
        // Channel 1: 0.1 / 0.05 = 2 → 102, -0.2 → 96, 0.3 → 106.
        assert_eq!(q.raw_data, vec![0, 3, 7, 102, 96, 106]);
        let zp = initializer(p, &dq.input[2]);
        assert_eq!(
            (zp.data_type, zp.dims.clone()),
            (DataType::Uint8 as i32, vec![2])
        );
        assert_eq!(zp.raw_data, vec![3, 100]);
        let scale = initializer(p, &dq.input[1]);
        assert_eq!(scale.dims, vec![2]);
        // The float weight is gone, the bias stays FP32; per-axis DQ needs opset 13.
        let g = p.graph.as_ref().unwrap();
        assert!(!g.initializer.iter().any(|t| t.name == "W"));
        assert_eq!(initializer(p, "b").data_type, DataType::Float as i32);
        assert_eq!(Model::from_proto(p.clone(), "export").unwrap().opset(), 13);
        assert_eq!(export.contents.integer_weights, 1);
        assert!(
            export.contents.float_op_tensors.is_empty()
                && export.contents.contrib_tensors.is_empty()
        );
    }

    #[test]
    fn signed_symmetric_4_bit_weight_is_int8_in_its_own_range() {
        let model = gemm_model();
        // Scale 0.05, offset -8: stored = q - 8 in -8..=7; 0.44 saturates at 7.
        let w = WeightEncodings {
            layer: "fc".into(),
            weight: "W".into(),
            axis: None,
            encodings: vec![enc(4, true, 0.05, -8)],
        };
        let export = export_qdq(&model, std::slice::from_ref(&w), &BTreeMap::new()).unwrap();
        let p = &export.proto;
        let dq = dq_of(p, "W");
        assert_eq!(attrs::int(dq, "axis"), None);
        let q = initializer(p, &dq.input[0]);
        assert_eq!(q.data_type, DataType::Int8 as i32);
        let stored: Vec<i8> = q.raw_data.iter().map(|&b| b as i8).collect();
        assert_eq!(stored, vec![-6, 0, 7, 2, -4, 6]);
        let zp = initializer(p, &dq.input[2]);
        assert_eq!(
            (zp.data_type, zp.raw_data.clone()),
            (DataType::Int8 as i32, vec![0])
        );
        assert!(zp.dims.is_empty());
        // DequantizeLinear gives back exactly the fake-quantized weight (run by tract).
        let exported = Model::from_proto(p.clone(), "export").unwrap();
        let mut fq = model.weight("W").unwrap().clone();
        super::super::per_channel::fake_quant_tensor(&mut fq, &w.encodings[0]);
        let x = ndarray::Array2::<f32>::eye(3).into_dyn();
        let compiled =
            crate::runtime::CompiledModel::compile(&exported, &[vec![3]], 3, &[]).unwrap();
        let y = compiled.run(&[x.view()]).unwrap().remove(0);
        for i in 0..3 {
            for c in 0..2 {
                let b = [0.5f32, -0.5][c];
                assert_eq!(y[[i, c]], fq[[c, i]] + b, "row {i} channel {c}");
            }
        }
    }

    #[test]
    fn sixteen_bit_tensors_use_contrib_ops_other_activation_bitwidths_float_ops() {
        let model = gemm_model();
        let w = WeightEncodings {
            layer: "fc".into(),
            weight: "W".into(),
            axis: Some(0),
            encodings: vec![enc(16, true, 1e-4, -32768), enc(16, true, 2e-4, -32768)],
        };
        let acts = BTreeMap::from([
            ("x".to_string(), enc(16, false, 1e-3, -30000)),
            ("y".to_string(), enc(4, false, 0.25, -5)),
        ]);
        let export = export_qdq(&model, std::slice::from_ref(&w), &acts).unwrap();
        let p = &export.proto;
        assert!(p
            .opset_import
            .iter()
            .any(|o| o.domain == CONTRIB_DOMAIN && o.version == 1));
        let dq = dq_of(p, "W");
        assert_eq!(dq.domain, CONTRIB_DOMAIN);
        let q = initializer(p, &dq.input[0]);
        assert_eq!(q.data_type, DataType::Int16 as i32);
        // -0.3 / 1e-4 = -3000 (signed, zero point 0).
        assert_eq!(i16::from_le_bytes([q.raw_data[0], q.raw_data[1]]), -3000);
        let g = p.graph.as_ref().unwrap();
        let contrib: Vec<&str> = g
            .node
            .iter()
            .filter(|n| n.domain == CONTRIB_DOMAIN)
            .map(|n| n.op_type.as_str())
            .collect();
        assert_eq!(
            contrib,
            vec!["DequantizeLinear", "QuantizeLinear", "DequantizeLinear"]
        );
        let zp = initializer(p, &dq_of(p, "x_dq").input[2]);
        assert_eq!(zp.data_type, DataType::Uint16 as i32);
        assert_eq!(u16::from_le_bytes([zp.raw_data[0], zp.raw_data[1]]), 30000);
        // The 16-bit chain's Clip bounds went with it; the 4-bit one keeps its float ops.
        assert!(!g.initializer.iter().any(|t| t.name.starts_with("x_qmin")));
        assert_eq!(g.node.iter().filter(|n| n.op_type == "Round").count(), 1);
        assert_eq!(export.contents.contrib_tensors, vec!["x", "W"]);
        assert_eq!(export.contents.float_op_tensors, vec!["y"]);
        assert_eq!(export.contents.qdq_activations, 1);
    }

    #[test]
    fn exported_model_computes_what_the_simulation_computes() {
        for (w_bits, per_channel) in [(8, true), (4, true), (8, false)] {
            let (model, sim) = calibrated_sim("mbv2_digits.onnx", w_bits, per_channel);
            let export = export_qdq(&model, &sim.weights, &sim.activations).unwrap();
            assert_eq!(export.contents.integer_weights, sim.weights.len());
            assert_eq!(export.contents.qdq_activations, sim.activations.len());
            // 8-bit activations are real QuantizeLinear → DequantizeLinear pairs, which is
            // what ONNX Runtime fuses into integer kernels, not the simulation's float ops.
            let ops = |op: &str| {
                let g = export.proto.graph.as_ref().unwrap();
                g.node.iter().filter(|n| n.op_type == op).count()
            };
            assert_eq!(ops("QuantizeLinear"), sim.activations.len());
            assert_eq!(ops("Round"), 0);
            let bytes = export.proto.encode_to_vec();
            let exported = Model::from_bytes(&bytes, "export").unwrap();
            let expected = outputs(&sim.model, 64);
            let got = outputs(&exported, 64);
            let diff = expected
                .iter()
                .zip(got.iter())
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert_eq!(diff, 0.0, "W{w_bits} per_channel {per_channel}");
        }
    }

    #[test]
    fn bias_of_a_quantized_layer_is_int32_on_the_input_times_weight_grid() {
        let model = gemm_model();
        let w = WeightEncodings {
            layer: "fc".into(),
            weight: "W".into(),
            axis: Some(0),
            encodings: vec![enc(8, true, 0.01, -128), enc(8, true, 0.02, -128)],
        };
        let acts = BTreeMap::from([("x".to_string(), enc(8, false, 0.3, -10))]);
        let export = export_qdq(&model, std::slice::from_ref(&w), &acts).unwrap();
        let p = &export.proto;
        let dq = dq_of(p, "b");
        assert_eq!(attrs::int(dq, "axis"), Some(0));
        let q = initializer(p, &dq.input[0]);
        assert_eq!(q.data_type, DataType::Int32 as i32);
        let stored: Vec<i32> = q
            .raw_data
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        // 0.5 / (0.3 · 0.01) = 166.7 → 167; -0.5 / (0.3 · 0.02) = -83.3 → -83.
        assert_eq!(stored, vec![167, -83]);
        let scale = crate::model::tensor::to_array_f32(initializer(p, &dq.input[1]), "scale")
            .unwrap()
            .unwrap();
        assert_eq!(
            scale.as_slice().unwrap(),
            &[0.3f32 * 0.01f32, 0.3f32 * 0.02f32]
        );
        // No float bias is left for a runtime to round its own way.
        assert!(!p
            .graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .any(|t| t.name == "b"));
        // A 4-bit input stays float ops, so the bias stays float, as ONNX Runtime leaves it.
        let acts4 = BTreeMap::from([("x".to_string(), enc(4, false, 0.3, -3))]);
        let export = export_qdq(&model, std::slice::from_ref(&w), &acts4).unwrap();
        assert!(initializer(&export.proto, "b").data_type == DataType::Float as i32);
    }

    #[test]
    fn simulated_biases_are_on_the_grid_the_export_stores() {
        // Folded, so the convs carry biases (the unfolded sample's convs have none).
        let unfolded = crate::quant::points::tests::sample_model("resnet_digits.onnx");
        let folded = crate::fixes::bn_fold::fold_batchnorms(&unfolded)
            .unwrap()
            .model;
        let (model, sim) = calibrated_sim_of(folded, 8, true);
        let grids = crate::quant::bias::bias_grids(&model, &sim.weights, &sim.activations);
        assert!(
            !grids.is_empty(),
            "resnet_digits has biased layers with quantized inputs"
        );
        let mut moved = 0;
        for grid in &grids {
            let float = model.weight(&grid.bias).unwrap();
            let simulated = sim.model.weight(&grid.bias).unwrap();
            assert_eq!(simulated, &grid.dequantize(float), "{}", grid.bias);
            moved += usize::from(simulated != float);
        }
        assert!(moved > 0, "rounding to the grid changes some bias");
        // The export's int32 biases give back exactly the simulation's.
        let export = export_qdq(&model, &sim.weights, &sim.activations).unwrap();
        let exported = Model::from_bytes(&export.proto.encode_to_vec(), "export").unwrap();
        let (expected, got) = (outputs(&sim.model, 64), outputs(&exported, 64));
        assert_eq!(expected, got);
    }

    #[test]
    fn export_rejects_inconsistent_weight_encodings() {
        let model = gemm_model();
        let base = WeightEncodings {
            layer: "fc".into(),
            weight: "W".into(),
            axis: Some(0),
            encodings: vec![enc(8, false, 0.1, -3)],
        };
        let err = export_qdq(&model, std::slice::from_ref(&base), &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("'W'"), "{err}");
        let mut other = base.clone();
        other.encodings = vec![enc(8, false, 0.1, -3), enc(4, false, 0.1, -3)];
        let err = export_qdq(&model, &[other], &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("mixes"), "{err}");
        let mut missing = base;
        missing.weight = "nope".into();
        missing.encodings = vec![enc(8, false, 0.1, -3)];
        missing.axis = None;
        let err = export_qdq(&model, &[missing], &BTreeMap::new()).unwrap_err();
        assert!(matches!(err, Error::Input(_)) && err.to_string().contains("nope"));
    }
}
