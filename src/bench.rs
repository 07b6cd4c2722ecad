//! `stereoscope bench`: prompt tokens/s and records/s per precision on the study's prompts,
//! optionally beside llama.cpp (llama-cpp-python) scoring the same token ids from the same
//! GGUF in the same run. Prints a table and writes JSON.

use crate::bbq::Item;
use crate::engine::quant;
use crate::engine::source::Resolved;
use crate::engine::{Compute, KvCache, Precision, Scheme};
use crate::error::{Error, Result};
use crate::prompt;
use crate::study::{Scorer, StudySpec};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// One measured engine configuration.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub engine: String,
    pub precision: String,
    pub items: usize,
    pub records: usize,
    /// Prompt tokens scored (the full prompts).
    pub prompt_tokens: u64,
    /// Tokens actually run through the model (prompt suffixes after a shared prefix, plus decoding).
    pub computed_tokens: u64,
    pub build_secs: f64,
    pub secs: f64,
}

impl BenchRow {
    pub fn prompt_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.secs
    }
    pub fn records_s(&self) -> f64 {
        self.records as f64 / self.secs
    }
}

/// Measure stereoscope on `items` at each precision; returns the rows and the prompts' ids.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    resolved: &Resolved,
    scheme: Scheme,
    items: &[Item],
    precisions: &[Precision],
    seeds: &[u64],
    compute: Compute,
    part_size: usize,
    device: &candle_core::Device,
) -> Result<(Vec<BenchRow>, Vec<Vec<u32>>)> {
    let (src, template, letters) = crate::study::load_for_scoring(resolved, None)?;
    let prompts = items
        .iter()
        .map(|it| src.tok.encode(&prompt::study_prompt(&template, it)?))
        .collect::<Result<Vec<_>>>()?;
    let spec = StudySpec {
        models: vec![resolved.clone()],
        scheme,
        precisions: precisions.to_vec(),
        seeds: seeds.to_vec(),
        noise_seeds: Vec::new(),
        compute,
        device: String::new(),
        part_size,
        ppl: None,
        protocol: Default::default(),
        option_orders: vec![prompt::OptionOrder::STUDY],
    };
    let mut rows = Vec::new();
    for &p in precisions {
        let t0 = Instant::now();
        let built = quant::build(&src, p, scheme, compute, device)?;
        let build_secs = t0.elapsed().as_secs_f64();
        let scorer = Scorer {
            spec: &spec,
            slug: &src.slug,
            precision: p,
            built: &built,
            src: &src,
            template: &template,
            letters: &letters,
        };
        let t1 = Instant::now();
        let (mut tokens, mut computed, mut records) = (0, 0, 0);
        for part in items.chunks(part_size.max(1)) {
            let mut cache = KvCache::default();
            let mut prev = Vec::new();
            for it in part {
                let (recs, t, c) =
                    scorer.score(it, prompt::OptionOrder::STUDY, &mut cache, &mut prev)?;
                records += recs.len();
                tokens += t;
                computed += c;
            }
        }
        rows.push(BenchRow {
            engine: format!(
                "stereoscope ({})",
                match (p, scheme, compute) {
                    (Precision::Bf16, _, _) => "bf16",
                    (_, Scheme::Mlx, _) => "mlx",
                    (_, Scheme::Gguf, Compute::Dequant) => "gguf dequant",
                    (_, Scheme::Gguf, Compute::Kernels) => "gguf kernels",
                }
            ),
            precision: p.as_str().into(),
            items: items.len(),
            records,
            prompt_tokens: tokens,
            computed_tokens: computed,
            build_secs,
            secs: t1.elapsed().as_secs_f64(),
        });
    }
    Ok((rows, prompts))
}

/// Run llama.cpp through `scripts/llamacpp_peer.py` on the same token ids.
pub fn llamacpp_peer(
    script: &Path,
    gguf: &Path,
    prompts: &[Vec<u32>],
    threads: usize,
    part_size: usize,
) -> Result<Vec<BenchRow>> {
    let tmp = std::env::temp_dir().join(format!(
        "stereoscope-bench-prompts-{}.json",
        std::process::id()
    ));
    std::fs::write(&tmp, serde_json::to_string(prompts).unwrap_or_default())
        .map_err(|e| Error::Input(format!("cannot write {}: {e}", tmp.display())))?;
    let out = std::process::Command::new(
        std::env::var("STEREOSCOPE_PYTHON").unwrap_or_else(|_| "python3".into()),
    )
    .arg(script)
    .arg(gguf)
    .arg(&tmp)
    .arg(threads.to_string())
    .arg(part_size.to_string())
    .output()
    .map_err(|e| Error::Input(format!("cannot run {}: {e}", script.display())))?;
    let _ = std::fs::remove_file(&tmp);
    if !out.status.success() {
        return Err(Error::Input(format!(
            "llama.cpp peer failed (pip install llama-cpp-python): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )));
    }
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Input(format!("llama.cpp peer printed no JSON: {e}")))?;
    Ok(v.iter()
        .map(|r| BenchRow {
            engine: r["engine"].as_str().unwrap_or("llama.cpp").into(),
            precision: r["precision"].as_str().unwrap_or("?").into(),
            items: prompts.len(),
            records: 0,
            prompt_tokens: r["prompt_tokens"].as_u64().unwrap_or(0),
            computed_tokens: r["computed_tokens"].as_u64().unwrap_or(0),
            build_secs: r["load_secs"].as_f64().unwrap_or(0.0),
            secs: r["secs"].as_f64().unwrap_or(f64::NAN),
        })
        .collect())
}

/// The rows as a Markdown table.
pub fn table(rows: &[BenchRow]) -> String {
    let mut s = String::from(
        "| engine | precision | items | prompt tok/s | computed tok/s | records/s | build s |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let rec = if r.records > 0 {
            format!("{:.2}", r.records_s())
        } else {
            "-".into()
        };
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {} | {:.1} |\n",
            r.engine,
            r.precision,
            r.items,
            r.prompt_tok_s(),
            r.computed_tokens as f64 / r.secs,
            rec,
            r.build_secs
        ));
    }
    s
}

/// Write, for each precision, the log-probabilities of the next token at the answer
/// position of every prompt (`{precision}.f32`: little-endian f32, prompts × vocabulary),
/// with `prompts.json` (token ids) and `letters.json` (the letter token ids), for the
/// parity check against mlx-lm (scripts/parity.py).
pub fn dump_logprobs(
    resolved: &Resolved,
    scheme: Scheme,
    items: &[Item],
    precisions: &[Precision],
    device: &candle_core::Device,
    out: &Path,
) -> Result<()> {
    let (src, template, letters) = crate::study::load_for_scoring(resolved, None)?;
    let texts = items
        .iter()
        .map(|it| prompt::study_prompt(&template, it))
        .collect::<Result<Vec<_>>>()?;
    let prompts = texts
        .iter()
        .map(|t| src.tok.encode(t))
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(out)
        .map_err(|e| Error::Input(format!("cannot create {}: {e}", out.display())))?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(out.join(name), bytes)
            .map_err(|e| Error::Input(format!("cannot write {}: {e}", out.join(name).display())))
    };
    write(
        "prompts.json",
        serde_json::json!({"ids": prompts, "texts": texts})
            .to_string()
            .as_bytes(),
    )?;
    write(
        "letters.json",
        serde_json::to_string(&letters.ids)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    for &p in precisions {
        let built = quant::build(&src, p, scheme, Compute::Dequant, device)?;
        let mut bytes = Vec::with_capacity(prompts.len() * src.cfg.vocab_size * 4);
        for ids in &prompts {
            let (logits, _) = built.model.forward(ids, &KvCache::default())?;
            let logits: Vec<f32> = logits.to_vec1()?;
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + logits
                    .iter()
                    .map(|&l| (l as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            for l in logits {
                bytes.extend_from_slice(&((l as f64 - lse) as f32).to_le_bytes());
            }
        }
        write(&format!("{}.f32", p.as_str()), &bytes)?;
        eprintln!("{}: {} prompts", p.as_str(), prompts.len());
    }
    Ok(())
}
