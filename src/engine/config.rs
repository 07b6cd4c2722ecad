//! The shape and numerics of a llama-family model ([`ModelConfig`]), as its loaders read
//! them from GGUF metadata or a Hugging Face `config.json`.

/// How rotary embeddings pair the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RopeStyle {
    /// Pairs (2i, 2i+1): GGUF llama weights, whose q/k rows were permuted for it.
    Interleaved,
    /// Pairs (i, i + d/2): Hugging Face checkpoints, GGUF qwen2.
    Half,
}

/// The shape and numerics of a llama-family model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelConfig {
    pub architecture: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_style: RopeStyle,
    /// Per-pair rotary wavelengths divided by 2π (θ_i = position / freqs[i]) when the
    /// model scales its rotary embedding (linear, llama3, longrope); empty for the plain
    /// `rope_theta^(2i/d)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rope_freqs: Vec<f64>,
    /// Factor applied to queries and keys before rotation (longrope's attention scaling).
    #[serde(default = "unit")]
    pub rope_mscale: f64,
    pub max_positions: usize,
    pub tie_embeddings: bool,
}

fn unit() -> f64 {
    1.0
}

impl ModelConfig {
    /// Why these shapes cannot make a transformer, or `None` when they can: every size is
    /// positive, the query heads split evenly over the key-value heads and the rotary
    /// dimension is even.
    pub fn inconsistency(&self) -> Option<String> {
        let sizes = [
            ("hidden size", self.hidden_size),
            ("intermediate size", self.intermediate_size),
            ("layer count", self.num_layers),
            ("attention head count", self.num_heads),
            ("key-value head count", self.num_kv_heads),
            ("head dimension", self.head_dim),
        ];
        if let Some((what, _)) = sizes.iter().find(|(_, n)| *n == 0) {
            return Some(format!("the {what} is 0"));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Some(format!(
                "{} attention heads do not split evenly over {} key-value heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Some(format!("the head dimension {} is odd", self.head_dim));
        }
        None
    }

    /// The plain rotary wavelengths over 2π, `rope_theta^(2i/d)`, one per pair of dimensions.
    pub fn base_rope_freqs(&self) -> Vec<f64> {
        (0..self.head_dim / 2)
            .map(|i| self.rope_theta.powf(2.0 * i as f64 / self.head_dim as f64))
            .collect()
    }
}
