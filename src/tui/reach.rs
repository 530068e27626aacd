//! What a greedy compression can reach, known before it runs: the compress and sweep
//! dialogs ask for the smallest MAC ratio their method reaches on the variant (every layer
//! at 1/N, `compress::greedy::reachable_mac_ratio`, measured off the UI thread), show it,
//! and refuse a target below it with a message, instead of a job failing a second later.

use super::state::{App, Popup};
use super::update::Effect;
use qsteer::compress::greedy::TOLERANCE;
use qsteer::compress::Method;

/// The question: a variant, a method, N candidates.
pub type ReachKey = (u32, Method, usize);

/// Answers so far; `None` while being measured.
#[derive(Debug, Default, Clone)]
pub struct Reaches(pub Vec<(ReachKey, Option<Result<f64, String>>)>);

impl Reaches {
    pub fn get(&self, key: ReachKey) -> Option<&Option<Result<f64, String>>> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, r)| r)
    }

    pub fn set(&mut self, key: ReachKey, found: Result<f64, String>) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, r)) => *r = Some(found),
            None => self.0.push((key, Some(found))),
        }
    }
}

/// The question the top dialog asks, if any: channel pruning needs calibration data to
/// apply, too slow to ask each time; the other methods apply in a moment.
fn asked(app: &App) -> Option<ReachKey> {
    let key = match app.popups.last()? {
        Popup::Compress(f) => (f.variant, f.method(), f.candidates),
        Popup::Sweep(f) => (f.variant, Method::SpatialSvd, f.candidates),
        _ => return None,
    };
    (key.1 != Method::ChannelPruning).then_some(key)
}

/// After each action: measure what the open dialog needs and nobody measured yet.
pub fn wanted(app: &mut App) -> Option<Effect> {
    let key = asked(app)?;
    if app.reaches.get(key).is_some() || app.data_path.is_none() {
        return None;
    }
    app.reaches.0.push((key, None));
    Some(Effect::ProbeReach(key))
}

/// The dialog's line: the floor, or that it is being measured, and whether `targets` are
/// all above it.
pub fn line(app: &App, key: ReachKey, targets: &[f64]) -> Option<(String, bool)> {
    if key.1 == Method::ChannelPruning {
        return None;
    }
    Some(match app.reaches.get(key) {
        None | Some(None) => ("reachable MAC ratio: measuring…".into(), true),
        Some(Some(Err(e))) => (format!("reachable MAC ratio unknown: {e}"), true),
        Some(Some(Ok(r))) => (
            format!(
                "reachable: down to {r:.3} of the MACs ({} at 1/{} everywhere)",
                key.1.short(),
                key.2
            ),
            targets.iter().all(|t| *t >= r - TOLERANCE),
        ),
    })
}

/// Why `target` (`what`: "the target", "Cssvd 0.50") cannot be reached, when it cannot.
pub fn refusal(app: &App, key: ReachKey, what: &str, target: f64) -> Option<String> {
    let Some(Some(Ok(r))) = app.reaches.get(key) else {
        return None;
    };
    (target < r - TOLERANCE).then(|| {
        // Short enough for the dialog's line (the line above it says the method and N).
        format!(
            "{what} {target:.2} < reachable {r:.3}: raise it to {:.2} or more",
            (r * 100.0).ceil() / 100.0
        )
    })
}

/// Measure on a copy of the workspace (off the UI thread).
pub fn measure(
    ws: &qsteer::experiment::Workspace,
    key: ReachKey,
    data: std::path::PathBuf,
    pinned: Option<Vec<Vec<usize>>>,
) -> qsteer::Result<f64> {
    use qsteer::compress::build::{build_compressor, CompressorSpec};
    let (variant, method, n) = key;
    let model = ws.load_variant_model(variant)?;
    let spec = CompressorSpec {
        method,
        sample_shapes: pinned.unwrap_or_default(),
        selection: None,
        data,
        calibration_size: 200,
        seed: 0,
        options: Default::default(),
    };
    let compressor = build_compressor(&spec)?;
    qsteer::compress::greedy::reachable_mac_ratio(
        compressor.as_ref(),
        &model,
        n,
        &Default::default(),
        &[],
        &qsteer::cancel::CancelToken::new(),
    )
}
