//! MLX's affine quantization, bit for bit: per group of `group_size` weights along a row,
//! `w ≈ scale · q + bias` with `q` in `0..2^bits`. Each row of the packed weight is a
//! little-endian, least-significant-bit-first bit stream of u32 words, element `i` at bit
//! `i · bits` (3-, 5- and 6-bit codes cross word boundaries; groups never do). Scales and
//! biases are stored in the source dtype (BF16 here). The arithmetic follows MLX's CPU
//! kernel: group min and max in f32, the edge of larger magnitude made exactly
//! representable, round-half-to-even throughout.

use crate::error::{Error, Result};
use crate::vocab::Precision;
use half::bf16;
use std::collections::BTreeMap;

/// How an MLX folder was quantized: config.json's `quantization` block.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MlxQuant {
    pub bits: u32,
    pub group_size: usize,
    /// The precision the folder holds (from `bits`).
    pub precision: Precision,
    /// Engine tensor name → `mlx-affine-{bits}bit-g{group}` for packed tensors, `bf16` or
    /// `f32` for the rest.
    pub tensor_types: BTreeMap<String, String>,
}

/// A quantized matrix in MLX's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub bits: u32,
    pub group_size: usize,
    pub rows: usize,
    pub cols: usize,
    /// `rows × cols·bits/32` words.
    pub words: Vec<u32>,
    /// `rows × cols/group_size`.
    pub scales: Vec<bf16>,
    pub biases: Vec<bf16>,
}

/// That `bits` and `group_size` are an MLX mode and that a row of `cols` splits into groups.
pub(crate) fn check(bits: u32, group_size: usize, cols: usize) -> Result<()> {
    if !matches!(bits, 2 | 3 | 4 | 5 | 6 | 8) {
        return Err(Error::Model(format!(
            "MLX quantization has no {bits}-bit mode (2, 3, 4, 5, 6, 8)"
        )));
    }
    if !matches!(group_size, 32 | 64 | 128) {
        return Err(Error::Model(format!(
            "MLX group size must be 32, 64 or 128, not {group_size}"
        )));
    }
    if !cols.is_multiple_of(group_size) {
        return Err(Error::Model(format!(
            "a row of {cols} weights does not split into groups of {group_size}"
        )));
    }
    Ok(())
}

/// Round half to even, as `f32::round_ties_even`, without a library call on CPUs that lack
/// a rounding instruction: adding and subtracting 1.5·2²³ rounds in the FPU's default
/// round-to-nearest-even mode for every |x| < 2²² (up to the sign of a zero, which a code
/// never keeps), and the rest falls back.
#[inline]
fn round_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    if x.abs() < 4_194_304.0 {
        (x + MAGIC) - MAGIC
    } else {
        x.round_ties_even()
    }
}

fn check_len(n: usize, rows: usize, cols: usize) -> Result<()> {
    if n != rows * cols {
        return Err(Error::Model(format!(
            "{n} values for a {rows}×{cols} matrix"
        )));
    }
    Ok(())
}

/// Quantize a row-major `rows × cols` matrix of BF16 values.
pub fn quantize(
    w: &[bf16],
    rows: usize,
    cols: usize,
    bits: u32,
    group_size: usize,
) -> Result<Quantized> {
    check(bits, group_size, cols)?;
    check_len(w.len(), rows, cols)?;
    let n_bins = ((1u32 << bits) - 1) as f32;
    let words_per_row = cols * bits as usize / 32;
    let groups = cols / group_size;
    let mut words = vec![0u32; rows * words_per_row];
    let mut scales = Vec::with_capacity(rows * groups);
    let mut biases = Vec::with_capacity(rows * groups);
    for r in 0..rows {
        let row = &w[r * cols..(r + 1) * cols];
        let out = &mut words[r * words_per_row..(r + 1) * words_per_row];
        for g in 0..groups {
            let vals = &row[g * group_size..(g + 1) * group_size];
            let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
            for v in vals {
                let v = v.to_f32();
                lo = lo.min(v);
                hi = hi.max(v);
            }
            let mask = lo.abs() > hi.abs();
            let mut scale = ((hi - lo) / n_bins).max(1e-7);
            if !mask {
                scale = -scale;
            }
            let edge = if mask { lo } else { hi };
            let q0 = (edge / scale).round_ties_even();
            let mut bias = 0.0f32;
            if q0 != 0.0 {
                scale = edge / q0;
                bias = edge;
            }
            for (j, v) in vals.iter().enumerate() {
                let q = round_even((v.to_f32() - bias) / scale).clamp(0.0, n_bins) as u64;
                let bit = (g * group_size + j) * bits as usize;
                let (word, shift) = (bit / 32, bit % 32);
                let wide = q << shift;
                out[word] |= wide as u32;
                if shift + bits as usize > 32 {
                    out[word + 1] |= (wide >> 32) as u32;
                }
            }
            scales.push(bf16::from_f32(scale));
            biases.push(bf16::from_f32(bias));
        }
    }
    Ok(Quantized {
        bits,
        group_size,
        rows,
        cols,
        words,
        scales,
        biases,
    })
}

/// [`quantize`] on all cores, in blocks of rows (rows are independent, so the result is
/// the same bit for bit).
pub fn quantize_par(
    w: &[bf16],
    rows: usize,
    cols: usize,
    bits: u32,
    group_size: usize,
) -> Result<Quantized> {
    use rayon::prelude::*;
    check(bits, group_size, cols)?;
    check_len(w.len(), rows, cols)?;
    let block = 64usize;
    let parts = w
        .par_chunks(block * cols.max(1))
        .map(|chunk| quantize(chunk, chunk.len() / cols.max(1), cols, bits, group_size))
        .collect::<Result<Vec<_>>>()?;
    let mut out = Quantized {
        bits,
        group_size,
        rows,
        cols,
        words: Vec::with_capacity(rows * cols * bits as usize / 32),
        scales: Vec::with_capacity(rows * cols / group_size),
        biases: Vec::with_capacity(rows * cols / group_size),
    };
    for p in parts {
        out.words.extend_from_slice(&p.words);
        out.scales.extend_from_slice(&p.scales);
        out.biases.extend_from_slice(&p.biases);
    }
    Ok(out)
}

impl Quantized {
    /// The code of element (`r`, `c`).
    pub fn code(&self, r: usize, c: usize) -> u32 {
        let words_per_row = self.cols * self.bits as usize / 32;
        let row = &self.words[r * words_per_row..(r + 1) * words_per_row];
        let bit = c * self.bits as usize;
        let (word, shift) = (bit / 32, bit % 32);
        let mut v = (row[word] as u64) >> shift;
        if shift + self.bits as usize > 32 {
            v |= (row[word + 1] as u64) << (32 - shift);
        }
        (v & ((1u64 << self.bits) - 1)) as u32
    }

    /// Dequantize to BF16 as MLX does: `scale · q + bias`, each step rounded to BF16.
    /// Rows are computed on all cores.
    pub fn dequantize(&self) -> Vec<bf16> {
        use rayon::prelude::*;
        let groups = self.cols / self.group_size;
        let mut out = vec![bf16::ZERO; self.rows * self.cols];
        out.par_chunks_mut(self.cols.max(1))
            .enumerate()
            .for_each(|(r, row)| {
                for (c, o) in row.iter_mut().enumerate() {
                    let g = r * groups + c / self.group_size;
                    let q = bf16::from_f32(self.code(r, c) as f32);
                    let prod = bf16::from_f32(self.scales[g].to_f32() * q.to_f32());
                    *o = bf16::from_f32(prod.to_f32() + self.biases[g].to_f32());
                }
            });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_even_is_round_ties_even() {
        let mut x = -300.0f32;
        while x < 300.0 {
            for v in [
                x,
                x + 0.5,
                f32::from_bits((x + 0.5).to_bits() + 1),
                -x - 0.5,
            ] {
                assert_eq!(round_even(v), v.round_ties_even(), "{v}");
            }
            x += 0.25;
        }
        for v in [
            0.0,
            -0.0,
            2.5,
            3.5,
            -2.5,
            1e7,
            -1e9,
            4_194_303.5,
            8_388_609.0,
        ] {
            assert_eq!(round_even(v), v.round_ties_even(), "{v}");
        }
    }
}
