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
