//! The fused kernels checked against candle's operations on the same random inputs.

use super::{
    Rows, add, add_bias, heads, join_columns, masked_softmax, matmul_f32_from_bf16, merge_heads,
    ragged_mask, ragged_mask_values, rms_norm, silu_mul, silu_mul_joined,
};
use crate::engine::config::RopeStyle;
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
    for case in [
        (29, "masked softmax", "softmax"),
        (300, "masked softmax, 300 keys", "softmax, 300 keys"),
        (700, "masked softmax, 700 keys", "softmax, 700 keys"),
    ] {
        out.extend(softmax_agreement(device, case)?);
    }
    out.extend(norm_agreement(device)?);
    out.extend(join_agreement(device)?);
    out.extend(mask_agreement(device)?);
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

/// A cache layer put together from a part shared by every row, a part read at mapped rows
/// and the new columns, against broadcasting, selecting and concatenating.
fn join_agreement(device: &Device) -> Result<Vec<Gap>> {
    let (rows, heads, d) = (3, 2, 16);
    let shared = rand(device, &[1, heads, 5, d], 1.0)?;
    let mapped = rand(device, &[4, heads, 7, d], 1.0)?;
    let map = Tensor::new(&[2u32, 0, 2], device)?;
    let new = rand(device, &[rows, heads, 2, d], 1.0)?;
    let parts = [(&shared, None), (&mapped, Some(&map)), (&new, None)];
    let Some(joined) = join_columns(&parts, rows)? else {
        return Ok(Vec::new());
    };
    let plain = Tensor::cat(
        &[
            &shared.broadcast_as((rows, heads, 5, d))?.contiguous()?,
            &mapped.index_select(&map, 0)?,
            &new,
        ],
        2,
    )?;
    Ok(vec![("cache columns joined", max_diff(&joined, &plain)?)])
}

/// The ragged attention mask made on the device, against its values made on the host
/// (0 or -∞ each: equal or not).
fn mask_agreement(device: &Device) -> Result<Vec<Gap>> {
    let (cols, len) = (9, 4);
    let real: Vec<Vec<bool>> = (0..3)
        .map(|r| (0..cols).map(|j| (j * 7 + r * 3) % 5 != 0).collect())
        .collect();
    let made = ragged_mask(&real, len, device, DType::BF16)?;
    let made: Vec<f32> = made.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let gap = match made == ragged_mask_values(&real, len) {
        true => 0.0,
        false => f32::INFINITY,
    };
    Ok(vec![("ragged mask", gap)])
}

/// RMS norms of rows narrower than 1,024 and wider (candle's kernel reduces those two
/// differently), against candle's `rms_norm`: the same bits are expected.
fn norm_agreement(device: &Device) -> Result<Vec<Gap>> {
    let mut out = Vec::new();
    for (name, cols) in [
        ("rms norm, 96 columns", 96),
        ("rms norm, 3,100 columns", 3_100),
    ] {
        let x = rand(device, &[37, cols], 2.0)?;
        let alpha = rand(device, &[cols], 1.0)?;
        let plain = candle_nn::ops::rms_norm(&x, &alpha, 1e-6)?;
        out.push((name, max_diff(&rms_norm(&x, &alpha, 1e-6)?, &plain)?));
    }
    Ok(out)
}

/// Attention's scaled softmax over `keys` keys with a causal mask per batch row, and
/// without a mask (29, 300 and 700 keys take the kernel's three ways through a row).
fn softmax_agreement(
    device: &Device,
    (keys, masked, unmasked): (usize, &'static str, &'static str),
) -> Result<Vec<Gap>> {
    let (b, groups, rep, len) = (3, 2, 4, 13);
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
            masked,
            max_diff(&fused(Some(&mask))?, &plain(Some(&mask))?)?,
        ),
        (unmasked, max_diff(&fused(None)?, &plain(None)?)?),
    ])
}
