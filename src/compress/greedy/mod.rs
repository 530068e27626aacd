//! Greedy per-layer ratio selection (DESIGN.md §3), for any [`LayerCompressor`]: fill the
//! eval-score dictionary (each searched layer alone at each candidate ratio k/N), search the
//! score threshold that meets the target MAC ratio, then compress every layer at its chosen
//! ratio at once. Manual mode skips the dictionary and applies the user's ratios.

pub mod dictionary;
mod evaluate;
pub mod plan;
pub mod search;
pub mod selection_samples;
pub mod suffix;

#[cfg(test)]
mod tests;

use crate::cancel::CancelToken;
use crate::compress::scorer::ModelScorer;
use crate::compress::{CompressOutcome, LayerCompressor, LayerRatios};
use crate::model::Model;
use crate::{Error, Result};
use dictionary::{Dictionary, DictionaryHeader, Entry, Shard};
use plan::{manual_ratios, plan, LayerPlan};
use search::{SearchInput, SearchResult};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use search::TOLERANCE;

/// How close the measured MAC ratio of the compressed model must come to the target before
/// the search stops re-aiming.
pub const MEASURED_TOLERANCE: f64 = 0.02;
/// At most this many searches (each one compress, no evaluation) to correct the aim.
const CORRECTION_ROUNDS: usize = 6;

/// Candidate ratios k/N for k = 1..N−1.
pub fn candidates(n: usize) -> Result<Vec<f64>> {
    if !(2..=100).contains(&n) {
        return Err(Error::input(format!(
            "--candidates is {n}; it must be between 2 and 100 (ratios k/N, k = 1..N−1)"
        )));
    }
    Ok((1..n).map(|k| k as f64 / n as f64).collect())
}

/// A target MAC ratio must leave something and remove something.
pub fn check_target(target: f64) -> Result<()> {
    if !target.is_finite() || target <= 0.0 || target >= 1.0 {
        return Err(Error::input(format!(
            "--target is {target}; the MAC ratio of the result to the model must be in (0, 1)"
        )));
    }
    Ok(())
}

pub struct GreedyRequest<'a> {
    pub model: &'a Model,
    pub compressor: &'a dyn LayerCompressor,
    pub scorer: &'a ModelScorer,
    /// MAC ratio of the result to `model`.
    pub target: f64,
    /// N of the candidates k/N.
    pub candidates: usize,
    pub pin: &'a LayerRatios,
    pub exclude: &'a [String],
    /// Where the dictionary is cached (the workspace's `cache/`); `None`: not cached.
    pub cache_dir: Option<&'a Path>,
    /// The compressor's settings beyond its method, as they enter the cache key.
    pub settings: &'a str,
    /// Score each candidate by running only what it changed from the parent's values
    /// before it (the same scores; see `suffix`); `false`: compile and run every
    /// candidate's whole model.
    pub changed_part_only: bool,
}

/// What a selection tells its caller as it goes (from the calling thread).
pub enum GreedyEvent<'a> {
    /// The dictionary about to be filled: searched layers (graph order) × candidates; the
    /// parent's score is what ratio 1 scores.
    Plan {
        layers: &'a [String],
        candidates: &'a [f64],
        baseline: f64,
    },
    /// `done` of `total` dictionary entries; `what` e.g. `layer 3/17 ratio 0.4`.
    Progress {
        done: usize,
        total: usize,
        what: &'a str,
    },
    /// A dictionary entry, computed now or reused from the cache.
    Entry {
        entry: &'a Entry,
        computed: bool,
        baseline: f64,
    },
}

/// How the dictionary was filled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DictionaryReport {
    pub key: String,
    /// The cache file, if cached.
    pub file: Option<String>,
    pub entries: usize,
    pub reused: usize,
    /// Evaluations made now.
    pub computed: usize,
    /// Of those, the ones that ran only the part of the model the candidate changed.
    #[serde(default)]
    pub partial: usize,
    pub seconds: f64,
    /// The evaluation samples each entry was scored on (the first ones; see
    /// [`selection_samples`]); 0 in records made before this was kept.
    #[serde(default)]
    pub samples: usize,
}

/// The result of a greedy selection.
pub struct GreedySelection {
    pub plan: LayerPlan,
    pub search: SearchResult,
    /// Every layer's ratio below 1 (searched and pinned), as applied.
    pub ratios: LayerRatios,
    pub outcome: CompressOutcome,
    pub dictionary: DictionaryReport,
    /// The dictionary's entries for the searched layers.
    pub entries: Vec<Entry>,
}

/// The smallest MAC ratio (to `model`) a greedy search over `n` candidates can reach: every
/// layer it may search at the smallest ratio 1/n, the pinned ones at theirs. One apply, no
/// scoring, so dialogs can say up front whether a target is reachable.
pub fn reachable_mac_ratio(
    compressor: &dyn LayerCompressor,
    model: &Model,
    n: usize,
    pin: &LayerRatios,
    exclude: &[String],
    cancel: &CancelToken,
) -> Result<f64> {
    let smallest = candidates(n)?[0];
    let plan = plan(compressor, model, pin, exclude)?;
    let mut extreme = plan.pinned.clone();
    extreme.extend(plan.searched.iter().map(|l| (l.clone(), smallest)));
    Ok(compressor.apply(model, &extreme, cancel)?.mac_ratio())
}

/// Select per-layer ratios for `req.target` and compress. Cancellable between evaluations.
pub fn select_greedy(
    req: &GreedyRequest,
    cancel: &CancelToken,
    events: &dyn Fn(GreedyEvent),
) -> Result<GreedySelection> {
    check_target(req.target)?;
    let candidates = candidates(req.candidates)?;
    let plan = plan(req.compressor, req.model, req.pin, req.exclude)?;
    let smallest = candidates[0];
    // One cheap apply (no scoring) tells whether the target is reachable at all.
    let mut extreme = plan.pinned.clone();
    extreme.extend(plan.searched.iter().map(|l| (l.clone(), smallest)));
    let best = req.compressor.apply(req.model, &extreme, cancel)?;
    if best.mac_ratio() > req.target + TOLERANCE {
        return Err(Error::input(format!(
            "target MAC ratio {:.3} cannot be reached with {}: with every searched layer at \
             ratio {smallest} the MAC ratio is {:.3}",
            req.target,
            req.compressor.method().short(),
            best.mac_ratio()
        )));
    }
    let pinned_saving = if plan.pinned.is_empty() {
        0
    } else {
        let p = req.compressor.apply(req.model, &plan.pinned, cancel)?;
        p.macs_before.saturating_sub(p.macs_after)
    };
    let (dict, report) = fill(req, &plan.searched, &candidates, None, cancel, events)?;
    let entries: Vec<Entry> = dict
        .entries()
        .iter()
        .filter(|e| plan.searched.contains(&e.layer))
        .cloned()
        .collect();
    let baseline = req.scorer.value(req.scorer.parent_score());
    // The prediction adds up savings measured one layer at a time; where they interact
    // (channel pruning a layer also shrinks the one before it) the measured ratio misses
    // the target. Aim the search again at a corrected target until the measurement is
    // within MEASURED_TOLERANCE, keeping the closest result.
    let mut aim = req.target;
    let mut closest: Option<(SearchResult, LayerRatios, CompressOutcome)> = None;
    for _ in 0..CORRECTION_ROUNDS {
        let search = match search::search(&SearchInput {
            layers: &plan.searched,
            entries: &entries,
            macs_before: best.macs_before,
            pinned_saving,
            target: aim,
            baseline,
        }) {
            Ok(s) => s,
            // A corrected aim beyond what the prediction can reach: keep what we have.
            Err(e) if closest.is_some() && matches!(e, Error::Input(_)) => break,
            Err(e) => return Err(e),
        };
        let mut ratios: LayerRatios = search
            .ratios
            .iter()
            .filter(|(_, &r)| r < 1.0)
            .map(|(l, &r)| (l.clone(), r))
            .collect();
        ratios.extend(plan.pinned.iter().map(|(l, &r)| (l.clone(), r)));
        cancel.check()?;
        let outcome = req.compressor.apply(req.model, &ratios, cancel)?;
        let measured = outcome.mac_ratio();
        let miss = |m: f64| (m - req.target).abs();
        if closest
            .as_ref()
            .is_none_or(|(_, _, o)| miss(measured) < miss(o.mac_ratio()))
        {
            closest = Some((search, ratios, outcome));
        }
        if miss(measured) <= MEASURED_TOLERANCE || measured <= 0.0 {
            break;
        }
        let next = (aim * req.target / measured).clamp(1e-3, 1.0 - 1e-3);
        if (next - aim).abs() < 1e-4 {
            break;
        }
        aim = next;
    }
    let (search, ratios, outcome) = closest.expect("at least one round ran");
    Ok(GreedySelection {
        plan,
        search,
        ratios,
        outcome,
        dictionary: report,
        entries,
    })
}

/// Fill one share of the dictionary into the shard's part file (a Slurm array task): no
/// search, no compressed model. The run that selects finds these entries in the cache.
pub fn fill_share(
    req: &GreedyRequest,
    shard: Shard,
    cancel: &CancelToken,
    events: &dyn Fn(GreedyEvent),
) -> Result<DictionaryReport> {
    let candidates = candidates(req.candidates)?;
    let plan = plan(req.compressor, req.model, req.pin, req.exclude)?;
    let (_, report) = fill(
        req,
        &plan.searched,
        &candidates,
        Some(shard),
        cancel,
        events,
    )?;
    Ok(report)
}

/// Evaluate every (layer, candidate) not in the cache yet (only the shard's share, when
/// one is given), saving after each. An entry another run of the same dictionary is
/// computing now is left to it and taken from the file once written (or computed here if
/// that run stops without it).
fn fill(
    req: &GreedyRequest,
    layers: &[String],
    candidates: &[f64],
    shard: Option<Shard>,
    cancel: &CancelToken,
    events: &dyn Fn(GreedyEvent),
) -> Result<(Dictionary, DictionaryReport)> {
    let started = std::time::Instant::now();
    let header = DictionaryHeader {
        method: req.compressor.method(),
        metric: req.scorer.metric(),
        candidates: candidates.to_vec(),
        settings: format!("{}{}", req.settings, req.scorer.cache_tag()),
        model_hash: req.model.content_hash(),
        dataset_fingerprint: req.scorer.data().fingerprint()?,
    };
    let baseline = req.scorer.value(req.scorer.parent_score());
    let mut dict = Dictionary::open_for(req.cache_dir, header, shard);
    events(GreedyEvent::Plan {
        layers,
        candidates,
        baseline,
    });
    let total = layers.len() * candidates.len();
    let evaluator = evaluate::Evaluator::new(req);
    let (mut reused, mut computed) = (0, 0);
    // Entries another run holds the claim of, to collect once the first pass is done.
    let mut others: Vec<(usize, usize)> = Vec::new();
    let mut first_pass = true;
    loop {
        // Per layer, the candidates this run computes (claimed), evaluated together.
        let todo: Vec<(usize, Vec<usize>)> = if first_pass {
            (0..layers.len())
                .map(|li| (li, (0..candidates.len()).collect()))
                .collect()
        } else {
            let mut by_layer: Vec<(usize, Vec<usize>)> = Vec::new();
            for (li, ci) in std::mem::take(&mut others) {
                match by_layer.last_mut() {
                    Some((l, cs)) if *l == li => cs.push(ci),
                    _ => by_layer.push((li, vec![ci])),
                }
            }
            by_layer
        };
        for (li, cis) in todo {
            let layer = &layers[li];
            let mut claimed: Vec<(f64, dictionary::Claim, usize)> = Vec::new();
            let progress = |ci: usize| {
                let what = format!("layer {}/{} ratio {}", li + 1, layers.len(), candidates[ci]);
                events(GreedyEvent::Progress {
                    done: li * candidates.len() + ci,
                    total,
                    what: &what,
                });
            };
            for ci in cis {
                let ratio = candidates[ci];
                let position = li * candidates.len() + ci;
                if shard.is_some_and(|s| !s.owns(position)) {
                    if first_pass {
                        progress(ci);
                    }
                    continue;
                }
                if let Some(e) = dict.get(layer, ratio) {
                    if first_pass {
                        progress(ci);
                    }
                    reused += 1;
                    events(GreedyEvent::Entry {
                        entry: e,
                        computed: false,
                        baseline,
                    });
                    continue;
                }
                cancel.check()?;
                let Some(claim) = dict.claim(layer, ratio)? else {
                    if first_pass {
                        progress(ci);
                    }
                    others.push((li, ci));
                    continue;
                };
                // Claimed: it may have been written since the dictionary was read.
                dict.refresh();
                if let Some(e) = dict.get(layer, ratio) {
                    if first_pass {
                        progress(ci);
                    }
                    reused += 1;
                    events(GreedyEvent::Entry {
                        entry: e,
                        computed: false,
                        baseline,
                    });
                    continue;
                }
                claimed.push((ratio, claim, ci));
            }
            if claimed.is_empty() {
                continue;
            }
            let ratios: Vec<f64> = claimed.iter().map(|c| c.0).collect();
            let positions: Vec<usize> = claimed.iter().map(|c| c.2).collect();
            let mut claims: Vec<Option<dictionary::Claim>> =
                claimed.into_iter().map(|c| Some(c.1)).collect();
            // Each entry is saved as soon as it is scored: a kill loses the one under way.
            evaluator.layer(
                layer,
                &ratios,
                cancel,
                &|i| {
                    if first_pass {
                        progress(positions[i]);
                    }
                },
                &mut |i, entry| {
                    computed += 1;
                    events(GreedyEvent::Entry {
                        entry: &entry,
                        computed: true,
                        baseline,
                    });
                    dict.insert(entry)?;
                    drop(claims[i].take());
                    Ok(())
                },
            )?;
        }
        first_pass = false;
        if others.is_empty() {
            break;
        }
        // Wait a little for the other runs, then look again.
        cancel.check()?;
        std::thread::sleep(std::time::Duration::from_millis(100));
        dict.refresh();
    }
    events(GreedyEvent::Progress {
        done: total,
        total,
        what: "dictionary",
    });
    let report = DictionaryReport {
        key: dict.key().to_string(),
        file: dict.path().map(|p| p.display().to_string()),
        entries: dict.entries().len(),
        reused,
        computed,
        partial: evaluator.partial.load(std::sync::atomic::Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        samples: req.scorer.data().len(),
    };
    Ok((dict, report))
}

/// Manual mode: compress at the user's ratios (plus pins, minus exclusions), no dictionary.
pub fn select_manual(
    model: &Model,
    compressor: &dyn LayerCompressor,
    ratios: &LayerRatios,
    pin: &LayerRatios,
    exclude: &[String],
    cancel: &CancelToken,
) -> Result<(LayerRatios, CompressOutcome)> {
    let all = manual_ratios(compressor, model, ratios, pin, exclude)?;
    if all.values().all(|&r| r >= 1.0) {
        return Err(Error::input(
            "manual ratios: no layer has a ratio below 1, nothing to compress",
        ));
    }
    let outcome = compressor.apply(model, &all, cancel)?;
    Ok((all, outcome))
}
