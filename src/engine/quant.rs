//! The precision ladder. Every precision is made from the BF16 source, never from another
//! precision. Scheme `gguf` uses llama.cpp's types (Q8_0, Q6K, Q4K, Q3K) through candle;
//! a tensor whose input dimension is not a multiple of 256 falls back to Q8_0 (q8, q6) or
//! Q4_0 (q4, q3), and every tensor's type is recorded.

use super::mlx::MlxQuant;
use super::model::{Layer, Matrix, Transformer};
use super::packed::Packed;
use super::source::SourceModel;
use super::stack::Stack;
use crate::error::{Error, Result, brief};
pub use crate::vocab::{Compute, Precision, Scheme};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// The MLX group size the study used.
pub const MLX_GROUP: usize = 64;

/// Quantize a 2-D tensor with MLX's affine scheme (from its BF16 values), on all cores.
pub fn mlx_quantize(name: &str, t: &Tensor, bits: u32) -> Result<super::mlx::Quantized> {
    let (rows, cols) = t
        .dims2()
        .map_err(|e| Error::Model(format!("`{name}`: {}", brief(&e))))?;
    let vals: Vec<half::bf16> = t
        .flatten_all()?
        .to_dtype(candle_core::DType::BF16)?
        .to_vec1()?;
    super::mlx::quantize_par(&vals, rows, cols, bits, MLX_GROUP)
        .map_err(|e| Error::Model(format!("`{name}`: {e}")))
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
    Mlx(super::mlx::Quantized),
    /// A source tensor to quantize with MLX's scheme (`name`, bits) when it is placed on
    /// a CUDA device, by that device.
    MlxLater(Tensor, String, u32),
}

fn quantize_all(
    src: &SourceModel,
    precision: Precision,
    scheme: Scheme,
    later: bool,
    cancel: &AtomicBool,
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
                            if cancel.load(Ordering::Relaxed) {
                                return Err(Error::Cancelled);
                            }
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
                                        let w = match later {
                                            true => {
                                                Weight::MlxLater(t.clone(), (*name).clone(), bits)
                                            }
                                            false => Weight::Mlx(mlx_quantize(name, t, bits)?),
                                        };
                                        (w, format!("mlx-affine-{bits}bit-g{MLX_GROUP}"))
                                    };
                                    return Ok(((*name).clone(), out));
                                }
                                match gguf_type(precision, in_dim) {
                                    None => (Weight::Dense(t.clone()), "bf16".to_string()),
                                    Some(ty) => {
                                        let q = QTensor::quantize(&t.to_dtype(DType::F32)?, ty)
                                            .map_err(|e| {
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

/// The dtype a model computes in on `device`: F32 on the CPU (its fastest path there, and
/// the reference numerics), BF16 on a GPU.
pub fn compute_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

/// Turns quantized or dense source weights into what the model on `device` holds.
struct Placer<'a> {
    device: &'a Device,
    dtype: DType,
    compute: Compute,
}

impl Placer<'_> {
    /// A dense tensor on the device in the compute dtype (norms and biases too).
    fn dense(&self, w: &Weight) -> Result<Tensor> {
        Ok(match w {
            Weight::Dense(t) => t.to_dtype(self.dtype)?.to_device(self.device)?,
            Weight::Quant(q) => q
                .dequantize(&Device::Cpu)?
                .to_dtype(self.dtype)?
                .to_device(self.device)?,
            Weight::MlxLater(t, name, bits) => {
                self.dense(&Weight::Mlx(mlx_quantize(name, t, *bits)?))?
            }
            Weight::Mlx(q) => {
                let vals: Vec<f32> = q.dequantize().into_iter().map(|v| v.to_f32()).collect();
                Tensor::from_vec(vals, (q.rows, q.cols), &Device::Cpu)?
                    .to_dtype(self.dtype)?
                    .to_device(self.device)?
            }
        })
    }

    /// A weight matrix: MLX codes stay packed on a CUDA device; k-quants use candle's
    /// kernels when asked; everything else is dense.
    fn matrix(&self, w: &Weight) -> Result<Matrix> {
        Ok(match w {
            #[cfg(feature = "cuda")]
            Weight::MlxLater(t, name, bits) if self.device.is_cuda() => {
                let on_device = t.to_dtype(DType::BF16)?.to_device(self.device)?;
                Matrix::Packed(
                    super::packed::quantize_on_device(&on_device, *bits, MLX_GROUP)
                        .map_err(|e| Error::Model(format!("`{name}`: {e}")))?,
                )
            }
            Weight::MlxLater(t, name, bits) => {
                self.matrix(&Weight::Mlx(mlx_quantize(name, t, *bits)?))?
            }
            Weight::Mlx(q) if self.device.is_cuda() => Matrix::Packed(Packed::new(q, self.device)?),
            Weight::Quant(q) if self.compute == Compute::Kernels => {
                Matrix::Mm(QMatMul::from_qtensor(requantized(q, self.device)?)?)
            }
            w => Matrix::dense(self.dense(w)?),
        })
    }
}

/// A k-quant tensor on `device` (the same blocks, copied: not quantized again).
fn requantized(q: &QTensor, device: &Device) -> Result<QTensor> {
    let storage = candle_core::quantized::QStorage::from_data(q.data()?, device, q.dtype())?;
    Ok(QTensor::new(storage, q.shape().clone())?)
}

/// Build the model at `precision` on `device`.
pub fn build(
    src: &SourceModel,
    precision: Precision,
    scheme: Scheme,
    compute: Compute,
    device: &Device,
) -> Result<Built> {
    build_cancellable(
        src,
        precision,
        scheme,
        compute,
        device,
        &AtomicBool::new(false),
    )
}

/// `build`, stopping with `Error::Cancelled` between tensors and layers once `cancel` is set.
pub fn build_cancellable(
    src: &SourceModel,
    precision: Precision,
    scheme: Scheme,
    compute: Compute,
    device: &Device,
    cancel: &AtomicBool,
) -> Result<Built> {
    // On a GPU, MLX tensors are quantized there, one at a time as they are moved.
    let later = scheme == Scheme::Mlx && device.is_cuda();
    let mut weights = quantize_all(src, precision, scheme, later, cancel)?;
    let tensor_types = weights
        .iter()
        .map(|(k, (_, t))| (k.clone(), t.clone()))
        .collect();
    let place = Placer {
        device,
        dtype: compute_dtype(device),
        compute,
    };
    let embed_w = take(&mut weights, "token_embd.weight")?;
    let embed = match &embed_w {
        Weight::Mlx(_) | Weight::MlxLater(..) => place.matrix(&embed_w)?,
        w => Matrix::dense(place.dense(w)?),
    };
    let lm_head = match weights.contains_key("output.weight") {
        true => Some(place.matrix(&take(&mut weights, "output.weight")?)?),
        // A tied output layer shares the embedding's tensors, unless it runs on kernels.
        false => match (&embed, &embed_w) {
            (_, Weight::Quant(_)) if compute == Compute::Kernels => Some(place.matrix(&embed_w)?),
            (Matrix::Packed(p), _) => Some(Matrix::Packed(p.clone())),
            (Matrix::Mm(QMatMul::Tensor(t)), _) => Some(Matrix::dense(t.clone())),
            _ => Some(place.matrix(&embed_w)?),
        },
    };
    drop(embed_w);
    let mut layers = Vec::with_capacity(src.cfg.num_layers);
    for i in 0..src.cfg.num_layers {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let n = |s: &str| format!("blk.{i}.{s}");
        let w = &mut weights;
        let bias = |w: &mut Weights, s: &str| -> Result<Option<Tensor>> {
            w.remove(&n(s)).map(|(b, _)| place.dense(&b)).transpose()
        };
        let mut mat = |s: &str| -> Result<Matrix> { place.matrix(&take(w, &n(s))?) };
        let qkv = Stack::new(vec![
            mat("attn_q.weight")?,
            mat("attn_k.weight")?,
            mat("attn_v.weight")?,
        ])?;
        let wo = mat("attn_output.weight")?;
        let gate_up = Stack::new(vec![mat("ffn_gate.weight")?, mat("ffn_up.weight")?])?;
        let w_down = mat("ffn_down.weight")?;
        layers.push(Layer {
            bq: bias(w, "attn_q.bias")?,
            bk: bias(w, "attn_k.bias")?,
            bv: bias(w, "attn_v.bias")?,
            qkv,
            wo,
            gate_up,
            w_down,
            attn_norm: place.dense(&take(w, &n("attn_norm.weight"))?)?,
            ffn_norm: place.dense(&take(w, &n("ffn_norm.weight"))?)?,
        });
    }
    let norm = place.dense(&take(&mut weights, "output_norm.weight")?)?;
    let model = Transformer::new(
        src.cfg.clone(),
        embed,
        layers,
        norm,
        lm_head,
        place.dtype,
        device,
    )?;
    Ok(Built {
        model,
        tensor_types,
    })
}
