//! Opset conversion of a whole graph to opset 13, the opset per-channel `DequantizeLinear`
//! needs. Models exported at opset 11 or 12 are common (paddle2onnx, older PyTorch); users do
//! not re-export them, so the export converts.
//!
//! Between opsets 11 and 13 almost every change to the default domain only widens the
//! accepted types (bfloat16) or adds an attribute whose default keeps the old meaning
//! (ArgMax's `select_last_index`, GatherND's `batch_dims`, Constant's `value_*`). What does
//! change, per the ONNX operator changelog (`onnx.defs.get_schema(op, 11 / 13)`), and how it
//! is rewritten:
//!
//! | op | 11/12 | 13 | rewrite |
//! | --- | --- | --- | --- |
//! | Squeeze, Unsqueeze, ReduceSum | `axes` attribute | `axes` input | an int64 initializer input |
//! | Split | `split` attribute | `split` input | an int64 initializer input |
//! | Softmax, LogSoftmax, Hardmax | over the input coerced to 2-D at `axis` (default 1) | along `axis` only (default −1) | `Flatten(axis) → op(axis = −1) → Reshape(Shape(x))`, unless `axis` is −1 |
//! | Dropout | `ratio` attribute (12: input) | `ratio` input | the attribute becomes an input |
//! | Resize | `tf_half_pixel_for_nn` mode | removed | refused, naming the node |
//!
//! The other ReduceX ops keep `axes` as an attribute until opset 18; Clip and Pad already take
//! inputs at 11. Subgraphs (If, Loop, Scan) are converted too. Below opset 11 the changes are
//! many more (Clip, Pad, Slice, Resize, Upsample): such a model is refused unless its ops are
//! all unchanged since then (see `ensure_opset` in the quantizer).

use std::collections::HashSet;

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

use super::attrs;
use crate::{Error, Result};

/// The target of [`upgrade_to_13`].
pub const TARGET: i64 = 13;

/// What [`upgrade_to_13`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Upgrade {
    /// The default-domain opset before (equal to the target when nothing was done).
    pub from: i64,
    /// Labels of the nodes rewritten (others only changed opset).
    pub rewritten: Vec<String>,
}

/// The default-domain (`""` / `ai.onnx`) opset a model declares (1 when none is listed, as
/// the spec says).
pub fn default_opset(proto: &ModelProto) -> i64 {
    proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(1)
}

/// Convert `proto` from opset 11 or 12 to opset 13 in place, keeping every value name (node
/// outputs and graph inputs/outputs are the same values with the same meaning). A model at 13
/// or above is left alone. `source` names the model in errors.
pub fn upgrade_to_13(proto: &mut ModelProto, source: &str) -> Result<Upgrade> {
    let from = default_opset(proto);
    if from >= TARGET {
        return Ok(Upgrade {
            from,
            rewritten: vec![],
        });
    }
    if from < 11 {
        return Err(Error::input(format!(
            "{source}: the model declares opset {from}; converting to opset {TARGET} is done \
             from opset 11 or 12 (re-export the model at opset 13)"
        )));
    }
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| Error::input(format!("{source}: the model has no graph")))?;
    let mut names = taken_names(graph);
    let mut rewritten = Vec::new();
    upgrade_graph(graph, &mut names, &mut rewritten, source)?;
    for o in proto.opset_import.iter_mut() {
        if o.domain.is_empty() || o.domain == "ai.onnx" {
            o.version = TARGET;
        }
    }
    if !proto
        .opset_import
        .iter()
        .any(|o| o.domain.is_empty() || o.domain == "ai.onnx")
    {
        proto.opset_import.push(tract_onnx::pb::OperatorSetIdProto {
            domain: String::new(),
            version: TARGET,
        });
    }
    Ok(Upgrade { from, rewritten })
}

/// Every name used in the graph and its subgraphs.
fn taken_names(graph: &GraphProto) -> HashSet<String> {
    let mut set = HashSet::new();
    fn walk(g: &GraphProto, set: &mut HashSet<String>) {
        set.extend(g.input.iter().map(|v| v.name.clone()));
        set.extend(g.output.iter().map(|v| v.name.clone()));
        set.extend(g.initializer.iter().map(|t| t.name.clone()));
        set.extend(g.value_info.iter().map(|v| v.name.clone()));
        for n in &g.node {
            set.insert(n.name.clone());
            set.extend(n.input.iter().cloned());
            set.extend(n.output.iter().cloned());
            for a in &n.attribute {
                if let Some(sub) = &a.g {
                    walk(sub, set);
                }
                for sub in &a.graphs {
                    walk(sub, set);
                }
            }
        }
    }
    walk(graph, &mut set);
    set
}

fn fresh(names: &mut HashSet<String>, base: &str) -> String {
    let mut name = base.to_string();
    let mut k = 1;
    while names.contains(&name) {
        name = format!("{base}_{k}");
        k += 1;
    }
    names.insert(name.clone());
    name
}

fn label(node: &NodeProto, i: usize) -> String {
    if !node.name.is_empty() {
        node.name.clone()
    } else if let Some(o) = node.output.iter().find(|o| !o.is_empty()) {
        o.clone()
    } else {
        format!("#{i} {}", node.op_type)
    }
}

fn int64_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        data_type: DataType::Int64 as i32,
        dims: vec![values.len() as i64],
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

fn take_attr(node: &mut NodeProto, name: &str) -> Option<AttributeProto> {
    let i = node.attribute.iter().position(|a| a.name == name)?;
    Some(node.attribute.remove(i))
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn upgrade_graph(
    graph: &mut GraphProto,
    names: &mut HashSet<String>,
    rewritten: &mut Vec<String>,
    source: &str,
) -> Result<()> {
    let old = std::mem::take(&mut graph.node);
    let mut nodes = Vec::with_capacity(old.len());
    for (i, mut node) in old.into_iter().enumerate() {
        for a in node.attribute.iter_mut() {
            if let Some(sub) = a.g.as_mut() {
                upgrade_graph(sub, names, rewritten, source)?;
            }
            for sub in a.graphs.iter_mut() {
                upgrade_graph(sub, names, rewritten, source)?;
            }
        }
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            nodes.push(node);
            continue;
        }
        let what = label(&node, i);
        let op = node.op_type.clone();
        let at_fault = |why: &str| {
            Error::input(format!(
                "{source}: node '{what}' ({op}): {why}; it cannot be converted to opset {TARGET}"
            ))
        };
        match node.op_type.as_str() {
            "Squeeze" | "Unsqueeze" | "ReduceSum" | "Split" => {
                let attr = if node.op_type == "Split" {
                    "split"
                } else {
                    "axes"
                };
                let values = attrs::ints(&node, attr);
                take_attr(&mut node, attr);
                match values {
                    Some(values) => {
                        let base = format!("{what}_{attr}");
                        let name = fresh(names, &base);
                        graph.initializer.push(int64_tensor(&name, &values));
                        // The data input is the only input at 11/12.
                        node.input.truncate(1);
                        node.input.push(name);
                        rewritten.push(what);
                    }
                    None if node.op_type == "Unsqueeze" => {
                        return Err(at_fault("it has no 'axes' attribute"))
                    }
                    None => {}
                }
                nodes.push(node);
            }
            "Softmax" | "LogSoftmax" | "Hardmax" => {
                let axis = attrs::int(&node, "axis").unwrap_or(1);
                if axis == -1 {
                    nodes.push(node);
                    continue;
                }
                // Opset < 13 semantics: the op over the input flattened to 2-D at `axis`.
                let (Some(x), Some(y)) =
                    (node.input.first().cloned(), node.output.first().cloned())
                else {
                    return Err(at_fault("it has no input or output"));
                };
                let flat = fresh(names, &format!("{what}_flat"));
                let flat_out = fresh(names, &format!("{what}_flat_out"));
                let shape = fresh(names, &format!("{what}_shape"));
                nodes.push(NodeProto {
                    name: fresh(names, &format!("{what}_flatten")),
                    op_type: "Flatten".into(),
                    input: vec![x.clone()],
                    output: vec![flat.clone()],
                    attribute: vec![int_attr("axis", axis)],
                    ..Default::default()
                });
                nodes.push(NodeProto {
                    name: fresh(names, &format!("{what}_input_shape")),
                    op_type: "Shape".into(),
                    input: vec![x],
                    output: vec![shape.clone()],
                    ..Default::default()
                });
                take_attr(&mut node, "axis");
                node.attribute.push(int_attr("axis", -1));
                node.input = vec![flat];
                node.output = vec![flat_out.clone()];
                nodes.push(node);
                nodes.push(NodeProto {
                    name: fresh(names, &format!("{what}_reshape")),
                    op_type: "Reshape".into(),
                    input: vec![flat_out, shape],
                    output: vec![y],
                    ..Default::default()
                });
                rewritten.push(what);
            }
            "Dropout" => {
                if let Some(a) = take_attr(&mut node, "ratio") {
                    if node.input.len() < 2 {
                        let name = fresh(names, &format!("{what}_ratio"));
                        graph.initializer.push(TensorProto {
                            name: name.clone(),
                            data_type: DataType::Float as i32,
                            float_data: vec![a.f],
                            ..Default::default()
                        });
                        node.input.push(name);
                    }
                    rewritten.push(what);
                }
                nodes.push(node);
            }
            "Resize"
                if attrs::string(&node, "coordinate_transformation_mode").as_deref()
                    == Some("tf_half_pixel_for_nn") =>
            {
                return Err(at_fault(
                    "its coordinate_transformation_mode 'tf_half_pixel_for_nn' was removed at \
                     opset 13",
                ));
            }
            "Upsample" | "Scatter" => {
                return Err(at_fault(
                    "the op is deprecated (use Resize / ScatterElements)",
                ));
            }
            _ => nodes.push(node),
        }
    }
    graph.node = nodes;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;
    use crate::runtime::CompiledModel;
    use ndarray::ArrayD;
    use std::path::Path;

    fn fixture(name: &str) -> (Model, ArrayD<f32>) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let model = Model::load(&dir.join(format!("{name}.onnx"))).unwrap();
        let x = match crate::data::read_npy(&dir.join(name).join("inputs.npy")).unwrap() {
            crate::data::NpyArray::F32(a) => a,
            _ => panic!("{name}: inputs are not float32"),
        };
        (model, x)
    }

    fn run(model: &Model, x: &ArrayD<f32>) -> Vec<ArrayD<f32>> {
        let shape = x.shape()[1..].to_vec();
        let compiled = CompiledModel::compile(model, &[shape], x.shape()[0], &[]).unwrap();
        compiled.run(&[x.view()]).unwrap()
    }

    /// The converted model is opset 13, has the opset-13 forms, and computes the same outputs
    /// as the original on the fixture's inputs (tract runs both).
    fn check_same_function(name: &str, expect_rewritten: &[&str]) {
        let (model, x) = fixture(name);
        assert!(model.opset() < 13);
        let mut proto = model.proto().clone();
        let up = upgrade_to_13(&mut proto, name).unwrap();
        assert_eq!(up.from, model.opset());
        for r in expect_rewritten {
            assert!(up.rewritten.iter().any(|w| w == r), "{r} not in {up:?}");
        }
        let converted = Model::from_bytes(&prost::Message::encode_to_vec(&proto), name).unwrap();
        assert_eq!(converted.opset(), 13);
        for n in &converted.graph().node {
            if matches!(
                n.op_type.as_str(),
                "Squeeze" | "Unsqueeze" | "ReduceSum" | "Split"
            ) {
                assert!(n
                    .attribute
                    .iter()
                    .all(|a| a.name != "axes" && a.name != "split"));
            }
            if n.op_type == "Softmax" {
                assert_eq!(attrs::int(n, "axis"), Some(-1));
            }
        }
        let before = run(&model, &x);
        let after = run(&converted, &x);
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b.shape(), a.shape());
            let diff = b
                .iter()
                .zip(a.iter())
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            assert!(diff <= 1e-6, "{name}: outputs differ by {diff}");
        }
    }

    #[test]
    fn opset_11_split_and_2d_softmax_keep_their_function() {
        check_same_function("opset_variants_11", &["split", "softmax"]);
    }

    #[test]
    fn opset_11_squeeze_unsqueeze_reducesum_split_and_4d_softmax_keep_their_function() {
        check_same_function(
            "opset_upgrade_11",
            &["split", "sum", "squeeze_sum", "unsqueeze_b", "softmax4d"],
        );
    }

    #[test]
    fn opset_13_is_left_alone_and_old_opsets_are_refused() {
        let (model, _) = fixture("grouped_strided");
        let mut proto = model.proto().clone();
        let up = upgrade_to_13(&mut proto, "g").unwrap();
        assert_eq!((up.from, up.rewritten.len()), (13, 0));
        assert_eq!(&proto, model.proto());
        proto.opset_import[0].version = 9;
        let err = upgrade_to_13(&mut proto, "old.onnx").unwrap_err();
        assert!(err.to_string().contains("opset 9"), "{err}");
    }

    #[test]
    fn removed_resize_mode_is_refused_naming_the_node() {
        let (model, _) = fixture("opset_variants_11");
        let mut proto = model.proto().clone();
        let g = proto.graph.as_mut().unwrap();
        g.node.push(NodeProto {
            name: "odd_resize".into(),
            op_type: "Resize".into(),
            input: vec!["probs".into()],
            output: vec!["r".into()],
            attribute: vec![AttributeProto {
                name: "coordinate_transformation_mode".into(),
                r#type: AttributeType::String as i32,
                s: b"tf_half_pixel_for_nn".to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let err = upgrade_to_13(&mut proto, "m.onnx").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("odd_resize") && text.contains("tf_half_pixel_for_nn"),
            "{text}"
        );
    }
}
