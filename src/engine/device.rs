//! Choosing the compute device once: `auto` takes CUDA, then Metal, then the CPU.

use crate::error::{Error, Result, brief, is_out_of_memory};
use candle_core::Device;

/// The device for `spec` (`auto`, `cpu`, `cuda`, `cuda:N`, `metal`) and its name for users.
pub fn select_device(spec: &str) -> Result<(Device, String)> {
    let cuda = |ordinal: usize| {
        let device = Device::new_cuda(ordinal)
            .map(|d| (d, format!("cuda:{ordinal}")))
            .map_err(|e| unavailable(&format!("cuda:{ordinal}"), &e))?;
        #[cfg(feature = "cuda")]
        cuda_pool::keep_freed(ordinal);
        Ok(device)
    };
    match spec {
        "cpu" => Ok((Device::Cpu, cpu_name())),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                return cuda(0);
            }
            if candle_core::utils::metal_is_available()
                && let Ok(d) = Device::new_metal(0)
            {
                return Ok((d, "metal".into()));
            }
            Ok((Device::Cpu, cpu_name()))
        }
        "cuda" => cuda(0),
        "metal" => Device::new_metal(0)
            .map(|d| (d, "metal".into()))
            .map_err(|e| unavailable("metal", &e)),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => cuda(n),
            None => Err(Error::Input(format!(
                "--device must be auto, cpu, cuda, cuda:N or metal, not `{other}`"
            ))),
        },
    }
}

/// A device that cannot be opened, in the device's words (without the backtrace candle
/// attaches); one with no memory left for a new context says so.
fn unavailable(name: &str, e: &candle_core::Error) -> Error {
    let said = brief(e);
    match is_out_of_memory(&said) {
        true => Error::Input(format!(
            "--device {name} is not available: it has no memory left for this program (other programs hold it; {said})"
        )),
        false => Error::Input(format!("--device {name} is not available: {said}")),
    }
}

/// A fixed number of prompts per forward pass: 1 on the CPU (prompt by prompt, reusing
/// each previous prompt's prefix, the fastest there), 32 on a GPU (a 7B model's activations
/// for 32 study prompts take about 1.5 GB). `bench` uses it when `--batch-size` is not
/// given, and a study on a GPU whose free memory cannot be read; a study otherwise chooses
/// from the device's free memory (`engine::batch`).
pub fn default_batch_size(device: &Device) -> usize {
    if device.is_cpu() { 1 } else { 32 }
}

/// Items per part when `--part-size` is not given: 32 on the CPU (a part of a 7B model
/// there is minutes of work, lost at most on a stop), 1024 on a GPU, whose forward passes
/// take prompts of one part only and are fastest with 128-256 prompts: a part of several
/// batches keeps the device busier at its end (a 7B model's q3 scores 13-19% faster on an
/// H200 than with parts of 256, BENCHMARKS.md) and is a few seconds of work.
pub fn default_part_size(device: &Device) -> usize {
    if device.is_cpu() { 32 } else { 1024 }
}

/// Free device memory in bytes, for choosing a batch size: on CUDA the driver's
/// `cuMemGetInfo` after the device's work has finished and the stream-ordered pool has
/// given back what it holds unused (see `cuda_pool::keep_freed`); on Metal the recommended
/// working set less what the device has allocated; `None` on the CPU and where it cannot
/// be read.
pub fn free_memory(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            device.synchronize().ok()?;
            if let candle_core::DeviceLocation::Cuda { gpu_id } = device.location() {
                cuda_pool::trim(gpu_id);
            }
            let (free, _total) = d.cuda_stream().context().mem_get_info().ok()?;
            Some(free as u64)
        }
        #[cfg(feature = "metal")]
        Device::Metal(d) => {
            let m = d.metal_device();
            let budget = m.recommended_max_working_set_size() as u64;
            Some(budget.saturating_sub(m.current_allocated_size() as u64))
        }
        _ => None,
    }
}

fn cpu_name() -> String {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("cpu ({threads} threads)")
}

/// The most device memory the allocator held for tensors since the last
/// [`reset_memory_peak`], in bytes: CUDA's stream-ordered memory pool's high-water mark
/// (what candle allocates from; the CUDA context and cuBLAS workspaces come on top). `None`
/// on the CPU and Metal, and on a CUDA build that cannot read it.
pub fn memory_peak(device: &Device) -> Option<u64> {
    match device.location() {
        #[cfg(feature = "cuda")]
        candle_core::DeviceLocation::Cuda { gpu_id } => {
            device.synchronize().ok()?;
            cuda_pool::used_high(gpu_id)
        }
        _ => None,
    }
}

/// Start a new [`memory_peak`] measurement.
pub fn reset_memory_peak(device: &Device) {
    #[cfg(feature = "cuda")]
    if let candle_core::DeviceLocation::Cuda { gpu_id } = device.location() {
        let _ = device.synchronize();
        cuda_pool::reset_used_high(gpu_id);
    }
    #[cfg(not(feature = "cuda"))]
    let _ = device;
}

#[cfg(feature = "cuda")]
mod cuda_pool {
    use cudarc::driver::sys;
    use std::ffi::c_void;

    fn pool(ordinal: usize) -> Option<sys::CUmemoryPool> {
        let mut dev: sys::CUdevice = 0;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: out-pointers to locals; the driver is loaded once candle made the device.
        unsafe {
            (sys::cuDeviceGet(&mut dev, ordinal as i32) == sys::CUresult::CUDA_SUCCESS)
                .then_some(())?;
            (sys::cuDeviceGetDefaultMemPool(&mut pool, dev) == sys::CUresult::CUDA_SUCCESS)
                .then_some(pool)
        }
    }

    /// Keep memory that tensors free in the pool for the next allocations. By default the
    /// pool gives everything unused back to the driver at each synchronization (each
    /// batch's wait for its logits), and the next batch maps its activations afresh.
    pub fn keep_freed(ordinal: usize) {
        if let Some(p) = pool(ordinal) {
            let mut keep: u64 = u64::MAX;
            // SAFETY: RELEASE_THRESHOLD takes a cuuint64_t, read from `keep`.
            unsafe {
                sys::cuMemPoolSetAttribute(
                    p,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    &mut keep as *mut u64 as *mut c_void,
                );
            }
        }
    }

    /// Give what the pool holds unused back to the driver, so that it counts as free.
    pub fn trim(ordinal: usize) {
        if let Some(p) = pool(ordinal) {
            // SAFETY: a pool handle of this device; trimming to 0 keeps what is in use.
            unsafe {
                sys::cuMemPoolTrimTo(p, 0);
            }
        }
    }

    pub fn used_high(ordinal: usize) -> Option<u64> {
        let p = pool(ordinal)?;
        let mut v: u64 = 0;
        // SAFETY: USED_MEM_HIGH is a cuuint64_t written to `v`.
        let r = unsafe {
            sys::cuMemPoolGetAttribute(
                p,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                &mut v as *mut u64 as *mut c_void,
            )
        };
        (r == sys::CUresult::CUDA_SUCCESS).then_some(v)
    }

    pub fn reset_used_high(ordinal: usize) {
        if let Some(p) = pool(ordinal) {
            let mut zero: u64 = 0;
            // SAFETY: setting USED_MEM_HIGH takes a cuuint64_t 0, which resets it.
            unsafe {
                sys::cuMemPoolSetAttribute(
                    p,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                    &mut zero as *mut u64 as *mut c_void,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_has_no_device_memory_to_read() {
        assert_eq!(free_memory(&Device::Cpu), None);
    }

    #[test]
    fn a_device_without_memory_for_a_context_says_so_without_a_backtrace() {
        let e = candle_core::Error::Msg(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
        );
        let e = candle_core::Error::WithBacktrace {
            inner: Box::new(e),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert_eq!(
            unavailable("cuda:0", &e).to_string(),
            "--device cuda:0 is not available: it has no memory left for this program (other programs hold it; DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\"))"
        );
        let e = candle_core::Error::Msg("no CUDA-capable device is detected".into());
        assert_eq!(
            unavailable("cuda:1", &e).to_string(),
            "--device cuda:1 is not available: no CUDA-capable device is detected"
        );
    }

    /// Reads the driver's free memory around a 1 GiB allocation.
    #[cfg(feature = "cuda")]
    #[test]
    #[ignore = "needs a CUDA GPU: cargo test --features cuda --lib free_memory -- --ignored"]
    fn free_memory_on_cuda_falls_by_what_is_allocated() {
        let device = Device::new_cuda(0).expect("cuda:0");
        let before = free_memory(&device).expect("free memory read");
        let t = candle_core::Tensor::zeros(1usize << 28, candle_core::DType::F32, &device)
            .expect("1 GiB");
        let during = free_memory(&device).expect("free memory read");
        assert!(
            before >= during + (1 << 30) * 9 / 10,
            "{before} then {during}"
        );
        drop(t);
    }
}
