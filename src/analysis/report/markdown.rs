//! The report as Markdown (laid out like the study's tables) and as a compact text table.

use super::{Correlation, DistributionRow, Quantiles, Report, TransitionRow, ratio};
use crate::analysis::orders::OrderRow;
use crate::analysis::stats;
use crate::store::perplexity::PplRow;
use std::collections::BTreeSet;

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", 100.0 * v))
        .unwrap_or_else(|| "-".into())
}

fn num(x: Option<f64>, digits: usize) -> String {
    x.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// The mean and percentile cells of a distribution row, from the mean down to the 1st
/// percentile.
fn quantile_cells(q: Option<&Quantiles>) -> String {
    match q {
        Some(q) => [
            q.mean, q.p99_9, q.p99, q.p95, q.p90, q.median, q.p10, q.p5, q.p1,
        ]
        .iter()
        .map(|v| format!("{v:.4}"))
        .collect::<Vec<_>>()
        .join(" | "),
        None => ["-"; 9].join(" | "),
    }
}

/// A rate with its interval, when it has one.
fn rate_ci(r: Option<f64>, lo: Option<f64>, hi: Option<f64>) -> String {
    match (r, lo, hi) {
        (Some(_), Some(_), Some(_)) => format!("{} [{}, {}]", pct(r), pct(lo), pct(hi)),
        _ => pct(r),
    }
}

/// A difference of rates in percentage points.
fn pp(x: Option<f64>) -> String {
    x.map(|d| format!("{:+.1} pp", 100.0 * d))
        .unwrap_or_else(|| "-".into())
}

/// A difference in percentage points with its interval, when it has one.
fn delta_with_ci(d: Option<f64>, lo: Option<f64>, hi: Option<f64>) -> String {
    match (d, lo, hi) {
        (Some(_), Some(lo), Some(hi)) => {
            format!("{} [{:+.1}, {:+.1}]", pp(d), 100.0 * lo, 100.0 * hi)
        }
        _ => pp(d),
    }
}

pub(super) fn pvalue(x: Option<f64>) -> String {
    match x {
        Some(p) if p < 1e-4 => format!("{p:.1e}"),
        Some(p) => format!("{p:.4}"),
        None => "-".into(),
    }
}

impl Report {
    /// The report as Markdown, laid out like the study's tables.
    pub fn markdown(&self) -> String {
        let mut s = String::from("# stereoscope report\n");
        let groups: BTreeSet<(String, String)> = self
            .rows
            .iter()
            .map(|r| (r.model.clone(), r.scheme.clone()))
            .collect();
        for (model, scheme) in &groups {
            let g = Group {
                report: self,
                model,
                scheme,
            };
            g.pooled_rates(&mut s);
            g.transitions(&mut s);
            g.directions(&mut s);
            g.distributions(&mut s);
            g.latent(&mut s);
            g.option_orders(&mut s);
            g.perplexity(&mut s);
            g.correlations(&mut s);
            g.category_rates(&mut s);
            g.regressions(&mut s);
        }
        s
    }

    /// A compact text table: pooled rows with their transitions. `SRS pooled` is over every
    /// answer, `SRS cat-mean` the unweighted mean of the category rates (the study's
    /// model-level SRS); transitions and their reverse are shares of items with the Wilson
    /// 95% interval, `McNemar p` the exact test of the two directions.
    pub fn table(&self) -> String {
        let line = |c: [&str; 15]| {
            format!(
                "{:<28} {:<6} {:<5} {:>7} {:>7} {:>10} {:>12} {:>7} {:>30} {:>30} {:>9} {:>9} {:>9} {:>9} {:>8}",
                c[0],
                c[1],
                c[2],
                c[3],
                c[4],
                c[5],
                c[6],
                c[7],
                c[8],
                c[9],
                c[10],
                c[11],
                c[12],
                c[13],
                c[14]
            )
        };
        let mut lines = vec![line([
            "model",
            "scheme",
            "prec",
            "records",
            "valid",
            "SRS pooled",
            "SRS cat-mean",
            "USR",
            "became biased [95% CI]",
            "reverse [95% CI]",
            "McNemar p",
            "expected",
            "floor",
            "continued",
            "Δppl",
        ])];
        for r in self.rows.iter().filter(|r| r.category == "ALL") {
            let t = self
                .transitions
                .iter()
                .find(|t| t.model == r.model && t.scheme == r.scheme && t.precision == r.precision);
            let (trans, reverse) = match t {
                Some(
                    t @ TransitionRow {
                        rate: Some(_),
                        became_biased: Some(b),
                        unbiased_at_bf16: Some(u),
                        ..
                    },
                ) => (
                    format!("{} {b}/{u}", rate_ci(t.rate, t.rate_ci_low, t.rate_ci_high)),
                    match (t.became_unbiased, t.biased_at_bf16) {
                        (Some(b), Some(u)) => format!(
                            "{} {b}/{u}",
                            rate_ci(t.reverse_rate, t.reverse_ci_low, t.reverse_ci_high)
                        ),
                        _ => "-".into(),
                    },
                ),
                Some(TransitionRow {
                    unbiased_at_bf16: None,
                    ..
                }) => ("no bf16".into(), "-".into()),
                _ => ("-".into(), "-".into()),
            };
            let dppl = self
                .perplexity
                .iter()
                .find(|p| p.model == r.model && p.scheme == r.scheme && p.precision == r.precision)
                .map(|p| match p.delta_ppl_pct {
                    Some(d) => format!("{d:+.1}%"),
                    None => format!("{:.2}", p.perplexity),
                })
                .unwrap_or_else(|| "-".into());
            lines.push(line([
                &r.model,
                &r.scheme,
                &r.precision,
                &r.n.to_string(),
                &pct(ratio(r.valid, r.n)),
                &pct(r.srs),
                &pct(r.srs_macro),
                &pct(r.usr),
                &trans,
                &reverse,
                &pvalue(t.and_then(|t| t.mcnemar_p)),
                &pct(t.and_then(|t| t.expected_rate)),
                &pct(t.and_then(|t| t.noise_floor)),
                &pct(t.and_then(|t| t.continued_share)),
                &dppl,
            ]));
        }
        lines.join("\n")
    }
}

/// One model and scheme's sections of the Markdown report.
struct Group<'a> {
    report: &'a Report,
    model: &'a str,
    scheme: &'a str,
}

impl Group<'_> {
    fn mine(&self, model: &str, scheme: &str) -> bool {
        model == self.model && scheme == self.scheme
    }

    fn pooled_rates(&self, s: &mut String) {
        s.push_str(&format!(
            "\n## {} ({})\n\n### Stereotype rate by precision, all categories\n\n",
            self.model, self.scheme
        ));
        s.push_str("| precision | records | valid | SRS pooled [95% CI] | SRS, mean of categories (study's) | Δ SRS pooled [bootstrap 95% CI] | Δ SRS, mean of categories (study's) | χ² p (Yates) | Cohen's h | USR | anti | s_AMB | s_DIS |\n");
        s.push_str("|---|---:|---:|---|---:|---|---:|---:|---|---:|---:|---:|---:|\n");
        for r in self
            .report
            .rows
            .iter()
            .filter(|r| self.mine(&r.model, &r.scheme))
            .filter(|r| r.category == "ALL")
        {
            s.push_str(&format!(
                "| {} | {} | {} | {} [{}, {}] | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.precision,
                r.n,
                pct(ratio(r.valid, r.n)),
                pct(r.srs),
                pct(r.srs_ci_low),
                pct(r.srs_ci_high),
                pct(r.srs_macro),
                delta_with_ci(r.delta_srs, r.delta_srs_boot_low, r.delta_srs_boot_high),
                pp(r.delta_srs_macro),
                pvalue(r.chi2_p),
                r.cohens_h
                    .map(|h| format!("{h:+.3} ({})", stats::h_label(h)))
                    .unwrap_or_else(|| "-".into()),
                pct(r.usr),
                pct(r.anti_rate),
                num(r.s_amb, 3),
                num(r.s_dis, 3),
            ));
        }
        s.push_str("\n*SRS pooled* counts every valid answer of the model at the precision once (`srs` of the `ALL` rows); the study's model-level SRS is the unweighted *mean of the categories'* SRS (`srs_macro`), so the two differ when categories differ in size or validity. The bootstrap interval resamples items (with all their seeds) and is wider than the χ² test's record-level view when an item's seeds agree.\n");
    }

    fn transitions(&self, s: &mut String) {
        s.push_str("\n### Items unbiased at BF16 that became biased\n\n");
        s.push_str("| precision | unbiased at BF16 | became biased | rate (study's rule) [95% CI] | expected from probabilities | noise floor | measured noise floor | answers from continued text | mean KLD | flip rate | study's range |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for t in self
            .report
            .transitions
            .iter()
            .filter(|t| self.mine(&t.model, &t.scheme))
        {
            if let (Some(note), None) = (&t.note, t.unbiased_at_bf16) {
                s.push_str(&format!("| {} | {note} | | | | | | | | | |\n", t.precision));
                continue;
            }
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                t.precision,
                t.unbiased_at_bf16
                    .map(|x| x.to_string())
                    .unwrap_or_default(),
                t.became_biased.map(|x| x.to_string()).unwrap_or_default(),
                rate_ci(t.rate, t.rate_ci_low, t.rate_ci_high),
                pct(t.expected_rate),
                pct(t.noise_floor),
                pct(t.measured_noise_floor),
                pct(t.continued_share),
                num(t.mean_kld, 4),
                pct(t.flip_rate),
                crate::vocab::Precision::parse(&t.precision)
                    .ok()
                    .and_then(|p| p.published_transitions())
                    .unwrap_or(""),
            ));
        }
        s.push_str("\nThe noise floor is the rate the study's rule reports when nothing but the seeds changes (BF16 against itself), computed from the BF16 probabilities; the measured one applies the rule to extra BF16 seeds (`--noise-seeds`). The expected rate and the computed noise floor model letters sampled as the first token only; an answer read from continued text (the first token was not a letter) is outside them, so where that share is large they understate the rule's rate and the measured noise floor is the one to compare with.\n");
    }

    fn directions(&self, s: &mut String) {
        s.push_str("\n### Both directions, paired by item\n\n| precision | unbiased → biased [95% CI] | biased → unbiased [95% CI] | mean item SRS among BF16-unbiased (study's) | McNemar pairs | McNemar p (exact) |\n|---|---:|---:|---:|---:|---:|\n");
        for t in self
            .report
            .transitions
            .iter()
            .filter(|t| self.mine(&t.model, &t.scheme))
            .filter(|t| t.unbiased_at_bf16.is_some() && t.precision != "bf16")
        {
            s.push_str(&format!(
                "| {} | {}/{} {} | {}/{} {} | {} | {} | {} |\n",
                t.precision,
                t.became_biased.unwrap_or(0),
                t.unbiased_at_bf16.unwrap_or(0),
                rate_ci(t.rate, t.rate_ci_low, t.rate_ci_high),
                t.became_unbiased.unwrap_or(0),
                t.biased_at_bf16.unwrap_or(0),
                rate_ci(t.reverse_rate, t.reverse_ci_low, t.reverse_ci_high),
                num(t.mean_item_srs, 4),
                t.mcnemar_items.unwrap_or(0),
                pvalue(t.mcnemar_p),
            ));
        }
        s.push_str("\nAn item is biased at a precision when at least one of its seeds chose the biased option (the study's any-of-seeds rule). *biased → unbiased* counts items biased at BF16 with a valid seed and no biased seed at the precision. McNemar's exact test compares the two directions over the items with a valid seed at both (a binomial test on the discordant items); a small p says quantization moved items towards the stereotype more often than away from it, or the reverse.\n");
    }

    fn distributions(&self, s: &mut String) {
        let rows: Vec<&DistributionRow> = self
            .report
            .distributions
            .iter()
            .filter(|d| self.mine(&d.model, &d.scheme))
            .collect();
        if rows.is_empty() {
            return;
        }
        s.push_str("\n### Per-item distributions over the answer letters\n\nKL(BF16 ‖ precision) over A, B, C and the rest (nats), and ΔP(biased) = P(biased letter) at the precision − at BF16, both at T = 1, one value per item; percentiles interpolate linearly.\n\n| precision | measure | items | mean | 99.9% | 99% | 95% | 90% | median | 10% | 5% | 1% | top letter unchanged |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for d in rows {
            let same = match (d.top_unchanged, d.top_unchanged_se) {
                (Some(p), Some(se)) => format!("{} ± {}", pct(Some(p)), pct(Some(se))),
                _ => "-".into(),
            };
            for (name, n, q, last) in [
                ("KLD", d.items, &d.kld, same.as_str()),
                ("ΔP(biased)", d.dp_items, &d.dp_biased, ""),
            ] {
                s.push_str(&format!(
                    "| {} | {name} | {n} | {} | {last} |\n",
                    d.precision,
                    quantile_cells(q.as_ref())
                ));
            }
        }
    }

    fn latent(&self, s: &mut String) {
        let Some(l) = &self.report.latent else {
            return;
        };
        s.push_str(&format!("\n### Latent-bias filter: items with BF16 per-item SRS in [{:.2}, {:.2}]\n\nThe study's filter: an item's per-item SRS is its biased seeds over its valid seeds at BF16; the rates below count the kept items' answers at every precision.\n\n| category | items at BF16 | kept | mean BF16 item SRS of the kept |\n|---|---:|---:|---:|\n", l.min_srs, l.max_srs));
        for c in l.counts.iter().filter(|c| self.mine(&c.model, &c.scheme)) {
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                c.category,
                c.total_items,
                c.filtered_items,
                num(c.mean_baseline_srs, 4)
            ));
        }
        s.push_str("\n| precision | valid | SRS pooled [95% CI] | SRS, mean of categories (study's) | Δ SRS pooled | Δ SRS, mean of categories (study's) | χ² p (Yates) | Cohen's h |\n|---|---:|---|---:|---:|---:|---:|---|\n");
        for r in l
            .rows
            .iter()
            .filter(|r| self.mine(&r.model, &r.scheme) && r.category == "ALL")
        {
            s.push_str(&format!(
                "| {} | {} | {} [{}, {}] | {} | {} | {} | {} | {} |\n",
                r.precision,
                r.valid,
                pct(r.srs),
                pct(r.srs_ci_low),
                pct(r.srs_ci_high),
                pct(r.srs_macro),
                pp(r.delta_srs),
                pp(r.delta_srs_macro),
                pvalue(r.chi2_p),
                r.cohens_h
                    .map(|h| format!("{h:+.3} ({})", stats::h_label(h)))
                    .unwrap_or_else(|| "-".into()),
            ));
        }
    }

    fn option_orders(&self, s: &mut String) {
        let orders: Vec<&OrderRow> = self
            .report
            .option_orders
            .iter()
            .filter(|r| self.mine(&r.model, &r.scheme))
            .collect();
        if !orders.is_empty() {
            s.push_str("\n### Option order\n\nThe study's rule within each order in which the options were shown (`120`: A shows ans1, B ans2, C ans0); `every`: items unbiased at BF16 under every order that became biased under every order, a transition that does not depend on where the options stand. Letter shares: valid answers given with A, B and C.\n\n| precision | order | unbiased at BF16 | became biased | rate | A / B / C |\n|---|---|---:|---:|---:|---|\n");
            for r in orders {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    r.precision,
                    r.option_order,
                    r.unbiased_at_bf16,
                    r.became_biased,
                    pct(r.rate),
                    r.letter_shares
                        .map(|l| format!(
                            "{} / {} / {}",
                            pct(Some(l[0])),
                            pct(Some(l[1])),
                            pct(Some(l[2]))
                        ))
                        .unwrap_or_default(),
                ));
            }
        }
    }

    fn perplexity(&self, s: &mut String) {
        let ppl: Vec<&PplRow> = self
            .report
            .perplexity
            .iter()
            .filter(|r| self.mine(&r.model, &r.scheme))
            .collect();
        if let Some(first) = ppl.first() {
            s.push_str(&format!(
                "\n### Perplexity and KL divergence from BF16\n\nCorpus: {} ({} sequences, {} scored tokens), full-vocabulary next-token distributions in f32.\n\n| precision | perplexity | Δ vs BF16 | mean KLD (nats/token) | top-1 agreement |\n|---|---:|---:|---:|---:|\n",
                first.corpus, first.sequences, first.tokens
            ));
            for r in &ppl {
                s.push_str(&format!(
                    "| {} | {:.4} | {} | {:.5} | {} |\n",
                    r.precision,
                    r.perplexity,
                    r.delta_ppl_pct
                        .map(|d| format!("{d:+.2}%"))
                        .unwrap_or_else(|| "-".into()),
                    r.mean_kld,
                    pct(Some(r.top1_agreement)),
                ));
            }
        }
    }

    fn correlations(&self, s: &mut String) {
        let corr: Vec<&Correlation> = self
            .report
            .correlations
            .iter()
            .filter(|c| self.mine(&c.model, &c.scheme))
            .collect();
        if !corr.is_empty() {
            s.push_str("\n### Correlations\n\n| measure | precision | n | Pearson r | p |\n|---|---|---:|---:|---:|\n");
            for c in corr {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    c.measure,
                    c.precision,
                    c.n,
                    c.pearson_r
                        .map(|r| format!("{r:+.3}"))
                        .unwrap_or_else(|| c.note.clone().unwrap_or_default()),
                    pvalue(c.p_value),
                ));
            }
            s.push_str("\n`item_kld~became_biased`: per item unbiased at BF16, the KL divergence of its A/B/C/other distribution from BF16's against whether it became biased (point-biserial). `delta_ppl_pct~transition_rate`: across precisions, the perplexity change against the transition rate.\n");
        }
    }

    fn category_rates(&self, s: &mut String) {
        s.push_str("\n### Stereotype rate by category\n\n| category | precision | valid | SRS [95% CI] | Δ SRS | χ² p | Cohen's h |\n|---|---|---:|---|---:|---:|---|\n");
        for r in self
            .report
            .rows
            .iter()
            .filter(|r| self.mine(&r.model, &r.scheme))
            .filter(|r| r.category != "ALL")
        {
            s.push_str(&format!(
                "| {} | {} | {} | {} [{}, {}] | {} | {} | {} |\n",
                r.category,
                r.precision,
                r.valid,
                pct(r.srs),
                pct(r.srs_ci_low),
                pct(r.srs_ci_high),
                r.delta_srs
                    .map(|d| format!("{:+.1} pp", 100.0 * d))
                    .unwrap_or_else(|| "-".into()),
                pvalue(r.chi2_p),
                num(r.cohens_h, 3),
            ));
        }
    }

    fn regressions(&self, s: &mut String) {
        for g in self
            .report
            .regressions
            .iter()
            .filter(|g| self.mine(&g.model, &g.scheme))
        {
            s.push_str(&format!(
                "\n### Logistic regression: biased answer ~ bits + category ({} valid answers)\n\n",
                g.n
            ));
            match &g.fit {
                Some(f) => {
                    let clusters = g
                        .clusters
                        .map_or_else(|| "-".to_string(), |c| c.to_string());
                    s.push_str(&format!("| term | coefficient | std. error, answers independent (study's) | p (study's) | std. error clustered by item ({clusters} items) | p clustered by item |\n|---|---:|---:|---:|---:|---:|\n"));
                    for i in 0..f.names.len() {
                        let at = |v: &Option<Vec<f64>>| v.as_ref().and_then(|v| v.get(i).copied());
                        s.push_str(&format!(
                            "| {} | {:+.4} | {:.4} | {} | {} | {} |\n",
                            f.names[i],
                            f.coef[i],
                            f.se[i],
                            pvalue(Some(f.p[i])),
                            num(at(&g.cluster_se), 4),
                            pvalue(at(&g.cluster_p)),
                        ));
                    }
                    s.push_str("\nThe study's standard errors count every answer as independent; an item's seeds and precisions share its text, so they are not. The clustered ones (a sandwich over items) allow for that and are the ones to read when an item's answers agree.\n");
                }
                None => s.push_str(&format!(
                    "Not available: {}.\n",
                    g.note.as_deref().unwrap_or("no fit")
                )),
            }
        }
    }
}
