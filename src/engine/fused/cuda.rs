//! The fused kernels' launches on CUDA (`kernels/fused.cu`): each takes contiguous BF16
//! inputs and returns `None` to its caller in `super` for anything else.

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

/// One block of `threads` per (row, position) of a `[b, .., len, ..]` layout, `blocks` of
/// them.
fn per_position(blocks: usize, threads: u32) -> candle_core::Result<LaunchConfig> {
    let blocks = u32::try_from(blocks)
        .ok()
        .filter(|&n| n > 0 && n < i32::MAX as u32)
        .ok_or_else(|| candle_core::Error::Msg(format!("a grid of {blocks} positions")))?;
    Ok(LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    })
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
        let a = view::<bf16>(s1, l1)?;
        let b = view::<bf16>(s2, l2)?;
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

/// silu(gate) · up for the gate and up side by side in each row of the input (`[.., 2·n]`).
struct SiluMulJoined;

impl candle_core::CustomOp1 for SiluMulJoined {
    fn name(&self) -> &'static str {
        "fused-silu-mul-joined"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(gpu_only(self.name()))
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = s1.device();
        let input = view::<bf16>(s1, l1)?;
        let dims = l1.dims();
        let cols = dims.last().copied().unwrap_or(0) / 2;
        let rows = l1.shape().elem_count() / (2 * cols).max(1);
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = cols;
        }
        let func = dev.get_or_load_custom_func("silu_mul_joined_bf16", MODULE, PTX)?;
        // SAFETY: the kernel writes every one of the `rows · cols` elements.
        let out = unsafe { dev.alloc::<bf16>(rows * cols)? };
        let mut builder = func.builder();
        builder.arg(&input);
        builder.arg(&out);
        builder.arg(&rows);
        builder.arg(&cols);
        // SAFETY: the input holds `rows` rows of `2 · cols`; the kernel strides over the grid.
        unsafe { builder.launch(grid((rows * cols).div_ceil(8))) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from(out_dims),
        ))
    }
}

/// The fused silu · up over joined gate and up when the input suits it, else `None`.
pub fn silu_mul_joined(y: &Tensor) -> Result<Option<Tensor>> {
    let even = y.dims().last().is_some_and(|&w| w > 0 && w % 2 == 0);
    if start(y).is_none() || !even {
        return Ok(None);
    }
    Ok(Some(y.apply_op1_no_bwd(&SiluMulJoined)?))
}

/// `x · wᵀ` for BF16 `x` `[n, k]` and `w` `[v, k]` with F32 accumulation and an F32
/// result `[n, v]` (cuBLAS GemmEx): the products of BF16 values are exact in F32, so no
/// F32 copy of `w` is needed.
struct MatmulF32Out;

impl CustomOp2 for MatmulF32Out {
    fn name(&self) -> &'static str {
        "matmul-bf16-f32-out"
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
        use candle_core::cuda_backend::cudarc::cublas::{result::gemm_ex, sys};
        use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut};
        use std::ffi::{c_int, c_void};
        let (n, k) = l1.shape().dims2()?;
        let (v, k2) = l2.shape().dims2()?;
        if k != k2 {
            return Err(candle_core::Error::Msg(format!(
                "a product of [{n}, {k}] and [{v}, {k2}]ᵀ"
            )));
        }
        let dim = |x: usize| {
            c_int::try_from(x).map_err(|_| candle_core::Error::Msg(format!("{x} is too large")))
        };
        let (vi, ni, ki) = (dim(v)?, dim(n)?, dim(k)?);
        let dev = s1.device();
        let x = view::<bf16>(s1, l1)?;
        let w = view::<bf16>(s2, l2)?;
        // SAFETY: the product below writes all `n · v` values.
        let mut out = unsafe { dev.alloc::<f32>(n * v)? };
        let stream = dev.cuda_stream();
        let blas = dev.cublas_handle();
        let (alpha, beta) = (1f32, 0f32);
        {
            let (xp, _gx) = x.device_ptr(&stream);
            let (wp, _gw) = w.device_ptr(&stream);
            let (op, _go) = out.device_ptr_mut(&stream);
            // Column-major: outᵀ [v, n] = w [k, v]ᵀ · xᵀ [k, n], every leading dimension k or v.
            // SAFETY: the pointers hold `n·k`, `v·k` and `n·v` elements of the stated types on
            // the handle's stream; alpha and beta are host values (the default pointer mode).
            unsafe {
                gemm_ex(
                    *blas.handle(),
                    sys::cublasOperation_t::CUBLAS_OP_T,
                    sys::cublasOperation_t::CUBLAS_OP_N,
                    vi,
                    ni,
                    ki,
                    (&alpha as *const f32).cast::<c_void>(),
                    wp as *const c_void,
                    sys::cudaDataType::CUDA_R_16BF,
                    ki,
                    xp as *const c_void,
                    sys::cudaDataType::CUDA_R_16BF,
                    ki,
                    (&beta as *const f32).cast::<c_void>(),
                    op as *mut c_void,
                    sys::cudaDataType::CUDA_R_32F,
                    vi,
                    sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
                )
            }
            .map_err(|e| candle_core::Error::Msg(format!("cuBLAS GemmEx: {e:?}")))?;
        }
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from((n, v)),
        ))
    }
}

/// `x · wᵀ` in F32 from BF16 `x` and `w` when both suit the product, else `None`.
pub fn matmul_f32_out(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    if start(x).is_none() || start(w).is_none() || x.rank() != 2 || w.rank() != 2 {
        return Ok(None);
    }
    Ok(Some(x.apply_op2_no_bwd(w, &MatmulF32Out)?))
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
        let att = view::<bf16>(s1, l1)?;
        let mask = view::<bf16>(s2, l2)?;
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

/// The projection-to-heads kernel; `y` is the op's input, the rest ride along.
struct Heads {
    heads: usize,
    d: usize,
    b: usize,
    len: usize,
    style: u32,
    bias: Option<Tensor>,
    cos_sin: Option<(Tensor, Tensor)>,
    table: Option<Tensor>,
}

/// A contiguous storage of `T` from its layout's offset.
fn view<'a, T: candle_core::cuda_backend::CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
) -> candle_core::Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>> {
    let (o, _) = l.contiguous_offsets().ok_or_else(|| gpu_only("strided"))?;
    Ok(s.as_cuda_slice::<T>()?.slice(o..))
}

/// The heads kernel's input from its layout's offset, and the elements from one token's row
/// to the next: rows contiguous within, any stride between (a column range of a wider
/// product), or the whole input contiguous.
fn token_rows<'a>(
    s: &'a CudaStorage,
    l: &Layout,
) -> candle_core::Result<(
    candle_core::cuda_backend::cudarc::driver::CudaView<'a, bf16>,
    usize,
)> {
    let width = l.dims().last().copied().unwrap_or(0);
    if l.is_contiguous() {
        return Ok((view::<bf16>(s, l)?, width));
    }
    match (l.dims(), l.stride()) {
        ([_, _], [row, 1]) if *row >= width => {
            Ok((s.as_cuda_slice::<bf16>()?.slice(l.start_offset()..), *row))
        }
        _ => Err(gpu_only("a strided input")),
    }
}

/// A tensor's storage, held for reading, and its layout.
fn held(
    t: &Tensor,
) -> candle_core::Result<(
    impl std::ops::Deref<Target = candle_core::Storage> + '_,
    &Layout,
)> {
    let (g, l) = t.storage_and_layout();
    match &*g {
        candle_core::Storage::Cuda(_) => Ok((g, l)),
        _ => Err(gpu_only("an input off the GPU")),
    }
}

fn cuda_of(g: &candle_core::Storage) -> candle_core::Result<&CudaStorage> {
    match g {
        candle_core::Storage::Cuda(s) => Ok(s),
        _ => Err(gpu_only("an input off the GPU")),
    }
}

impl candle_core::CustomOp1 for Heads {
    fn name(&self) -> &'static str {
        "fused-heads"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(gpu_only("fused-heads"))
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = s1.device();
        let (input, in_stride) = token_rows(s1, l1)?;
        let bias = self.bias.as_ref().map(held).transpose()?;
        let cos = self.cos_sin.as_ref().map(|(c, _)| held(c)).transpose()?;
        let sin = self.cos_sin.as_ref().map(|(_, s)| held(s)).transpose()?;
        let table = self.table.as_ref().map(held).transpose()?;
        // Absent inputs are never read; the input's storage stands in for them.
        let stand_in = || s1.as_cuda_slice::<bf16>().map(|s| s.slice(0..));
        let bias_v = match &bias {
            Some((g, l)) => view::<bf16>(cuda_of(g)?, l)?,
            None => stand_in()?,
        };
        let (cos_v, sin_v, cs_batched) = match (&cos, &sin) {
            (Some((gc, lc)), Some((gs, ls))) => (
                view::<bf16>(cuda_of(gc)?, lc)?,
                view::<bf16>(cuda_of(gs)?, ls)?,
                u32::from(lc.shape().rank() == 3),
            ),
            _ => (stand_in()?, stand_in()?, 0),
        };
        let dummy = dev.alloc_zeros::<u32>(1)?;
        let table_v = match &table {
            Some((g, l)) => view::<u32>(cuda_of(g)?, l)?,
            None => dummy.slice(0..),
        };
        let func = dev.get_or_load_custom_func("heads_rope_bf16", MODULE, PTX)?;
        let n = self.b * self.heads * self.len * self.d;
        // SAFETY: every pair of every head is written once.
        let out = unsafe { dev.alloc::<bf16>(n)? };
        let dims = [self.b, self.len, self.heads, self.d, in_stride].map(|x| x as u32);
        let flags = [
            u32::from(bias.is_some()),
            self.style,
            cs_batched,
            u32::from(table.is_some()),
        ];
        let mut builder = func.builder();
        builder.arg(&input);
        builder.arg(&bias_v);
        builder.arg(&cos_v);
        builder.arg(&sin_v);
        builder.arg(&out);
        builder.arg(&table_v);
        for x in &dims {
            builder.arg(x);
        }
        for x in &flags {
            builder.arg(x);
        }
        // SAFETY: shapes checked by `heads` below; one block per (row, position) writes
        // every pair of its heads.
        unsafe { builder.launch(per_position(self.b * self.len, 256)?) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from((self.b, self.heads, self.len, self.d)),
        ))
    }
}

/// The fused projection-to-heads when the inputs suit it, else `None`.
pub fn heads(
    y: &Tensor,
    bias: Option<&Tensor>,
    rope: Option<(&Tensor, &Tensor, super::RopeStyle)>,
    (heads, d): (usize, usize),
    rows: Option<super::Rows>,
) -> Result<Option<Tensor>> {
    let bf16_cuda =
        |t: &Tensor| t.dtype() == DType::BF16 && t.device().is_cuda() && t.is_contiguous();
    let (b, len) = match (rows, y.dims()) {
        (Some(r), [_, w]) if *w == heads * d => (r.b, r.len),
        (None, [b, len, w]) if *w == heads * d => (*b, *len),
        _ => return Ok(None),
    };
    // Packed rows may be a column range of a wider product (rows of stride ≥ their width).
    let rows_readable = y.is_contiguous() || (y.rank() == 2 && y.stride()[1] == 1);
    let on_gpu = y.dtype() == DType::BF16 && y.device().is_cuda();
    if !on_gpu || !rows_readable || d % 2 != 0 {
        return Ok(None);
    }
    if bias.is_some_and(|t| !bf16_cuda(t) || t.dims() != [heads * d]) {
        return Ok(None);
    }
    let table = |t: &Tensor| match t.dims() {
        [l, h] => *l == len && *h == d / 2,
        [r, l, h] => *r == b && *l == len && *h == d / 2,
        _ => false,
    };
    if let Some((cos, sin, _)) = rope
        && (!bf16_cuda(cos) || !bf16_cuda(sin) || !table(cos) || cos.dims() != sin.dims())
    {
        return Ok(None);
    }
    let op = Heads {
        heads,
        d,
        b,
        len,
        style: match rope {
            None => 0,
            Some((_, _, super::RopeStyle::Half)) => 1,
            Some((_, _, super::RopeStyle::Interleaved)) => 2,
        },
        bias: bias.cloned(),
        cos_sin: rope.map(|(c, s, _)| (c.clone(), s.clone())),
        table: rows.map(|r| r.table.clone()),
    };
    Ok(Some(y.apply_op1_no_bwd(&op)?))
}

struct Merge {
    table: Tensor,
    tokens: usize,
}

impl candle_core::CustomOp1 for Merge {
    fn name(&self) -> &'static str {
        "fused-merge-heads"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(gpu_only("fused-merge-heads"))
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = s1.device();
        let (b, heads, len, d) = l1.shape().dims4()?;
        let input = view::<bf16>(s1, l1)?;
        let (g, l) = held(&self.table)?;
        let table = view::<u32>(cuda_of(&g)?, l)?;
        let func = dev.get_or_load_custom_func("merge_heads_bf16", MODULE, PTX)?;
        // SAFETY: the table's rows cover tokens 0..tokens, each exactly once.
        let out = unsafe { dev.alloc::<bf16>(self.tokens * heads * d)? };
        let aligned = l1.start_offset().is_multiple_of(8) && d % 8 == 0;
        let dims = [b, len, heads, d, usize::from(aligned)].map(|x| x as u32);
        let mut builder = func.builder();
        builder.arg(&input);
        builder.arg(&table);
        builder.arg(&out);
        for x in &dims {
            builder.arg(x);
        }
        // SAFETY: `table` has 2·b entries whose rows stay within `tokens`; one block per
        // (row, position).
        unsafe { builder.launch(per_position(b * len, 128)?) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from((self.tokens, heads * d)),
        ))
    }
}

/// Attention's output packed back to one row per real token.
pub fn merge_heads(y: &Tensor, rows: super::Rows) -> Result<Option<Tensor>> {
    if y.dtype() != DType::BF16 || !y.device().is_cuda() || !y.is_contiguous() {
        return Ok(None);
    }
    let op = Merge {
        table: rows.table.clone(),
        tokens: rows.tokens,
    };
    Ok(Some(y.apply_op1_no_bwd(&op)?))
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

struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
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
        let x = view::<bf16>(s1, l1)?;
        let alpha = view::<bf16>(s2, l2)?;
        let n = l1.shape().elem_count();
        let cols = l1.dims().last().copied().unwrap_or(1).max(1);
        let rows = u32::try_from(n / cols)
            .map_err(|_| candle_core::Error::Msg(format!("{} rows to norm", n / cols)))?;
        let func = dev.get_or_load_custom_func("rmsnorm_bf16", MODULE, PTX)?;
        // SAFETY: one warp writes each row in full.
        let out = unsafe { dev.alloc::<bf16>(n)? };
        let mut builder = func.builder();
        builder.arg(&x);
        builder.arg(&alpha);
        builder.arg(&out);
        builder.arg(&rows);
        let cols = cols as u32;
        builder.arg(&cols);
        builder.arg(&self.eps);
        // Four rows a block; each warp stages its row in shared memory where the rows suit
        // 16-byte loads and four of them fit the default 48 KiB.
        const WARPS: u32 = 4;
        let aligned = l1.start_offset().is_multiple_of(8) && l2.start_offset().is_multiple_of(8);
        let staged = aligned && cols.is_multiple_of(8) && WARPS * cols * 2 <= 48 * 1024;
        let flag = u32::from(staged);
        builder.arg(&flag);
        let cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(WARPS).max(1), 1, 1),
            block_dim: (32 * WARPS, 1, 1),
            shared_mem_bytes: if staged { WARPS * cols * 2 } else { 0 },
        };
        // SAFETY: `x` holds rows of `cols`, `alpha` `cols` values (checked by the caller).
        unsafe { builder.launch(cfg) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            l1.shape().clone(),
        ))
    }
}

/// The RMS norm of `x`'s rows times `alpha`, bit for bit candle's, when both suit the
/// kernel, else `None`.
pub fn rms_norm(x: &Tensor, alpha: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    let cols = x.dims().last().copied().unwrap_or(0);
    let contiguous = |t: &Tensor| t.layout().contiguous_offsets().is_some();
    let bf16_cuda = |t: &Tensor| t.dtype() == DType::BF16 && t.device().is_cuda();
    if !bf16_cuda(x) || !bf16_cuda(alpha) || !contiguous(x) || !contiguous(alpha) {
        return Ok(None);
    }
    if cols == 0 || alpha.dims() != [cols] {
        return Ok(None);
    }
    Ok(Some(x.apply_op2_no_bwd(alpha, &RmsNorm { eps })?))
}

/// A cache layer's parts joined along the columns ([`super::join_columns`]): the op's input
/// is the first part, the others ride along.
struct Join {
    parts: Vec<(Tensor, Option<Tensor>)>,
    rows: usize,
}

impl candle_core::CustomOp1 for Join {
    fn name(&self) -> &'static str {
        "fused-join-columns"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(gpu_only(self.name()))
    }

    fn cuda_fwd(&self, s1: &CudaStorage, _: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = s1.device();
        let (_, heads, _, d) = self.parts[0].0.dims4()?;
        let keys: usize = self
            .parts
            .iter()
            .map(|(t, _)| t.dim(2))
            .sum::<candle_core::Result<usize>>()?;
        let func = dev.get_or_load_custom_func("gather_columns_bf16", MODULE, PTX)?;
        // SAFETY: the parts' columns cover 0..keys of every row and head.
        let out = unsafe { dev.alloc::<bf16>(self.rows * heads * keys * d)? };
        let dummy = dev.alloc_zeros::<u32>(1)?;
        let mut at = 0;
        for (part, map) in &self.parts {
            let (src_rows, _, cols, _) = part.dims4()?;
            let (g, l) = held(part)?;
            let src = view::<bf16>(cuda_of(&g)?, l)?;
            let held_map = map.as_ref().map(held).transpose()?;
            let map_v = match &held_map {
                Some((g, l)) => view::<u32>(cuda_of(g)?, l)?,
                None => dummy.slice(0..),
            };
            let vec = l.start_offset() % 8 == 0 && d % 8 == 0;
            let args = [
                heads,
                cols,
                d,
                keys,
                at,
                usize::from(map.is_some()),
                usize::from(src_rows == 1),
                usize::from(vec),
            ]
            .map(|x| x as u32);
            let mut builder = func.builder();
            builder.arg(&src);
            builder.arg(&map_v);
            builder.arg(&out);
            for x in &args {
                builder.arg(x);
            }
            // SAFETY: `src` holds its rows × heads × cols × d; the map's entries are rows of
            // it (checked where the map was made); one block per (row, head).
            unsafe { builder.launch(per_position(self.rows * heads, 128)?) }.w()?;
            at += cols;
        }
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from((self.rows, heads, keys, d)),
        ))
    }
}

/// `parts` (`[rows or 1, heads, cols, d]`, each with the rows it is read at) joined along
/// the columns into `[rows, heads, Σ cols, d]` in one copy, when all suit the kernel, else
/// `None`.
pub fn join_columns(parts: &[(&Tensor, Option<&Tensor>)], rows: usize) -> Result<Option<Tensor>> {
    let Some((first, _)) = parts.first() else {
        return Ok(None);
    };
    let Ok((_, heads, _, d)) = first.dims4() else {
        return Ok(None);
    };
    for (t, map) in parts {
        let Ok((b, h, _, dd)) = t.dims4() else {
            return Ok(None);
        };
        let map_fits = match map {
            Some(m) => m.dtype() == DType::U32 && m.dims() == [rows] && m.is_contiguous(),
            None => b == rows || b == 1,
        };
        if start(t).is_none() || h != heads || dd != d || !map_fits {
            return Ok(None);
        }
    }
    let op = Join {
        parts: parts
            .iter()
            .map(|(t, m)| ((*t).clone(), m.cloned()))
            .collect(),
        rows,
    };
    Ok(Some(first.apply_op1_no_bwd(&op)?))
}

/// The ragged mask kernel over `real` (`u8` `[b, cols]`); see [`super::ragged_mask`].
struct RaggedMask {
    len: usize,
}

impl candle_core::CustomOp1 for RaggedMask {
    fn name(&self) -> &'static str {
        "fused-ragged-mask"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(gpu_only(self.name()))
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = s1.device();
        let (b, cols) = l1.shape().dims2()?;
        let real = view::<u8>(s1, l1)?;
        let keys = cols + self.len;
        let n = b * self.len * keys;
        let func = dev.get_or_load_custom_func("ragged_mask_bf16", MODULE, PTX)?;
        // SAFETY: the kernel writes every one of the `n` elements.
        let out = unsafe { dev.alloc::<bf16>(n)? };
        let dims = [b, cols, self.len].map(|x| x as u32);
        let mut builder = func.builder();
        builder.arg(&real);
        builder.arg(&out);
        for x in &dims {
            builder.arg(x);
        }
        // SAFETY: `real` holds b × cols flags; the kernel strides over all `n` elements.
        unsafe { builder.launch(grid(n)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from((b, 1, self.len, keys)),
        ))
    }
}

/// The ragged mask made on the device from the rows' real cached columns.
pub fn ragged_mask(real: &Tensor, len: usize) -> Result<Tensor> {
    Ok(real.apply_op1_no_bwd(&RaggedMask { len })?)
}
