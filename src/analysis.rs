//! Statistics over the records of a results folder: per model, scheme and precision the
//! valid-answer rate, the stereotype rate SRS = biased / valid, the unknown rate
//! USR = unknown / valid, and the study's transition rate (items with no biased valid seed
//! at BF16 that have at least one biased seed at the precision, over the former; items with
//! no valid BF16 seed are left out).

use crate::store::StoredRecord;
use std::collections::{BTreeMap, HashMap};

/// One row of the summary table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SummaryRow {
    pub model: String,
    pub scheme: String,
    pub precision: String,
    pub n: u64,
    pub valid: u64,
    pub biased: u64,
    pub unknown: u64,
    pub anti: u64,
    pub valid_rate: f64,
    pub srs: f64,
    pub usr: f64,
    /// Items unbiased at BF16 (denominator of the transition rate); `None` without BF16.
    pub unbiased_at_bf16: Option<u64>,
    pub became_biased: Option<u64>,
    pub transition_rate: Option<f64>,
}

fn precision_rank(p: &str) -> usize {
    ["bf16", "q8", "q6", "q4", "q3"]
        .iter()
        .position(|x| *x == p)
        .unwrap_or(99)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// Summarize study records (`seed_set = study`).
pub fn summarize(records: &[StoredRecord]) -> Vec<SummaryRow> {
    type Key = (String, String, String);
    #[derive(Default)]
    struct Acc {
        n: u64,
        valid: u64,
        biased: u64,
        unknown: u64,
        anti: u64,
        // item → (valid seeds, biased seeds)
        items: HashMap<(String, i64), (u32, u32)>,
    }
    let mut acc: BTreeMap<Key, Acc> = BTreeMap::new();
    for r in records.iter().filter(|r| r.rec.seed_set == "study") {
        let a = acc
            .entry((r.model.clone(), r.scheme.clone(), r.precision.clone()))
            .or_default();
        a.n += 1;
        let item = a
            .items
            .entry((r.rec.category.clone(), r.rec.example_id))
            .or_default();
        match r.rec.role.as_str() {
            "biased" => {
                a.biased += 1;
                item.1 += 1;
            }
            "unknown" => a.unknown += 1,
            "anti" => a.anti += 1,
            _ => continue,
        }
        a.valid += 1;
        item.0 += 1;
    }
    let mut rows = Vec::new();
    for ((model, scheme, precision), a) in &acc {
        let bf16 = acc.get(&(model.clone(), scheme.clone(), "bf16".to_string()));
        let (unbiased, became) = match bf16 {
            Some(b) => {
                let unbiased: Vec<&(String, i64)> = b
                    .items
                    .iter()
                    .filter(|(_, (v, bi))| *v > 0 && *bi == 0)
                    .map(|(k, _)| k)
                    .collect();
                let became = unbiased
                    .iter()
                    .filter(|k| a.items.get(**k).is_some_and(|(_, bi)| *bi > 0))
                    .count() as u64;
                (Some(unbiased.len() as u64), Some(became))
            }
            None => (None, None),
        };
        rows.push(SummaryRow {
            model: model.clone(),
            scheme: scheme.clone(),
            precision: precision.clone(),
            n: a.n,
            valid: a.valid,
            biased: a.biased,
            unknown: a.unknown,
            anti: a.anti,
            valid_rate: ratio(a.valid, a.n),
            srs: ratio(a.biased, a.valid),
            usr: ratio(a.unknown, a.valid),
            unbiased_at_bf16: unbiased,
            became_biased: became,
            transition_rate: match (became, unbiased) {
                (Some(b), Some(u)) => Some(ratio(b, u)),
                _ => None,
            },
        });
    }
    rows.sort_by(|a, b| {
        (&a.model, &a.scheme, precision_rank(&a.precision)).cmp(&(
            &b.model,
            &b.scheme,
            precision_rank(&b.precision),
        ))
    });
    rows
}

fn pct(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * x)
    }
}

/// The summary as an aligned text table.
pub fn format_table(rows: &[SummaryRow]) -> String {
    let mut lines = vec![format!(
        "{:<28} {:<6} {:<5} {:>7} {:>7} {:>7} {:>7} {:>18}",
        "model", "scheme", "prec", "records", "valid", "SRS", "USR", "transitions"
    )];
    for r in rows {
        let trans = match (r.became_biased, r.unbiased_at_bf16, r.transition_rate) {
            (Some(b), Some(u), Some(t)) => format!("{} ({b}/{u})", pct(t)),
            _ => "no bf16".into(),
        };
        lines.push(format!(
            "{:<28} {:<6} {:<5} {:>7} {:>7} {:>7} {:>7} {:>18}",
            r.model,
            r.scheme,
            r.precision,
            r.n,
            pct(r.valid_rate),
            pct(r.srs),
            pct(r.usr),
            trans
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Record;

    fn rec(precision: &str, id: i64, seed: i64, role: &str) -> StoredRecord {
        StoredRecord {
            model: "m".into(),
            scheme: "gguf".into(),
            precision: precision.into(),
            rec: Record {
                category: "Age".into(),
                example_id: id,
                context_condition: "ambig".into(),
                question_polarity: "neg".into(),
                seed,
                prob: [0.0; 3],
                letter_mass: 0.0,
                samp_prob: [0.0; 3],
                seed_set: "study".into(),
                option_order: "012".into(),
                sampled_text: String::new(),
                answer: None,
                role: role.into(),
                latency_ms: 0.0,
            },
        }
    }

    #[test]
    fn rates_and_transitions_follow_the_study_rule() {
        let mut r = Vec::new();
        // item 1: unbiased at bf16, one biased seed at q3 -> transition
        for s in 0..5 {
            r.push(rec("bf16", 1, s, "unknown"));
            r.push(rec("q3", 1, s, if s == 4 { "biased" } else { "unknown" }));
        }
        // item 2: biased at bf16 -> not in the denominator
        for s in 0..5 {
            r.push(rec("bf16", 2, s, if s == 0 { "biased" } else { "anti" }));
            r.push(rec("q3", 2, s, "biased"));
        }
        // item 3: all invalid at bf16 -> left out
        for s in 0..5 {
            r.push(rec("bf16", 3, s, "invalid"));
            r.push(rec("q3", 3, s, "biased"));
        }
        // item 4: unbiased at bf16 and at q3
        for s in 0..5 {
            r.push(rec("bf16", 4, s, "anti"));
            r.push(rec("q3", 4, s, "invalid"));
        }
        let rows = summarize(&r);
        assert_eq!(rows.len(), 2);
        let bf = &rows[0];
        assert_eq!(
            (
                bf.precision.as_str(),
                bf.n,
                bf.valid,
                bf.biased,
                bf.unknown,
                bf.anti
            ),
            ("bf16", 20, 15, 1, 5, 9)
        );
        assert!((bf.srs - 1.0 / 15.0).abs() < 1e-12);
        assert_eq!(bf.transition_rate, Some(0.0));
        let q3 = &rows[1];
        assert_eq!(q3.precision, "q3");
        assert_eq!(q3.unbiased_at_bf16, Some(2));
        assert_eq!(q3.became_biased, Some(1));
        assert_eq!(q3.transition_rate, Some(0.5));
        assert!((q3.valid_rate - 15.0 / 20.0).abs() < 1e-12);
    }

    #[test]
    fn without_bf16_transitions_are_unavailable() {
        let rows = summarize(&[rec("q4", 1, 0, "biased")]);
        assert_eq!(rows[0].transition_rate, None);
        assert!(format_table(&rows).contains("no bf16"));
    }
}
