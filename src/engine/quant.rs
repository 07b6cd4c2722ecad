//! The precision ladder. Every precision is made from the BF16 source, never from another
//! precision. Scheme `gguf` uses llama.cpp's types (Q8_0, Q6K, Q4K, Q3K) through candle;
//! a tensor whose input dimension is not a multiple of 256 falls back to Q8_0 (q8, q6) or
//! Q4_0 (q4, q3), and every tensor's type is recorded.

use super::hf::MlxQuant;
use super::model::{Layer, Transformer};
use super::source::SourceModel;
use crate::error::{Error, Result, brief};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;

/// A precision of the study.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Bf16,
    Q8,
    Q6,
    Q4,
    Q3,
}

impl Precision {
    pub const ALL: [Precision; 5] = [Self::Bf16, Self::Q8, Self::Q6, Self::Q4, Self::Q3];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bf16 => "bf16",
            Self::Q8 => "q8",
            Self::Q6 => "q6",
            Self::Q4 => "q4",
            Self::Q3 => "q3",
        }
    }

    /// Bits per weight as the study counts them (16 for BF16).
    pub fn bits(self) -> u32 {
        match self {
            Self::Bf16 => 16,
            Self::Q8 => 8,
            Self::Q6 => 6,
            Self::Q4 => 4,
            Self::Q3 => 3,
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                Error::Input(format!("unknown precision `{s}`; use bf16, q8, q6, q4, q3"))
            })
    }
}

/// How quantized bits are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// MLX affine quantization, group size 64, as the study's checkpoints were made.
    Mlx,
    /// llama.cpp k-quants through candle.
    Gguf,
}

/// The MLX group size the study used.
pub const MLX_GROUP: usize = 64;

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Mlx => "mlx",
            Scheme::Gguf => "gguf",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "mlx" => Ok(Self::Mlx),
            "gguf" => Ok(Self::Gguf),
            other => Err(Error::Input(format!(
                "unknown scheme `{other}`; use mlx or gguf"
            ))),
        }
    }
}

/// Quantize with MLX's affine scheme and return the dequantized BF16 values as F32 (the
/// weights MLX's own prefill computes with).
fn mlx_roundtrip(name: &str, t: &Tensor, bits: u32) -> Result<Tensor> {
    let (rows, cols) = t
        .dims2()
        .map_err(|e| Error::Model(format!("`{name}`: {}", brief(&e))))?;
    let vals: Vec<half::bf16> = t
        .flatten_all()?
        .to_dtype(candle_core::DType::BF16)?
        .to_vec1()?;
    let q = super::mlx::quantize(&vals, rows, cols, bits, MLX_GROUP)
        .map_err(|e| Error::Model(format!("`{name}`: {e}")))?;
    let deq: Vec<f32> = q.dequantize().into_iter().map(|v| v.to_f32()).collect();
    Ok(Tensor::from_vec(deq, (rows, cols), t.device())?)
}

/// How quantized layers are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compute {
    /// Quantize, then dequantize once to F32 and run dense matmuls (the faster path on CPU
    /// for prompts; the weights are exactly the quantized values).
    Dequant,
    /// candle's quantized matmul kernels (activations are quantized to Q8 on the fly).
    Kernels,
}

impl Compute {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "dequant" => Ok(Self::Dequant),
            "kernels" => Ok(Self::Kernels),
            other => Err(Error::Input(format!(
                "--compute must be dequant or kernels, not `{other}`"
            ))),
        }
    }
}

/// The type a 2-D weight gets at `precision` under scheme gguf, given its input dimension.
pub fn gguf_type(precision: Precision, in_dim: usize) -> Option<GgmlDType> {
    let kq = in_dim.is_multiple_of(256);
    match precision {
        Precision::Bf16 => None,
        Precision::Q8 => Some(GgmlDType::Q8_0),
        Precision::Q6 => Some(if kq { GgmlDType::Q6K } else { GgmlDType::Q8_0 }),
        Precision::Q4 => Some(if kq { GgmlDType::Q4K } else { GgmlDType::Q4_0 }),
        Precision::Q3 => Some(if kq { GgmlDType::Q3K } else { GgmlDType::Q4_0 }),
    }
}

/// A model built at one precision, with the per-tensor types used.
pub struct Built {
    pub model: Transformer,
    /// Tensor name → type (`bf16`, `Q8_0`, `Q4K`, … or `f32` for norms and biases).
    pub tensor_types: BTreeMap<String, String>,
}

type Weights = BTreeMap<String, (Weight, String)>;
/// A tensor's name with its weight and type name.
type Named = (String, (Weight, String));

fn take(weights: &mut Weights, name: &str) -> Result<Weight> {
    weights
        .remove(name)
        .map(|(w, _)| w)
        .ok_or_else(|| Error::Model(format!("model has no tensor `{name}`")))
}

enum Weight {
    Dense(Tensor),
    Quant(QTensor),
}

fn quantize_all(
    src: &SourceModel,
    precision: Precision,
    scheme: Scheme,
) -> Result<BTreeMap<String, (Weight, String)>> {
    if let Some(q) = &src.mlx_quant {
        return held_weights(src, q, precision);
    }
    let names: Vec<&String> = src.tensors.keys().collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(1);
    let chunk = names.len().div_ceil(threads).max(1);
    let results: Vec<Result<Vec<Named>>> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|name| {
                            let t = &src.tensors[*name];
                            let out = if t.rank() < 2 {
                                (Weight::Dense(t.clone()), "f32".to_string())
                            } else {
                                let in_dim = t.dims()[t.rank() - 1];
                                if scheme == Scheme::Mlx {
                                    let out = if precision == Precision::Bf16
                                        || !in_dim.is_multiple_of(MLX_GROUP)
                                    {
                                        (Weight::Dense(t.clone()), "bf16".to_string())
                                    } else {
                                        let bits = precision.bits();
                                        (
                                            Weight::Dense(mlx_roundtrip(name, t, bits)?),
                                            format!("mlx-affine-{bits}bit-g{MLX_GROUP}"),
                                        )
                                    };
                                    return Ok(((*name).clone(), out));
                                }
                                match gguf_type(precision, in_dim) {
                                    None => (Weight::Dense(t.clone()), "bf16".to_string()),
                                    Some(ty) => {
                                        let q = QTensor::quantize(t, ty).map_err(|e| {
                                            Error::Model(format!(
                                                "cannot quantize `{name}` to {ty:?}: {}",
                                                brief(&e)
                                            ))
                                        })?;
                                        (Weight::Quant(q), format!("{ty:?}"))
                                    }
                                }
                            };
                            Ok(((*name).clone(), out))
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Model("quantization thread panicked".into())))
            })
            .collect()
    });
    let mut out = BTreeMap::new();
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// The weights of an MLX folder, already dequantized when it was loaded: it can only be
/// run at the precision it holds.
fn held_weights(src: &SourceModel, q: &MlxQuant, precision: Precision) -> Result<Weights> {
    if precision != q.precision {
        return Err(Error::Model(format!(
            "{} holds {}-bit MLX weights ({}); it cannot run at {} — pass its BF16 source and attach this folder with --checkpoint",
            src.id,
            q.bits,
            q.precision.as_str(),
            precision.as_str()
        )));
    }
    Ok(src
        .tensors
        .iter()
        .map(|(name, t)| {
            let ty = q
                .tensor_types
                .get(name)
                .cloned()
                .unwrap_or_else(|| if t.rank() >= 2 { "bf16" } else { "f32" }.to_string());
            (name.clone(), (Weight::Dense(t.clone()), ty))
        })
        .collect())
}

/// Build the model at `precision` on `device`.
pub fn build(
    src: &SourceModel,
    precision: Precision,
    scheme: Scheme,
    compute: Compute,
    device: &Device,
) -> Result<Built> {
    let mut weights = quantize_all(src, precision, scheme)?;
    let tensor_types = weights
        .iter()
        .map(|(k, (_, t))| (k.clone(), t.clone()))
        .collect();
    let dense = |w: &Weight| -> Result<Tensor> {
        Ok(match w {
            Weight::Dense(t) => t.to_device(device)?,
            Weight::Quant(q) => q.dequantize(device)?,
        })
    };
    let mm = |w: Weight| -> Result<QMatMul> {
        Ok(match (w, compute) {
            (Weight::Quant(q), Compute::Kernels) if device.is_cpu() => QMatMul::from_qtensor(q)?,
            (w, _) => QMatMul::Tensor(dense(&w)?),
        })
    };
    let embed_w = take(&mut weights, "token_embd.weight")?;
    let embed = dense(&embed_w)?;
    let lm_head = match weights.contains_key("output.weight") {
        true => mm(take(&mut weights, "output.weight")?)?,
        false => mm(embed_w)?,
    };
    let mut layers = Vec::with_capacity(src.cfg.num_layers);
    for i in 0..src.cfg.num_layers {
        let n = |s: &str| format!("blk.{i}.{s}");
        let w = &mut weights;
        let bias = |w: &mut Weights, s: &str| -> Result<Option<Tensor>> {
            w.remove(&n(s)).map(|(b, _)| dense(&b)).transpose()
        };
        layers.push(Layer {
            bq: bias(w, "attn_q.bias")?,
            bk: bias(w, "attn_k.bias")?,
            bv: bias(w, "attn_v.bias")?,
            wq: mm(take(w, &n("attn_q.weight"))?)?,
            wk: mm(take(w, &n("attn_k.weight"))?)?,
            wv: mm(take(w, &n("attn_v.weight"))?)?,
            wo: mm(take(w, &n("attn_output.weight"))?)?,
            w_gate: mm(take(w, &n("ffn_gate.weight"))?)?,
            w_up: mm(take(w, &n("ffn_up.weight"))?)?,
            w_down: mm(take(w, &n("ffn_down.weight"))?)?,
            attn_norm: dense(&take(w, &n("attn_norm.weight"))?)?,
            ffn_norm: dense(&take(w, &n("ffn_norm.weight"))?)?,
        });
    }
    let norm = dense(&take(&mut weights, "output_norm.weight")?)?;
    let model = Transformer::new(src.cfg.clone(), embed, layers, norm, lm_head, device)?;
    Ok(Built {
        model,
        tensor_types,
    })
}
