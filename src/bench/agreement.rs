//! `bench --check-cpu N`: the device's records against the CPU's F32 ones for the same
//! prompts and precision: how often the most probable letter agrees, how often the sampled
//! answer agrees, and how far the letters' log probabilities move.

use crate::bbq::Item;
use crate::engine::{KvCache, Precision, quant};
use crate::error::{Error, Result};
use crate::prompt::OptionOrder;
use crate::store::Record;
use crate::study::Scorer;
use serde::Serialize;
use std::collections::BTreeMap;

/// One precision's device records compared with the CPU's.
#[derive(Debug, Clone, Serialize)]
pub struct CpuAgreement {
    pub precision: String,
    /// Records compared (items × seeds).
    pub records: usize,
    /// Records whose most probable letter is the same on both.
    pub same_argmax: usize,
    /// Records whose sampled answer (or its absence) is the same on both.
    pub same_answer: usize,
    /// Largest |p_device − p_cpu| over the three letters of every record.
    pub max_abs_dp: f64,
    /// Largest |log p_device − log p_cpu| over the letters whose probability is at least
    /// [`LOG_FLOOR`] on both (below it a log probability is rounding noise on both sides).
    pub max_abs_dlogp: f64,
    /// Mean of that per-letter difference.
    pub mean_abs_dlogp: f64,
    /// Letters above the floor on both, over which the log differences are taken.
    pub logp_letters: usize,
}

/// Letter probabilities below this are left out of the log-probability differences.
pub const LOG_FLOOR: f64 = 1e-6;

/// The record's key within one option order: item, polarity and seed.
fn key(r: &Record) -> (i64, String, i64) {
    (r.example_id, r.question_polarity.clone(), r.seed)
}

fn argmax(p: &[f64; 3]) -> usize {
    (0..3).fold(0, |best, i| if p[i] > p[best] { i } else { best })
}

/// Compare `device` records with `cpu` records of the same prompts, matched by key.
pub fn compare(precision: Precision, device: &[Record], cpu: &[Record]) -> Result<CpuAgreement> {
    let cpu: BTreeMap<_, &Record> = cpu.iter().map(|r| (key(r), r)).collect();
    let mut out = CpuAgreement {
        precision: precision.as_str().into(),
        records: 0,
        same_argmax: 0,
        same_answer: 0,
        max_abs_dp: 0.0,
        max_abs_dlogp: 0.0,
        mean_abs_dlogp: 0.0,
        logp_letters: 0,
    };
    let mut sum = 0.0;
    for d in device {
        let c = cpu.get(&key(d)).ok_or_else(|| {
            Error::Input(format!(
                "the CPU check has no record for item {} ({}, seed {})",
                d.example_id, d.question_polarity, d.seed
            ))
        })?;
        out.records += 1;
        out.same_argmax += usize::from(argmax(&d.prob) == argmax(&c.prob));
        out.same_answer += usize::from(d.answer == c.answer);
        for i in 0..3 {
            out.max_abs_dp = out.max_abs_dp.max((d.prob[i] - c.prob[i]).abs());
            if d.prob[i] >= LOG_FLOOR && c.prob[i] >= LOG_FLOOR {
                let dl = (d.prob[i].ln() - c.prob[i].ln()).abs();
                out.max_abs_dlogp = out.max_abs_dlogp.max(dl);
                out.logp_letters += 1;
                sum += dl;
            }
        }
    }
    if out.logp_letters > 0 {
        out.mean_abs_dlogp = sum / out.logp_letters as f64;
    }
    Ok(out)
}

/// Score `items` one at a time with `scorer` (the CPU's build of a precision), as a study
/// run on the CPU does.
pub fn score_one_by_one(scorer: &Scorer, items: &[Item]) -> Result<Vec<Record>> {
    let (mut cache, mut prev) = (KvCache::default(), Vec::new());
    let mut out = Vec::new();
    for it in items {
        let (recs, _, _) = scorer.score(it, OptionOrder::STUDY, &mut cache, &mut prev)?;
        out.extend(recs);
    }
    Ok(out)
}

/// Build `precision` on the CPU (F32 compute) from the same source.
pub fn cpu_build(
    src: &crate::engine::SourceModel,
    precision: Precision,
    scheme: crate::engine::Scheme,
    compute: crate::engine::Compute,
) -> Result<quant::Built> {
    quant::build(src, precision, scheme, compute, &candle_core::Device::Cpu)
}

/// The comparison as a Markdown table.
pub fn table(rows: &[CpuAgreement]) -> String {
    let mut s = String::from(
        "| precision | records | same most probable letter | same answer | max abs Δ p | max abs Δ log p (p ≥ 1e-6) | mean abs Δ log p | letters compared |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let share = |n: usize| 100.0 * n as f64 / r.records.max(1) as f64;
        s.push_str(&format!(
            "| {} | {} | {} ({:.1}%) | {} ({:.1}%) | {:.2e} | {:.2e} | {:.2e} | {} |\n",
            r.precision,
            r.records,
            r.same_argmax,
            share(r.same_argmax),
            r.same_answer,
            share(r.same_answer),
            r.max_abs_dp,
            r.max_abs_dlogp,
            r.mean_abs_dlogp,
            r.logp_letters
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{Role, SeedSet};

    fn rec(id: i64, seed: i64, prob: [f64; 3], answer: Option<u8>) -> Record {
        Record {
            category: "Age".into(),
            example_id: id,
            context_condition: "ambig".into(),
            question_polarity: "neg".into(),
            seed,
            prob,
            letter_mass: 1.0,
            samp_prob: prob,
            seed_set: SeedSet::Study,
            option_order: "012".into(),
            sampled_text: String::new(),
            answer,
            role: Role::Unknown,
            latency_ms: 0.0,
        }
    }

    #[test]
    fn compares_records_by_key_whatever_their_order() {
        let device = [
            rec(1, 42, [0.5, 0.3, 0.2], Some(0)),
            rec(2, 42, [0.2, 0.3, 0.5], Some(2)),
        ];
        let cpu = [
            rec(2, 42, [0.2, 0.5, 0.3], Some(1)),
            rec(1, 42, [0.5, 0.3, 0.2], Some(0)),
        ];
        let a = compare(Precision::Q4, &device, &cpu).expect("compares");
        assert_eq!((a.records, a.same_argmax, a.same_answer), (2, 1, 1));
        let d = (0.5f64.ln() - 0.3f64.ln()).abs();
        assert!((a.max_abs_dlogp - d).abs() < 1e-12);
        assert!((a.mean_abs_dlogp - 2.0 * d / 6.0).abs() < 1e-12);
        assert!((a.max_abs_dp - 0.2).abs() < 1e-12);
        assert_eq!(a.logp_letters, 6);
    }

    #[test]
    fn letters_below_the_floor_count_in_p_but_not_in_log_p() {
        let device = [rec(1, 42, [1.0, 1e-30, 0.0], Some(0))];
        let cpu = [rec(1, 42, [1.0 - 1e-9, 1e-9, 1e-45], Some(0))];
        let a = compare(Precision::Bf16, &device, &cpu).expect("compares");
        assert_eq!(a.logp_letters, 1);
        assert!(a.max_abs_dlogp < 1e-8 && a.mean_abs_dlogp.is_finite());
        assert!((a.max_abs_dp - 1e-9).abs() < 1e-15);
    }

    #[test]
    fn a_device_record_the_cpu_lacks_is_named() {
        let e = compare(Precision::Bf16, &[rec(7, 123, [0.4, 0.3, 0.3], None)], &[])
            .expect_err("missing");
        assert!(e.to_string().contains("item 7"), "{e}");
    }
}
