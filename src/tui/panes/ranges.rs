//! Per-channel weight ranges as one-line charts: the layers pane's detail and the compare
//! pane's A │ B view (CLE before and after) draw them the same way.

const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One block per value (the first `width`), scaled to the widest of all `ranges`.
pub fn spark(ranges: &[f32], width: usize) -> String {
    let widest = ranges.iter().cloned().fold(0f32, f32::max);
    ranges
        .iter()
        .take(width)
        .map(|r| {
            let k = if widest > 0.0 {
                (r / widest * 7.0).round() as usize
            } else {
                0
            };
            LEVELS[k.min(7)]
        })
        .collect()
}

/// At most `width` values: the widest channel of each run of neighbours, so a channel
/// that stands out still shows when there are more channels than columns.
pub fn squeeze(ranges: &[f32], width: usize) -> Vec<f32> {
    if width == 0 || ranges.len() <= width {
        return ranges.to_vec();
    }
    (0..width)
        .map(|i| {
            let (from, to) = (i * ranges.len() / width, (i + 1) * ranges.len() / width);
            ranges[from..to.max(from + 1)]
                .iter()
                .cloned()
                .fold(0f32, f32::max)
        })
        .collect()
}

/// Widest channel range over the median one (0 when the median is 0).
pub fn max_median_ratio(ranges: &[f32]) -> f64 {
    let widest = ranges.iter().cloned().fold(0f32, f32::max);
    let mut sorted = ranges.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    if median > 0.0 {
        (widest / median) as f64
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeezing_keeps_the_widest_channel_of_each_run() {
        assert_eq!(
            squeeze(&[1.0, 5.0, 2.0, 2.0, 3.0, 1.0], 3),
            vec![5.0, 2.0, 3.0]
        );
        assert_eq!(squeeze(&[1.0, 2.0], 5), vec![1.0, 2.0]);
        assert_eq!(spark(&[0.0, 1.0, 2.0], 2), "▁▅");
        assert_eq!(max_median_ratio(&[1.0, 2.0, 8.0]), 4.0);
        assert_eq!(max_median_ratio(&[]), 0.0);
    }
}
