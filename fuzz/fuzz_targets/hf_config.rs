//! A Hugging Face or MLX model folder's `config.json`, read as a run reads it: the
//! precision the folder holds (`hf::held_precision`), the whole load (`hf::load`:
//! architecture, sizes and their consistency, rotary scaling, the quantization block
//! checked against the packed tensors), and, when it loads, the model built at that
//! precision and run on three tokens. Each input is the `config.json` of two fixed folders
//! (`fixtures/hf`: BF16, hidden 8; `fixtures/mlx`: MLX 4-bit, hidden 32) that
//! `fuzz/run.sh` writes first. Every input gives a model or an error; never a panic.
#![no_main]

use std::path::{Path, PathBuf};
use stereoscope::engine::{Compute, Precision, Scheme, hf, quant};

/// This process's copy of the fixture folder `kind` (its weights and tokenizer).
fn folder(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stereoscope-fuzz-{}/{kind}", std::process::id()));
    if !dir.is_dir() {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(kind);
        std::fs::create_dir_all(&dir).expect("temporary folder");
        for f in [
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ] {
            std::fs::copy(from.join(f), dir.join(f))
                .expect("fuzz/fixtures missing: fuzz/run.sh writes them");
        }
    }
    dir
}

fn read(dir: &Path) -> stereoscope::Result<()> {
    let held = hf::held_precision(dir)?;
    let src = hf::load("fuzz", dir)?;
    let p = held.unwrap_or(Precision::Bf16);
    let cpu = candle_core::Device::Cpu;
    let built = quant::build(&src, p, Scheme::Mlx, Compute::Dequant, &cpu)?;
    built.model.forward(&[1, 2, 3], &Default::default())?;
    Ok(())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for kind in ["hf", "mlx"] {
        let dir = folder(kind);
        std::fs::write(dir.join("config.json"), data).expect("write the input");
        let _ = read(&dir);
    }
});
