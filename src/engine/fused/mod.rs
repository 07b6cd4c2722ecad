//! The elementwise steps of a block, fused where a kernel exists: on CUDA with BF16
//! activations each is one pass of `kernels/fused.cu` (silu · up, additions, scaled and
//! masked softmax); everywhere else, and for any layout the kernels do not take, the same
//! step is candle's operations, exactly as the CPU records were made.

use super::config::RopeStyle;
use crate::error::Result;
use candle_core::{DType, Tensor};

/// `silu(gate) · up`, elementwise (same shapes).
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(y) = cuda::binary(gate, up, cuda::Binary::SiluMul)? {
        return Ok(y);
    }
    Ok((candle_nn::ops::silu(gate)? * up)?)
}

/// `silu(gate) · up` for gate and up side by side in the last dimension of `y` (one
/// product for both), `[.., 2·n]` → `[.., n]`.
pub fn silu_mul_joined(y: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(out) = cuda::silu_mul_joined(y)? {
        return Ok(out);
    }
    let last = y.rank().saturating_sub(1);
    let n = y.dim(last)? / 2;
    silu_mul(&y.narrow(last, 0, n)?, &y.narrow(last, n, n)?)
}

/// `x · Wᵀ` in F32 for F32 `x` `[n, in]` and BF16 weights given as row blocks by `block`
/// (`0..blocks`), without an F32 copy of the weights: `x` is split into a BF16 high part
/// and a BF16 remainder (`x ≈ hi + lo` to about 2⁻¹⁷ relative), both multiplied in one
/// product with F32 accumulation and summed in F32. `None` where that product has no
/// kernel (the caller computes in F32 then).
pub fn matmul_f32_from_bf16(
    x: &Tensor,
    blocks: usize,
    block: impl Fn(usize) -> Result<Tensor>,
) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() && x.dtype() == DType::F32 && x.rank() == 2 {
        let n = x.dim(0)?;
        let hi = x.to_dtype(DType::BF16)?;
        let lo = (x - hi.to_dtype(DType::F32)?)?.to_dtype(DType::BF16)?;
        let both = Tensor::cat(&[&hi, &lo], 0)?;
        let mut parts = Vec::with_capacity(blocks);
        for i in 0..blocks {
            match cuda::matmul_f32_out(&both, &block(i)?)? {
                Some(y) => parts.push(y),
                None => return Ok(None),
            }
        }
        let y = match parts.len() {
            1 => parts.remove(0),
            _ => Tensor::cat(&parts, 1)?,
        };
        return Ok(Some((y.narrow(0, 0, n)? + y.narrow(0, n, n)?)?));
    }
    let _ = (x, blocks, &block);
    Ok(None)
}

/// RMS norm over the last dimension times `alpha`: candle's `rms_norm`, the same bits; on
/// CUDA with BF16 activations a kernel that gives each row one warp instead of a block.
pub fn rms_norm(x: &Tensor, alpha: &Tensor, eps: f32) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(y) = cuda::rms_norm(x, alpha, eps)? {
        return Ok(y);
    }
    Ok(candle_nn::ops::rms_norm(x, alpha, eps)?)
}

/// A cache layer's parts joined along the columns, `[rows, heads, Σ cols, d]`, in one copy
/// per part where the kernels run (`None` elsewhere, and for parts they do not take): each
/// part is `[rows or 1, heads, cols, d]`, read at the rows its map gives (`u32` `[rows]`),
/// else row for row, or its one row for every row.
pub fn join_columns(parts: &[(&Tensor, Option<&Tensor>)], rows: usize) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if parts.first().is_some_and(|(t, _)| t.device().is_cuda()) {
        return cuda::join_columns(parts, rows);
    }
    let _ = (parts, rows);
    Ok(None)
}

/// The additive attention mask `[b, 1, len, cols + len]` of `b` rows whose cached columns
/// are real where `real[r][j]` (each row's `cols` flags), followed by `len` new tokens seen
/// causally. Made on the device where the kernels run (the host uploads one byte per cached
/// column instead of the mask), else from [`ragged_mask_values`].
pub fn ragged_mask(
    real: &[Vec<bool>],
    len: usize,
    device: &candle_core::Device,
    dtype: DType,
) -> Result<Tensor> {
    let cols = real.first().map_or(0, Vec::len);
    if real.iter().any(|r| r.len() != cols) {
        return Err(crate::Error::Model(
            "a ragged cache's rows differ in columns".into(),
        ));
    }
    #[cfg(feature = "cuda")]
    if packs(device, dtype) {
        let flags: Vec<u8> = real.iter().flatten().map(|&s| u8::from(s)).collect();
        let real = Tensor::from_vec(flags, (real.len(), cols), device)?;
        return cuda::ragged_mask(&real, len);
    }
    let values = ragged_mask_values(real, len);
    let shape = (real.len(), 1, len, cols + len);
    Ok(Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?)
}

/// The values of [`ragged_mask`] on the host: 0 where query `i` of row `r` sees key `j`
/// (a real cached column, or a new token at or before `i`), -∞ elsewhere.
pub fn ragged_mask_values(real: &[Vec<bool>], len: usize) -> Vec<f32> {
    let cols = real.first().map_or(0, Vec::len);
    real.iter()
        .flat_map(|row| {
            (0..len).flat_map(move |i| {
                (0..cols + len).map(move |j| {
                    let seen = if j < cols { row[j] } else { j - cols <= i };
                    if seen { 0.0 } else { f32::NEG_INFINITY }
                })
            })
        })
        .collect()
}

/// `a + b` for two tensors of one shape.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(y) = cuda::binary(a, b, cuda::Binary::Add)? {
        return Ok(y);
    }
    Ok((a + b)?)
}

/// `x + bias`, the vector `bias` added along the last dimension of `x`.
pub fn add_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(y) = cuda::binary(x, bias, cuda::Binary::AddRows)? {
        return Ok(y);
    }
    Ok(x.broadcast_add(bias)?)
}

/// A forward's rows packed one after another in the residual stream, `[tokens, hidden]`,
/// instead of padded to the longest: `table` (u32 on the device, `[2·b]`) holds each row's
/// first token, then each row's length; `len` is the longest. Only where the kernels run
/// ([`packs`]).
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub table: &'a Tensor,
    pub b: usize,
    pub len: usize,
    pub tokens: usize,
}

/// Whether a forward on `device` with activations of `dtype` packs its rows ([`Rows`]).
pub fn packs(device: &candle_core::Device, dtype: DType) -> bool {
    cfg!(feature = "cuda") && device.is_cuda() && dtype == DType::BF16
}

/// A projection's output `y` as attention reads it, `[b, heads, len, d]` contiguous: `bias`
/// added, and for queries and keys the rotary embedding applied (`cos` and `sin`
/// `[len, d/2]`, or `[b, len, d/2]` when rows start at different positions). `y` is
/// `[b, len, heads·d]`, or packed `[tokens, heads·d]` with `rows`.
pub fn heads(
    y: &Tensor,
    bias: Option<&Tensor>,
    rope: Option<(&Tensor, &Tensor, RopeStyle)>,
    (heads, d): (usize, usize),
    rows: Option<Rows>,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(out) = cuda::heads(y, bias, rope, (heads, d), rows)? {
        return Ok(out);
    }
    if rows.is_some() {
        return Err(no_kernel("packed rows"));
    }
    let (b, len, _) = y.dims3()?;
    let y = match bias {
        Some(bias) => add_bias(y, bias)?,
        None => y.clone(),
    };
    let y = y
        .reshape((b, len, heads, d))?
        .transpose(1, 2)?
        .contiguous()?;
    Ok(match rope {
        None => y,
        Some((cos, sin, RopeStyle::Interleaved)) => candle_nn::rotary_emb::rope_i(&y, cos, sin)?,
        Some((cos, sin, RopeStyle::Half)) => candle_nn::rotary_emb::rope(&y, cos, sin)?,
    })
}

/// Attention's output `[b, heads, len, d]` as the next projection reads it: `[b, len,
/// heads·d]`, or with `rows` packed `[tokens, heads·d]`.
pub fn merge_heads(y: &Tensor, rows: Option<Rows>) -> Result<Tensor> {
    let (b, heads, len, d) = y.dims4()?;
    match rows {
        None => Ok(y.transpose(1, 2)?.reshape((b, len, heads * d))?),
        Some(_rows) => {
            #[cfg(feature = "cuda")]
            if let Some(out) = cuda::merge_heads(y, _rows)? {
                return Ok(out);
            }
            Err(no_kernel("packed rows"))
        }
    }
}

fn no_kernel(what: &str) -> crate::Error {
    crate::Error::Model(format!("{what} need the fused GPU kernels"))
}

/// Attention weights `softmax(scale · att + mask)` over the last dimension. `att` is
/// `[b, groups, rep·len, keys]` (the `rep` query heads of a group stacked along the query
/// axis), `mask` `[1 or b, 1, len, keys]`.
pub fn masked_softmax(
    att: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
    rep: usize,
    len: usize,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(y) = cuda::masked_softmax(att, mask, scale, len)? {
        return Ok(y);
    }
    let (b, groups, rows, keys) = att.dims4()?;
    let mut att = (att * scale)?;
    if let Some(m) = mask {
        att = att
            .reshape((b, groups, rep, len, keys))?
            .broadcast_add(&m.unsqueeze(2)?)?
            .reshape((b, groups, rows, keys))?;
    }
    Ok(candle_nn::ops::softmax_last_dim(&att)?)
}

mod agreement;
#[cfg(feature = "cuda")]
mod cuda;

pub use agreement::agreement;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn on_the_cpu_rows_stay_padded_and_packed_rows_are_refused_by_name() -> Result<()> {
        let dev = Device::Cpu;
        assert!(!packs(&dev, DType::F32));
        assert!(!packs(&dev, DType::BF16));
        let y = Tensor::arange(0f32, 2.0 * 3.0 * 8.0, &dev)?.reshape((2, 3, 8))?;
        // Without rows: [b, len, heads·d] → [b, heads, len, d], and back.
        let h = heads(&y, None, None, (2, 4), None)?;
        assert_eq!(h.dims(), [2, 2, 3, 4]);
        let back = merge_heads(&h, None)?;
        assert_eq!(back.to_vec3::<f32>()?, y.to_vec3::<f32>()?);
        let table = Tensor::new(&[0u32, 3, 3, 2], &dev)?;
        let rows = Rows {
            table: &table,
            b: 2,
            len: 3,
            tokens: 5,
        };
        let flat = y.reshape((6, 8))?.narrow(0, 0, 5)?;
        let err = heads(&flat, None, None, (2, 4), Some(rows)).expect_err("no kernels here");
        assert!(err.to_string().contains("fused GPU kernels"), "{err}");
        Ok(())
    }

    #[test]
    fn joined_gate_and_up_give_what_they_give_apart() -> Result<()> {
        let dev = Device::Cpu;
        let y = Tensor::arange(-6f32, 6.0, &dev)?.reshape((2, 6))?;
        let got = silu_mul_joined(&y)?.to_vec2::<f32>()?;
        let gate = y.narrow(1, 0, 3)?.contiguous()?;
        let up = y.narrow(1, 3, 3)?.contiguous()?;
        assert_eq!(got, silu_mul(&gate, &up)?.to_vec2::<f32>()?);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), 3);
        Ok(())
    }

    #[test]
    fn the_cpu_softmax_scales_then_masks_each_query_of_a_group() -> Result<()> {
        let dev = Device::Cpu;
        // One row, one group of 2 query heads × 2 queries over 2 keys; causal mask.
        let att = Tensor::new(&[[[[1f32, 3.0], [2.0, 2.0], [0.0, 4.0], [1.0, 1.0]]]], &dev)?;
        let mask = Tensor::new(&[[[[0f32, f32::NEG_INFINITY], [0.0, 0.0]]]], &dev)?;
        let rows = masked_softmax(&att, Some(&mask), 0.5, 2, 2)?
            .squeeze(0)?
            .squeeze(0)?
            .to_vec2::<f32>()?;
        // Queries 0 of both heads see key 0 only; queries 1 see both keys (equal here).
        assert_eq!(rows[0], vec![1.0, 0.0]);
        assert_eq!(rows[2], vec![1.0, 0.0]);
        assert!((rows[1][0] - 0.5).abs() < 1e-6 && (rows[3][1] - 0.5).abs() < 1e-6);
        Ok(())
    }
}
