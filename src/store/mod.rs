//! The results folder: `manifest.json`, `items.parquet` and hive-partitioned record parts
//! `records/model=…/scheme=…/precision=…/part-NNNNN.parquet`. Parts are written under a
//! hidden temporary name and renamed, so a crash leaves either a whole part or none (readers
//! such as pyarrow skip hidden files). A folder made by a different plan is refused.
//!
//! A shard `I/N` of a plan writes `manifest-sI.json` and parts `part-sI-NNNNN.parquet`, so
//! shards can share one folder; `merge` (in `merge.rs`) joins them into the layout above.

use crate::bbq::Item;
use crate::error::{Error, Result};
use crate::vocab::{Role, SeedSet};
use arrow::array::{
    Array, ArrayRef, Float64Array, Int8Array, Int64Array, RecordBatch, StringArray, UInt8Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use manifest::{FORMAT_VERSION, Manifest, PartEntry, Plan, PlanItems, PlanModel};

/// One record: one (model, scheme, precision, seed, item) answer. Model, scheme and
/// precision live in the partition path.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub category: String,
    pub example_id: i64,
    pub context_condition: String,
    pub question_polarity: String,
    pub seed: i64,
    pub prob: [f64; 3],
    pub letter_mass: f64,
    pub samp_prob: [f64; 3],
    pub seed_set: SeedSet,
    pub option_order: String,
    pub sampled_text: String,
    pub answer: Option<u8>,
    pub role: Role,
    pub latency_ms: f64,
}

/// A record read back with its partition values.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub model: String,
    pub scheme: String,
    pub precision: String,
    pub rec: Record,
}

fn store_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Store(format!("{}: {what}", path.display()))
}

fn record_schema() -> Arc<Schema> {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    let f = |n: &str| Field::new(n, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        s("category"),
        Field::new("example_id", DataType::Int64, false),
        s("context_condition"),
        s("question_polarity"),
        Field::new("seed", DataType::Int64, false),
        f("prob_a"),
        f("prob_b"),
        f("prob_c"),
        f("letter_mass"),
        f("samp_prob_a"),
        f("samp_prob_b"),
        f("samp_prob_c"),
        s("seed_set"),
        s("option_order"),
        s("sampled_text"),
        Field::new("answer", DataType::Int8, true),
        s("role"),
        f("latency_ms"),
    ]))
}

fn strings<'a>(it: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(it))
}

fn floats(it: impl Iterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(it))
}

/// A suffix for temporary file names that differs between processes, also on different
/// hosts writing into one shared folder (shards).
fn tmp_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}.tmp", std::process::id())
}

/// Write `batch` to `path` through a temporary file; `point` is the failure point reached
/// between the two ([`failpoint`]).
fn write_batch(path: &Path, batch: &RecordBatch, point: &str) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| store_err(path, "no parent folder"))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| store_err(dir, format!("cannot create folder: {e}")))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("part");
    let tmp = dir.join(format!(".{name}.{}", tmp_suffix()));
    let file =
        std::fs::File::create(&tmp).map_err(|e| store_err(&tmp, format!("cannot write: {e}")))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w =
        ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| store_err(&tmp, e))?;
    w.write(batch).map_err(|e| store_err(&tmp, e))?;
    let file = w.into_inner().map_err(|e| store_err(&tmp, e))?;
    file.sync_all().map_err(|e| store_err(&tmp, e))?;
    failpoint::hit(point);
    std::fs::rename(&tmp, path)
        .map_err(|e| store_err(path, format!("cannot rename part into place: {e}")))?;
    Ok(())
}

/// Write one part file atomically.
pub fn write_records(path: &Path, records: &[Record]) -> Result<()> {
    let r = records;
    let cols: Vec<ArrayRef> = vec![
        strings(r.iter().map(|x| x.category.as_str())),
        Arc::new(Int64Array::from_iter_values(r.iter().map(|x| x.example_id))),
        strings(r.iter().map(|x| x.context_condition.as_str())),
        strings(r.iter().map(|x| x.question_polarity.as_str())),
        Arc::new(Int64Array::from_iter_values(r.iter().map(|x| x.seed))),
        floats(r.iter().map(|x| x.prob[0])),
        floats(r.iter().map(|x| x.prob[1])),
        floats(r.iter().map(|x| x.prob[2])),
        floats(r.iter().map(|x| x.letter_mass)),
        floats(r.iter().map(|x| x.samp_prob[0])),
        floats(r.iter().map(|x| x.samp_prob[1])),
        floats(r.iter().map(|x| x.samp_prob[2])),
        strings(r.iter().map(|x| x.seed_set.as_str())),
        strings(r.iter().map(|x| x.option_order.as_str())),
        strings(r.iter().map(|x| x.sampled_text.as_str())),
        Arc::new(Int8Array::from(
            r.iter()
                .map(|x| x.answer.map(|a| a as i8))
                .collect::<Vec<_>>(),
        )),
        strings(r.iter().map(|x| x.role.as_str())),
        floats(r.iter().map(|x| x.latency_ms)),
    ];
    let batch = RecordBatch::try_new(record_schema(), cols).map_err(|e| store_err(path, e))?;
    write_batch(path, &batch, "part-tmp")
}

/// Write `items.parquet`.
pub fn write_items(path: &Path, items: &[Item]) -> Result<()> {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    let u = |n: &str| Field::new(n, DataType::UInt8, false);
    let schema = Arc::new(Schema::new(vec![
        s("category"),
        Field::new("example_id", DataType::Int64, false),
        s("context_condition"),
        s("question_polarity"),
        s("context"),
        s("question"),
        s("ans0"),
        s("ans1"),
        s("ans2"),
        u("label"),
        u("biased_index"),
        u("unknown_index"),
    ]));
    let i = items;
    let u8s = |f: fn(&Item) -> u8| -> ArrayRef {
        Arc::new(UInt8Array::from_iter_values(i.iter().map(f)))
    };
    let cols: Vec<ArrayRef> = vec![
        strings(i.iter().map(|x| x.category.as_str())),
        Arc::new(Int64Array::from_iter_values(i.iter().map(|x| x.example_id))),
        strings(i.iter().map(|x| x.context_condition.as_str())),
        strings(i.iter().map(|x| x.question_polarity.as_str())),
        strings(i.iter().map(|x| x.context.as_str())),
        strings(i.iter().map(|x| x.question.as_str())),
        strings(i.iter().map(|x| x.answers[0].as_str())),
        strings(i.iter().map(|x| x.answers[1].as_str())),
        strings(i.iter().map(|x| x.answers[2].as_str())),
        u8s(|x| x.label),
        u8s(|x| x.biased_index),
        u8s(|x| x.unknown_index),
    ];
    let batch = RecordBatch::try_new(schema, cols).map_err(|e| store_err(path, e))?;
    write_batch(path, &batch, "items-tmp")
}

fn col<'a, T: 'static>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            store_err(
                path,
                format!("column `{name}` is missing or has the wrong type"),
            )
        })
}

fn read_batches(path: &Path) -> Result<Vec<RecordBatch>> {
    let file =
        std::fs::File::open(path).map_err(|e| store_err(path, format!("cannot open: {e}")))?;
    batches_of(file, path)
}

/// The batches of a Parquet file already in memory or open; `path` names it in errors.
fn batches_of<R: parquet::file::reader::ChunkReader + 'static>(
    data: R,
    path: &Path,
) -> Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(data)
        .and_then(|b| b.build())
        .map_err(|e| store_err(path, format!("not a readable Parquet file: {e}")))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| store_err(path, e))
}

/// Read one part file.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    records_of(read_batches(path)?, path)
}

/// The records of a part's batches; `path` names it in errors.
fn records_of(batches: Vec<RecordBatch>, path: &Path) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for b in batches {
        let s = |n: &str| col::<StringArray>(&b, n, path);
        let f = |n: &str| col::<Float64Array>(&b, n, path);
        let i = |n: &str| col::<Int64Array>(&b, n, path);
        let (cat, cond, pol, set, order, text, role) = (
            s("category")?,
            s("context_condition")?,
            s("question_polarity")?,
            s("seed_set")?,
            s("option_order")?,
            s("sampled_text")?,
            s("role")?,
        );
        let (id, seed) = (i("example_id")?, i("seed")?);
        let (pa, pb, pc, lm) = (f("prob_a")?, f("prob_b")?, f("prob_c")?, f("letter_mass")?);
        let (sa, sb, sc, lat) = (
            f("samp_prob_a")?,
            f("samp_prob_b")?,
            f("samp_prob_c")?,
            f("latency_ms")?,
        );
        let ans = col::<Int8Array>(&b, "answer", path)?;
        for r in 0..b.num_rows() {
            out.push(Record {
                category: cat.value(r).to_string(),
                example_id: id.value(r),
                context_condition: cond.value(r).to_string(),
                question_polarity: pol.value(r).to_string(),
                seed: seed.value(r),
                prob: [pa.value(r), pb.value(r), pc.value(r)],
                letter_mass: lm.value(r),
                samp_prob: [sa.value(r), sb.value(r), sc.value(r)],
                seed_set: SeedSet::parse(set.value(r)).map_err(|e| store_err(path, e))?,
                option_order: order.value(r).to_string(),
                sampled_text: text.value(r).to_string(),
                answer: (!ans.is_null(r)).then(|| ans.value(r) as u8),
                role: Role::parse(role.value(r)).map_err(|e| store_err(path, e))?,
                latency_ms: lat.value(r),
            });
        }
    }
    Ok(out)
}

/// Read `items.parquet`.
pub fn read_items(path: &Path) -> Result<Vec<Item>> {
    let mut out = Vec::new();
    for b in read_batches(path)? {
        let s = |n: &str| col::<StringArray>(&b, n, path);
        let u = |n: &str| col::<UInt8Array>(&b, n, path);
        let id = col::<Int64Array>(&b, "example_id", path)?;
        let (cat, cond, pol, ctx, q) = (
            s("category")?,
            s("context_condition")?,
            s("question_polarity")?,
            s("context")?,
            s("question")?,
        );
        let (a0, a1, a2) = (s("ans0")?, s("ans1")?, s("ans2")?);
        let (label, bi, ui) = (u("label")?, u("biased_index")?, u("unknown_index")?);
        for r in 0..b.num_rows() {
            out.push(Item {
                category: cat.value(r).into(),
                example_id: id.value(r),
                context_condition: cond.value(r).into(),
                question_polarity: pol.value(r).into(),
                context: ctx.value(r).into(),
                question: q.value(r).into(),
                answers: [a0.value(r).into(), a1.value(r).into(), a2.value(r).into()],
                label: label.value(r),
                biased_index: bi.value(r),
                unknown_index: ui.value(r),
            });
        }
    }
    Ok(out)
}

/// One shard of a plan: part `k` of every model and precision belongs to shard
/// `k % count + 1`. `index` counts from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Parse `I/N` (1 ≤ I ≤ N).
    pub fn parse(s: &str) -> Result<Shard> {
        let bad = || {
            Error::Input(format!(
                "--shard must be I/N with 1 ≤ I ≤ N (such as 2/8), not `{s}`"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether part `k` belongs to this shard.
    pub fn owns(&self, part: usize) -> bool {
        part % self.count == self.index - 1
    }

    /// Whether `index` and `count` make a shard (1 ≤ index ≤ count).
    pub fn is_valid(&self) -> bool {
        self.index >= 1 && self.index <= self.count
    }

    /// The manifest file name of this shard.
    pub fn manifest_name(&self) -> String {
        format!("manifest-s{}.json", self.index)
    }
}

/// A results folder, or one shard's files in it.
#[derive(Debug, Clone)]
pub struct ResultsDir {
    pub root: PathBuf,
    pub shard: Option<Shard>,
}

impl ResultsDir {
    /// A whole (unsharded or merged) results folder.
    pub fn at(root: &Path) -> ResultsDir {
        ResultsDir {
            root: root.to_path_buf(),
            shard: None,
        }
    }

    pub fn manifest_path(&self) -> PathBuf {
        match self.shard {
            Some(s) => self.root.join(s.manifest_name()),
            None => self.root.join("manifest.json"),
        }
    }

    pub fn items_path(&self) -> PathBuf {
        self.root.join("items.parquet")
    }

    pub fn records_dir(&self) -> PathBuf {
        self.root.join("records")
    }

    /// The path of part `index` of one model, scheme and precision.
    pub fn part_path(&self, model: &str, scheme: &str, precision: &str, index: usize) -> PathBuf {
        self.records_dir()
            .join(format!("model={model}"))
            .join(format!("scheme={scheme}"))
            .join(format!("precision={precision}"))
            .join(match self.shard {
                Some(s) => format!("part-s{}-{index:05}.parquet", s.index),
                None => format!("part-{index:05}.parquet"),
            })
    }

    /// Open `root` for a run of `plan` (or one shard of it): create it, or resume it when its
    /// manifest holds the same plan. A folder with another plan, or a non-empty folder that
    /// is not a results folder, is refused; a folder that holds only this plan's
    /// `items.parquet` (a run stopped before its first manifest) is resumed. Shards of one
    /// plan may share a folder; a whole run and shards never do. A plan that only adds
    /// models or precisions extends the folder: returned with the folder is what it adds.
    /// A folder another run holds locked is refused.
    pub fn prepare(
        root: &Path,
        plan: &Plan,
        shard: Option<Shard>,
    ) -> Result<(ResultsDir, Vec<String>)> {
        let dir = ResultsDir {
            root: root.to_path_buf(),
            shard,
        };
        let extended = dir.check_for(plan)?;
        let out_err = |what: String| Error::Store(format!("--out {}: {what}", root.display()));
        std::fs::create_dir_all(root).map_err(|e| out_err(format!("cannot create: {e}")))?;
        let probe = root.join(format!(".write-probe.{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(|e| out_err(format!("is not writable: {e}")))?;
        let _ = std::fs::remove_file(&probe);
        // Said now, before any model loads; the run takes the lock again for its whole time.
        drop(lock::FolderLock::acquire(&dir)?);
        Ok((dir, extended))
    }

    /// Whether a run of `plan` may write into this folder (see [`ResultsDir::prepare`]);
    /// what the plan adds to the folder's when it extends it. The run checks again under
    /// the folder's lock.
    pub fn check_for(&self, plan: &Plan) -> Result<Vec<String>> {
        let (root, shard) = (&self.root, self.shard);
        let out_err = |what: String| Error::Store(format!("--out {}: {what}", root.display()));
        if root.exists() && !root.is_dir() {
            return Err(out_err("exists and is not a folder".into()));
        }
        let whole = root.join("manifest.json");
        let shards = shard_manifests(root);
        if shard.is_some() && whole.is_file() {
            return Err(out_err(
                "holds a whole run (manifest.json); shards would duplicate its records: choose another --out".into(),
            ));
        }
        if shard.is_none() && !whole.is_file() && !shards.is_empty() {
            return Err(out_err(format!(
                "holds shards of a run ({}); join them with `stereoscope merge OUT {}` first",
                shards
                    .iter()
                    .map(|p| p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("?")
                        .to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                root.display()
            )));
        }
        let mut theirs: Vec<PathBuf> = if shard.is_some() { shards } else { vec![] };
        if whole.is_file() {
            theirs.push(whole);
        }
        let mut extended = Vec::new();
        for path in &theirs {
            let old = manifest::read_manifest(path)?;
            let (old_plan, new_plan) = (old.plan.to_value(), plan.to_value());
            let diff = plan_diff(&old_plan, &new_plan);
            if !diff.is_empty() {
                match plan_extension(&old_plan, &new_plan) {
                    Some(added) => extended = added,
                    None => {
                        return Err(out_err(format!(
                            "holds a run of a different plan ({}, in {}); choose another --out or remove it (a plan that only adds models or precisions extends the folder)",
                            diff.join("; "),
                            path.display()
                        )));
                    }
                }
            }
            if let Some(s) = shard {
                let count = old.shard.map(|o| o.count);
                if count != Some(s.count) {
                    return Err(out_err(format!(
                        "{} is a shard of {} but this run is a shard of {}; use the same N for every shard",
                        path.display(),
                        count.map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
                        s.count
                    )));
                }
            }
        }
        if theirs.is_empty() {
            self.check_unstarted(plan)?;
        }
        Ok(extended)
    }

    /// A folder without a manifest may be written only when it is empty (hidden files, such
    /// as locks and temporary files, aside) or holds just this plan's `items.parquet`.
    fn check_unstarted(&self, plan: &Plan) -> Result<()> {
        let root = &self.root;
        let out_err = |what: String| Error::Store(format!("--out {}: {what}", root.display()));
        let visible: Vec<String> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .filter(|n| !n.starts_with('.'))
            .collect();
        match visible.as_slice() {
            [] => Ok(()),
            [one] if one == "items.parquet" => verify::check_items(&self.items_path(), plan)
                .map(|_| ())
                .map_err(|e| {
                    out_err(format!(
                        "has no manifest.json and its items.parquet is not this plan's ({e}); choose another --out or remove it"
                    ))
                }),
            _ => Err(out_err(
                "is not empty and has no manifest.json: not a stereoscope results folder".into(),
            )),
        }
    }
}

/// When `new` equals `old` but for models and precisions added to it (none removed), what it
/// adds; the parts already on disk stay valid, since each model and precision has its own.
pub fn plan_extension(old: &serde_json::Value, new: &serde_json::Value) -> Option<Vec<String>> {
    let (o, n) = (old.as_object()?, new.as_object()?);
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    if keys
        .iter()
        .any(|k| *k != "models" && *k != "precisions" && o.get(*k) != n.get(*k))
    {
        return None;
    }
    let mut added = Vec::new();
    for (key, what) in [("models", "model"), ("precisions", "precision")] {
        let (a, b) = (o.get(key)?.as_array()?, n.get(key)?.as_array()?);
        if a.iter().any(|x| !b.contains(x)) {
            return None;
        }
        for x in b.iter().filter(|x| !a.contains(x)) {
            let name = x
                .get("slug")
                .and_then(|s| s.as_str())
                .or_else(|| x.as_str())
                .unwrap_or("?");
            added.push(format!("{what} {name}"));
        }
    }
    (!added.is_empty()).then_some(added)
}

/// The error for a folder without `manifest.json`: names the shards it holds, if any.
pub fn not_a_results_folder(dir: &Path) -> Error {
    let shards = shard_manifests(dir);
    if shards.is_empty() {
        Error::Input(format!(
            "{} is not a stereoscope results folder (no manifest.json)",
            dir.display()
        ))
    } else {
        Error::Input(format!(
            "{} holds {} shard(s) of a run, not a whole run; join them with `stereoscope merge OUT {}`",
            dir.display(),
            shards.len(),
            dir.display()
        ))
    }
}

/// The shard manifests (`manifest-sI.json`) in a folder, sorted.
pub fn shard_manifests(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.strip_prefix("manifest-s")
                    .and_then(|r| r.strip_suffix(".json"))
                    .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .collect();
    v.sort();
    v
}

/// Keys whose values differ between two plans, each with both values.
pub fn plan_diff(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return if old == new {
            vec![]
        } else {
            vec!["plan".into()]
        };
    };
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| {
            let show = |v: Option<&serde_json::Value>| {
                v.map(|v| v.to_string()).unwrap_or_else(|| "absent".into())
            };
            format!("{k}: {} there, {} now", show(o.get(k)), show(n.get(k)))
        })
        .collect()
}

/// Read a manifest (checked as [`Manifest`]) as JSON, for display.
pub fn read_manifest(path: &Path) -> Result<serde_json::Value> {
    let m = manifest::read_manifest(path)?;
    serde_json::to_value(m).map_err(|e| store_err(path, e))
}

/// Write the manifest of `dir` atomically.
pub fn write_manifest(dir: &ResultsDir, manifest: &Manifest) -> Result<()> {
    manifest::write_manifest_at(&dir.manifest_path(), manifest)
}

/// The records shown in the study's option order (`012`), the order the explorer, the
/// export and the figures use.
pub fn study_order(records: Vec<StoredRecord>) -> Vec<StoredRecord> {
    records
        .into_iter()
        .filter(|r| r.rec.option_order == crate::rules::STUDY_ORDER)
        .collect()
}

/// Every record of a results folder that its manifest lists, checked (see [`verify`]);
/// parts not yet listed are left out. An empty list when the folder has no manifest yet.
pub fn read_all_records(dir: &ResultsDir) -> Result<Vec<StoredRecord>> {
    if !dir.manifest_path().is_file() {
        return Ok(Vec::new());
    }
    Ok(verify::read_verified(dir)?.records)
}

pub mod export;
pub mod failpoint;
pub mod lock;
pub mod manifest;
pub mod merge;
pub mod perplexity;
pub mod stale;
pub mod table;
pub mod verify;
pub mod view;
