//! Thousands of randomly damaged copies of the sample models and some fixtures: each must
//! load and analyse to `Ok` or `Err` — never a panic, never a hang. A subset that loads
//! is also compiled and run on one sample.
//!
//! No `catch_unwind` here: a panic anywhere (in qsteer or in tract outside the engine's own
//! guard) fails the test, with the case that caused it named. A watchdog fails the test if
//! one case takes longer than `HANG_SECONDS`.
//!
//! Reproduce one case: `CORRUPTION_CASE=<index> cargo test --test corruption -- --nocapture`.

use crate::common::{
    digits, first, fixture_dir, fixture_model, read_f32, sample_model, SplitMix64,
};
use ndarray::{ArrayD, ArrayViewD, Dimension, IxDyn};
use prost::Message;
use qsteer::model::{Dim, Model, ModelShapes};
use qsteer::runtime::{CompiledModel, MAX_VALUE_ELEMENTS};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::pb::type_proto::Value as TypeValue;
use tract_onnx::pb::{AttributeProto, GraphProto, ModelProto, TensorProto, ValueInfoProto};

const SEED: u64 = 0x5eed_2026_c0de;
/// Cases per damage kind; four kinds.
const CASES_PER_KIND: usize = 750;
/// How many of the cases that load and analyse are also compiled and run.
const RUN_AT_MOST: usize = 250;
/// Run every n-th case that analysed Ok (spreads the runs over kinds and sources).
const RUN_EVERY: usize = 2;
/// Largest value (elements per sample) the test is willing to run: a damaged attribute
/// can make an intermediate value enormous, and a failed allocation aborts the process.
const RUN_ELEMENT_LIMIT: u64 = 1 << 22;
const HANG_SECONDS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Truncate,
    FlipBytes,
    EditShape,
    Dangling,
}

const KINDS: [Kind; 4] = [
    Kind::Truncate,
    Kind::FlipBytes,
    Kind::EditShape,
    Kind::Dangling,
];

struct Source {
    name: &'static str,
    bytes: Vec<u8>,
    proto: ModelProto,
    /// One real sample `[1, ...]` of the model's input.
    sample: ArrayD<f32>,
}

fn sources() -> Vec<Source> {
    let digit = first(&read_f32(&digits().join("evaluation/inputs.npy")), 1);
    let mut out = Vec::new();
    for name in ["mbv2_digits", "resnet_digits"] {
        out.push((name, sample_model(name), digit.clone()));
    }
    for name in ["constant_weights", "named_batch_ops", "grouped_strided"] {
        let x = first(&read_f32(&fixture_dir(name).join("inputs.npy")), 1);
        out.push((name, fixture_model(name), x));
    }
    out.into_iter()
        .map(|(name, path, sample)| {
            let bytes = std::fs::read(&path).unwrap();
            let proto = ModelProto::decode(bytes.as_slice()).unwrap();
            Source {
                name,
                bytes,
                proto,
                sample,
            }
        })
        .collect()
}

/// Values that break shapes: zero, negative, huge, and merely wrong.
fn bad_value(rng: &mut SplitMix64) -> i64 {
    match rng.below(10) {
        0 | 1 => 0,
        2 => -1,
        3 => -(rng.range(2, 1000) as i64),
        4 => 1 << 31,
        5 => 1 << 40,
        6 => i64::MAX,
        7 => i64::MIN,
        _ => rng.range(2, 100) as i64,
    }
}

fn tensor_dims_mut(
    v: &mut ValueInfoProto,
) -> Option<&mut Vec<tract_onnx::pb::tensor_shape_proto::Dimension>> {
    match v.r#type.as_mut()?.value.as_mut()? {
        TypeValue::TensorType(t) => Some(&mut t.shape.as_mut()?.dim),
    }
}

fn set_value_info_dim(rng: &mut SplitMix64, values: &mut [ValueInfoProto]) -> Option<String> {
    if values.is_empty() {
        return None;
    }
    let i = rng.below(values.len());
    let name = values[i].name.clone();
    let dims = tensor_dims_mut(&mut values[i])?;
    if dims.is_empty() {
        return None;
    }
    let d = rng.below(dims.len());
    let v = bad_value(rng);
    dims[d].value = Some(DimValue::DimValue(v));
    Some(format!("'{name}' dim {d} = {v}"))
}

fn is_int_tensor(t: &TensorProto) -> bool {
    t.data_type == DataType::Int64 as i32 || t.data_type == DataType::Int32 as i32
}

/// Set one element of an integer tensor (a Reshape target, Split sizes, axes...).
fn edit_int_tensor(rng: &mut SplitMix64, t: &mut TensorProto) -> Option<String> {
    let v = bad_value(rng);
    if t.data_type == DataType::Int64 as i32 {
        if !t.raw_data.is_empty() {
            let n = t.raw_data.len() / 8;
            if n == 0 {
                return None;
            }
            let k = rng.below(n);
            t.raw_data[k * 8..k * 8 + 8].copy_from_slice(&v.to_le_bytes());
            return Some(format!("int64 '{}'[{k}] = {v}", t.name));
        }
        if t.int64_data.is_empty() {
            return None;
        }
        let k = rng.below(t.int64_data.len());
        t.int64_data[k] = v;
        return Some(format!("int64 '{}'[{k}] = {v}", t.name));
    }
    let v = v as i32;
    if !t.raw_data.is_empty() {
        let n = t.raw_data.len() / 4;
        if n == 0 {
            return None;
        }
        let k = rng.below(n);
        t.raw_data[k * 4..k * 4 + 4].copy_from_slice(&v.to_le_bytes());
        return Some(format!("int32 '{}'[{k}] = {v}", t.name));
    }
    if t.int32_data.is_empty() {
        return None;
    }
    let k = rng.below(t.int32_data.len());
    t.int32_data[k] = v;
    Some(format!("int32 '{}'[{k}] = {v}", t.name))
}

const GEOMETRY: [&str; 6] = [
    "kernel_shape",
    "strides",
    "pads",
    "dilations",
    "group",
    "output_padding",
];

/// Edit (or add) a geometry attribute of a Conv / ConvTranspose / pooling node.
fn edit_geometry(rng: &mut SplitMix64, g: &mut GraphProto) -> Option<String> {
    let nodes: Vec<usize> = (0..g.node.len())
        .filter(|&i| {
            matches!(
                g.node[i].op_type.as_str(),
                "Conv" | "ConvTranspose" | "MaxPool" | "AveragePool"
            )
        })
        .collect();
    if nodes.is_empty() {
        return None;
    }
    let node = &mut g.node[*rng.pick(&nodes)];
    let attr = *rng.pick(&GEOMETRY);
    let v = bad_value(rng);
    let label = format!("{} '{}' {attr}", node.op_type, node.name);
    if attr == "group" {
        match node.attribute.iter_mut().find(|a| a.name == attr) {
            Some(a) => a.i = v,
            None => node.attribute.push(AttributeProto {
                name: attr.into(),
                r#type: AttributeType::Int as i32,
                i: v,
                ..Default::default()
            }),
        }
        return Some(format!("{label} = {v}"));
    }
    match node.attribute.iter_mut().find(|a| a.name == attr) {
        Some(a) if !a.ints.is_empty() => {
            let k = rng.below(a.ints.len());
            a.ints[k] = v;
            Some(format!("{label}[{k}] = {v}"))
        }
        Some(a) => {
            a.ints = vec![v, 1];
            Some(format!("{label} = [{v}, 1]"))
        }
        None => {
            let len = if attr == "pads" { 4 } else { 2 };
            let mut ints = vec![1; len];
            let k = rng.below(len);
            ints[k] = v;
            node.attribute.push(AttributeProto {
                name: attr.into(),
                r#type: AttributeType::Ints as i32,
                ints: ints.clone(),
                ..Default::default()
            });
            Some(format!("{label} added {ints:?}"))
        }
    }
}

/// Edit any integer attribute of any node (Flatten axis, Concat axis, Transpose perm,
/// Gemm transB, Split sizes, Resize mode...).
fn edit_any_int_attribute(rng: &mut SplitMix64, g: &mut GraphProto) -> Option<String> {
    let mut slots = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        for (j, a) in n.attribute.iter().enumerate() {
            if a.r#type == AttributeType::Int as i32 || a.r#type == AttributeType::Ints as i32 {
                slots.push((i, j));
            }
        }
    }
    if slots.is_empty() {
        return None;
    }
    let (i, j) = *rng.pick(&slots);
    let node = &mut g.node[i];
    let label = format!("{} '{}'", node.op_type, node.name);
    let a = &mut node.attribute[j];
    let v = bad_value(rng);
    if a.r#type == AttributeType::Int as i32 {
        a.i = v;
        Some(format!("{label} {} = {v}", a.name))
    } else if a.ints.is_empty() {
        a.ints.push(v);
        Some(format!("{label} {} = [{v}]", a.name))
    } else {
        let k = rng.below(a.ints.len());
        a.ints[k] = v;
        Some(format!("{label} {}[{k}] = {v}", a.name))
    }
}

/// One "edited shape" damage; `None` if the chosen edit does not apply to this model.
fn edit_shape(rng: &mut SplitMix64, p: &mut ModelProto) -> Option<String> {
    let g = p.graph.as_mut()?;
    match rng.below(7) {
        0 | 1 => set_value_info_dim(rng, &mut g.input).map(|s| format!("graph input {s}")),
        2 => set_value_info_dim(rng, &mut g.output).map(|s| format!("graph output {s}")),
        3 => {
            if g.initializer.is_empty() {
                return None;
            }
            let t = rng.below(g.initializer.len());
            let init = &mut g.initializer[t];
            let v = bad_value(rng);
            if init.dims.is_empty() {
                init.dims.push(v);
                return Some(format!("initializer '{}' dims [{v}]", init.name));
            }
            let d = rng.below(init.dims.len());
            init.dims[d] = v;
            Some(format!("initializer '{}' dim {d} = {v}", init.name))
        }
        4 => {
            // integer tensors: in initializers or in Constant nodes
            let mut ints: Vec<&mut TensorProto> = g
                .initializer
                .iter_mut()
                .filter(|t| is_int_tensor(t))
                .collect();
            for n in g.node.iter_mut().filter(|n| n.op_type == "Constant") {
                for a in n.attribute.iter_mut() {
                    if let Some(t) = a.t.as_mut().filter(|t| is_int_tensor(t)) {
                        ints.push(t);
                    }
                }
            }
            if ints.is_empty() {
                return None;
            }
            let k = rng.below(ints.len());
            edit_int_tensor(rng, ints[k])
        }
        5 => edit_geometry(rng, g),
        _ => edit_any_int_attribute(rng, g),
    }
}

/// One "dangling" damage: a node reads, or the graph outputs, a value nobody produces.
fn make_dangling(rng: &mut SplitMix64, p: &mut ModelProto) -> Option<String> {
    let g = p.graph.as_mut()?;
    let tag = rng.next_u64() % 10_000;
    match rng.below(6) {
        0..=2 => {
            let slots: Vec<(usize, usize)> = g
                .node
                .iter()
                .enumerate()
                .flat_map(|(i, n)| {
                    n.input
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| !s.is_empty())
                        .map(move |(j, _)| (i, j))
                })
                .collect();
            let (i, j) = *rng.pick(&slots);
            let old = std::mem::replace(&mut g.node[i].input[j], format!("dangling_{tag}"));
            Some(format!(
                "node '{}' input {j} '{old}' renamed",
                g.node[i].name
            ))
        }
        3 => {
            let i = rng.below(g.node.len());
            let n = &mut g.node[i];
            if n.output.is_empty() {
                return None;
            }
            let j = rng.below(n.output.len());
            let old = std::mem::replace(&mut n.output[j], format!("dangling_{tag}"));
            Some(format!("node '{}' output '{old}' renamed", n.name))
        }
        4 => {
            let i = rng.below(g.node.len());
            let n = g.node.remove(i);
            Some(format!("node '{}' ({}) removed", n.name, n.op_type))
        }
        _ => {
            let o = g.output.first_mut()?;
            let old = std::mem::replace(&mut o.name, format!("dangling_{tag}"));
            Some(format!("graph output '{old}' renamed"))
        }
    }
}

/// The damaged bytes for case `index`, and what was done.
fn damage(index: usize, kind: Kind, src: &Source) -> (Vec<u8>, String) {
    let mut rng = SplitMix64(SEED ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    match kind {
        Kind::Truncate => {
            let at = rng.below(src.bytes.len());
            (src.bytes[..at].to_vec(), format!("truncated at {at}"))
        }
        Kind::FlipBytes => {
            let mut b = src.bytes.clone();
            let n = rng.range(1, 8);
            let mut at = Vec::new();
            // Most bytes are weight data, where a flip only changes a number. Half of the
            // flips go to the first 4 KB (the nodes) or the last 1 KB (inputs, outputs,
            // opset), where they break structure.
            let len = b.len();
            for _ in 0..n {
                let i = match rng.below(4) {
                    0 => rng.below(len.min(4096)),
                    1 => len - 1 - rng.below(len.min(1024)),
                    _ => rng.below(len),
                };
                b[i] ^= rng.range(1, 255) as u8;
                at.push(i);
            }
            (b, format!("{n} byte(s) changed at {at:?}"))
        }
        Kind::EditShape | Kind::Dangling => {
            // retry until an edit applies to this model (every model has an input,
            // a node and an attribute, so this ends quickly)
            loop {
                let mut p = src.proto.clone();
                let what = if kind == Kind::EditShape {
                    edit_shape(&mut rng, &mut p)
                } else {
                    make_dangling(&mut rng, &mut p)
                };
                if let Some(what) = what {
                    return (p.encode_to_vec(), what);
                }
            }
        }
    }
}

#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    cases: usize,
    load_err: usize,
    shapes_err: usize,
    layers_err: usize,
    ok: usize,
    run_ok: usize,
    run_err: usize,
    /// Compiles refused because a value was beyond the engine's size limit.
    run_refused: usize,
    /// Too large for the test to run (or the input could not be chosen).
    run_skipped: usize,
    /// Errors that were a panic inside tract, turned into an error by the engine's guard.
    guarded_panics: usize,
}

impl Tally {
    const HEADER: &'static str = "kind       model             cases load-err shapes-err layers-err    ok run-ok run-err refused skipped guarded";

    fn row(&self, kind: &str, model: &str) -> String {
        format!(
            "{kind:<10} {model:<17} {:>5} {:>8} {:>10} {:>10} {:>5} {:>6} {:>7} {:>7} {:>7} {:>7}",
            self.cases,
            self.load_err,
            self.shapes_err,
            self.layers_err,
            self.ok,
            self.run_ok,
            self.run_err,
            self.run_refused,
            self.run_skipped,
            self.guarded_panics
        )
    }

    fn add(&mut self, o: &Tally) {
        self.cases += o.cases;
        self.load_err += o.load_err;
        self.shapes_err += o.shapes_err;
        self.layers_err += o.layers_err;
        self.ok += o.ok;
        self.run_ok += o.run_ok;
        self.run_err += o.run_err;
        self.run_refused += o.run_refused;
        self.run_skipped += o.run_skipped;
        self.guarded_panics += o.guarded_panics;
    }
}

fn is_guarded_panic(e: &impl std::fmt::Display) -> bool {
    e.to_string()
        .contains("the inference engine rejected the model")
}

/// The per-sample input shapes to run with: the file's dims, symbolic ones taken from the
/// real sample. `None` if they cannot be chosen.
fn run_shapes(shapes: &ModelShapes, src: &Source) -> Option<Vec<Vec<usize>>> {
    if shapes.inputs.len() != 1 {
        return None;
    }
    let real = &src.sample.shape()[1..];
    let spec = &shapes.inputs[0].shape;
    let mut out = Vec::new();
    for (axis, d) in spec.iter().enumerate().skip(1) {
        out.push(match d {
            Dim::Known(v) => *v,
            _ => *real.get(axis - 1)?,
        });
    }
    Some(vec![out])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Size {
    /// Small enough for the test to run.
    Small,
    /// Symbolic even with the input pinned (e.g. a broken broadcast): the engine decides.
    Unknown,
    /// Too large for the test to allocate, small enough for the engine to try.
    Medium,
    /// Beyond `MAX_VALUE_ELEMENTS` (or overflowing): the engine must refuse to compile.
    Huge,
}

/// Elements of one value in one call at batch 1 (a batch the file fixes counts).
fn size_of(shape: &[Dim]) -> Size {
    if shape.iter().any(|d| matches!(d, Dim::Symbol(_))) {
        return Size::Unknown;
    }
    let n = shape.iter().try_fold(1u64, |acc, d| match d {
        Dim::Known(v) => acc.checked_mul(*v as u64),
        _ => Some(acc),
    });
    match n {
        None => Size::Huge,
        Some(n) if n > MAX_VALUE_ELEMENTS => Size::Huge,
        Some(n) if n > RUN_ELEMENT_LIMIT => Size::Medium,
        Some(_) => Size::Small,
    }
}

enum RunOutcome {
    Ran(Result<(), String>),
    /// Some value is beyond the engine's limit and compiling was refused, as it must be.
    Refused,
    /// Some value is too large for the test to run; not attempted.
    Skipped,
}

/// Compile and run one sample; `Ok` and `Err` are both fine.
fn compile_and_run(model: &Model, src: &Source, label: &str) -> RunOutcome {
    let Ok(shapes) = model.shapes(None) else {
        return RunOutcome::Skipped;
    };
    let Some(pinned) = run_shapes(&shapes, src) else {
        return RunOutcome::Skipped;
    };
    // analyse again with the input pinned, to size every value before running
    let fixed = match model.shapes(Some(&pinned)) {
        Ok(s) => s,
        Err(e) => return RunOutcome::Ran(Err(e.to_string())),
    };
    let largest = fixed
        .values
        .values()
        .map(|s| size_of(s))
        .max()
        .unwrap_or(Size::Small);
    let compiled = match largest {
        Size::Medium => return RunOutcome::Skipped,
        Size::Huge => match CompiledModel::compile(model, &pinned, 1, &[]) {
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("more than"), "{label}: unexpected refusal: {e}");
                return RunOutcome::Refused;
            }
            Ok(_) => panic!("{label}: a value beyond the engine's size limit compiled"),
        },
        Size::Small | Size::Unknown => match CompiledModel::compile(model, &pinned, 1, &[]) {
            Ok(c) => c,
            Err(e) => return RunOutcome::Ran(Err(e.to_string())),
        },
    };
    let mut dims = vec![compiled.batch()];
    dims.extend(&pinned[0]);
    let input = if src.sample.shape() == dims.as_slice() {
        src.sample.clone()
    } else {
        ArrayD::from_shape_fn(IxDyn(&dims), |i| {
            ((i.as_array_view().iter().sum::<usize>() % 17) as f32) / 17.0
        })
    };
    let view: ArrayViewD<f32> = input.view();
    RunOutcome::Ran(compiled.run(&[view]).map(|_| ()).map_err(|e| e.to_string()))
}

/// Shared between the worker and the watchdog: (cases finished, current case).
type Progress = Arc<Mutex<(usize, String)>>;

fn run_cases(progress: Progress, only: Option<usize>) -> BTreeMap<(Kind, &'static str), Tally> {
    let sources = sources();
    let mut tallies: BTreeMap<(Kind, &'static str), Tally> = BTreeMap::new();
    let mut analysed_ok = 0usize;
    let mut ran = 0usize;
    let total = CASES_PER_KIND * KINDS.len();
    for index in 0..total {
        if only.is_some_and(|o| o != index) {
            continue;
        }
        let kind = KINDS[index % KINDS.len()];
        let src = &sources[(index / KINDS.len()) % sources.len()];
        let (bytes, what) = damage(index, kind, src);
        let label = format!("case {index}: {kind:?} {}: {what}", src.name);
        progress.lock().unwrap().1 = label.clone();
        if only.is_some() {
            println!("{label}");
        }
        let t = tallies.entry((kind, src.name)).or_default();
        t.cases += 1;

        let result = Model::from_bytes(&bytes, "damaged.onnx");
        let model = match result {
            Ok(m) => m,
            Err(e) => {
                if only.is_some() {
                    println!("load: {e}");
                }
                t.load_err += 1;
                t.guarded_panics += usize::from(is_guarded_panic(&e));
                bump(&progress);
                continue;
            }
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
            Err(e) => {
                if only.is_some() {
                    println!("shapes: {e}");
                }
                t.shapes_err += 1;
                t.guarded_panics += usize::from(is_guarded_panic(&e));
                bump(&progress);
                continue;
            }
        };
        if let Err(e) = model.layers(&shapes) {
            if only.is_some() {
                println!("layers: {e}");
            }
            t.layers_err += 1;
            t.guarded_panics += usize::from(is_guarded_panic(&e));
            bump(&progress);
            continue;
        }
        t.ok += 1;
        analysed_ok += 1;
        if (only.is_some() || analysed_ok.is_multiple_of(RUN_EVERY)) && ran < RUN_AT_MOST {
            ran += 1;
            match compile_and_run(&model, src, &label) {
                RunOutcome::Ran(Ok(())) => t.run_ok += 1,
                RunOutcome::Ran(Err(e)) => {
                    if only.is_some() {
                        println!("run: {e}");
                    }
                    t.run_err += 1;
                    t.guarded_panics += usize::from(is_guarded_panic(&e));
                }
                RunOutcome::Refused => t.run_refused += 1,
                RunOutcome::Skipped => t.run_skipped += 1,
            }
        }
        bump(&progress);
    }
    tallies
}

fn bump(progress: &Progress) {
    progress.lock().unwrap().0 += 1;
}

#[test]
fn damaged_models_load_or_fail_cleanly() {
    let started = Instant::now();
    let only = std::env::var("CORRUPTION_CASE")
        .ok()
        .map(|s| s.parse::<usize>().expect("CORRUPTION_CASE is a case index"));
    let progress: Progress = Arc::new(Mutex::new((0, String::new())));
    let worker = {
        let progress = progress.clone();
        std::thread::Builder::new()
            .name("corruption".into())
            // deep protobuf nesting or tract recursion must not overflow a small stack
            .stack_size(16 << 20)
            .spawn(move || run_cases(progress, only))
            .unwrap()
    };
    // watchdog: a case that makes no progress for HANG_SECONDS is a hang
    let mut last = (0usize, Instant::now());
    while !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        let (done, case) = progress.lock().map(|p| p.clone()).unwrap_or_default();
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(HANG_SECONDS) {
            panic!("no progress for {HANG_SECONDS} s: hang on {case}");
        }
    }
    let tallies = match worker.join() {
        Ok(t) => t,
        Err(_) => {
            let case = progress.lock().map(|p| p.1.clone()).unwrap_or_default();
            panic!("panic on {case} (rerun with CORRUPTION_CASE=<index> to reproduce)");
        }
    };

    let mut by_kind: BTreeMap<Kind, Tally> = BTreeMap::new();
    let mut all = Tally::default();
    println!("{}", Tally::HEADER);
    for ((kind, name), t) in &tallies {
        println!("{}", t.row(&format!("{kind:?}"), name));
        by_kind.entry(*kind).or_default().add(t);
        all.add(t);
    }
    for (kind, t) in &by_kind {
        println!("{}", t.row(&format!("{kind:?}"), "(all)"));
    }
    println!("{}", all.row("all", "(all)"));
    println!(
        "{} damaged models in {:.1} s",
        all.cases,
        started.elapsed().as_secs_f64()
    );
    if only.is_some() {
        return;
    }
    assert!(all.cases >= 2000);
    // The damage must actually exercise both outcomes, or the test proves nothing.
    for kind in KINDS {
        let t = by_kind[&kind];
        assert!(t.cases == CASES_PER_KIND, "{kind:?}");
        assert!(
            t.load_err + t.shapes_err + t.layers_err > 0,
            "{kind:?}: no errors at all"
        );
    }
    // Truncations almost always break the protobuf. Every dangling copy is rejected at
    // load (GraphIndex): in these models every node output is consumed or a graph output.
    assert!(by_kind[&Kind::Truncate].load_err > CASES_PER_KIND * 9 / 10);
    assert_eq!(by_kind[&Kind::Dangling].load_err, CASES_PER_KIND);
    assert!(by_kind[&Kind::FlipBytes].ok > 0, "no flipped copy loaded");
    assert!(by_kind[&Kind::EditShape].ok > 0, "no edited copy analysed");
    assert!(all.run_ok > 0 && all.run_ok + all.run_err >= 100);
}
