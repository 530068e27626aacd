//! The ONNX graph as the interpreter runs it: nodes in topological order, each parsed once
//! into an [`Op`] with its attributes checked, values addressed by slot. Weights that train
//! are fed per step (as autodiff leaves); every other float weight is a constant tensor.
//! An op the interpreter cannot train through is an error naming the node and op.

use super::fake_quant::{fake_quant_ste, Grid};
use super::ops::{self, Binary, Padding, Window};
use super::value::Value;
use crate::model::graph::node_label;
use crate::model::{attrs, tensor, Model};
use crate::quant::import::ModelEncodings;
use crate::quant::per_channel::{fake_quant_tensor, fake_quant_weight};
use crate::{Error, Result};
use burn_tensor::{DType, Device};
use std::collections::{HashMap, HashSet};
use tract_onnx::pb::NodeProto;

/// The op types the interpreter supports (for messages and the tests that cover each).
pub const SUPPORTED_OPS: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "BatchNormalization",
    "Relu",
    "Clip",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Concat",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Softmax",
    "HardSigmoid",
    "HardSwish",
    "Sigmoid",
    "Identity",
    "Dropout",
];

#[derive(Debug, Clone)]
pub enum Op {
    Conv {
        window: Window,
        group: usize,
    },
    Gemm {
        trans: (bool, bool),
        alpha: f64,
        beta: f64,
    },
    MatMul,
    BatchNorm {
        eps: f64,
    },
    Relu,
    Clip {
        min: Option<f64>,
        max: Option<f64>,
    },
    Binary(Binary),
    Concat {
        axis: i64,
    },
    MaxPool {
        window: Window,
    },
    AveragePool {
        window: Window,
        count_include_pad: bool,
    },
    GlobalAveragePool,
    Flatten {
        axis: i64,
    },
    Reshape {
        shape: Vec<i64>,
        allowzero: bool,
    },
    Softmax {
        axis: i64,
        legacy: bool,
    },
    HardSigmoid {
        alpha: f64,
        beta: f64,
    },
    HardSwish,
    Sigmoid,
    Identity,
}

#[derive(Debug, Clone)]
struct Step {
    label: String,
    op_type: String,
    op: Op,
    /// Input slots (`None` for an omitted optional input).
    inputs: Vec<Option<usize>>,
    output: usize,
}

/// A graph ready to run forward on one device.
#[derive(Debug, Clone)]
pub struct TrainGraph {
    steps: Vec<Step>,
    slots: usize,
    inputs: Vec<usize>,
    output: usize,
    constants: Vec<(usize, Value)>,
    params: Vec<usize>,
    param_names: Vec<String>,
    /// How many steps still read each slot, so values are dropped once used.
    readers: Vec<usize>,
    /// Slot of each value name.
    names: HashMap<String, usize>,
    /// QAT: fake-quant of trained weights (by parameter) and of activation points (by slot).
    quant_params: Vec<Option<Grid>>,
    quant_values: HashMap<usize, Grid>,
    device: Device,
    dtype: DType,
}

fn what(label: &str, op: &str) -> String {
    format!("node '{label}' ({op})")
}

/// Slot numbering for value names.
#[derive(Default)]
struct Slots(HashMap<String, usize>);

impl Slots {
    fn get(&mut self, name: &str) -> usize {
        let n = self.0.len();
        *self.0.entry(name.to_string()).or_insert(n)
    }
}

impl TrainGraph {
    /// Build the graph of `model` on `device`. `params` name the weights fed at each
    /// forward (in that order); the other float weights become constants stored as `dtype`.
    pub fn build(
        model: &Model,
        params: &[String],
        device: &Device,
        dtype: DType,
    ) -> Result<TrainGraph> {
        let graph = model.graph();
        let source = model.source();
        let opset = model.opset();
        let param_set: HashSet<&str> = params.iter().map(|s| s.as_str()).collect();
        let mut slots = Slots::default();
        let inputs: Vec<usize> = model.inputs().iter().map(|i| slots.get(&i.name)).collect();
        let param_slots: Vec<usize> = params
            .iter()
            .map(|p| {
                if model.weight(p).is_none() {
                    return Err(Error::input(format!(
                        "{source}: no float weight named '{p}' to train"
                    )));
                }
                Ok(slots.get(p))
            })
            .collect::<Result<_>>()?;
        let mut constants = Vec::new();
        for (name, w) in model.weights() {
            if param_set.contains(name.as_str()) {
                continue;
            }
            // Only weights some node reads; a scalar Clip bound read at build time is
            // still harmless to hold.
            if model.index().consumers(name).is_empty() {
                continue;
            }
            let v = Value::from_array(
                &w.array,
                device,
                dtype,
                &format!("{source}: weight '{name}'"),
            )?;
            constants.push((slots.get(name), v));
        }
        let mut steps = Vec::new();
        for &i in model.index().order() {
            let node = &graph.node[i];
            if node.op_type == "Constant" {
                continue; // float constants are weights above; integer ones are read by their consumer
            }
            let label = node_label(graph, i);
            let w = format!("{source}: {}", what(&label, &node.op_type));
            let op = parse(model, node, opset, &w)?;
            let output = match node.output.first().filter(|o| !o.is_empty()) {
                Some(o) => slots.get(o),
                None => return Err(Error::input(format!("{w} has no output"))),
            };
            if node.op_type == "Dropout" {
                if let Some(mask) = node.output.get(1).filter(|m| !m.is_empty()) {
                    if !model.index().consumers(mask).is_empty()
                        || graph.output.iter().any(|o| &o.name == mask)
                    {
                        return Err(Error::input(format!("{w}: its mask output is used; the training interpreter runs Dropout as identity only")));
                    }
                }
            }
            let inputs = data_inputs(&op, node)
                .iter()
                .map(|name| name.as_ref().map(|n| slots.get(n)))
                .collect();
            steps.push(Step {
                label,
                op_type: node.op_type.clone(),
                op,
                inputs,
                output,
            });
        }
        let out_name = &graph.output[0].name;
        let output = *slots.0.get(out_name).ok_or_else(|| {
            Error::input(format!("{source}: output '{out_name}' is not computed"))
        })?;
        let n = slots.0.len();
        let mut readers = vec![0usize; n];
        for s in &steps {
            for i in s.inputs.iter().flatten() {
                readers[*i] += 1;
            }
        }
        Ok(TrainGraph {
            steps,
            slots: n,
            inputs,
            output,
            constants,
            params: param_slots,
            param_names: params.to_vec(),
            readers,
            quant_params: vec![None; params.len()],
            quant_values: HashMap::new(),
            names: slots.0,
            device: device.clone(),
            dtype,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn param_names(&self) -> &[String] {
        &self.param_names
    }

    /// Quantization-aware training: from now on the forward pass fake-quantizes (with the
    /// straight-through estimator) the weights and activation values `encodings` names.
    /// Weights that do not train are fake-quantized once, here.
    pub fn set_quant(&mut self, model: &Model, encodings: &ModelEncodings) -> Result<()> {
        let source = model.source();
        for w in &encodings.weights {
            let what = format!("{source}: weight '{}' of layer '{}'", w.weight, w.layer);
            let array = model
                .weight(&w.weight)
                .ok_or_else(|| Error::input(format!("{what}: no such float weight")))?;
            if w.encodings.is_empty() {
                return Err(Error::input(format!("{what}: no encodings")));
            }
            if let Some(i) = self.param_names.iter().position(|p| p == &w.weight) {
                self.quant_params[i] = Some(match w.axis {
                    Some(axis) => Grid::channels(
                        &w.encodings,
                        axis,
                        array.shape(),
                        &self.device,
                        self.dtype,
                        &what,
                    )?,
                    None => Grid::tensor(&w.encodings[0]),
                });
                continue;
            }
            let slot = self.names.get(&w.weight).copied();
            let Some(c) = self.constants.iter_mut().find(|c| Some(c.0) == slot) else {
                return Err(Error::input(format!(
                    "{what}: the training graph does not read it"
                )));
            };
            let mut q = array.clone();
            match w.axis {
                Some(axis) => fake_quant_weight(&mut q, &w.encodings, axis)
                    .map_err(|e| Error::input(format!("{what}: {e}")))?,
                None => fake_quant_tensor(&mut q, &w.encodings[0]),
            }
            c.1 = Value::from_array(&q, &self.device, self.dtype, &what)?;
        }
        let computed: HashSet<usize> = self
            .steps
            .iter()
            .map(|s| s.output)
            .chain(self.inputs.iter().copied())
            .collect();
        for (name, e) in &encodings.activations {
            match self.names.get(name) {
                Some(&slot) if computed.contains(&slot) => {
                    self.quant_values.insert(slot, Grid::tensor(e));
                }
                _ => {
                    return Err(Error::input(format!(
                        "{source}: activation encoding for '{name}', a value the training \
                         graph does not compute"
                    )))
                }
            }
        }
        Ok(())
    }

    /// The value in `slot` through its activation quantizer, if it has one.
    fn quantized(&self, slot: usize, v: Value) -> Value {
        match self.quant_values.get(&slot) {
            Some(g) => fake_quant_ste(&v, g),
            None => v,
        }
    }

    /// Run the graph on `inputs` (one per graph input) with `params` (in the order given to
    /// `build`), returning the first graph output.
    pub fn forward(&self, inputs: &[Value], params: &[Value]) -> Result<Value> {
        if inputs.len() != self.inputs.len() || params.len() != self.params.len() {
            return Err(Error::runtime(format!(
                "the training graph takes {} input(s) and {} parameter(s), was given {} and {}",
                self.inputs.len(),
                self.params.len(),
                inputs.len(),
                params.len()
            )));
        }
        let mut env: Vec<Option<Value>> = vec![None; self.slots];
        let mut left = self.readers.clone();
        for (slot, v) in &self.constants {
            env[*slot] = Some(v.clone());
        }
        for (slot, v) in self.inputs.iter().zip(inputs) {
            env[*slot] = Some(self.quantized(*slot, v.clone()));
        }
        for ((slot, v), q) in self.params.iter().zip(params).zip(&self.quant_params) {
            env[*slot] = Some(match q {
                Some(g) => fake_quant_ste(v, g),
                None => v.clone(),
            });
        }
        for step in &self.steps {
            let w = what(&step.label, &step.op_type);
            let args: Vec<Option<&Value>> = step
                .inputs
                .iter()
                .map(|s| s.and_then(|s| env[s].as_ref()))
                .collect();
            let out = run(&step.op, &args, &w)?;
            for s in step.inputs.iter().flatten() {
                left[*s] -= 1;
                if left[*s] == 0 && *s != self.output {
                    env[*s] = None;
                }
            }
            env[step.output] = Some(self.quantized(step.output, out));
        }
        env[self.output]
            .take()
            .ok_or_else(|| Error::runtime("the graph output was not computed"))
    }
}

/// The input names an op reads as tensors at run time (Clip bounds and Reshape shapes
/// are read at build time instead).
fn data_inputs(op: &Op, node: &NodeProto) -> Vec<Option<String>> {
    let n = match op {
        Op::Clip { .. } | Op::Reshape { .. } | Op::Identity => 1,
        Op::Softmax { .. }
        | Op::Flatten { .. }
        | Op::Relu
        | Op::Sigmoid
        | Op::HardSigmoid { .. }
        | Op::HardSwish => 1,
        Op::MaxPool { .. } | Op::AveragePool { .. } | Op::GlobalAveragePool => 1,
        _ => node.input.len(),
    };
    node.input
        .iter()
        .take(n)
        .map(|s| (!s.is_empty()).then(|| s.clone()))
        .collect()
}

fn need<'a>(args: &[Option<&'a Value>], i: usize, w: &str) -> Result<&'a Value> {
    args.get(i)
        .copied()
        .flatten()
        .ok_or_else(|| Error::input(format!("{w}: input {i} is missing")))
}

fn run(op: &Op, a: &[Option<&Value>], w: &str) -> Result<Value> {
    let x = need(a, 0, w)?;
    Ok(match op {
        Op::Conv { window, group } => ops::conv(
            x,
            need(a, 1, w)?,
            a.get(2).copied().flatten(),
            window,
            *group,
            w,
        )?,
        Op::Gemm { trans, alpha, beta } => ops::gemm(
            x,
            need(a, 1, w)?,
            a.get(2).copied().flatten(),
            *trans,
            *alpha,
            *beta,
            w,
        )?,
        Op::MatMul => ops::matmul(x, need(a, 1, w)?, w)?,
        Op::BatchNorm { eps } => ops::batch_norm(
            x,
            need(a, 1, w)?,
            need(a, 2, w)?,
            need(a, 3, w)?,
            need(a, 4, w)?,
            *eps,
            w,
        )?,
        Op::Relu => ops::relu(x),
        Op::Clip { min, max } => ops::clip(x, *min, *max),
        Op::Binary(b) => ops::binary(x, need(a, 1, w)?, *b, w)?,
        Op::Concat { axis } => {
            let vs: Vec<&Value> = a
                .iter()
                .copied()
                .collect::<Option<_>>()
                .ok_or_else(|| Error::input(format!("{w}: an input is missing")))?;
            ops::concat(&vs, *axis, w)?
        }
        Op::MaxPool { window } => ops::max_pool(x, window, w)?,
        Op::AveragePool {
            window,
            count_include_pad,
        } => ops::average_pool(x, window, *count_include_pad, w)?,
        Op::GlobalAveragePool => ops::global_average_pool(x, w)?,
        Op::Flatten { axis } => ops::flatten(x, *axis, w)?,
        Op::Reshape { shape, allowzero } => ops::reshape(x, shape, *allowzero, w)?,
        Op::Softmax { axis, legacy } => ops::softmax(x, *axis, *legacy, w)?,
        Op::HardSigmoid { alpha, beta } => ops::hard_sigmoid(x, *alpha, *beta),
        Op::HardSwish => ops::hard_swish(x),
        Op::Sigmoid => ops::sigmoid(x),
        Op::Identity => x.clone(),
    })
}

fn ints_or(node: &NodeProto, name: &str, default: Vec<i64>) -> Vec<i64> {
    attrs::ints(node, name).unwrap_or(default)
}

fn two(v: &[i64], name: &str, w: &str, min: i64) -> Result<[usize; 2]> {
    match v {
        [a, b] if *a >= min && *b >= min => Ok([*a as usize, *b as usize]),
        _ => Err(Error::input(format!(
            "{w}: {name} {v:?}; the training interpreter handles 2-D windows with values ≥ {min}"
        ))),
    }
}

/// Window attributes of Conv and the pools. `kernel` comes from the weight for Conv.
fn window(node: &NodeProto, kernel: Vec<i64>, w: &str) -> Result<Window> {
    let kernel = two(&kernel, "kernel_shape", w, 1)?;
    let stride = two(&ints_or(node, "strides", vec![1, 1]), "strides", w, 1)?;
    let dilation = two(&ints_or(node, "dilations", vec![1, 1]), "dilations", w, 1)?;
    let auto_pad = attrs::string(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
    let padding = match auto_pad.as_str() {
        "NOTSET" | "" => {
            let p = ints_or(node, "pads", vec![0; 4]);
            match p.as_slice() {
                [b0, b1, e0, e1] if p.iter().all(|&x| x >= 0) => {
                    Padding::Explicit([(*b0 as usize, *e0 as usize), (*b1 as usize, *e1 as usize)])
                }
                _ => {
                    return Err(Error::input(format!(
                        "{w}: pads {p:?}, expected four non-negative values"
                    )))
                }
            }
        }
        "VALID" => Padding::Explicit([(0, 0); 2]),
        "SAME_UPPER" => Padding::SameUpper,
        "SAME_LOWER" => Padding::SameLower,
        other => return Err(Error::input(format!("{w}: unknown auto_pad '{other}'"))),
    };
    let ceil_mode = attrs::int(node, "ceil_mode").unwrap_or(0) != 0;
    Ok(Window {
        kernel,
        stride,
        dilation,
        padding,
        ceil_mode,
    })
}

/// A scalar float read at build time from an initializer or Constant node.
fn const_scalar(model: &Model, name: &str, w: &str) -> Result<Option<f64>> {
    if name.is_empty() {
        return Ok(None);
    }
    match model.weight(name) {
        Some(a) if a.len() == 1 => Ok(Some(*a.iter().next().expect("one element") as f64)),
        _ => Err(Error::input(format!(
            "{w}: bound '{name}' is not a constant scalar; the training interpreter needs it fixed"
        ))),
    }
}

/// An integer tensor read at build time (Reshape's shape).
fn const_ints(model: &Model, name: &str, w: &str) -> Result<Vec<i64>> {
    let g = model.graph();
    let found = g.initializer.iter().find(|t| t.name == name).or_else(|| {
        g.node
            .iter()
            .find(|n| n.op_type == "Constant" && n.output.first().map(|o| o.as_str()) == Some(name))
            .and_then(|n| attrs::tensor(n, "value"))
    });
    match found {
        Some(t) => tensor::to_i64_vec(t, w)?
            .ok_or_else(|| Error::input(format!("{w}: shape '{name}' is not an integer tensor"))),
        None => Err(Error::input(format!(
            "{w}: shape '{name}' is computed in the graph; the training interpreter needs a constant shape"
        ))),
    }
}

fn parse(model: &Model, node: &NodeProto, opset: i64, w: &str) -> Result<Op> {
    let f = |name: &str, default: f32| attrs::float(node, name).unwrap_or(default) as f64;
    let i = |name: &str, default: i64| attrs::int(node, name).unwrap_or(default);
    let input = |k: usize| node.input.get(k).map(|s| s.as_str()).unwrap_or("");
    Ok(match node.op_type.as_str() {
        "Conv" => {
            let kernel = match attrs::ints(node, "kernel_shape") {
                Some(k) => k,
                None => {
                    let wname = input(1);
                    let shape =
                        model
                            .weight(wname)
                            .map(|a| a.shape().to_vec())
                            .ok_or_else(|| {
                                Error::input(format!(
                                    "{w}: no kernel_shape and weight '{wname}' is not a constant"
                                ))
                            })?;
                    shape.iter().skip(2).map(|&d| d as i64).collect()
                }
            };
            let group = i("group", 1);
            if group < 1 {
                return Err(Error::input(format!("{w}: group {group}")));
            }
            Op::Conv {
                window: window(node, kernel, w)?,
                group: group as usize,
            }
        }
        "Gemm" => Op::Gemm {
            trans: (i("transA", 0) != 0, i("transB", 0) != 0),
            alpha: f("alpha", 1.0),
            beta: f("beta", 1.0),
        },
        "MatMul" => Op::MatMul,
        "BatchNormalization" => {
            if i("training_mode", 0) != 0 {
                return Err(Error::input(format!(
                    "{w}: training_mode=1 is not supported; BN runs on its stored statistics"
                )));
            }
            Op::BatchNorm {
                eps: f("epsilon", 1e-5),
            }
        }
        "Relu" => Op::Relu,
        "Clip" => {
            if opset < 11 {
                let min = attrs::float(node, "min").map(|v| v as f64);
                let max = attrs::float(node, "max").map(|v| v as f64);
                Op::Clip { min, max }
            } else {
                Op::Clip {
                    min: const_scalar(model, input(1), w)?,
                    max: const_scalar(model, input(2), w)?,
                }
            }
        }
        "Add" => Op::Binary(Binary::Add),
        "Sub" => Op::Binary(Binary::Sub),
        "Mul" => Op::Binary(Binary::Mul),
        "Div" => Op::Binary(Binary::Div),
        "Concat" => Op::Concat {
            axis: attrs::int(node, "axis").ok_or_else(|| Error::input(format!("{w}: no axis")))?,
        },
        "MaxPool" => {
            if i("storage_order", 0) != 0 || node.output.iter().skip(1).any(|o| !o.is_empty()) {
                return Err(Error::input(format!(
                    "{w}: MaxPool indices output is not supported"
                )));
            }
            let k = attrs::ints(node, "kernel_shape")
                .ok_or_else(|| Error::input(format!("{w}: no kernel_shape")))?;
            Op::MaxPool {
                window: window(node, k, w)?,
            }
        }
        "AveragePool" => {
            let k = attrs::ints(node, "kernel_shape")
                .ok_or_else(|| Error::input(format!("{w}: no kernel_shape")))?;
            let window = window(node, k, w)?;
            if window.dilation != [1, 1] {
                return Err(Error::input(format!(
                    "{w}: dilated AveragePool is not supported"
                )));
            }
            Op::AveragePool {
                window,
                count_include_pad: i("count_include_pad", 0) != 0,
            }
        }
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "Flatten" => Op::Flatten { axis: i("axis", 1) },
        "Reshape" => Op::Reshape {
            shape: const_ints(model, input(1), w)?,
            allowzero: i("allowzero", 0) != 0,
        },
        "Softmax" => Op::Softmax {
            axis: i("axis", if opset >= 13 { -1 } else { 1 }),
            legacy: opset < 13,
        },
        "HardSigmoid" => Op::HardSigmoid {
            alpha: f("alpha", 0.2),
            beta: f("beta", 0.5),
        },
        "HardSwish" => Op::HardSwish,
        "Sigmoid" => Op::Sigmoid,
        "Identity" | "Dropout" => Op::Identity,
        other => {
            return Err(Error::input(format!(
                "{w}: op '{other}' is not supported by the training interpreter (it handles {})",
                SUPPORTED_OPS.join(", ")
            )))
        }
    })
}
