//! The editable model: the ONNX protobuf as loaded, an index of its values, and its
//! float weights as `ArrayD<f32>` wherever they are stored (initializers or `Constant`
//! nodes). Transformations edit weights and nodes here; tract only analyses and runs.

pub mod attrs;
pub mod builder;
pub mod external_data;
pub mod fixed_inputs;
pub mod fixtures;
pub mod fused_fake_quant;
pub mod graph;
pub mod layers;
pub mod opset;
pub mod prequantized;
pub mod save;
pub mod shapes;
pub mod specialise;
pub mod tensor;
pub mod validate;

use crate::{Error, Result};
use graph::GraphIndex;
use ndarray::ArrayD;
use prost::Message;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use tract_onnx::pb::{GraphProto, ModelProto, ValueInfoProto};

pub use layers::{Layer, LayerKind};
pub use shapes::{Dim, ModelShapes, Shape};

/// Where a weight lives in the protobuf, so an edit can be written back in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLocation {
    Initializer(usize),
    ConstantNode(usize),
}

#[derive(Debug, Clone)]
pub struct Weight {
    pub array: ArrayD<f32>,
    pub location: WeightLocation,
}

#[derive(Debug, Clone)]
pub struct Model {
    source: String,
    proto: ModelProto,
    index: GraphIndex,
    weights: BTreeMap<String, Weight>,
}

/// The ONNX op types tract can build, looked up once.
fn supported_ops() -> &'static tract_onnx::model::OnnxOpRegister {
    static OPS: OnceLock<tract_onnx::model::OnnxOpRegister> = OnceLock::new();
    OPS.get_or_init(|| tract_onnx::onnx().op_register)
}

impl Model {
    /// Load an FP32 ONNX file for qsteer to work on: weights in external data files are read
    /// in, and a model that is already quantized is refused (see [`prequantized`]). Errors
    /// name the file and, where one is at fault, the node.
    pub fn load(path: &Path) -> Result<Model> {
        let (proto, source) = read_proto(path)?;
        prequantized::refuse_quantized(graph_of(&proto, &source)?, &source)?;
        Model::from_proto(proto, &source)
    }

    /// Load any ONNX file tract can run, quantized ones included (qsteer's own QDQ exports).
    pub fn load_any(path: &Path) -> Result<Model> {
        let (proto, source) = read_proto(path)?;
        Model::from_proto(proto, &source)
    }

    /// Decode an ONNX model held in memory; `source` names it in messages.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Model> {
        Model::from_proto(decode(bytes, source)?, source)
    }

    pub fn from_proto(proto: ModelProto, source: &str) -> Result<Model> {
        let graph = graph_of(&proto, source)?;
        if graph.node.is_empty() {
            return Err(Error::input(format!("{source}: the graph has no nodes")));
        }
        if graph.output.is_empty() {
            return Err(Error::input(format!("{source}: the graph has no outputs")));
        }
        check_ops(graph, source)?;
        let index = GraphIndex::build(graph, source)?;
        validate::validate(graph, &index, source)?;
        let weights = collect_weights(graph, source)?;
        let model = Model {
            source: source.to_string(),
            proto,
            index,
            weights,
        };
        if model.inputs().is_empty() {
            return Err(Error::input(format!(
                "{source}: the graph has no inputs to feed"
            )));
        }
        Ok(model)
    }

    /// The file (or embedded name) the model came from, for messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn proto(&self) -> &ModelProto {
        &self.proto
    }

    pub fn graph(&self) -> &GraphProto {
        // from_proto guarantees the graph exists
        self.proto.graph.as_ref().expect("graph checked at load")
    }

    pub fn index(&self) -> &GraphIndex {
        &self.index
    }

    /// The default-domain opset the model was exported with (0 if not declared).
    pub fn opset(&self) -> i64 {
        self.proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .unwrap_or(0)
    }

    /// Graph inputs the user feeds (initializers listed as inputs are excluded).
    pub fn inputs(&self) -> Vec<&ValueInfoProto> {
        let g = self.graph();
        g.input
            .iter()
            .filter(|i| !g.initializer.iter().any(|t| t.name == i.name))
            .collect()
    }

    /// The names of [`Model::inputs`], in the model's order.
    pub fn input_names(&self) -> Vec<String> {
        self.inputs().iter().map(|i| i.name.clone()).collect()
    }

    pub fn output_names(&self) -> Vec<String> {
        self.graph().output.iter().map(|o| o.name.clone()).collect()
    }

    pub fn weight(&self, name: &str) -> Option<&ArrayD<f32>> {
        self.weights.get(name).map(|w| &w.array)
    }

    pub fn weights(&self) -> impl Iterator<Item = (&String, &Weight)> {
        self.weights.iter()
    }

    /// Replace a weight, keeping where and under which name it is stored.
    pub fn set_weight(&mut self, name: &str, array: ArrayD<f32>) -> Result<()> {
        let w = self
            .weights
            .get_mut(name)
            .ok_or_else(|| Error::input(format!("{}: no weight named '{name}'", self.source)))?;
        let graph = self.proto.graph.as_mut().expect("graph checked at load");
        match w.location {
            WeightLocation::Initializer(i) => {
                tensor::write_array_f32(&mut graph.initializer[i], &array)
            }
            WeightLocation::ConstantNode(i) => {
                let node = &mut graph.node[i];
                match attrs::tensor_mut(node, "value") {
                    Some(t) => tensor::write_array_f32(t, &array),
                    None => {
                        // value_float(s) constants: rewrite as a tensor attribute
                        node.attribute
                            .retain(|a| a.name != "value_float" && a.name != "value_floats");
                        node.attribute.push(tract_onnx::pb::AttributeProto {
                            name: "value".into(),
                            r#type: tract_onnx::pb::attribute_proto::AttributeType::Tensor as i32,
                            t: Some(tensor::tensor_from_array(name, &array)),
                            ..Default::default()
                        });
                    }
                }
            }
        }
        w.array = array;
        Ok(())
    }

    /// The protobuf, for graph surgery; rebuild with [`Model::from_proto`] afterwards (weight
    /// locations and the index are positions in this proto).
    pub fn into_proto(self) -> ModelProto {
        self.proto
    }

    /// Encode the model as ONNX protobuf bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.proto.encode_to_vec()
    }

    /// Content hash of the encoded model (hex sha256), for workspace and cache keys.
    pub fn content_hash(&self) -> String {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(self.to_bytes()))
    }

    /// Analyse shapes with tract (batch symbolic), see `shapes`.
    pub fn shapes(&self, pinned: Option<&[Vec<usize>]>) -> Result<ModelShapes> {
        shapes::analyse(self, pinned)
    }

    /// The compute layers (Conv, ConvTranspose, Gemm, MatMul with a constant operand).
    pub fn layers(&self, shapes: &ModelShapes) -> Result<Vec<Layer>> {
        layers::find_layers(self, shapes)
    }

    /// Write the model to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        save::save(self, path)
    }
}

/// Read and decode a model file, with its external data read in.
fn read_proto(path: &Path) -> Result<(ModelProto, String)> {
    let source = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut proto = decode(&bytes, &source)?;
    if let Some(graph) = proto.graph.as_mut() {
        let dir = path.parent().unwrap_or(Path::new("."));
        external_data::inline_external_data(graph, dir, &source)?;
    }
    Ok((proto, source))
}

fn decode(bytes: &[u8], source: &str) -> Result<ModelProto> {
    if bytes.is_empty() {
        return Err(Error::input(format!("{source}: the file is empty")));
    }
    ModelProto::decode(bytes).map_err(|e| {
        Error::input(format!(
            "{source}: not a valid ONNX model (protobuf decode failed: {e})"
        ))
    })
}

fn graph_of<'a>(proto: &'a ModelProto, source: &str) -> Result<&'a GraphProto> {
    proto
        .graph
        .as_ref()
        .ok_or_else(|| Error::input(format!("{source}: the model has no graph")))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_ops(graph: &GraphProto, source: &str) -> Result<()> {
    let ops = supported_ops();
    for (i, node) in graph.node.iter().enumerate() {
        let standard = node.domain.is_empty() || node.domain == "ai.onnx";
        if !standard || !ops.0.contains_key(&node.op_type) {
            let domain = if standard {
                String::new()
            } else {
                format!(" (domain '{}')", node.domain)
            };
            return Err(Error::input(format!(
                "{source}: node '{}' uses op type '{}'{domain}, which qsteer cannot run",
                graph::node_label(graph, i),
                node.op_type
            )));
        }
    }
    Ok(())
}

fn collect_weights(graph: &GraphProto, source: &str) -> Result<BTreeMap<String, Weight>> {
    let mut weights = BTreeMap::new();
    for (i, t) in graph.initializer.iter().enumerate() {
        let what = format!("{source}: initializer '{}'", t.name);
        if t.name.is_empty() {
            return Err(Error::input(format!(
                "{source}: initializer #{i} has no name"
            )));
        }
        if let Some(array) = tensor::to_array_f32(t, &what)? {
            weights.insert(
                t.name.clone(),
                Weight {
                    array,
                    location: WeightLocation::Initializer(i),
                },
            );
        }
    }
    for (i, node) in graph.node.iter().enumerate() {
        if node.op_type != "Constant" {
            continue;
        }
        let what = format!("{source}: Constant node '{}'", graph::node_label(graph, i));
        let Some(out) = node.output.first().filter(|o| !o.is_empty()) else {
            return Err(Error::input(format!("{what} has no output")));
        };
        let array = if let Some(t) = attrs::tensor(node, "value") {
            tensor::to_array_f32(t, &what)?
        } else if let Some(v) =
            attrs::float(node, "value_float").filter(|_| has_attr(node, "value_float"))
        {
            Some(ndarray::arr0(v).into_dyn())
        } else {
            attrs::floats(node, "value_floats").map(|v| ndarray::Array1::from(v).into_dyn())
        };
        if let Some(array) = array {
            weights.insert(
                out.clone(),
                Weight {
                    array,
                    location: WeightLocation::ConstantNode(i),
                },
            );
        }
    }
    Ok(weights)
}

fn has_attr(node: &tract_onnx::pb::NodeProto, name: &str) -> bool {
    node.attribute.iter().any(|a| a.name == name)
}
