//! The perplexity stage: perplexity and KLD against BF16 for one model over a corpus (a
//! file, or the run's own BBQ prompts), at every precision of the plan. A corpus already
//! scored (same sha256) is not scored again.

use super::job::{Event, Events};
use super::{PlannedModel, PplSpec, StudySpec, build_precision};
use crate::bbq::Selection;
use crate::engine::Precision;
use crate::engine::perplexity::{self, Corpus, Sums};
use crate::engine::quant::{self, Built};
use crate::engine::source::SourceModel;
use crate::error::{Error, Result};
use crate::prompt::ChatTemplate;
use crate::store::perplexity::PplRow;
use crate::store::{self, ResultsDir};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Perplexity and KLD against BF16 for one model, over its corpus, at every precision.
pub(super) struct PplStage<'a> {
    pub(super) spec: &'a StudySpec,
    pub(super) ppl: &'a PplSpec,
    pub(super) m: &'a PlannedModel,
    pub(super) src: &'a SourceModel,
    pub(super) template: &'a ChatTemplate,
    pub(super) device: &'a candle_core::Device,
    pub(super) cancel: &'a AtomicBool,
}

impl PplStage<'_> {
    fn corpus(&self, sel: &Selection) -> Result<Corpus> {
        let (name, docs) = match &self.ppl.corpus {
            Some(path) => (
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| path.display().to_string()),
                perplexity::read_documents(path, self.template)?,
            ),
            None => (
                "bbq-prompts".to_string(),
                sel.items
                    .iter()
                    .map(|i| self.spec.protocol.prompt(self.template, i))
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        let tokens = perplexity::tokenize(&self.src.tok, &docs)?;
        perplexity::chunk(&name, &tokens, self.ppl.seq_len, self.ppl.sequences)
    }

    /// BF16 built from the model's source: what every precision is compared with.
    pub(super) fn reference(&self) -> Result<Built> {
        quant::build_cancellable(
            self.src,
            Precision::Bf16,
            self.spec.scheme,
            self.spec.compute,
            self.device,
            self.cancel,
        )
    }

    fn build(&self, p: Precision) -> Result<Built> {
        build_precision(self.spec, self.m, self.src, p, self.device, self.cancel)
    }

    /// The corpus to measure, unless every precision already has rows for it.
    pub(super) fn pending_corpus(
        &self,
        dir: &ResultsDir,
        sel: &Selection,
    ) -> Result<Option<Corpus>> {
        let corpus = self.corpus(sel)?;
        Ok((!self.already_scored(dir, &corpus)?).then_some(corpus))
    }

    /// Compute and write the rows unless the same corpus was already scored; `done` holds
    /// the sums already measured in this run (while scoring, with what scoring built), which
    /// are not measured again. Returns the manifest's summary of what was done.
    pub(super) fn run(
        &self,
        dir: &ResultsDir,
        sel: &Selection,
        events: &Events,
        done: Vec<(Precision, Sums)>,
    ) -> Result<Option<serde_json::Value>> {
        let Some(corpus) = self.pending_corpus(dir, sel)? else {
            return Ok(None);
        };
        events.send(Event::Stage(self.announce(&corpus)));
        let t0 = Instant::now();
        let sums = self.measure_all(&corpus, events, done)?;
        self.write(dir, &corpus, &sums, t0.elapsed().as_secs_f64())
            .map(Some)
    }

    /// The line that announces the stage: the model, sequences and tokens.
    pub(super) fn announce(&self, corpus: &Corpus) -> String {
        let n_tokens: usize = corpus.sequences.iter().map(|s| s.len() - 1).sum();
        format!(
            "{}: perplexity over {} sequences ({n_tokens} tokens)",
            self.m.slug,
            corpus.sequences.len()
        )
    }

    /// Write the rows of every precision's sums; returns the manifest's summary.
    pub(super) fn write(
        &self,
        dir: &ResultsDir,
        corpus: &Corpus,
        sums: &[(Precision, Sums)],
        secs: f64,
    ) -> Result<serde_json::Value> {
        let scheme = self.spec.scheme.as_str();
        store::perplexity::write(dir, &self.m.slug, scheme, &self.rows(corpus, sums))?;
        let n_tokens: usize = corpus.sequences.iter().map(|s| s.len() - 1).sum();
        Ok(json!({
            "corpus": corpus.name,
            "corpus_sha256": corpus.sha256,
            "sequences": corpus.sequences.len(),
            "seq_len": self.ppl.seq_len,
            "tokens": n_tokens,
            "secs": secs,
            "computed": "f32 log-softmax over the full vocabulary; KL(P_bf16 || P_precision) per position",
        }))
    }

    /// Whether every precision already has rows for this model, scheme and corpus.
    fn already_scored(&self, dir: &ResultsDir, corpus: &Corpus) -> Result<bool> {
        let (m, scheme) = (self.m, self.spec.scheme.as_str());
        let have = store::perplexity::read(dir)?;
        Ok(self.spec.precisions.iter().all(|p| {
            have.iter().any(|r| {
                r.model == m.slug
                    && r.scheme == scheme
                    && r.precision == p.as_str()
                    && r.corpus_sha256 == corpus.sha256
            })
        }))
    }

    /// The sums of every precision against BF16, in plan order: those in `done` as they
    /// are, the others measured here (BF16 built once, each other precision built again).
    fn measure_all(
        &self,
        corpus: &Corpus,
        events: &Events,
        done: Vec<(Precision, Sums)>,
    ) -> Result<Vec<(Precision, Sums)>> {
        let mut bf16: Option<Built> = None;
        let mut sums = Vec::new();
        for &p in &self.spec.precisions {
            if let Some(&(_, s)) = done.iter().find(|(q, _)| *q == p) {
                sums.push((p, s));
                continue;
            }
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            events.send(Event::Stage(format!(
                "{} {}: perplexity",
                self.m.slug,
                p.as_str()
            )));
            let reference = match bf16.take() {
                Some(b) => b,
                None => self.reference()?,
            };
            let s = if p == Precision::Bf16 {
                perplexity::measure(&reference.model, None, corpus)?
            } else {
                let built = self.build(p)?;
                perplexity::measure(&reference.model, Some(&built.model), corpus)?
            };
            bf16 = Some(reference);
            crate::store::failpoint::hit("perplexity");
            sums.push((p, s));
        }
        Ok(sums)
    }

    /// The rows as stored: per-token means, and the change of perplexity against BF16.
    fn rows(&self, corpus: &Corpus, sums: &[(Precision, Sums)]) -> Vec<PplRow> {
        let base = sums
            .iter()
            .find(|(p, _)| *p == Precision::Bf16)
            .map(|(_, s)| s.perplexity());
        sums.iter()
            .map(|(p, s)| PplRow {
                model: self.m.slug.clone(),
                scheme: self.spec.scheme.as_str().to_string(),
                precision: p.as_str().to_string(),
                corpus: corpus.name.clone(),
                corpus_sha256: corpus.sha256.clone(),
                sequences: corpus.sequences.len() as u64,
                seq_len: self.ppl.seq_len as u64,
                tokens: s.tokens,
                nll: s.nll / s.tokens as f64,
                perplexity: s.perplexity(),
                delta_ppl_pct: base
                    .filter(|_| *p != Precision::Bf16)
                    .map(|b| 100.0 * (s.perplexity() - b) / b),
                mean_kld: s.mean_kld(),
                top1_agreement: s.top1_same as f64 / s.tokens as f64,
            })
            .collect()
    }
}
