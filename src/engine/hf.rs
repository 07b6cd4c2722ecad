//! Hugging Face model folders (config.json, safetensors, tokenizer.json,
//! tokenizer_config.json) and MLX folders, which are the same layout with packed
//! `weight` + `scales` + `biases` for each quantized module and a `quantization` block in
//! config.json (such as the study's published `…-q4-mlx-cba` checkpoints).
//!
//! Architectures: llama, mistral, qwen2 (q/k/v biases) and phi3 (fused `qkv_proj` and
//! `gate_up_proj`, split here into the shared layout; longrope rotary scaling). Rotary
//! scaling follows mlx-lm, the reference the study ran: linear, llama3, and longrope with
//! the long factors and attention scaling at every length.

use super::mlx;
use super::mlx::MlxQuant;
use super::model::{ModelConfig, RopeStyle};
use super::source_model::{SourceModel, slugify, to_bf16_values};
use super::tokenizer;
use crate::error::{Error, Result};
use crate::vocab::Precision;
use candle_core::{DType, Device, Tensor};
use half::bf16;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Architectures a folder may declare in `model_type`.
pub const ARCHITECTURES: [&str; 4] = ["llama", "mistral", "qwen2", "phi3"];

/// Per-layer tensor names: GGUF name (the engine's) and Hugging Face name.
const LAYER_NAMES: [(&str, &str); 12] = [
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("attn_q.bias", "self_attn.q_proj.bias"),
    ("attn_k.bias", "self_attn.k_proj.bias"),
    ("attn_v.bias", "self_attn.v_proj.bias"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
    ("attn_norm.weight", "input_layernorm.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
];
const GLOBAL_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// The Hugging Face name of an engine (GGUF) tensor name.
pub fn hf_name(g: &str) -> Option<String> {
    if let Some((_, h)) = GLOBAL_NAMES.iter().find(|(x, _)| *x == g) {
        return Some(h.to_string());
    }
    let (n, part) = g.strip_prefix("blk.")?.split_once('.')?;
    let (_, hf) = LAYER_NAMES.iter().find(|(x, _)| *x == part)?;
    Some(format!("model.layers.{n}.{hf}"))
}

/// The engine (GGUF) name of a Hugging Face tensor name.
pub fn gguf_name(hf: &str) -> Option<String> {
    if let Some((g, _)) = GLOBAL_NAMES.iter().find(|(_, x)| *x == hf) {
        return Some(g.to_string());
    }
    let (n, part) = hf.strip_prefix("model.layers.")?.split_once('.')?;
    let (g, _) = LAYER_NAMES.iter().find(|(_, x)| *x == part)?;
    Some(format!("blk.{n}.{g}"))
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Model(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Model(format!("{}: invalid JSON: {e}", path.display())))
}

fn quant_block(config: &Value) -> Option<&Value> {
    config
        .get("quantization")
        .or_else(|| config.get("quantization_config"))
        .filter(|v| !v.is_null())
}

fn field_err(cfg_path: &str, what: String) -> Error {
    Error::Model(format!("{cfg_path}: {what}"))
}

/// Bits and group size of a quantization entry (the top-level block or a per-module
/// override), checked: affine mode, a bit width MLX has.
fn quant_params(v: &Value, cfg_path: &str, key: &str) -> Result<(u32, usize)> {
    if let Some(method) = v.get("quant_method").and_then(Value::as_str) {
        return Err(field_err(
            cfg_path,
            format!(
                "{key}.quant_method `{method}` is not supported; pass the BF16 model or an MLX folder"
            ),
        ));
    }
    let mode = v.get("mode").and_then(Value::as_str).unwrap_or("affine");
    if mode != "affine" {
        return Err(field_err(
            cfg_path,
            format!("{key}.mode is `{mode}`; only MLX affine quantization is supported"),
        ));
    }
    let get = |f: &str| {
        v.get(f).and_then(Value::as_u64).ok_or_else(|| {
            field_err(
                cfg_path,
                format!("{key}.{f} is missing or not a positive integer"),
            )
        })
    };
    let (bits, group) = (get("bits")? as u32, get("group_size")? as usize);
    if !matches!(bits, 2 | 3 | 4 | 5 | 6 | 8) || !matches!(group, 32 | 64 | 128) {
        return Err(field_err(
            cfg_path,
            format!(
                "{key}: bits {bits} with group_size {group} is not an MLX affine mode (bits 2-6 or 8, group 32, 64 or 128)"
            ),
        ));
    }
    Ok((bits, group))
}

/// The precision an MLX folder holds, or `None` for an unquantized folder.
pub fn held_precision(dir: &Path) -> Result<Option<Precision>> {
    let cfg_path = dir.join("config.json");
    let config = read_json(&cfg_path)?;
    let Some(q) = quant_block(&config) else {
        return Ok(None);
    };
    let (bits, _) = quant_params(q, &cfg_path.display().to_string(), "quantization")?;
    precision_of_bits(bits, &cfg_path.display().to_string()).map(Some)
}

fn precision_of_bits(bits: u32, cfg_path: &str) -> Result<Precision> {
    match bits {
        8 => Ok(Precision::Q8),
        6 => Ok(Precision::Q6),
        4 => Ok(Precision::Q4),
        3 => Ok(Precision::Q3),
        b => Err(field_err(
            cfg_path,
            format!("quantization.bits is {b}; the study's precisions are 8, 6, 4 and 3 bits"),
        )),
    }
}

/// Rotary wavelengths over 2π and the attention scaling for `rope_scaling`, as mlx-lm
/// computes them.
fn rope_scaling(config: &Value, cfg: &ModelConfig, cfg_path: &str) -> Result<(Vec<f64>, f64)> {
    let Some(s) = config.get("rope_scaling").filter(|v| !v.is_null()) else {
        return Ok((Vec::new(), 1.0));
    };
    let kind = s
        .get("type")
        .or_else(|| s.get("rope_type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| s.get(k).and_then(Value::as_f64);
    let need =
        |k: &str| num(k).ok_or_else(|| field_err(cfg_path, format!("rope_scaling.{k} is missing")));
    let base = cfg.base_rope_freqs();
    match kind {
        "default" => Ok((Vec::new(), 1.0)),
        "linear" => {
            let f = need("factor")?;
            Ok((base.iter().map(|b| b * f).collect(), 1.0))
        }
        "llama3" => {
            let factor = need("factor")?;
            let low = num("low_freq_factor").unwrap_or(1.0);
            let high = num("high_freq_factor").unwrap_or(4.0);
            let old = num("original_max_position_embeddings").unwrap_or(8192.0);
            let (low_wl, high_wl) = (old / low, old / high);
            let freqs = base
                .iter()
                .map(|&f| {
                    let wl = 2.0 * std::f64::consts::PI * f;
                    let scaled = if wl > low_wl { f * factor } else { f };
                    if wl > high_wl && wl < low_wl {
                        let smooth = (old / wl - low) / (high - low);
                        scaled / ((1.0 - smooth) / factor + smooth)
                    } else {
                        scaled
                    }
                })
                .collect();
            Ok((freqs, 1.0))
        }
        "longrope" | "su" => {
            let long: Vec<f64> = s
                .get("long_factor")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .ok_or_else(|| field_err(cfg_path, "rope_scaling.long_factor is missing".into()))?;
            if long.len() != base.len() {
                return Err(field_err(
                    cfg_path,
                    format!(
                        "rope_scaling.long_factor has {} values; a head of {} dimensions needs {}",
                        long.len(),
                        cfg.head_dim,
                        base.len()
                    ),
                ));
            }
            let max = config
                .get("max_position_embeddings")
                .and_then(Value::as_f64)
                .unwrap_or(131072.0);
            let orig = config
                .get("original_max_position_embeddings")
                .and_then(Value::as_f64)
                .or_else(|| num("original_max_position_embeddings"))
                .unwrap_or(4096.0);
            let factor = max / orig;
            let mscale = match num("long_mscale") {
                Some(m) => m,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / orig.ln()).sqrt(),
            };
            Ok((base.iter().zip(&long).map(|(b, l)| b * l).collect(), mscale))
        }
        other => Err(field_err(
            cfg_path,
            format!(
                "rope_scaling type `{other}` is not supported (supported: linear, llama3, longrope)"
            ),
        )),
    }
}

fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Model(format!("cannot list {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Model(format!(
            "{}: no .safetensors files",
            dir.display()
        )));
    }
    Ok(files)
}

/// Every tensor of a folder by its Hugging Face name, with the file it came from.
fn read_tensors(dir: &Path) -> Result<BTreeMap<String, (Tensor, PathBuf)>> {
    let mut out = BTreeMap::new();
    for f in safetensors_files(dir)? {
        for (name, t) in super::safetensors::load(&f)? {
            out.insert(name, (t, f.clone()));
        }
    }
    Ok(out)
}

/// The packed MLX tensors of a folder, by module path (`model.layers.0.self_attn.q_proj`),
/// exactly as stored. Reading a folder written by `mlx_lm.convert` this way lets a test
/// compare its words, scales and biases with stereoscope's own quantization.
pub fn read_packed(dir: &Path) -> Result<BTreeMap<String, mlx::Quantized>> {
    let cfg_path = dir.join("config.json");
    let config = read_json(&cfg_path)?;
    let mut tensors = read_tensors(dir)?;
    unpack_all(&mut tensors, &config, &cfg_path.display().to_string())
}

/// Remove every packed module (weight + scales + biases) from `tensors` and return it,
/// checked against the quantization block of config.json.
fn unpack_all(
    tensors: &mut BTreeMap<String, (Tensor, PathBuf)>,
    config: &Value,
    cfg_path: &str,
) -> Result<BTreeMap<String, mlx::Quantized>> {
    let block = quant_block(config);
    let packed: Vec<String> = tensors
        .iter()
        .filter(|(n, (t, _))| n.ends_with(".weight") && t.dtype() == DType::U32)
        .map(|(n, _)| n.trim_end_matches(".weight").to_string())
        .collect();
    let orphan_scales = tensors.keys().find(|n| {
        n.strip_suffix(".scales")
            .is_some_and(|m| !packed.iter().any(|p| p == m))
    });
    if let Some(n) = orphan_scales {
        return Err(field_err(
            cfg_path,
            format!("`{n}` has no packed (U32) weight beside it"),
        ));
    }
    if packed.is_empty() {
        return Ok(BTreeMap::new());
    }
    let Some(block) = block else {
        return Err(field_err(
            cfg_path,
            format!(
                "`{}.weight` is packed (U32) but config.json has no `quantization` block",
                packed[0]
            ),
        ));
    };
    let top = quant_params(block, cfg_path, "quantization")?;
    let mut out = BTreeMap::new();
    for module in packed {
        let (bits, group) = module_params(block, &module, top, cfg_path)?;
        let q = unpack_module(tensors, &module, bits, group, cfg_path)?;
        out.insert(module, q);
    }
    Ok(out)
}

/// Bits and group size of one packed module: its override in the quantization block, with
/// fields it leaves out (or sets to null) taken from the top level.
fn module_params(
    block: &Value,
    module: &str,
    top: (u32, usize),
    cfg_path: &str,
) -> Result<(u32, usize)> {
    match block.get(module) {
        Some(Value::Bool(false)) => Err(field_err(
            cfg_path,
            format!("quantization.{module} is false but `{module}.weight` is packed"),
        )),
        Some(Value::Object(o)) => {
            let mut merged = block.clone();
            for (k, v) in o.iter().filter(|(_, v)| !v.is_null()) {
                merged[k] = v.clone();
            }
            quant_params(&merged, cfg_path, &format!("quantization.{module}"))
        }
        _ => Ok(top),
    }
}

/// Take a module's packed weight, scales and biases out of `tensors`, checking their
/// dtypes and shapes against `bits` and `group`.
fn unpack_module(
    tensors: &mut BTreeMap<String, (Tensor, PathBuf)>,
    module: &str,
    bits: u32,
    group: usize,
    cfg_path: &str,
) -> Result<mlx::Quantized> {
    let mut take = |suffix: &str| {
        tensors
            .remove(&format!("{module}.{suffix}"))
            .ok_or_else(|| {
                field_err(
                    cfg_path,
                    format!("`{module}.weight` is packed but `{module}.{suffix}` is missing"),
                )
            })
    };
    let (w, file) = take("weight")?;
    let (scales, _) = take("scales")?;
    let (biases, _) = take("biases")?;
    let here = |what: String| {
        Error::Model(format!(
            "{}: `{module}`: {what} (config.json quantization: bits {bits}, group_size {group})",
            file.display()
        ))
    };
    let (rows, words) = w
        .dims2()
        .map_err(|_| here("packed weight is not 2-D".into()))?;
    if !(words * 32).is_multiple_of(bits as usize) {
        return Err(here(format!(
            "{words} words per row do not hold whole {bits}-bit codes"
        )));
    }
    let cols = words * 32 / bits as usize;
    for (name, t) in [("scales", &scales), ("biases", &biases)] {
        if t.dtype() != DType::BF16 {
            return Err(here(format!(
                "{name} are {:?}; stereoscope reads MLX folders quantized from BF16",
                t.dtype()
            )));
        }
        let dims = t.dims();
        if dims.len() != 2 || dims[0] != rows || dims[1] * group != cols {
            return Err(here(format!(
                "{name} has shape {dims:?}, but {words} words per row at {bits} bits are {cols} weights, i.e. [{rows}, {}] groups of {group}",
                cols / group
            )));
        }
    }
    let flat_bf16 = |t: &Tensor| -> Result<Vec<bf16>> { Ok(t.flatten_all()?.to_vec1()?) };
    Ok(mlx::Quantized {
        bits,
        group_size: group,
        rows,
        cols,
        words: w.flatten_all()?.to_vec1()?,
        scales: flat_bf16(&scales)?,
        biases: flat_bf16(&biases)?,
    })
}

/// Split phi3's fused projections into the shared layout: `qkv_proj` rows are q, k, v;
/// `gate_up_proj` rows are gate, up.
fn split_fused(name: &str, t: &Tensor, cfg: &ModelConfig) -> Result<Option<Vec<(String, Tensor)>>> {
    let Some(rest) = name.strip_prefix("model.layers.") else {
        return Ok(None);
    };
    let Some((n, part)) = rest.split_once('.') else {
        return Ok(None);
    };
    // Sizes from the config, with overflow checked: a config is untrusted.
    let (hd, ffn) = (cfg.head_dim, cfg.intermediate_size);
    let (q, kv) = (
        cfg.num_heads.checked_mul(hd),
        cfg.num_kv_heads.checked_mul(hd),
    );
    let pieces: Vec<(&str, Option<usize>)> = match part {
        "self_attn.qkv_proj.weight" => vec![("attn_q", q), ("attn_k", kv), ("attn_v", kv)],
        "mlp.gate_up_proj.weight" => vec![("ffn_gate", Some(ffn)), ("ffn_up", Some(ffn))],
        _ => return Ok(None),
    };
    let total = pieces.iter().try_fold(0usize, |a, p| a.checked_add(p.1?));
    let have = t.dims().first().copied();
    let (Some(total), Some(have)) = (total, have) else {
        return Err(Error::Model(format!(
            "`{name}` has shape {:?}; the config's head and feed-forward sizes do not give its rows",
            t.dims()
        )));
    };
    if have != total {
        return Err(Error::Model(format!(
            "`{name}` has {have} rows; the config implies {total}"
        )));
    }
    let pieces: Vec<(&str, usize)> = pieces
        .into_iter()
        .map(|(g, r)| (g, r.unwrap_or(0)))
        .collect();
    let mut at = 0;
    let mut out = Vec::new();
    for (g, rows) in pieces {
        out.push((format!("blk.{n}.{g}.weight"), t.narrow(0, at, rows)?));
        at += rows;
    }
    Ok(Some(out))
}

fn model_config(config: &Value, cfg_path: &str, vocab: usize, tie: bool) -> Result<ModelConfig> {
    let arch = config
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| field_err(cfg_path, "no model_type".into()))?
        .to_string();
    if !ARCHITECTURES.contains(&arch.as_str()) {
        return Err(field_err(
            cfg_path,
            format!(
                "model_type `{arch}` is not supported (supported: {})",
                ARCHITECTURES.join(", ")
            ),
        ));
    }
    let u = |k: &str| -> Result<usize> {
        config
            .get(k)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .ok_or_else(|| field_err(cfg_path, format!("`{k}` is missing")))
    };
    let f = |k: &str, d: f64| config.get(k).and_then(Value::as_f64).unwrap_or(d);
    if f("partial_rotary_factor", 1.0) != 1.0 {
        return Err(field_err(
            cfg_path,
            "partial_rotary_factor other than 1 is not supported".into(),
        ));
    }
    let hidden = u("hidden_size")?;
    let heads = u("num_attention_heads")?;
    let cfg = ModelConfig {
        architecture: arch,
        hidden_size: hidden,
        intermediate_size: u("intermediate_size")?,
        num_layers: u("num_hidden_layers")?,
        num_heads: heads,
        num_kv_heads: u("num_key_value_heads").unwrap_or(heads),
        head_dim: u("head_dim").unwrap_or(hidden / heads.max(1)),
        vocab_size: vocab,
        rms_norm_eps: f("rms_norm_eps", 1e-5),
        rope_theta: f("rope_theta", 10000.0),
        rope_style: RopeStyle::Half,
        rope_freqs: Vec::new(),
        rope_mscale: 1.0,
        max_positions: u("max_position_embeddings").unwrap_or(4096).min(32768),
        tie_embeddings: tie,
    };
    if let Some(why) = cfg.inconsistency() {
        return Err(field_err(cfg_path, format!("model shapes: {why}")));
    }
    Ok(cfg)
}

/// The config's sizes against the weights (engine names): the layer count, the hidden size,
/// the query and key-value heads times the head dimension, the feed-forward size. A config
/// that disagrees is refused here, before anything is sized from it (rotary tables, the
/// layer list).
fn check_shapes(
    cfg: &ModelConfig,
    tensors: &BTreeMap<String, Tensor>,
    cfg_path: &str,
) -> Result<()> {
    let bad = |what: String| Err(field_err(cfg_path, format!("model shapes: {what}")));
    let layers = tensors
        .keys()
        .filter_map(|n| {
            n.strip_prefix("blk.")?
                .split_once('.')?
                .0
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |n| n + 1);
    if cfg.num_layers != layers {
        return bad(format!(
            "num_hidden_layers is {}, but the weights hold {layers} layer(s)",
            cfg.num_layers
        ));
    }
    let rows = |name: &str| tensors.get(name).map(|t| t.dims().to_vec());
    if let Some(d) = rows("token_embd.weight")
        && d.get(1) != Some(&cfg.hidden_size)
    {
        return bad(format!(
            "hidden_size is {}, but model.embed_tokens.weight has shape {d:?}",
            cfg.hidden_size
        ));
    }
    let heads = |n: usize| n.checked_mul(cfg.head_dim);
    for i in 0..layers {
        for (tensor, field, want) in [
            (
                "attn_q.weight",
                "num_attention_heads × head_dim",
                heads(cfg.num_heads),
            ),
            (
                "attn_k.weight",
                "num_key_value_heads × head_dim",
                heads(cfg.num_kv_heads),
            ),
            (
                "ffn_gate.weight",
                "intermediate_size",
                Some(cfg.intermediate_size),
            ),
        ] {
            let name = format!("blk.{i}.{tensor}");
            let Some(d) = rows(&name) else {
                return bad(format!("layer {i} has no {name}"));
            };
            if d.first().copied() != want {
                let want = want.map_or("past usize::MAX".into(), |w| w.to_string());
                return bad(format!(
                    "{field} is {want}, but {} has shape {d:?}",
                    hf_name(&name).unwrap_or(name)
                ));
            }
        }
    }
    Ok(())
}

/// Load a Hugging Face or MLX folder. Packed MLX modules are dequantized exactly as
/// `mx.dequantize` does; the folder then holds one quantized precision ([`MlxQuant`]).
pub fn load(id: &str, dir: &Path) -> Result<SourceModel> {
    let cfg_file = dir.join("config.json");
    let cfg_path = cfg_file.display().to_string();
    let config = read_json(&cfg_file)?;
    // Architecture first: an unknown one is the clearest error.
    model_config(&config, &cfg_path, 0, false)?;
    let mut raw = read_tensors(dir)?;
    let packed = unpack_all(&mut raw, &config, &cfg_path)?;
    let quant = match quant_block(&config) {
        Some(block) => {
            let (bits, group) = quant_params(block, &cfg_path, "quantization")?;
            Some((bits, group, precision_of_bits(bits, &cfg_path)?))
        }
        None => None,
    };
    if quant.is_some() && packed.is_empty() {
        return Err(field_err(
            &cfg_path,
            "config.json has a `quantization` block but no tensor is packed (no `.scales`)".into(),
        ));
    }
    let mut hf: BTreeMap<String, (Tensor, String)> = BTreeMap::new();
    for (module, q) in &packed {
        let values = q.dequantize();
        let t = Tensor::from_vec(values, (q.rows, q.cols), &Device::Cpu)?;
        let ty = format!("mlx-affine-{}bit-g{}", q.bits, q.group_size);
        hf.insert(format!("{module}.weight"), (t, ty));
    }
    for (name, (t, _)) in raw {
        let (t, ty) = if t.rank() >= 2 && t.dtype() == DType::BF16 {
            (t, "bf16")
        } else if t.rank() >= 2 {
            (to_bf16_values(&t)?, "bf16")
        } else {
            (t.to_dtype(DType::F32)?, "f32")
        };
        hf.insert(name, (t, ty.to_string()));
    }
    let tie = config
        .get("tie_word_embeddings")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let vocab = hf
        .get("model.embed_tokens.weight")
        .map(|(t, _)| t.dims()[0])
        .ok_or_else(|| Error::Model(format!("{}: no model.embed_tokens.weight", dir.display())))?;
    let mut cfg = model_config(&config, &cfg_path, vocab, tie)?;
    let mut tensors = BTreeMap::new();
    let mut types = BTreeMap::new();
    for (name, (t, ty)) in hf {
        let named = match split_fused(&name, &t, &cfg)? {
            Some(parts) => parts,
            None => match gguf_name(&name) {
                Some(g) => vec![(g, t)],
                None => continue,
            },
        };
        for (g, t) in named {
            types.insert(g.clone(), ty.clone());
            tensors.insert(g, t);
        }
    }
    if tie {
        tensors.remove("output.weight");
        types.remove("output.weight");
    }
    cfg.tie_embeddings = !tensors.contains_key("output.weight");
    check_shapes(&cfg, &tensors, &cfg_path)?;
    let (freqs, mscale) = rope_scaling(&config, &cfg, &cfg_path)?;
    cfg.rope_freqs = freqs;
    cfg.rope_mscale = mscale;
    let tok_cfg = read_json(&dir.join("tokenizer_config.json"))?;
    let tok = tokenizer::from_hf_files(&dir.join("tokenizer.json"), &tok_cfg)?;
    let chat_template = match tok_cfg.get("chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
    };
    let mlx_quant = quant.map(|(bits, group_size, precision)| MlxQuant {
        bits,
        group_size,
        precision,
        tensor_types: types,
    });
    Ok(SourceModel {
        id: id.to_string(),
        slug: slugify(id),
        cfg,
        tensors,
        tok,
        chat_template,
        dequantized_from: None,
        format: if mlx_quant.is_some() {
            "mlx".into()
        } else {
            "hf-safetensors".into()
        },
        mlx_quant,
    })
}
