//! A quantsim run kept as a variant: the simulated model becomes a child of the variant
//! it was made from, with its encodings, costs and evaluation. The quantsim job (and the
//! CLI, through the same functions) use this, so every front end leaves the same records.

use super::evaluate::Subset;
use super::Workspace;
use crate::cancel::CancelToken;
use crate::metrics::Score;
use crate::quant::import::quantsim_from_file;
use crate::quant::simulate::{
    encodings_json, quantsim, QuantsimOutcome, QuantsimRequest, QuantsimSettings,
};
use crate::quant::weight_scheme::WeightScheme;
use crate::{Error, Result};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// What [`quantsim_child`] made.
pub struct QuantsimChild {
    /// The new variant's id.
    pub variant: u32,
    pub parent: u32,
    pub outcome: QuantsimOutcome,
    /// The parent's latest score on the same evaluation samples, if it was evaluated.
    pub parent_score: Option<Score>,
}

/// A panicked job elsewhere must not wedge the workspace: take the lock anyway.
fn lock(ws: &Mutex<Workspace>) -> MutexGuard<'_, Workspace> {
    ws.lock().unwrap_or_else(|e| e.into_inner())
}

/// Simulate `req.settings` on variant `parent`'s model and record the result as its child.
/// The workspace is locked only to look the parent up and to record the child, never while
/// the model runs. A cancel at any point before recording leaves the workspace unchanged.
/// With `encodings`, the file's encodings are used instead of calibrating.
pub fn quantsim_child(
    workspace: &Mutex<Workspace>,
    parent: u32,
    req: &QuantsimRequest,
    encodings: Option<&Path>,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<QuantsimChild> {
    simulate_child(workspace, parent, req, encodings, false, cancel, progress)
}

/// [`quantsim_child`] from encodings that were made for `req.settings` (AdaRound's or QAT's
/// frozen encodings): the settings are recorded with the variant, in the same index write.
pub fn quantsim_child_frozen(
    workspace: &Mutex<Workspace>,
    parent: u32,
    req: &QuantsimRequest,
    encodings: &Path,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<QuantsimChild> {
    simulate_child(
        workspace,
        parent,
        req,
        Some(encodings),
        true,
        cancel,
        progress,
    )
}

fn simulate_child(
    workspace: &Mutex<Workspace>,
    parent: u32,
    req: &QuantsimRequest,
    encodings: Option<&Path>,
    frozen: bool,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<QuantsimChild> {
    let (path, label) = {
        let ws = lock(workspace);
        let path = float_variant_path(&ws, parent, "quantsim")?;
        let label = ws.model_label(&path);
        (path, label)
    };
    let model = super::workspace::load_model_as(&path, &label)?;
    let outcome = match encodings {
        Some(file) => quantsim_from_file(&model, file, req, cancel, progress)?,
        None => quantsim(&model, req, cancel, progress)?,
    };
    // Cancelled during the last evaluation batch: still nothing is recorded.
    cancel.check()?;
    let mut ws = lock(workspace);
    let variant = ws.transaction(|ws| record(ws, parent, req, encodings, frozen, &outcome))?;
    let parent_score = ws
        .variant(parent)
        .and_then(|v| v.latest_result(&outcome.report.dataset_fingerprint))
        .map(|r| r.score.clone());
    Ok(QuantsimChild {
        variant,
        parent,
        outcome,
        parent_score,
    })
}

/// The model file of variant `id`, which must not be quantized already (its model holds
/// fake-quant: a second set of quantizers means nothing). `what` names the job asking.
pub fn float_variant_path(ws: &Workspace, id: u32, what: &str) -> Result<std::path::PathBuf> {
    let v = ws
        .variant(id)
        .ok_or_else(|| Error::input(format!("{}: no variant {id}", ws.dir().display())))?;
    if v.encodings_file.is_some() {
        return Err(Error::input(format!(
            "variant {id} is already quantized ({}); run {what} on an unquantized variant",
            v.step
        )));
    }
    Ok(ws.model_path(v))
}

/// Record a quantsim outcome as a new child of `parent`: model file, encodings (AIMET
/// 1.0.0 JSON), costs and the evaluation result, in one transaction (the variant is never
/// listed without its encodings, settings and score). Returns the child's id.
pub fn record_quantsim(
    ws: &mut Workspace,
    parent: u32,
    req: &QuantsimRequest,
    from_file: Option<&Path>,
    outcome: &QuantsimOutcome,
) -> Result<u32> {
    ws.transaction(|ws| record(ws, parent, req, from_file, false, outcome))
}

fn record(
    ws: &mut Workspace,
    parent: u32,
    req: &QuantsimRequest,
    from_file: Option<&Path>,
    frozen: bool,
    outcome: &QuantsimOutcome,
) -> Result<u32> {
    let encodings = encodings_json(&outcome.sim)?;
    let step = match from_file {
        Some(file) => format!("quantsim{{encodings:{}}}", file.display()),
        None => req.settings.step(),
    };
    let id = ws.add_variant(parent, &step, &outcome.sim.model)?;
    // The file holds float weights and fake-quant ops; the size users compare is the
    // integer model's: the parent's with the quantized weights at their bitwidth.
    let parent_bytes = ws.variant(parent).map_or(0, |v| v.size_bytes);
    ws.set_size(id, outcome.sim.deployed_bytes(parent_bytes))?;
    ws.set_encodings(id, &encodings)?;
    // Imported encodings have no settings to rerun or analyze with; frozen ones were made
    // for the request's.
    if from_file.is_none() || frozen {
        ws.set_quantsim_settings(id, &req.settings)?;
    }
    let r = &outcome.report;
    ws.set_input_shapes(&r.input_shapes)?;
    ws.set_costs(id, r.macs, Some(r.params))?;
    ws.record_result(
        id,
        r.record(&req.data, Subset::Evaluation, req.options, None),
    )?;
    Ok(id)
}

/// The settings for people, e.g. `W8A8 per-tensor tf_enhanced`, `W4 per-channel
/// symmetric minmax` (weights only), `A8 mse` (activations only).
pub fn settings_label(s: &QuantsimSettings) -> String {
    let mode = s.mode;
    let mut parts = vec![bits_label(s)];
    if mode.weights() {
        let granularity = if s.per_channel {
            "per-channel"
        } else {
            "per-tensor"
        };
        parts.push(granularity.into());
    }
    if s.symmetric {
        parts.push("symmetric".into());
    }
    parts.push(s.scheme.to_string());
    // A weight scheme the user chose, where it differs (`auto`, the default, and `same`
    // are in the recipe step; the label stays short).
    if let (WeightScheme::Fixed(weights), true) = (s.weight_scheme, mode.weights()) {
        if weights != s.scheme {
            let last = parts.len() - 1;
            if mode.activations() {
                parts.push(format!("(weights {weights})"));
            } else {
                parts[last] = weights.to_string();
            }
        }
    }
    if !s.fp32_ops.is_empty() && mode.activations() {
        parts.push(format!("float {}", s.fp32_ops.join(",")));
    }
    parts.join(" ")
}

/// What is quantized at which bitwidth: `W8A8`, `W4` (weights only), `A8` (activations only).
pub fn bits_label(s: &QuantsimSettings) -> String {
    match (s.mode.weights(), s.mode.activations()) {
        (true, true) => format!("W{}A{}", s.w_bits, s.a_bits),
        (true, false) => format!("W{}", s.w_bits),
        _ => format!("A{}", s.a_bits),
    }
}

/// The result line of a quantsim run, e.g.
/// `W8A8 per-tensor tf_enhanced: 99.25 % (FP32 99.25 %)`.
pub fn result_line(settings: &QuantsimSettings, score: &Score, parent: Option<&Score>) -> String {
    let pct = |v: f64| format!("{:.2} %", 100.0 * v);
    let label = settings_label(settings);
    match score.metric_name() {
        None => {
            format!("{label}: no labels in the dataset and no FP32 model to compare with: no score")
        }
        Some("accuracy") => {
            let a = score.accuracy.unwrap_or(0.0);
            match parent.and_then(|p| p.accuracy) {
                Some(f) => format!("{label}: {} (FP32 {})", pct(a), pct(f)),
                None => format!("{label}: {} (FP32 not evaluated on these samples)", pct(a)),
            }
        }
        Some("external") => {
            let fp32 = parent
                .filter(|p| p.metric_name() == Some("external"))
                .and_then(|p| p.display_value())
                .map_or(String::new(), |v| format!(" (FP32 {v})"));
            format!(
                "{label}: external {}{fp32}",
                score.display_value().unwrap_or_default()
            )
        }
        Some(_) => format!(
            "{label}: {} to FP32",
            score.fidelity_text().unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::qdq::QuantMode;
    use crate::quant::Scheme;

    fn settings(mode: QuantMode, scheme: Scheme) -> QuantsimSettings {
        QuantsimSettings {
            w_bits: 4,
            a_bits: 8,
            per_channel: true,
            symmetric: true,
            scheme,
            mode,
            ..Default::default()
        }
    }

    #[test]
    fn a_chosen_weight_scheme_is_in_the_label() {
        use crate::quant::weight_scheme::WeightScheme;
        let chosen = QuantsimSettings {
            weight_scheme: WeightScheme::Fixed(Scheme::Minmax),
            ..QuantsimSettings::default()
        };
        assert_eq!(
            settings_label(&chosen),
            "W8A8 per-tensor tf_enhanced (weights minmax)"
        );
        let weights_only = QuantsimSettings {
            mode: QuantMode::WeightsOnly,
            ..chosen
        };
        assert_eq!(settings_label(&weights_only), "W8 per-tensor minmax");
    }

    #[test]
    fn labels_name_what_is_quantized() {
        assert_eq!(
            settings_label(&QuantsimSettings::default()),
            "W8A8 per-tensor tf_enhanced"
        );
        assert_eq!(
            settings_label(&settings(QuantMode::WeightsOnly, Scheme::Minmax)),
            "W4 per-channel symmetric minmax"
        );
        assert_eq!(
            settings_label(&settings(QuantMode::ActivationsOnly, Scheme::Mse)),
            "A8 symmetric mse"
        );
        let score = |a| Score {
            accuracy: Some(a),
            samples: 400,
            ..Score::default()
        };
        assert_eq!(
            result_line(
                &QuantsimSettings::default(),
                &score(0.9925),
                Some(&score(0.995))
            ),
            "W8A8 per-tensor tf_enhanced: 99.25 % (FP32 99.50 %)"
        );
        // Without labels: the fidelity to FP32, by its metric's name.
        let fidelity = Score {
            agreement: Some(0.968),
            sqnr_db: Some(31.24),
            cosine: Some(0.999),
            metric: Some("per_position".into()),
            metric_value: Some(0.968),
            samples: 400,
            ..Score::default()
        };
        assert_eq!(
            result_line(&QuantsimSettings::default(), &fidelity, None),
            "W8A8 per-tensor tf_enhanced: per_position 96.80 % (SQNR 31.2 dB, cosine 0.9990) to FP32"
        );
    }
}
