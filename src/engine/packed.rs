//! MLX affine weights kept packed on the device (codes as u32 words, BF16 scales and biases
//! per group) and dequantized to BF16 just before use, to exactly the values of
//! [`super::mlx::Quantized::dequantize`]: a 7B model at q4 holds about a quarter of its BF16
//! bytes. On CUDA the dequantization is one kernel (`kernels/mlx_dequant.cu`); elsewhere it
//! runs on the CPU with the same arithmetic.

use super::mlx::Quantized;
use crate::error::Result;
use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Shape, Tensor};
use half::bf16;

/// A quantized matrix on a device.
#[derive(Clone)]
pub struct Packed {
    /// `[rows, cols·bits/32]` u32.
    pub words: Tensor,
    /// `[rows, cols/group_size]` BF16.
    pub scales: Tensor,
    pub biases: Tensor,
    pub bits: u32,
    pub group_size: usize,
}

impl Packed {
    /// Move a quantized matrix onto `device`.
    pub fn new(q: &Quantized, device: &Device) -> Result<Packed> {
        let groups = q.cols / q.group_size;
        let words_per_row = q.cols * q.bits as usize / 32;
        Ok(Packed {
            words: Tensor::from_slice(&q.words, (q.rows, words_per_row), device)?,
            scales: Tensor::from_slice(&q.scales, (q.rows, groups), device)?,
            biases: Tensor::from_slice(&q.biases, (q.rows, groups), device)?,
            bits: q.bits,
            group_size: q.group_size,
        })
    }

    pub fn rows(&self) -> usize {
        self.words.dims()[0]
    }

    pub fn cols(&self) -> usize {
        self.words.dims()[1] * 32 / self.bits as usize
    }

    /// Bytes held on the device.
    pub fn bytes(&self) -> usize {
        self.words.elem_count() * 4 + (self.scales.elem_count() + self.biases.elem_count()) * 2
    }

    /// The BF16 matrix `[rows, cols]`.
    pub fn dequantize(&self) -> Result<Tensor> {
        let op = Dequant {
            bits: self.bits,
            group_size: self.group_size,
        };
        Ok(self
            .words
            .apply_op3_no_bwd(&self.scales, &self.biases, &op)?)
    }

    /// Elements where this device's dequantization differs from the CPU's (0 on the CPU),
    /// a check that a GPU kernel computes exactly MLX's values.
    pub fn mismatches_against_cpu(&self) -> Result<usize> {
        let cpu = Packed {
            words: self.words.to_device(&Device::Cpu)?,
            scales: self.scales.to_device(&Device::Cpu)?,
            biases: self.biases.to_device(&Device::Cpu)?,
            ..self.clone()
        };
        let here: Vec<u16> = self
            .dequantize()?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<bf16>()?
            .into_iter()
            .map(|v| v.to_bits())
            .collect();
        let there: Vec<u16> = cpu
            .dequantize()?
            .flatten_all()?
            .to_vec1::<bf16>()?
            .into_iter()
            .map(|v| v.to_bits())
            .collect();
        Ok(here.iter().zip(&there).filter(|(a, b)| a != b).count())
    }

    /// Words, scales and biases that differ from `q`, the CPU's quantization of the same
    /// matrix: 0 when this device quantized exactly as MLX does.
    pub fn differences_from(&self, q: &Quantized) -> Result<usize> {
        if (self.rows(), self.cols(), self.bits) != (q.rows, q.cols, q.bits) {
            return Err(crate::Error::Model(format!(
                "a packed {}×{} {}-bit matrix compared with a {}×{} {}-bit one",
                self.rows(),
                self.cols(),
                self.bits,
                q.rows,
                q.cols,
                q.bits
            )));
        }
        let words: Vec<u32> = self.words.flatten_all()?.to_vec1()?;
        let scales: Vec<bf16> = self.scales.flatten_all()?.to_vec1()?;
        let biases: Vec<bf16> = self.biases.flatten_all()?.to_vec1()?;
        let differ = |a: &[bf16], b: &[bf16]| {
            a.iter()
                .zip(b)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count()
        };
        Ok(words.iter().zip(&q.words).filter(|(a, b)| a != b).count()
            + differ(&scales, &q.scales)
            + differ(&biases, &q.biases))
    }

    /// Rows `start..start + len`.
    pub fn narrow_rows(&self, start: usize, len: usize) -> Result<Packed> {
        Ok(Packed {
            words: self.words.narrow(0, start, len)?,
            scales: self.scales.narrow(0, start, len)?,
            biases: self.biases.narrow(0, start, len)?,
            ..self.clone()
        })
    }

    /// The rows named by `ids` (u32), as an embedding lookup takes them.
    pub fn select_rows(&self, ids: &Tensor) -> Result<Packed> {
        Ok(Packed {
            words: self.words.index_select(ids, 0)?.contiguous()?,
            scales: self.scales.index_select(ids, 0)?.contiguous()?,
            biases: self.biases.index_select(ids, 0)?.contiguous()?,
            ..self.clone()
        })
    }
}

struct Dequant {
    bits: u32,
    group_size: usize,
}

fn offsets(l: &Layout, what: &str) -> candle_core::Result<(usize, usize)> {
    l.contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("packed {what} must be contiguous")))
}

impl Dequant {
    /// Rows and columns of the output, checked against the three inputs' shapes.
    fn shape(&self, words: &Layout, scales: &Layout) -> candle_core::Result<(usize, usize)> {
        let (rows, wpr) = words.shape().dims2()?;
        let cols = wpr * 32 / self.bits as usize;
        if scales.shape().dims2()? != (rows, cols / self.group_size) {
            return Err(candle_core::Error::Msg(format!(
                "packed weight of {rows}×{cols} with scales of shape {:?}",
                scales.shape()
            )));
        }
        Ok((rows, cols))
    }
}

impl CustomOp3 for Dequant {
    fn name(&self) -> &'static str {
        "mlx-dequantize"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, cols) = self.shape(l1, l2)?;
        let (CpuStorage::U32(w), CpuStorage::BF16(s), CpuStorage::BF16(b)) = (s1, s2, s3) else {
            return Err(candle_core::Error::Msg(
                "packed weights are u32 words with bf16 scales and biases".into(),
            ));
        };
        let (w0, w1) = offsets(l1, "words")?;
        let (s0, s1e) = offsets(l2, "scales")?;
        let (b0, b1) = offsets(l3, "biases")?;
        let q = Quantized {
            bits: self.bits,
            group_size: self.group_size,
            rows,
            cols,
            words: w[w0..w1].to_vec(),
            scales: s[s0..s1e].to_vec(),
            biases: b[b0..b1].to_vec(),
        };
        let out: Vec<bf16> = q.dequantize();
        Ok((CpuStorage::BF16(out), Shape::from((rows, cols))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::WrapErr;
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        let (rows, cols) = self.shape(l1, l2)?;
        let dev = s1.device();
        let (w0, _) = offsets(l1, "words")?;
        let (sc0, _) = offsets(l2, "scales")?;
        let (b0, _) = offsets(l3, "biases")?;
        let words = s1.as_cuda_slice::<u32>()?.slice(w0..);
        let scales = s2.as_cuda_slice::<bf16>()?.slice(sc0..);
        let biases = s3.as_cuda_slice::<bf16>()?.slice(b0..);
        let n = rows * cols;
        let func = dev.get_or_load_custom_func("mlx_dequant_bf16", "stereoscope_mlx", PTX)?;
        // SAFETY: every element is written by the kernel below.
        let out = unsafe { dev.alloc::<bf16>(n)? };
        let (r, c, bits, g) = (rows as u32, cols as u32, self.bits, self.group_size as u32);
        let mut builder = func.builder();
        builder.arg(&words);
        builder.arg(&scales);
        builder.arg(&biases);
        builder.arg(&out);
        builder.arg(&r);
        builder.arg(&c);
        builder.arg(&bits);
        builder.arg(&g);
        // SAFETY: the kernel reads `rows` rows of words, scales and biases and writes `n`
        // (eight per thread, striding over the grid).
        unsafe { builder.launch(grid(n / 8)) }.w()?;
        Ok((
            candle_core::CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from((rows, cols)),
        ))
    }
}

#[cfg(feature = "cuda")]
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/mlx_dequant.ptx"));

/// MLX's affine quantization of `w` (`[rows, cols]` BF16, on a CUDA device) on that device:
/// the codes, scales and biases of [`super::mlx::quantize`], bit for bit.
#[cfg(feature = "cuda")]
pub fn quantize_on_device(w: &Tensor, bits: u32, group_size: usize) -> Result<Packed> {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::WrapErr;
    use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
    use candle_core::{CudaStorage, Storage, op::BackpropOp};
    let (rows, cols) = w.dims2()?;
    super::mlx::check(bits, group_size, cols)?;
    let w = w.to_dtype(DType::BF16)?.contiguous()?;
    let (storage, layout) = w.storage_and_layout();
    let Storage::Cuda(s) = &*storage else {
        return Err(crate::Error::Model(
            "quantizing on the device needs a CUDA tensor".into(),
        ));
    };
    let (o, _) = offsets(layout, "weights")?;
    let dev = s.device().clone();
    let input = s.as_cuda_slice::<bf16>()?.slice(o..);
    let (n_groups, words_per_row) = (rows * cols / group_size, cols * bits as usize / 32);
    // SAFETY: the kernel writes every word, scale and bias of every group.
    let (words, scales, biases) = unsafe {
        (
            dev.alloc::<u32>(rows * words_per_row)?,
            dev.alloc::<bf16>(n_groups)?,
            dev.alloc::<bf16>(n_groups)?,
        )
    };
    let func = dev.get_or_load_custom_func("mlx_quantize_bf16", "stereoscope_mlx", PTX)?;
    let (n, g) = (n_groups, group_size as u32);
    let mut builder = func.builder();
    builder.arg(&input);
    builder.arg(&words);
    builder.arg(&scales);
    builder.arg(&biases);
    builder.arg(&n);
    builder.arg(&bits);
    builder.arg(&g);
    // SAFETY: `input` holds `n_groups · group_size` values; each group writes its own
    // `group_size · bits / 32` words, one scale and one bias.
    unsafe { builder.launch(grid(n_groups)) }.w()?;
    drop(storage);
    let tensor = |s: CudaStorage, shape: (usize, usize)| {
        Tensor::from_storage(Storage::Cuda(s), shape, BackpropOp::none(), false)
    };
    let groups = cols / group_size;
    Ok(Packed {
        words: tensor(
            CudaStorage::wrap_cuda_slice(words, dev.clone()),
            (rows, words_per_row),
        ),
        scales: tensor(
            CudaStorage::wrap_cuda_slice(scales, dev.clone()),
            (rows, groups),
        ),
        biases: tensor(CudaStorage::wrap_cuda_slice(biases, dev), (rows, groups)),
        bits,
        group_size,
    })
}

/// A grid of 256-thread blocks over `n` items, capped (the kernels stride over the rest).
#[cfg(feature = "cuda")]
fn grid(n: usize) -> candle_core::cuda_backend::cudarc::driver::LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 65_535 * 8) as u32;
    candle_core::cuda_backend::cudarc::driver::LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The dtype a packed matrix dequantizes to.
pub const DTYPE: DType = DType::BF16;

#[cfg(test)]
mod tests {
    use super::*;

    fn values(p: &Packed) -> Vec<bf16> {
        p.dequantize()
            .expect("dequantize")
            .flatten_all()
            .expect("flat")
            .to_vec1()
            .expect("vec")
    }

    #[test]
    fn packed_rows_dequantize_to_the_quantizers_values() {
        let (rows, cols) = (5, 128);
        let vals: Vec<bf16> = (0..rows * cols)
            .map(|i| bf16::from_f32(((i * 37 % 101) as f32 - 50.0) / 17.0))
            .collect();
        for bits in [3, 4, 6, 8] {
            let q = crate::engine::mlx::quantize(&vals, rows, cols, bits, 64).expect("quantize");
            let p = Packed::new(&q, &Device::Cpu).expect("packed");
            assert_eq!((p.rows(), p.cols()), (rows, cols));
            let got = values(&p);
            assert_eq!(got, q.dequantize(), "{bits} bits");
            let ids = Tensor::new(&[4u32, 1], &Device::Cpu).expect("ids");
            let sel = values(&p.select_rows(&ids).expect("select"));
            let want = q.dequantize();
            assert_eq!(&sel[..cols], &want[4 * cols..5 * cols]);
            assert_eq!(&sel[cols..], &want[cols..2 * cols]);
            let tail = values(&p.narrow_rows(3, 2).expect("narrow"));
            assert_eq!(&tail[..], &want[3 * cols..]);
        }
    }
}
