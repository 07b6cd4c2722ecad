//! Next-token distributions and sampling: exact option-letter probabilities at T = 1 and at
//! the sampling temperature, and a per-record RNG derived only from the record's identity
//! (seed, model, scheme, precision, category, example_id), so batching, sharding and
//! resuming never change an answer.

use super::tokenizer::Tok;
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};

/// Token ids that decode to a bare option letter, with or without leading whitespace.
#[derive(Debug, Clone)]
pub struct Letters {
    pub ids: [Vec<u32>; 3],
}

impl Letters {
    /// Scan the vocabulary.
    pub fn find(tok: &Tok) -> Result<Letters> {
        let mut ids: [Vec<u32>; 3] = Default::default();
        for id in 0..tok.vocab_size() as u32 {
            let s = tok.decode(&[id])?;
            let t = s.trim_start();
            let k = match t {
                "A" => 0,
                "B" => 1,
                "C" => 2,
                _ => continue,
            };
            ids[k].push(id);
        }
        if ids.iter().any(Vec::is_empty) {
            return Err(Error::Model(
                "the vocabulary has no token for one of the letters A, B, C".into(),
            ));
        }
        Ok(Letters { ids })
    }

    /// The option letter (0..=2) a token stands for, if it is one.
    pub fn letter_of(&self, id: u32) -> Option<u8> {
        (0..3u8).find(|&k| self.ids[k as usize].contains(&id))
    }

    /// Sum of `probs` over each letter's tokens.
    pub fn mass(&self, probs: &[f64]) -> [f64; 3] {
        self.mass_of(|i| probs.get(i).copied())
    }

    /// Sum over each letter's tokens of `prob(token)` (`None`, outside the vocabulary, counts
    /// as 0).
    pub fn mass_of(&self, prob: impl Fn(usize) -> Option<f64>) -> [f64; 3] {
        let m = |k: usize| {
            self.ids[k]
                .iter()
                .map(|&i| prob(i as usize).unwrap_or(0.0))
                .sum()
        };
        [m(0), m(1), m(2)]
    }
}

/// The softmax of one set of logits at a temperature, without its vector: the maximum and
/// the normaliser, from which each probability is computed when asked, with exactly the
/// arithmetic of [`softmax`] (the same bits).
#[derive(Debug, Clone, Copy)]
pub struct Softmax {
    max: f64,
    temperature: f64,
    sum: f64,
}

impl Softmax {
    pub fn new(logits: &[f32], temperature: f64) -> Softmax {
        let max = max_logit(logits);
        let sum = logits
            .iter()
            .map(|&l| ((l as f64 - max) / temperature).exp())
            .sum();
        Softmax {
            max,
            temperature,
            sum,
        }
    }

    /// The probability of the token whose logit is `logit`.
    pub fn p(&self, logit: f32) -> f64 {
        ((logit as f64 - self.max) / self.temperature).exp() / self.sum
    }
}

fn max_logit(logits: &[f32]) -> f64 {
    logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64
}

/// Softmax of `logits / temperature` in f64.
pub fn softmax(logits: &[f32], temperature: f64) -> Vec<f64> {
    let max = max_logit(logits);
    let mut p: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / temperature).exp())
        .collect();
    let sum: f64 = p.iter().sum();
    for x in &mut p {
        *x /= sum;
    }
    p
}

/// A small, fast, stable RNG (splitmix64): the same key gives the same stream everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The RNG of one record.
    /// The generator of one record. The option order joins the key only when it is not the
    /// study's `012`, so study-order records are the same with or without other orders.
    pub fn for_record(
        seed: u64,
        model: &str,
        scheme: &str,
        precision: &str,
        category: &str,
        example_id: i64,
        option_order: &str,
    ) -> Rng {
        let mut key = format!("{seed}|{model}|{scheme}|{precision}|{category}|{example_id}");
        if option_order != crate::rules::STUDY_ORDER {
            key.push('|');
            key.push_str(option_order);
        }
        let d = Sha256::digest(key.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        Rng(u64::from_le_bytes(b))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Draw an index from a probability vector.
    pub fn sample(&mut self, probs: &[f64]) -> u32 {
        self.sample_from(probs.iter().copied())
    }

    /// Draw an index from probabilities given in index order (the same draw as
    /// [`Rng::sample`] on them collected; they are computed only up to the one drawn).
    pub fn sample_from(&mut self, probs: impl Iterator<Item = f64>) -> u32 {
        let u = self.uniform();
        let mut acc = 0.0;
        let mut last = 0;
        for (i, p) in probs.enumerate() {
            if p > 0.0 {
                last = i;
            }
            acc += p;
            if u < acc {
                return i as u32;
            }
        }
        last as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lazy_softmax_gives_the_bits_of_the_vector_and_the_same_draws() {
        // Logits of mixed signs and scales, as a model's are, with a tie and a -inf.
        let logits: Vec<f32> = (0..5000)
            .map(|i| ((i as f32 * 0.7311).sin() * 9.0) - (i % 13) as f32)
            .chain([f32::NEG_INFINITY, 8.9, 8.9])
            .collect();
        for t in [1.0, 0.7, 0.3] {
            let full = softmax(&logits, t);
            let lazy = Softmax::new(&logits, t);
            for (&l, &p) in logits.iter().zip(&full) {
                assert_eq!(lazy.p(l).to_bits(), p.to_bits());
            }
            for seed in 0..200u64 {
                let mut a = Rng(seed);
                let mut b = Rng(seed);
                assert_eq!(
                    a.sample(&full),
                    b.sample_from(logits.iter().map(|&l| lazy.p(l)))
                );
            }
        }
    }

    #[test]
    fn softmax_sums_to_one_and_sharpens_with_low_temperature() {
        let l = [1.0f32, 2.0, 3.0];
        let p1 = softmax(&l, 1.0);
        let p03 = softmax(&l, 0.3);
        assert!((p1.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((p1[2] - (3f64.exp() / (1f64.exp() + 2f64.exp() + 3f64.exp()))).abs() < 1e-12);
        assert!(p03[2] > p1[2]);
    }

    #[test]
    fn rng_is_keyed_by_record_identity() {
        let a = Rng::for_record(42, "m", "gguf", "q4", "Age", 7, "012").next_u64();
        let b = Rng::for_record(42, "m", "gguf", "q4", "Age", 7, "012").next_u64();
        let c = Rng::for_record(123, "m", "gguf", "q4", "Age", 7, "012").next_u64();
        let d = Rng::for_record(42, "m", "gguf", "q4", "Age", 7, "120").next_u64();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let mut rng = Rng::for_record(1, "m", "s", "p", "c", 0, "012");
        let probs = [0.2, 0.0, 0.8];
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            counts[rng.sample(&probs) as usize] += 1;
        }
        assert_eq!(counts[1], 0);
        let frac = counts[2] as f64 / 20_000.0;
        assert!((frac - 0.8).abs() < 0.02, "{frac}");
    }
}
