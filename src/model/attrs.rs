//! Reading node attributes by name.

use tract_onnx::pb::{AttributeProto, NodeProto, TensorProto};

fn find<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub fn int(node: &NodeProto, name: &str) -> Option<i64> {
    find(node, name).map(|a| a.i)
}

pub fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    find(node, name).map(|a| a.ints.clone())
}

pub fn float(node: &NodeProto, name: &str) -> Option<f32> {
    find(node, name).map(|a| a.f)
}

pub fn floats(node: &NodeProto, name: &str) -> Option<Vec<f32>> {
    find(node, name).map(|a| a.floats.clone())
}

pub fn string(node: &NodeProto, name: &str) -> Option<String> {
    find(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

pub fn tensor<'a>(node: &'a NodeProto, name: &str) -> Option<&'a TensorProto> {
    find(node, name).and_then(|a| a.t.as_ref())
}

pub fn tensor_mut<'a>(node: &'a mut NodeProto, name: &str) -> Option<&'a mut TensorProto> {
    node.attribute
        .iter_mut()
        .find(|a| a.name == name)
        .and_then(|a| a.t.as_mut())
}
