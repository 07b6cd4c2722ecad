//! Matrices applied to one input whose outputs are used side by side: a block's query, key
//! and value projections, or its MLP's gate and up. On a CUDA device they are joined into
//! one matrix (their rows stacked), so the input is read once and one product replaces
//! several; each output is then a range of the product's columns. Elsewhere they stay
//! apart, exactly as the CPU records were made.

use super::matrix::Matrix;
use super::packed::Packed;
use crate::error::{Error, Result};
use candle_core::Tensor;
use candle_core::quantized::QMatMul;

pub enum Stack {
    /// One matrix per output.
    Apart(Vec<Matrix>),
    /// The outputs' matrices stacked by rows; `widths` are the outputs' column counts.
    Joined { w: Matrix, widths: Vec<usize> },
}

impl Stack {
    /// `parts` joined when they sit on a CUDA device as BF16 matrices or as packed codes of
    /// one kind, else kept apart.
    pub fn new(parts: Vec<Matrix>) -> Result<Stack> {
        let widths: Vec<usize> = parts.iter().map(rows).collect();
        let joined = match parts.first() {
            Some(Matrix::Mm(QMatMul::Tensor(first))) if first.device().is_cuda() => {
                let dense: Option<Vec<&Tensor>> = parts
                    .iter()
                    .map(|m| match m {
                        Matrix::Mm(QMatMul::Tensor(w)) if w.dtype() == first.dtype() => Some(w),
                        _ => None,
                    })
                    .collect();
                match dense {
                    Some(ws) => Some(Matrix::dense(Tensor::cat(&ws, 0)?)),
                    None => None,
                }
            }
            Some(Matrix::Packed(first)) if first.words.device().is_cuda() => {
                let packed: Option<Vec<&Packed>> = parts
                    .iter()
                    .map(|m| match m {
                        Matrix::Packed(p)
                            if (p.bits, p.group_size) == (first.bits, first.group_size) =>
                        {
                            Some(p)
                        }
                        _ => None,
                    })
                    .collect();
                match packed {
                    Some(ps) => Some(Matrix::Packed(join_packed(&ps)?)),
                    None => None,
                }
            }
            _ => None,
        };
        Ok(match joined {
            Some(w) => Stack::Joined { w, widths },
            None => Stack::Apart(parts),
        })
    }

    /// Each output `x · Wᵢᵀ`, `[.., widthᵢ]`: column ranges of one product when joined.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Stack::Apart(ms) => ms.iter().map(|m| m.forward(x)).collect(),
            Stack::Joined { w, widths } => {
                let y = w.forward(x)?;
                let last = y.rank() - 1;
                let mut start = 0;
                widths
                    .iter()
                    .map(|&n| {
                        let part = y.narrow(last, start, n)?;
                        start += n;
                        Ok(part)
                    })
                    .collect()
            }
        }
    }

    /// Each output as its own product: as [`Stack::forward`], except that a joined packed
    /// matrix is dequantized and multiplied one part at a time (only one part's dense
    /// values are held at once).
    pub fn forward_each(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Stack::Joined {
                w: Matrix::Packed(_),
                widths,
            } => (0..widths.len())
                .map(|i| match self.packed_part(i) {
                    Some(p) => Matrix::Packed(p).forward(x),
                    None => Err(Error::Model(format!(
                        "part {i} of a packed joined matrix cannot be read"
                    ))),
                })
                .collect(),
            _ => self.forward(x),
        }
    }

    /// The joined matrix, when the outputs are one product.
    pub fn joined(&self) -> Option<&Matrix> {
        match self {
            Stack::Joined { w, .. } => Some(w),
            Stack::Apart(_) => None,
        }
    }

    /// Output `i`'s matrix when it is packed (a view of the joined one's rows when joined).
    pub fn packed_part(&self, i: usize) -> Option<Packed> {
        match self {
            Stack::Apart(ms) => match ms.get(i)? {
                Matrix::Packed(p) => Some(p.clone()),
                Matrix::Mm(_) => None,
            },
            Stack::Joined {
                w: Matrix::Packed(p),
                widths,
            } => {
                let start = widths.iter().take(i).sum();
                p.narrow_rows(start, *widths.get(i)?).ok()
            }
            Stack::Joined { .. } => None,
        }
    }

    /// Bytes held on the device.
    pub fn bytes(&self) -> usize {
        match self {
            Stack::Apart(ms) => ms.iter().map(Matrix::bytes).sum(),
            Stack::Joined { w, .. } => w.bytes(),
        }
    }

    /// The number of outputs.
    pub fn len(&self) -> usize {
        match self {
            Stack::Apart(ms) => ms.len(),
            Stack::Joined { widths, .. } => widths.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A matrix's output width (its rows).
fn rows(m: &Matrix) -> usize {
    match m {
        Matrix::Mm(QMatMul::Tensor(w)) | Matrix::Mm(QMatMul::TensorF16(w)) => w.dims()[0],
        Matrix::Mm(QMatMul::QTensor(q)) => q.shape().dims()[0],
        Matrix::Packed(p) => p.rows(),
    }
}

/// Packed matrices of one kind stacked by rows (a row's codes, scales and biases are its
/// own, so stacking rows is stacking each of the three).
fn join_packed(ps: &[&Packed]) -> Result<Packed> {
    let first = ps
        .first()
        .ok_or_else(|| Error::Model("no matrices to join".into()))?;
    let cat = |f: fn(&Packed) -> &Tensor| -> Result<Tensor> {
        let ts: Vec<&Tensor> = ps.iter().map(|p| f(p)).collect();
        Ok(Tensor::cat(&ts, 0)?)
    };
    Ok(Packed {
        words: cat(|p| &p.words)?,
        scales: cat(|p| &p.scales)?,
        biases: cat(|p| &p.biases)?,
        bits: first.bits,
        group_size: first.group_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn on_the_cpu_matrices_stay_apart_and_give_each_output() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 12.0, &dev)?.reshape((3, 4))?;
        let b = Tensor::ones((2, 4), DType::F32, &dev)?;
        let stack = Stack::new(vec![Matrix::dense(a.clone()), Matrix::dense(b.clone())])?;
        assert!(stack.joined().is_none());
        assert_eq!(stack.len(), 2);
        let x = Tensor::new(&[[1f32, 0.0, 0.0, 1.0]], &dev)?;
        let out = stack.forward(&x)?;
        assert_eq!(out[0].to_vec2::<f32>()?, vec![vec![3.0, 11.0, 19.0]]);
        assert_eq!(out[1].to_vec2::<f32>()?, vec![vec![2.0, 2.0]]);
        Ok(())
    }

    #[test]
    fn joined_outputs_are_the_column_ranges_of_one_product() -> Result<()> {
        // Built by hand, as a GPU would join them: the same values as the parts apart.
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 12.0, &dev)?.reshape((3, 4))?;
        let b = Tensor::ones((2, 4), DType::F32, &dev)?;
        let joined = Stack::Joined {
            w: Matrix::dense(Tensor::cat(&[&a, &b], 0)?),
            widths: vec![3, 2],
        };
        let x = Tensor::new(&[[1f32, 2.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]], &dev)?;
        let got = joined.forward(&x)?;
        let apart = Stack::Apart(vec![Matrix::dense(a), Matrix::dense(b)]).forward(&x)?;
        for (g, w) in got.iter().zip(&apart) {
            assert_eq!(g.to_vec2::<f32>()?, w.to_vec2::<f32>()?);
        }
        Ok(())
    }

    #[test]
    fn packed_matrices_stack_by_rows_and_each_part_reads_back() -> Result<()> {
        use crate::engine::mlx::quantize;
        use half::bf16;
        let cols = 64;
        let vals = |rows: usize, k: usize| -> Vec<bf16> {
            (0..rows * cols)
                .map(|i| bf16::from_f32(((i * k % 29) as f32 - 14.0) / 7.0))
                .collect()
        };
        let qa = quantize(&vals(3, 5), 3, cols, 4, 64)?;
        let qb = quantize(&vals(2, 11), 2, cols, 4, 64)?;
        let (pa, pb) = (
            Packed::new(&qa, &Device::Cpu)?,
            Packed::new(&qb, &Device::Cpu)?,
        );
        let joined = Stack::Joined {
            w: Matrix::Packed(join_packed(&[&pa, &pb])?),
            widths: vec![3, 2],
        };
        assert_eq!(
            joined
                .packed_part(0)
                .map(|p| p.differences_from(&qa))
                .transpose()?,
            Some(0)
        );
        assert_eq!(
            joined
                .packed_part(1)
                .map(|p| p.differences_from(&qb))
                .transpose()?,
            Some(0)
        );
        assert!(joined.packed_part(2).is_none());
        Ok(())
    }
}
