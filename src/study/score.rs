//! Scoring: one model at one precision turns items into records. One forward pass per
//! prompt (or per batch of prompts after their shared prefix) gives the next-token
//! distribution; each seed samples from it with an RNG derived from the record's identity, so
//! batching, resuming and shards never change an answer.

use super::{StudySpec, common_prefix};
use crate::bbq::Item;
use crate::engine::quant::Built;
use crate::engine::sample::{Letters, Rng, softmax};
use crate::engine::source::SourceModel;
use crate::engine::{KvCache, Precision};
use crate::error::{Error, Result};
use crate::prompt::{self, ChatTemplate};
use crate::store::Record;
use crate::vocab::SeedSet;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Where a scorer's time went, for benchmarks: the forward passes of the prompts (until
/// their logits are on the host), the next-token distributions, and sampling (decoding
/// continuations included). Seconds, summed over calls.
#[derive(Debug, Default)]
pub struct Phases {
    pub forward: std::cell::Cell<f64>,
    pub dists: std::cell::Cell<f64>,
    pub sample: std::cell::Cell<f64>,
}

impl Phases {
    fn add(cell: &std::cell::Cell<f64>, since: Instant) {
        cell.set(cell.get() + since.elapsed().as_secs_f64());
    }
}

/// One seed's answer in the making: its RNG after the first token, the first token (and
/// the letter it is, if it is one), the tokens generated after a first token that is not a
/// letter, and the milliseconds it took (the record's `latency_ms`).
pub(super) struct Draw {
    seed: u64,
    seed_set: SeedSet,
    pub(super) rng: Rng,
    pub(super) first: u32,
    pub(super) letter: Option<u8>,
    pub(super) generated: Vec<u32>,
    pub(super) ms: f64,
}

/// A prompt's next-token distribution at T = 1 and at the sampling temperature.
pub(super) struct Dist {
    p1: Vec<f64>,
    pub(super) pt: Vec<f64>,
}

impl Dist {
    pub(super) fn new(logits: &[f32]) -> Dist {
        Dist {
            p1: softmax(logits, 1.0),
            pt: softmax(logits, prompt::TEMPERATURE),
        }
    }
}

/// Scores items with one model at one precision.
pub struct Scorer<'a> {
    pub spec: &'a StudySpec,
    pub slug: &'a str,
    pub precision: Precision,
    pub built: &'a Built,
    pub src: &'a SourceModel,
    pub template: &'a ChatTemplate,
    pub letters: &'a Letters,
}

impl Scorer<'_> {
    /// Score one item: one forward pass, then each seed samples. Returns the records, the
    /// prompt length and the tokens actually computed (prompt tokens past the cached prefix,
    /// plus decoding steps).
    pub fn score(
        &self,
        item: &Item,
        order: prompt::OptionOrder,
        cache: &mut KvCache,
        prev: &mut Vec<u32>,
    ) -> Result<(Vec<Record>, u64, u64)> {
        let tokens = self.tokens(item, order)?;
        let t0 = Instant::now();
        let reuse = common_prefix(prev, &tokens).min(tokens.len() - 1);
        let base = cache.truncate(reuse)?;
        let (logits, full) = self.built.model.forward(&tokens[reuse..], &base)?;
        let logits: Vec<f32> = logits.to_vec1()?;
        *cache = full.clone();
        *prev = tokens.clone();
        let dist = Dist::new(&logits);
        let (out, forwards) = self.sample(item, order, &dist, &full, t0)?;
        Ok((
            out,
            tokens.len() as u64,
            (tokens.len() - reuse) as u64 + forwards,
        ))
    }

    /// The token ids of an item's prompt in an option order.
    fn tokens(&self, item: &Item, order: prompt::OptionOrder) -> Result<Vec<u32>> {
        let text = self
            .spec
            .protocol
            .prompt(self.template, &order.shown(item))?;
        let tokens = self.src.tok.encode(&text)?;
        if tokens.is_empty() {
            return Err(Error::Model(format!(
                "item {} {}: empty prompt",
                item.category, item.example_id
            )));
        }
        Ok(tokens)
    }

    /// Score a part's items in one option order, `batch_size` prompts per forward pass:
    /// prompts sorted by length (ties in item order) so each batch pads little, the prefix
    /// shared by a batch's prompts computed once. Batches depend only on the part's items,
    /// so a resumed or sharded run computes the same ones. Results are in item order.
    pub fn score_part(
        &self,
        part: &[Item],
        order: prompt::OptionOrder,
        cancel: &AtomicBool,
    ) -> Result<Vec<(Vec<Record>, u64, u64)>> {
        self.score_part_timed(part, order, cancel, &Phases::default())
    }

    /// [`Scorer::score_part`], adding where the time went to `phases`.
    pub fn score_part_timed(
        &self,
        part: &[Item],
        order: prompt::OptionOrder,
        cancel: &AtomicBool,
        phases: &Phases,
    ) -> Result<Vec<(Vec<Record>, u64, u64)>> {
        let tokens = part
            .iter()
            .map(|item| self.tokens(item, order))
            .collect::<Result<Vec<_>>>()?;
        let mut by_len: Vec<usize> = (0..part.len()).collect();
        by_len.sort_by_key(|&i| (tokens[i].len(), i));
        let mut out: Vec<Option<(Vec<Record>, u64, u64)>> = vec![None; part.len()];
        for batch in by_len.chunks(self.spec.batch_size.max(1)) {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            let rows: Vec<&[u32]> = batch.iter().map(|&i| tokens[i].as_slice()).collect();
            let items: Vec<&Item> = batch.iter().map(|&i| &part[i]).collect();
            for (&i, r) in batch
                .iter()
                .zip(self.score_batch(&items, order, &rows, phases)?)
            {
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| r.ok_or_else(|| Error::Model("a prompt of the part was not scored".into())))
            .collect()
    }

    /// One forward pass over several prompts after their common prefix, then each seed of
    /// each prompt samples.
    fn score_batch(
        &self,
        items: &[&Item],
        order: prompt::OptionOrder,
        rows: &[&[u32]],
        phases: &Phases,
    ) -> Result<Vec<(Vec<Record>, u64, u64)>> {
        use rayon::prelude::*;
        let model = &self.built.model;
        let t0 = Instant::now();
        let shared = rows
            .iter()
            .map(|r| common_prefix(rows[0], r).min(r.len() - 1))
            .min()
            .unwrap_or(0);
        let prefix = match shared {
            0 => KvCache::default(),
            n => model.forward(&rows[0][..n], &KvCache::default())?.1,
        };
        let suffixes: Vec<&[u32]> = rows.iter().map(|r| &r[shared..]).collect();
        let (logits, cache) = model.forward_batch(&suffixes, &prefix)?;
        let logits: Vec<Vec<f32>> = logits.to_vec2()?;
        Phases::add(&phases.forward, t0);
        let t1 = Instant::now();
        let dists: Vec<Dist> = logits.par_iter().map(|l| Dist::new(l)).collect();
        Phases::add(&phases.dists, t1);
        let t2 = Instant::now();
        let pass_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut draws: Vec<Vec<Draw>> = items
            .iter()
            .zip(&dists)
            .map(|(item, dist)| self.draws(item, order, dist))
            .collect();
        let forwards = self.decode_batched(&mut draws, &cache)?;
        let ms = pass_ms + t2.elapsed().as_secs_f64() * 1e3;
        let mut out = Vec::with_capacity(rows.len());
        for (b, ((item, dist), mut ds)) in items.iter().zip(&dists).zip(draws).enumerate() {
            for d in &mut ds {
                d.ms = if d.letter.is_some() { pass_ms } else { ms };
            }
            let recs = self.records(item, order, dist, ds)?;
            let fresh = suffixes[b].len() + if b == 0 { shared } else { 0 };
            out.push((recs, rows[b].len() as u64, fresh as u64 + forwards[b]));
        }
        Phases::add(&phases.sample, t2);
        Ok(out)
    }

    /// Each seed samples from one prompt's distribution (continuing after a first token
    /// that is not a letter, one seed at a time). Returns the records and the decoding
    /// steps computed.
    fn sample(
        &self,
        item: &Item,
        order: prompt::OptionOrder,
        dist: &Dist,
        full: &KvCache,
        t0: Instant,
    ) -> Result<(Vec<Record>, u64)> {
        let pass_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut draws = self.draws(item, order, dist);
        let mut memo = HashMap::new();
        let mut forwards = 0u64;
        for d in &mut draws {
            let t1 = Instant::now();
            if d.letter.is_none() {
                let first = d.first;
                d.generated =
                    self.continue_from(first, full, &mut d.rng, &mut memo, &mut forwards)?;
            }
            d.ms = pass_ms + t1.elapsed().as_secs_f64() * 1e3;
        }
        Ok((self.records(item, order, dist, draws)?, forwards))
    }

    /// Each seed's first token, sampled from the distribution at the sampling temperature
    /// with the record's own RNG (study seeds, then noise seeds at BF16 in the study order).
    pub(super) fn draws(&self, item: &Item, order: prompt::OptionOrder, dist: &Dist) -> Vec<Draw> {
        let noise: &[u64] =
            if self.precision == Precision::Bf16 && order == prompt::OptionOrder::STUDY {
                &self.spec.noise_seeds
            } else {
                &[]
            };
        let seeds = self
            .spec
            .seeds
            .iter()
            .map(|s| (*s, SeedSet::Study))
            .chain(noise.iter().map(|s| (*s, SeedSet::Noise)));
        seeds
            .map(|(seed, seed_set)| {
                let mut rng = Rng::for_record(
                    seed,
                    self.slug,
                    self.spec.scheme.as_str(),
                    self.precision.as_str(),
                    &item.category,
                    item.example_id,
                    &order.as_str(),
                );
                let first = rng.sample(&dist.pt);
                Draw {
                    seed,
                    seed_set,
                    rng,
                    first,
                    letter: self.letters.letter_of(first),
                    generated: Vec::new(),
                    ms: 0.0,
                }
            })
            .collect()
    }

    /// The records of one item's draws (each finished: a letter, or its generated tokens).
    pub(super) fn records(
        &self,
        item: &Item,
        order: prompt::OptionOrder,
        dist: &Dist,
        draws: Vec<Draw>,
    ) -> Result<Vec<Record>> {
        let tok = &self.src.tok;
        // Letter probabilities, stored per dataset option (ans0, ans1, ans2).
        let prob = order.to_dataset(self.letters.mass(&dist.p1));
        let samp = order.to_dataset(self.letters.mass(&dist.pt));
        draws
            .into_iter()
            .map(|d| {
                let (sampled_text, letter) = match d.letter {
                    Some(letter) => (tok.decode(&[d.first])?, Some(letter)),
                    None => {
                        let text = tok.decode(&d.generated)?;
                        let answer = prompt::parse_answer(&text);
                        (text, answer)
                    }
                };
                let answer = letter.map(|l| order.dataset_index(l));
                Ok(Record {
                    category: item.category.clone(),
                    example_id: item.example_id,
                    context_condition: item.context_condition.clone(),
                    question_polarity: item.question_polarity.clone(),
                    seed: d.seed as i64,
                    prob,
                    letter_mass: prob.iter().sum(),
                    samp_prob: samp,
                    seed_set: d.seed_set,
                    option_order: order.as_str(),
                    sampled_text,
                    answer,
                    role: item.role_of(answer),
                    latency_ms: d.ms,
                })
            })
            .collect()
    }

    /// Decode up to the token limit after a first token that is not a bare letter. Seeds of
    /// one item often generate the same tokens; `memo` keeps the distribution and cache after
    /// each generated prefix, so a shared prefix is computed once (`forwards` counts the rest).
    fn continue_from(
        &self,
        first: u32,
        cache: &KvCache,
        rng: &mut Rng,
        memo: &mut HashMap<Vec<u32>, (Rc<Vec<f64>>, KvCache)>,
        forwards: &mut u64,
    ) -> Result<Vec<u32>> {
        let stops = &self.src.tok.stop_ids;
        let mut generated = Vec::new();
        let mut next = first;
        let mut cache = cache.clone();
        loop {
            if stops.contains(&next) {
                break;
            }
            generated.push(next);
            if generated.len() >= prompt::MAX_NEW_TOKENS {
                break;
            }
            let (p, c) = match memo.get(&generated) {
                Some((p, c)) => (p.clone(), c.clone()),
                None => {
                    let (logits, c) = self.built.model.forward(&[next], &cache)?;
                    *forwards += 1;
                    let p = Rc::new(softmax(&logits.to_vec1::<f32>()?, prompt::TEMPERATURE));
                    memo.insert(generated.clone(), (p.clone(), c.clone()));
                    (p, c)
                }
            };
            cache = c;
            next = rng.sample(&p);
        }
        Ok(generated)
    }
}
