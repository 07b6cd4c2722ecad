//! Bringing a forward pass's next-token logits (`[rows, vocab]`, F32) to the host.
//!
//! On CUDA the copy is queued on the device's stream right behind the pass that makes the
//! logits, into page-locked host memory kept for reuse: it starts the moment the pass ends,
//! runs at the bus's speed rather than through the driver's pageable staging (measured on an
//! H200: about 0.7 GB/s that way, 54 ms for 64 rows of Qwen2.5's 152,064 logits), and work
//! queued after it (the next batch) is not held up by the host reading. Elsewhere the logits
//! are read when waited for. Either way the values are the device's F32 logits, bit for bit.

use crate::error::Result;
use candle_core::Tensor;

/// Logits on their way to the host: [`Download::wait`] returns them row by row.
pub struct Download {
    inner: Inner,
}

enum Inner {
    /// Read when waited for (the CPU, Metal, or anything the page-locked path cannot take).
    Direct(Tensor),
    #[cfg(feature = "cuda")]
    Pinned { buf: pinned::Buffer, cols: usize },
}

impl Download {
    /// Start bringing the 2-D F32 `logits` to the host.
    pub fn start(logits: &Tensor) -> Result<Download> {
        #[cfg(feature = "cuda")]
        if let Some((buf, cols)) = pinned::queue(logits)? {
            return Ok(Download {
                inner: Inner::Pinned { buf, cols },
            });
        }
        Ok(Download {
            inner: Inner::Direct(logits.clone()),
        })
    }

    /// The logits, one vector per row, once they have arrived.
    pub fn wait(self) -> Result<Vec<Vec<f32>>> {
        match self.inner {
            Inner::Direct(t) => Ok(t.to_vec2()?),
            #[cfg(feature = "cuda")]
            Inner::Pinned { buf, cols } => buf.rows(cols),
        }
    }
}

/// The check a benchmark prints before trusting the page-locked path on `device`: logits of
/// several shapes (a view into a larger tensor among them, and a copy into a pooled buffer
/// larger than it) brought to the host this way and by candle's own copy. Returns the values
/// compared and how many differ; `None` where the path is not used (CPU, Metal).
pub fn agreement(device: &candle_core::Device) -> Result<Option<(usize, usize)>> {
    if !device.is_cuda() {
        return Ok(None);
    }
    let all = Tensor::randn(0f32, 3f32, (9, 1_001), device)?;
    let shapes = [all.narrow(0, 0, 7)?, all.clone(), all.narrow(0, 2, 3)?];
    let (mut values, mut differ) = (0, 0);
    for t in &shapes {
        let plain: Vec<Vec<f32>> = t.to_vec2()?;
        let pinned = Download::start(t)?.wait()?;
        values += plain.iter().map(Vec::len).sum::<usize>();
        differ += plain
            .iter()
            .flatten()
            .zip(pinned.iter().flatten())
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        differ += plain.len().abs_diff(pinned.len());
    }
    Ok(Some((values, differ)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logits_arrive_as_candle_reads_them() -> Result<()> {
        let t = Tensor::randn(0f32, 1f32, (4, 33), &candle_core::Device::Cpu)?;
        let rows = Download::start(&t.narrow(0, 1, 2)?)?.wait()?;
        let plain: Vec<Vec<f32>> = t.narrow(0, 1, 2)?.to_vec2()?;
        assert_eq!(rows, plain);
        assert_eq!(rows.len(), 2);
        Ok(())
    }
}

#[cfg(feature = "cuda")]
mod pinned {
    use crate::error::{Error, Result};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaContext, CudaEvent, DevicePtr, PinnedHostSlice, result, sys,
    };
    use candle_core::{DType, Storage, Tensor};
    use std::sync::{Arc, Mutex};

    /// Page-locked buffers kept between downloads: allocating and locking a buffer of a
    /// batch's logits costs more than copying into one.
    static POOL: Mutex<Vec<PinnedHostSlice<f32>>> = Mutex::new(Vec::new());

    /// A page-locked buffer taken from the pool, `len` values of it being filled by a copy
    /// that `done` marks; it goes back to the pool when dropped.
    pub struct Buffer {
        pinned: Option<PinnedHostSlice<f32>>,
        len: usize,
        done: CudaEvent,
    }

    impl Drop for Buffer {
        fn drop(&mut self) {
            // A buffer whose copy cannot be waited for is not reused.
            if self.done.synchronize().is_ok()
                && let (Some(b), Ok(mut pool)) = (self.pinned.take(), POOL.lock())
            {
                pool.push(b);
            }
        }
    }

    impl Buffer {
        /// Wait for the copy, then its values as rows of `cols`.
        pub fn rows(&self, cols: usize) -> Result<Vec<Vec<f32>>> {
            use rayon::prelude::*;
            let b = self
                .pinned
                .as_ref()
                .ok_or_else(|| driver("a download without its buffer"))?;
            self.done.synchronize().map_err(driver)?;
            let all = b.as_slice().map_err(driver)?;
            Ok(all[..self.len]
                .par_chunks(cols)
                .map(<[f32]>::to_vec)
                .collect())
        }
    }

    fn driver(e: impl std::fmt::Debug) -> Error {
        Error::Model(format!("copying logits to the host: {e:?}"))
    }

    /// A buffer of at least `len` values in `ctx`: the smallest pooled one that fits, else a
    /// new one (plain page-locked memory, not write-combined: the host reads it).
    fn take(ctx: &Arc<CudaContext>, len: usize) -> Result<PinnedHostSlice<f32>> {
        let mut pool = POOL.lock().map_err(|_| driver("pool poisoned"))?;
        let fits = pool
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() >= len && Arc::ptr_eq(b.context(), ctx))
            .min_by_key(|(_, b)| b.len())
            .map(|(i, _)| i);
        if let Some(i) = fits {
            return Ok(pool.swap_remove(i));
        }
        drop(pool);
        // SAFETY: the buffer is read only after the event recorded behind the copy into it.
        unsafe { ctx.alloc_pinned_with_flags::<f32>(len, sys::CU_MEMHOSTALLOC_PORTABLE) }
            .map_err(driver)
    }

    /// Queue the copy of contiguous 2-D F32 CUDA `t` into a pooled buffer; `None` for any
    /// other tensor.
    pub fn queue(t: &Tensor) -> Result<Option<(Buffer, usize)>> {
        if t.dtype() != DType::F32 || !t.device().is_cuda() {
            return Ok(None);
        }
        let Ok((_, cols)) = t.dims2() else {
            return Ok(None);
        };
        let (storage, layout) = t.storage_and_layout();
        let (Storage::Cuda(s), Some((start, end))) = (&*storage, layout.contiguous_offsets())
        else {
            return Ok(None);
        };
        let stream = s.device().cuda_stream();
        let len = end - start;
        let mut pinned = take(stream.context(), len)?;
        let src = s.as_cuda_slice::<f32>()?.slice(start..end);
        stream.context().bind_to_thread().map_err(driver)?;
        let dst = pinned.as_mut_slice().map_err(driver)?;
        let (ptr, _read) = src.device_ptr(&stream);
        // SAFETY: `dst` holds `len` values, the size of `src`; it is read only after `done`.
        unsafe { result::memcpy_dtoh_async(&mut dst[..len], ptr, stream.cu_stream()) }
            .map_err(driver)?;
        let done = stream.record_event(None).map_err(driver)?;
        let buf = Buffer {
            pinned: Some(pinned),
            len,
            done,
        };
        Ok(Some((buf, cols)))
    }
}
