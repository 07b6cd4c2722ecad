//! The lock on a results folder: an advisory file lock that a run holds for its whole time,
//! so two runs never write into one folder. A whole run holds `.stereoscope.lock`
//! exclusively; a shard holds it shared (shards of one plan share a folder) and its own
//! `.stereoscope-sI.lock` exclusively. Checking the folder's plan and writing the first
//! manifest happen under `.stereoscope-setup.lock`, so two runs started together cannot
//! both find the folder empty. The lock files stay (removing a lock file is a race); they
//! are hidden, so readers of the folder skip them. A lock ends when its process does.

use super::{ResultsDir, store_err};
use crate::error::{Error, Result};
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

/// The locks a run holds; released on drop.
#[derive(Debug)]
pub struct FolderLock {
    _files: Vec<File>,
}

fn open(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| store_err(path, format!("cannot open the folder's lock: {e}")))
}

fn held(root: &Path, lock: &Path) -> Error {
    Error::Store(format!(
        "{}: another stereoscope run is writing into this folder (it holds {}); wait for it to finish or choose another --out",
        root.display(),
        lock.display()
    ))
}

fn take(root: &Path, path: PathBuf, shared: bool) -> Result<File> {
    let f = open(&path)?;
    let r = match shared {
        true => f.try_lock_shared(),
        false => f.try_lock(),
    };
    match r {
        Ok(()) => Ok(f),
        Err(TryLockError::WouldBlock) => Err(held(root, &path)),
        Err(TryLockError::Error(e)) => Err(store_err(&path, format!("cannot lock: {e}"))),
    }
}

impl FolderLock {
    /// Lock `dir` (which must exist) for a run, or fail at once naming the lock another run
    /// holds.
    pub fn acquire(dir: &ResultsDir) -> Result<FolderLock> {
        let root = &dir.root;
        let main = root.join(".stereoscope.lock");
        let files = match dir.shard {
            None => vec![take(root, main, false)?],
            Some(s) => vec![
                take(root, main, true)?,
                take(
                    root,
                    root.join(format!(".stereoscope-s{}.lock", s.index)),
                    false,
                )?,
            ],
        };
        Ok(FolderLock { _files: files })
    }

    /// Wait for the folder's setup lock (held only while a run checks the folder and writes
    /// its first manifest).
    pub fn setup(root: &Path) -> Result<FolderLock> {
        let path = root.join(".stereoscope-setup.lock");
        let f = open(&path)?;
        f.lock()
            .map_err(|e| store_err(&path, format!("cannot lock: {e}")))?;
        Ok(FolderLock { _files: vec![f] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Shard;

    #[test]
    fn a_locked_folder_is_refused_until_the_lock_is_dropped() {
        let root = std::env::temp_dir().join(format!("stereoscope-lock-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("tmp");
        let whole = ResultsDir::at(&root);
        let shard = |index| ResultsDir {
            root: root.clone(),
            shard: Some(Shard { index, count: 2 }),
        };
        let first = FolderLock::acquire(&whole).expect("first lock");
        let e = FolderLock::acquire(&whole).expect_err("second run refused");
        assert!(e.to_string().contains("another stereoscope run"), "{e}");
        assert!(
            FolderLock::acquire(&shard(1)).is_err(),
            "a shard beside a whole run"
        );
        drop(first);
        let s1 = FolderLock::acquire(&shard(1)).expect("shard 1");
        let s2 = FolderLock::acquire(&shard(2)).expect("shard 2 beside shard 1");
        assert!(FolderLock::acquire(&shard(1)).is_err(), "shard 1 twice");
        assert!(
            FolderLock::acquire(&whole).is_err(),
            "a whole run beside shards"
        );
        drop((s1, s2));
        FolderLock::acquire(&whole).expect("free again");
    }
}
