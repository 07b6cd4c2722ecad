//! The BF16 source of a model, whatever file it came from: what every precision is made
//! from.

use super::mlx::MlxQuant;
use super::model::ModelConfig;
use super::tokenizer::Tok;
use crate::error::Result;
use candle_core::{DType, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

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
    pub mlx_quant: Option<MlxQuant>,
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

/// Round values to the nearest BF16, held as BF16: a source's 2-D weights take half the
/// memory of F32, and every precision is made from these values.
pub(crate) fn to_bf16_values(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F32)?.to_dtype(DType::BF16)?)
}
