//! The rank a target ratio buys. Both SVD methods split a layer into two whose MACs and
//! parameters grow linearly with the rank r, so one [`SplitCost`] describes every rank.

/// Cost of a layer split at rank r: `r × per_rank` (+ the kept bias for params).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitCost {
    /// MACs per sample of both split layers, per unit of rank.
    pub macs_per_rank: u64,
    /// Weight values of both split layers, per unit of rank.
    pub params_per_rank: u64,
    /// The bias the second layer keeps.
    pub bias_params: u64,
    /// The rank that reproduces the layer exactly: the smaller side of the factored matrix.
    pub full_rank: usize,
}

impl SplitCost {
    pub fn macs(&self, rank: usize) -> u64 {
        self.macs_per_rank.saturating_mul(rank as u64)
    }

    pub fn params(&self, rank: usize) -> u64 {
        self.params_per_rank
            .saturating_mul(rank as u64)
            .saturating_add(self.bias_params)
    }

    /// The largest rank r ≥ 1 whose split costs at most `ratio × original_macs`, capped at
    /// full rank. Rank 1 is the floor even when it costs more than asked.
    pub fn rank_for_ratio(&self, original_macs: u64, ratio: f64) -> usize {
        let budget = ratio * original_macs as f64;
        let per = self.macs_per_rank.max(1) as f64;
        let mut r = (budget / per)
            .floor()
            .clamp(1.0, self.full_rank.max(1) as f64) as usize;
        // The float division may land one above the exact integer answer.
        while r > 1 && self.macs(r) as f64 > budget {
            r -= 1;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3×3 conv 64→128 on 8×8 outputs, weight SVD: r·(64·9 + 128) MACs per position.
    fn conv() -> (SplitCost, u64) {
        let positions = 64u64;
        let cost = SplitCost {
            macs_per_rank: positions * (64 * 9 + 128),
            params_per_rank: 64 * 9 + 128,
            bias_params: 128,
            full_rank: 128,
        };
        (cost, positions * 128 * 64 * 9)
    }

    #[test]
    fn largest_rank_within_the_budget() {
        let (cost, macs) = conv();
        for ratio in [0.05, 0.25, 0.5, 0.75, 0.99] {
            let r = cost.rank_for_ratio(macs, ratio);
            assert!(cost.macs(r) as f64 <= ratio * macs as f64, "ratio {ratio}");
            assert!(
                cost.macs(r + 1) as f64 > ratio * macs as f64,
                "ratio {ratio}"
            );
        }
        // 0.5 × 128·576 / 704 = 52.36
        assert_eq!(cost.rank_for_ratio(macs, 0.5), 52);
        assert_eq!(cost.params(52), 52 * 704 + 128);
    }

    #[test]
    fn floor_at_one_and_cap_at_full_rank() {
        let (cost, macs) = conv();
        assert_eq!(cost.rank_for_ratio(macs, 1e-6), 1);
        assert_eq!(cost.rank_for_ratio(macs, 10.0), 128);
    }
}
