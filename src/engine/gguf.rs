//! GGUF files: header checks and loading into the BF16 source, tensors keeping their GGUF
//! names.

use super::model::{ModelConfig, RopeStyle};
use super::source_model::{SourceModel, slugify, to_bf16_values};
use super::tokenizer;
use crate::error::{Error, Result, brief};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

fn gguf_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Model(format!("{}: {what}", path.display()))
}

/// Check that every tensor a GGUF header lists lies inside the file: first that no shape
/// or offset overflows (a corrupt header), then that none ends past the file (a truncated
/// download), naming the first tensor by name that does not.
fn check_extents(ct: &gguf_file::Content, path: &Path, file_len: u64) -> Result<()> {
    let mut infos: Vec<_> = ct.tensor_infos.iter().collect();
    infos.sort_by(|a, b| a.0.cmp(b.0));
    let mut ends = Vec::with_capacity(infos.len());
    for (name, info) in infos {
        let (block, size) = (info.ggml_dtype.block_size(), info.ggml_dtype.type_size());
        let elems = (info.shape.dims().iter()).try_fold(1usize, |n, &d| n.checked_mul(d));
        if let Some(n) = elems
            && (n == 0 || !n.is_multiple_of(block))
        {
            // An empty tensor (or a part of a block) reads as no data at all: refused here
            // rather than handed to the tensor reader.
            return Err(gguf_err(
                path,
                format!(
                    "tensor `{name}`: shape {:?} holds {n} values, not a whole number of {:?} blocks of {block}",
                    info.shape.dims(),
                    info.ggml_dtype
                ),
            ));
        }
        let end = elems
            .and_then(|n| (n / block).checked_mul(size))
            .and_then(|bytes| {
                (ct.tensor_data_offset.checked_add(info.offset)?).checked_add(bytes as u64)
            });
        let Some(end) = end else {
            return Err(gguf_err(
                path,
                format!(
                    "tensor `{name}`: shape {:?} at offset {} does not fit any file",
                    info.shape.dims(),
                    info.offset
                ),
            ));
        };
        ends.push((name, end));
    }
    match ends.into_iter().find(|(_, end)| *end > file_len) {
        Some((name, end)) => Err(gguf_err(
            path,
            format!(
                "truncated: tensor `{name}` ends at byte {end} but the file has {file_len} bytes"
            ),
        )),
        None => Ok(()),
    }
}

/// Open a GGUF file and read its header, checking that every tensor lies inside the file.
pub fn validate(path: &Path) -> Result<()> {
    let (file, ct) = open(path)?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    check_extents(&ct, path, len)
}

/// Open a GGUF file and read its header.
fn open(path: &Path) -> Result<(std::fs::File, gguf_file::Content)> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| gguf_err(path, format!("cannot open model file: {e}")))?;
    let ct = gguf_file::Content::read(&mut file)
        .map_err(|e| gguf_err(path, format!("not a readable GGUF file: {}", brief(&e))))?;
    Ok((file, ct))
}

/// Load a GGUF file: quantized tensors are dequantized, 2-D weights rounded to BF16.
pub fn load(id: &str, path: &Path) -> Result<SourceModel> {
    let (mut file, ct) = open(path)?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let meta = Metadata::read(&ct, path)?;
    check_extents(&ct, path, file_len)?;
    let (tensors, dequantized_from) = read_tensors(&ct, &mut file, path)?;
    let cfg = meta.config(&tensors)?;
    let tok = tokenizer::from_gguf(&ct, &path.display().to_string())?;
    let chat_template = ct
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .cloned();
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

/// Every tensor, dequantized on the CPU (2-D weights rounded to BF16), and a summary of
/// the quantized types met (`None` when the file held only float tensors).
fn read_tensors(
    ct: &gguf_file::Content,
    file: &mut std::fs::File,
    path: &Path,
) -> Result<(BTreeMap<String, Tensor>, Option<String>)> {
    let mut tensors = BTreeMap::new();
    let mut quantized: BTreeMap<String, usize> = BTreeMap::new();
    for name in ct.tensor_infos.keys() {
        let qt = ct
            .tensor(file, name, &Device::Cpu)
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
    let summary = (!quantized.is_empty()).then(|| {
        quantized
            .iter()
            .map(|(t, n)| format!("{t} ({n} tensors)"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    Ok((tensors, summary))
}

/// The architecture's hyperparameters from a GGUF header (`{arch}.{key}` entries).
struct Metadata<'a> {
    ct: &'a gguf_file::Content,
    path: &'a Path,
    arch: String,
    rope_style: RopeStyle,
}

impl<'a> Metadata<'a> {
    fn read(ct: &'a gguf_file::Content, path: &'a Path) -> Result<Metadata<'a>> {
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
        Ok(Metadata {
            ct,
            path,
            arch,
            rope_style,
        })
    }

    fn uint(&self, key: &str) -> Result<usize> {
        let k = format!("{}.{key}", self.arch);
        self.ct
            .metadata
            .get(&k)
            .and_then(|v| {
                v.to_u32()
                    .ok()
                    .or_else(|| v.to_u64().ok().map(|x| x as u32))
            })
            .map(|x| x as usize)
            .ok_or_else(|| gguf_err(self.path, format!("metadata `{k}` is missing")))
    }

    fn float(&self, key: &str, default: f64) -> f64 {
        self.ct
            .metadata
            .get(&format!("{}.{key}", self.arch))
            .and_then(|v| v.to_f32().ok())
            .map(|x| x as f64)
            .unwrap_or(default)
    }

    /// The model's shapes, checked: zero or inconsistent head counts are an error naming
    /// the file.
    fn config(&self, tensors: &BTreeMap<String, Tensor>) -> Result<ModelConfig> {
        let hidden = self.uint("embedding_length")?;
        let heads = self.uint("attention.head_count")?;
        let vocab = tensors
            .get("token_embd.weight")
            .map(|t| t.dims()[0])
            .ok_or_else(|| gguf_err(self.path, "no token_embd.weight tensor"))?;
        let cfg = ModelConfig {
            architecture: self.arch.clone(),
            hidden_size: hidden,
            intermediate_size: self.uint("feed_forward_length")?,
            num_layers: self.uint("block_count")?,
            num_heads: heads,
            num_kv_heads: self.uint("attention.head_count_kv").unwrap_or(heads),
            head_dim: self
                .uint("rope.dimension_count")
                .unwrap_or(hidden / heads.max(1)),
            vocab_size: vocab,
            rms_norm_eps: self.float("attention.layer_norm_rms_epsilon", 1e-5),
            rope_theta: self.float("rope.freq_base", 10000.0),
            rope_style: self.rope_style,
            rope_freqs: Vec::new(),
            rope_mscale: 1.0,
            max_positions: self.uint("context_length").unwrap_or(4096).min(32768),
            tie_embeddings: !tensors.contains_key("output.weight"),
        };
        match cfg.inconsistency() {
            Some(why) => Err(gguf_err(self.path, format!("model shapes: {why}"))),
            None => Ok(cfg),
        }
    }
}
