//! `stereoscope merge OUT DIR...`: join the shards of one plan into one results folder.
//!
//! Every shard must be finished and of the same plan and shard count; otherwise nothing is
//! written and the error names the shard, folder or part. Parts are renamed when OUT is the
//! folder the shards share, else hard-linked (copied across file systems), each under a
//! temporary name first. The merged folder is laid out as one unsharded run of the plan, so
//! `report`, `open` and a rerun of the same plan (which finds nothing left to do) work on it.

use super::manifest::{FORMAT_VERSION, Manifest, Plan, read_manifest};
use super::verify::{self, part_rel};
use super::{ResultsDir, Shard, plan_diff, shard_manifests, store_err, write_manifest};
use crate::error::{Error, Result};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// One shard found in the folders given.
struct Found {
    shard: Shard,
    dir: PathBuf,
    path: PathBuf,
    manifest: Manifest,
}

/// What `merge` did.
pub struct Merged {
    pub dir: ResultsDir,
    pub shards: usize,
    pub parts_placed: usize,
}

fn same_folder(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn find_shards(dirs: &[PathBuf]) -> Result<Vec<Found>> {
    let mut found: Vec<Found> = Vec::new();
    for d in dirs {
        if !d.is_dir() {
            return Err(Error::Input(format!("{}: no such folder", d.display())));
        }
        let paths = shard_manifests(d);
        if paths.is_empty() {
            return Err(Error::Input(format!(
                "{}: no shard manifest (manifest-sI.json); merge joins folders written with --shard I/N",
                d.display()
            )));
        }
        for path in paths {
            if found.iter().any(|f| same_folder(&f.path, &path)) {
                continue;
            }
            let manifest = read_manifest(&path)?;
            let shard = manifest
                .shard
                .filter(|s| s.is_valid())
                .filter(|s| path.file_name().and_then(|n| n.to_str()) == Some(&s.manifest_name()))
                .ok_or_else(|| {
                    store_err(
                        &path,
                        "its `shard` field is missing or does not match its name",
                    )
                })?;
            found.push(Found {
                shard,
                dir: d.clone(),
                path,
                manifest,
            });
        }
    }
    found.sort_by_key(|f| f.shard.index);
    Ok(found)
}

/// Check that the shards are of one plan and shard count, each exactly once.
fn check_complete_set(found: &[Found]) -> Result<()> {
    let Some(first) = found.first() else {
        return Err(Error::Input("merge needs at least one shard folder".into()));
    };
    let count = first.shard.count;
    for f in found {
        if f.shard.count != count {
            return Err(Error::Input(format!(
                "{} is shard {}/{} but {} is shard {}/{}: shards of different splits",
                f.path.display(),
                f.shard.index,
                f.shard.count,
                first.path.display(),
                first.shard.index,
                count
            )));
        }
        let diff = plan_diff(&first.manifest.plan.to_value(), &f.manifest.plan.to_value());
        if !diff.is_empty() {
            return Err(Error::Input(format!(
                "{} and {} are shards of different plans ({})",
                first.path.display(),
                f.path.display(),
                diff.join("; ")
            )));
        }
    }
    for w in found.windows(2) {
        if w[0].shard.index == w[1].shard.index {
            return Err(Error::Input(format!(
                "shard {}/{count} appears twice: {} and {}",
                w[0].shard.index,
                w[0].path.display(),
                w[1].path.display()
            )));
        }
    }
    let missing: Vec<String> = (1..=count)
        .filter(|i| !found.iter().any(|f| f.shard.index == *i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Input(format!(
            "shard(s) {} missing: no manifest-sI.json for them in the folders given",
            missing.join(", ")
        )));
    }
    Ok(())
}

/// Read and check every shard (see [`verify`]); each must be finished. The parts of the
/// merged folder with their manifest entries.
fn verified_parts(found: &[Found]) -> Result<std::collections::BTreeMap<String, super::PartEntry>> {
    let mut parts = std::collections::BTreeMap::new();
    for f in found {
        let dir = ResultsDir {
            root: f.dir.clone(),
            shard: Some(f.shard),
        };
        let v = verify::read_verified(&dir)?;
        let unfinished = v.unfinished();
        if !unfinished.is_empty() || !v.pending.is_empty() {
            return Err(Error::Input(format!(
                "shard {}/{} ({}) is not finished ({}), so nothing was merged; rerun that shard (a rerun resumes)",
                f.shard.index,
                f.shard.count,
                f.dir.display(),
                unfinished.join(", ")
            )));
        }
        for (part, entry) in v.entries {
            let rel = part_rel(
                &v.manifest.plan,
                &part.model,
                part.precision,
                part.index,
                None,
            );
            parts.insert(rel, entry);
        }
    }
    Ok(parts)
}

/// Add to `into` every key of `from` that it lacks, recursively.
fn fill_missing(into: &mut Value, from: &Value) {
    if let (Some(a), Some(b)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in b {
            match a.get_mut(k) {
                Some(existing) => fill_missing(existing, v),
                None => {
                    a.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// Put `from` at `to`: rename when `rename`, else hard-link or copy; through a temporary name.
fn place(from: &Path, to: &Path, rename: bool) -> Result<()> {
    let parent = to
        .parent()
        .ok_or_else(|| store_err(to, "has no parent folder"))?;
    std::fs::create_dir_all(parent)
        .map_err(|e| store_err(parent, format!("cannot create: {e}")))?;
    if rename {
        return std::fs::rename(from, to).map_err(|e| {
            store_err(
                to,
                format!("cannot rename {} into place: {e}", from.display()),
            )
        });
    }
    let name = to.file_name().and_then(|n| n.to_str()).unwrap_or("part");
    let tmp = parent.join(format!(".{name}.{}", super::tmp_suffix()));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(from, &tmp).is_err() {
        std::fs::copy(from, &tmp)
            .map_err(|e| store_err(&tmp, format!("cannot copy {}: {e}", from.display())))?;
    }
    std::fs::rename(&tmp, to).map_err(|e| store_err(to, format!("cannot rename into place: {e}")))
}

/// Join the shards found in `dirs` into `out`.
pub fn merge(out: &Path, dirs: &[PathBuf]) -> Result<Merged> {
    let found = find_shards(dirs)?;
    check_complete_set(&found)?;
    let first = &found[0];
    let plan = first.manifest.plan.clone();
    let target = ResultsDir::at(out);
    check_out(out, &target, &plan, &found)?;
    let parts = verified_parts(&found)?;
    // Every part of every shard must be on disk before anything moves.
    let moves = planned_moves(&plan, &found, &target, out)?;
    std::fs::create_dir_all(out).map_err(|e| out_error(out, format!("cannot create: {e}")))?;
    for (from, to, in_place) in &moves {
        place(from, to, *in_place)?;
    }
    place_tables(&found, out)?;
    write_manifest(&target, &merged_manifest(&found, parts))?;
    for f in found.iter().filter(|f| same_folder(&f.dir, out)) {
        let _ = std::fs::remove_file(&f.path);
    }
    Ok(Merged {
        dir: target,
        shards: first.shard.count,
        parts_placed: moves.len(),
    })
}

fn out_error(out: &Path, what: String) -> Error {
    Error::Input(format!("{}: {what}", out.display()))
}

/// `out` must be a folder of this plan, one of the shard folders, empty, or absent.
fn check_out(out: &Path, target: &ResultsDir, plan: &Plan, found: &[Found]) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(out_error(out, "exists and is not a folder".into()));
    }
    if target.manifest_path().is_file() {
        let old = read_manifest(&target.manifest_path())?;
        let diff = plan_diff(&old.plan.to_value(), &plan.to_value());
        if !diff.is_empty() {
            return Err(out_error(
                out,
                format!(
                    "holds a run of a different plan ({}); choose another OUT",
                    diff.join("; ")
                ),
            ));
        }
    } else if out.is_dir()
        && !found.iter().any(|f| same_folder(&f.dir, out))
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        return Err(out_error(
            out,
            "is not empty and is neither a results folder of this plan nor one of the shard folders".into(),
        ));
    }
    Ok(())
}

/// Every planned part's move (from, to, whether the shard folder is `out` itself); an
/// error naming the first unfinished parts when any is missing.
fn planned_moves(
    plan: &Plan,
    found: &[Found],
    target: &ResultsDir,
    out: &Path,
) -> Result<Vec<(PathBuf, PathBuf, bool)>> {
    let mut moves: Vec<(PathBuf, PathBuf, bool)> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for f in found {
        let src = ResultsDir {
            root: f.dir.clone(),
            shard: Some(f.shard),
        };
        let in_place = same_folder(&f.dir, out);
        for part in verify::planned_parts(plan, Some(f.shard)) {
            let (slug, scheme, p, k) = (
                &part.model,
                plan.scheme.as_str(),
                part.precision.as_str(),
                part.index,
            );
            let from = src.part_path(slug, scheme, p, k);
            let to = target.part_path(slug, scheme, p, k);
            if from.is_file() {
                moves.push((from, to, in_place));
            } else if !to.is_file() {
                missing.push(format!(
                    "shard {}/{} ({}): {}",
                    f.shard.index,
                    f.shard.count,
                    f.dir.display(),
                    from.display()
                ));
            }
        }
    }
    if !missing.is_empty() {
        return Err(Error::Input(format!(
            "{} part(s) are not finished, so nothing was merged; rerun those shards (a rerun resumes). First: {}",
            missing.len(),
            missing
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    Ok(moves)
}

/// items.parquet (required) and perplexity.parquet (when a shard has it) into `out`.
fn place_tables(found: &[Found], out: &Path) -> Result<()> {
    for name in ["items.parquet", "perplexity.parquet"] {
        let to = out.join(name);
        if to.is_file() {
            continue;
        }
        if let Some(from) = found.iter().map(|f| f.dir.join(name)).find(|p| p.is_file()) {
            place(&from, &to, false)?;
        } else if name == "items.parquet" {
            return Err(Error::Input(format!(
                "no items.parquet in the shard folders ({})",
                found[0].dir.display()
            )));
        }
    }
    Ok(())
}

/// One manifest for the merged folder: the first shard's, with every shard's models and
/// runs, every part, and where the shards came from.
fn merged_manifest(
    found: &[Found],
    parts: std::collections::BTreeMap<String, super::PartEntry>,
) -> Manifest {
    let mut merged = found[0].manifest.clone();
    for f in &found[1..] {
        for (slug, entry) in &f.manifest.models {
            match merged.models.get_mut(slug) {
                Some(existing) => fill_missing(existing, entry),
                None => {
                    merged.models.insert(slug.clone(), entry.clone());
                }
            }
        }
    }
    let mut runs = Vec::new();
    for f in found {
        for r in &f.manifest.runs {
            let mut r = r.clone();
            r["shard"] = json!(format!("{}/{}", f.shard.index, f.shard.count));
            runs.push(r);
        }
    }
    merged.format_version = FORMAT_VERSION;
    merged.shard = None;
    merged.runs = runs;
    merged.parts = parts;
    merged.merged = Some(json!({
        "at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "shards": found.iter().map(|f| json!({
            "shard": format!("{}/{}", f.shard.index, f.shard.count),
            "from": f.dir.display().to_string(),
        })).collect::<Vec<_>>(),
    }));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_take_parts_round_robin_and_parse_strictly() {
        let s = Shard::parse("2/3").expect("parse");
        assert_eq!((s.index, s.count), (2, 3));
        let owned: Vec<usize> = (0..7).filter(|k| s.owns(*k)).collect();
        assert_eq!(owned, vec![1, 4]);
        // Every part belongs to exactly one shard.
        for k in 0..20 {
            let owners = (1..=3)
                .filter(|i| {
                    Shard {
                        index: *i,
                        count: 3,
                    }
                    .owns(k)
                })
                .count();
            assert_eq!(owners, 1);
        }
        for bad in ["0/3", "4/3", "3", "a/b", "1/0", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn fill_missing_keeps_what_is_there_and_adds_the_rest() {
        let mut a = json!({"m": {"bf16": {"secs": 1}, "id": "x"}});
        fill_missing(
            &mut a,
            &json!({"m": {"bf16": {"secs": 9, "w": 2}, "q4": {"secs": 3}}}),
        );
        assert_eq!(
            a,
            json!({"m": {"bf16": {"secs": 1, "w": 2}, "q4": {"secs": 3}, "id": "x"}})
        );
    }
}
