//! The study job: the plan (models × scheme × precisions × seeds × items) and the run that
//! executes it on a background thread, reporting progress over a channel, checking a cancel
//! flag between items, writing each finished part and skipping parts already on disk.
//!
//! Determinism: items are processed in plan order, in parts of `part_size`; the KV cache of
//! a shared prompt prefix is reused only within a part, and each record's RNG depends only
//! on the record's identity. So resuming after a crash recomputes exactly what was lost, and
//! shards (part k of every model and precision goes to shard k mod N) together compute exactly
//! what one run does.

mod score;
pub use score::Scorer;

use crate::bbq::{Item, Selection};
use crate::engine::perplexity::{self, Corpus};
use crate::engine::quant::{self, Built};
use crate::engine::sample::Letters;
use crate::engine::source::{self, ModelSpec, Resolved, SourceModel};
use crate::engine::{Compute, KvCache, Precision, Scheme};
use crate::error::{Error, Result};
use crate::prompt::{self, ChatTemplate};
use crate::store::perplexity::PplRow;
use crate::store::{self, Record, ResultsDir};
use candle_core::DType;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Instant;

/// Everything that defines a run besides the items.
#[derive(Debug, Clone)]
pub struct StudySpec {
    pub models: Vec<Resolved>,
    pub scheme: Scheme,
    pub precisions: Vec<Precision>,
    pub seeds: Vec<u64>,
    /// Extra BF16 seeds (`seed_set = noise`) that measure the noise floor.
    pub noise_seeds: Vec<u64>,
    pub compute: Compute,
    pub device: String,
    pub part_size: usize,
    /// Prompts per forward pass: 1 scores prompt by prompt, reusing the previous prompt's
    /// prefix; more pads prompts of similar length into one batch after their shared prefix.
    pub batch_size: usize,
    /// Perplexity and KLD against BF16 after scoring, when set.
    pub ppl: Option<PplSpec>,
    /// The prompt: the study's unless overridden.
    pub protocol: prompt::Protocol,
    /// Orders in which each item's options are shown; `012` (the study's) is among them.
    pub option_orders: Vec<prompt::OptionOrder>,
}

/// The perplexity stage: how many sequences of how many tokens, from which corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct PplSpec {
    pub sequences: usize,
    pub seq_len: usize,
    /// A corpus file; `None` scores the run's own BBQ prompts.
    pub corpus: Option<PathBuf>,
}

/// Progress reported by a running study.
#[derive(Debug, Clone)]
pub enum Event {
    /// What the run will do: records in the plan and records already on disk.
    Planned {
        total: u64,
        done: u64,
        /// Per precision (pooled over models): (precision, records in the plan, already done).
        per_precision: Vec<(Precision, u64, u64)>,
    },
    /// A stage starts (loading, quantizing, scoring).
    Stage(String),
    /// Records finished at a precision, with the prompt tokens they took.
    Progress {
        precision: Precision,
        records: u64,
        prompt_tokens: u64,
    },
    /// Throughput of one finished model-precision.
    Measured {
        model: String,
        precision: Precision,
        items: usize,
        prompt_tokens: u64,
        computed_tokens: u64,
        secs: f64,
    },
}

/// A model with its fingerprint, as the plan names it.
#[derive(Debug, Clone)]
pub struct PlannedModel {
    pub resolved: Resolved,
    pub slug: String,
    pub sha256: String,
    /// The precision the source holds when it is an MLX folder (it runs only that one).
    pub holds: Option<Precision>,
    /// Prebuilt checkpoints that replace in-process quantization at their precision.
    pub checkpoints: Vec<Checkpoint>,
}

/// A prebuilt quantized folder (`--checkpoint`) used for one precision of a model.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub precision: Precision,
    pub resolved: Resolved,
    pub sha256: String,
}

impl PlannedModel {
    fn checkpoint(&self, p: Precision) -> Option<&Checkpoint> {
        self.checkpoints.iter().find(|c| c.precision == p)
    }
}

/// The precision a model source holds: `Some` for an MLX folder.
pub fn held_precision(r: &Resolved) -> Result<Option<Precision>> {
    match &r.spec {
        ModelSpec::HfDir(dir) => crate::engine::hf::held_precision(dir),
        ModelSpec::Gguf(_) => Ok(None),
    }
}

/// Fingerprint the models and give each a unique slug.
pub fn plan_models(models: &[Resolved]) -> Result<Vec<PlannedModel>> {
    let mut out: Vec<PlannedModel> = Vec::new();
    for r in models {
        source::validate(r)?;
        let mut slug = source::slugify(&r.id);
        if out.iter().any(|m| m.slug == slug) {
            slug = format!("{slug}-{}", out.len() + 1);
        }
        out.push(PlannedModel {
            resolved: r.clone(),
            slug,
            sha256: source::fingerprint(r)?,
            holds: held_precision(r)?,
            checkpoints: Vec::new(),
        });
    }
    Ok(out)
}

/// Attach `--checkpoint [MODEL:]PRECISION=FOLDER`: MODEL (a slug or the `--model` value)
/// may be left out when there is one model. The folder must hold that precision.
pub fn attach_checkpoint(models: &mut [PlannedModel], arg: &str) -> Result<()> {
    let bad = |why: String| Error::Input(format!("--checkpoint {arg}: {why}"));
    let (lhs, path) = arg
        .split_once('=')
        .ok_or_else(|| bad("expected [MODEL:]PRECISION=FOLDER".into()))?;
    let (model, precision) = match lhs.rsplit_once(':') {
        Some((m, p)) => (Some(m), p),
        None => (None, lhs),
    };
    let precision = Precision::parse(precision)?;
    if precision == Precision::Bf16 {
        return Err(bad("bf16 is the source itself; pass it with --model".into()));
    }
    let idx = match model {
        Some(m) => models
            .iter()
            .position(|x| x.slug == m || x.resolved.id == m)
            .ok_or_else(|| {
                bad(format!(
                    "no --model named `{m}` (models: {})",
                    models
                        .iter()
                        .map(|x| x.slug.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
        None if models.len() == 1 => 0,
        None => {
            return Err(bad(
                "several models: name one as MODEL:PRECISION=FOLDER".into()
            ));
        }
    };
    let resolved = crate::engine::resolve_model(path)?;
    source::validate(&resolved)?;
    match held_precision(&resolved)? {
        Some(h) if h == precision => {}
        Some(h) => {
            return Err(bad(format!(
                "{path} holds {}, not {}",
                h.as_str(),
                precision.as_str()
            )));
        }
        None => return Err(bad(format!("{path} is not a quantized MLX folder"))),
    }
    let m = &mut models[idx];
    if m.holds.is_some() {
        return Err(bad(format!(
            "{} is itself a quantized folder; attach checkpoints to its BF16 source",
            m.resolved.id
        )));
    }
    if m.checkpoint(precision).is_some() {
        return Err(bad(format!(
            "{} already has a {} checkpoint",
            m.slug,
            precision.as_str()
        )));
    }
    let sha256 = source::fingerprint(&resolved)?;
    m.checkpoints.push(Checkpoint {
        precision,
        resolved,
        sha256,
    });
    Ok(())
}

/// The plan as stored in the manifest; two runs resume each other only when equal.
pub fn plan_json(
    spec: &StudySpec,
    models: &[PlannedModel],
    sel: &Selection,
    selection_args: &serde_json::Value,
) -> serde_json::Value {
    let items_key: Vec<String> = sel
        .items
        .iter()
        .map(|i| format!("{}:{}", i.category, i.example_id))
        .collect();
    let mut plan = json!({
        "models": models.iter().map(|m| {
            let mut e = json!({"slug": m.slug, "sha256": m.sha256});
            if !m.checkpoints.is_empty() {
                e["checkpoints"] = m.checkpoints.iter().map(|c| (c.precision.as_str().to_string(), json!(c.sha256))).collect::<serde_json::Map<_, _>>().into();
            }
            e
        }).collect::<Vec<_>>(),
        "scheme": spec.scheme.as_str(),
        "precisions": spec.precisions.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "seeds": spec.seeds,
        "compute": spec.compute,
        "protocol": spec.protocol.to_json(),
        "selection": selection_args,
        "items": { "count": sel.items.len(), "sha256": sha_hex(items_key.join(",").as_bytes()) },
        "part_size": spec.part_size,
    });
    if !spec.noise_seeds.is_empty() {
        plan["noise_seeds"] = json!(spec.noise_seeds);
    }
    if spec.option_orders != [prompt::OptionOrder::STUDY] {
        plan["option_orders"] = json!(
            spec.option_orders
                .iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>()
        );
    }
    plan
}

fn sha_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The finished study: where it is.
pub struct Outcome {
    pub dir: ResultsDir,
}

fn parts(items: &[Item], size: usize) -> Vec<&[Item]> {
    items.chunks(size.max(1)).collect()
}

pub(crate) fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Run (or resume) the study into `dir`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    spec: &StudySpec,
    models: &[PlannedModel],
    sel: &Selection,
    plan: serde_json::Value,
    dir: ResultsDir,
    device: &candle_core::Device,
    events: &Sender<Event>,
    cancel: &Arc<AtomicBool>,
) -> Result<Outcome> {
    let send = |e: Event| {
        let _ = events.send(e);
    };
    let mut manifest = if dir.manifest_path().is_file() {
        store::read_manifest(&dir.manifest_path())?
    } else {
        json!({})
    };
    manifest["format_version"] = json!(store::FORMAT_VERSION);
    if let Some(shard) = dir.shard {
        manifest["shard"] = shard.to_json();
    }
    manifest["tool"] = json!({"name": "stereoscope", "version": env!("CARGO_PKG_VERSION"), "git_revision": env!("STEREOSCOPE_GIT_REV")});
    manifest["plan"] = plan;
    manifest["selection"] = json!({
        "checksums": sel.checksums,
        "missing_categories": sel.missing,
    });
    if !sel.skipped.is_empty() {
        manifest["selection"]["skipped_lines"] = json!(sel.skipped);
    }
    let mut runs = manifest
        .get("runs")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    runs.push(json!({"started_at": now(), "device": spec.device}));
    manifest["runs"] = json!(runs);
    if !dir.items_path().is_file() {
        store::write_items(&dir.items_path(), &sel.items)?;
    }
    store::write_manifest(&dir, &manifest)?;

    let item_parts = parts(&sel.items, spec.part_size);
    // Records per item at a precision: every option order has the study seeds; the study's
    // order at BF16 also has the noise seeds.
    let seeds_at = |p: Precision| {
        spec.seeds.len() * spec.option_orders.len()
            + if p == Precision::Bf16 {
                spec.noise_seeds.len()
            } else {
                0
            }
    };
    let mut total = 0;
    let mut done = 0;
    let mut pending: Vec<(usize, Precision, Vec<usize>)> = Vec::new();
    let mut per_precision: Vec<(Precision, u64, u64)> =
        spec.precisions.iter().map(|&p| (p, 0, 0)).collect();
    for (mi, m) in models.iter().enumerate() {
        for (pi, &p) in spec.precisions.iter().enumerate() {
            let mut todo = Vec::new();
            for (k, part) in item_parts.iter().enumerate() {
                if dir.shard.is_some_and(|s| !s.owns(k)) {
                    continue;
                }
                total += (part.len() * seeds_at(p)) as u64;
                per_precision[pi].1 += (part.len() * seeds_at(p)) as u64;
                if dir
                    .part_path(&m.slug, spec.scheme.as_str(), p.as_str(), k)
                    .is_file()
                {
                    done += (part.len() * seeds_at(p)) as u64;
                    per_precision[pi].2 += (part.len() * seeds_at(p)) as u64;
                } else {
                    todo.push(k);
                }
            }
            if !todo.is_empty() {
                pending.push((mi, p, todo));
            }
        }
    }
    send(Event::Planned {
        total,
        done,
        per_precision,
    });

    let mut loaded: Option<(usize, SourceModel, ChatTemplate, Letters)> = None;
    for (mi, precision, todo) in pending {
        let m = &models[mi];
        if loaded.as_ref().map(|l| l.0) != Some(mi) {
            send(Event::Stage(format!("loading {}", m.resolved.id)));
            let (src, template, letters) =
                load_for_scoring(&m.resolved, spec.protocol.chat_template.as_deref())?;
            record_model(&mut manifest, m, &src, &letters);
            if let Some(first) = sel.items.first() {
                // What the model sees, for a reader to check the prompt.
                model_entry(&mut manifest, &m.slug)["example_prompt"] = json!({
                    "item": format!("{}:{}", first.category, first.example_id),
                    "text": spec.protocol.prompt(&template, first)?,
                });
            }
            store::write_manifest(&dir, &manifest)?;
            loaded = Some((mi, src, template, letters));
        }
        let Some((_, src, template, letters)) = loaded.as_ref() else {
            return Err(Error::Model("model not loaded".into()));
        };
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        send(Event::Stage(format!(
            "{} {}: quantizing",
            m.slug,
            precision.as_str()
        )));
        let t0 = Instant::now();
        if let Some(c) = m.checkpoint(precision) {
            send(Event::Stage(format!(
                "{} {}: loading checkpoint {}",
                m.slug,
                precision.as_str(),
                c.resolved.id
            )));
        }
        let built = build_precision(spec, m, src, precision, device)?;
        record_precision(
            &mut manifest,
            m,
            precision,
            &built,
            t0.elapsed().as_secs_f64(),
            spec.scheme,
            spec.compute,
        );
        store::write_manifest(&dir, &manifest)?;
        send(Event::Stage(format!(
            "{} {}: scoring",
            m.slug,
            precision.as_str()
        )));
        let ctx = Scorer {
            spec,
            slug: &m.slug,
            precision,
            built: &built,
            src,
            template,
            letters,
        };
        let started = Instant::now();
        let (mut n_items, mut prompt_tokens, mut computed) = (0usize, 0u64, 0u64);
        for k in todo {
            let part = item_parts[k];
            let mut records = Vec::with_capacity(part.len() * seeds_at(precision));
            // Each order goes through the part on its own, so the study's order computes
            // exactly what it computes in a run without other orders.
            for &order in &spec.option_orders {
                let mut tally = |recs: Vec<Record>, tokens: u64, fresh: u64| {
                    let n_records = recs.len() as u64;
                    records.extend(recs);
                    if order == prompt::OptionOrder::STUDY {
                        n_items += 1;
                    }
                    prompt_tokens += tokens;
                    computed += fresh;
                    send(Event::Progress {
                        precision,
                        records: n_records,
                        prompt_tokens: tokens,
                    });
                };
                if spec.batch_size > 1 {
                    for (recs, tokens, fresh) in ctx.score_part(part, order, cancel)? {
                        tally(recs, tokens, fresh);
                    }
                    continue;
                }
                let mut cache = KvCache::default();
                let mut prev: Vec<u32> = Vec::new();
                for item in part {
                    if cancel.load(Ordering::Relaxed) {
                        return Err(Error::Cancelled);
                    }
                    let (recs, tokens, fresh) = ctx.score(item, order, &mut cache, &mut prev)?;
                    tally(recs, tokens, fresh);
                }
            }
            store::write_records(
                &dir.part_path(&m.slug, spec.scheme.as_str(), precision.as_str(), k),
                &records,
            )?;
        }
        send(Event::Measured {
            model: m.slug.clone(),
            precision,
            items: n_items,
            prompt_tokens,
            computed_tokens: computed,
            secs: started.elapsed().as_secs_f64(),
        });
    }
    // Of several shards, the first runs the perplexity stage.
    let ppl = spec
        .ppl
        .as_ref()
        .filter(|_| dir.shard.is_none_or(|s| s.index == 1));
    if let Some(ppl) = ppl {
        for (mi, m) in models.iter().enumerate() {
            if m.holds.is_some() {
                send(Event::Stage(format!(
                    "{}: no perplexity (an MLX folder has no BF16 to compare with)",
                    m.slug
                )));
                continue;
            }
            if loaded.as_ref().map(|l| l.0) != Some(mi) {
                send(Event::Stage(format!("loading {}", m.resolved.id)));
                let (src, template, letters) =
                    load_for_scoring(&m.resolved, spec.protocol.chat_template.as_deref())?;
                loaded = Some((mi, src, template, letters));
            }
            let Some((_, src, template, _)) = loaded.as_ref() else {
                return Err(Error::Model("model not loaded".into()));
            };
            let stage = PplStage {
                spec,
                ppl,
                m,
                src,
                template,
                device,
                cancel,
            };
            if let Some(summary) = stage.run(&dir, sel, &send)? {
                model_entry(&mut manifest, &m.slug)["perplexity"] = summary;
                store::write_manifest(&dir, &manifest)?;
            }
        }
    }
    if let Some(last) = manifest["runs"].as_array_mut().and_then(|r| r.last_mut()) {
        last["finished_at"] = json!(now());
    }
    store::write_manifest(&dir, &manifest)?;
    Ok(Outcome { dir })
}

/// Perplexity and KLD against BF16 for one model, over its corpus, at every precision.
struct PplStage<'a> {
    spec: &'a StudySpec,
    ppl: &'a PplSpec,
    m: &'a PlannedModel,
    src: &'a SourceModel,
    template: &'a ChatTemplate,
    device: &'a candle_core::Device,
    cancel: &'a Arc<AtomicBool>,
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

    fn build(&self, p: Precision) -> Result<Built> {
        build_precision(self.spec, self.m, self.src, p, self.device)
    }

    /// Compute and write the rows unless the same corpus was already scored; returns the
    /// manifest's summary of what was done.
    fn run(
        &self,
        dir: &ResultsDir,
        sel: &Selection,
        send: &dyn Fn(Event),
    ) -> Result<Option<serde_json::Value>> {
        let (m, scheme) = (self.m, self.spec.scheme.as_str());
        let corpus = self.corpus(sel)?;
        let have = store::perplexity::read(dir)?;
        let done = self.spec.precisions.iter().all(|p| {
            have.iter().any(|r| {
                r.model == m.slug
                    && r.scheme == scheme
                    && r.precision == p.as_str()
                    && r.corpus_sha256 == corpus.sha256
            })
        });
        if done {
            return Ok(None);
        }
        let n_tokens: usize = corpus.sequences.iter().map(|s| s.len() - 1).sum();
        send(Event::Stage(format!(
            "{}: perplexity over {} sequences ({n_tokens} tokens)",
            m.slug,
            corpus.sequences.len()
        )));
        let t0 = Instant::now();
        let bf16 = quant::build(
            self.src,
            Precision::Bf16,
            self.spec.scheme,
            self.spec.compute,
            self.device,
        )?;
        let mut sums = Vec::new();
        for &p in &self.spec.precisions {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            send(Event::Stage(format!(
                "{} {}: perplexity",
                m.slug,
                p.as_str()
            )));
            let s = if p == Precision::Bf16 {
                perplexity::measure(&bf16.model, None, &corpus)?
            } else {
                let built = self.build(p)?;
                perplexity::measure(&bf16.model, Some(&built.model), &corpus)?
            };
            sums.push((p, s));
        }
        let base = sums
            .iter()
            .find(|(p, _)| *p == Precision::Bf16)
            .map(|(_, s)| s.perplexity());
        let rows: Vec<PplRow> = sums
            .iter()
            .map(|(p, s)| PplRow {
                model: m.slug.clone(),
                scheme: scheme.to_string(),
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
            .collect();
        store::perplexity::write(dir, &m.slug, scheme, &rows)?;
        Ok(Some(json!({
            "corpus": corpus.name,
            "corpus_sha256": corpus.sha256,
            "sequences": corpus.sequences.len(),
            "seq_len": self.ppl.seq_len,
            "tokens": n_tokens,
            "secs": t0.elapsed().as_secs_f64(),
            "computed": "f32 log-softmax over the full vocabulary; KL(P_bf16 || P_precision) per position",
        })))
    }
}

fn model_entry<'a>(manifest: &'a mut serde_json::Value, slug: &str) -> &'a mut serde_json::Value {
    if !manifest["models"].is_object() {
        manifest["models"] = json!({});
    }
    let models = &mut manifest["models"];
    if models.get(slug).is_none() {
        models[slug] = json!({});
    }
    &mut models[slug]
}

fn record_model(
    manifest: &mut serde_json::Value,
    m: &PlannedModel,
    src: &SourceModel,
    letters: &Letters,
) {
    let e = model_entry(manifest, &m.slug);
    e["id"] = json!(m.resolved.id);
    e["sha256"] = json!(m.sha256);
    e["format"] = json!(src.format);
    e["config"] = json!(src.cfg);
    e["tokenizer"] = json!(src.tok.origin);
    e["chat_template"] = json!(src.chat_template);
    e["letter_token_ids"] = json!(letters.ids);
    e["bf16_source"] = match &src.dequantized_from {
        Some(from) => json!({"dequantized": true, "from": from,
            "note": "the BF16 baseline was dequantized from a quantized GGUF, not an original BF16 checkpoint"}),
        None => json!({"dequantized": false}),
    };
    if let Some(q) = &src.mlx_quant {
        e["holds"] =
            json!({"precision": q.precision.as_str(), "bits": q.bits, "group_size": q.group_size});
        e["bf16_source"] = json!({"note": "an MLX folder: only the precision it holds is run"});
    }
}

fn record_precision(
    manifest: &mut serde_json::Value,
    m: &PlannedModel,
    p: Precision,
    built: &Built,
    secs: f64,
    scheme: Scheme,
    compute: Compute,
) {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for t in built.tensor_types.values() {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    let e = model_entry(manifest, &m.slug);
    if !e["precisions"].is_object() {
        e["precisions"] = json!({});
    }
    e["precisions"][p.as_str()] = json!({
        "type_counts": counts,
        "tensor_types": built.tensor_types,
        "compute": compute_path(p, scheme, compute, built.model.dtype),
        "build_secs": secs,
    });
    let from = match (m.checkpoint(p), m.holds) {
        (Some(c), _) => json!({"checkpoint": c.resolved.id, "sha256": c.sha256}),
        (None, Some(_)) => json!({"checkpoint": m.resolved.id, "sha256": m.sha256}),
        (None, None) => json!({"quantized_in_process": p != Precision::Bf16}),
    };
    e["precisions"][p.as_str()]["weights"] = from;
}

/// A model at one precision: from its attached checkpoint when it has one for `p`, else
/// made from the BF16 source.
fn build_precision(
    spec: &StudySpec,
    m: &PlannedModel,
    src: &SourceModel,
    p: Precision,
    device: &candle_core::Device,
) -> Result<Built> {
    match m.checkpoint(p) {
        Some(c) => {
            let ck = source::load(&c.resolved)?;
            check_compatible(src, &ck)?;
            quant::build(&ck, p, spec.scheme, spec.compute, device)
        }
        None => quant::build(src, p, spec.scheme, spec.compute, device),
    }
}

/// A checkpoint must be the same model as the BF16 source: architecture, shapes and
/// vocabulary.
fn check_compatible(src: &SourceModel, ck: &SourceModel) -> Result<()> {
    let (a, b) = (&src.cfg, &ck.cfg);
    let same = a.architecture == b.architecture
        && a.hidden_size == b.hidden_size
        && a.intermediate_size == b.intermediate_size
        && a.num_layers == b.num_layers
        && a.num_heads == b.num_heads
        && a.num_kv_heads == b.num_kv_heads
        && a.vocab_size == b.vocab_size
        && src.tok.inner.get_vocab_size(true) == ck.tok.inner.get_vocab_size(true);
    if !same {
        return Err(Error::Model(format!(
            "checkpoint {} is not the same model as {}: {} {}×{} layers, vocab {} against {} {}×{} layers, vocab {}",
            ck.id,
            src.id,
            b.architecture,
            b.hidden_size,
            b.num_layers,
            b.vocab_size,
            a.architecture,
            a.hidden_size,
            a.num_layers,
            a.vocab_size
        )));
    }
    Ok(())
}

/// Load a model's BF16 source with what scoring needs: its chat template (or `chat_template`
/// in its place, which is then also what the manifest records) and letter tokens.
pub fn load_for_scoring(
    resolved: &Resolved,
    chat_template: Option<&str>,
) -> Result<(SourceModel, ChatTemplate, Letters)> {
    let mut src = source::load(resolved)?;
    if let Some(t) = chat_template {
        src.chat_template = Some(t.to_string());
    }
    let Some(source) = src.chat_template.as_deref() else {
        return Err(Error::Model(format!(
            "{} has no chat template (no tokenizer.chat_template in a GGUF, no chat_template in tokenizer_config.json or chat_template.jinja in a folder); pass --chat-template FILE",
            resolved.id
        )));
    };
    let name = |t: &Option<(u32, String)>| t.as_ref().map(|b| b.1.clone()).unwrap_or_default();
    let template = ChatTemplate::new(source, &name(&src.tok.bos), &name(&src.tok.eos))?;
    let letters = Letters::find(&src.tok)?;
    Ok((src, template, letters))
}

/// How a precision's layers are computed, for the manifest. `dtype` is the model's compute
/// dtype: F32 on the CPU, BF16 on a GPU.
fn compute_path(p: Precision, scheme: Scheme, compute: Compute, dtype: DType) -> &'static str {
    let gpu = dtype != DType::F32;
    match (p, scheme, compute, gpu) {
        (Precision::Bf16, _, _, false) => "bf16 weights, f32 activations",
        (Precision::Bf16, _, _, true) => {
            "bf16 weights and activations (f32 norm statistics and softmax accumulation), f32 output layer"
        }
        (_, Scheme::Mlx, _, false) => {
            "mlx affine weights dequantized to bf16 (as MLX's prefill), f32 activations"
        }
        (_, Scheme::Mlx, _, true) => {
            "mlx affine codes packed on the device, dequantized to bf16 before each use (MLX's values), bf16 activations, f32 output layer"
        }
        (_, Scheme::Gguf, Compute::Dequant, false) => {
            "quantized weights dequantized to f32, f32 activations"
        }
        (_, Scheme::Gguf, Compute::Dequant, true) => {
            "quantized weights dequantized to bf16, bf16 activations, f32 output layer"
        }
        (_, Scheme::Gguf, Compute::Kernels, _) => "candle quantized kernels",
    }
}

/// Where a results folder goes when `--out` is not given.
pub fn default_out(models: &[PlannedModel], plan: &serde_json::Value) -> PathBuf {
    let slug = models.first().map(|m| m.slug.as_str()).unwrap_or("run");
    let h = sha_hex(plan.to_string().as_bytes());
    PathBuf::from("stereoscope-results").join(format!("{slug}-{}", &h[..8]))
}
