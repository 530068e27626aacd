//! Small ONNX models built in code: synthetic nets for tests and benchmarks, so a transform
//! can be checked on exactly the structure it is about (a Conv without bias, weights in
//! `Constant` nodes, a ConvTranspose followed by a BatchNormalization, …).

use super::tensor::tensor_from_array;
use super::Model;
use crate::Result;
use ndarray::ArrayD;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Collects nodes, weights, inputs and outputs, then makes the `ModelProto`.
#[derive(Debug, Clone, Default)]
pub struct ProtoBuilder {
    opset: i64,
    graph: GraphProto,
}

/// A float tensor value; `None` dims are the symbolic batch `N`, no dims at all leave the
/// shape undeclared.
fn float_value(name: &str, dims: Option<&[Option<usize>]>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Some(v) => dimension::Value::DimValue(*v as i64),
                    None => dimension::Value::DimParam("N".into()),
                }),
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: tract_onnx::pb::tensor_proto::DataType::Float as i32,
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

impl ProtoBuilder {
    pub fn new(opset: i64) -> ProtoBuilder {
        ProtoBuilder {
            opset,
            graph: GraphProto {
                name: "built".into(),
                ..Default::default()
            },
        }
    }

    /// A graph input `[N, sample…]`, the batch `N` symbolic.
    pub fn input(&mut self, name: &str, sample: &[usize]) -> &mut Self {
        let dims: Vec<Option<usize>> = std::iter::once(None)
            .chain(sample.iter().map(|&d| Some(d)))
            .collect();
        self.graph.input.push(float_value(name, Some(&dims)));
        self
    }

    /// A graph output, shape left to the analysis.
    pub fn output(&mut self, name: &str) -> &mut Self {
        self.graph.output.push(float_value(name, None));
        self
    }

    pub fn initializer(&mut self, name: &str, array: &ArrayD<f32>) -> &mut Self {
        self.graph.initializer.push(tensor_from_array(name, array));
        self
    }

    /// A weight stored in a `Constant` node (as some exporters write them).
    pub fn constant(&mut self, name: &str, array: &ArrayD<f32>) -> &mut Self {
        self.node(
            "Constant",
            &format!("{name}.const"),
            &[],
            &[name],
            vec![AttributeProto {
                name: "value".into(),
                r#type: AttributeType::Tensor as i32,
                t: Some(tensor_from_array(name, array)),
                ..Default::default()
            }],
        )
    }

    pub fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) -> &mut Self {
        self.graph.node.push(NodeProto {
            name: name.into(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute,
            ..Default::default()
        });
        self
    }

    pub fn build(&self) -> ModelProto {
        ModelProto {
            ir_version: 8,
            producer_name: "qsteer-builder".into(),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: self.opset,
            }],
            graph: Some(self.graph.clone()),
            ..Default::default()
        }
    }

    /// The built model, loaded as any file would be.
    pub fn model(&self, source: &str) -> Result<Model> {
        Model::from_proto(self.build(), source)
    }
}
