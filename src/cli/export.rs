//! `qsteer export VARIANT_OR_MODEL --out DIR`: the QDQ ONNX model and the AIMET encodings
//! file, from a quantized variant of a workspace (its parent's FP32 model and its encodings)
//! or from a model file and `--encodings FILE`.

use super::{model_name, print_json, variant_id, variant_workspace, Common};
use clap::Args;
use qsteer::experiment::export::export_source;
use qsteer::model::Model;
use qsteer::quant::encodings_file::EncodingsVersion;
use qsteer::quant::export::{write_export_with_biases, ExportReport};
use qsteer::quant::import::load_model_encodings;
use qsteer::{Error, Result};
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A variant id in the workspace, or an ONNX model file (then --encodings is needed)
    #[arg(value_name = "VARIANT_OR_MODEL")]
    pub target: String,
    /// Directory for <name>.qdq.onnx and <name>.encodings.json
    #[arg(long)]
    pub out: PathBuf,
    /// Layout of the written encodings file: 1.0.0 or 0.6.1
    #[arg(long, default_value = "1.0.0", value_parser = parse_version)]
    pub encodings_version: EncodingsVersion,
    /// Encodings to export (AIMET JSON, 1.0.0 or 0.6.1); a variant's own by default
    #[arg(long)]
    pub encodings: Option<PathBuf>,
    /// For a variant id: the model whose default workspace holds it (default: the embedded
    /// sample; --workspace DIR names the workspace directly)
    #[arg(long)]
    pub model: Option<PathBuf>,
}

pub(crate) fn parse_version(s: &str) -> std::result::Result<EncodingsVersion, String> {
    s.parse::<EncodingsVersion>().map_err(|e| e.to_string())
}

/// What is exported: the FP32 model, the encodings file, the output name.
struct Source {
    model: Model,
    encodings: PathBuf,
    name: String,
    variant: Option<u32>,
    workspace: Option<PathBuf>,
    /// The input shapes the workspace's data had.
    workspace_shapes: Option<Vec<Vec<usize>>>,
}

pub fn run(args: ExportArgs, common: &Common) -> Result<()> {
    super::outputs::check_output("--out", &args.out, super::outputs::Output::Dir)?;
    let source = match variant_id(&args.target) {
        Some(id) => variant_source(id, &args, common)?,
        None => model_source(&args, common)?,
    };
    let data_shapes = match &common.data {
        Some(d) => Some(super::inspect::data_sample_shapes(&source.model, d)?),
        None => None,
    };
    let pins = super::input_shape::pins_for(
        &source.model,
        common,
        data_shapes,
        source.workspace_shapes.as_deref(),
    )?;
    let encodings = load_model_encodings(&source.model, &source.encodings, pins.as_deref())?;
    let report = write_export_with_biases(
        &args.out,
        &source.name,
        &source.model,
        &encodings.weights,
        &encodings.activations,
        &encodings.biases,
        args.encodings_version,
    )?;
    warn_float_ops(&report);
    if common.json {
        let mut doc = serde_json::to_value(&report).map_err(|e| Error::runtime(e.to_string()))?;
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("model".into(), json!(source.model.source()));
            obj.insert(
                "source_encodings".into(),
                json!(source.encodings.display().to_string()),
            );
            obj.insert("variant".into(), json!(source.variant));
            obj.insert(
                "workspace".into(),
                json!(source.workspace.map(|w| w.display().to_string())),
            );
        }
        return print_json(&doc);
    }
    println!(
        "{} with {}",
        source.model.source(),
        source.encodings.display()
    );
    print_report(&report);
    Ok(())
}

fn variant_source(id: u32, args: &ExportArgs, common: &Common) -> Result<Source> {
    let (dir, ws) = variant_workspace(args.model.as_ref(), common)?;
    let (model_path, encodings) = export_source(&ws, id, args.encodings.as_deref())?;
    Ok(Source {
        model: Model::load(&model_path)?,
        encodings,
        name: format!("{}_v{id}", ws.file().model_name),
        variant: Some(id),
        workspace: Some(dir),
        workspace_shapes: ws.settings().input_shapes.clone(),
    })
}

fn model_source(args: &ExportArgs, common: &Common) -> Result<Source> {
    let path = PathBuf::from(&args.target);
    let encodings = args.encodings.clone().ok_or_else(|| {
        Error::input(format!(
            "exporting the model file {} needs --encodings FILE (or give a variant id)",
            path.display()
        ))
    })?;
    Ok(Source {
        model: super::open_model(&path, common, common.data.as_deref())?,
        encodings,
        name: model_name(&path),
        variant: None,
        workspace: None,
        workspace_shapes: None,
    })
}

/// Tell the user which activations are not integer Q/DQ in the exported model.
pub(crate) fn warn_float_ops(report: &ExportReport) {
    let tensors = &report.contents.float_op_tensors;
    if !tensors.is_empty() {
        eprintln!(
            "warning: {} activation quantizer(s) have no ONNX integer type at their bitwidth \
             and are exported as float ops (Div, Round, Clip, Mul): {}",
            tensors.len(),
            tensors.join(", ")
        );
    }
}

pub(crate) fn print_report(report: &ExportReport) {
    let c = &report.contents;
    println!("QDQ model  {}", report.output.display());
    println!(
        "encodings  {} (AIMET {})",
        report.encodings.display(),
        report.encodings_version
    );
    println!(
        "{} integer weights, {} activation Q/DQ pairs, {} as float ops",
        c.integer_weights,
        c.qdq_activations,
        c.float_op_tensors.len()
    );
    if !c.contrib_tensors.is_empty() {
        println!(
            "{} tensors use com.microsoft Q/DQ (ONNX Runtime): {}",
            c.contrib_tensors.len(),
            c.contrib_tensors.join(", ")
        );
    }
}
