//! Biases on the grid an integer runtime stores them on.
//!
//! An integer Conv/ConvTranspose/Gemm accumulates `input_int · weight_int` in int32, so its
//! bias is stored as int32 on the grid `s_input · s_weight` (per output channel when the
//! weight is per channel), zero point 0. ONNX Runtime does this itself for a float bias
//! (its `WeightBiasQuantization` pass: `round(b / (s_in · s_w))`, ties to even, in f32), and
//! so do target toolchains. The simulation rounds the bias the same way, and the export
//! writes it as int32 with its `DequantizeLinear`, so the simulation, ONNX Runtime and
//! other tools all use the same bias. The rounding moves a bias by at most half an
//! accumulator step, far below the output's own quantization step; what it changes is
//! which values land on a rounding tie downstream.
//!
//! A layer's bias is on the grid when ONNX Runtime would put it there: its input is read
//! through a per-tensor `DequantizeLinear` (an 8- or 16-bit activation quantizer on that
//! very value), its weight is quantized (per tensor, or per channel on the output axis),
//! and the bias is a 1-D weight no other node reads.

use std::collections::BTreeMap;

use ndarray::ArrayD;

use ndarray::arr0;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, NodeProto, TensorProto};

use super::contrib_qdq::contrib_activation_bits;
use super::encoding::Encoding;
use super::qdq::{Names, WeightEncodings};
use crate::model::tensor::tensor_from_array;
use crate::model::{attrs, Model};
use crate::{Error, Result};

/// One layer's bias and its grid.
#[derive(Debug, Clone, PartialEq)]
pub struct BiasGrid {
    /// The bias value (an initializer or a `Constant` node's output).
    pub bias: String,
    /// `s_input · s_weight` in f32, one per output channel or one for the whole bias.
    pub scales: Vec<f32>,
}

impl BiasGrid {
    /// The stored integers: `round(b / scale)` in f32, ties to even, saturated to int32.
    pub fn quantize(&self, bias: &ArrayD<f32>) -> Vec<i32> {
        bias.iter()
            .enumerate()
            .map(|(c, &b)| {
                let q = (b / self.scale(c)).round_ties_even();
                q.clamp(i32::MIN as f32, i32::MAX as f32) as i32
            })
            .collect()
    }

    /// The bias the integer runtime adds: each stored integer times its scale, in f32.
    pub fn dequantize(&self, bias: &ArrayD<f32>) -> ArrayD<f32> {
        let q = self.quantize(bias);
        let mut out = bias.clone();
        for (c, (v, q)) in out.iter_mut().zip(q).enumerate() {
            *v = q as f32 * self.scale(c);
        }
        out
    }

    fn scale(&self, channel: usize) -> f32 {
        if self.scales.len() == 1 {
            self.scales[0]
        } else {
            self.scales[channel]
        }
    }
}

/// The layers whose bias an integer runtime stores on its grid, for a model simulated with
/// these weight and activation encodings.
pub(crate) fn bias_grids(
    model: &Model,
    weights: &[WeightEncodings],
    activations: &BTreeMap<String, Encoding>,
) -> Vec<BiasGrid> {
    let graph = model.graph();
    let index = model.index();
    let mut grids: Vec<BiasGrid> = Vec::new();
    for node in &graph.node {
        if !matches!(node.op_type.as_str(), "Conv" | "ConvTranspose" | "Gemm") {
            continue;
        }
        let (Some(input), Some(weight), Some(bias)) =
            (node.input.first(), node.input.get(1), node.input.get(2))
        else {
            continue;
        };
        if bias.is_empty() || index.consumers(bias).len() != 1 {
            continue;
        }
        let Some(bias_values) = model.weight(bias).filter(|b| b.ndim() == 1) else {
            continue;
        };
        let Some(input_encoding) = activations.get(input).filter(|e| dequantized_input(e)) else {
            continue;
        };
        let Some(w) = weights.iter().find(|w| &w.weight == weight) else {
            continue;
        };
        let channels = bias_values.len();
        let scales = match (w.axis, w.encodings.len()) {
            (None, 1) => vec![w.encodings[0].onnx_scale()],
            (Some(axis), n) if n == channels && axis == output_axis(node) => {
                w.encodings.iter().map(|e| e.onnx_scale()).collect()
            }
            _ => continue,
        };
        let input_scale = input_encoding.onnx_scale();
        let scales: Vec<f32> = scales.iter().map(|s| input_scale * s).collect();
        if scales.iter().any(|s| !s.is_normal()) {
            continue;
        }
        grids.push(BiasGrid {
            bias: bias.clone(),
            scales,
        });
    }
    grids
}

/// Round each grid's bias in `model` to its grid (the bias an integer runtime adds).
pub(crate) fn put_on_grids(model: &mut Model, grids: &[BiasGrid]) -> Result<()> {
    for grid in grids {
        if let Some(bias) = model.weight(&grid.bias) {
            let on_grid = grid.dequantize(bias);
            model.set_weight(&grid.bias, on_grid)?;
        }
    }
    Ok(())
}

/// `file`'s grids where it lists a bias, `derived` ones (this module's rule) for the
/// others: an encodings file without bias entries simulates as a calibrated quantsim does.
pub fn with_file_grids(derived: Vec<BiasGrid>, file: &[BiasGrid]) -> Vec<BiasGrid> {
    let mut grids: Vec<BiasGrid> = file.to_vec();
    grids.extend(
        derived
            .into_iter()
            .filter(|d| !file.iter().any(|f| f.bias == d.bias)),
    );
    grids
}

/// Check a file's bias grid against `model`: it names the 1-D bias of a Conv,
/// ConvTranspose or Gemm, with one scale or one per element.
pub(crate) fn check_file_grid(model: &Model, grid: &BiasGrid) -> Result<()> {
    let reader = model
        .index()
        .consumers(&grid.bias)
        .iter()
        .find_map(|&(i, _)| {
            let node = &model.graph().node[i];
            (matches!(node.op_type.as_str(), "Conv" | "ConvTranspose" | "Gemm")
                && node.input.get(2) == Some(&grid.bias))
            .then_some(node)
        });
    let values = model.weight(&grid.bias).filter(|b| b.ndim() == 1);
    match (reader, values) {
        (Some(_), Some(b)) if grid.scales.len() == 1 || grid.scales.len() == b.len() => Ok(()),
        (Some(node), Some(b)) => Err(Error::input(format!(
            "param_encodings '{}': {} bias scales, but the bias of '{}' has {} values",
            grid.bias,
            grid.scales.len(),
            node.name,
            b.len()
        ))),
        _ => Err(Error::input(format!(
            "param_encodings names '{}' with a 32-bit (bias) encoding, but it is not the \
             stored 1-D bias of a Conv, ConvTranspose or Gemm of {}",
            grid.bias,
            model.source()
        ))),
    }
}

/// Swap the float bias for `DequantizeLinear(int32, scale)` writing the same value name (the
/// stored integers of [`BiasGrid::quantize`]), as the export does for weights.
pub(crate) fn write_int32_bias(
    graph: &mut GraphProto,
    names: &mut Names,
    grid: &BiasGrid,
    bias: &ArrayD<f32>,
) -> Result<()> {
    let value = &grid.bias;
    let q_name = names.fresh(&format!("{value}_quantized"));
    let scale_name = names.fresh(&format!("{value}_scale"));
    let raw_data = grid
        .quantize(bias)
        .iter()
        .flat_map(|q| q.to_le_bytes())
        .collect();
    graph.initializer.push(TensorProto {
        name: q_name.clone(),
        data_type: DataType::Int32 as i32,
        dims: vec![bias.len() as i64],
        raw_data,
        ..Default::default()
    });
    let scale = if grid.scales.len() == 1 {
        arr0(grid.scales[0]).into_dyn()
    } else {
        ArrayD::from_shape_vec(vec![grid.scales.len()], grid.scales.clone())
            .map_err(|e| Error::runtime(e.to_string()))?
    };
    graph
        .initializer
        .push(tensor_from_array(&scale_name, &scale));
    let mut dq = NodeProto {
        name: names.fresh(&format!("{value}_dequantizelinear")),
        op_type: "DequantizeLinear".into(),
        input: vec![q_name, scale_name],
        output: vec![value.clone()],
        ..Default::default()
    };
    if grid.scales.len() > 1 {
        dq.attribute.push(AttributeProto {
            name: "axis".into(),
            r#type: AttributeType::Int as i32,
            i: 0,
            ..Default::default()
        });
    }
    super::export::put_in_place_of(graph, value, dq, "bias")
}

/// Whether the export reads this activation through a per-tensor `DequantizeLinear`: 8 bits
/// (standard) or 16 (`com.microsoft`); other bitwidths stay float ops.
fn dequantized_input(e: &Encoding) -> bool {
    e.bitwidth == 8 || contrib_activation_bits(e.bitwidth)
}

/// The weight axis ONNX Runtime expects per-channel scales on: 0 for Conv and ConvTranspose
/// (as its pass checks), the output axis for Gemm (1 unless `transB`).
fn output_axis(node: &tract_onnx::pb::NodeProto) -> usize {
    if node.op_type == "Gemm" && attrs::int(node, "transB").unwrap_or(0) == 0 {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr1;

    #[test]
    fn bias_rounds_to_its_grid_with_ties_to_even_and_saturates() {
        let grid = BiasGrid {
            bias: "b".into(),
            scales: vec![0.5, 0.25, 1e-12],
        };
        let b = arr1(&[0.75f32, -0.125, 1.0]).into_dyn();
        // 0.75 / 0.5 = 1.5 → 2 (even); -0.125 / 0.25 = -0.5 → 0 (even); 1e12 saturates.
        assert_eq!(grid.quantize(&b), vec![2, 0, i32::MAX]);
        assert_eq!(grid.dequantize(&b).as_slice().unwrap()[..2], [1.0, 0.0]);
    }
}
