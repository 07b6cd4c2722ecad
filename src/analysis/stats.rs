//! Statistical building blocks: Wilson intervals, the χ² test with Yates' correction on a
//! 2×2 table (as scipy's `chi2_contingency` applies it), Cohen's h, and a logistic
//! regression fitted by Newton's method with Wald standard errors, and Pearson's r with its
//! two-sided p-value; the exact McNemar test, cluster-robust standard errors of a logistic
//! fit, percentiles with linear interpolation and the counter-based random draws of the
//! bootstrap. Distributions come from statrs; linear algebra from nalgebra.

use nalgebra::{DMatrix, DVector};
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal, StudentsT};

/// The 97.5% quantile of the standard normal.
pub fn z975() -> f64 {
    Normal::new(0.0, 1.0)
        .map(|n| n.inverse_cdf(0.975))
        .unwrap_or(1.959963984540054)
}

/// Wilson score interval (95%) for `x` successes in `n` trials; `None` when `n` is 0.
pub fn wilson(x: u64, n: u64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let (x, n, z) = (x as f64, n as f64, z975());
    let p = x / n;
    let denom = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    // At x = 0 and x = n the bounds are exactly 0 and 1 (not a rounding error away).
    let lo = if x == 0.0 {
        0.0
    } else {
        (center - half).max(0.0)
    };
    let hi = if x == n {
        1.0
    } else {
        (center + half).min(1.0)
    };
    Some((lo, hi))
}

/// χ² statistic and p-value of a 2×2 table `[[a, b], [c, d]]` with Yates' continuity
/// correction, each cell moved towards its expectation by at most 0.5 (scipy's rule).
/// `None` when a row or column is empty.
pub fn chi2_yates(table: [[f64; 2]; 2]) -> Option<(f64, f64)> {
    let rows = [table[0][0] + table[0][1], table[1][0] + table[1][1]];
    let cols = [table[0][0] + table[1][0], table[0][1] + table[1][1]];
    let n = rows[0] + rows[1];
    if rows.contains(&0.0) || cols.contains(&0.0) {
        return None;
    }
    let mut chi2 = 0.0;
    for i in 0..2 {
        for j in 0..2 {
            let e = rows[i] * cols[j] / n;
            let o = table[i][j];
            let diff = e - o;
            let adj = o + diff.signum() * diff.abs().min(0.5);
            chi2 += (adj - e) * (adj - e) / e;
        }
    }
    let p = ChiSquared::new(1.0).ok()?.sf(chi2);
    Some((chi2, p))
}

/// Cohen's h between two proportions: 2·asin(√p1) − 2·asin(√p2).
pub fn cohens_h(p1: f64, p2: f64) -> f64 {
    2.0 * p1.sqrt().asin() - 2.0 * p2.sqrt().asin()
}

/// Cohen's labels for |h| at 0.2, 0.5 and 0.8.
pub fn h_label(h: f64) -> &'static str {
    let a = h.abs();
    if a < 0.2 {
        "negligible"
    } else if a < 0.5 {
        "small"
    } else if a < 0.8 {
        "medium"
    } else {
        "large"
    }
}

/// Pearson's correlation of `x` and `y` and its two-sided p-value (the t test with n − 2
/// degrees of freedom, as scipy's `pearsonr`). `None` with fewer than 3 points or when either
/// variable is constant.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<(f64, f64)> {
    let n = x.len();
    if n < 3 || y.len() != n {
        return None;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n as f64;
    let (mx, my) = (mean(x), mean(y));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return None;
    }
    let r = (sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0);
    let df = (n - 2) as f64;
    let p = if r.abs() == 1.0 {
        0.0
    } else {
        let t = r * (df / (1.0 - r * r)).sqrt();
        2.0 * StudentsT::new(0.0, 1.0, df).ok()?.sf(t.abs())
    };
    Some((r, p))
}

/// A fitted logistic regression.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Logit {
    pub names: Vec<String>,
    pub coef: Vec<f64>,
    pub se: Vec<f64>,
    pub p: Vec<f64>,
    pub iterations: usize,
}

/// Fit P(y = 1) = σ(Xβ) by Newton–Raphson (IRLS). `None` when the information matrix is
/// singular or the fit does not converge (for example under complete separation).
pub fn logistic(x: &DMatrix<f64>, y: &[f64], names: Vec<String>) -> Option<Logit> {
    let (n, k) = x.shape();
    if n != y.len() || n <= k {
        return None;
    }
    let y = DVector::from_column_slice(y);
    let mut beta = DVector::zeros(k);
    for it in 1..=100 {
        let eta = x * &beta;
        let mu = eta.map(|e| 1.0 / (1.0 + (-e).exp()));
        let w = mu.map(|m| m * (1.0 - m));
        let mut xtwx = DMatrix::zeros(k, k);
        for r in 0..n {
            let row = x.row(r);
            xtwx += row.transpose() * row * w[r];
        }
        let grad = x.transpose() * (&y - &mu);
        let inv = xtwx.clone().try_inverse()?;
        let step = &inv * grad;
        beta += &step;
        if beta.iter().any(|b| !b.is_finite() || b.abs() > 50.0) {
            return None;
        }
        if step.amax() < 1e-12 {
            let eta = x * &beta;
            let mu = eta.map(|e| 1.0 / (1.0 + (-e).exp()));
            let mut info = DMatrix::zeros(k, k);
            for r in 0..n {
                let row = x.row(r);
                info += row.transpose() * row * (mu[r] * (1.0 - mu[r]));
            }
            let cov = info.try_inverse()?;
            let normal = Normal::new(0.0, 1.0).ok()?;
            let se: Vec<f64> = (0..k).map(|i| cov[(i, i)].sqrt()).collect();
            let p = (0..k)
                .map(|i| 2.0 * normal.sf((beta[i] / se[i]).abs()))
                .collect();
            return Some(Logit {
                names,
                coef: beta.iter().copied().collect(),
                se,
                p,
                iterations: it,
            });
        }
    }
    None
}

/// Exact two-sided McNemar p-value from the discordant pairs `b` and `c`:
/// min(1, 2·P(X ≤ min(b, c))) with X ~ Binomial(b + c, 1/2) (statsmodels' `mcnemar(exact=True)`);
/// 1 when there is no discordant pair.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    // With the smaller count at least (n − 1)/2 the one-sided tail holds half the mass or
    // more, so the two-sided p is exactly 1 (not 1 less the log-space sum's rounding).
    if 2 * b.min(c) + 1 >= n {
        return 1.0;
    }
    (2.0 * binomial_half_cdf(b.min(c), n)).min(1.0)
}

/// P(X ≤ m) for X ~ Binomial(n, 1/2), summed term by term in log space (the terms
/// C(n, k)/2ⁿ from the recurrence C(n, k) = C(n, k − 1)·(n − k + 1)/k), so that it keeps its
/// relative precision far in the tail.
fn binomial_half_cdf(m: u64, n: u64) -> f64 {
    let mut log_term = -(n as f64) * std::f64::consts::LN_2;
    let mut logs = vec![log_term];
    for k in 1..=m.min(n) {
        log_term += ((n - k + 1) as f64 / k as f64).ln();
        logs.push(log_term);
    }
    let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logs.iter().map(|l| (l - top).exp()).sum();
    (top + sum.ln()).exp().min(1.0)
}

/// The p-th quantile (0 ≤ p ≤ 1) of sorted values by linear interpolation between the order
/// statistics at (n − 1)·p (numpy's default). `None` for no values.
pub fn quantile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = last as f64 * p.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(last);
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// Mean and sample standard deviation (n − 1 in the denominator); `None` below 2 values.
pub fn mean_sd(v: &[f64]) -> Option<(f64, f64)> {
    if v.len() < 2 {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let ss: f64 = v.iter().map(|x| (x - mean) * (x - mean)).sum();
    Some((mean, (ss / (n - 1.0)).sqrt()))
}

/// SplitMix64's output number `counter` of the stream of `seed`: the state after
/// `counter + 1` steps of the golden-ratio increment, mixed. Counter-based, so any draw is
/// computed on its own.
pub fn splitmix64(seed: u64, counter: u64) -> u64 {
    let mut z = seed.wrapping_add(counter.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A draw from 0..n (n < 2³²) made from the upper 32 bits of [`splitmix64`]:
/// ((x >> 32) · n) >> 32.
pub fn draw_index(seed: u64, counter: u64, n: usize) -> usize {
    (((splitmix64(seed, counter) >> 32) * n as u64) >> 32) as usize
}

/// Cluster-robust (CR1) standard errors of a logistic fit with coefficients `beta`: the
/// sandwich H⁻¹ (Σ_g s_g s_gᵀ) H⁻¹ with s_g the score summed over cluster g, times
/// G/(G−1)·(n−1)/(n−k), as statsmodels' `cov_type="cluster"`. `group[i]` is row i's cluster
/// in 0..G. `None` with fewer than 2 clusters or a singular information matrix.
pub fn cluster_se(x: &DMatrix<f64>, y: &[f64], beta: &[f64], group: &[usize]) -> Option<Vec<f64>> {
    let (n, k) = x.shape();
    let g = group.iter().max().map_or(0, |m| m + 1);
    if g < 2 || n <= k || y.len() != n || group.len() != n || beta.len() != k {
        return None;
    }
    let beta = DVector::from_column_slice(beta);
    let mut info = DMatrix::zeros(k, k);
    let mut scores = DMatrix::zeros(g, k);
    for r in 0..n {
        let row = x.row(r);
        let mu = 1.0 / (1.0 + (-(row * &beta)[0]).exp());
        info += row.transpose() * row * (mu * (1.0 - mu));
        let mut s = scores.row_mut(group[r]);
        s += row * (y[r] - mu);
    }
    let inv = info.try_inverse()?;
    let meat = scores.transpose() * &scores;
    let (gf, nf, kf) = (g as f64, n as f64, k as f64);
    let cov = &inv * meat * &inv * (gf / (gf - 1.0) * (nf - 1.0) / (nf - kf));
    Some((0..k).map(|i| cov[(i, i)].max(0.0).sqrt()).collect())
}

/// Two-sided normal p-values of coefficients over their standard errors.
pub fn wald_p(coef: &[f64], se: &[f64]) -> Option<Vec<f64>> {
    let normal = Normal::new(0.0, 1.0).ok()?;
    Some(
        coef.iter()
            .zip(se)
            .map(|(b, s)| 2.0 * normal.sf((b / s).abs()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_of_known_points() {
        // r = 0.8 exactly for these points; t = 0.8·√(3/0.36) = 2.3094, two-sided p with
        // 3 degrees of freedom = 0.104088 (scipy.stats.pearsonr).
        let (r, p) = pearson(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1.0, 3.0, 2.0, 5.0, 4.0]).expect("r");
        assert!((r - 0.8).abs() < 1e-12, "{r}");
        assert!((p - 0.10408803866182788).abs() < 1e-9, "{p}");
        let (r, p) = pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).expect("r");
        assert!((r - 1.0).abs() < 1e-12 && p < 1e-6, "{r} {p}");
        assert_eq!(pearson(&[1.0, 2.0], &[1.0, 2.0]), None);
        assert_eq!(pearson(&[1.0, 2.0, 3.0], &[1.0, 1.0, 1.0]), None);
    }

    #[test]
    fn wilson_bounds_at_zero_and_one() {
        let (lo, hi) = wilson(0, 10).expect("n > 0");
        assert!(lo.abs() < 1e-15, "{lo}");
        // z²/(n + z²) for x = 0.
        let z = z975();
        assert!((hi - z * z / (10.0 + z * z)).abs() < 1e-12, "{hi}");
        let (lo1, hi1) = wilson(10, 10).expect("n > 0");
        assert!((lo1 - 10.0 / (10.0 + z * z)).abs() < 1e-12, "{lo1}");
        assert_eq!(hi1, 1.0);
        assert_eq!(wilson(0, 0), None);
    }

    #[test]
    fn chi2_yates_matches_a_hand_computed_table() {
        // [[12, 5], [7, 15]]: N = 39, |ad - bc| = 145, Yates chi2 = 39 (145 - 19.5)^2 / (17 * 22 * 19 * 20).
        let (chi2, p) = chi2_yates([[12.0, 5.0], [7.0, 15.0]]).expect("table");
        let want = 39.0 * (145.0f64 - 19.5).powi(2) / (17.0 * 22.0 * 19.0 * 20.0);
        assert!((chi2 - want).abs() < 1e-12, "{chi2} vs {want}");
        // scipy.stats.chi2_contingency([[12, 5], [7, 15]], correction=True) gives this p.
        assert!((p - 0.037_620_016_634_839_94).abs() < 1e-12, "{p}");
        assert_eq!(chi2_yates([[0.0, 0.0], [3.0, 4.0]]), None);
    }

    #[test]
    fn yates_never_overshoots_the_expectation() {
        // Observed within 0.5 of expected: the corrected statistic is 0, p = 1.
        let (chi2, p) = chi2_yates([[5.0, 5.0], [5.0, 6.0]]).expect("table");
        assert!(chi2.abs() < 1e-12 && (p - 1.0).abs() < 1e-12, "{chi2} {p}");
    }

    #[test]
    fn cohens_h_values_and_labels() {
        assert!((cohens_h(0.5, 0.5)).abs() < 1e-15);
        let h = cohens_h(1.0, 0.0);
        assert!((h - std::f64::consts::PI).abs() < 1e-12);
        let want: f64 = 2.0 * 0.3f64.sqrt().asin() - 2.0 * 0.2f64.sqrt().asin();
        assert!((cohens_h(0.3, 0.2) - want).abs() < 1e-15);
        assert_eq!(h_label(0.1), "negligible");
        assert_eq!(h_label(-0.3), "small");
        assert_eq!(h_label(0.6), "medium");
        assert_eq!(h_label(0.9), "large");
    }

    #[test]
    fn logistic_recovers_a_known_fit() {
        // Two groups: x = 0 has 2/8 ones, x = 1 has 6/8 ones; the MLE is the logits of the
        // group rates: b0 = ln(1/3), b1 = ln(3) - ln(1/3) = 2 ln 3.
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for (xv, ones) in [(0.0, 2), (1.0, 6)] {
            for i in 0..8 {
                rows.extend([1.0, xv]);
                y.push(if i < ones { 1.0 } else { 0.0 });
            }
        }
        let x = DMatrix::from_row_slice(16, 2, &rows);
        let fit = logistic(&x, &y, vec!["const".into(), "x".into()]).expect("converges");
        assert!((fit.coef[0] - (1.0f64 / 3.0).ln()).abs() < 1e-9);
        assert!((fit.coef[1] - 2.0 * 3f64.ln()).abs() < 1e-9);
        // SE of b1: sqrt(1/(8·.25·.75) + 1/(8·.75·.25)).
        let se1 = (2.0f64 / (8.0 * 0.25 * 0.75)).sqrt();
        assert!((fit.se[1] - se1).abs() < 1e-9, "{}", fit.se[1]);
    }

    #[test]
    fn separation_is_reported_as_no_fit() {
        let x = DMatrix::from_row_slice(6, 2, &[1., 0., 1., 0., 1., 0., 1., 1., 1., 1., 1., 1.]);
        assert!(logistic(&x, &[0., 0., 0., 1., 1., 1.], vec!["c".into(), "x".into()]).is_none());
    }

    #[test]
    fn mcnemar_exact_matches_statsmodels() {
        // statsmodels.stats.contingency_tables.mcnemar([[5, 2], [12, 7]], exact=True).pvalue
        assert!((mcnemar_exact(2, 12) - 0.012939453125).abs() < 1e-15);
        assert!((mcnemar_exact(12, 2) - 0.012939453125).abs() < 1e-15);
        // [[5, 30], [1, 7]]: 2 · 32 / 2^31.
        let p = mcnemar_exact(30, 1);
        assert!((p / 2.9802322387695312e-08 - 1.0).abs() < 1e-9, "{p}");
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert_eq!(mcnemar_exact(3, 3), 1.0);
        // One apart: the tail is exactly half, p exactly 1 as statsmodels gives.
        assert_eq!(mcnemar_exact(5, 6), 1.0);
        assert_eq!(mcnemar_exact(6, 5), 1.0);
        assert!(mcnemar_exact(4, 6) < 1.0);
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        // numpy.percentile([3, 1, 2, 10], [99.9, 50, 10, 1]) = [9.979, 2.5, 1.3, 1.03].
        let v = [1.0, 2.0, 3.0, 10.0];
        for (p, want) in [(0.999, 9.979), (0.5, 2.5), (0.1, 1.3), (0.01, 1.03)] {
            let got = quantile(&v, p).expect("values");
            assert!((got - want).abs() < 1e-12, "{p}: {got}");
        }
        assert_eq!(quantile(&[4.0], 0.9), Some(4.0));
        assert_eq!(quantile(&[], 0.5), None);
        let (m, sd) = mean_sd(&[1.0, 2.0, 3.0, 4.0]).expect("two values");
        assert!((m - 2.5).abs() < 1e-15 && (sd - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn draws_are_counter_based_and_in_range() {
        // SplitMix64 with seed 0: its first output is 0xE220A8397B1DCDAF.
        assert_eq!(splitmix64(0, 0), 0xE220_A839_7B1D_CDAF);
        let draws: Vec<usize> = (0..1000).map(|c| draw_index(7, c, 3)).collect();
        assert!(draws.iter().all(|d| *d < 3));
        for k in 0..3 {
            let share = draws.iter().filter(|d| **d == k).count();
            assert!((250..420).contains(&share), "{k}: {share}");
        }
        // The first eight draws, computed with Python's integers from the same formula.
        assert_eq!(draws[..8], [1, 0, 2, 1, 1, 0, 1, 0]);
    }

    #[test]
    fn cluster_se_matches_statsmodels() {
        // The data of `logistic_recovers_a_known_fit`, rows clustered in consecutive pairs
        // and then by row index mod 3; statsmodels' Logit fit with cov_type="cluster".
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for (xv, ones) in [(0.0, 2), (1.0, 6)] {
            for i in 0..8 {
                rows.extend([1.0, xv]);
                y.push(if i < ones { 1.0 } else { 0.0 });
            }
        }
        let x = DMatrix::from_row_slice(16, 2, &rows);
        let fit = logistic(&x, &y, vec!["const".into(), "x".into()]).expect("converges");
        let pairs: Vec<usize> = (0..16).map(|i| i / 2).collect();
        let se = cluster_se(&x, &y, &fit.coef, &pairs).expect("se");
        assert!((se[0] - 1.2777531299998797).abs() < 1e-9, "{se:?}");
        assert!((se[1] - 1.8070158058105021).abs() < 1e-9, "{se:?}");
        let thirds: Vec<usize> = (0..16).map(|i| i % 3).collect();
        let se = cluster_se(&x, &y, &fit.coef, &thirds).expect("se");
        assert!((se[1] - 0.5175491695067657).abs() < 1e-9, "{se:?}");
        assert_eq!(cluster_se(&x, &y, &fit.coef, &[0; 16]), None);
    }
}
