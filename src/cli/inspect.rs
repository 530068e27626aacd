//! `qsteer inspect MODEL`: the layer table and totals.

use super::table::{human, Table};
use super::{print_json, resolve_model, Common};
use clap::Args;
use qsteer::data::load_dataset;
use qsteer::model::shapes::{format_shape, InputType};
use qsteer::model::{Layer, Model, ModelShapes};
use qsteer::Result;
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The ONNX model (default: the embedded sample model)
    pub model: Option<PathBuf>,
}

/// Everything `inspect` reports, computed once for both output forms.
pub struct Inspection {
    pub model: Model,
    pub shapes: ModelShapes,
    pub layers: Vec<Layer>,
}

impl Inspection {
    pub fn macs_total(&self) -> Option<u64> {
        self.layers.iter().map(|l| l.macs).sum()
    }

    /// All float weight elements (layers, BatchNorm and the rest).
    pub fn params_total(&self) -> u64 {
        self.model
            .weights()
            .map(|(_, w)| w.array.len() as u64)
            .sum()
    }
}

/// Load and analyse a model; with a dataset, its sample shape pins symbolic input dims.
pub fn inspect_model(
    path: &std::path::Path,
    data: Option<&std::path::Path>,
    common: &Common,
) -> Result<Inspection> {
    let model = super::open_model(path, common, data)?;
    let data_shapes = match data {
        Some(d) => Some(data_sample_shapes(&model, d)?),
        None => None,
    };
    let pinned = super::input_shape::pins_for(&model, common, data_shapes, None)?;
    let shapes = model.shapes(pinned.as_deref())?;
    let layers = model.layers(&shapes)?;
    Ok(Inspection {
        model,
        shapes,
        layers,
    })
}

/// The per-sample input shapes of the dataset at `d`, in `model`'s input order.
pub(crate) fn data_sample_shapes(model: &Model, d: &std::path::Path) -> Result<Vec<Vec<usize>>> {
    let ds = load_split_free(d)?;
    qsteer::experiment::evaluate::check_fits(model, &ds)?;
    qsteer::experiment::evaluate::sample_shapes(model, &ds)
}

/// A dataset for its shapes: the directory itself, or its evaluation part when split.
fn load_split_free(d: &std::path::Path) -> Result<qsteer::data::Dataset> {
    let eval = d.join("evaluation");
    if eval.is_dir() && d.join("calibration").is_dir() {
        load_dataset(&eval)
    } else {
        load_dataset(d)
    }
}

pub fn run(args: InspectArgs, common: &Common) -> Result<()> {
    let (path, data) = resolve_model(args.model.as_ref(), common.data.as_ref())?;
    // The embedded sample has a fixed shape; only pin from data the user named.
    let pin = if args.model.is_some() {
        data.as_deref()
    } else {
        None
    };
    let ins = inspect_model(&path, pin, common)?;
    if let Some(f) = &ins.shapes.fallback {
        eprintln!("note: {f}");
    }
    if common.json {
        return print_json(&to_json(&path, &ins));
    }
    print!("{}", to_text(&path, &ins));
    Ok(())
}

fn io_json(ins: &Inspection, names: &[String]) -> serde_json::Value {
    names
        .iter()
        .map(|n| json!({ "name": n, "shape": ins.shapes.get(n) }))
        .collect()
}

/// Inputs with their element type (what the data is cast to).
fn inputs_json(ins: &Inspection) -> serde_json::Value {
    ins.shapes
        .inputs
        .iter()
        .map(|i| json!({ "name": i.name, "shape": ins.shapes.get(&i.name), "type": i.elem }))
        .collect()
}

pub fn to_json(path: &std::path::Path, ins: &Inspection) -> serde_json::Value {
    let layers: Vec<serde_json::Value> = ins
        .layers
        .iter()
        .map(|l| {
            json!({
                "name": l.name, "op": l.kind, "weight": l.weight, "bias": l.bias,
                "weight_shape": l.weight_shape, "input_shape": l.input_shape,
                "output_shape": l.output_shape, "in_channels": l.in_channels,
                "out_channels": l.out_channels, "kernel": l.kernel, "groups": l.groups,
                "strides": l.strides, "pads": l.pads, "dilations": l.dilations,
                "params": l.params, "macs": l.macs,
            })
        })
        .collect();
    json!({
        "model": path.display().to_string(),
        "opset": ins.model.opset(),
        "producer": ins.model.proto().producer_name,
        "nodes": ins.model.graph().node.len(),
        "fixed_batch": ins.shapes.fixed_batch,
        "inputs": inputs_json(ins),
        "outputs": io_json(ins, &ins.model.output_names()),
        "layers": layers,
        "macs_total": ins.macs_total(),
        "params_total": ins.params_total(),
        "layer_params_total": ins.layers.iter().map(|l| l.params).sum::<u64>(),
        "fallback": ins.shapes.fallback,
    })
}

fn shape_text(s: Option<&qsteer::model::Shape>) -> String {
    s.map(|s| format_shape(s)).unwrap_or_else(|| "?".into())
}

pub fn to_text(path: &std::path::Path, ins: &Inspection) -> String {
    let total = ins.macs_total();
    let mut t = Table::new(
        &[
            "layer", "op", "kernel", "in→out", "input", "output", "params", "MACs", "share",
        ],
        &[false, false, false, false, false, false, true, true, true],
    );
    for l in &ins.layers {
        let kernel = if l.kernel.is_empty() {
            "-".to_string()
        } else {
            let k = l
                .kernel
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join("×");
            let s = l.strides.iter().copied().max().unwrap_or(1);
            let g = if l.groups > 1 {
                format!(" g{}", l.groups)
            } else {
                String::new()
            };
            if s > 1 {
                format!("{k}/{s}{g}")
            } else {
                format!("{k}{g}")
            }
        };
        let share = match (l.macs, total) {
            (Some(m), Some(t)) if t > 0 => format!("{:.1}%", 100.0 * m as f64 / t as f64),
            _ => "-".into(),
        };
        t.row(vec![
            l.name.clone(),
            l.kind.label().into(),
            kernel,
            format!("{}→{}", l.in_channels, l.out_channels),
            shape_text(l.input_shape.as_ref()),
            shape_text(l.output_shape.as_ref()),
            human(l.params),
            l.macs.map(human).unwrap_or_else(|| "?".into()),
            share,
        ]);
    }
    let inputs: Vec<String> = ins
        .shapes
        .inputs
        .iter()
        .map(|i| {
            let ty = match i.elem {
                InputType::Float32 => String::new(),
                other => format!(" {}", other.name()),
            };
            format!("{} {}{ty}", i.name, shape_text(ins.shapes.get(&i.name)))
        })
        .collect();
    let outputs: Vec<String> = ins
        .model
        .output_names()
        .iter()
        .map(|o| format!("{o} {}", shape_text(ins.shapes.get(o))))
        .collect();
    format!(
        "{}  (opset {}, {} nodes)\ninputs: {}\noutputs: {}\n\n{}\n{} layers · MACs per sample {} · params {} (layers {})\n",
        path.display(),
        ins.model.opset(),
        ins.model.graph().node.len(),
        inputs.join(", "),
        outputs.join(", "),
        t.render(),
        ins.layers.len(),
        total.map(human).unwrap_or_else(|| "? (symbolic dims: pass --data)".into()),
        human(ins.params_total()),
        human(ins.layers.iter().map(|l| l.params).sum()),
    )
}
