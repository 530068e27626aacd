//! The variants as points for the scatter view (`p`): score against a cost (MAC ratio,
//! size or measured latency), the Pareto front among them, and which points are marked
//! (current, A, B, the sweep decision's candidates). Read from the workspace's variant
//! records only, so the view needs no job result.

use super::state::{App, Popup};
use super::sweep_decision::score_pct;
use qsteer::experiment::Variant;

/// The cost on the scatter's x axis (Tab cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// MACs relative to the base variant.
    Macs,
    /// The model file's size (the integer model's for a quantized variant).
    Size,
    /// The last measured median latency; variants never measured are left out.
    Latency,
}

impl XAxis {
    pub fn next(self) -> XAxis {
        match self {
            XAxis::Macs => XAxis::Size,
            XAxis::Size => XAxis::Latency,
            XAxis::Latency => XAxis::Macs,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            XAxis::Macs => "MAC ratio",
            XAxis::Size => "size kB",
            XAxis::Latency => "latency ms",
        }
    }

    /// The variant's cost on this axis, when known.
    pub fn value(self, v: &Variant, base_macs: Option<u64>) -> Option<f64> {
        match self {
            XAxis::Macs => match (v.macs, base_macs) {
                (Some(m), Some(b)) if b > 0 => Some(m as f64 / b as f64),
                _ => None,
            },
            XAxis::Size => (v.size_bytes > 0).then(|| v.size_bytes as f64 / 1000.0),
            XAxis::Latency => v.latency.as_ref().map(|l| l.median_ms),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub id: u32,
    pub x: f64,
    /// The latest score, in points of the metric (percent; dB for SQNR).
    pub y: f64,
}

/// What the scatter view shows for one axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    pub axis: XAxis,
    /// The metric every point is scored by (the base's, else the most common).
    pub metric: String,
    pub points: Vec<Point>,
    /// Ids of the points on the Pareto front (lower cost, higher score), by cost.
    pub front: Vec<u32>,
    /// Variants without a score by `metric` (not evaluated, or by another metric).
    pub unscored: Vec<u32>,
    /// Scored variants without a value on this axis (latency never measured).
    pub unmeasured: Vec<u32>,
    /// The candidates of the sweep decision open or pending.
    pub candidates: Vec<u32>,
}

impl Plot {
    pub fn of(app: &App, axis: XAxis) -> Plot {
        let base_macs = app.variant(0).and_then(|v| v.macs);
        let metric = common_metric(&app.variants).unwrap_or_default();
        let mut points = Vec::new();
        let mut unscored = Vec::new();
        let mut unmeasured = Vec::new();
        for v in &app.variants {
            let score = v.results.last().map(|r| &r.score);
            let y = score
                .filter(|s| s.metric_name() == Some(metric.as_str()))
                .and_then(score_pct);
            match (y, axis.value(v, base_macs)) {
                (None, _) => unscored.push(v.id),
                (Some(_), None) => unmeasured.push(v.id),
                (Some(y), Some(x)) => points.push(Point { id: v.id, x, y }),
            }
        }
        let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.x, p.y)).collect();
        let front = pareto_front(&xy)
            .into_iter()
            .map(|i| points[i].id)
            .collect();
        Plot {
            axis,
            metric,
            points,
            front,
            unscored,
            unmeasured,
            candidates: sweep_candidates(app),
        }
    }

    pub fn point(&self, id: u32) -> Option<&Point> {
        self.points.iter().find(|p| p.id == id)
    }
}

/// The metric of the base's latest score, or else the one most variants' latest scores use.
fn common_metric(variants: &[Variant]) -> Option<String> {
    let latest = |v: &Variant| {
        let r = v.results.last()?;
        r.score.metric_name().map(str::to_string)
    };
    if let Some(m) = variants.iter().find(|v| v.id == 0).and_then(latest) {
        return Some(m);
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for m in variants.iter().filter_map(latest) {
        match counts.iter_mut().find(|(n, _)| *n == m) {
            Some((_, c)) => *c += 1,
            None => counts.push((m, 1)),
        }
    }
    counts.into_iter().max_by_key(|(_, c)| *c).map(|(m, _)| m)
}

/// The rows of the sweep decision on screen (under the scatter), else of the pending one.
fn sweep_candidates(app: &App) -> Vec<u32> {
    let open = app.popups.iter().rev().find_map(|p| match p {
        Popup::SweepDecision(d) => Some(d.as_ref()),
        _ => None,
    });
    match open.or(app.pending_decision.as_ref()) {
        Some(d) => d.rows().iter().map(|r| r.variant).collect(),
        None => vec![],
    }
}

/// Indices of the points no other point beats on both cost (`x`, lower is better) and
/// score (`y`, higher is better), ordered by cost. Of equal points the first is kept.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    // By cost, then best score first, so a sweep keeps the best of each cost.
    order.sort_by(|&a, &b| {
        let (pa, pb) = (points[a], points[b]);
        pa.0.total_cmp(&pb.0).then(pb.1.total_cmp(&pa.1))
    });
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for i in order {
        if points[i].1 > best {
            best = points[i].1;
            front.push(i);
        }
    }
    front
}

#[cfg(test)]
mod tests {
    use super::pareto_front;

    #[test]
    fn the_front_keeps_what_nothing_beats_on_both_axes() {
        // (cost, score): 1 is beaten by 0 (cheaper and better), 3 ties 2 on cost and
        // loses on score, 4 is the cheapest.
        let pts = [
            (0.5, 97.0),
            (0.6, 96.0),
            (1.0, 99.0),
            (1.0, 98.0),
            (0.3, 90.0),
        ];
        assert_eq!(pareto_front(&pts), [4, 0, 2]);
        assert!(pareto_front(&[]).is_empty());
        // Equal points: one on the front.
        assert_eq!(pareto_front(&[(1.0, 1.0), (1.0, 1.0)]).len(), 1);
    }
}
