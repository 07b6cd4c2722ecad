//! The one verified reader of a results folder, used by report, export, open, merge and
//! resume. It reads only what the manifest lists: every file under `records/` must be a
//! listed part (an unlisted file is an error naming it; a planned part written after the
//! last manifest, by a live run or before a crash, is left out and reported as pending);
//! each listed part's sha256 (computed while the file is read, one read) and row count
//! must match the manifest, and its rows must be exactly its items × seeds × orders, no
//! duplicate and no foreign key; `items.parquet` must be the plan's items. What is not
//! finished is reported per model and precision; pooled statistics over unequal item
//! sets are refused unless asked for, then restricted to the common items and labelled.

use super::manifest::{Manifest, PartEntry, Plan, read_manifest};
use super::{ResultsDir, Shard, StoredRecord, batches_of, read_items, records_of, store_err};
use crate::bbq::Item;
use crate::error::{Error, Result};
use crate::vocab::{Precision, SeedSet};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// One planned part file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRef {
    pub model: String,
    pub precision: Precision,
    /// The part's index in the plan (which items it holds).
    pub index: usize,
    /// Its path under `records/`, as the manifest lists it.
    pub rel: String,
}

/// How far one model and precision got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub model: String,
    pub precision: Precision,
    pub done: usize,
    pub planned: usize,
}

/// A results folder, read and checked.
#[derive(Debug)]
pub struct Verified {
    pub manifest: Manifest,
    pub items: Vec<Item>,
    pub records: Vec<StoredRecord>,
    pub progress: Vec<Progress>,
    /// Planned parts on disk that the manifest does not list yet (left out).
    pub pending: Vec<PathBuf>,
    /// Parts the manifest lists that are not on disk (deleted): not counted as done.
    pub missing: Vec<PathBuf>,
    /// Every part read, with its rows and sha256 as read.
    pub entries: Vec<(PartRef, PartEntry)>,
    /// Indices of the parts read per (model, precision).
    done: BTreeMap<(String, Precision), BTreeSet<usize>>,
}

/// The part path (under `records/`) of part `k`, as a folder or a shard names it.
pub fn part_rel(plan: &Plan, model: &str, p: Precision, k: usize, shard: Option<Shard>) -> String {
    let name = match shard {
        Some(s) => format!("part-s{}-{k:05}.parquet", s.index),
        None => format!("part-{k:05}.parquet"),
    };
    format!(
        "model={model}/scheme={}/precision={}/{name}",
        plan.scheme.as_str(),
        p.as_str()
    )
}

/// Every part the plan has (of one shard, when given), in the order readers go through them.
pub fn planned_parts(plan: &Plan, shard: Option<Shard>) -> Vec<PartRef> {
    let mut out = Vec::new();
    for m in &plan.models {
        for &p in &plan.precisions {
            for k in (0..plan.part_count()).filter(|k| shard.is_none_or(|s| s.owns(*k))) {
                out.push(PartRef {
                    model: m.slug.clone(),
                    precision: p,
                    index: k,
                    rel: part_rel(plan, &m.slug, p, k, shard),
                });
            }
        }
    }
    // The order of the folder's paths component by component (as a sorted walk of
    // records/ gives), so readers see records in the order they always did.
    out.sort_by(|a, b| {
        let parts = |p: &PartRef| p.rel.split('/').map(String::from).collect::<Vec<_>>();
        parts(a).cmp(&parts(b))
    });
    out
}

/// Read `items.parquet` and check it is the plan's selection (count and keys, in order).
pub fn check_items(path: &Path, plan: &Plan) -> Result<Vec<Item>> {
    if !path.is_file() {
        return Err(store_err(
            path,
            "is missing: the folder's items cannot be checked or shown",
        ));
    }
    let items = read_items(path)?;
    let sha = Plan::items_sha256(items.iter().map(|i| (i.category.as_str(), i.example_id)));
    if items.len() != plan.items.count || sha != plan.items.sha256 {
        return Err(store_err(
            path,
            format!(
                "is not this folder's selection: it holds {} items (keys sha256 {}), the manifest's plan {} items (sha256 {})",
                items.len(),
                &sha[..12.min(sha.len())],
                plan.items.count,
                &plan.items.sha256[..12.min(plan.items.sha256.len())]
            ),
        ));
    }
    Ok(items)
}

/// A record's identity within a part.
type Key = (String, i64, i64, SeedSet, String);

/// The keys part `k` at precision `p` must hold: its items × seeds × orders (and the noise
/// seeds at BF16 in the study's order).
fn expected_keys(plan: &Plan, items: &[Item], p: Precision, k: usize) -> HashSet<Key> {
    let size = plan.part_size.max(1);
    let part = items.iter().skip(k * size).take(size);
    let mut out = HashSet::new();
    for it in part {
        for o in plan.orders() {
            for &s in &plan.seeds {
                out.insert((
                    it.category.clone(),
                    it.example_id,
                    s as i64,
                    SeedSet::Study,
                    o.clone(),
                ));
            }
        }
        if p == Precision::Bf16 {
            for &s in &plan.noise_seeds {
                out.insert((
                    it.category.clone(),
                    it.example_id,
                    s as i64,
                    SeedSet::Noise,
                    crate::rules::STUDY_ORDER.into(),
                ));
            }
        }
    }
    out
}

/// Read part `part` at `path`, hashing it while it is read, and check its rows are exactly
/// its items × seeds × orders; its manifest entry and records.
/// With `listed`, the entry the manifest has for it, checked first.
pub fn read_part(
    path: &Path,
    plan: &Plan,
    items: &[Item],
    part: &PartRef,
    listed: Option<(&PartEntry, &Path)>,
) -> Result<(PartEntry, Vec<super::Record>)> {
    use sha2::Digest;
    let data = std::fs::read(path).map_err(|e| store_err(path, format!("cannot read: {e}")))?;
    let sha256 = hex::encode(sha2::Sha256::digest(&data));
    if let Some((want, manifest)) = listed
        && want.sha256 != sha256
    {
        return Err(store_err(
            path,
            format!(
                "differs from what {} lists (sha256 {}, the file's {sha256}): it was changed or replaced",
                manifest.display(),
                want.sha256
            ),
        ));
    }
    let records = records_of(batches_of(bytes::Bytes::from(data), path)?, path)?;
    let mut expected = expected_keys(plan, items, part.precision, part.index);
    let want = expected.len();
    for r in &records {
        let key = (
            r.category.clone(),
            r.example_id,
            r.seed,
            r.seed_set,
            r.option_order.clone(),
        );
        if !expected.remove(&key) {
            return Err(store_err(
                path,
                format!(
                    "row {}:{} seed {} ({}, order {}) is not one of part {}'s records or appears twice",
                    key.0,
                    key.1,
                    key.2,
                    key.3.as_str(),
                    key.4,
                    part.index
                ),
            ));
        }
    }
    if !expected.is_empty() {
        return Err(store_err(
            path,
            format!(
                "holds {} rows, part {} has {want} ({} missing)",
                records.len(),
                part.index,
                expected.len()
            ),
        ));
    }
    let entry = PartEntry {
        rows: records.len() as u64,
        sha256,
        // What the file cannot tell: the batch size the manifest recorded, if any.
        batch_size: listed.and_then(|(e, _)| e.batch_size),
    };
    Ok((entry, records))
}

/// Every file under `records/` (hidden temporary files aside), relative to it, with `/`.
fn files_under(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| store_err(&d, format!("cannot list: {e}")))?;
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name();
            if name.to_str().is_some_and(|n| n.starts_with('.')) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Read and check a whole results folder (see the module's description).
pub fn read_verified(dir: &ResultsDir) -> Result<Verified> {
    let mpath = dir.manifest_path();
    let manifest = read_manifest(&mpath)?;
    let plan = &manifest.plan;
    let items = check_items(&dir.items_path(), plan)?;
    let planned = planned_parts(plan, dir.shard);
    let records_dir = dir.records_dir();
    let on_disk: BTreeSet<String> = match records_dir.is_dir() {
        true => files_under(&records_dir)?.into_iter().collect(),
        false => BTreeSet::new(),
    };
    let pending = unlisted_files(dir, &manifest, &planned, &on_disk)?;
    let read = read_listed(dir, &manifest, &items, &planned, &on_disk)?;
    let progress = progress_of(plan, dir.shard, &read.done);
    Ok(Verified {
        manifest,
        items,
        records: read.records,
        progress,
        pending,
        missing: read.missing,
        entries: read.entries,
        done: read.done,
    })
}

/// The parts of the folder's other shards, and those a merge into it placed already: in a
/// shard's folder they belong to the folder too. Empty for a whole run.
fn other_shards_parts(plan: &Plan, shard: Option<Shard>) -> BTreeSet<String> {
    let Some(s) = shard else {
        return BTreeSet::new();
    };
    (1..=s.count)
        .filter(|j| *j != s.index)
        .map(|index| {
            Some(Shard {
                index,
                count: s.count,
            })
        })
        .chain([None])
        .flat_map(|sh| planned_parts(plan, sh))
        .map(|p| p.rel)
        .collect()
}

/// Check the manifest's list against the plan and the files under `records/`: a listed
/// part the plan does not have and a file that is no planned part are errors naming them;
/// planned parts on disk that the manifest does not list yet are returned (pending).
fn unlisted_files(
    dir: &ResultsDir,
    manifest: &Manifest,
    planned: &[PartRef],
    on_disk: &BTreeSet<String>,
) -> Result<Vec<PathBuf>> {
    let (mpath, records_dir) = (dir.manifest_path(), dir.records_dir());
    let planned_rels: BTreeSet<&str> = planned.iter().map(|p| p.rel.as_str()).collect();
    let others = other_shards_parts(&manifest.plan, dir.shard);
    for rel in manifest.parts.keys() {
        if !planned_rels.contains(rel.as_str()) {
            return Err(store_err(
                &mpath,
                format!("lists part {rel}, which its plan does not have"),
            ));
        }
    }
    let mut pending = Vec::new();
    for rel in on_disk {
        let listed = manifest.parts.contains_key(rel)
            || (!manifest.lists_parts() && planned_rels.contains(rel.as_str()));
        if listed || others.contains(rel) {
            continue;
        }
        let path = records_dir.join(rel);
        if !planned_rels.contains(rel.as_str()) {
            return Err(store_err(
                &path,
                format!(
                    "is not a part {} lists (a copy, or a file from elsewhere?): move it out of records/ so no reader counts it",
                    mpath.display()
                ),
            ));
        }
        pending.push(path);
    }
    Ok(pending)
}

/// What reading the listed parts gave.
struct ReadParts {
    records: Vec<StoredRecord>,
    entries: Vec<(PartRef, PartEntry)>,
    missing: Vec<PathBuf>,
    done: BTreeMap<(String, Precision), BTreeSet<usize>>,
}

/// Read every listed part (every planned part on disk, for a manifest of format 1), each
/// checked by `read_part` and against its listed row count; a listed part gone from disk
/// is `missing`.
fn read_listed(
    dir: &ResultsDir,
    manifest: &Manifest,
    items: &[Item],
    planned: &[PartRef],
    on_disk: &BTreeSet<String>,
) -> Result<ReadParts> {
    let (mpath, records_dir, plan) = (dir.manifest_path(), dir.records_dir(), &manifest.plan);
    let mut out = ReadParts {
        records: Vec::new(),
        entries: Vec::new(),
        missing: Vec::new(),
        done: BTreeMap::new(),
    };
    for part in planned {
        let mut path = records_dir.join(&part.rel);
        let merged = records_dir.join(part_rel(
            plan,
            &part.model,
            part.precision,
            part.index,
            None,
        ));
        if dir.shard.is_some() && !path.is_file() && merged.is_file() {
            path = merged;
        }
        let entry = manifest.parts.get(&part.rel);
        let legacy = !manifest.lists_parts() && on_disk.contains(&part.rel);
        if entry.is_none() && !legacy {
            continue;
        }
        if !path.is_file() {
            // Deleted after it was written: that model-precision is unfinished.
            out.missing.push(path);
            continue;
        }
        let listed = entry.map(|e| (e, mpath.as_path()));
        let (got, recs) = read_part(&path, plan, items, part, listed)?;
        if let Some(want) = entry
            && want.rows != got.rows
        {
            return Err(store_err(
                &path,
                format!(
                    "holds {} rows, {} lists {}",
                    got.rows,
                    mpath.display(),
                    want.rows
                ),
            ));
        }
        out.entries.push((part.clone(), got));
        out.done
            .entry((part.model.clone(), part.precision))
            .or_default()
            .insert(part.index);
        out.records.extend(recs.into_iter().map(|rec| StoredRecord {
            model: part.model.clone(),
            scheme: plan.scheme.as_str().to_string(),
            precision: part.precision.as_str().to_string(),
            rec,
        }));
    }
    Ok(out)
}

fn progress_of(
    plan: &Plan,
    shard: Option<Shard>,
    done: &BTreeMap<(String, Precision), BTreeSet<usize>>,
) -> Vec<Progress> {
    let planned = (0..plan.part_count())
        .filter(|k| shard.is_none_or(|s| s.owns(*k)))
        .count();
    let mut out = Vec::new();
    for m in &plan.models {
        for &p in &plan.precisions {
            out.push(Progress {
                model: m.slug.clone(),
                precision: p,
                done: done.get(&(m.slug.clone(), p)).map_or(0, |s| s.len()),
                planned,
            });
        }
    }
    out
}

/// The items and records a statistic may pool, and the label of a partial folder.
pub struct Pooled {
    pub items: Vec<Item>,
    pub records: Vec<StoredRecord>,
    /// Set when the folder is unfinished and `--partial` restricted it.
    pub partial: Option<String>,
}

impl Verified {
    /// The model-precisions not finished, as `model precision (done of planned parts)`.
    pub fn unfinished(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .progress
            .iter()
            .filter(|p| p.done < p.planned)
            .map(|p| {
                format!(
                    "{} {} ({} of {} parts)",
                    p.model,
                    p.precision.as_str(),
                    p.done,
                    p.planned
                )
            })
            .collect();
        for m in &self.missing {
            out.push(format!("listed but missing: {}", m.display()));
        }
        out
    }

    /// Everything, when the folder is finished; else an error saying what is unfinished,
    /// or with `partial` the items finished at every precision that has any (labelled).
    pub fn pooled(self, partial: bool, root: &Path) -> Result<Pooled> {
        let unfinished = self.unfinished();
        if unfinished.is_empty() {
            return Ok(Pooled {
                items: self.items,
                records: self.records,
                partial: None,
            });
        }
        if !partial {
            return Err(Error::Input(format!(
                "{}: unfinished: {}; its precisions hold different items, so pooled statistics would compare unlike sets. Rerun the same command to finish it (it resumes), or pass --partial to use only the items finished at every precision",
                root.display(),
                unfinished.join(", ")
            )));
        }
        let started: Vec<&BTreeSet<usize>> = self.done.values().collect();
        let common: BTreeSet<usize> = match started.split_first() {
            Some((first, rest)) => first
                .iter()
                .copied()
                .filter(|k| rest.iter().all(|s| s.contains(k)))
                .collect(),
            None => BTreeSet::new(),
        };
        let size = self.manifest.plan.part_size.max(1);
        let total = self.items.len();
        let items: Vec<Item> = self
            .items
            .into_iter()
            .enumerate()
            .filter(|(i, _)| common.contains(&(i / size)))
            .map(|(_, it)| it)
            .collect();
        let keep: HashSet<(&str, i64)> = items
            .iter()
            .map(|i| (i.category.as_str(), i.example_id))
            .collect();
        let records: Vec<StoredRecord> = self
            .records
            .into_iter()
            .filter(|r| keep.contains(&(r.rec.category.as_str(), r.rec.example_id)))
            .collect();
        let label = format!(
            "PARTIAL: {} of {} items (those finished at every precision started); unfinished: {}",
            items.len(),
            total,
            unfinished.join(", ")
        );
        Ok(Pooled {
            items,
            records,
            partial: Some(label),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::manifest::{PlanItems, PlanModel};
    use crate::vocab::{Compute, Scheme};

    #[test]
    fn planned_parts_follow_the_folder_order_component_by_component() {
        let model = |slug: &str| PlanModel {
            slug: slug.into(),
            sha256: String::new(),
            checkpoints: Default::default(),
        };
        let plan = Plan {
            models: vec![model("a-2"), model("a")],
            scheme: Scheme::Mlx,
            precisions: vec![Precision::Q4, Precision::Bf16],
            seeds: vec![1],
            compute: Compute::Dequant,
            protocol: serde_json::Value::Null,
            selection: serde_json::Value::Null,
            items: PlanItems {
                count: 3,
                sha256: String::new(),
            },
            part_size: 2,
            noise_seeds: vec![],
            option_orders: vec![],
        };
        let rels: Vec<String> = planned_parts(&plan, None)
            .into_iter()
            .map(|p| p.rel)
            .collect();
        // `a` before `a-2`, as a sorted walk of records/ visits them (a plain string sort
        // of the paths would put `a-2/` first, since `-` sorts before `/`).
        assert_eq!(
            rels[..3],
            [
                "model=a/scheme=mlx/precision=bf16/part-00000.parquet",
                "model=a/scheme=mlx/precision=bf16/part-00001.parquet",
                "model=a/scheme=mlx/precision=q4/part-00000.parquet",
            ]
        );
        assert_eq!(rels.len(), 8);
        assert!(rels[4].starts_with("model=a-2/"));
        let shard = Shard { index: 2, count: 2 };
        let s: Vec<String> = planned_parts(&plan, Some(shard))
            .into_iter()
            .map(|p| p.rel)
            .collect();
        assert_eq!(s.len(), 4);
        assert!(
            s.iter().all(|r| r.ends_with("part-s2-00001.parquet")),
            "{s:?}"
        );
    }
}
