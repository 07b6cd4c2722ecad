//! The study: the plan (models × scheme × precisions × seeds × items) and the job that runs
//! it. `Job::start` runs a `Study` on its own thread and reports events (plan, stages,
//! progress, parts written, outcome) over one channel; dropping the job cancels it. The run
//! (`run.rs`) goes in stages (load, build precision, score parts, perplexity), checks the
//! cancel flag between items, batches and tensors, writes each finished part and skips parts
//! already on disk.
//!
//! Determinism: items are processed in plan order, in parts of `part_size`; the KV cache of
//! a shared prompt prefix is reused only within a part, and each record's RNG depends only
//! on the record's identity. So resuming after a crash recomputes exactly what was lost, and
//! shards (part k of every model and precision goes to shard k mod N) together compute exactly
//! what one run does.

mod batch;
mod decode;
mod fit;
mod job;
mod manifest;
mod ppl;
mod run;
mod score;
pub use fit::{Overlong, overlong_items, positions_needed, skip_overlong};
pub use job::{Event, Job, Outcome, StageDone, Study, Throughput};
pub use score::{Phases, Scored, Scorer, Unit};

use crate::bbq::Selection;
use crate::engine::quant::{self, Built};
use crate::engine::sample::Letters;
use crate::engine::source::{self, ModelSpec, Resolved, SourceModel};
use crate::engine::{Compute, Precision, Scheme};
use crate::error::{Error, Result};
use crate::prompt::{self, ChatTemplate};
use crate::store::{Plan, PlanItems, PlanModel};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

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
) -> Plan {
    let models = models
        .iter()
        .map(|m| PlanModel {
            slug: m.slug.clone(),
            sha256: m.sha256.clone(),
            checkpoints: m
                .checkpoints
                .iter()
                .map(|c| (c.precision.as_str().to_string(), c.sha256.clone()))
                .collect(),
        })
        .collect();
    let option_orders = match spec.option_orders == [prompt::OptionOrder::STUDY] {
        true => Vec::new(),
        false => spec.option_orders.iter().map(|o| o.as_str()).collect(),
    };
    Plan {
        models,
        scheme: spec.scheme,
        precisions: spec.precisions.clone(),
        seeds: spec.seeds.clone(),
        compute: spec.compute,
        protocol: spec.protocol.to_json(),
        selection: selection_args.clone(),
        items: PlanItems {
            count: sel.items.len(),
            sha256: Plan::items_sha256(
                sel.items
                    .iter()
                    .map(|i| (i.category.as_str(), i.example_id)),
            ),
        },
        part_size: spec.part_size,
        noise_seeds: spec.noise_seeds.clone(),
        option_orders,
    }
}

fn sha_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

pub(crate) fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A model at one precision: from its attached checkpoint when it has one for `p`, else
/// made from the BF16 source.
fn build_precision(
    spec: &StudySpec,
    m: &PlannedModel,
    src: &SourceModel,
    p: Precision,
    device: &candle_core::Device,
    cancel: &AtomicBool,
) -> Result<Built> {
    let (scheme, compute) = (spec.scheme, spec.compute);
    match m.checkpoint(p) {
        Some(c) => {
            let ck = source::load(&c.resolved)?;
            check_compatible(src, &ck)?;
            quant::build_cancellable(&ck, p, scheme, compute, device, cancel)
        }
        None => quant::build_cancellable(src, p, scheme, compute, device, cancel),
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

/// Where a results folder goes when `--out` is not given.
pub fn default_out(models: &[PlannedModel], plan: &Plan) -> PathBuf {
    let slug = models.first().map(|m| m.slug.as_str()).unwrap_or("run");
    let h = sha_hex(plan.to_value().to_string().as_bytes());
    PathBuf::from("stereoscope-results").join(format!("{slug}-{}", &h[..8]))
}
