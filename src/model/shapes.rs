//! Shapes of every value, from tract's analysis. The batch dimension (axis 0 of each
//! input) is the symbol `N` unless the file fixes it to a number; other symbolic input
//! dims are pinned to a dataset's sample shape when one is given (symbolic H/W often
//! defeat shape analysis at Resize or Concat).

use super::{fused_fake_quant, Model};
use crate::guard::guarded;
use crate::{Error, Result};
use std::collections::HashMap;
use std::fmt;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::pb::type_proto::Value as TypeValue;
use tract_onnx::pb::ValueInfoProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::InferenceModelExt;

/// The batch symbol's name in shapes shown to users.
pub const BATCH: &str = "N";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Known(usize),
    /// The batch dimension (symbolic).
    Batch,
    /// Another symbolic expression, as tract prints it.
    Symbol(String),
}

pub type Shape = Vec<Dim>;

/// Known dims serialize as numbers, symbolic ones as their name (`"N"` for the batch).
impl serde::Serialize for Dim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Dim::Known(v) => s.serialize_u64(*v as u64),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(d) => write!(f, "{d}"),
            Dim::Batch => write!(f, "{BATCH}"),
            Dim::Symbol(s) => write!(f, "{s}"),
        }
    }
}

/// `N×1×16×16`.
pub fn format_shape(shape: &[Dim]) -> String {
    if shape.is_empty() {
        return "scalar".into();
    }
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

/// Elements per sample of an activation: the product of all dims but the batch axis
/// (axis 0 when it is the batch symbol, or the file's fixed batch). `None` if another
/// dim is symbolic.
pub fn per_sample_elements(shape: &[Dim], fixed_batch: Option<usize>) -> Option<u64> {
    let skip_first = match shape.first() {
        Some(Dim::Batch) => true,
        Some(Dim::Known(b)) => shape.len() > 1 && fixed_batch == Some(*b),
        _ => false,
    };
    let mut n = 1u64;
    for d in shape.iter().skip(usize::from(skip_first)) {
        match d {
            Dim::Known(v) => n = n.checked_mul(*v as u64)?,
            Dim::Batch | Dim::Symbol(_) => return None,
        }
    }
    Some(n)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub name: String,
    /// Full shape including the batch axis (none for a scalar input: see [`InputType`]).
    pub shape: Shape,
    /// The element type the model declares; datasets hold float32 and are cast to it.
    pub elem: InputType,
    /// The axis that holds the samples: 0, or the batch axis of a recurrent state the file
    /// writes as `[layers, batch, hidden]` (see [`inner_batch_axis`]).
    pub batch_axis: usize,
}

/// The element types qsteer can feed. Datasets hold float32; integer and bool inputs are fed
/// the same values cast exactly (a non-integral value is an error naming the input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    Float32,
    Int64,
    Int32,
    Bool,
}

impl InputType {
    /// From an ONNX element type code (`Undefined`, as some exporters leave it, is float32).
    fn from_onnx(code: i32) -> Option<InputType> {
        use tract_onnx::pb::tensor_proto::DataType as D;
        match D::try_from(code).ok()? {
            D::Float | D::Undefined => Some(InputType::Float32),
            D::Int64 => Some(InputType::Int64),
            D::Int32 => Some(InputType::Int32),
            D::Bool => Some(InputType::Bool),
            _ => None,
        }
    }

    pub fn datum_type(self) -> DatumType {
        match self {
            InputType::Float32 => f32::datum_type(),
            InputType::Int64 => i64::datum_type(),
            InputType::Int32 => i32::datum_type(),
            InputType::Bool => bool::datum_type(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            InputType::Float32 => "float32",
            InputType::Int64 => "int64",
            InputType::Int32 => "int32",
            InputType::Bool => "bool",
        }
    }
}

/// Does the file declare `input` as a scalar (rank 0)? A scalar input has no batch axis: the
/// dataset holds one value per sample (shape `[N]`) and a call is fed the value of its
/// samples (which must agree when several samples share a call).
pub fn is_scalar_input(input: &ValueInfoProto) -> bool {
    declared_dims(input).is_some_and(|d| d.is_empty())
}

#[derive(Debug, Clone)]
pub struct ModelShapes {
    /// Every named value tract could type: graph inputs, node outputs, weights.
    pub values: HashMap<String, Shape>,
    pub inputs: Vec<InputSpec>,
    /// `Some(n)` when the file fixes the batch size (then the model runs n samples a call).
    pub fixed_batch: Option<usize>,
    /// Which loader fallback was needed, if any (reported to the user).
    pub fallback: Option<String>,
}

impl ModelShapes {
    pub fn get(&self, value: &str) -> Option<&Shape> {
        self.values.get(value)
    }
}

/// A model ready for tract, with the facts we chose for its inputs.
pub struct Typed {
    pub model: TypedModel,
    pub inputs: Vec<InputSpec>,
    pub fixed_batch: Option<usize>,
    pub fallback: Option<String>,
    /// The symbolic batch defeated the analysis and it was made 1.
    pub batch_fallback: bool,
}

/// Declared input dims as written in the file: `Some(n)` for n > 0, `None` for
/// `dim_param`, `-1`, `0` or missing.
pub fn declared_dims(input: &ValueInfoProto) -> Option<Vec<Option<usize>>> {
    let Some(TypeValue::TensorType(t)) = input.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let shape = t.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(DimValue::DimValue(v)) if v > 0 => Some(v as usize),
                _ => None,
            })
            .collect(),
    )
}

/// The file's names for its symbolic input dims (`dim_param`), where they are plain
/// identifiers (`batch`, `height`); `None` for numbers, expressions and missing names.
fn declared_params(input: &ValueInfoProto) -> Vec<Option<String>> {
    let Some(TypeValue::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Vec::new();
    };
    let Some(shape) = t.shape.as_ref() else {
        return Vec::new();
    };
    let identifier = |p: &str| {
        p.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(DimValue::DimParam(p)) if identifier(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

/// The symbol tract analyses the batch as: the file's own name for it when the first input
/// names its axis 0 (its value_info and output shapes are written with that name, and a
/// second symbol would not unify with it), else [`BATCH`]. Users see `N` either way.
pub fn batch_symbol(model: &Model) -> String {
    model
        .inputs()
        .first()
        .and_then(|i| declared_params(i).into_iter().next().flatten())
        .unwrap_or_else(|| BATCH.to_string())
}

fn input_elem_type(input: &ValueInfoProto) -> Option<i32> {
    match input.r#type.as_ref()?.value.as_ref()? {
        TypeValue::TensorType(t) => Some(t.elem_type),
    }
}

/// Decide the full input shapes: batch symbolic unless fixed, the rest from the file,
/// pinned to `pinned` (per-sample shapes, one per input) where given.
fn plan_inputs(
    model: &Model,
    pinned: Option<&[Vec<usize>]>,
    batch: Option<usize>,
) -> Result<(Vec<InputSpec>, Option<usize>)> {
    let src = model.source();
    let inputs = model.inputs();
    if let Some(p) = pinned {
        if p.len() != inputs.len() {
            return Err(Error::input(format!(
                "{src}: the model has {} input(s), the dataset provides {}",
                inputs.len(),
                p.len()
            )));
        }
    }
    let mut specs = Vec::new();
    let mut fixed_batch = None;
    let batch_name = batch_symbol(model);
    let inner = inner_batch_axes(&inputs, pinned);
    // A model with such a state runs one sample per call: its other inputs' batch is 1.
    let one_per_call = inner.iter().any(Option::is_some);
    let batch = if one_per_call { Some(1) } else { batch };
    for (i, input) in inputs.iter().enumerate() {
        let code = input_elem_type(input).unwrap_or(1);
        let elem = InputType::from_onnx(code).ok_or_else(|| {
            Error::input(format!(
                "{src}: input '{}' has element type {}; qsteer feeds float32, int64, int32 and \
                 bool inputs",
                input.name,
                super::tensor::data_type_name(code)
            ))
        })?;
        // A shape written with no dims is a scalar, unless the data says otherwise (some
        // exporters write an unknown shape that way).
        if is_scalar_input(input) && pinned.is_none_or(|p| p[i].is_empty()) {
            specs.push(InputSpec {
                name: input.name.clone(),
                shape: Vec::new(),
                elem,
                batch_axis: 0,
            });
            continue;
        }
        let declared = declared_dims(input);
        let pin = pinned.map(|p| &p[i]);
        if let (Some(axis), Some(d), Some(p)) = (inner[i], declared.as_deref(), pin) {
            specs.push(InputSpec {
                name: input.name.clone(),
                shape: with_unit_axis(d, p, axis),
                elem,
                batch_axis: axis,
            });
            continue;
        }
        let rank = match (&declared, pin) {
            (Some(d), _) if !d.is_empty() => d.len(),
            (_, Some(p)) => p.len() + 1,
            _ => {
                return Err(Error::input(format!(
                    "{src}: input '{}' declares no shape; give a dataset so it can be pinned",
                    input.name
                )))
            }
        };
        if let Some(p) = pin {
            if p.len() + 1 != rank {
                return Err(Error::input(format!(
                    "{src}: dataset sample shape {p:?} does not fit input '{}' of rank {rank} \
                     (expected {} dims per sample)",
                    input.name,
                    rank - 1
                )));
            }
        }
        let mut shape = Vec::with_capacity(rank);
        for axis in 0..rank {
            let file_dim = declared
                .as_ref()
                .and_then(|d| d.get(axis).copied().flatten());
            if axis == 0 {
                match file_dim {
                    Some(b) => {
                        shape.push(Dim::Known(b));
                        fixed_batch = Some(b);
                    }
                    None => shape.push(batch.map_or(Dim::Batch, Dim::Known)),
                }
                continue;
            }
            let pinned_dim = pin.map(|p| p[axis - 1]);
            let file_name = declared_params(input)
                .get(axis)
                .cloned()
                .flatten()
                .filter(|p| *p != batch_name);
            match (file_dim, pinned_dim) {
                (Some(f), Some(p)) if f != p => {
                    return Err(Error::input(format!(
                        "{src}: dataset sample shape {:?} does not match input '{}' {}",
                        pin.unwrap_or(&vec![]),
                        input.name,
                        format_shape(&declared_shape_dims(declared.as_deref()))
                    )))
                }
                (Some(f), _) => shape.push(Dim::Known(f)),
                (None, Some(p)) => shape.push(Dim::Known(p)),
                // The file's name (`height`), so its value_info unifies with ours.
                (None, None) => shape.push(Dim::Symbol(
                    file_name.unwrap_or_else(|| format!("{}_{axis}", sanitize(&input.name))),
                )),
            }
        }
        specs.push(InputSpec {
            name: input.name.clone(),
            shape,
            elem,
            batch_axis: 0,
        });
    }
    if let (Some(b), Some(open)) = (
        fixed_batch.filter(|&b| b > 1),
        specs.iter().find(|s| s.shape.first() == Some(&Dim::Batch)),
    ) {
        let fixed = specs
            .iter()
            .find(|s| s.shape.first() == Some(&Dim::Known(b)))
            .map_or("", |s| s.name.as_str());
        return Err(Error::input(format!(
            "{src}: input '{fixed}' fixes axis 0 to {b} while input '{}' leaves its batch open; \
             a recurrent state [layers, batch, …] is fed from a dataset whose samples leave \
             its batch axis out (pass --data)",
            open.name
        )));
    }
    Ok((specs, fixed_batch.or(one_per_call.then_some(1))))
}

/// Per input, the batch axis of a recurrent state that the file writes `[layers, batch,
/// hidden]` beside inputs batched on axis 0 (Silero VAD's `state [2, ?, 128]` beside `input
/// [?, 576]`): the one open axis whose removal leaves the dataset's per-sample shape. Without
/// a dataset nothing tells which axis it is.
fn inner_batch_axes(
    inputs: &[&ValueInfoProto],
    pinned: Option<&[Vec<usize>]>,
) -> Vec<Option<usize>> {
    let open_batch = |input: &ValueInfoProto| {
        !is_scalar_input(input)
            && declared_dims(input).is_some_and(|d| d.first().is_some_and(Option::is_none))
    };
    inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let sample = pinned?.get(i)?;
            let declared = declared_dims(input)?;
            let beside_open = inputs
                .iter()
                .enumerate()
                .any(|(j, other)| j != i && open_batch(other));
            beside_open
                .then(|| inner_batch_axis(&declared, sample))
                .flatten()
        })
        .collect()
}

/// The batch axis of an input that fixes axis 0 to more than 1: the one open axis whose
/// removal leaves `sample`. `None` when none or several fit.
fn inner_batch_axis(declared: &[Option<usize>], sample: &[usize]) -> Option<usize> {
    if declared.len() != sample.len() + 1 || declared.first()?.is_none_or(|b| b < 2) {
        return None;
    }
    let fits = |axis: usize| {
        let rest = (0..declared.len()).filter(|&a| a != axis);
        rest.zip(sample)
            .all(|(a, &s)| declared[a].is_none_or(|d| d == s))
    };
    let mut open = (1..declared.len()).filter(|&a| declared[a].is_none() && fits(a));
    match (open.next(), open.next()) {
        (Some(axis), None) => Some(axis),
        _ => None,
    }
}

/// `sample`'s dims with a unit batch axis at `axis` (the declared dims agree where known).
fn with_unit_axis(declared: &[Option<usize>], sample: &[usize], axis: usize) -> Shape {
    (0..declared.len())
        .map(|a| match a.cmp(&axis) {
            std::cmp::Ordering::Less => Dim::Known(sample[a]),
            std::cmp::Ordering::Equal => Dim::Known(1),
            std::cmp::Ordering::Greater => Dim::Known(sample[a - 1]),
        })
        .collect()
}

fn declared_shape_dims(d: Option<&[Option<usize>]>) -> Vec<Dim> {
    d.unwrap_or(&[])
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Some(n) => Dim::Known(*n),
            None if i == 0 => Dim::Batch,
            None => Dim::Symbol("?".into()),
        })
        .collect()
}

fn sanitize(name: &str) -> String {
    let s: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    if s.is_empty() || s.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        format!("d{s}")
    } else {
        s
    }
}

fn inference_model(
    model: &Model,
    specs: &[InputSpec],
    ignore_value_info: bool,
    keep: &[String],
) -> TractResult<InferenceModel> {
    let mut onnx = tract_onnx::onnx().with_ignore_value_info(ignore_value_info);
    onnx.op_register
        .insert(fused_fake_quant::OP_TYPE, fused_fake_quant::build);
    // A simulated model's fake-quant chains, one op each (bit-identical, one pass).
    let fused = fused_fake_quant::fuse(model.proto(), keep);
    let parsed = onnx.parse(fused.as_ref().unwrap_or(model.proto()), None)?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(TractError::msg(format!(
            "unresolved inputs {:?}",
            parsed.unresolved_inputs
        )));
    }
    let mut m = parsed.model;
    let batch = m.symbols.sym(&batch_symbol(model));
    for (i, spec) in specs.iter().enumerate() {
        let dims: TVec<TDim> = spec
            .shape
            .iter()
            .map(|d| match d {
                Dim::Known(v) => TDim::from(*v as i64),
                Dim::Batch => TDim::Sym(batch.clone()),
                Dim::Symbol(s) => TDim::Sym(m.symbols.sym(s)),
            })
            .collect();
        m.set_input_fact(i, InferenceFact::dt_shape(spec.elem.datum_type(), dims))?;
    }
    Ok(m)
}

/// Build tract's typed model with our input facts, retrying with the file's value_info
/// ignored when it contradicts the analysis. `batch` makes a symbolic batch concrete
/// (tract runs a concrete batch several times faster); `outputs` selects extra named
/// values to expose as outputs (intermediate capture), `None` keeps the graph's outputs.
///
/// A symbolic batch can defeat the analysis where the graph computes a shape from it
/// (paddle2onnx's Shape→Cast→Slice→Cast→Concat→Reshape): then the batch is analysed at 1
/// and `Typed::batch_fallback` says so.
pub fn typed_model(
    model: &Model,
    pinned: Option<&[Vec<usize>]>,
    batch: Option<usize>,
    outputs: Option<&[String]>,
) -> Result<Typed> {
    let (inputs, fixed_batch) = plan_inputs(model, pinned, batch)?;
    let src = model.source().to_string();
    let typed = guarded(&src, || {
        let attempt = |specs: &[InputSpec], ignore: bool| -> TractResult<TypedModel> {
            let mut m = inference_model(model, specs, ignore, outputs.unwrap_or_default())?;
            if let Some(names) = outputs {
                m.select_outputs_by_name(names)?;
            }
            m.into_typed()
        };
        let value_info_note =
            "the file's value_info was ignored (it contradicted shape analysis)".to_string();
        let first = match attempt(&inputs, false) {
            Ok(t) => return Ok(make_typed(t, &inputs, fixed_batch, None, false)),
            Err(e) => e,
        };
        if let Ok(t) = attempt(&inputs, true) {
            return Ok(make_typed(
                t,
                &inputs,
                fixed_batch,
                Some(value_info_note),
                false,
            ));
        }
        let concrete = with_batch(&inputs, 1);
        if concrete != inputs {
            let note = "the batch was analysed at 1: the graph computes a shape from the \
                        symbolic batch (e.g. Shape→Slice→Concat→Reshape)";
            for ignore in [false, true] {
                if let Ok(t) = attempt(&concrete, ignore) {
                    let note = if ignore {
                        format!("{note}; {value_info_note}")
                    } else {
                        note.to_string()
                    };
                    return Ok(make_typed(t, &inputs, fixed_batch, Some(note), true));
                }
            }
        }
        Err(analysis_error(&src, &inputs, &first))
    })?;
    check_consistent(model, &typed.model, pinned.is_some())?;
    Ok(typed)
}

/// Refuse a model whose shapes contradict each other, which tract's analysis lets through
/// as an unresolved `broadcast(a, b)` dim (then optimizing or running it fails, slowly):
/// a broadcast of two different numbers always, and with the inputs pinned to a dataset's
/// shapes (`pinned`) any broadcast left at all. The error names the ONNX node where the
/// contradiction starts and the shapes of its inputs.
fn check_consistent(model: &Model, tm: &TypedModel, pinned: bool) -> Result<()> {
    fn bad(d: &TDim, pinned: bool) -> bool {
        match d {
            TDim::Broadcast(terms) => {
                let mut vals = terms.iter().filter_map(TDim::as_i64);
                let first = vals.next();
                pinned || vals.any(|v| Some(v) != first) || terms.iter().any(|t| bad(t, pinned))
            }
            TDim::Add(t) | TDim::Mul(t) | TDim::Min(t) | TDim::Max(t) => {
                t.iter().any(|t| bad(t, pinned))
            }
            TDim::MulInt(_, t) | TDim::Div(t, _) => bad(t, pinned),
            TDim::Ge(a, b) | TDim::Eq(a, b) => bad(a, pinned) || bad(b, pinned),
            TDim::Val(_) | TDim::Sym(_) => false,
        }
    }
    let batch = tm.symbols.sym(&batch_symbol(model));
    let show = |f: &TypedFact| format_shape(&convert_shape(f.shape.dims(), &batch));
    for node in tm.nodes() {
        let Some(fact) = node
            .outputs
            .iter()
            .map(|o| &o.fact)
            .find(|f| f.shape.dims().iter().any(|d| bad(d, pinned)))
        else {
            continue;
        };
        let inputs: Vec<&TypedFact> = node
            .inputs
            .iter()
            .filter_map(|i| tm.outlet_fact(*i).ok())
            .collect();
        if inputs
            .iter()
            .any(|f| f.shape.dims().iter().any(|d| bad(d, pinned)))
        {
            continue; // inherited: the node where it starts comes first
        }
        // tract names the nodes of an expanded ONNX op after it (`bn3`, `bn3.mul`)
        let graph = model.graph();
        let onnx = (0..graph.node.len())
            .map(|i| (i, super::graph::node_label(graph, i)))
            .filter(|(_, l)| {
                node.name == *l
                    || node
                        .name
                        .strip_prefix(l.as_str())
                        .is_some_and(|r| r.starts_with('.'))
            })
            .max_by_key(|(_, l)| l.len());
        let at = match onnx {
            Some((i, l)) => format!("node '{l}' ({})", graph.node[i].op_type),
            None => format!("node '{}'", node.name),
        };
        let shapes = inputs
            .iter()
            .map(|&f| show(f))
            .collect::<Vec<_>>()
            .join(" and ");
        return Err(Error::input(format!(
            "{}: {at}: the shapes of its inputs do not match ({shapes}; result {})",
            model.source(),
            show(fact)
        )));
    }
    Ok(())
}

fn make_typed(
    model: TypedModel,
    inputs: &[InputSpec],
    fixed_batch: Option<usize>,
    fallback: Option<String>,
    batch_fallback: bool,
) -> Typed {
    Typed {
        model,
        inputs: inputs.to_vec(),
        fixed_batch,
        fallback,
        batch_fallback,
    }
}

/// The input specs with a symbolic batch made `b`.
fn with_batch(inputs: &[InputSpec], b: usize) -> Vec<InputSpec> {
    inputs
        .iter()
        .map(|spec| InputSpec {
            name: spec.name.clone(),
            elem: spec.elem,
            batch_axis: spec.batch_axis,
            shape: spec
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Batch => Dim::Known(b),
                    other => other.clone(),
                })
                .collect(),
        })
        .collect()
}

/// The analysis failed at every fallback: say what the user can do. Symbolic input dims
/// other than the batch are the usual cause (a detector's H and W), and they can be pinned.
fn analysis_error(src: &str, inputs: &[InputSpec], first: &TractError) -> Error {
    let open: Vec<String> = inputs
        .iter()
        .filter_map(|spec| {
            let axes: Vec<String> = spec
                .shape
                .iter()
                .enumerate()
                .filter(|(_, d)| matches!(d, Dim::Symbol(_)))
                .map(|(axis, _)| axis.to_string())
                .collect();
            (!axes.is_empty()).then(|| {
                format!(
                    "input '{}' {} has no size for dim {}",
                    spec.name,
                    format_shape(&spec.shape),
                    axes.join(", ")
                )
            })
        })
        .collect();
    if open.is_empty() {
        return Error::input(format!("{src}: shape analysis failed: {}", chain(first)));
    }
    let example = inputs
        .iter()
        .find(|spec| spec.shape.iter().any(|d| matches!(d, Dim::Symbol(_))))
        .map(|spec| {
            let dims: Vec<String> = spec
                .shape
                .iter()
                .skip(1)
                .map(|d| match d {
                    Dim::Known(v) => v.to_string(),
                    _ => "D".to_string(),
                })
                .collect();
            format!("{}={}", spec.name, dims.join("x"))
        })
        .unwrap_or_default();
    Error::input(format!(
        "{src}: shape analysis needs concrete input sizes: {}; pass --data DIR (its samples fix \
         them) or --input-shape {example} with each D the size to use{}",
        open.join("; "),
        tract_detail(first)
    ))
}

/// tract's reason, for those who ask (`RUST_LOG` set): it is long (a unification deep in
/// the graph) and the fix is the same whatever it says.
fn tract_detail(e: &TractError) -> String {
    if std::env::var_os("RUST_LOG").is_some() {
        format!(" (tract: {})", chain(e))
    } else {
        " (tract's reason: run with RUST_LOG=debug)".to_string()
    }
}

/// tract's error with its context chain on one line.
pub fn chain(e: &TractError) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Analyse the model's shapes. See the module comment for the batch convention.
pub fn analyse(model: &Model, pinned: Option<&[Vec<usize>]>) -> Result<ModelShapes> {
    let typed = typed_model(model, pinned, None, None)?;
    let batch = batch_symbol(model);
    let mut values = value_shapes(&typed.model, &batch);
    if typed.batch_fallback {
        // Analysed at batch 1: a second analysis at batch 2 tells which dims are the batch.
        // A graph that only runs at batch 1 (an output the file fixes to 1) keeps the shapes
        // at 1.
        if let Ok(at_two) = typed_model(model, pinned, Some(2), None) {
            let two = value_shapes(&at_two.model, &batch);
            for (name, shape) in values.iter_mut() {
                if let Some(other) = two.get(name) {
                    *shape = batch_dims(shape, other);
                }
            }
        }
    }
    for (name, w) in model.weights() {
        values
            .entry(name.clone())
            .or_insert_with(|| w.array.shape().iter().map(|&d| Dim::Known(d)).collect());
    }
    for spec in &typed.inputs {
        values.insert(spec.name.clone(), spec.shape.clone());
    }
    Ok(ModelShapes {
        values,
        inputs: typed.inputs,
        fixed_batch: typed.fixed_batch,
        fallback: typed.fallback,
    })
}

/// Every labelled value's shape in a typed model.
fn value_shapes(tm: &TypedModel, batch: &str) -> HashMap<String, Shape> {
    let batch_sym = tm.symbols.sym(batch);
    let mut values = HashMap::new();
    for (outlet, label) in &tm.outlet_labels {
        if let Ok(fact) = tm.outlet_fact(*outlet) {
            values.insert(label.clone(), convert_shape(fact.shape.dims(), &batch_sym));
        }
    }
    values
}

/// A value's shape from its analyses at batch 1 and batch 2: a dim that doubled is the batch
/// (or a multiple of it, where the graph folded the batch into another axis).
fn batch_dims(at_one: &[Dim], at_two: &[Dim]) -> Shape {
    if at_one.len() != at_two.len() {
        return at_one.to_vec();
    }
    at_one
        .iter()
        .zip(at_two)
        .map(|(a, b)| match (a, b) {
            (Dim::Known(1), Dim::Known(2)) => Dim::Batch,
            (Dim::Known(x), Dim::Known(y)) if *y == 2 * *x => Dim::Symbol(format!("{x}*{BATCH}")),
            (Dim::Known(x), Dim::Known(y)) if x != y => Dim::Symbol("?".into()),
            _ => a.clone(),
        })
        .collect()
}

fn convert_shape(dims: &[TDim], batch: &Symbol) -> Shape {
    dims.iter()
        .map(|d| match d {
            TDim::Sym(s) if s == batch => Dim::Batch,
            d => match d.as_i64() {
                Some(v) if v >= 0 => Dim::Known(v as usize),
                _ => Dim::Symbol(d.to_string()),
            },
        })
        .collect()
}
