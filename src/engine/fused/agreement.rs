//! The fused kernels checked against candle's operations on the same random inputs.

use super::{
    Rows, add, add_bias, heads, masked_softmax, matmul_f32_from_bf16, merge_heads, silu_mul,
    silu_mul_joined,
};
use crate::engine::model::RopeStyle;
use crate::error::Result;
use candle_core::{DType, Device, Tensor};

/// One kernel's name and the largest absolute difference from candle's operations.
type Gap = (&'static str, f32);

/// How far each fused kernel's output lies from candle's operations on the same inputs
/// (largest absolute difference), on `device`: the check a benchmark prints before trusting
/// the kernels. Empty where no kernel runs (CPU, Metal).
pub fn agreement(device: &Device) -> Result<Vec<Gap>> {
    if !device.is_cuda() {
        return Ok(Vec::new());
    }
    let mut out = heads_agreement(device)?;
    out.extend(elementwise_agreement(device)?);
    out.extend(softmax_agreement(device)?);
    out.extend(head_agreement(device)?);
    Ok(out)
}

/// The output layer's F32 logits from BF16 weights (in two blocks), against the F32 product.
fn head_agreement(device: &Device) -> Result<Vec<Gap>> {
    let x = Tensor::randn(0f32, 1f32, (5, 384), device)?;
    let w = rand(device, &[300, 384], 0.05)?;
    let plain = x.matmul(&w.to_dtype(DType::F32)?.t()?)?;
    let block = |i: usize| Ok(w.narrow(0, i * 150, 150)?);
    Ok(match matmul_f32_from_bf16(&x, 2, block)? {
        Some(y) => vec![(
            "output layer in F32 from BF16 weights",
            max_diff(&y, &plain)?,
        )],
        None => Vec::new(),
    })
}

fn rand(device: &Device, shape: &[usize], scale: f64) -> Result<Tensor> {
    Ok((Tensor::randn(0f32, 1f32, shape, device)? * scale)?.to_dtype(DType::BF16)?)
}

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?)
}

fn elementwise_agreement(device: &Device) -> Result<Vec<Gap>> {
    let (gate, up) = (
        rand(device, &[3, 37, 96], 3.0)?,
        rand(device, &[3, 37, 96], 1.0)?,
    );
    let bias = rand(device, &[96], 1.0)?;
    let plain = (candle_nn::ops::silu(&gate)? * &up)?;
    let joined = Tensor::cat(&[&gate, &up], 2)?;
    Ok(vec![
        ("silu·up", max_diff(&silu_mul(&gate, &up)?, &plain)?),
        (
            "silu·up, gate and up joined",
            max_diff(&silu_mul_joined(&joined)?, &plain)?,
        ),
        ("add", max_diff(&add(&gate, &up)?, &(&gate + &up)?)?),
        (
            "add bias",
            max_diff(&add_bias(&gate, &bias)?, &gate.broadcast_add(&bias)?)?,
        ),
    ])
}

/// Projections to heads (with and without rotary embedding, from padded and packed rows)
/// and attention's output merged back to packed rows.
fn heads_agreement(device: &Device) -> Result<Vec<Gap>> {
    let (b, len, nh, hd) = (2, 11, 3, 16);
    let y = rand(device, &[b, len, nh * hd], 2.0)?;
    let bias = rand(device, &[nh * hd], 1.0)?;
    let angles = rand(device, &[b, len, hd / 2], 3.0)?.to_dtype(DType::F32)?;
    let (cos, sin) = (
        angles.cos()?.to_dtype(DType::BF16)?,
        angles.sin()?.to_dtype(DType::BF16)?,
    );
    let (cos1, sin1) = (cos.get(0)?, sin.get(0)?);
    let plain = |rope: Option<(&Tensor, &Tensor, RopeStyle)>| -> Result<Tensor> {
        let t = y
            .broadcast_add(&bias)?
            .reshape((b, len, nh, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        Ok(match rope {
            None => t,
            Some((c, s, RopeStyle::Interleaved)) => candle_nn::rotary_emb::rope_i(&t, c, s)?,
            Some((c, s, RopeStyle::Half)) => candle_nn::rotary_emb::rope(&t, c, s)?,
        })
    };
    let fused = |rope| heads(&y, Some(&bias), rope, (nh, hd), None);
    let half = Some((&cos, &sin, RopeStyle::Half));
    let pairs = Some((&cos1, &sin1, RopeStyle::Interleaved));
    let mut out = vec![
        ("heads", max_diff(&fused(None)?, &plain(None)?)?),
        (
            "heads + rope (halves, rows apart)",
            max_diff(&fused(half)?, &plain(half)?)?,
        ),
        (
            "heads + rope (pairs, one start)",
            max_diff(&fused(pairs)?, &plain(pairs)?)?,
        ),
    ];
    // Rows of 11 and 7 tokens packed, against the same rows padded.
    let short = 7;
    let packed = Tensor::cat(&[y.get(0)?, y.get(1)?.narrow(0, 0, short)?], 0)?;
    let table = Tensor::new(&[0u32, len as u32, len as u32, short as u32], device)?;
    let rows = Rows {
        table: &table,
        b,
        len,
        tokens: len + short,
    };
    let padded = fused(half)?;
    let from_packed = heads(&packed, Some(&bias), half, (nh, hd), Some(rows))?;
    let real = |t: &Tensor| -> Result<Tensor> {
        Ok(Tensor::cat(
            &[
                t.get(0)?.flatten_all()?,
                t.get(1)?.narrow(1, 0, short)?.flatten_all()?,
            ],
            0,
        )?)
    };
    out.push((
        "heads from packed rows",
        max_diff(&real(&from_packed)?, &real(&padded)?)?,
    ));
    // The same packed rows as a column range of a wider product (q, k and v joined).
    let wide = Tensor::cat(&[&rand(device, &[len + short, 5], 1.0)?, &packed], 1)?;
    let column_range = wide.narrow(1, 5, nh * hd)?;
    let from_range = heads(&column_range, Some(&bias), half, (nh, hd), Some(rows))?;
    out.push((
        "heads from a column range",
        max_diff(&from_range, &from_packed)?,
    ));
    let (range_plain, packed_plain) = (
        heads(&column_range, None, None, (nh, hd), Some(rows))?,
        heads(&packed, None, None, (nh, hd), Some(rows))?,
    );
    out.push((
        "heads from a column range, no bias or rope",
        max_diff(&range_plain, &packed_plain)?,
    ));
    let merged = merge_heads(&from_packed, Some(rows))?;
    let plain = merge_heads(&padded, None)?;
    let plain = Tensor::cat(&[plain.get(0)?, plain.get(1)?.narrow(0, 0, short)?], 0)?;
    out.push(("heads merged to packed rows", max_diff(&merged, &plain)?));
    Ok(out)
}

/// Attention's scaled softmax with a causal mask per batch row, and without a mask.
fn softmax_agreement(device: &Device) -> Result<Vec<Gap>> {
    let (b, groups, rep, len, keys) = (3, 2, 4, 13, 29);
    let att = rand(device, &[b, groups, rep * len, keys], 8.0)?;
    let mask: Vec<f32> = (0..b * len * keys)
        .map(|i| {
            if (i % keys) > (i / keys) % len + keys - len {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, (b, 1, len, keys), device)?.to_dtype(DType::BF16)?;
    let scale = 0.125;
    let plain = |m: Option<&Tensor>| -> Result<Tensor> {
        let mut a = (&att * scale)?;
        if let Some(m) = m {
            a = a
                .reshape((b, groups, rep, len, keys))?
                .broadcast_add(&m.unsqueeze(2)?)?
                .reshape((b, groups, rep * len, keys))?;
        }
        Ok(candle_nn::ops::softmax_last_dim(&a)?)
    };
    let fused = |m: Option<&Tensor>| masked_softmax(&att, m, scale, rep, len);
    Ok(vec![
        (
            "masked softmax",
            max_diff(&fused(Some(&mask))?, &plain(Some(&mask))?)?,
        ),
        ("softmax", max_diff(&fused(None)?, &plain(None)?)?),
    ])
}
