//! Batched continuation: every seed of a batch whose first sampled token is not a letter
//! decodes its next tokens together, one forward pass per step for all of them. Seeds of one
//! prompt that generated the same tokens so far share a row (as one seed at a time shares a
//! memo), so each distinct continuation is computed once. Each step's rows take their keys
//! and values from their parent row of the previous step (a ragged cache: rows keep their
//! own lengths and positions).

use super::score::{Draw, Scorer};
use crate::engine::KvCache;
use crate::engine::download::Download;
use crate::engine::sample::softmax;
use crate::error::Result;
use crate::prompt;
use std::collections::HashMap;

/// A continuation in progress: draw `d` of row `row`.
struct Active {
    row: usize,
    d: usize,
    next: u32,
}

impl Scorer<'_> {
    /// Continue every draw of `draws` (one list per row of `cache`, the batch's ragged cache
    /// after its prompts) whose first token is not a letter, up to the token limit; fills
    /// each draw's generated tokens. Returns the decoding rows computed per batch row.
    pub(super) fn decode_batched(
        &self,
        draws: &mut [Vec<Draw>],
        cache: &KvCache,
    ) -> Result<Vec<u64>> {
        let mut forwards = vec![0u64; draws.len()];
        let mut active = Vec::new();
        for (row, ds) in draws.iter_mut().enumerate() {
            for (d, draw) in ds.iter_mut().enumerate() {
                if draw.letter.is_none() {
                    active.push(Active {
                        row,
                        d,
                        next: draw.first,
                    });
                }
            }
        }
        // The cache rows of the previous step, keyed by (batch row, tokens generated before).
        let mut parents: HashMap<(usize, Vec<u32>), usize> =
            (0..draws.len()).map(|r| ((r, Vec::new()), r)).collect();
        let mut cache = cache.clone();
        while !active.is_empty() {
            active.retain(|a| self.advance(&mut draws[a.row][a.d], a.next));
            if active.is_empty() {
                break;
            }
            let (keys, at) = step_rows(draws, &active);
            let parent: Vec<usize> = keys
                .iter()
                .map(|(row, toks)| parents[&(*row, toks[..toks.len() - 1].to_vec())])
                .collect();
            let tokens: Vec<[u32; 1]> = keys.iter().map(|(_, g)| [g[g.len() - 1]]).collect();
            let tokens: Vec<&[u32]> = tokens.iter().map(|t| t.as_slice()).collect();
            let (logits, next_cache) = self
                .built
                .model
                .forward_batch(&tokens, &cache.select(&parent)?)?;
            let probs = distributions(Download::start(&logits)?.wait()?);
            for (row, _) in &keys {
                forwards[*row] += 1;
            }
            for (a, &k) in active.iter_mut().zip(&at) {
                a.next = draws[a.row][a.d].rng.sample(&probs[k]);
            }
            parents = keys
                .into_iter()
                .enumerate()
                .map(|(k, key)| (key, k))
                .collect();
            cache = next_cache;
        }
        Ok(forwards)
    }

    /// Take `next` into a draw's generated tokens, as one seed's decoding does; whether
    /// the draw needs another forward pass (false after a stop token or at the limit).
    fn advance(&self, draw: &mut Draw, next: u32) -> bool {
        if self.src.tok.stop_ids.contains(&next) {
            return false;
        }
        draw.generated.push(next);
        draw.generated.len() < prompt::MAX_NEW_TOKENS
    }
}

/// The distinct (row, generated tokens) of the active draws, in first-seen order, and the
/// index of each active draw's key.
fn step_rows(draws: &[Vec<Draw>], active: &[Active]) -> (Vec<(usize, Vec<u32>)>, Vec<usize>) {
    let mut keys: Vec<(usize, Vec<u32>)> = Vec::new();
    let mut index: HashMap<(usize, Vec<u32>), usize> = HashMap::new();
    let at = active
        .iter()
        .map(|a| {
            let key = (a.row, draws[a.row][a.d].generated.clone());
            *index.entry(key.clone()).or_insert_with(|| {
                keys.push(key);
                keys.len() - 1
            })
        })
        .collect();
    (keys, at)
}

/// The sampling distributions of a step's rows.
fn distributions(logits: Vec<Vec<f32>>) -> Vec<Vec<f64>> {
    use rayon::prelude::*;
    logits
        .par_iter()
        .map(|l| softmax(l, prompt::TEMPERATURE))
        .collect()
}
