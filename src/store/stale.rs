//! Temporary files a stopped run left behind. Every file is written under a hidden
//! temporary name (`.NAME.PID-NANOS.tmp`) and renamed into place, so a run stopped between
//! the two (a kill, a crash, a full disk) leaves the temporary file. Readers skip hidden
//! files, so it never counts; a run removes those of the files it owns once it holds the
//! folder's locks: a whole run its manifest, `items.parquet`, `perplexity.parquet` and
//! every planned part; a shard its own manifest and parts (the first shard also
//! `perplexity.parquet`), and `items.parquet`'s while it holds the setup lock. The derived
//! tables (`report`'s `metrics.parquet` and `transitions.parquet`) are written without a
//! lock, so their writer removes only temporary files older than [`ORPHAN_AGE`], which no
//! write in progress can be.

use super::verify::planned_parts;
use super::{Plan, ResultsDir};
use std::path::{Path, PathBuf};

/// Whether `file` is a temporary file of `name`: `.NAME.DIGITS-DIGITS.tmp`.
pub fn is_temporary_of(file: &str, name: &str) -> bool {
    let Some(mid) = file
        .strip_prefix('.')
        .and_then(|f| f.strip_prefix(name))
        .and_then(|f| f.strip_prefix('.'))
        .and_then(|f| f.strip_suffix(".tmp"))
    else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    mid.split_once('-')
        .is_some_and(|(pid, nanos)| digits(pid) && digits(nanos))
}

/// The files (folder, name) whose temporary files a run of `plan` into `dir` owns, the
/// setup lock held.
fn owned(dir: &ResultsDir, plan: &Plan) -> Vec<(PathBuf, String)> {
    let root = dir.root.clone();
    let manifest = dir
        .manifest_path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = vec![
        (root.clone(), manifest),
        (root.clone(), "items.parquet".to_string()),
    ];
    if dir.shard.is_none_or(|s| s.index == 1) {
        out.push((root, "perplexity.parquet".to_string()));
    }
    for part in planned_parts(plan, dir.shard) {
        let path = dir.records_dir().join(&part.rel);
        if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
            out.push((parent.to_path_buf(), name.to_string_lossy().into_owned()));
        }
    }
    out
}

/// Remove the temporary files a stopped run of this plan left; the paths removed. A file
/// that cannot be removed is left (it never counts for readers).
pub fn remove(dir: &ResultsDir, plan: &Plan) -> Vec<PathBuf> {
    let mut by_folder: std::collections::BTreeMap<PathBuf, Vec<String>> = Default::default();
    for (folder, name) in owned(dir, plan) {
        by_folder.entry(folder).or_default().push(name);
    }
    by_folder
        .into_iter()
        .flat_map(|(folder, names)| sweep(&folder, &names, |_| true))
        .collect()
}

/// Remove the temporary files in `folder` of any of `names` for which `also` holds; the
/// paths removed. A file that cannot be removed is left (it never counts for readers).
fn sweep(folder: &Path, names: &[String], also: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    list(folder)
        .into_iter()
        .filter(|file| {
            file.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|f| names.iter().any(|n| is_temporary_of(f, n)))
                && also(file)
                && std::fs::remove_file(file).is_ok()
        })
        .collect()
}

/// How old a derived table's temporary file must be before the table's next writer removes
/// it. Those tables are written without a lock, so a younger one may be another process's
/// write in progress (on any host sharing the folder); a write takes seconds.
pub const ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Remove the temporary files of `path`'s file older than [`ORPHAN_AGE`] (those a stopped
/// writer left); the paths removed.
pub fn remove_orphans_of(path: &Path) -> Vec<PathBuf> {
    let (Some(folder), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
    else {
        return Vec::new();
    };
    let now = std::time::SystemTime::now();
    let old = |f: &Path| {
        std::fs::metadata(f)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > ORPHAN_AGE)
    };
    sweep(folder, &[name.to_string()], old)
}

fn list(folder: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_writers_temporary_names_match() {
        let n = "part-00001.parquet";
        assert!(is_temporary_of(".part-00001.parquet.4242-123456789.tmp", n));
        assert!(!is_temporary_of("part-00001.parquet", n));
        assert!(!is_temporary_of(".part-00001.parquet.tmp", n));
        assert!(!is_temporary_of(".part-00001.parquet.x-1.tmp", n));
        assert!(!is_temporary_of(".part-00011.parquet.1-1.tmp", n));
        assert!(!is_temporary_of(".part-00001.parquet.1-1.tmp.bak", n));
    }

    #[test]
    fn a_tables_writer_removes_only_its_own_old_temporary_files() {
        let dir = std::env::temp_dir().join(format!("stereoscope-orphans-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = |name: &str, hours_ago: u64| {
            let p = dir.join(name);
            let f = std::fs::File::create(&p).expect("create");
            let t = std::time::SystemTime::now() - std::time::Duration::from_secs(hours_ago * 3600);
            f.set_modified(t).expect("mtime");
            p
        };
        let stale = file(".metrics.parquet.11-22.tmp", 2);
        let fresh = file(".metrics.parquet.33-44.tmp", 0);
        let other = file(".transitions.parquet.55-66.tmp", 2);
        let table = file("metrics.parquet", 2);
        let removed = remove_orphans_of(&dir.join("metrics.parquet"));
        assert_eq!(removed, vec![stale.clone()]);
        assert!(!stale.exists());
        assert!(fresh.exists() && other.exists() && table.exists());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
