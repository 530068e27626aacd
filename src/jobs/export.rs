//! The export job: a quantized variant as a QDQ ONNX model and its encodings file.

use super::exec::JobCtx;
use super::kind::JobKind;
use super::lock;
use crate::experiment::export::export_variant;
use crate::experiment::Workspace;
use crate::{Error, Result};
use serde_json::json;
use std::sync::Mutex;

pub(crate) fn run(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<serde_json::Value> {
    let JobKind::Export {
        variant,
        out,
        version,
    } = ctx.kind
    else {
        return Err(Error::runtime(
            "the export job was handed another kind of job",
        ));
    };
    // A snapshot: the export reads files only, and a long write must not hold the lock.
    let ws = lock(workspace).clone();
    let dir = out.clone().unwrap_or_else(|| ws.dir().join("exports"));
    ctx.log(format!(
        "export v{variant} to {} (encodings {version})",
        dir.display()
    ));
    let report = export_variant(&ws, *variant, &dir, *version, None, None)?;
    let floats = &report.contents.float_op_tensors;
    if !floats.is_empty() {
        ctx.log(format!(
            "warning: {} activation quantizer(s) have no ONNX integer type at their bitwidth and \
             are exported as float ops: {}",
            floats.len(),
            floats.join(", ")
        ));
    }
    let line = format!("exported {}", report.output.display());
    ctx.log(line.clone());
    let mut summary = serde_json::to_value(&report).map_err(|e| Error::runtime(e.to_string()))?;
    if let Some(obj) = summary.as_object_mut() {
        obj.insert("variant".into(), json!(variant));
        obj.insert("result".into(), json!(line));
    }
    Ok(summary)
}
