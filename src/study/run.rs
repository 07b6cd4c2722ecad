//! One run of a study, in stages: open the folder (manifest, items), plan what is left,
//! then per model-precision load the model, build the precision and score the pending
//! parts, then the perplexity stage. A cancel flag is checked between items, batches,
//! tensors and stages; a part is written only when complete.

use super::job::{Event, Events, Outcome, StageDone, Study, Throughput};
use super::manifest::{model_entry, now, record_model, record_precision};
use super::ppl::PplStage;
use super::{
    Phases, PlannedModel, Scored, Scorer, StudySpec, Unit, build_precision, load_for_scoring,
};
use crate::bbq::Item;
use crate::engine::Precision;
use crate::engine::perplexity::{self, Corpus, Sums};
use crate::engine::quant::Built;
use crate::engine::sample::Letters;
use crate::engine::source::SourceModel;
use crate::error::{DeviceWork, Error, MemoryContext, Result};
use crate::prompt::{self, ChatTemplate};
use crate::store::failpoint;
use crate::store::lock::FolderLock;
use crate::store::manifest::{FORMAT_VERSION, Manifest, PartEntry, Tool, read_manifest};
use crate::store::{self, Record, verify};
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// A model's BF16 source with what scoring needs, kept while consecutive work uses it.
struct Loaded {
    model: usize,
    src: SourceModel,
    template: ChatTemplate,
    letters: Letters,
    /// The most positions an item needs (its prompt and the fed-back answer tokens).
    positions: usize,
    /// Whether the manifest has its entry from this load.
    recorded: bool,
    /// Whether `StageDone::Loaded` was sent for this load.
    announced: bool,
    /// Perplexity measured while scoring this load.
    ppl: ModelPpl,
}

/// A model's perplexity, measured precision by precision right after each is scored, with
/// the model scoring built.
#[derive(Default)]
struct ModelPpl {
    /// The corpus, once prepared (`Some(None)`: every precision already has rows).
    corpus: Option<Option<Corpus>>,
    /// BF16 built from the source, kept as every other precision's reference.
    reference: Option<Built>,
    sums: Vec<(Precision, Sums)>,
    secs: f64,
}

/// Parts still to score for one model at one precision.
struct Work {
    model: usize,
    precision: Precision,
    parts: Vec<usize>,
}

/// Counts of one scored model-precision, for its throughput.
#[derive(Default)]
struct Tally {
    items: usize,
    prompt_tokens: u64,
    computed: u64,
}

/// A run in progress: its inputs, the manifest as written so far and the loaded model.
struct Run<'a> {
    study: &'a Study,
    events: &'a Events,
    cancel: &'a AtomicBool,
    manifest: RefCell<Manifest>,
    loaded: Option<Loaded>,
    /// Each model's batch size once settled (`batch::settle`), by model index.
    batch: RefCell<std::collections::BTreeMap<usize, usize>>,
    /// The batch size of the model-precision being scored, recorded with each part.
    in_use: Cell<usize>,
    /// Models whose perplexity rows this run wrote while scoring.
    ppl_written: std::collections::BTreeSet<usize>,
    /// The folder's lock, held for the whole run.
    _lock: FolderLock,
}

/// Make the manifest's list of parts what is on disk: a listed part that is gone is
/// scored again; a planned part on disk that is not listed (written just before a stop,
/// or by a version that listed none) is checked (rows exactly its items × seeds × orders)
/// and listed. Whether the list changed.
fn adopt_parts(study: &Study, manifest: &mut Manifest) -> Result<bool> {
    let (dir, plan) = (&study.dir, &study.plan);
    let mut changed = false;
    for part in verify::planned_parts(plan, dir.shard) {
        let path = dir.records_dir().join(&part.rel);
        let listed = manifest.parts.contains_key(&part.rel);
        if listed && !path.is_file() {
            manifest.parts.remove(&part.rel);
            changed = true;
        } else if !listed && path.is_file() {
            let (entry, _) = verify::read_part(&path, plan, &study.sel.items, &part, None)?;
            manifest.parts.insert(part.rel.clone(), entry);
            changed = true;
        }
    }
    Ok(changed)
}

/// Load model `mi`'s BF16 source and check that the run can use it: the perplexity
/// sequence and every item fit its positions. Said before any scoring, not after it.
fn load_checked(study: &Study, mi: usize) -> Result<Loaded> {
    let m = &study.models[mi];
    let chat_template = study.spec.protocol.chat_template.as_deref();
    let (src, template, letters) = load_for_scoring(&m.resolved, chat_template)?;
    if let Some(ppl) = &study.spec.ppl
        && ppl.seq_len > src.cfg.max_positions
    {
        return Err(Error::Input(format!(
            "--ppl-seq-len {} is longer than {} reads ({} positions); use --ppl-seq-len {} or less",
            ppl.seq_len, m.resolved.id, src.cfg.max_positions, src.cfg.max_positions
        )));
    }
    let positions = super::fit::check_fit(
        &study.spec,
        &study.sel.items,
        &m.resolved.id,
        &src,
        &template,
    )?;
    Ok(Loaded {
        model: mi,
        src,
        template,
        letters,
        positions,
        recorded: false,
        announced: false,
        ppl: ModelPpl::default(),
    })
}

/// The perplexity this run measures: the plan's, unless this is a shard after the first.
fn measured_ppl(study: &Study) -> Option<&super::PplSpec> {
    let ppl = study.spec.ppl.as_ref()?;
    study.dir.shard.is_none_or(|s| s.index == 1).then_some(ppl)
}

/// The perplexity stage of model `m`, whose source and chat template are loaded.
fn ppl_stage<'s>(
    study: &'s Study,
    ppl: &'s super::PplSpec,
    m: &'s PlannedModel,
    (src, template): (&'s SourceModel, &'s ChatTemplate),
    cancel: &'s AtomicBool,
) -> PplStage<'s> {
    PplStage {
        spec: &study.spec,
        ppl,
        m,
        src,
        template,
        device: &study.device,
        cancel,
    }
}

/// Run (or resume) the study into its folder.
/// What a model-precision's device work was doing when it failed.
#[derive(Clone, Copy)]
enum Stage {
    Building,
    Scoring,
    Perplexity,
}

pub(crate) fn run(study: &Study, events: &Events, cancel: &AtomicBool) -> Result<Outcome> {
    failpoint::arm();
    // Into a new folder, the first model is loaded and checked before anything is written,
    // so a model these items do not fit leaves no folder of this plan behind (a rerun with
    // `--skip-bad` plans fewer items).
    let first = match study.dir.manifest_path().is_file() || study.models.is_empty() {
        true => None,
        false => Some(load_checked(study, 0)?),
    };
    let mut run = Run::open(study, events, cancel)?;
    run.loaded = first;
    for work in run.plan() {
        run.load(work.model, true)?;
        run.check_cancel()?;
        let built = run
            .build(&study.models[work.model], work.precision)
            .map_err(|e| run.out_of_memory(e, &work, Stage::Building))?;
        run.score_parts(&work, &built)
            .map_err(|e| run.out_of_memory(e, &work, Stage::Scoring))?;
        run.perplexity_at(&work, built)
            .map_err(|e| run.out_of_memory(e, &work, Stage::Perplexity))?;
    }
    run.perplexity()?;
    run.finish()
}

impl<'a> Run<'a> {
    /// Lock the folder, check it under the lock, write the manifest for this run (plan,
    /// selection, a new `runs` entry) and then the items, and list the parts already on
    /// disk that the manifest does not (written just before a stop, or by an older version).
    fn open(study: &'a Study, events: &'a Events, cancel: &'a AtomicBool) -> Result<Run<'a>> {
        let (dir, sel) = (&study.dir, &study.sel);
        std::fs::create_dir_all(&dir.root).map_err(|e| {
            Error::Store(format!("--out {}: cannot create: {e}", dir.root.display()))
        })?;
        let lock = FolderLock::acquire(dir)?;
        let setup = FolderLock::setup(&dir.root)?;
        dir.check_for(&study.plan)?;
        // What a stopped run of this plan left half-written goes; it never counted.
        store::stale::remove(dir, &study.plan);
        let mut manifest = match dir.manifest_path().is_file() {
            true => read_manifest(&dir.manifest_path())?,
            false => Manifest::new(study.plan.clone(), dir.shard),
        };
        manifest.format_version = FORMAT_VERSION;
        manifest.shard = dir.shard;
        manifest.tool = Tool::this();
        manifest.plan = study.plan.clone();
        manifest.selection = json!({
            "checksums": sel.checksums,
            "missing_categories": sel.missing,
        });
        if !sel.skipped.is_empty() {
            manifest.selection["skipped_lines"] = json!(sel.skipped);
        }
        manifest
            .runs
            .push(json!({"started_at": now(), "device": study.spec.device}));
        store::write_manifest(dir, &manifest)?;
        match dir.items_path().is_file() {
            true => verify::check_items(&dir.items_path(), &study.plan).map(|_| ())?,
            false => store::write_items(&dir.items_path(), &sel.items)?,
        }
        drop(setup);
        if adopt_parts(study, &mut manifest)? {
            store::write_manifest(dir, &manifest)?;
        }
        Ok(Run {
            study,
            events,
            cancel,
            manifest: RefCell::new(manifest),
            loaded: None,
            batch: RefCell::default(),
            in_use: Cell::new(study.spec.batch_size),
            ppl_written: Default::default(),
            _lock: lock,
        })
    }

    fn parts(&self) -> Vec<&'a [Item]> {
        let study: &'a Study = self.study;
        study
            .sel
            .items
            .chunks(study.spec.part_size.max(1))
            .collect()
    }

    /// Records per item at a precision: every option order has the study seeds; the study's
    /// order at BF16 also has the noise seeds.
    fn seeds_at(&self, p: Precision) -> usize {
        let spec = &self.study.spec;
        spec.seeds.len() * spec.option_orders.len()
            + if p == Precision::Bf16 {
                spec.noise_seeds.len()
            } else {
                0
            }
    }

    /// The parts not yet on disk (of this shard), per model and precision; sends `Planned`.
    fn plan(&self) -> Vec<Work> {
        let (spec, dir) = (&self.study.spec, &self.study.dir);
        let (mut total, mut done) = (0, 0);
        let mut pending = Vec::new();
        let mut per_precision: Vec<(Precision, u64, u64)> =
            spec.precisions.iter().map(|&p| (p, 0, 0)).collect();
        let parts = self.parts();
        for (mi, m) in self.study.models.iter().enumerate() {
            for (pi, &p) in spec.precisions.iter().enumerate() {
                let mut todo = Vec::new();
                for (k, part) in parts.iter().enumerate() {
                    if dir.shard.is_some_and(|s| !s.owns(k)) {
                        continue;
                    }
                    let n = (part.len() * self.seeds_at(p)) as u64;
                    total += n;
                    per_precision[pi].1 += n;
                    let rel = verify::part_rel(&self.study.plan, &m.slug, p, k, dir.shard);
                    if self.manifest.borrow().parts.contains_key(&rel) {
                        done += n;
                        per_precision[pi].2 += n;
                    } else {
                        todo.push(k);
                    }
                }
                if !todo.is_empty() {
                    pending.push(Work {
                        model: mi,
                        precision: p,
                        parts: todo,
                    });
                }
            }
        }
        self.events.send(Event::Planned {
            total,
            done,
            per_precision,
        });
        pending
    }

    /// List a part just written in the manifest (its rows and sha256), then write it.
    fn list_part(&self, rel: &str, path: &std::path::Path, rows: usize) -> Result<()> {
        use sha2::Digest;
        let data = std::fs::read(path)
            .map_err(|e| Error::Store(format!("{}: cannot read back: {e}", path.display())))?;
        let entry = PartEntry {
            rows: rows as u64,
            sha256: hex::encode(sha2::Sha256::digest(&data)),
            batch_size: Some(self.in_use.get() as u64),
        };
        let mut manifest = self.manifest.borrow_mut();
        manifest.parts.insert(rel.to_string(), entry);
        store::write_manifest(&self.study.dir, &manifest)
    }

    fn check_cancel(&self) -> Result<()> {
        match self.cancel.load(Ordering::Relaxed) {
            true => Err(Error::Cancelled),
            false => Ok(()),
        }
    }

    /// Load model `mi` unless it is the one loaded; with `record`, the manifest gets its
    /// entry and an example prompt (once per load).
    fn load(&mut self, mi: usize, record: bool) -> Result<()> {
        let (study, m) = (self.study, &self.study.models[mi]);
        if self.loaded.as_ref().map(|l| l.model) != Some(mi) {
            self.events.stage(format!("loading {}", m.resolved.id));
            self.loaded = None;
            self.loaded = Some(load_checked(study, mi)?);
        }
        let Some(loaded) = self.loaded.as_mut() else {
            return Err(Error::Model("model not loaded".into()));
        };
        if record && !loaded.recorded {
            let mut manifest = self.manifest.borrow_mut();
            record_model(&mut manifest, m, &loaded.src, &loaded.letters);
            if let Some(first) = study.sel.items.first() {
                // What the model sees, for a reader to check the prompt.
                model_entry(&mut manifest, &m.slug)["example_prompt"] = json!({
                    "item": format!("{}:{}", first.category, first.example_id),
                    "text": study.spec.protocol.prompt(&loaded.template, first)?,
                });
            }
            store::write_manifest(&study.dir, &manifest)?;
            loaded.recorded = true;
        }
        if !loaded.announced {
            loaded.announced = true;
            self.events.send(Event::StageDone(StageDone::Loaded {
                model: m.slug.clone(),
            }));
        }
        Ok(())
    }

    fn loaded(&self) -> Result<&Loaded> {
        self.loaded
            .as_ref()
            .ok_or_else(|| Error::Model("model not loaded".into()))
    }

    /// Build the loaded model `m` at `precision` and record it in the manifest.
    fn build(&mut self, m: &PlannedModel, precision: Precision) -> Result<Built> {
        let (spec, device) = (&self.study.spec, &self.study.device);
        let label = format!("{} {}", m.slug, precision.as_str());
        self.events.stage(format!("{label}: quantizing"));
        let t0 = Instant::now();
        if let Some(c) = m.checkpoint(precision) {
            self.events
                .stage(format!("{label}: loading checkpoint {}", c.resolved.id));
        }
        let src = &self.loaded()?.src;
        let built = build_precision(spec, m, src, precision, device, self.cancel)?;
        let secs = t0.elapsed().as_secs_f64();
        let mut manifest = self.manifest.borrow_mut();
        record_precision(&mut manifest, m, precision, &built, secs, spec);
        store::write_manifest(&self.study.dir, &manifest)?;
        drop(manifest);
        self.events.send(Event::StageDone(StageDone::Built {
            model: m.slug.clone(),
            precision,
            secs,
        }));
        Ok(built)
    }

    /// Score and write every pending part of one model-precision.
    fn score_parts(&self, work: &Work, built: &Built) -> Result<()> {
        let spec = &self.scoring_spec(work, built)?;
        let m = &self.study.models[work.model];
        let precision = work.precision;
        self.events
            .stage(format!("{} {}: scoring", m.slug, precision.as_str()));
        let loaded = self.loaded()?;
        let scorer = Scorer {
            spec,
            slug: &m.slug,
            precision,
            built,
            src: &loaded.src,
            template: &loaded.template,
            letters: &loaded.letters,
        };
        let started = Instant::now();
        let mut tally = Tally::default();
        let parts = self.parts();
        let mut write = |k: usize, records: Vec<Record>| -> Result<()> {
            failpoint::device("device-oom")?;
            let path =
                self.study
                    .dir
                    .part_path(&m.slug, spec.scheme.as_str(), precision.as_str(), k);
            store::write_records(&path, &records)?;
            failpoint::hit("part-renamed");
            self.list_part(
                &verify::part_rel(
                    &self.study.plan,
                    &m.slug,
                    precision,
                    k,
                    self.study.dir.shard,
                ),
                &path,
                records.len(),
            )?;
            self.events.send(Event::PartWritten {
                model: m.slug.clone(),
                precision,
                part: k,
            });
            Ok(())
        };
        if spec.batch_size > 1 {
            self.score_batched(&scorer, work, &parts, &mut tally, &mut write)?;
        } else {
            for &k in &work.parts {
                let records = self.score_part(&scorer, parts[k], &mut tally)?;
                write(k, records)?;
            }
        }
        self.events
            .send(Event::StageDone(StageDone::Scored(Throughput {
                model: m.slug.clone(),
                precision,
                items: tally.items,
                prompt_tokens: tally.prompt_tokens,
                computed_tokens: tally.computed,
                secs: started.elapsed().as_secs_f64(),
            })));
        Ok(())
    }

    /// The spec to score model-precision `work` with: the run's, at the model's batch size
    /// (settled the first time, said to the user when it was not given).
    fn scoring_spec(&self, work: &Work, built: &Built) -> Result<StudySpec> {
        let known = self.batch.borrow().get(&work.model).copied();
        let size = match known {
            Some(size) => size,
            None => {
                let loaded = self.loaded()?;
                let resident = super::batch::Resident {
                    cfg: &loaded.src.cfg,
                    positions: loaded.positions,
                    act_bytes: built.model.dtype.size_in_bytes() as u64,
                    precision: work.precision,
                };
                let manifest = self.manifest.borrow();
                let s = super::batch::settle(self.study, &manifest, work.model, &resident);
                self.events.send(Event::StageDone(StageDone::BatchSize {
                    model: self.study.models[work.model].slug.clone(),
                    size: s.size,
                    note: s.note,
                }));
                self.batch.borrow_mut().insert(work.model, s.size);
                s.size
            }
        };
        self.in_use.set(size);
        Ok(StudySpec {
            batch_size: size,
            ..self.study.spec.clone()
        })
    }

    /// `e` as the one message for the device running out of memory while building,
    /// scoring (the part named is its first not yet written) or measuring the perplexity of
    /// `work`; other errors as they are.
    fn out_of_memory(&self, e: Error, work: &Work, stage: Stage) -> Error {
        let study = self.study;
        let slug = &study.models[work.model].slug;
        let manifest = self.manifest.borrow();
        let part = work.parts.iter().copied().find(|&k| {
            let rel = verify::part_rel(&study.plan, slug, work.precision, k, study.dir.shard);
            !manifest.parts.contains_key(&rel)
        });
        let work_done = match stage {
            Stage::Scoring => DeviceWork::Scoring {
                part: part.or(work.parts.last().copied()).unwrap_or(0),
                batch_size: self.in_use.get(),
            },
            Stage::Building => DeviceWork::Building,
            Stage::Perplexity => DeviceWork::Perplexity {
                seq_len: study.spec.ppl.as_ref().map_or(0, |p| p.seq_len),
            },
        };
        crate::error::out_of_memory(
            e,
            &MemoryContext {
                device: &study.spec.device,
                model: slug,
                precision: work.precision.as_str(),
                out: &study.dir.root,
                work: work_done,
            },
        )
    }

    /// Count one prompt's records and tokens and report the progress.
    fn tally(
        &self,
        tally: &mut Tally,
        precision: Precision,
        order: prompt::OptionOrder,
        (recs, tokens, fresh): &Scored,
    ) {
        if order == prompt::OptionOrder::STUDY {
            tally.items += 1;
        }
        tally.prompt_tokens += tokens;
        tally.computed += fresh;
        self.events.send(Event::Progress {
            precision,
            records: recs.len() as u64,
            prompt_tokens: *tokens,
        });
    }

    /// Every pending part in every option order as one stream of batches (the device runs
    /// ahead across parts); each part is written once all its orders are scored. Each order
    /// goes through a part on its own, so the study's order computes exactly what it
    /// computes in a run without other orders.
    fn score_batched(
        &self,
        scorer: &Scorer,
        work: &Work,
        parts: &[&[Item]],
        tally: &mut Tally,
        write: &mut impl FnMut(usize, Vec<Record>) -> Result<()>,
    ) -> Result<()> {
        let orders = &self.study.spec.option_orders;
        let units: Vec<Unit> = work
            .parts
            .iter()
            .flat_map(|&k| {
                orders.iter().map(move |&order| Unit {
                    items: parts[k],
                    order,
                })
            })
            .collect();
        let mut records: Vec<Record> = Vec::new();
        let phases = Phases::default();
        let progress = |u: usize, batch: &[Scored]| {
            for s in batch {
                self.tally(tally, scorer.precision, units[u].order, s);
            }
        };
        scorer.score_units(&units, self.cancel, &phases, progress, |u, scored| {
            records.extend(scored.into_iter().flat_map(|s| s.0));
            if (u + 1) % orders.len() == 0 {
                write(work.parts[u / orders.len()], std::mem::take(&mut records))?;
            }
            Ok(())
        })
    }

    /// One part's records, prompt by prompt (batch size 1), each prompt reusing the previous
    /// one's cached prefix. Each order goes through the part on its own.
    fn score_part(&self, scorer: &Scorer, part: &[Item], tally: &mut Tally) -> Result<Vec<Record>> {
        let spec = &self.study.spec;
        let mut records = Vec::with_capacity(part.len() * self.seeds_at(scorer.precision));
        for &order in &spec.option_orders {
            scorer.score_in_turn(part, order, self.cancel, |scored| {
                self.tally(tally, scorer.precision, order, &scored);
                records.extend(scored.0);
                Ok(())
            })?;
        }
        Ok(records)
    }

    /// Perplexity at the precision just scored, with what scoring built: BF16's build stays
    /// as the reference of the model's other precisions, so nothing is built twice. Once
    /// every precision of the model is measured, its rows are written.
    fn perplexity_at(&mut self, work: &Work, built: Built) -> Result<()> {
        let study = self.study;
        let (m, p) = (&study.models[work.model], work.precision);
        let Some(ppl) = measured_ppl(study) else {
            return Ok(());
        };
        if m.holds.is_some() || self.ppl_written.contains(&work.model) {
            return Ok(());
        }
        let loaded = self
            .loaded
            .as_mut()
            .ok_or_else(|| Error::Model("model not loaded".into()))?;
        let stage = ppl_stage(study, ppl, m, (&loaded.src, &loaded.template), self.cancel);
        if loaded.ppl.corpus.is_none() {
            let corpus = stage.pending_corpus(&study.dir, &study.sel)?;
            if let Some(c) = &corpus {
                self.events.stage(stage.announce(c));
            }
            loaded.ppl.corpus = Some(corpus);
        }
        let Some(Some(corpus)) = &loaded.ppl.corpus else {
            return Ok(());
        };
        self.events
            .stage(format!("{} {}: perplexity", m.slug, p.as_str()));
        failpoint::device("device-oom-ppl")?;
        let t0 = Instant::now();
        let sums = if p == Precision::Bf16 {
            perplexity::measure(&built.model, None, corpus)?
        } else {
            if loaded.ppl.reference.is_none() {
                loaded.ppl.reference = Some(stage.reference()?);
            }
            let reference = loaded
                .ppl
                .reference
                .as_ref()
                .ok_or_else(|| Error::Model("no BF16 reference".into()))?;
            perplexity::measure(&reference.model, Some(&built.model), corpus)?
        };
        failpoint::hit("perplexity");
        loaded.ppl.secs += t0.elapsed().as_secs_f64();
        loaded.ppl.sums.retain(|(q, _)| *q != p);
        loaded.ppl.sums.push((p, sums));
        if p == Precision::Bf16 && m.checkpoint(p).is_none() {
            loaded.ppl.reference = Some(built);
        }
        let sums: Vec<(Precision, Sums)> = study
            .spec
            .precisions
            .iter()
            .filter_map(|q| loaded.ppl.sums.iter().find(|(r, _)| r == q).copied())
            .collect();
        if sums.len() < study.spec.precisions.len() {
            return Ok(());
        }
        let summary = stage.write(&study.dir, corpus, &sums, loaded.ppl.secs)?;
        loaded.ppl.reference = None;
        self.ppl_written.insert(work.model);
        self.ppl_done(m, Some(summary))
    }

    /// Perplexity and KLD against BF16 per model; of several shards, the first runs it.
    fn perplexity(&mut self) -> Result<()> {
        let (study, dir) = (self.study, &self.study.dir);
        let Some(ppl) = measured_ppl(study) else {
            return Ok(());
        };
        for (mi, m) in study.models.iter().enumerate() {
            if m.holds.is_some() {
                self.events.stage(format!(
                    "{}: no perplexity (an MLX folder has no BF16 to compare with)",
                    m.slug
                ));
                continue;
            }
            if self.ppl_written.contains(&mi) {
                continue;
            }
            self.load(mi, false)?;
            let done = match self.loaded.as_mut() {
                Some(l) => std::mem::take(&mut l.ppl.sums),
                None => Vec::new(),
            };
            let loaded = self.loaded()?;
            let stage = ppl_stage(study, ppl, m, (&loaded.src, &loaded.template), self.cancel);
            let summary = stage.run(dir, &study.sel, self.events, done)?;
            self.ppl_done(m, summary)?;
        }
        Ok(())
    }

    /// A model's perplexity is done: its summary (when rows were written) into the
    /// manifest, and the event.
    fn ppl_done(&self, m: &PlannedModel, summary: Option<serde_json::Value>) -> Result<()> {
        if let Some(summary) = summary {
            let mut manifest = self.manifest.borrow_mut();
            model_entry(&mut manifest, &m.slug)["perplexity"] = summary;
            store::write_manifest(&self.study.dir, &manifest)?;
        }
        self.events.send(Event::StageDone(StageDone::Perplexity {
            model: m.slug.clone(),
        }));
        Ok(())
    }

    /// Stamp the run's end in the manifest.
    fn finish(self) -> Result<Outcome> {
        let mut manifest = self.manifest.borrow_mut();
        if let Some(last) = manifest.runs.last_mut() {
            last["finished_at"] = json!(now());
        }
        failpoint::hit("final-manifest");
        store::write_manifest(&self.study.dir, &manifest)?;
        drop(manifest);
        Ok(Outcome {
            dir: self.study.dir.clone(),
        })
    }
}
