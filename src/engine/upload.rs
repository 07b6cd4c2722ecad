//! Host data for a forward pass, put on the device without waiting for it.
//!
//! On CUDA a copy from ordinary (pageable) host memory waits until the device has run the
//! work queued before it, so every upload in a forward pass (token ids, row tables, masks,
//! positions, the rows a cache keeps) and every operation for which candle uploads a shape
//! made the host wait for the device: the next batch could not be queued while the device
//! still worked on the current one. Here the bytes go through page-locked staging buffers
//! (the copy is queued like a kernel), and while [`queue_ahead`]'s guard is held candle
//! keeps the shapes it uploads on the device, uploading each distinct one once. Elsewhere
//! both are the plain operations.

use crate::error::Result;
use candle_core::{Device, Shape, Tensor};

/// The element types uploaded: token ids and tables (`u32`), masks (`f32`).
pub(crate) trait Upload: candle_core::WithDType + cuda::Element {}
impl Upload for u32 {}
impl Upload for f32 {}

/// A tensor of `data` in `shape` on `device`, its copy queued without waiting for the
/// device on CUDA.
pub(crate) fn upload<T: Upload>(
    data: Vec<T>,
    shape: impl Into<Shape>,
    device: &Device,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(dev) = device {
        return cuda::upload(&data, shape.into(), dev);
    }
    Ok(Tensor::from_vec(data, shape, device)?)
}

/// While the returned guard lives, candle keeps the shapes it uploads for its operations on
/// `device` (CUDA) instead of uploading each again, so queuing them does not wait for the
/// device. Hold it on the thread that queues forward passes; `None` elsewhere.
pub fn queue_ahead(device: &Device) -> Option<QueueAhead> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(dev) => Some(QueueAhead(Box::new(dev.enable_cuda_graph_htod_cache()))),
        _ => None,
    }
}

/// See [`queue_ahead`]: candle's guard, released when dropped.
pub struct QueueAhead(#[allow(dead_code)] Box<dyn std::any::Any>);

#[cfg(not(feature = "cuda"))]
mod cuda {
    pub(crate) trait Element {}
    impl Element for u32 {}
    impl Element for f32 {}
}

#[cfg(feature = "cuda")]
mod cuda {
    use crate::error::{Error, Result};
    use candle_core::cuda_backend::cudarc::driver::{CudaEvent, DevicePtrMut, DeviceRepr, result};
    use candle_core::cuda_backend::{CudaDType, CudaDevice};
    use candle_core::op::BackpropOp;
    use candle_core::{CudaStorage, Shape, Storage, Tensor};
    use std::cell::RefCell;

    pub(crate) trait Element: DeviceRepr + CudaDType + Copy {}
    impl Element for u32 {}
    impl Element for f32 {}

    /// Staging buffers in turn: a buffer is written again only after its last copy ran,
    /// which with this many buffers has long happened (else the host waits for it).
    const SLOTS: usize = 64;

    struct Slot {
        ptr: *mut u8,
        cap: usize,
        copied: Option<CudaEvent>,
    }

    impl Drop for Slot {
        fn drop(&mut self) {
            if let Some(e) = &self.copied {
                let _ = e.synchronize();
            }
            if !self.ptr.is_null() {
                // SAFETY: allocated by `malloc_host` and no copy from it is pending.
                let _ = unsafe { result::free_host(self.ptr.cast()) };
            }
        }
    }

    #[derive(Default)]
    struct Ring {
        slots: Vec<Slot>,
        next: usize,
    }

    thread_local! {
        static RING: RefCell<Ring> = RefCell::default();
    }

    fn driver(e: impl std::fmt::Debug) -> Error {
        Error::Model(format!("CUDA upload: {e:?}"))
    }

    pub fn upload<T: Element>(data: &[T], shape: Shape, dev: &CudaDevice) -> Result<Tensor> {
        if shape.elem_count() != data.len() {
            return Err(Error::Model(format!(
                "upload of {} values into shape {shape:?}",
                data.len()
            )));
        }
        let bytes = std::mem::size_of_val(data);
        let stream = dev.cuda_stream();
        // SAFETY: every element is written by the copy below before any kernel reads it.
        let mut dst = unsafe { dev.alloc::<T>(data.len().max(1))? };
        if bytes > 0 {
            RING.with(|ring| -> Result<()> {
                let mut ring = ring.borrow_mut();
                if ring.slots.len() < SLOTS {
                    ring.slots.push(Slot {
                        ptr: std::ptr::null_mut(),
                        cap: 0,
                        copied: None,
                    });
                }
                let at = ring.next % ring.slots.len();
                ring.next = ring.next.wrapping_add(1);
                let slot = &mut ring.slots[at];
                if let Some(e) = &slot.copied {
                    e.synchronize().map_err(driver)?;
                }
                if slot.cap < bytes {
                    let cap = bytes.next_power_of_two().max(4096);
                    // SAFETY: a fresh page-locked allocation of `cap` bytes.
                    let ptr = unsafe { result::malloc_host(cap, 0) }.map_err(driver)?;
                    if !slot.ptr.is_null() {
                        // SAFETY: the old buffer's copy has run (synchronized above).
                        unsafe { result::free_host(slot.ptr.cast()) }.map_err(driver)?;
                    }
                    slot.ptr = ptr.cast();
                    slot.cap = cap;
                }
                // SAFETY: `slot.ptr` holds at least `bytes` bytes no pending copy reads, and
                // is aligned for T (page-locked allocations are page aligned).
                let staged = unsafe {
                    std::ptr::copy_nonoverlapping(data.as_ptr().cast::<u8>(), slot.ptr, bytes);
                    std::slice::from_raw_parts(slot.ptr.cast::<T>(), data.len())
                };
                let (dptr, _written) = dst.device_ptr_mut(&stream);
                // SAFETY: `dst` holds `data.len()` elements; the source is page-locked and
                // stays untouched until the event recorded after the copy has passed.
                unsafe { result::memcpy_htod_async(dptr, staged, stream.cu_stream()) }
                    .map_err(driver)?;
                let event = match slot.copied.take() {
                    Some(e) => e,
                    None => stream.context().new_event(None).map_err(driver)?,
                };
                event.record(&stream).map_err(driver)?;
                slot.copied = Some(event);
                Ok(())
            })?;
        }
        let storage = CudaStorage::wrap_cuda_slice(dst, dev.clone());
        Ok(Tensor::from_storage(
            Storage::Cuda(storage),
            shape,
            BackpropOp::none(),
            false,
        ))
    }
}
