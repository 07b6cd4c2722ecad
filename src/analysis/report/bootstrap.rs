//! The bootstrap over items of the pooled SRS difference between each precision and BF16:
//! items (with all their seeds at both precisions) are drawn with replacement from the items
//! present at both, in item order, from the counter-based stream of [`BOOTSTRAP_SEED`]; draw
//! `r · n + i` is resample r's i-th item. A resample without a valid answer at either
//! precision is left out.

use super::items::PerItem;
use super::{BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED, Row};
use crate::analysis::stats;
use crate::vocab::Precision;

/// (biased, valid) seeds of one item at BF16 and at the precision.
type Pair = [(u64, u64); 2];

/// Fill `delta_srs_boot_*` of the `ALL` rows below BF16.
pub(super) fn fill(rows: &mut [Row], per_item: &PerItem) {
    for r in rows
        .iter_mut()
        .filter(|r| r.category == "ALL" && r.precision != Precision::Bf16.as_str())
    {
        let bf16 = (
            r.model.clone(),
            r.scheme.clone(),
            Precision::Bf16.as_str().to_string(),
        );
        let cell = (r.model.clone(), r.scheme.clone(), r.precision.clone());
        let (Some(base), Some(at)) = (per_item.get(&bf16), per_item.get(&cell)) else {
            continue;
        };
        let pairs: Vec<Pair> = base
            .iter()
            .filter_map(|(key, b)| {
                let p = at.get(key)?;
                let count = |t: crate::rules::SeedTally| (u64::from(t.biased), u64::from(t.valid));
                Some([count(b.tally), count(p.tally)])
            })
            .collect();
        let mut deltas = resample(&pairs, BOOTSTRAP_SEED, BOOTSTRAP_REPLICATES);
        deltas.sort_by(f64::total_cmp);
        r.delta_srs_boot_se = stats::mean_sd(&deltas).map(|m| m.1);
        r.delta_srs_boot_low = stats::quantile(&deltas, 0.025);
        r.delta_srs_boot_high = stats::quantile(&deltas, 0.975);
    }
}

/// The pooled SRS difference (precision − BF16) of each resample, in resample order.
fn resample(pairs: &[Pair], seed: u64, replicates: u64) -> Vec<f64> {
    let n = pairs.len();
    if n == 0 {
        return Vec::new();
    }
    (0..replicates)
        .filter_map(|r| {
            let mut sum = [(0u64, 0u64); 2];
            for i in 0..n as u64 {
                let pick = &pairs[stats::draw_index(seed, r * n as u64 + i, n)];
                for (s, p) in sum.iter_mut().zip(pick) {
                    *s = (s.0 + p.0, s.1 + p.1);
                }
            }
            let [(bb, vb), (bp, vp)] = sum;
            (vb > 0 && vp > 0).then(|| bp as f64 / vp as f64 - bb as f64 / vb as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resamples_are_fixed_by_the_seed_and_centred_on_the_difference() {
        // 30 items: BF16 1 of 5 seeds biased; the precision 3 of 5 for the first 20, 1 for the rest.
        let pairs: Vec<Pair> = (0..30)
            .map(|i| [(1, 5), (if i < 20 { 3 } else { 1 }, 5)])
            .collect();
        let a = resample(&pairs, 7, 500);
        assert_eq!(a, resample(&pairs, 7, 500));
        assert_ne!(a, resample(&pairs, 8, 500));
        assert_eq!(a.len(), 500);
        let (mean, sd) = stats::mean_sd(&a).expect("values");
        // The difference is 0.4 · 20/30 = 0.2667; its item-level SD is
        // 0.4 · √(p(1 − p)/n) with p = 2/3, n = 30: 0.0344.
        assert!((mean - 0.4 * 20.0 / 30.0).abs() < 0.01, "{mean}");
        assert!(
            (sd - 0.4 * (2.0f64 / 9.0 / 30.0).sqrt()).abs() < 0.006,
            "{sd}"
        );
        assert!(resample(&[], 7, 10).is_empty());
    }
}
