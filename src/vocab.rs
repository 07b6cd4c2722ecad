//! The study's vocabulary, with no I/O: precisions (the ladder), schemes, compute paths,
//! option roles, seed sets and context-condition selections. Strings of these terms appear
//! only at the edges (flags, files, screen) and are parsed here, once; the flag enums derive
//! clap's `ValueEnum` so `--help` lists their values (a derive, no I/O).

use crate::error::{Error, Result};
use std::fmt;

/// A precision of the study. The ladder is [`Precision::ALL`], from BF16 down.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Bf16,
    Q8,
    Q6,
    Q4,
    Q3,
}

impl Precision {
    /// The ladder, in the study's order.
    pub const ALL: [Precision; 5] = [Self::Bf16, Self::Q8, Self::Q6, Self::Q4, Self::Q3];

    /// The ladder's names, in the study's order.
    pub const NAMES: [&'static str; 5] = {
        let mut out = [""; 5];
        let mut i = 0;
        while i < 5 {
            out[i] = Self::ALL[i].as_str();
            i += 1;
        }
        out
    };

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bf16 => "bf16",
            Self::Q8 => "q8",
            Self::Q6 => "q6",
            Self::Q4 => "q4",
            Self::Q3 => "q3",
        }
    }

    /// Bits per weight as the study counts them (16 for BF16).
    pub fn bits(self) -> u32 {
        match self {
            Self::Bf16 => 16,
            Self::Q8 => 8,
            Self::Q6 => 6,
            Self::Q4 => 4,
            Self::Q3 => 3,
        }
    }

    /// The study's published transition range at this precision: the share of items
    /// unbiased at BF16 that became biased, lowest and highest of its three models (none
    /// for BF16, the reference).
    pub fn published_transitions(self) -> Option<&'static str> {
        match self {
            Self::Bf16 => None,
            Self::Q8 => Some("0.1-0.9%"),
            Self::Q6 => Some("0.3-1.3%"),
            Self::Q4 => Some("2.2-5.6%"),
            Self::Q3 => Some("6.0-21.1%"),
        }
    }

    /// Whether the precision quantizes (everything below BF16).
    pub fn is_quantized(self) -> bool {
        self != Self::Bf16
    }

    /// The position of a precision's name on the ladder (`None` for other names).
    pub fn rank_of(name: &str) -> Option<usize> {
        Self::NAMES.iter().position(|n| *n == name)
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                Error::Input(format!("unknown precision `{s}`; use bf16, q8, q6, q4, q3"))
            })
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// How quantized bits are made.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// MLX affine quantization, group size 64, as the study's checkpoints were made.
    Mlx,
    /// llama.cpp k-quants through candle.
    Gguf,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Mlx => "mlx",
            Scheme::Gguf => "gguf",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "mlx" => Ok(Self::Mlx),
            "gguf" => Ok(Self::Gguf),
            other => Err(Error::Input(format!(
                "unknown scheme `{other}`; use mlx or gguf"
            ))),
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How quantized layers are computed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Compute {
    /// The exact quantized weight values, dequantized, in dense matmuls (the faster path for
    /// prompts; on a GPU the packed weights stay on the device and are dequantized layer by
    /// layer).
    Dequant,
    /// candle's quantized matmul kernels (activations are quantized to Q8 on the fly).
    Kernels,
}

impl Compute {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "dequant" => Ok(Self::Dequant),
            "kernels" => Ok(Self::Kernels),
            other => Err(Error::Input(format!(
                "--compute must be dequant or kernels, not `{other}`"
            ))),
        }
    }
}

/// The role an option plays for an item, or `Invalid` for an answer the parser did not find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Biased,
    Anti,
    Unknown,
    Invalid,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Biased, Role::Anti, Role::Unknown, Role::Invalid];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Biased => "biased",
            Role::Anti => "anti",
            Role::Unknown => "unknown",
            Role::Invalid => "invalid",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::Input(format!(
                    "unknown role `{s}`; a record's role is biased, anti, unknown or invalid"
                ))
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which seeds a record's seed belongs to: the study's, or the extra BF16 seeds that measure
/// the noise floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeedSet {
    Study,
    Noise,
}

impl SeedSet {
    pub fn as_str(self) -> &'static str {
        match self {
            SeedSet::Study => "study",
            SeedSet::Noise => "noise",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "study" => Ok(SeedSet::Study),
            "noise" => Ok(SeedSet::Noise),
            other => Err(Error::Input(format!(
                "unknown seed set `{other}`; a record's seed_set is study or noise"
            ))),
        }
    }
}

impl fmt::Display for SeedSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which context conditions to select.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Conditions {
    Ambig,
    Disambig,
    Both,
}

impl Conditions {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "ambig" => Ok(Self::Ambig),
            "disambig" => Ok(Self::Disambig),
            "both" => Ok(Self::Both),
            other => Err(Error::Input(format!(
                "--conditions must be ambig, disambig or both, not `{other}`"
            ))),
        }
    }

    /// Whether an item of context condition `condition` is selected.
    pub fn admits(self, condition: &str) -> bool {
        match self {
            Self::Ambig => condition == "ambig",
            Self::Disambig => condition == "disambig",
            Self::Both => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_term_parses_back_from_its_name() {
        for p in Precision::ALL {
            assert_eq!(Precision::parse(p.as_str()).expect("precision"), p);
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()).expect("role"), r);
        }
        for s in [SeedSet::Study, SeedSet::Noise] {
            assert_eq!(SeedSet::parse(s.as_str()).expect("seed set"), s);
        }
        for s in [Scheme::Mlx, Scheme::Gguf] {
            assert_eq!(Scheme::parse(s.as_str()).expect("scheme"), s);
        }
    }

    #[test]
    fn unknown_names_are_refused_with_the_allowed_values() {
        let e = Precision::parse("q5").expect_err("q5").to_string();
        assert!(
            e.contains("q5") && e.contains("bf16, q8, q6, q4, q3"),
            "{e}"
        );
        assert!(Role::parse("Biased").is_err());
        assert!(SeedSet::parse("").is_err());
    }

    #[test]
    fn the_ladder_runs_from_bf16_down_in_bits() {
        let bits: Vec<u32> = Precision::ALL.iter().map(|p| p.bits()).collect();
        assert_eq!(bits, [16, 8, 6, 4, 3]);
        assert!(!Precision::Bf16.is_quantized() && Precision::Q3.is_quantized());
    }
}
