//! `convert`: a GGUF file to a Hugging Face folder (BF16 safetensors, config.json,
//! tokenizer.json, tokenizer_config.json) that both stereoscope and mlx-lm load. GGUF llama
//! weights store q/k rows permuted for interleaved rotary embeddings; they are permuted back
//! to the Hugging Face layout here.

use super::model::RopeStyle;
use super::source::{self, ModelSpec, Resolved};
use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

pub use super::hf::hf_name;

/// Undo llama.cpp's q/k row permutation for interleaved rotary embeddings.
fn unpermute(t: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, inp) = t.dims2()?;
    let hd = out / heads;
    Ok(t.reshape((heads, hd / 2, 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))?)
}

/// Convert `from` (GGUF) into the folder `to`.
pub fn convert_gguf(from: &Path, to: &Path) -> Result<()> {
    let resolved = Resolved {
        id: from.display().to_string(),
        spec: ModelSpec::Gguf(from.to_path_buf()),
    };
    source::validate(&resolved)?;
    let src = source::load(&resolved)?;
    write_hf(&src, to)
}

/// Write a loaded model as a Hugging Face folder `to` (BF16 safetensors, config and
/// tokenizer files), which stereoscope, mlx-lm and transformers load.
pub fn write_hf(src: &source::SourceModel, to: &Path) -> Result<()> {
    let from = Path::new(&src.id);
    let cfg = &src.cfg;
    std::fs::create_dir_all(to)
        .map_err(|e| Error::Input(format!("cannot create {}: {e}", to.display())))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in &src.tensors {
        let Some(hf) = hf_name(name) else {
            return Err(Error::Model(format!(
                "{}: tensor `{name}` has no Hugging Face name",
                from.display()
            )));
        };
        let t = match (cfg.rope_style, name.rsplit('.').nth(1)) {
            (RopeStyle::Interleaved, Some("attn_q")) if name.ends_with("weight") => {
                unpermute(t, cfg.num_heads)?
            }
            (RopeStyle::Interleaved, Some("attn_k")) if name.ends_with("weight") => {
                unpermute(t, cfg.num_kv_heads)?
            }
            _ => t.clone(),
        };
        tensors.insert(hf, t.to_dtype(DType::BF16)?);
    }
    candle_core::safetensors::save(&tensors, to.join("model.safetensors")).map_err(|e| {
        Error::Model(format!(
            "cannot write {}: {}",
            to.join("model.safetensors").display(),
            crate::error::brief(&e)
        ))
    })?;
    let arch = match cfg.architecture.as_str() {
        "qwen2" => "Qwen2ForCausalLM",
        "mistral" => "MistralForCausalLM",
        _ => "LlamaForCausalLM",
    };
    let id_of = |t: &Option<(u32, String)>| t.as_ref().map(|x| x.0);
    let config = json!({
        "architectures": [arch],
        "model_type": cfg.architecture,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_positions,
        "tie_word_embeddings": cfg.tie_embeddings,
        "torch_dtype": "bfloat16",
        "bos_token_id": id_of(&src.tok.bos),
        "eos_token_id": id_of(&src.tok.eos),
        "hidden_act": "silu",
        "attention_bias": cfg.architecture == "qwen2",
    });
    let write = |name: &str, v: &serde_json::Value| {
        std::fs::write(
            to.join(name),
            serde_json::to_string_pretty(v).unwrap_or_default(),
        )
        .map_err(|e| Error::Input(format!("cannot write {}: {e}", to.join(name).display())))
    };
    write("config.json", &config)?;
    src.tok
        .inner
        .save(to.join("tokenizer.json"), false)
        .map_err(|e| Error::Model(format!("cannot write tokenizer.json: {e}")))?;
    let name_of = |t: &Option<(u32, String)>| t.as_ref().map(|x| x.1.clone());
    write(
        "tokenizer_config.json",
        &json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": src.chat_template,
            "bos_token": name_of(&src.tok.bos),
            "eos_token": name_of(&src.tok.eos),
            "add_bos_token": src.tok.add_bos,
            "clean_up_tokenization_spaces": false,
        }),
    )?;
    Ok(())
}
