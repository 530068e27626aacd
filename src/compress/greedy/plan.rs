//! Which layers a selection touches: the method's eligible layers, minus the user's
//! excluded ones, with the pinned ones at their fixed ratios. Every layer name and ratio the
//! user gave is checked here, so a typo is an error naming it before any evaluation.

use crate::compress::{Eligibility, LayerCompressor, LayerRatios, Method};
use crate::model::Model;
use crate::{Error, Result};
use std::collections::BTreeSet;

/// The layers of one selection.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerPlan {
    /// Eligible, neither pinned nor excluded, in graph order.
    pub searched: Vec<String>,
    pub pinned: LayerRatios,
    pub excluded: Vec<String>,
}

/// A per-layer ratio must keep something and cannot add MACs.
pub fn check_ratio(layer: &str, ratio: f64, what: &str) -> Result<()> {
    if !ratio.is_finite() || ratio <= 0.0 || ratio > 1.0 {
        return Err(Error::input(format!(
            "{what} for layer '{layer}' is {ratio}; a ratio must be in (0, 1]"
        )));
    }
    Ok(())
}

/// The layer `name` of `eligibility`, or an input error naming it (and a few real names).
fn find<'a>(eligibility: &'a [Eligibility], name: &str, what: &str) -> Result<&'a Eligibility> {
    eligibility.iter().find(|e| e.layer == name).ok_or_else(|| {
        let some: Vec<&str> = eligibility
            .iter()
            .take(6)
            .map(|e| e.layer.as_str())
            .collect();
        let more = if eligibility.len() > some.len() {
            ", …"
        } else {
            ""
        };
        Error::input(format!(
            "{what}: the model has no layer named '{name}' (layers: {}{more})",
            some.join(", ")
        ))
    })
}

/// The layer must exist and the method must be able to compress it.
fn check_eligible(
    eligibility: &[Eligibility],
    name: &str,
    method: Method,
    what: &str,
) -> Result<()> {
    let e = find(eligibility, name, what)?;
    match &e.not_eligible {
        Some(why) => Err(Error::input(format!(
            "{what}: layer '{name}' cannot be compressed with {}: {why}",
            method.short()
        ))),
        None => Ok(()),
    }
}

/// Plan a greedy selection: check the pins and exclusions against the method's layers.
pub fn plan(
    compressor: &dyn LayerCompressor,
    model: &Model,
    pin: &LayerRatios,
    exclude: &[String],
) -> Result<LayerPlan> {
    let method = compressor.method();
    let eligibility = compressor.eligible(model)?;
    for (layer, &r) in pin {
        check_eligible(&eligibility, layer, method, "--pin")?;
        check_ratio(layer, r, "the pinned ratio")?;
        if exclude.contains(layer) {
            return Err(Error::input(format!(
                "layer '{layer}' is both pinned and excluded; choose one"
            )));
        }
    }
    for layer in exclude {
        find(&eligibility, layer, "--exclude")?;
    }
    let searched = eligibility
        .iter()
        .filter(|e| e.not_eligible.is_none())
        .map(|e| e.layer.clone())
        .filter(|l| !pin.contains_key(l) && !exclude.contains(l))
        .collect();
    let excluded: BTreeSet<&String> = exclude.iter().collect();
    Ok(LayerPlan {
        searched,
        pinned: pin.clone(),
        excluded: excluded.into_iter().cloned().collect(),
    })
}

/// The ratios of manual mode: the user's, with the pins added and nothing for an excluded
/// layer. A layer given two ratios, or a ratio and an exclusion, is an error.
pub fn manual_ratios(
    compressor: &dyn LayerCompressor,
    model: &Model,
    ratios: &LayerRatios,
    pin: &LayerRatios,
    exclude: &[String],
) -> Result<LayerRatios> {
    let method = compressor.method();
    let eligibility = compressor.eligible(model)?;
    let mut all = ratios.clone();
    for (layer, &r) in pin {
        if let Some(&given) = ratios.get(layer) {
            if given != r {
                return Err(Error::input(format!(
                    "layer '{layer}' has ratio {given} in the ratios file and is pinned at {r}"
                )));
            }
        }
        all.insert(layer.clone(), r);
    }
    for layer in exclude {
        find(&eligibility, layer, "--exclude")?;
        if all.contains_key(layer) {
            return Err(Error::input(format!(
                "layer '{layer}' is excluded but also given a ratio"
            )));
        }
    }
    for (layer, &r) in &all {
        check_eligible(&eligibility, layer, method, "ratios")?;
        check_ratio(layer, r, "the ratio")?;
    }
    Ok(all)
}
