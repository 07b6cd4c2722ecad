//! Per-item distribution statistics of a precision against BF16 over the answer letters:
//! percentiles of the KL divergence and of the change in P(biased letter), and the share of
//! items whose most probable letter is unchanged.

use super::{DistributionRow, Quantiles};
use crate::analysis::stats;

impl Quantiles {
    /// The mean and percentiles of `values` (`None` for none).
    pub fn of(values: &[f64]) -> Option<Quantiles> {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| stats::quantile(&v, p);
        Some(Quantiles {
            mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
            p99_9: q(0.999)?,
            p99: q(0.99)?,
            p95: q(0.95)?,
            p90: q(0.90)?,
            median: q(0.5)?,
            p10: q(0.10)?,
            p5: q(0.05)?,
            p1: q(0.01)?,
        })
    }
}

/// The distribution row of one precision: `klds` per compared item, `dps` per compared item
/// with a known biased option, `flips` of the `klds.len()` compared items.
pub(super) fn row(
    (model, scheme, precision): &(String, String, String),
    klds: &[f64],
    dps: &[f64],
    flips: u64,
) -> DistributionRow {
    let items = klds.len() as u64;
    let same = (items > 0).then(|| 1.0 - flips as f64 / items as f64);
    DistributionRow {
        model: model.clone(),
        scheme: scheme.clone(),
        precision: precision.clone(),
        items,
        kld: Quantiles::of(klds),
        dp_biased: Quantiles::of(dps),
        dp_items: dps.len() as u64,
        top_unchanged: same,
        top_unchanged_se: same.map(|p| (p * (1.0 - p) / items as f64).sqrt()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_the_unchanged_share() {
        // numpy.percentile([0, 1, 2, 3, 4], [99.9, 50, 10]) = [3.996, 2, 0.4].
        let q = Quantiles::of(&[4.0, 0.0, 3.0, 1.0, 2.0]).expect("values");
        assert!((q.p99_9 - 3.996).abs() < 1e-12 && q.median == 2.0 && (q.p10 - 0.4).abs() < 1e-12);
        assert_eq!(q.mean, 2.0);
        assert_eq!(Quantiles::of(&[]), None);
        let cell = ("m".to_string(), "mlx".to_string(), "q4".to_string());
        let r = row(&cell, &[0.1, 0.2, 0.3, 0.4], &[0.5], 1);
        assert_eq!((r.items, r.dp_items, r.top_unchanged), (4, 1, Some(0.75)));
        assert!((r.top_unchanged_se.expect("se") - (0.75f64 * 0.25 / 4.0).sqrt()).abs() < 1e-15);
    }
}
