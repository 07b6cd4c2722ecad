//! Finding BBQ files: `--bbq-dir`, then `STEREOSCOPE_BBQ_DIR`, then the cache folder, where
//! missing category files are downloaded from the public BBQ repository (pinned commit) and
//! checked against their upstream git blob ids before they are kept.

use super::{BbqDir, DEFAULT_BASE_URL};
use crate::error::{Error, Result};
use sha1::{Digest, Sha1};
use std::path::{Path, PathBuf};

/// Upstream git blob ids of the BBQ files at the pinned commit.
const BLOB_IDS: [(&str, &str); 12] = [
    ("data/Age.jsonl", "5c5e7586163b869fe029e77e63716f2026e4ae08"),
    (
        "data/Disability_status.jsonl",
        "9aedeccaf599299cdfa523531d625ae85ecb9131",
    ),
    (
        "data/Gender_identity.jsonl",
        "dc79ceaaa9e7126edc99a200d632899c50274b16",
    ),
    (
        "data/Nationality.jsonl",
        "cba9b63d34536cb51a6cbae76b189df3d2a945c0",
    ),
    (
        "data/Physical_appearance.jsonl",
        "8cbdf83265459083224e3a2d37809294ff12ad77",
    ),
    (
        "data/Race_ethnicity.jsonl",
        "68daf3d692b27a10596772b3b15742b26f0b110e",
    ),
    (
        "data/Race_x_SES.jsonl",
        "905cd8a5b8734e2063fe524e69a38f0a71c75907",
    ),
    (
        "data/Race_x_gender.jsonl",
        "dd09a905b284690445d36259d675243950fa0bd7",
    ),
    (
        "data/Religion.jsonl",
        "44c1940ee22f00891ab4a5526a293691957aeacb",
    ),
    ("data/SES.jsonl", "78d11ffbdb70f501617345e5c697d00045d57c29"),
    (
        "data/Sexual_orientation.jsonl",
        "a06351f4dd67ba30632396eeb0c3677c67b7d387",
    ),
    (
        "supplemental/additional_metadata.csv",
        "564eb184be7427cefe9f1ffd8fd03cb700e6aa98",
    ),
];

/// Where to look for BBQ.
#[derive(Debug, Clone, Default)]
pub struct LocateSpec {
    /// `--bbq-dir`.
    pub dir: Option<PathBuf>,
    /// Download missing files into the cache (off only in tests and with `--offline`).
    pub download: bool,
}

/// The cache folder for BBQ files: `STEREOSCOPE_CACHE`/bbq, else the platform cache.
pub fn cache_dir() -> Result<PathBuf> {
    Ok(crate::cache_root()?.join("bbq"))
}

/// Git's blob id of some bytes (what `git hash-object` prints).
pub fn git_blob_id(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex::encode(h.finalize())
}

/// Resolve the BBQ folder for `categories`. With an explicit folder (flag or environment)
/// nothing is downloaded; in the cache, missing files are fetched.
pub fn locate(spec: &LocateSpec, categories: &[String]) -> Result<BbqDir> {
    if let Some(dir) = &spec.dir {
        return explicit(dir, "--bbq-dir");
    }
    if let Some(dir) = std::env::var_os("STEREOSCOPE_BBQ_DIR") {
        return explicit(Path::new(&dir), "STEREOSCOPE_BBQ_DIR");
    }
    let dir = cache_dir()?;
    if spec.download {
        let base = std::env::var("STEREOSCOPE_BBQ_URL").unwrap_or_else(|_| DEFAULT_BASE_URL.into());
        download_missing(&base, &dir, categories)?;
    }
    Ok(BbqDir { path: dir })
}

fn explicit(dir: &Path, source: &str) -> Result<BbqDir> {
    if !dir.is_dir() {
        return Err(Error::Input(format!(
            "BBQ folder {} (from {source}) does not exist",
            dir.display()
        )));
    }
    Ok(BbqDir {
        path: dir.to_path_buf(),
    })
}

/// Fetch the category files (and the supplemental metadata) that `dir` lacks.
pub fn download_missing(base: &str, dir: &Path, categories: &[String]) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Input(format!("cannot create BBQ cache {}: {e}", dir.display())))?;
    for category in categories {
        let dest = dir.join(format!("{category}.jsonl"));
        if dest.is_file() {
            continue;
        }
        let remote = format!("data/{category}.jsonl");
        eprintln!("downloading BBQ {category} from {base}/{remote}");
        fetch_checked(base, &remote, &dest)?;
    }
    let meta = dir.join("supplemental/additional_metadata.csv");
    if !meta.is_file() {
        if let Some(parent) = meta.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::Input(format!("cannot create {}: {e}", parent.display())))?;
        }
        // target_loc refines the role rule; without it the rule alone decides.
        if let Err(e) = fetch_checked(base, "supplemental/additional_metadata.csv", &meta) {
            eprintln!("warning: {e}; roles come from the stereotyped-group rule alone");
        }
    }
    Ok(())
}

fn fetch_checked(base: &str, remote: &str, dest: &Path) -> Result<()> {
    let url = format!("{}/{remote}", base.trim_end_matches('/'));
    let fail = |what: String| {
        Error::Input(format!(
            "cannot download BBQ file {url}: {what}; pass --bbq-dir with a local copy of BBQ's data folder"
        ))
    };
    let resp = ureq::get(&url).call().map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if let Some((_, want)) = BLOB_IDS.iter().find(|(p, _)| *p == remote) {
        let got = git_blob_id(&bytes);
        if got != *want {
            return Err(fail(format!(
                "content has git blob id {got}, expected {want}"
            )));
        }
    }
    let tmp = dest.with_extension("download");
    std::fs::write(&tmp, &bytes)
        .map_err(|e| fail(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, dest)
        .map_err(|e| fail(format!("cannot rename into {}: {e}", dest.display())))?;
    Ok(())
}
