//! Structure-aware mutants of ONNX models, and the pipeline each one goes through.
//!
//! Shared by the seeded test (`tests/integration/fuzz.rs`, in the test process) and the
//! long-running tool (`examples/fuzz_models.rs`, each mutant in a child process). Mutants are
//! edits of the decoded protobuf — attribute values, dropped attributes, weight and input
//! dims, node inputs rewired to other values (scalar weights included), deleted nodes,
//! outputs produced twice, op types swapped for similar ones — so most of them get past the
//! protobuf decode and reach shape analysis, unlike byte flips. A mutant is a pure function
//! of (source model, seed, index): a case is reproduced from those three numbers alone.
#![allow(dead_code)]

use prost::Message;
use qsteer::model::{Dim, Model, ModelShapes};
use qsteer::runtime::CompiledModel;
use std::collections::HashMap;
use std::path::Path;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::pb::type_proto::Value as TypeValue;
use tract_onnx::pb::{GraphProto, ModelProto, TensorProto};

/// splitmix64 (Steele, Lea, Flood 2014): small, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64, index: u64) -> Rng {
        let mut r = Rng(seed ^ index.wrapping_mul(0xA24B_AED4_963E_E407));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// An index in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        assert!(bound > 0);
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// A model to mutate, with the per-sample shape of its (single) input.
pub struct Source {
    pub name: String,
    pub proto: ModelProto,
    pub sample_shape: Vec<usize>,
}

/// The shipped sample models and the fixtures ONNX Runtime checked, found under `root`
/// (the repository).
pub fn sources(root: &Path) -> Vec<Source> {
    let mut paths = vec![
        root.join("sample-models/mbv2_digits.onnx"),
        root.join("sample-models/resnet_digits.onnx"),
    ];
    for f in [
        "grouped_strided",
        "opset_variants_11",
        "opset_variants_15",
        "constant_weights",
        "named_batch_ops",
    ] {
        paths.push(root.join("tests/fixtures").join(format!("{f}.onnx")));
    }
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let proto = ModelProto::decode(bytes.as_slice()).expect("a valid model");
            let model = Model::from_proto(proto.clone(), "source").expect("loads");
            let shapes = model.shapes(None).expect("analyses");
            let sample_shape = shapes.inputs[0].shape[1..]
                .iter()
                .map(|d| match d {
                    Dim::Known(v) => *v,
                    _ => panic!("{}: symbolic input dim", p.display()),
                })
                .collect();
            Source {
                name: p.file_stem().unwrap().to_string_lossy().into_owned(),
                proto,
                sample_shape,
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    AttrValue,
    DropAttr,
    WeightDims,
    InputDims,
    Rewire,
    DeleteNode,
    DuplicateOutput,
    ChangeOp,
}

pub const KINDS: [Kind; 8] = [
    Kind::AttrValue,
    Kind::DropAttr,
    Kind::WeightDims,
    Kind::InputDims,
    Kind::Rewire,
    Kind::DeleteNode,
    Kind::DuplicateOutput,
    Kind::ChangeOp,
];

/// One mutant: its bytes, the source it came from, and what was done (for reports).
pub struct Mutant {
    pub source: usize,
    pub bytes: Vec<u8>,
    pub kinds: Vec<Kind>,
    pub edits: Vec<String>,
}

/// Mutant `index` of run `seed`: 1–3 edits of one of `sources` (round robin).
pub fn mutant(sources: &[Source], seed: u64, index: u64) -> Mutant {
    let mut rng = Rng::new(seed, index);
    let source = (index as usize) % sources.len();
    let mut proto = sources[source].proto.clone();
    let mut kinds = Vec::new();
    let mut edits = Vec::new();
    let n = 1 + usize::from(rng.chance(3)) + usize::from(rng.chance(6));
    // the first edit cycles through the kinds so every kind is exercised in a short run
    let mut kind = KINDS[(index as usize / sources.len()) % KINDS.len()];
    while kinds.len() < n {
        let g = proto.graph.as_mut().expect("sources have graphs");
        let edit = match kind {
            Kind::AttrValue => attr_value(&mut rng, g),
            Kind::DropAttr => drop_attr(&mut rng, g),
            Kind::WeightDims => weight_dims(&mut rng, g),
            Kind::InputDims => input_dims(&mut rng, g),
            Kind::Rewire => rewire(&mut rng, g),
            Kind::DeleteNode => delete_node(&mut rng, g),
            Kind::DuplicateOutput => duplicate_output(&mut rng, g),
            Kind::ChangeOp => change_op(&mut rng, g),
        };
        if let Some(e) = edit {
            kinds.push(kind);
            edits.push(format!("{kind:?}: {e}"));
        }
        kind = *rng.pick(&KINDS);
    }
    Mutant {
        source,
        bytes: proto.encode_to_vec(),
        kinds,
        edits,
    }
}

/// Values that break geometry: zero, negative, off by one, large.
fn int_value(rng: &mut Rng, old: i64) -> i64 {
    match rng.below(10) {
        0 => 0,
        1 => -1,
        2 => old + 1,
        3 => old - 1,
        4 => old * 2,
        5 => 1 << 20,
        6 => -(rng.below(5) as i64) - 2,
        _ => rng.below(5) as i64,
    }
}

fn node_name(g: &GraphProto, i: usize) -> String {
    let n = &g.node[i];
    if n.name.is_empty() {
        format!("#{i} {}", n.op_type)
    } else {
        n.name.clone()
    }
}

fn attr_value(rng: &mut Rng, g: &mut GraphProto) -> Option<String> {
    let cands: Vec<(usize, usize)> = g
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| {
            n.attribute.iter().enumerate().filter_map(move |(j, a)| {
                let t = a.r#type;
                (t == AttributeType::Int as i32 || t == AttributeType::Ints as i32)
                    .then_some((i, j))
            })
        })
        .collect();
    let &(i, j) = rng.pick(cands.as_slice().get(..).filter(|c| !c.is_empty())?);
    let name = node_name(g, i);
    let a = &mut g.node[i].attribute[j];
    if a.r#type == AttributeType::Int as i32 {
        let old = a.i;
        a.i = int_value(rng, old);
        return Some(format!("'{name}' {} {old} -> {}", a.name, a.i));
    }
    let old = a.ints.clone();
    match rng.below(4) {
        0 if !a.ints.is_empty() => {
            a.ints.pop();
        }
        1 => a.ints.push(rng.below(4) as i64),
        _ if !a.ints.is_empty() => {
            let k = rng.below(a.ints.len());
            a.ints[k] = int_value(rng, a.ints[k]);
        }
        _ => a.ints.push(int_value(rng, 1)),
    }
    Some(format!("'{name}' {} {old:?} -> {:?}", a.name, a.ints))
}

fn drop_attr(rng: &mut Rng, g: &mut GraphProto) -> Option<String> {
    let cands: Vec<(usize, usize)> = g
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| (0..n.attribute.len()).map(move |j| (i, j)))
        .collect();
    let &(i, j) = rng.pick(cands.as_slice().get(..).filter(|c| !c.is_empty())?);
    let name = node_name(g, i);
    let a = g.node[i].attribute.remove(j);
    Some(format!("'{name}' without {}", a.name))
}

/// New dims for a tensor of `old` dims: scalar, vector, permuted, one dim dropped, added
/// or changed.
fn new_dims(rng: &mut Rng, old: &[i64]) -> Vec<i64> {
    let mut d = old.to_vec();
    match rng.below(7) {
        0 => d.clear(),
        1 => d = vec![rng.below(4) as i64 + 1],
        2 => d.reverse(),
        3 if !d.is_empty() => {
            let k = rng.below(d.len());
            d.remove(k);
        }
        4 => {
            let k = rng.below(d.len() + 1);
            d.insert(k, 1);
        }
        _ if !d.is_empty() => {
            let k = rng.below(d.len());
            d[k] = match rng.below(3) {
                0 => 0,
                1 => d[k] + 1,
                _ => (d[k] / 2).max(1),
            };
        }
        _ => d.push(2),
    }
    d
}

/// Refill a tensor for new dims (at most 64 Ki elements), keeping its name and type.
fn refill(t: &mut TensorProto, dims: Vec<i64>, rng: &mut Rng) -> bool {
    let Some(n) = dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d)) else {
        return false;
    };
    if !(0..=1 << 16).contains(&n) {
        return false;
    }
    let n = n as usize;
    let float = t.data_type == DataType::Float as i32;
    let int64 = t.data_type == DataType::Int64 as i32;
    if !float && !int64 {
        return false;
    }
    let name = t.name.clone();
    *t = TensorProto {
        name,
        dims,
        data_type: if float {
            DataType::Float as i32
        } else {
            DataType::Int64 as i32
        },
        ..Default::default()
    };
    if float {
        t.float_data = (0..n)
            .map(|_| (rng.below(2001) as f32 - 1000.0) / 1000.0)
            .collect();
    } else {
        t.int64_data = (0..n).map(|_| rng.below(5) as i64 - 1).collect();
    }
    true
}

fn weight_dims(rng: &mut Rng, g: &mut GraphProto) -> Option<String> {
    if g.initializer.is_empty() {
        return None;
    }
    let i = rng.below(g.initializer.len());
    let old = g.initializer[i].dims.clone();
    let dims = new_dims(rng, &old);
    let t = &mut g.initializer[i];
    refill(t, dims, rng).then(|| format!("'{}' {old:?} -> {:?}", t.name, t.dims))
}

fn input_dims(rng: &mut Rng, g: &mut GraphProto) -> Option<String> {
    let inits: Vec<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
    let fed: Vec<usize> = (0..g.input.len())
        .filter(|&i| !inits.contains(&g.input[i].name))
        .collect();
    let &i = rng.pick(fed.as_slice().get(..).filter(|c| !c.is_empty())?);
    let input = &mut g.input[i];
    let name = input.name.clone();
    let Some(TypeValue::TensorType(t)) = input.r#type.as_mut()?.value.as_mut() else {
        return None;
    };
    let dims = &mut t.shape.as_mut()?.dim;
    let old: Vec<i64> = dims
        .iter()
        .map(|d| match d.value {
            Some(DimValue::DimValue(v)) => v,
            _ => -1,
        })
        .collect();
    let new = new_dims(rng, &old);
    // keep the batch axis symbolic when it was and is still there
    let sym = dims.first().cloned();
    *dims = new
        .iter()
        .enumerate()
        .map(|(k, &v)| match (&sym, k) {
            (Some(s), 0) if v == -1 => s.clone(),
            _ => tract_onnx::pb::tensor_shape_proto::Dimension {
                value: Some(DimValue::DimValue(v)),
                ..Default::default()
            },
        })
        .collect();
    Some(format!("input '{name}' {old:?} -> {new:?}"))
}

/// Names a node at position `i` may read without making a cycle: weights, graph inputs,
/// outputs of earlier nodes (the sources list their nodes in order).
fn readable(g: &GraphProto, i: usize) -> Vec<String> {
    let mut names: Vec<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
    names.extend(g.input.iter().map(|v| v.name.clone()));
    for n in &g.node[..i] {
        names.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
    }
    names.sort();
    names.dedup();
    names
}

/// Add (once) a scalar and a 1-element vector weight to rewire to.
fn small_weights(g: &mut GraphProto) -> [&'static str; 2] {
    let names = ["fuzz.scalar", "fuzz.vector"];
    for (name, dims) in [(names[0], vec![]), (names[1], vec![1])] {
        if !g.initializer.iter().any(|t| t.name == name) {
            g.initializer.push(TensorProto {
                name: name.into(),
                dims,
                data_type: DataType::Float as i32,
                float_data: vec![0.5],
                ..Default::default()
            });
        }
    }
    names
}

fn rewire(rng: &mut Rng, g: &mut GraphProto) -> Option<String> {
    let cands: Vec<usize> = (0..g.node.len())
        .filter(|&i| !g.node[i].input.is_empty())
        .collect();
    let &i = rng.pick(cands.as_slice().get(..).filter(|c| !c.is_empty())?);
    let slot = rng.below(g.node[i].input.len());
    let to = if rng.chance(3) {
        let small = small_weights(g);
        rng.pick(&small).to_string()
    } else {
        rng.pick(&readable(g, i)).clone()
    };
    let name = node_name(g, i);
    let from = std::mem::replace(&mut g.node[i].input[slot], to.clone());
    Some(format!("'{name}' input {slot} '{from}' -> '{to}'"))
}

fn delete_node(rng: &mut Rng, g: &mut GraphProto) -> Option<String> {
    if g.node.len() < 2 {
        return None;
    }
    let i = rng.below(g.node.len());
    let name = node_name(g, i);
    let node = g.node.remove(i);
    // usually the readers take the deleted node's first input instead (a bypass);
    // sometimes they are left reading a value nobody produces
    let bypass = node.input.first().filter(|_| !rng.chance(4)).cloned();
    if let Some(by) = &bypass {
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            for n in &mut g.node {
                for inp in &mut n.input {
                    if inp == out {
                        *inp = by.clone();
                    }
                }
            }
            for o in &mut g.output {
                if &o.name == out {
                    o.name = by.clone();
                }
            }
        }
    }
    Some(format!(
        "'{name}' ({}) deleted{}",
        node.op_type,
        if bypass.is_some() { ", bypassed" } else { "" }
    ))
}

fn duplicate_output(rng: &mut Rng, g: &mut GraphProto) -> Option<String> {
    match rng.below(3) {
        0 if !g.output.is_empty() => {
            // a graph output listed twice
            let o = rng.pick(&g.output).clone();
            g.output.push(o.clone());
            Some(format!("graph output '{}' twice", o.name))
        }
        1 if !g.output.is_empty() && !g.node.is_empty() => {
            // an intermediate value made a graph output too
            let i = rng.below(g.node.len());
            let out = g.node[i].output.first()?.clone();
            let mut v = g.output[0].clone();
            v.name = out.clone();
            v.r#type = None;
            g.output.push(v);
            Some(format!("'{out}' also a graph output"))
        }
        _ => {
            // two nodes produce the same value
            if g.node.len() < 2 {
                return None;
            }
            let a = rng.below(g.node.len());
            let b = rng.below(g.node.len());
            let out = g.node[a].output.first()?.clone();
            let name = node_name(g, b);
            *g.node[b].output.first_mut()? = out.clone();
            Some(format!("'{name}' also produces '{out}'"))
        }
    }
}

const SIMILAR: &[&[&str]] = &[
    &[
        "Relu",
        "Sigmoid",
        "Tanh",
        "Clip",
        "HardSwish",
        "HardSigmoid",
        "Identity",
        "Abs",
        "Neg",
        "Softmax",
        "Flatten",
        "Dropout",
    ],
    &[
        "Add", "Mul", "Sub", "Div", "Max", "Min", "Pow", "MatMul", "Concat", "Sum",
    ],
    &["Conv", "ConvTranspose", "MatMul", "Gemm"],
    &[
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Identity",
        "LpPool",
    ],
    &[
        "BatchNormalization",
        "InstanceNormalization",
        "LayerNormalization",
        "LRN",
        "Identity",
    ],
    &[
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Reshape",
        "Transpose",
        "Identity",
        "Expand",
    ],
    &["ReduceMean", "ReduceSum", "ReduceMax", "ArgMax", "Softmax"],
    &["Split", "Concat", "Identity", "Slice"],
];

fn change_op(rng: &mut Rng, g: &mut GraphProto) -> Option<String> {
    let cands: Vec<(usize, &[&str])> = g
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| {
            SIMILAR
                .iter()
                .filter(|grp| grp.contains(&n.op_type.as_str()))
                .map(move |grp| (i, *grp))
        })
        .collect();
    let &(i, group) = rng.pick(cands.as_slice().get(..).filter(|c| !c.is_empty())?);
    let to = *rng.pick(group);
    let name = node_name(g, i);
    let from = std::mem::replace(&mut g.node[i].op_type, to.to_string());
    Some(format!("'{name}' {from} -> {to}"))
}

// ------------------------------------------------------------------------ the pipeline

/// How far a mutant got. Errors are qsteer's messages.
#[derive(Debug, Clone)]
pub enum Outcome {
    LoadErr(String),
    ShapesErr(String),
    /// Analysed; not compiled (not asked to, or its values too large to run here).
    Analysed,
    CompileErr(String),
    RunErr(String),
    Ran,
}

impl Outcome {
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::LoadErr(e)
            | Outcome::ShapesErr(e)
            | Outcome::CompileErr(e)
            | Outcome::RunErr(e) => Some(e),
            Outcome::Analysed | Outcome::Ran => None,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::LoadErr(_) => "load error",
            Outcome::ShapesErr(_) => "analysis error",
            Outcome::Analysed => "analysed",
            Outcome::CompileErr(_) => "compile error",
            Outcome::RunErr(_) => "run error",
            Outcome::Ran => "ran",
        }
    }
}

/// The largest value (elements, batch 1) a mutant may have for it to be compiled and run
/// here: a damaged attribute can make an activation enormous.
pub const RUN_ELEMENT_LIMIT: u64 = 1 << 20;

/// Load, analyse (symbolic batch), extract layers; with `run`, analyse again pinned to the
/// source's sample shape and compile and run one sample of synthetic data.
pub fn exercise(bytes: &[u8], name: &str, sample_shape: &[usize], run: bool) -> Outcome {
    let model = match Model::from_bytes(bytes, name) {
        Ok(m) => m,
        Err(e) => return Outcome::LoadErr(e.to_string()),
    };
    // layer extraction must survive a graph tract never validated
    let unanalysed = ModelShapes {
        values: HashMap::new(),
        inputs: vec![],
        fixed_batch: None,
        fallback: None,
    };
    let _ = model.layers(&unanalysed);
    let shapes = match model.shapes(None) {
        Ok(s) => s,
        Err(e) => return Outcome::ShapesErr(e.to_string()),
    };
    if let Err(e) = model.layers(&shapes) {
        return Outcome::ShapesErr(e.to_string());
    }
    if !run || shapes.inputs.len() != 1 || shapes.inputs[0].shape.len() != sample_shape.len() + 1 {
        return Outcome::Analysed;
    }
    let pinned = vec![sample_shape.to_vec()];
    let fixed = match model.shapes(Some(&pinned)) {
        Ok(s) => s,
        Err(e) => return Outcome::ShapesErr(e.to_string()),
    };
    let small = fixed.values.values().all(|s| {
        s.iter()
            .try_fold(1u64, |acc, d| match d {
                Dim::Known(v) => acc.checked_mul(*v as u64),
                Dim::Batch => Some(acc),
                Dim::Symbol(_) => None,
            })
            .is_some_and(|n| n <= RUN_ELEMENT_LIMIT)
    });
    if !small {
        return Outcome::Analysed;
    }
    let compiled = match CompiledModel::compile(&model, &pinned, 1, &[]) {
        Ok(c) => c,
        Err(e) => return Outcome::CompileErr(e.to_string()),
    };
    let mut dims = vec![compiled.batch()];
    dims.extend(sample_shape);
    let input = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&dims), |i| {
        ((ndarray::Dimension::as_array_view(&i).iter().sum::<usize>() % 17) as f32) / 17.0
    });
    match compiled.run(&[input.view()]) {
        Ok(_) => Outcome::Ran,
        Err(e) => Outcome::RunErr(e.to_string()),
    }
}
