//! Choosing the compute device once: `auto` takes CUDA, then Metal, then the CPU.

use crate::error::{Error, Result};
use candle_core::Device;

/// The device for `spec` (`auto`, `cpu`, `cuda`, `cuda:N`, `metal`) and its name for users.
pub fn select_device(spec: &str) -> Result<(Device, String)> {
    let cuda = |ordinal: usize| {
        Device::new_cuda(ordinal)
            .map(|d| (d, format!("cuda:{ordinal}")))
            .map_err(|e| Error::Input(format!("--device cuda:{ordinal} is not available: {e}")))
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
            .map_err(|e| Error::Input(format!("--device metal is not available: {e}"))),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => cuda(n),
            None => Err(Error::Input(format!(
                "--device must be auto, cpu, cuda, cuda:N or metal, not `{other}`"
            ))),
        },
    }
}

/// Prompts per forward pass when `--batch-size` is not given: 1 on the CPU (prompt by
/// prompt, reusing each previous prompt's prefix, the fastest there), 32 on a GPU (a 7B
/// model's activations for 32 study prompts take about 1.5 GB).
pub fn default_batch_size(device: &Device) -> usize {
    if device.is_cpu() { 1 } else { 32 }
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
