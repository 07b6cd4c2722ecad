//! The low args: what the user typed, parsed into typed flags and nothing more. Flags that
//! several commands take are declared once here ([`SharedArgs`], [`ScoringArgs`]) and
//! flattened into each command, so their names, types and allowed values cannot drift.
//! Nothing here touches the disk, a device or the network.

use crate::engine::{Compute, Precision, Scheme};
use crate::prompt::OptionOrder;
use crate::store::Shard;
use crate::vocab::Conditions;
use clap::builder::TypedValueParser;
use clap::{Args, ValueEnum};
use std::fmt;
use std::path::PathBuf;

/// The study's categories, the default of the study.
pub const STUDY_CATEGORIES: &str = "Age,Gender_identity,Race_ethnicity,Religion,SES";
/// The categories `bench` and `logprobs` take by default.
pub const TOOL_CATEGORIES: &str = "Age,Religion";

/// Flags that choose items and precisions, shared by the study, `bench` and `logprobs`.
/// Where the commands' defaults differ, the flag is optional and each command fills in its
/// own (the help text lists them).
#[derive(Args, Debug, Clone)]
pub struct SharedArgs {
    /// Folder holding BBQ's category files (else STEREOSCOPE_BBQ_DIR, else the cache, downloading what is missing).
    #[arg(long)]
    pub bbq_dir: Option<PathBuf>,
    /// Comma-separated BBQ categories [default: Age,Gender_identity,Race_ethnicity,Religion,SES;
    /// bench and logprobs: Age,Religion].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub categories: Option<Vec<String>>,
    /// Number of items, sampled deterministically in proportion to each category, or `all`
    /// [default: 100; bench: 40; logprobs: 200].
    #[arg(long, value_name = "N|all")]
    pub limit: Option<Limit>,
    /// Comma-separated precisions [default: bf16,q8,q6,q4,q3, or the one an MLX folder holds].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub precisions: Option<Vec<Precision>>,
    /// How quantized precisions are made: mlx (affine, group 64, as the study) or gguf
    /// (llama.cpp k-quants).
    #[arg(long, value_enum, default_value_t = Scheme::Mlx)]
    pub scheme: Scheme,
    /// auto, cpu, cuda, cuda:N or metal [default: auto; logprobs: cpu].
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<DeviceArg>,
}

impl SharedArgs {
    /// `--categories`, or `default` (a comma-separated list) when not given; entries trimmed,
    /// empty ones dropped.
    pub fn categories_or(&self, default: &str) -> Vec<String> {
        let given = self.categories.clone();
        let given = given.unwrap_or_else(|| default.split(',').map(String::from).collect());
        given
            .iter()
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect()
    }

    /// `--precisions`, or the whole ladder.
    pub fn precisions_or_ladder(&self) -> Vec<Precision> {
        self.precisions
            .clone()
            .unwrap_or_else(|| Precision::ALL.to_vec())
    }

    /// `--limit`, or `default` items.
    pub fn limit_or(&self, default: usize) -> Option<usize> {
        self.limit.map_or(Some(default), |l| l.0)
    }

    /// `--device`, or `default`.
    pub fn device_or(&self, default: DeviceArg) -> DeviceArg {
        self.device.unwrap_or(default)
    }
}

/// Flags of how prompts are scored, shared by the study and `bench`.
#[derive(Args, Debug, Clone)]
pub struct ScoringArgs {
    /// dequant (quantize, then run dense F32 matmuls on the exact quantized values) or kernels (candle's quantized matmuls).
    #[arg(long, value_enum, default_value_t = Compute::Dequant)]
    pub compute: Compute,
    /// Items per part file, the unit of resume; a forward pass takes prompts of one part
    /// only, so on a GPU parts are large [default: 32 on the CPU, 1024 on a GPU; resuming
    /// into --out without it: the folder's]
    #[arg(long)]
    pub part_size: Option<usize>,
}

/// `--limit`: a positive number of items, or `all` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<usize>);

impl std::str::FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "all" {
            return Ok(Limit(None));
        }
        match s.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!(
                "--limit must be a positive number or `all`, not `{s}`"
            )),
            Ok(n) => Ok(Limit(Some(n))),
        }
    }
}

/// `--device`: where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceArg {
    /// CUDA, then Metal, then the CPU.
    Auto,
    Cpu,
    /// `cuda` (`None`, the first GPU) or `cuda:N`.
    Cuda(Option<usize>),
    Metal,
}

impl std::str::FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(None)),
            "metal" => Ok(Self::Metal),
            other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Ok(Self::Cuda(Some(n))),
                None => Err(format!(
                    "--device must be auto, cpu, cuda, cuda:N or metal, not `{other}`"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(None) => f.write_str("cuda"),
            Self::Cuda(Some(n)) => write!(f, "cuda:{n}"),
            Self::Metal => f.write_str("metal"),
        }
    }
}

/// `report --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Markdown,
    Json,
}

/// The study flags (shared by `--batch` and the interactive mode).
#[derive(Args, Debug, Clone)]
pub struct StudyArgs {
    /// Run headless: a progress bar, then a summary table (also when stdout is not a terminal;
    /// otherwise the explorer opens and runs the study in the background).
    #[arg(long)]
    pub batch: bool,
    /// Model: a GGUF file, a Hugging Face folder, a hub id, or `default` (SmolLM2-135M-Instruct). Repeat for several models.
    #[arg(long = "model", default_value = "default")]
    pub models: Vec<String>,
    #[command(flatten)]
    pub shared: SharedArgs,
    #[command(flatten)]
    pub scoring: ScoringArgs,
    /// Context condition of the items.
    #[arg(long, value_enum, default_value_t = Conditions::Ambig)]
    pub conditions: Conditions,
    /// Results folder (default: stereoscope-results/<model>-<plan hash>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A prebuilt MLX folder used for one precision instead of quantizing in process:
    /// `[MODEL:]PRECISION=FOLDER` (such as the study's `…-q4-mlx-cba`). Repeatable.
    #[arg(long = "checkpoint")]
    pub checkpoints: Vec<String>,
    /// Extra BF16 seeds (comma-separated) whose answers, stored with `seed_set = noise`,
    /// measure the noise floor of the transition rate.
    #[arg(long, value_delimiter = ',', value_parser = seed, value_name = "LIST")]
    pub noise_seeds: Vec<u64>,
    /// Comma-separated sampling seeds.
    #[arg(long, value_delimiter = ',', value_parser = seed, default_value = "42,123,456,789,1024")]
    pub seeds: Vec<u64>,
    /// Perplexity and mean KLD against BF16 at each precision over this many sequences
    /// (0: skip; the study used 256).
    #[arg(long, default_value_t = 8)]
    pub ppl_sequences: usize,
    /// Tokens per perplexity sequence.
    #[arg(long, default_value_t = 512)]
    pub ppl_seq_len: usize,
    /// Perplexity corpus: JSONL with a chat `messages` list or a `text` string per line,
    /// Parquet with a `messages` or `text` column, plain text, `hub:OWNER/NAME` (a hub
    /// dataset's first training Parquet file) or `tulu` (the study's
    /// allenai/tulu-3-sft-mixture) [default: the run's BBQ prompts through the chat template].
    #[arg(long)]
    pub ppl_corpus: Option<String>,
    /// Prompts per forward pass, padded after their shared prefix [default: 1 on the CPU; on
    /// a GPU chosen from free memory once the model is loaded, at most 256, and printed; a
    /// resumed run goes on at the batch size its finished parts recorded]. Lower it if the
    /// device runs out of memory: the run resumes.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Run only shard I of N (such as 3/8): part k of every model and precision belongs to
    /// shard k mod N + 1. Shards may share one --out folder; `stereoscope merge` joins them.
    /// Headless only.
    #[arg(long, value_name = "I/N", value_parser = shard)]
    pub shard: Option<Shard>,
    /// Also show each item's options in other orders, as a check of position bias: `cyclic`
    /// (012, 120, 201), `all` (six orders) or a list such as 012,210. The study's order 012
    /// must be among them; the report's main tables use it alone.
    #[arg(long, default_value = "012", value_name = "ORDERS", value_parser = option_orders)]
    pub option_orders: OptionOrders,
    /// Replace the study's system message (an empty text sends no system message).
    #[arg(long, value_name = "TEXT")]
    pub system_prompt: Option<String>,
    /// Replace the study's user message: a text file with the placeholders {context},
    /// {question}, {ans0}, {ans1}, {ans2} (options are labelled A, B, C by the template).
    #[arg(long, value_name = "FILE")]
    pub user_template: Option<PathBuf>,
    /// Replace the model's chat template with this Jinja file (Hugging Face's format).
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,
    /// Leave out malformed BBQ lines and items too long for a model (counted, and listed
    /// in the manifest) instead of stopping at the first one.
    #[arg(long)]
    pub skip_bad: bool,
    /// Print the plan and exit without running.
    #[arg(long)]
    pub dry_run: bool,
}

/// A seed: a non-negative integer (spaces around it allowed).
/// `--option-orders`: the orders it names, parsed once.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionOrders(pub Vec<OptionOrder>);

fn option_orders(s: &str) -> std::result::Result<OptionOrders, String> {
    OptionOrder::parse_list(s)
        .map(OptionOrders)
        .map_err(|e| e.to_string())
}

fn shard(s: &str) -> std::result::Result<Shard, String> {
    Shard::parse(s).map_err(|e| e.to_string())
}

fn seed(s: &str) -> std::result::Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("`{s}` is not a non-negative integer"))
}

/// `report`.
#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// The results folder.
    pub dir: PathBuf,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// Also write figures (SVG and PNG) into this folder, created if needed.
    #[arg(long, value_name = "OUT")]
    pub figures: Option<PathBuf>,
    /// Add the study's latent-bias filter: the rates over the items whose BF16 per-item SRS
    /// lies in [LOW, HIGH] (the study's band, 0.20,1.01, when no value is given).
    #[arg(long, value_name = "LOW,HIGH", num_args = 0..=1, default_missing_value = "0.20,1.01", value_parser = parse_band)]
    pub latent_band: Option<(f64, f64)>,
    /// Report an unfinished folder over the items finished at every precision it has
    /// started (labelled PARTIAL; no derived tables are written).
    #[arg(long)]
    pub partial: bool,
}

/// `LOW,HIGH` with 0 ≤ LOW ≤ HIGH.
fn parse_band(s: &str) -> std::result::Result<(f64, f64), String> {
    let bad = || format!("`{s}` is not a band LOW,HIGH of per-item SRS (such as 0.20,1.01)");
    let (lo, hi) = s.split_once(',').ok_or_else(bad)?;
    let (lo, hi): (f64, f64) = (
        lo.trim().parse().map_err(|_| bad())?,
        hi.trim().parse().map_err(|_| bad())?,
    );
    (lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi)
        .then_some((lo, hi))
        .ok_or_else(bad)
}

/// `bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// A GGUF file, folder or hub id.
    #[arg(long, default_value = "default")]
    pub model: String,
    #[command(flatten)]
    pub shared: SharedArgs,
    #[command(flatten)]
    pub scoring: ScoringArgs,
    /// Prompts per forward pass, one or a list to compare (such as 1,8,32,64)
    /// [default: 1 on the CPU, 32 on a GPU].
    #[arg(long, value_delimiter = ',')]
    pub batch_size: Vec<usize>,
    /// Random BF16 weights of a real shape made in process instead of --model:
    /// qwen2.5-7b, mistral-7b, phi3.5-mini (or qwen2.5-0.5b).
    #[arg(long, value_name = "SHAPE")]
    pub synthetic: Option<String>,
    /// With --synthetic: a folder with the real tokenizer.json and tokenizer_config.json
    /// (chat template) [default: the tokenizer of --model].
    #[arg(long, value_name = "DIR")]
    pub tokenizer: Option<PathBuf>,
    /// With --synthetic: also write the model as a Hugging Face folder here (for a peer
    /// engine to load the same weights, or a study run).
    #[arg(long, value_name = "DIR")]
    pub save_model: Option<PathBuf>,
    /// Write the prompts' token ids here (JSON), for a peer engine to score the same ids.
    #[arg(long, value_name = "FILE")]
    pub prompts_out: Option<PathBuf>,
    /// Also run llama.cpp (llama-cpp-python) on the same token ids from the same GGUF.
    #[arg(long)]
    pub llamacpp: bool,
    /// On a GPU: score the first N items again on the CPU in F32 at each precision and
    /// report how the device's letter probabilities and answers compare.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub check_cpu: usize,
    /// Write the rows as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `logprobs`.
#[derive(Args, Debug, Clone)]
pub struct LogprobsArgs {
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub shared: SharedArgs,
    #[arg(long)]
    pub out: PathBuf,
}

/// `export`.
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    pub dir: PathBuf,
    /// The CSV file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Only items that became biased at this precision.
    #[arg(long, value_parser = quantized_precision())]
    pub transitions_at: Option<Precision>,
    /// Only items of this category.
    #[arg(long)]
    pub category: Option<String>,
    /// Replace the CSV file when it exists.
    #[arg(long)]
    pub force: bool,
    /// Export an unfinished folder's items finished at every precision it has started.
    #[arg(long)]
    pub partial: bool,
}

/// The quantized precisions (q8, q6, q4, q3), listed in `--help`.
fn quantized_precision() -> impl TypedValueParser<Value = Precision> {
    let names: Vec<&'static str> = Precision::ALL
        .into_iter()
        .filter(|p| p.is_quantized())
        .map(Precision::as_str)
        .collect();
    clap::builder::PossibleValuesParser::new(names).try_map(|s| Precision::parse(&s))
}
