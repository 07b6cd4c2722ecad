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

/// A prompt's next-token distribution at T = 1 and at the sampling temperature.
struct Dist {
    p1: Vec<f64>,
    pt: Vec<f64>,
}

impl Dist {
    fn new(logits: &[f32]) -> Dist {
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
            for (&i, r) in batch.iter().zip(self.score_batch(&items, order, &rows)?) {
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
        let dists: Vec<Dist> = logits.par_iter().map(|l| Dist::new(l)).collect();
        let mut out = Vec::with_capacity(rows.len());
        for (b, (item, dist)) in items.iter().zip(&dists).enumerate() {
            let full = cache.row(b, rows[b].len())?;
            let (recs, forwards) = self.sample(item, order, dist, &full, t0)?;
            let fresh = suffixes[b].len() + if b == 0 { shared } else { 0 };
            out.push((recs, rows[b].len() as u64, fresh as u64 + forwards));
        }
        Ok(out)
    }

    /// Each seed samples from one prompt's distribution (continuing after a first token
    /// that is not a letter). Returns the records and the decoding steps computed.
    fn sample(
        &self,
        item: &Item,
        order: prompt::OptionOrder,
        dist: &Dist,
        full: &KvCache,
        t0: Instant,
    ) -> Result<(Vec<Record>, u64)> {
        let tok = &self.src.tok;
        let pt = &dist.pt;
        // Letter probabilities, stored per dataset option (ans0, ans1, ans2).
        let prob = order.to_dataset(self.letters.mass(&dist.p1));
        let samp = order.to_dataset(self.letters.mass(pt));
        let pass_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut out = Vec::with_capacity(self.spec.seeds.len());
        let mut memo = HashMap::new();
        let mut forwards = 0u64;
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
        for (seed, seed_set) in seeds {
            let t1 = Instant::now();
            let mut rng = Rng::for_record(
                seed,
                self.slug,
                self.spec.scheme.as_str(),
                self.precision.as_str(),
                &item.category,
                item.example_id,
                &order.as_str(),
            );
            let first = rng.sample(pt);
            let (sampled_text, letter) = match self.letters.letter_of(first) {
                Some(letter) => (tok.decode(&[first])?, Some(letter)),
                None => {
                    let generated =
                        self.continue_from(first, full, &mut rng, &mut memo, &mut forwards)?;
                    let text = tok.decode(&generated)?;
                    let answer = prompt::parse_answer(&text);
                    (text, answer)
                }
            };
            let answer = letter.map(|l| order.dataset_index(l));
            out.push(Record {
                category: item.category.clone(),
                example_id: item.example_id,
                context_condition: item.context_condition.clone(),
                question_polarity: item.question_polarity.clone(),
                seed: seed as i64,
                prob,
                letter_mass: prob.iter().sum(),
                samp_prob: samp,
                seed_set,
                option_order: order.as_str(),
                sampled_text,
                answer,
                role: item.role_of(answer),
                latency_ms: pass_ms + t1.elapsed().as_secs_f64() * 1e3,
            });
        }
        Ok((out, forwards))
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
