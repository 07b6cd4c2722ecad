//! The elementwise steps of a block, fused where a kernel exists: on CUDA with BF16
//! activations each is one pass of `kernels/fused.cu` (silu · up, additions, scaled and
//! masked softmax); everywhere else, and for any layout the kernels do not take, the same
//! step is candle's operations, exactly as the CPU records were made.

use super::model::RopeStyle;
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

/// A projection's output `y` `[b, len, heads·d]` as attention reads it, `[b, heads, len, d]`
/// contiguous: `bias` added, and for queries and keys the rotary embedding applied (`cos`
/// and `sin` `[len, d/2]`, or `[b, len, d/2]` when rows start at different positions).
pub fn heads(
    y: &Tensor,
    bias: Option<&Tensor>,
    rope: Option<(&Tensor, &Tensor, RopeStyle)>,
    heads: usize,
    d: usize,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(out) = cuda::heads(y, bias, rope, heads, d)? {
        return Ok(out);
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

/// How far each fused kernel's output lies from candle's operations on the same inputs
/// (largest absolute difference), on `device`: the check a benchmark prints before trusting
/// the kernels. Empty where no kernel runs (CPU, Metal).
pub fn agreement(device: &candle_core::Device) -> Result<Vec<(&'static str, f32)>> {
    if !device.is_cuda() {
        return Ok(Vec::new());
    }
    let rand = |shape: &[usize], scale: f64| -> Result<Tensor> {
        Ok((Tensor::randn(0f32, 1f32, shape, device)? * scale)?.to_dtype(DType::BF16)?)
    };
    let diff = |a: &Tensor, b: &Tensor| -> Result<f32> {
        Ok((a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?)
    };
    let (gate, up) = (rand(&[3, 37, 96], 3.0)?, rand(&[3, 37, 96], 1.0)?);
    let bias = rand(&[96], 1.0)?;
    let (b, groups, rep, len, keys) = (3, 2, 4, 13, 29);
    let att = rand(&[b, groups, rep * len, keys], 8.0)?;
    let mask = Tensor::from_vec(
        (0..b * len * keys)
            .map(|i| {
                if (i % keys) > (i / keys) % len + keys - len {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect::<Vec<f32>>(),
        (b, 1, len, keys),
        device,
    )?
    .to_dtype(DType::BF16)?;
    let scale = 0.125;
    let plain_softmax = |m: Option<&Tensor>| -> Result<Tensor> {
        let mut a = (&att * scale)?;
        if let Some(m) = m {
            a = a
                .reshape((b, groups, rep, len, keys))?
                .broadcast_add(&m.unsqueeze(2)?)?
                .reshape((b, groups, rep * len, keys))?;
        }
        Ok(candle_nn::ops::softmax_last_dim(&a)?)
    };
    let (hb, hlen, nh, hd) = (2, 11, 3, 16);
    let y = rand(&[hb, hlen, nh * hd], 2.0)?;
    let hbias = rand(&[nh * hd], 1.0)?;
    let angles = rand(&[hb, hlen, hd / 2], 3.0)?.to_dtype(DType::F32)?;
    let (cos, sin) = (
        angles.cos()?.to_dtype(DType::BF16)?,
        angles.sin()?.to_dtype(DType::BF16)?,
    );
    let plain_heads = |rope: Option<RopeStyle>, cos: &Tensor, sin: &Tensor| -> Result<Tensor> {
        let t = y
            .broadcast_add(&hbias)?
            .reshape((hb, hlen, nh, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        Ok(match rope {
            None => t,
            Some(RopeStyle::Interleaved) => candle_nn::rotary_emb::rope_i(&t, cos, sin)?,
            Some(RopeStyle::Half) => candle_nn::rotary_emb::rope(&t, cos, sin)?,
        })
    };
    let (cos1, sin1) = (cos.get(0)?, sin.get(0)?);
    let mut out = vec![
        (
            "heads",
            diff(
                &heads(&y, Some(&hbias), None, nh, hd)?,
                &plain_heads(None, &cos, &sin)?,
            )?,
        ),
        (
            "heads + rope (halves, rows apart)",
            diff(
                &heads(
                    &y,
                    Some(&hbias),
                    Some((&cos, &sin, RopeStyle::Half)),
                    nh,
                    hd,
                )?,
                &plain_heads(Some(RopeStyle::Half), &cos, &sin)?,
            )?,
        ),
        (
            "heads + rope (pairs, one start)",
            diff(
                &heads(
                    &y,
                    Some(&hbias),
                    Some((&cos1, &sin1, RopeStyle::Interleaved)),
                    nh,
                    hd,
                )?,
                &plain_heads(Some(RopeStyle::Interleaved), &cos1, &sin1)?,
            )?,
        ),
    ];
    out.extend([
        (
            "silu·up",
            diff(
                &silu_mul(&gate, &up)?,
                &(candle_nn::ops::silu(&gate)? * &up)?,
            )?,
        ),
        ("add", diff(&add(&gate, &up)?, &(&gate + &up)?)?),
        (
            "add bias",
            diff(&add_bias(&gate, &bias)?, &gate.broadcast_add(&bias)?)?,
        ),
        (
            "masked softmax",
            diff(
                &masked_softmax(&att, Some(&mask), scale, rep, len)?,
                &plain_softmax(Some(&mask))?,
            )?,
        ),
        (
            "softmax",
            diff(
                &masked_softmax(&att, None, scale, rep, len)?,
                &plain_softmax(None)?,
            )?,
        ),
    ]);
    Ok(out)
}

#[cfg(feature = "cuda")]
mod cuda {
    use crate::error::Result;
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::WrapErr;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::{CpuStorage, CudaStorage, CustomOp2, DType, Layout, Shape, Tensor};
    use half::bf16;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
    const MODULE: &str = "stereoscope_fused";

    /// The start of a tensor the kernels can read: contiguous, BF16 on CUDA, starting on a
    /// 16-byte boundary (their vector loads).
    fn start(t: &Tensor) -> Option<usize> {
        if t.dtype() != DType::BF16 || !t.device().is_cuda() {
            return None;
        }
        let (o, _) = t.layout().contiguous_offsets()?;
        (o % 8 == 0).then_some(o)
    }

    fn gpu_only(name: &str) -> candle_core::Error {
        candle_core::Error::Msg(format!("{name} runs on CUDA only"))
    }

    /// A grid of 256-thread blocks over `n` items, capped (the kernels stride over the rest).
    fn grid(n: usize) -> LaunchConfig {
        let blocks = n.div_ceil(256).clamp(1, 65_535 * 8) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    #[derive(Clone, Copy)]
    pub enum Binary {
        SiluMul,
        Add,
        AddRows,
    }

    impl CustomOp2 for Binary {
        fn name(&self) -> &'static str {
            match self {
                Binary::SiluMul => "fused-silu-mul",
                Binary::Add => "fused-add",
                Binary::AddRows => "fused-add-rows",
            }
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(gpu_only(self.name()))
        }

        fn cuda_fwd(
            &self,
            s1: &CudaStorage,
            l1: &Layout,
            s2: &CudaStorage,
            l2: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = s1.device();
            let (o1, _) = l1.contiguous_offsets().ok_or_else(|| gpu_only("strided"))?;
            let (o2, _) = l2.contiguous_offsets().ok_or_else(|| gpu_only("strided"))?;
            let a = s1.as_cuda_slice::<bf16>()?.slice(o1..);
            let b = s2.as_cuda_slice::<bf16>()?.slice(o2..);
            let n = l1.shape().elem_count();
            let (kernel, cols) = match self {
                Binary::SiluMul => ("silu_mul_bf16", None),
                Binary::Add => ("add_bf16", Some(n)),
                Binary::AddRows => ("add_bf16", Some(l2.shape().elem_count())),
            };
            let func = dev.get_or_load_custom_func(kernel, MODULE, PTX)?;
            // SAFETY: the kernel writes every one of the `n` elements.
            let out = unsafe { dev.alloc::<bf16>(n)? };
            let mut builder = func.builder();
            builder.arg(&a);
            builder.arg(&b);
            builder.arg(&out);
            builder.arg(&n);
            if let Some(cols) = &cols {
                builder.arg(cols);
            }
            // SAFETY: `a` holds `n` elements, `b` `n` (or `cols` for a bias), both checked
            // by the caller; the kernel strides over the grid.
            unsafe { builder.launch(grid(n.div_ceil(8))) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev.clone()),
                l1.shape().clone(),
            ))
        }
    }

    /// The fused kernel's result when both inputs suit it, else `None`.
    pub fn binary(a: &Tensor, b: &Tensor, op: Binary) -> Result<Option<Tensor>> {
        if start(a).is_none() || start(b).is_none() {
            return Ok(None);
        }
        let fits = match op {
            Binary::SiluMul | Binary::Add => a.dims() == b.dims(),
            Binary::AddRows => {
                b.rank() == 1 && a.dims().last() == Some(&b.dims()[0]) && b.dims()[0] > 0
            }
        };
        if !fits {
            return Ok(None);
        }
        Ok(Some(a.apply_op2_no_bwd(b, &op)?))
    }

    struct Softmax {
        scale: f32,
        len: usize,
        masked: bool,
    }

    impl CustomOp2 for Softmax {
        fn name(&self) -> &'static str {
            "fused-masked-softmax"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(gpu_only(self.name()))
        }

        fn cuda_fwd(
            &self,
            s1: &CudaStorage,
            l1: &Layout,
            s2: &CudaStorage,
            l2: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = s1.device();
            let (b, groups, rows, keys) = l1.shape().dims4()?;
            let (o1, _) = l1.contiguous_offsets().ok_or_else(|| gpu_only("strided"))?;
            let (o2, _) = l2.contiguous_offsets().ok_or_else(|| gpu_only("strided"))?;
            let att = s1.as_cuda_slice::<bf16>()?.slice(o1..);
            let mask = s2.as_cuda_slice::<bf16>()?.slice(o2..);
            let mask_batched = u32::from(self.masked && l2.shape().dims()[0] == b && b > 1);
            let n_rows = (b * groups * rows) as u32;
            let func = dev.get_or_load_custom_func("masked_softmax_bf16", MODULE, PTX)?;
            // SAFETY: one warp writes each row in full.
            let out = unsafe { dev.alloc::<bf16>(l1.shape().elem_count())? };
            let (keys, per_batch, len) = (keys as u32, (groups * rows) as u32, self.len as u32);
            let masked = u32::from(self.masked);
            let mut builder = func.builder();
            builder.arg(&att);
            builder.arg(&mask);
            builder.arg(&out);
            builder.arg(&n_rows);
            builder.arg(&keys);
            builder.arg(&per_batch);
            builder.arg(&len);
            builder.arg(&masked);
            builder.arg(&mask_batched);
            builder.arg(&self.scale);
            let cfg = LaunchConfig {
                grid_dim: (n_rows.div_ceil(8), 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: rows of `keys` elements in `att` and `out`; mask rows indexed within
            // its `[1 or b, len, keys]` shape, checked by the caller.
            unsafe { builder.launch(cfg) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev.clone()),
                l1.shape().clone(),
            ))
        }
    }

    struct Heads {
        heads: usize,
        d: usize,
        style: u32,
    }

    impl Heads {
        /// `[b, len, heads·d]` in, `[b, heads, len, d]` out; the three small inputs (bias,
        /// cos, sin) are read through their own layouts' offsets.
        #[allow(clippy::too_many_arguments)]
        fn launch(
            &self,
            y: (&CudaStorage, &Layout),
            bias: Option<(&CudaStorage, &Layout)>,
            cs: Option<((&CudaStorage, &Layout), (&CudaStorage, &Layout))>,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let (s1, l1) = y;
            let dev = s1.device();
            let (b, len, _) = l1.shape().dims3()?;
            let input = slice(s1, l1)?;
            let bias_s = match bias {
                Some((s, l)) => slice(s, l)?,
                None => slice(s1, l1)?,
            };
            let (cos, sin, cs_batched) = match cs {
                Some(((sc, lc), (ss, ls))) => (
                    slice(sc, lc)?,
                    slice(ss, ls)?,
                    u32::from(lc.shape().rank() == 3),
                ),
                None => (slice(s1, l1)?, slice(s1, l1)?, 0),
            };
            let func = dev.get_or_load_custom_func("heads_rope_bf16", MODULE, PTX)?;
            let n = l1.shape().elem_count();
            // SAFETY: every pair of every head is written once.
            let out = unsafe { dev.alloc::<bf16>(n)? };
            let (b32, len32, h32, d32) = (b as u32, len as u32, self.heads as u32, self.d as u32);
            let has_bias = u32::from(bias.is_some());
            let mut builder = func.builder();
            builder.arg(&input);
            builder.arg(&bias_s);
            builder.arg(&cos);
            builder.arg(&sin);
            builder.arg(&out);
            builder.arg(&b32);
            builder.arg(&len32);
            builder.arg(&h32);
            builder.arg(&d32);
            builder.arg(&has_bias);
            builder.arg(&self.style);
            builder.arg(&cs_batched);
            // SAFETY: shapes checked by `heads` below; the kernel strides over all pairs.
            unsafe { builder.launch(grid(n / 2)) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev.clone()),
                Shape::from((b, self.heads, len, self.d)),
            ))
        }
    }

    impl candle_core::CustomOp1 for Heads {
        fn name(&self) -> &'static str {
            "fused-heads"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(gpu_only("fused-heads"))
        }

        fn cuda_fwd(
            &self,
            s: &CudaStorage,
            l: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            self.launch((s, l), None, None)
        }
    }

    impl CustomOp2 for Heads {
        fn name(&self) -> &'static str {
            "fused-heads-bias"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(gpu_only("fused-heads-bias"))
        }

        fn cuda_fwd(
            &self,
            s1: &CudaStorage,
            l1: &Layout,
            s2: &CudaStorage,
            l2: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            self.launch((s1, l1), Some((s2, l2)), None)
        }
    }

    /// With rotary embedding: inputs (y, cos, sin), and the bias in the op when present.
    struct HeadsRope {
        op: Heads,
        bias: Option<Tensor>,
    }

    impl candle_core::CustomOp3 for HeadsRope {
        fn name(&self) -> &'static str {
            "fused-heads-rope"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(gpu_only(self.name()))
        }

        fn cuda_fwd(
            &self,
            s1: &CudaStorage,
            l1: &Layout,
            s2: &CudaStorage,
            l2: &Layout,
            s3: &CudaStorage,
            l3: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let guard = self.bias.as_ref().map(|t| t.storage_and_layout());
            let bias = match &guard {
                Some((storage, layout)) => match &**storage {
                    candle_core::Storage::Cuda(s) => Some((s, *layout)),
                    _ => return Err(gpu_only("a bias off the GPU")),
                },
                None => None,
            };
            self.op.launch((s1, l1), bias, Some(((s2, l2), (s3, l3))))
        }
    }

    /// A contiguous BF16 storage from its layout's offset.
    fn slice<'a>(
        s: &'a CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, bf16>> {
        let (o, _) = l.contiguous_offsets().ok_or_else(|| gpu_only("strided"))?;
        Ok(s.as_cuda_slice::<bf16>()?.slice(o..))
    }

    /// The fused projection-to-heads when the inputs suit it, else `None`.
    pub fn heads(
        y: &Tensor,
        bias: Option<&Tensor>,
        rope: Option<(&Tensor, &Tensor, super::RopeStyle)>,
        heads: usize,
        d: usize,
    ) -> Result<Option<Tensor>> {
        let bf16_cuda =
            |t: &Tensor| t.dtype() == DType::BF16 && t.device().is_cuda() && t.is_contiguous();
        let Ok((b, len, width)) = y.dims3() else {
            return Ok(None);
        };
        if !bf16_cuda(y) || width != heads * d || d % 2 != 0 {
            return Ok(None);
        }
        if bias.is_some_and(|t| !bf16_cuda(t) || t.dims() != [heads * d]) {
            return Ok(None);
        }
        let style = match rope {
            None => 0,
            Some((_, _, super::RopeStyle::Half)) => 1,
            Some((_, _, super::RopeStyle::Interleaved)) => 2,
        };
        let op = Heads { heads, d, style };
        let Some((cos, sin, _)) = rope else {
            return Ok(Some(match bias {
                Some(bias) => y.apply_op2_no_bwd(bias, &op)?,
                None => y.apply_op1_no_bwd(&op)?,
            }));
        };
        let table = |t: &Tensor| match t.dims() {
            [l, h] => *l == len && *h == d / 2,
            [r, l, h] => *r == b && *l == len && *h == d / 2,
            _ => false,
        };
        if !bf16_cuda(cos) || !bf16_cuda(sin) || !table(cos) || cos.dims() != sin.dims() {
            return Ok(None);
        }
        let op = HeadsRope {
            op,
            bias: bias.cloned(),
        };
        Ok(Some(y.apply_op3_no_bwd(cos, sin, &op)?))
    }

    /// The fused softmax when `att` and `mask` suit it, else `None`.
    pub fn masked_softmax(
        att: &Tensor,
        mask: Option<&Tensor>,
        scale: f64,
        len: usize,
    ) -> Result<Option<Tensor>> {
        if start(att).is_none() || mask.is_some_and(|m| start(m).is_none()) {
            return Ok(None);
        }
        let (b, _, rows, keys) = att.dims4()?;
        if len == 0 || rows % len != 0 {
            return Ok(None);
        }
        if let Some(m) = mask {
            let (mb, one, mlen, mkeys) = m.dims4()?;
            if (mb != 1 && mb != b) || one != 1 || mlen != len || mkeys != keys {
                return Ok(None);
            }
        }
        let op = Softmax {
            scale: scale as f32,
            len,
            masked: mask.is_some(),
        };
        // Without a mask the kernel never reads its second input.
        let y = att.apply_op2_no_bwd(mask.unwrap_or(att), &op)?;
        Ok(Some(y))
    }
}
