//! The sweep's arithmetic (DESIGN.md §3 "SSVD→CP sweep"): which Cssvd and Ccp to try,
//! which SSVD candidates leave room for the CP step, what to advise when none fits, and
//! the headless pick among the CP candidates.

use super::report::{SweepPick, SweepRow};

/// No step asks for more than this MAC ratio: above it SSVD saves too little to matter.
pub const MAX_RATIO: f64 = 0.95;

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Rounded to 1e-6, kept if in (0, 1), duplicates dropped, order kept.
pub fn normalize_ratios(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for v in values.into_iter().map(round6) {
        if v > 0.0 && v < 1.0 && !out.iter().any(|o| (o - v).abs() < 5e-7) {
            out.push(v);
        }
    }
    out
}

/// {C, C+0.15, C+0.25}, capped at [`MAX_RATIO`].
pub fn default_cssvd(c: f64) -> Vec<f64> {
    normalize_ratios([c, c + 0.15, c + 0.25].map(|v| v.min(MAX_RATIO)))
}

/// No CP candidate keeps more than this share of the MACs: cutting under 3 % means the
/// SSVD candidate is already at C, and the greedy's k/N steps cannot cut so little anyway.
pub const MAX_CCP: f64 = 0.97;

/// C / Cssvd (with the SSVD candidate's measured MAC ratio) and its neighbours ± `neighbour`,
/// those in (0, [`MAX_CCP`]].
pub fn ccp_candidates(c: f64, cssvd_achieved: f64, neighbour: f64) -> Vec<f64> {
    if cssvd_achieved <= 0.0 {
        return vec![];
    }
    let centre = c / cssvd_achieved;
    let mut ccp = normalize_ratios([centre - neighbour, centre, centre + neighbour]);
    ccp.retain(|&r| r <= MAX_CCP);
    ccp
}

/// The largest drop (points) that leaves room for the CP step: X − 5 when X > 5, else X/2.
pub fn preselect_limit(max_drop: f64) -> f64 {
    if max_drop > 5.0 {
        max_drop - 5.0
    } else {
        max_drop / 2.0
    }
}

pub fn preselected(drop_points: f64, max_drop: f64) -> bool {
    drop_points <= preselect_limit(max_drop)
}

/// What to try instead when the SSVD candidates all miss the tolerable drop by far.
#[derive(Debug, Clone, PartialEq)]
pub enum Advice {
    /// Every candidate drops more than 2X: keep more MACs.
    Higher(Vec<f64>),
    /// Every candidate drops less than X/4: there is room to cut more.
    Lower(Vec<f64>),
}

impl Advice {
    pub fn values(&self) -> &[f64] {
        match self {
            Advice::Higher(v) | Advice::Lower(v) => v,
        }
    }

    pub fn text(&self, max_drop: f64) -> String {
        let list = self
            .values()
            .iter()
            .map(|v| format!("{v}"))
            .collect::<Vec<_>>()
            .join(",");
        match self {
            Advice::Higher(_) => format!(
                "every SSVD candidate drops more than {} points (twice the tolerable {max_drop}); \
                 try higher Cssvd values: --cssvd {list}",
                2.0 * max_drop
            ),
            Advice::Lower(_) => format!(
                "every SSVD candidate drops less than {} points (a quarter of the tolerable \
                 {max_drop}); lower Cssvd values leave more for CP: --cssvd {list}",
                max_drop / 4.0
            ),
        }
    }
}

/// Advice from the SSVD candidates' (Cssvd, drop) pairs; `None` when some are near X or
/// when no other values are left to try.
pub fn advise(candidates: &[(f64, f64)], max_drop: f64) -> Option<Advice> {
    if candidates.is_empty() {
        return None;
    }
    let tried: Vec<f64> = candidates.iter().map(|c| c.0).collect();
    let fresh = |values: Vec<f64>| -> Vec<f64> {
        normalize_ratios(values)
            .into_iter()
            .filter(|v| !tried.iter().any(|t| (t - v).abs() < 5e-7))
            .collect()
    };
    if candidates.iter().all(|c| c.1 > 2.0 * max_drop) {
        let v = fresh(higher(&tried));
        return (!v.is_empty()).then_some(Advice::Higher(v));
    }
    if candidates.iter().all(|c| c.1 < max_drop / 4.0) {
        let v = fresh(
            tried
                .iter()
                .map(|t| t - 0.1)
                .filter(|v| *v >= 0.05)
                .collect(),
        );
        return (!v.is_empty()).then_some(Advice::Lower(v));
    }
    None
}

/// Each value + 0.1, capped at [`MAX_RATIO`].
fn higher(tried: &[f64]) -> Vec<f64> {
    tried.iter().map(|t| (t + 0.1).min(MAX_RATIO)).collect()
}

/// What the headless sweep says when it stops because no candidate is pre-selected: the
/// advice when there is one, else the higher values to try.
pub fn stop_advice(candidates: &[(f64, f64)], max_drop: f64) -> String {
    if let Some(a) = advise(candidates, max_drop) {
        return a.text(max_drop);
    }
    let tried: Vec<f64> = candidates.iter().map(|c| c.0).collect();
    let list: Vec<String> = normalize_ratios(higher(&tried))
        .iter()
        .filter(|v| !tried.iter().any(|t| (*t - **v).abs() < 5e-7))
        .map(|v| format!("{v}"))
        .collect();
    let limit = preselect_limit(max_drop);
    if list.is_empty() {
        format!("no SSVD candidate drops {limit} points or less, which the CP step needs")
    } else {
        format!(
            "no SSVD candidate drops {limit} points or less, which the CP step needs; try \
             higher Cssvd values: --cssvd {}",
            list.join(",")
        )
    }
}

/// Decision 2 headless: the best score after fine-tuning (least drop) among the CP
/// candidates whose overall MAC ratio is at most C + 0.01; if none is, the one with the
/// smallest overall MAC ratio.
pub fn pick(cp: &[SweepRow], c: f64) -> Option<SweepPick> {
    let within: Vec<&SweepRow> = cp
        .iter()
        .filter(|r| r.overall_mac_ratio <= c + 0.01)
        .collect();
    if let Some(best) = within.iter().min_by(|a, b| {
        a.drop_points
            .total_cmp(&b.drop_points)
            .then(a.overall_mac_ratio.total_cmp(&b.overall_mac_ratio))
    }) {
        return Some(SweepPick {
            variant: best.variant,
            reason: format!(
                "least drop ({:.2} points) of the {} candidate(s) with overall MAC ratio ≤ {:.2}",
                best.drop_points,
                within.len(),
                c + 0.01
            ),
        });
    }
    let smallest = cp
        .iter()
        .min_by(|a, b| a.overall_mac_ratio.total_cmp(&b.overall_mac_ratio))?;
    Some(SweepPick {
        variant: smallest.variant,
        reason: format!(
            "no candidate reaches overall MAC ratio ≤ {:.2}; the smallest is {:.4} ({:.2} points \
             drop)",
            c + 0.01,
            smallest.overall_mac_ratio,
            smallest.drop_points
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::super::report::tests::row;
    use super::*;
    use crate::compress::Method;

    #[test]
    fn default_cssvd_caps_and_deduplicates() {
        assert_eq!(default_cssvd(0.5), vec![0.5, 0.65, 0.75]);
        assert_eq!(default_cssvd(0.75), vec![0.75, 0.9, 0.95]);
        assert_eq!(default_cssvd(0.9), vec![0.9, 0.95]);
        assert_eq!(default_cssvd(0.3), vec![0.3, 0.45, 0.55]);
    }

    #[test]
    fn ccp_is_c_over_the_measured_ssvd_ratio_and_its_neighbours() {
        assert_eq!(
            ccp_candidates(0.5, 0.75, 0.05),
            vec![0.616667, 0.666667, 0.716667]
        );
        // 0.5 / 0.52 ≈ 0.9615: the upper neighbour leaves (0, 1).
        assert_eq!(ccp_candidates(0.5, 0.52, 0.05), vec![0.911538, 0.961538]);
        // 0.5 / 0.5008 ≈ 0.998: SSVD is at C already; only the lower neighbour cuts enough.
        assert_eq!(ccp_candidates(0.5, 0.5008, 0.05), vec![0.948403]);
        // No neighbours asked: one value.
        assert_eq!(ccp_candidates(0.5, 0.8, 0.0), vec![0.625]);
        // SSVD already went below C: CP has nothing left to cut.
        assert!(ccp_candidates(0.5, 0.45, 0.05).is_empty());
        assert_eq!(ccp_candidates(0.5, 0.0, 0.05), Vec::<f64>::new());
    }

    #[test]
    fn preselection_leaves_room_for_cp() {
        assert_eq!(preselect_limit(2.0), 1.0);
        assert_eq!(preselect_limit(8.0), 3.0);
        assert_eq!(preselect_limit(5.0), 2.5);
        assert!(preselected(0.9, 2.0));
        assert!(preselected(1.0, 2.0));
        assert!(!preselected(1.1, 2.0));
        assert!(preselected(-0.5, 2.0), "a gain is within any limit");
        assert!(!preselected(3.5, 8.0));
    }

    #[test]
    fn advice_only_when_all_candidates_miss_by_far() {
        let high = advise(&[(0.5, 9.0), (0.65, 5.0), (0.75, 4.5)], 2.0);
        assert_eq!(high, Some(Advice::Higher(vec![0.6, 0.85])));
        assert!(high.unwrap().text(2.0).contains("--cssvd 0.6,0.85"));
        let low = advise(&[(0.5, 0.1), (0.65, 0.0), (0.75, 0.4)], 2.0);
        assert_eq!(low, Some(Advice::Lower(vec![0.4, 0.55])));
        assert_eq!(advise(&[(0.5, 5.0), (0.65, 1.0)], 2.0), None);
        assert_eq!(advise(&[], 2.0), None);
        // Already at the cap: nothing new to propose.
        assert_eq!(advise(&[(0.95, 9.0)], 2.0), None);
    }

    #[test]
    fn stopping_without_a_preselected_candidate_always_says_what_to_try() {
        // Between X/2 and 2X: no advice of its own, but higher values to try.
        let text = stop_advice(&[(0.5, 3.0), (0.65, 1.5)], 2.0);
        assert!(text.contains("1 points or less"), "{text}");
        assert!(text.ends_with("--cssvd 0.6,0.75"), "{text}");
        let far = stop_advice(&[(0.5, 9.0)], 2.0);
        assert!(far.contains("twice the tolerable"), "{far}");
        assert!(!stop_advice(&[(0.95, 3.0)], 2.0).contains("--cssvd"));
    }

    fn cp(variant: u32, overall: f64, drop: f64) -> SweepRow {
        let mut r = row(variant, 1, Method::ChannelPruning, 0.7);
        r.overall_mac_ratio = overall;
        r.drop_points = drop;
        r
    }

    #[test]
    fn pick_takes_the_least_drop_within_the_target() {
        let rows = [cp(4, 0.47, 1.5), cp(5, 0.505, 0.8), cp(6, 0.55, 0.1)];
        let p = pick(&rows, 0.5).unwrap();
        assert_eq!(p.variant, 5);
        assert!(p.reason.contains("2 candidate"), "{}", p.reason);
    }

    #[test]
    fn pick_falls_back_to_the_smallest_ratio_and_says_so() {
        let rows = [cp(4, 0.56, 1.5), cp(5, 0.53, 3.0), cp(6, 0.6, 0.1)];
        let p = pick(&rows, 0.5).unwrap();
        assert_eq!(p.variant, 5);
        assert!(p.reason.starts_with("no candidate reaches"), "{}", p.reason);
        assert_eq!(pick(&[], 0.5), None);
    }
}
