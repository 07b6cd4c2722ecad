//! Hugging Face hub downloads into the standard HF cache (or the cache alone when
//! `HF_HUB_OFFLINE` is set).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

const HUB_FILES: [&str; 3] = ["config.json", "tokenizer.json", "tokenizer_config.json"];

/// Fetch a hub model's files (or find them in the cache when `HF_HUB_OFFLINE` is set) and
/// return the snapshot folder.
pub fn hub_download(id: &str) -> Result<PathBuf> {
    let offline = std::env::var("HF_HUB_OFFLINE")
        .map(|v| v == "1" || v == "true")
        .unwrap_or(false);
    let (id, revision) = match id.split_once('@') {
        Some((i, r)) => (i.to_string(), r.to_string()),
        None => (id.to_string(), "main".to_string()),
    };
    let fail = |what: String| Error::Model(format!("cannot get hub model {id}@{revision}: {what}"));
    let cache = hf_hub::Cache::from_env();
    let repo = hf_hub::Repo::with_revision(id.clone(), hf_hub::RepoType::Model, revision.clone());
    let mut paths = Vec::new();
    if offline {
        let cached = cache.repo(repo);
        for f in HUB_FILES {
            paths.push(cached.get(f).ok_or_else(|| {
                fail(format!("{f} is not in the cache and HF_HUB_OFFLINE is set"))
            })?);
        }
        if cached.get("model.safetensors").is_none() {
            return Err(fail(
                "model.safetensors is not in the cache and HF_HUB_OFFLINE is set".into(),
            ));
        }
    } else {
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .with_progress(false)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let api = api.repo(repo);
        for f in HUB_FILES {
            paths.push(api.get(f).map_err(|e| fail(format!("{f}: {e}")))?);
        }
        match api.get("model.safetensors") {
            Ok(p) => paths.push(p),
            Err(_) => {
                let index = api
                    .get("model.safetensors.index.json")
                    .map_err(|e| fail(format!("no model.safetensors or index: {e}")))?;
                for shard in shard_files(&index)? {
                    api.get(&shard).map_err(|e| fail(format!("{shard}: {e}")))?;
                }
            }
        }
    }
    paths[0]
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| fail("snapshot has no folder".into()))
}

fn shard_files(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index)
        .map_err(|e| Error::Model(format!("cannot read {}: {e}", index.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Model(format!("{}: invalid JSON: {e}", index.display())))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Model(format!("{}: no weight_map", index.display())))?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|f| f.as_str().map(String::from))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}
