//! One llama-family decoder (llama, mistral, qwen2, phi3), driven by a [`ModelConfig`]:
//! q/k/v biases, fused projections (split when loaded) and rotary scaling are data, not code. Weights are given per precision as [`QMatMul`]s, so the same forward
//! runs BF16, dequantized and kernel-quantized layers. The KV cache is an immutable value:
//! a forward returns a new cache, so one prompt's cache can be extended by several seeds.

use crate::error::Result;
use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};

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

/// One transformer block.
pub struct Layer {
    pub wq: QMatMul,
    pub wk: QMatMul,
    pub wv: QMatMul,
    pub wo: QMatMul,
    pub bq: Option<Tensor>,
    pub bk: Option<Tensor>,
    pub bv: Option<Tensor>,
    pub w_gate: QMatMul,
    pub w_up: QMatMul,
    pub w_down: QMatMul,
    pub attn_norm: Tensor,
    pub ffn_norm: Tensor,
}

/// A model ready to run at one precision.
pub struct Transformer {
    pub cfg: ModelConfig,
    /// Token embeddings `[vocab, hidden]` in F32 (dequantized when the precision quantizes them).
    pub embed: Tensor,
    pub layers: Vec<Layer>,
    pub norm: Tensor,
    pub lm_head: QMatMul,
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

/// Keys and values of every layer for the tokens seen so far. Cloning is cheap.
#[derive(Clone, Default)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
}

impl KvCache {
    /// Tokens covered.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The cache of the first `n` tokens.
    pub fn truncate(&self, n: usize) -> Result<KvCache> {
        if n >= self.len {
            return Ok(self.clone());
        }
        if n == 0 {
            return Ok(KvCache::default());
        }
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| Ok((k.narrow(2, 0, n)?, v.narrow(2, 0, n)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache { layers, len: n })
    }
}

fn unit() -> f64 {
    1.0
}

impl ModelConfig {
    /// The plain rotary wavelengths over 2π, `rope_theta^(2i/d)`, one per pair of dimensions.
    pub fn base_rope_freqs(&self) -> Vec<f64> {
        (0..self.head_dim / 2)
            .map(|i| self.rope_theta.powf(2.0 * i as f64 / self.head_dim as f64))
            .collect()
    }
}

/// cos and sin tables `[max_positions, head_dim/2]`, with `rope_mscale` folded in (scaling
/// both q and k before rotation is scaling cos and sin).
fn rope_tables(cfg: &ModelConfig, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = cfg.head_dim / 2;
    let freqs = if cfg.rope_freqs.is_empty() {
        cfg.base_rope_freqs()
    } else {
        cfg.rope_freqs.clone()
    };
    if freqs.len() != half {
        return Err(crate::Error::Model(format!(
            "rotary scaling has {} factors for a head of {} dimensions (expected {half})",
            freqs.len(),
            cfg.head_dim
        )));
    }
    let inv: Vec<f32> = freqs.iter().map(|f| (1.0 / f) as f32).collect();
    let inv = Tensor::from_vec(inv, (1, half), device)?;
    let pos = Tensor::arange(0u32, cfg.max_positions as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((cfg.max_positions, 1))?;
    let angles = pos.matmul(&inv)?;
    let m = cfg.rope_mscale;
    Ok(((angles.cos()? * m)?, (angles.sin()? * m)?))
}

impl Transformer {
    pub fn new(
        cfg: ModelConfig,
        embed: Tensor,
        layers: Vec<Layer>,
        norm: Tensor,
        lm_head: QMatMul,
        device: &Device,
    ) -> Result<Self> {
        let (cos, sin) = rope_tables(&cfg, device)?;
        Ok(Self {
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            cos,
            sin,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn rope(&self, x: &Tensor, pos: usize, len: usize) -> Result<Tensor> {
        let cos = self.cos.narrow(0, pos, len)?;
        let sin = self.sin.narrow(0, pos, len)?;
        Ok(match self.cfg.rope_style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x.contiguous()?, &cos, &sin)?,
            RopeStyle::Half => candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)?,
        })
    }

    /// Run `tokens` after the context in `cache`; returns the next-token logits (F32,
    /// `[vocab]`) at the last position and the extended cache.
    pub fn forward(&self, tokens: &[u32], cache: &KvCache) -> Result<(Tensor, KvCache)> {
        let (x, cache) = self.hidden(tokens, cache)?;
        let last = x.narrow(1, tokens.len() - 1, 1)?;
        let logits = self.head(&last)?.squeeze(0)?.squeeze(0)?;
        Ok((logits, cache))
    }

    /// The next-token logits (F32, `[len, vocab]`) at every position of `tokens`, from an
    /// empty context.
    pub fn forward_all(&self, tokens: &[u32]) -> Result<Tensor> {
        let (x, _) = self.hidden(tokens, &KvCache::default())?;
        Ok(self.head(&x)?.squeeze(0)?)
    }

    fn head(&self, x: &Tensor) -> Result<Tensor> {
        let x = candle_nn::ops::rms_norm(x, &self.norm, self.cfg.rms_norm_eps as f32)?;
        Ok(self.lm_head.forward(&x)?.to_dtype(DType::F32)?)
    }

    /// The residual stream `[1, len, hidden]` after the last block, and the extended cache.
    fn hidden(&self, tokens: &[u32], cache: &KvCache) -> Result<(Tensor, KvCache)> {
        if tokens.is_empty() {
            return Err(crate::Error::Model("forward of no tokens".into()));
        }
        let cfg = &self.cfg;
        let len = tokens.len();
        let pos = cache.len;
        if pos + len > cfg.max_positions {
            return Err(crate::Error::Model(format!(
                "prompt of {} tokens exceeds the model's {} positions",
                pos + len,
                cfg.max_positions
            )));
        }
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?.unsqueeze(0)?;
        let mask = if len > 1 {
            let m: Vec<f32> = (0..len)
                .flat_map(|i| {
                    (0..pos + len).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 })
                })
                .collect();
            Some(Tensor::from_vec(m, (1, 1, len, pos + len), &self.device)?)
        } else {
            None
        };
        let eps = cfg.rms_norm_eps as f32;
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let scale = 1.0 / (hd as f64).sqrt();
        let mut new_layers = Vec::with_capacity(self.layers.len());
        for (li, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let proj = |w: &QMatMul, b: &Option<Tensor>, heads: usize| -> Result<Tensor> {
                let mut y = w.forward(&h)?;
                if let Some(b) = b {
                    y = y.broadcast_add(b)?;
                }
                Ok(y.reshape((1, len, heads, hd))?.transpose(1, 2)?)
            };
            let q = self.rope(&proj(&layer.wq, &layer.bq, nh)?, pos, len)?;
            let k = self.rope(&proj(&layer.wk, &layer.bk, nkv)?, pos, len)?;
            let v = proj(&layer.wv, &layer.bv, nkv)?.contiguous()?;
            let (k, v) = match cache.layers.get(li) {
                Some((ck, cv)) if pos > 0 => {
                    (Tensor::cat(&[ck, &k], 2)?, Tensor::cat(&[cv, &v], 2)?)
                }
                _ => (k, v),
            };
            new_layers.push((k.clone(), v.clone()));
            let k = candle_transformers::utils::repeat_kv(k, nh / nkv)?.contiguous()?;
            let v = candle_transformers::utils::repeat_kv(v, nh / nkv)?.contiguous()?;
            let mut att = (q.matmul(&k.t()?)? * scale)?;
            if let Some(m) = &mask {
                att = att.broadcast_add(m)?;
            }
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((1, len, nh * hd))?;
            x = (x + layer.wo.forward(&y)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let gate = candle_nn::ops::silu(&layer.w_gate.forward(&h)?)?;
            let up = layer.w_up.forward(&h)?;
            x = (x + layer.w_down.forward(&(gate * up)?)?)?;
        }
        Ok((
            x,
            KvCache {
                layers: new_layers,
                len: pos + len,
            },
        ))
    }
}
