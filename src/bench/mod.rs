//! `stereoscope bench`: prompt tokens/s and records/s per precision on the study's prompts,
//! optionally beside llama.cpp (llama-cpp-python) scoring the same token ids from the same
//! GGUF in the same run. Prints a table and writes JSON.

pub mod agreement;

use crate::bbq::Item;
use crate::engine::quant;
use crate::engine::sample::Letters;
use crate::engine::source::{Resolved, SourceModel};
use crate::engine::{Compute, KvCache, Precision, Scheme};
use crate::error::{Error, Result};
use crate::prompt::{self, ChatTemplate};
use crate::study::{Phases, Scored, Scorer, StudySpec, Unit};
use candle_core::Tensor;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::AtomicBool;
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
    /// Token positions the blocks ran, padding included (≥ `computed_tokens`).
    #[serde(default)]
    pub positions_run: u64,
    /// Loading the source model (0 for the precisions after the first).
    #[serde(default)]
    pub load_secs: f64,
    pub build_secs: f64,
    pub secs: f64,
    /// Prompts per forward pass.
    #[serde(default)]
    pub batch_size: usize,
    /// Bytes of weights the precision holds on the device.
    #[serde(default)]
    pub weight_bytes: u64,
    /// Peak resident memory of the process so far (VmHWM), bytes; 0 where unknown.
    #[serde(default)]
    pub peak_rss_bytes: u64,
    /// Peak device memory held for tensors while scoring at this batch size (weights,
    /// caches and activations; CUDA's memory-pool high-water mark), bytes; 0 where unknown.
    #[serde(default)]
    pub peak_device_bytes: u64,
    /// Unix time at the start and end of scoring, to line up with a device-memory log.
    #[serde(default)]
    pub started_unix: f64,
    #[serde(default)]
    pub ended_unix: f64,
    /// Matmul FLOPs per computed token (2 × the parameters of the blocks' matrices).
    #[serde(default)]
    pub flop_per_token: f64,
    /// Seconds queuing the prompts' forward passes on the device (the host's share of a
    /// forward), waiting for their logits, in the next-token distributions, and in sampling
    /// (decoding continuations included).
    #[serde(default)]
    pub launch_secs: f64,
    #[serde(default)]
    pub forward_secs: f64,
    #[serde(default)]
    pub dist_secs: f64,
    #[serde(default)]
    pub sample_secs: f64,
    /// Tokens per second of one forward pass of `RAW_BATCH` rows × `RAW_LEN` tokens from an
    /// empty cache (no sampling), the shape transformers' raw rate is measured on; 0 when
    /// not measured.
    #[serde(default)]
    pub raw_tok_s: f64,
}

impl BenchRow {
    pub fn prompt_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.secs
    }
    pub fn records_s(&self) -> f64 {
        self.records as f64 / self.secs
    }
    pub fn prompts_s(&self) -> f64 {
        self.items as f64 / self.secs
    }
}

/// What one bench run measures: a loaded model and how to score it.
pub struct Bench<'a> {
    pub src: &'a SourceModel,
    pub template: &'a ChatTemplate,
    pub letters: &'a Letters,
    pub scheme: Scheme,
    pub compute: Compute,
    pub part_size: usize,
    /// Each precision is scored once per batch size.
    pub batch_sizes: &'a [usize],
    pub load_secs: f64,
    pub device: &'a candle_core::Device,
    /// Items whose device records are compared with the CPU's F32 records of the same
    /// precision (`--check-cpu`); 0 compares nothing.
    pub cpu_check: usize,
}

/// What [`Bench::measure`] found.
pub struct Measured {
    pub rows: Vec<BenchRow>,
    /// The prompts' token ids.
    pub prompts: Vec<Vec<u32>>,
    /// Per precision, the device against the CPU (empty without `--check-cpu` or on the CPU).
    pub agreement: Vec<agreement::CpuAgreement>,
}

/// Peak resident memory (VmHWM) of this process in bytes, where /proc tells it.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// On a GPU, layer 0's packed `ffn_up` against the CPU: its quantization (made on the
/// device from the BF16 source) and its dequantization must both be MLX's, bit for bit.
fn check_packed(src: &SourceModel, built: &quant::Built, p: Precision) -> Result<()> {
    const NAME: &str = "blk.0.ffn_up.weight";
    let Some(up) = built
        .model
        .layers
        .first()
        .and_then(|l| l.gate_up.packed_part(1))
    else {
        return Ok(());
    };
    let bad = up.mismatches_against_cpu()?;
    eprintln!(
        "{}: device dequantization of {NAME} against the CPU's: {bad} of {} values differ",
        p.as_str(),
        up.rows() * up.cols()
    );
    if let Some(t) = src.tensors.get(NAME) {
        let cpu = quant::mlx_quantize(NAME, t, up.bits)?;
        let differ = up.differences_from(&cpu)?;
        eprintln!(
            "{}: device quantization of {NAME} against the CPU's: {differ} of {} words, scales and biases differ",
            p.as_str(),
            cpu.words.len() + cpu.scales.len() + cpu.biases.len()
        );
    }
    Ok(())
}

/// Matmul FLOPs per token of the transformer blocks and the output layer at one position.
fn flop_per_token(cfg: &crate::engine::ModelConfig) -> f64 {
    let (h, i) = (cfg.hidden_size as f64, cfg.intermediate_size as f64);
    let (q, kv) = (
        (cfg.num_heads * cfg.head_dim) as f64,
        (cfg.num_kv_heads * cfg.head_dim) as f64,
    );
    2.0 * cfg.num_layers as f64 * (h * (q + 2.0 * kv) + q * h + 3.0 * h * i)
}

impl Bench<'_> {
    /// Measure stereoscope on `items` at each precision; returns the rows and the prompts' ids.
    pub fn measure(
        &self,
        items: &[Item],
        precisions: &[Precision],
        seeds: &[u64],
    ) -> Result<Measured> {
        let src = self.src;
        let prompts = self.prompts(items)?;
        let spec = StudySpec {
            models: Vec::new(),
            scheme: self.scheme,
            precisions: precisions.to_vec(),
            seeds: seeds.to_vec(),
            noise_seeds: Vec::new(),
            compute: self.compute,
            device: String::new(),
            part_size: self.part_size,
            batch_size: 1,
            ppl: None,
            protocol: Default::default(),
            option_orders: vec![prompt::OptionOrder::STUDY],
        };
        let mut rows = Vec::new();
        let mut agreement = Vec::new();
        for (k, &p) in precisions.iter().enumerate() {
            let t0 = Instant::now();
            let built = quant::build(src, p, self.scheme, self.compute, self.device)?;
            let build_secs = t0.elapsed().as_secs_f64();
            if !self.device.is_cpu() {
                check_packed(src, &built, p)?;
            }
            let raw_tok_s = if self.device.is_cpu() {
                0.0
            } else {
                raw_forward_tok_s(&built.model, RAW_BATCH, RAW_LEN, 5)?
            };
            if raw_tok_s > 0.0 {
                eprintln!(
                    "{}: raw forward {RAW_BATCH} × {RAW_LEN}: {raw_tok_s:.0} tok/s",
                    p.as_str()
                );
            }
            let mut kept = Vec::new();
            for &batch_size in self.batch_sizes {
                let spec = StudySpec {
                    batch_size,
                    ..spec.clone()
                };
                let (row, records) = self.score(&spec, &built, p, items)?;
                if kept.is_empty() {
                    kept = records;
                }
                rows.push(BenchRow {
                    load_secs: if k == 0 && rows.is_empty() {
                        self.load_secs
                    } else {
                        0.0
                    },
                    build_secs,
                    raw_tok_s,
                    ..row
                });
            }
            drop(built);
            if self.cpu_check > 0 && !self.device.is_cpu() {
                let a =
                    self.check_on_cpu(&spec, p, &items[..self.cpu_check.min(items.len())], &kept)?;
                eprintln!(
                    "{}: against the CPU (F32) on {} records: most probable letter {} same, answer {} same, max |Δ p| {:.2e}, max |Δ log p| {:.2e} over {} letters with p ≥ 1e-6",
                    p.as_str(),
                    a.records,
                    a.same_argmax,
                    a.same_answer,
                    a.max_abs_dp,
                    a.max_abs_dlogp,
                    a.logp_letters
                );
                agreement.push(a);
            }
        }
        Ok(Measured {
            rows,
            prompts,
            agreement,
        })
    }

    /// Score `items` with `p` built on the CPU and compare with the device's `records` of
    /// the same items.
    fn check_on_cpu(
        &self,
        spec: &StudySpec,
        p: Precision,
        items: &[Item],
        records: &[crate::store::Record],
    ) -> Result<agreement::CpuAgreement> {
        let built = agreement::cpu_build(self.src, p, self.scheme, self.compute)?;
        let scorer = Scorer {
            spec,
            slug: &self.src.slug,
            precision: p,
            built: &built,
            src: self.src,
            template: self.template,
            letters: self.letters,
        };
        let cpu = agreement::score_one_by_one(&scorer, items)?;
        agreement::compare(p, records, &cpu)
    }
}

impl Bench<'_> {
    /// The token ids of the study prompts of `items`.
    pub fn prompts(&self, items: &[Item]) -> Result<Vec<Vec<u32>>> {
        items
            .iter()
            .map(|it| {
                self.src
                    .tok
                    .encode(&prompt::study_prompt(self.template, it)?)
            })
            .collect()
    }

    /// Score `items` in parts as the study does: at a batch size above 1 every part one
    /// after another as one stream (the device running ahead), else prompt by prompt.
    /// `tally` gets each part's results.
    fn score_parts(
        &self,
        scorer: &Scorer,
        items: &[Item],
        phases: &Phases,
        tally: &mut impl FnMut(Vec<Scored>),
    ) -> Result<()> {
        let never = AtomicBool::new(false);
        let order = prompt::OptionOrder::STUDY;
        let parts = items.chunks(self.part_size.max(1));
        if scorer.spec.batch_size > 1 {
            let units: Vec<Unit> = parts.map(|items| Unit { items, order }).collect();
            return scorer.score_units(
                &units,
                &never,
                phases,
                |_, _| {},
                |_, scored| {
                    tally(scored);
                    Ok(())
                },
            );
        }
        for part in parts {
            let mut scored = Vec::with_capacity(part.len());
            scorer.score_in_turn(part, order, &never, |s| {
                scored.push(s);
                Ok(())
            })?;
            tally(scored);
        }
        Ok(())
    }

    /// Score `items` with one built precision at `spec.batch_size`.
    fn score(
        &self,
        spec: &StudySpec,
        built: &quant::Built,
        p: Precision,
        items: &[Item],
    ) -> Result<(BenchRow, Vec<crate::store::Record>)> {
        let src = self.src;
        let never = AtomicBool::new(false);
        let scorer = Scorer {
            spec,
            slug: &src.slug,
            precision: p,
            built,
            src,
            template: self.template,
            letters: self.letters,
        };
        // One batch of the measured size first, untimed, as a peer is measured: on a GPU
        // kernels load on first use and the library picks its algorithms per shape.
        let warm = &items[..items.len().min(spec.batch_size.max(1))];
        if !warm.is_empty() {
            scorer.score_part(warm, prompt::OptionOrder::STUDY, &never)?;
        }
        crate::engine::device::reset_memory_peak(self.device);
        let positions_before = built.model.positions_run();
        let started_unix = unix_now();
        let t1 = Instant::now();
        let (mut tokens, mut computed, mut records) = (0, 0, 0);
        let (mut kept, mut kept_items) = (Vec::new(), 0);
        let phases = Phases::default();
        let mut tally = |scored: Vec<Scored>| {
            for (recs, t, c) in scored {
                records += recs.len();
                tokens += t;
                computed += c;
                if kept_items < self.cpu_check {
                    kept_items += 1;
                    kept.extend(recs);
                }
            }
        };
        self.score_parts(&scorer, items, &phases, &mut tally)?;
        let secs = t1.elapsed().as_secs_f64();
        let positions = built.model.positions_run() - positions_before;
        eprintln!(
            "{} batch {}: {:.1} prompts/s (queuing forwards {:.2} s, waiting for them {:.2} s, distributions {:.2} s, sampling {:.2} s of {secs:.2} s; {:.2} positions run per token computed)",
            p.as_str(),
            spec.batch_size,
            items.len() as f64 / secs,
            phases.launch.get(),
            phases.forward.get(),
            phases.dists.get(),
            phases.sample.get(),
            positions as f64 / computed.max(1) as f64,
        );
        let row = BenchRow {
            engine: format!(
                "stereoscope ({})",
                match (p, self.scheme, self.compute) {
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
            positions_run: positions,
            load_secs: 0.0,
            build_secs: 0.0,
            secs,
            batch_size: spec.batch_size,
            weight_bytes: built.model.weight_bytes() as u64,
            peak_rss_bytes: peak_rss(),
            peak_device_bytes: crate::engine::device::memory_peak(self.device).unwrap_or(0),
            started_unix,
            ended_unix: unix_now(),
            flop_per_token: flop_per_token(&src.cfg),
            launch_secs: phases.launch.get(),
            forward_secs: phases.forward.get(),
            dist_secs: phases.dists.get(),
            sample_secs: phases.sample.get(),
            raw_tok_s: 0.0,
        };
        Ok((row, kept))
    }
}

/// The raw-forward shape: transformers' raw rate in BENCHMARKS.md is measured on it.
pub const RAW_BATCH: usize = 64;
pub const RAW_LEN: usize = 150;

/// Tokens per second of `reps` forward passes of `batch` rows × `len` tokens from an empty
/// cache, after one warm-up pass; the next-token logits are brought to the host each time,
/// as scoring does.
pub fn raw_forward_tok_s(
    model: &crate::engine::model::Transformer,
    batch: usize,
    len: usize,
    reps: usize,
) -> Result<f64> {
    let vocab = model.cfg.vocab_size as u32;
    let rows: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            (0..len)
                .map(|i| ((b * 7919 + i * 104_729) as u32) % vocab)
                .collect()
        })
        .collect();
    let rows: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
    let run = || -> Result<()> {
        let (logits, _) = model.forward_batch(&rows, &KvCache::default())?;
        crate::engine::download::Download::start(&logits)?.wait()?;
        Ok(())
    };
    run()?;
    let t0 = Instant::now();
    for _ in 0..reps {
        run()?;
    }
    Ok((batch * len * reps) as f64 / t0.elapsed().as_secs_f64())
}

/// TFLOP/s of a BF16 `n × n × n` matmul on `device` (the ceiling MFU is measured against),
/// timed over `reps` runs after a warm-up.
pub fn matmul_ceiling(device: &candle_core::Device, n: usize, reps: usize) -> Result<f64> {
    let dtype = crate::engine::quant::compute_dtype(device);
    let a = Tensor::ones((n, n), dtype, device)?;
    let b = Tensor::ones((n, n), dtype, device)?;
    let sync = |t: &Tensor| -> Result<()> {
        t.narrow(0, 0, 1)?
            .narrow(1, 0, 1)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(())
    };
    sync(&a.matmul(&b)?)?;
    let t0 = Instant::now();
    let mut last = None;
    for _ in 0..reps {
        last = Some(a.matmul(&b)?);
    }
    if let Some(c) = &last {
        sync(c)?;
    }
    device.synchronize()?;
    Ok(2.0 * (n as f64).powi(3) * reps as f64 / t0.elapsed().as_secs_f64() / 1e12)
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
            positions_run: 0,
            load_secs: r["load_secs"].as_f64().unwrap_or(0.0),
            build_secs: 0.0,
            secs: r["secs"].as_f64().unwrap_or(f64::NAN),
            batch_size: 1,
            weight_bytes: 0,
            peak_rss_bytes: 0,
            peak_device_bytes: 0,
            started_unix: 0.0,
            ended_unix: 0.0,
            flop_per_token: 0.0,
            launch_secs: 0.0,
            forward_secs: 0.0,
            dist_secs: 0.0,
            sample_secs: 0.0,
            raw_tok_s: 0.0,
        })
        .collect())
}

/// The rows as a Markdown table. MFU is matmul FLOPs of the computed tokens per second
/// over `ceiling` (TFLOP/s of a BF16 matmul timed in the same run), when given.
pub fn table(rows: &[BenchRow], ceiling: Option<f64>) -> String {
    let mut s = String::from(
        "| engine | precision | batch | items | prompts/s | records/s | prompt tok/s | computed tok/s | MFU | raw tok/s | queue s | wait s | dist s | sample s | load s | build s | weights GB | peak device GB | peak RSS GB |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let gb = |b: u64| {
        if b > 0 {
            format!("{:.2}", b as f64 / 1e9)
        } else {
            "-".into()
        }
    };
    for r in rows {
        let rec = if r.records > 0 {
            format!("{:.1}", r.records_s())
        } else {
            "-".into()
        };
        let computed = r.computed_tokens as f64 / r.secs;
        let mfu = match ceiling {
            Some(c) if r.flop_per_token > 0.0 => {
                format!("{:.1}%", 100.0 * computed * r.flop_per_token / (c * 1e12))
            }
            _ => "-".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {} | {:.0} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {} | {} | {} |\n",
            r.engine,
            r.precision,
            r.batch_size,
            r.items,
            r.prompts_s(),
            rec,
            r.prompt_tok_s(),
            computed,
            mfu,
            if r.raw_tok_s > 0.0 {
                format!("{:.0}", r.raw_tok_s)
            } else {
                "-".into()
            },
            r.launch_secs,
            r.forward_secs,
            r.dist_secs,
            r.sample_secs,
            r.load_secs,
            r.build_secs,
            gb(r.weight_bytes),
            gb(r.peak_device_bytes),
            gb(r.peak_rss_bytes),
        ));
    }
    s
}

/// The whole study's projected wall time on this machine from the measured rows: for each
/// of `models` models, loading once, then for each precision its build and `items` prompts
/// at the best measured prompts per second of that precision (seeds share a prompt's
/// forward pass).
pub fn projected_study_secs(rows: &[BenchRow], models: usize, items: usize) -> f64 {
    let ours: Vec<&BenchRow> = rows
        .iter()
        .filter(|r| r.engine.starts_with("stereoscope"))
        .collect();
    let load: f64 = ours.iter().map(|r| r.load_secs).sum();
    let mut best: std::collections::BTreeMap<&str, (f64, f64)> = Default::default();
    for r in &ours {
        let e = best
            .entry(r.precision.as_str())
            .or_insert((0.0, r.build_secs));
        e.0 = e.0.max(r.prompts_s());
    }
    let per_model: f64 = load
        + best
            .values()
            .map(|(rate, build)| build + items as f64 / rate)
            .sum::<f64>();
    per_model * models as f64
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(precision: &str, batch: usize, secs: f64, build: f64, load: f64) -> BenchRow {
        BenchRow {
            engine: "stereoscope (bf16)".into(),
            precision: precision.into(),
            items: 100,
            records: 500,
            prompt_tokens: 10_000,
            computed_tokens: 10_000,
            positions_run: 10_000,
            load_secs: load,
            build_secs: build,
            secs,
            batch_size: batch,
            weight_bytes: 0,
            peak_rss_bytes: 0,
            peak_device_bytes: 0,
            started_unix: 0.0,
            ended_unix: 0.0,
            flop_per_token: 0.0,
            launch_secs: 0.0,
            forward_secs: 0.0,
            dist_secs: 0.0,
            sample_secs: 0.0,
            raw_tok_s: 0.0,
        }
    }

    #[test]
    fn the_projection_takes_each_precisions_best_batch_size_once() {
        // bf16: 100 prompts in 1 s at batch 64 (the best), 2 s at batch 8; q4 in 4 s.
        let rows = [
            row("bf16", 8, 2.0, 3.0, 10.0),
            row("bf16", 64, 1.0, 3.0, 0.0),
            row("q4", 64, 4.0, 5.0, 0.0),
        ];
        // Per model: load 10 + bf16 (3 + 1000/100) + q4 (5 + 1000/25) = 68 s; 2 models.
        let secs = projected_study_secs(&rows, 2, 1000);
        assert!((secs - 136.0).abs() < 1e-9, "{secs}");
    }
}
