//! Scoring: one model at one precision turns items into records. One forward pass per
//! prompt (or per batch of prompts after their shared prefix) gives the next-token
//! distribution; each seed samples from it with an RNG derived from the record's identity, so
//! batching, resuming and shards never change an answer.

use super::{StudySpec, common_prefix};
use crate::bbq::Item;
use crate::engine::download::Download;
use crate::engine::quant::Built;
use crate::engine::sample::{Letters, Rng, Softmax, softmax};
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

/// Where a scorer's time went, for benchmarks: queuing the forward passes of the prompts on
/// the device (the host's share of a forward; on the CPU the whole forward), waiting for
/// their logits, the next-token distributions, and sampling (decoding continuations
/// included). Seconds, summed over calls.
#[derive(Debug, Default)]
pub struct Phases {
    pub launch: std::cell::Cell<f64>,
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

/// A prompt's next-token distribution: its logits with the normaliser of the softmax at
/// T = 1 (only the letters' probabilities are needed there, computed when asked), and the
/// whole distribution at the sampling temperature, which draws walk through. The bits are
/// those of the full softmax vectors.
pub(super) struct Dist {
    logits: Vec<f32>,
    s1: Softmax,
    pub(super) pt: Vec<f64>,
}

impl Dist {
    pub(super) fn new(logits: Vec<f32>) -> Dist {
        Dist {
            s1: Softmax::new(&logits, 1.0),
            pt: softmax(&logits, prompt::TEMPERATURE),
            logits,
        }
    }

    /// The letters' probability mass at T = 1 and at the sampling temperature.
    fn masses(&self, letters: &Letters) -> ([f64; 3], [f64; 3]) {
        let p1 = letters.mass_of(|i| self.logits.get(i).map(|&l| self.s1.p(l)));
        (p1, letters.mass(&self.pt))
    }

    /// One draw at the sampling temperature.
    pub(super) fn sample(&self, rng: &mut Rng) -> u32 {
        rng.sample(&self.pt)
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
        let dist = Dist::new(logits);
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

    /// Score a part's items in one option order one prompt at a time (batch size 1), each
    /// prompt reusing the previous one's cached prefix; `each` gets every prompt's results,
    /// in item order. Stops at the next prompt once `cancel` is set.
    pub fn score_in_turn(
        &self,
        part: &[Item],
        order: prompt::OptionOrder,
        cancel: &AtomicBool,
        mut each: impl FnMut(Scored) -> Result<()>,
    ) -> Result<()> {
        let mut cache = KvCache::default();
        let mut prev: Vec<u32> = Vec::new();
        for item in part {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            each(self.score(item, order, &mut cache, &mut prev)?)?;
        }
        Ok(())
    }

    /// Score a part's items in one option order (see [`Scorer::score_units`]). Results are
    /// in item order.
    pub fn score_part(
        &self,
        part: &[Item],
        order: prompt::OptionOrder,
        cancel: &AtomicBool,
    ) -> Result<Vec<Scored>> {
        let mut out = Vec::new();
        let unit = Unit { items: part, order };
        self.score_units(
            &[unit],
            cancel,
            &Phases::default(),
            |_, _| {},
            |_, scored| {
                out = scored;
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// Score units (a part's items in one option order each), `batch_size` prompts per
    /// forward pass, and hand each unit's results, in item order, to `done` as soon as its
    /// last batch is finished, units in order. Within a unit, the common prefix is computed
    /// once and prompts that share a context are batched together (see [`batches`]), groups
    /// ordered by length so each batch pads little: batches depend only on the unit's items,
    /// so a resumed or sharded run computes the same ones.
    ///
    /// Batches run as a stream across unit boundaries: each batch's forward passes are
    /// queued with the copy of its logits to the host right behind them; once batch i's
    /// logits are in, batch i + 1 is queued on this thread while other cores turn batch i's
    /// logits into distributions, and the device runs batch i + 1 while the host samples
    /// batch i and builds its records. All device work is issued from this thread (the
    /// device's stream is per thread). The work per record and its RNG do not depend on
    /// this order, so neither do the records.
    ///
    /// `scored` sees each batch's prompts of unit `u` as they are scored (for progress);
    /// `done` gets a unit's prompts in the unit's order once all its batches are scored.
    pub fn score_units(
        &self,
        units: &[Unit],
        cancel: &AtomicBool,
        phases: &Phases,
        mut scored: impl FnMut(usize, &[Scored]),
        mut done: impl FnMut(usize, Vec<Scored>) -> Result<()>,
    ) -> Result<()> {
        if let Some(u) = units.iter().position(|u| u.items.is_empty()) {
            return Err(Error::Model(format!("scoring unit {u} has no items")));
        }
        let mut prepared: Vec<Option<Prepared>> = units.iter().map(|_| None).collect();
        let mut step = self.step_after(units, &mut prepared, None)?;
        let mut pending = match step {
            Some(s) => Some(self.launch(&prepared, s, phases)?),
            None => None,
        };
        while let (Some((u, k)), Some(pass)) = (step, pending.take()) {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            step = self.step_after(units, &mut prepared, Some((u, k)))?;
            let t0 = Instant::now();
            let (logits, cache, fresh) = pass;
            let logits = logits.wait()?;
            Phases::add(&phases.forward, t0);
            let (dists, next) = std::thread::scope(|scope| {
                let dists = scope.spawn(|| distributions(logits));
                let next = step.map(|s| self.launch(&prepared, s, phases)).transpose();
                (dists.join(), next)
            });
            let (dists, secs) =
                dists.map_err(|_| Error::Model("computing distributions failed".into()))?;
            phases.dists.set(phases.dists.get() + secs);
            pending = next?;
            let unit = prepared[u]
                .as_mut()
                .ok_or_else(|| Error::Model("a scoring unit was not prepared".into()))?;
            let batch = &unit.batches[k];
            let items: Vec<&Item> = batch.iter().map(|&i| &units[u].items[i]).collect();
            let rows = unit.rows(batch);
            let pass = Pass {
                dists,
                cache,
                fresh,
                started: t0,
            };
            let batch_scored = self.finish_batch(&items, units[u].order, &rows, pass, phases)?;
            scored(u, &batch_scored);
            for (&i, r) in batch.iter().zip(batch_scored) {
                unit.out[i] = Some(r);
            }
            if k + 1 == unit.batches.len()
                && let Some(unit) = prepared[u].take()
            {
                done(u, unit.finish()?)?;
            }
        }
        Ok(())
    }

    /// The batch after `step` (unit, batch): the unit's next batch, else the next unit's
    /// first, preparing that unit (its tokens, batches and prefix) on the way.
    fn step_after(
        &self,
        units: &[Unit],
        prepared: &mut [Option<Prepared>],
        step: Option<(usize, usize)>,
    ) -> Result<Option<(usize, usize)>> {
        let (u, k) = match step {
            None => (0, 0),
            Some((u, k)) => match &prepared[u] {
                Some(p) if k + 1 < p.batches.len() => return Ok(Some((u, k + 1))),
                _ => (u + 1, 0),
            },
        };
        let Some(unit) = units.get(u) else {
            return Ok(None);
        };
        let tokens = {
            use rayon::prelude::*;
            unit.items
                .par_iter()
                .map(|item| self.tokens(item, unit.order))
                .collect::<Result<Vec<_>>>()?
        };
        let prefix = self.prefix(&tokens)?;
        let batches = batches(&tokens, self.spec.batch_size.max(1));
        prepared[u] = Some(Prepared {
            out: vec![None; tokens.len()],
            tokens,
            batches,
            prefix,
        });
        Ok(Some((u, k)))
    }

    /// Queue the forward passes of batch `k` of unit `u` on the device.
    fn launch(
        &self,
        prepared: &[Option<Prepared>],
        (u, k): (usize, usize),
        phases: &Phases,
    ) -> Result<(Download, KvCache, Vec<u64>)> {
        let t0 = Instant::now();
        let unit = prepared[u]
            .as_ref()
            .ok_or_else(|| Error::Model("a scoring unit was not prepared".into()))?;
        let (logits, cache, fresh) =
            self.forward_rows(&unit.rows(&unit.batches[k]), &unit.prefix)?;
        let logits = Download::start(&logits)?;
        Phases::add(&phases.launch, t0);
        Ok((logits, cache, fresh))
    }

    /// A batch after its forward passes: each prompt's next-token distribution, then each
    /// seed of each prompt samples.
    fn finish_batch(
        &self,
        items: &[&Item],
        order: prompt::OptionOrder,
        rows: &[&[u32]],
        pass: Pass,
        phases: &Phases,
    ) -> Result<Vec<Scored>> {
        use rayon::prelude::*;
        let Pass {
            dists,
            cache,
            fresh,
            started: t0,
        } = pass;
        let t2 = Instant::now();
        let pass_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut draws: Vec<Vec<Draw>> = items
            .par_iter()
            .zip(&dists)
            .map(|(item, dist)| self.draws(item, order, dist))
            .collect();
        let forwards = self.decode_batched(&mut draws, &cache)?;
        let ms = pass_ms + t2.elapsed().as_secs_f64() * 1e3;
        let out = draws
            .into_par_iter()
            .enumerate()
            .map(|(b, mut ds)| {
                for d in &mut ds {
                    d.ms = if d.letter.is_some() { pass_ms } else { ms };
                }
                let recs = self.records(items[b], order, &dists[b], ds)?;
                Ok((recs, rows[b].len() as u64, fresh[b] + forwards[b]))
            })
            .collect::<Result<Vec<_>>>();
        Phases::add(&phases.sample, t2);
        out
    }

    /// The keys and values of the prefix all of a part's prompts share (the system message
    /// and chat header), computed once for all its batches; each prompt keeps at least one
    /// token of its own.
    fn prefix(&self, tokens: &[Vec<u32>]) -> Result<Prefix> {
        let len = tokens
            .iter()
            .map(|r| common_prefix(&tokens[0], r).min(r.len() - 1))
            .min()
            .unwrap_or(0);
        let cache = match len {
            0 => KvCache::default(),
            n => self
                .built
                .model
                .extend(&[&tokens[0][..n]], &KvCache::default())?,
        };
        Ok(Prefix { len, cache })
    }

    /// The forward passes of a batch's prompts after the part's common prefix: the
    /// context each group of prompts shares (an item's two question polarities) once
    /// per group, then each prompt's own rest. Returns the next-token logits `[rows, vocab]`,
    /// the batch's ragged cache (one row per prompt) and the tokens computed per prompt
    /// (shared tokens counted on the first prompt that shares them).
    fn forward_rows(
        &self,
        rows: &[&[u32]],
        prefix: &Prefix,
    ) -> Result<(candle_core::Tensor, KvCache, Vec<u64>)> {
        let model = &self.built.model;
        let shared = prefix.len;
        let prefix = &prefix.cache;
        let mut fresh: Vec<u64> = vec![0; rows.len()];
        let groups = context_groups(rows, shared);
        if groups.iter().all(|g| g.rows.len() == 1) {
            let suffixes: Vec<&[u32]> = rows.iter().map(|r| &r[shared..]).collect();
            for (f, s) in fresh.iter_mut().zip(&suffixes) {
                *f += s.len() as u64;
            }
            let (logits, cache) = model.forward_batch(&suffixes, prefix)?;
            return Ok((logits, cache, fresh));
        }
        let contexts: Vec<&[u32]> = groups
            .iter()
            .map(|g| &rows[g.rows[0]][shared..g.len])
            .collect();
        let mut parent = vec![0; rows.len()];
        for (k, g) in groups.iter().enumerate() {
            fresh[g.rows[0]] += (g.len - shared) as u64;
            for &b in &g.rows {
                parent[b] = k;
            }
        }
        let context_cache = model.extend(&contexts, prefix)?;
        let rests: Vec<&[u32]> = rows
            .iter()
            .enumerate()
            .map(|(b, r)| &r[groups[parent[b]].len..])
            .collect();
        for (f, s) in fresh.iter_mut().zip(&rests) {
            *f += s.len() as u64;
        }
        let (logits, cache) = model.forward_batch(&rests, &context_cache.select(&parent)?)?;
        Ok((logits, cache, fresh))
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
                let first = dist.sample(&mut rng);
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
        let (p1, pt) = dist.masses(self.letters);
        let prob = order.to_dataset(p1);
        let samp = order.to_dataset(pt);
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

/// What [`Scorer::score_units`] scores: a part's items in one option order.
pub struct Unit<'p> {
    pub items: &'p [Item],
    pub order: prompt::OptionOrder,
}

/// One prompt's records, its prompt tokens and the tokens computed for it.
pub type Scored = (Vec<Record>, u64, u64);

/// A unit being scored: its prompts' tokens, its batches, its common prefix and the
/// results so far.
struct Prepared {
    tokens: Vec<Vec<u32>>,
    batches: Vec<Vec<usize>>,
    prefix: Prefix,
    out: Vec<Option<Scored>>,
}

impl Prepared {
    fn rows(&self, batch: &[usize]) -> Vec<&[u32]> {
        batch.iter().map(|&i| self.tokens[i].as_slice()).collect()
    }

    /// The unit's results in item order, the common prefix counted as computed on the
    /// first prompt of the first batch.
    fn finish(self) -> Result<Vec<Scored>> {
        let mut out = self.out;
        if let Some(Some(first)) = self
            .batches
            .first()
            .and_then(|b| b.first())
            .map(|&i| out[i].as_mut())
        {
            first.2 += self.prefix.len as u64;
        }
        out.into_iter()
            .map(|r| r.ok_or_else(|| Error::Model("a prompt of the part was not scored".into())))
            .collect()
    }
}

/// The part's common prefix and its cache.
struct Prefix {
    len: usize,
    cache: KvCache,
}

/// Tokens beyond the batch's common prefix that prompts must share to be computed as one
/// context (an item's two polarities share their whole context, dozens of tokens; unrelated
/// prompts share a word or two).
const MIN_CONTEXT: usize = 8;

/// A batch's forward passes, run: the next-token logits per prompt, the batch's cache, the
/// tokens computed per prompt, and when the batch's turn began (for latencies).
struct Pass {
    dists: Vec<Dist>,
    cache: KvCache,
    fresh: Vec<u64>,
    started: Instant,
}

/// Each row's next-token distribution, on all cores, and the seconds it took.
fn distributions(logits: Vec<Vec<f32>>) -> (Vec<Dist>, f64) {
    use rayon::prelude::*;
    let t0 = Instant::now();
    let dists = logits.into_par_iter().map(Dist::new).collect();
    (dists, t0.elapsed().as_secs_f64())
}

/// Prompts of a batch that share a context: the rows and the length of the shared tokens
/// (each row keeps at least one token of its own).
#[derive(Debug, PartialEq)]
struct Group {
    rows: Vec<usize>,
    len: usize,
}

/// The batch's rows grouped by shared context, in the order of their first rows: a row
/// joins the first group whose first row shares at least `MIN_CONTEXT` tokens past `shared`
/// with it. Groups of one row have `len == shared`.
fn context_groups(rows: &[&[u32]], shared: usize) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (b, r) in rows.iter().enumerate() {
        let joined = groups.iter_mut().find_map(|g| {
            let first = rows[g.rows[0]];
            let n = common_prefix(first, r)
                .min(r.len() - 1)
                .min(first.len() - 1);
            (n >= shared + MIN_CONTEXT).then_some((g, n))
        });
        match joined {
            Some((g, n)) => {
                g.len = if g.rows.len() == 1 { n } else { g.len.min(n) };
                g.rows.push(b);
            }
            None => groups.push(Group {
                rows: vec![b],
                len: shared,
            }),
        }
    }
    // A single row's context is its own rest; it still needs a row in the context pass.
    for g in &mut groups {
        if g.rows.len() == 1 {
            g.len = rows[g.rows[0]].len() - 1;
        }
    }
    groups
}

/// A part's prompts cut into batches of at most `size` (indices into `tokens`): prompts that
/// share a context (an item's two polarities) go together, groups ordered by the length of
/// their longest prompt so each batch pads little, ties in part order. Depends only on the
/// part's prompts, so a resumed or sharded run computes the same batches.
fn batches(tokens: &[Vec<u32>], size: usize) -> Vec<Vec<usize>> {
    let all: Vec<&[u32]> = tokens.iter().map(|t| t.as_slice()).collect();
    let shared = all
        .iter()
        .map(|r| common_prefix(all[0], r).min(r.len().saturating_sub(1)))
        .min()
        .unwrap_or(0);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut lex: Vec<usize> = (0..tokens.len()).collect();
    lex.sort_by(|&a, &b| tokens[a].cmp(&tokens[b]).then(a.cmp(&b)));
    for w in lex {
        match groups.last_mut() {
            Some(g) if common_prefix(&tokens[g[0]], &tokens[w]) >= shared + MIN_CONTEXT => {
                g.push(w)
            }
            _ => groups.push(vec![w]),
        }
    }
    for g in &mut groups {
        g.sort_unstable();
    }
    let longest = |g: &Vec<usize>| g.iter().map(|&i| tokens[i].len()).max().unwrap_or(0);
    groups.sort_by_key(|g| (longest(g), g[0]));
    let mut out: Vec<Vec<usize>> = Vec::new();
    for g in groups {
        match out.last_mut() {
            Some(b) if b.len() + g.len() <= size => b.extend(g),
            _ => out.push(g),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_items_two_polarities_share_a_batch_and_a_context() {
        // Prompts: a shared header [1, 2], then contexts; 0 and 2 share a context of 10 tokens.
        let ctx: Vec<u32> = (10..20).collect();
        let p = |tail: &[u32], ctx: &[u32]| -> Vec<u32> { [&[1u32, 2][..], ctx, tail].concat() };
        let tokens = vec![
            p(&[50, 51], &ctx),
            p(&[60], &[30, 31, 32]),
            p(&[52, 53, 54], &ctx),
            p(&[61, 62], &[40, 41]),
        ];
        // Batches of 2: the pair first would be longest; groups by longest prompt: {3} (6
        // tokens), {1} (6), then {0, 2} (15).
        assert_eq!(batches(&tokens, 2), vec![vec![1, 3], vec![0, 2]]);
        let rows: Vec<&[u32]> = [0, 2].iter().map(|&i| tokens[i].as_slice()).collect();
        assert_eq!(
            context_groups(&rows, 2),
            vec![Group {
                rows: vec![0, 1],
                len: 12
            }]
        );
        let rows: Vec<&[u32]> = [1, 3].iter().map(|&i| tokens[i].as_slice()).collect();
        assert_eq!(
            context_groups(&rows, 2),
            vec![
                Group {
                    rows: vec![0],
                    len: 5
                },
                Group {
                    rows: vec![1],
                    len: 5
                }
            ]
        );
    }
}
