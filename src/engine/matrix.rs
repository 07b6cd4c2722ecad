//! A weight matrix as one precision holds it ([`Matrix`]): dense, candle's quantized
//! kernels, or MLX codes packed on the device; and its products.

use super::fused;
use super::packed::Packed;
use crate::error::Result;
use candle_core::quantized::QMatMul;
use candle_core::{DType, Module, Tensor};

/// A weight matrix `[out, in]` as one precision holds it.
pub enum Matrix {
    /// Dense in the model's compute dtype (`QMatMul::Tensor`), or candle's quantized
    /// kernels (`QMatMul::QTensor`).
    Mm(QMatMul),
    /// MLX affine codes packed on the device, dequantized to BF16 before each use.
    Packed(Packed),
}

/// Rows of the output layer turned into F32 at a time when the head runs in F32 from BF16
/// or packed weights (bounds the transient memory: 32,768 × 4,096 × 4 bytes = 512 MiB).
const HEAD_CHUNK: usize = 32_768;

impl Matrix {
    /// A dense matrix.
    pub fn dense(w: Tensor) -> Matrix {
        Matrix::Mm(QMatMul::Tensor(w))
    }

    /// `x · Wᵀ` over the last dimension of `x`. On the CPU a dense matrix goes through
    /// `QMatMul` as it always has; on a GPU the rows of all prompts are one matmul.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Matrix::Mm(QMatMul::Tensor(w)) if !x.device().is_cpu() => flat_matmul(x, w),
            Matrix::Mm(m @ QMatMul::QTensor(_)) if x.dtype() != DType::F32 => {
                Ok(m.forward(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())?)
            }
            Matrix::Mm(m) => Ok(m.forward(x)?),
            Matrix::Packed(p) => flat_matmul(x, &p.dequantize()?.to_dtype(x.dtype())?),
        }
    }

    /// The rows `ids` (an embedding lookup), in `dtype`.
    pub(super) fn rows(&self, ids: &Tensor, dtype: DType) -> Result<Tensor> {
        Ok(match self {
            Matrix::Mm(QMatMul::Tensor(w)) => w.index_select(ids, 0)?.to_dtype(dtype)?,
            Matrix::Mm(m) => m.dequantize_f16()?.index_select(ids, 0)?.to_dtype(dtype)?,
            Matrix::Packed(p) => p.select_rows(ids)?.dequantize()?.to_dtype(dtype)?,
        })
    }

    /// `x · Wᵀ` in F32 for `x` `[n, in]` F32, a block of output rows at a time.
    pub(super) fn forward_f32(&self, x: &Tensor) -> Result<Tensor> {
        let out = match self {
            Matrix::Mm(QMatMul::Tensor(w)) => w.dims()[0],
            Matrix::Packed(p) => p.rows(),
            Matrix::Mm(m) => return Ok(m.forward(x)?.to_dtype(DType::F32)?),
        };
        // On a GPU: BF16 blocks (a dense matrix whole, packed ones dequantized a block at a
        // time) in products with F32 results.
        let bf16_block = |i: usize| -> Result<Tensor> {
            let start = i * HEAD_CHUNK;
            let len = HEAD_CHUNK.min(out - start);
            match self {
                Matrix::Mm(QMatMul::Tensor(w)) => Ok(w.clone()),
                Matrix::Packed(p) => p.narrow_rows(start, len)?.dequantize(),
                Matrix::Mm(_) => unreachable_kernels(),
            }
        };
        let bf16_blocks = match self {
            Matrix::Mm(QMatMul::Tensor(w)) if w.dtype() == DType::BF16 => 1,
            Matrix::Packed(_) => out.div_ceil(HEAD_CHUNK),
            _ => 0,
        };
        if bf16_blocks > 0
            && let Some(y) = fused::matmul_f32_from_bf16(x, bf16_blocks, bf16_block)?
        {
            return Ok(y);
        }
        let mut blocks = Vec::with_capacity(out.div_ceil(HEAD_CHUNK));
        for start in (0..out).step_by(HEAD_CHUNK) {
            let len = HEAD_CHUNK.min(out - start);
            let w = match self {
                Matrix::Mm(QMatMul::Tensor(w)) => w.narrow(0, start, len)?.to_dtype(DType::F32)?,
                Matrix::Packed(p) => p
                    .narrow_rows(start, len)?
                    .dequantize()?
                    .to_dtype(DType::F32)?,
                Matrix::Mm(_) => unreachable_kernels()?,
            };
            blocks.push(x.matmul(&w.t()?)?);
        }
        Ok(Tensor::cat(&blocks, 1)?)
    }
}

impl Matrix {
    /// Bytes the matrix holds on its device.
    pub fn bytes(&self) -> usize {
        match self {
            Matrix::Mm(QMatMul::Tensor(w)) | Matrix::Mm(QMatMul::TensorF16(w)) => {
                w.elem_count() * w.dtype().size_in_bytes()
            }
            Matrix::Mm(QMatMul::QTensor(q)) => q.storage_size_in_bytes(),
            Matrix::Packed(p) => p.bytes(),
        }
    }
}

fn unreachable_kernels() -> Result<Tensor> {
    Err(crate::Error::Model(
        "quantized kernels have no row blocks".into(),
    ))
}

/// `x · Wᵀ` with every leading dimension of `x` folded into the rows of one matmul.
fn flat_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let n = x.elem_count() / k.max(1);
    let y = x.reshape((n, k))?.matmul(&w.t()?)?;
    let mut out = dims;
    let last = out.len() - 1;
    out[last] = w.dims()[0];
    Ok(y.reshape(out)?)
}
