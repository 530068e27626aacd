//! The threshold search over the eval-score dictionary (DESIGN.md §3): for a score threshold
//! t each layer takes the smallest candidate ratio whose score is ≥ t (none: ratio 1), and the
//! model's MAC ratio is predicted by adding up each layer's MAC savings measured alone.
//! Lowering t compresses more, so the predicted ratio only falls as t falls; a binary search
//! over the distinct scores finds the highest threshold that meets the target.
//!
//! One threshold moves every layer at once, so the MAC ratio it reaches can fall well short
//! of the target (a step of one layer). The search then gives MACs back: while some layer can
//! move up one candidate (or to 1) with the prediction still meeting the target, the move that
//! gains the most score is made. The result meets the target and is at least as close to it.

use super::dictionary::Entry;
use crate::compress::LayerRatios;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Stop as soon as the predicted MAC ratio is this close to the target.
pub const TOLERANCE: f64 = 0.001;

/// What the search decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    /// The chosen ratio of every searched layer (1 = left alone); pinned layers not included.
    pub ratios: LayerRatios,
    /// The score threshold; `None` when the pins alone meet the target.
    pub threshold: Option<f64>,
    /// MAC ratio of the whole model predicted from the per-layer savings.
    pub predicted_mac_ratio: f64,
    /// (threshold, predicted ratio) of every step, in order.
    pub steps: Vec<(f64, f64)>,
    /// Layers moved above the threshold's pick to come closer to the target, in order.
    pub relaxed: Vec<String>,
}

/// The inputs of the search, all from the dictionary and one measurement of the pins.
pub struct SearchInput<'a> {
    /// The searched layers, in graph order.
    pub layers: &'a [String],
    pub entries: &'a [Entry],
    /// Whole-model MACs of the parent.
    pub macs_before: u64,
    /// MACs the pinned layers save together.
    pub pinned_saving: u64,
    pub target: f64,
    /// The parent's score: what a layer left at ratio 1 scores.
    pub baseline: f64,
}

/// One candidate of one layer: (ratio, score, MACs saved).
type Candidate = (f64, f64, u64);
/// Each layer's candidates, ratio ascending.
type Options<'a> = BTreeMap<&'a str, Vec<Candidate>>;

impl SearchInput<'_> {
    fn options(&self) -> Options<'_> {
        let mut map: Options = self
            .layers
            .iter()
            .map(|l| (l.as_str(), Vec::new()))
            .collect();
        for e in self.entries {
            if let Some(v) = map.get_mut(e.layer.as_str()) {
                v.push((
                    e.ratio,
                    e.score,
                    self.macs_before.saturating_sub(e.macs_after),
                ));
            }
        }
        for v in map.values_mut() {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        map
    }
}

/// What a layer saves at threshold `t`.
fn pick(options: &[Candidate], t: f64) -> (f64, u64) {
    options
        .iter()
        .find(|o| o.1 >= t)
        .map_or((1.0, 0), |o| (o.0, o.2))
}

fn predict(input: &SearchInput, options: &Options, t: f64) -> f64 {
    let saved: u64 = options.values().map(|o| pick(o, t).1).sum::<u64>() + input.pinned_saving;
    mac_ratio(input, saved)
}

/// Find the highest score threshold whose predicted MAC ratio is at most the target (plus
/// the tolerance). A target below the best the dictionary can reach is an input error naming
/// that best ratio.
pub fn search(input: &SearchInput) -> Result<SearchResult> {
    let options = options_checked(input)?;
    let mut thresholds: Vec<f64> = input.entries.iter().map(|e| e.score).collect();
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    // Above every score nothing but the pins is compressed.
    thresholds.push(f64::INFINITY);
    let limit = input.target + TOLERANCE;
    let mut steps = Vec::new();
    let mut eval = |i: usize| {
        let r = predict(input, &options, thresholds[i]);
        steps.push((thresholds[i], r));
        r
    };
    let best = eval(0);
    if best > limit {
        return Err(Error::input(format!(
            "target MAC ratio {:.3} cannot be reached: with every searched layer at its smallest \
             candidate ratio the best predicted MAC ratio is {best:.3}",
            input.target
        )));
    }
    let (mut lo, mut hi) = (0, thresholds.len() - 1);
    let chosen = if eval(hi) <= limit {
        hi
    } else {
        // ratio(thresholds[lo]) ≤ limit < ratio(thresholds[hi])
        let mut close = None;
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            let r = eval(mid);
            if (r - input.target).abs() <= TOLERANCE {
                close = Some(mid);
                break;
            }
            if r <= limit {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        close.unwrap_or(lo)
    };
    let t = thresholds[chosen];
    // Index of each layer's pick among its options; `len` means ratio 1.
    let mut picks: BTreeMap<&str, usize> = options
        .iter()
        .map(|(layer, o)| (*layer, o.iter().position(|c| c.1 >= t).unwrap_or(o.len())))
        .collect();
    let relaxed = relax(input, &options, &mut picks);
    let at = |layer: &str, i: usize| options[layer].get(i).copied();
    let saved: u64 = picks
        .iter()
        .filter_map(|(l, &i)| at(l, i))
        .map(|o| o.2)
        .sum::<u64>()
        + input.pinned_saving;
    let ratios = picks
        .iter()
        .map(|(l, &i)| (l.to_string(), at(l, i).map_or(1.0, |o| o.0)))
        .collect();
    Ok(SearchResult {
        ratios,
        threshold: t.is_finite().then_some(t),
        predicted_mac_ratio: mac_ratio(input, saved),
        steps,
        relaxed,
    })
}

fn mac_ratio(input: &SearchInput, saved: u64) -> f64 {
    if input.macs_before == 0 {
        return 1.0;
    }
    input.macs_before.saturating_sub(saved) as f64 / input.macs_before as f64
}

/// Move layers up one candidate at a time, the best score gain first, while the predicted
/// ratio still meets the target. Returns the layers moved, in order.
fn relax<'a>(
    input: &SearchInput,
    options: &Options<'a>,
    picks: &mut BTreeMap<&'a str, usize>,
) -> Vec<String> {
    let limit = input.target + TOLERANCE;
    let value = |layer: &str, i: usize| {
        options[layer]
            .get(i)
            .map_or((input.baseline, 0), |o| (o.1, o.2))
    };
    let mut moved = Vec::new();
    loop {
        let saved: u64 =
            picks.iter().map(|(l, &i)| value(l, i).1).sum::<u64>() + input.pinned_saving;
        let best = picks
            .iter()
            .filter(|(l, &i)| i < options[*l].len())
            .filter_map(|(l, &i)| {
                let (now, now_saved) = value(l, i);
                let (next, next_saved) = value(l, i + 1);
                let after = saved.saturating_sub(now_saved.saturating_sub(next_saved));
                (mac_ratio(input, after) <= limit).then_some((*l, next - now))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let Some((layer, _)) = best else {
            return moved;
        };
        *picks.get_mut(layer).expect("picked layer") += 1;
        moved.push(layer.to_string());
    }
}

fn options_checked<'a>(input: &'a SearchInput) -> Result<Options<'a>> {
    let options = input.options();
    if let Some((layer, _)) = options.iter().find(|(_, o)| o.is_empty()) {
        return Err(Error::runtime(format!(
            "the eval-score dictionary has no entry for layer '{layer}'"
        )));
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(layer: &str, ratio: f64, score: f64, macs_after: u64) -> Entry {
        Entry {
            layer: layer.into(),
            ratio,
            score,
            macs_after,
        }
    }

    /// Two layers of 400 MACs each in a 1000-MAC model; `a` is robust, `b` sensitive.
    fn dictionary() -> (Vec<String>, Vec<Entry>) {
        let layers = vec!["a".to_string(), "b".to_string()];
        let mut entries = Vec::new();
        for (k, r) in [0.25, 0.5, 0.75].into_iter().enumerate() {
            let kept = (400.0 * r) as u64;
            entries.push(entry("a", r, 0.9 + 0.02 * k as f64, 600 + kept));
            entries.push(entry("b", r, 0.5 + 0.2 * k as f64, 600 + kept));
        }
        (layers, entries)
    }

    fn run(target: f64, pinned_saving: u64) -> Result<SearchResult> {
        let (layers, entries) = dictionary();
        search(&SearchInput {
            layers: &layers,
            entries: &entries,
            macs_before: 1000,
            pinned_saving,
            target,
            baseline: 1.0,
        })
    }

    #[test]
    fn the_robust_layer_is_compressed_first() {
        // Threshold 0.9 gives a 0.25, b 0.75 (ratio 0.6); giving b's 100 MACs back gains the
        // most score and still meets 0.7.
        let r = run(0.7, 0).unwrap();
        assert_eq!(r.ratios["a"], 0.25);
        assert_eq!(r.ratios["b"], 1.0);
        assert_eq!(r.relaxed, vec!["b".to_string()]);
        assert!((r.predicted_mac_ratio - 0.7).abs() < 1e-12);
        // Tighter: `b` must give too, as little as it can.
        let r = run(0.6, 0).unwrap();
        assert_eq!((r.ratios["a"], r.ratios["b"]), (0.25, 0.75));
        assert!(r.predicted_mac_ratio <= 0.6 + TOLERANCE);
        // Every searched layer keeps a threshold-consistent pick.
        let t = r.threshold.unwrap();
        assert!(t <= 0.9 && t > 0.7, "{t}");
    }

    #[test]
    fn a_loose_target_compresses_nothing_and_an_impossible_one_names_the_best() {
        let r = run(1.0, 0).unwrap();
        assert_eq!((r.ratios["a"], r.ratios["b"]), (1.0, 1.0));
        assert_eq!(r.threshold, None);
        assert_eq!(r.predicted_mac_ratio, 1.0);
        // Both at 0.25 save 600: 0.4 is the best.
        let e = run(0.3, 0).unwrap_err().to_string();
        assert!(e.contains("0.300") && e.contains("0.400"), "{e}");
        assert!(run(0.4, 0).is_ok());
    }

    #[test]
    fn pins_count_toward_the_target() {
        // The pins already save 250: `a` at 0.5 (saves 200) is enough for 0.55.
        let r = run(0.55, 250).unwrap();
        assert_eq!((r.ratios["a"], r.ratios["b"]), (0.5, 1.0));
        assert!((r.predicted_mac_ratio - 0.55).abs() < 1e-12);
    }

    #[test]
    fn a_layer_without_entries_is_an_error() {
        let (mut layers, entries) = dictionary();
        layers.push("c".into());
        let e = search(&SearchInput {
            layers: &layers,
            entries: &entries,
            macs_before: 1000,
            pinned_saving: 0,
            target: 0.5,
            baseline: 1.0,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("'c'"), "{e}");
    }
}
