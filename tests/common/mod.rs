//! Test helpers: paths to the real binary and BBQ data, and a tiny random-weight llama GGUF
//! (real GGUF format, real byte-level BPE tokenizer metadata, ChatML template) written
//! with candle's GGUF writer.
#![allow(dead_code)]

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stereoscope"))
}

/// The BBQ folder: `STEREOSCOPE_TEST_BBQ`, else `../shared/bbq` beside the repository.
pub fn bbq_dir() -> PathBuf {
    let p = std::env::var_os("STEREOSCOPE_TEST_BBQ")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bbq"));
    assert!(
        p.join("Age.jsonl").is_file(),
        "BBQ data not found at {}; set STEREOSCOPE_TEST_BBQ",
        p.display()
    );
    p
}

/// The SmolLM2 demo GGUF: `STEREOSCOPE_TEST_MODEL`, else the cache where `fetch-model` puts it.
pub fn smollm2() -> PathBuf {
    let p = std::env::var_os("STEREOSCOPE_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("STEREOSCOPE_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    directories::ProjectDirs::from("org", "stereoscope", "stereoscope")
                        .expect("home folder")
                        .cache_dir()
                        .to_path_buf()
                });
            cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    assert!(
        p.is_file(),
        "SmolLM2 GGUF not found at {}; run `stereoscope fetch-model smollm2` (scripts/test does)",
        p.display()
    );
    p
}

/// Run the binary with `args` in `cwd`, with an isolated cache.
pub fn run(args: &[&str], cache: &Path) -> Output {
    Command::new(bin())
        .args(args)
        .env("STEREOSCOPE_CACHE", cache)
        .env_remove("STEREOSCOPE_BBQ_DIR")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// GPT-2's byte → printable character table.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut map = vec!['\0'; 256];
    for &b in &printable {
        map[b as usize] = char::from_u32(b).expect("char");
    }
    let mut next = 256;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            map[b as usize] = char::from_u32(next).expect("char");
            printable.push(b);
            next += 1;
        }
    }
    map
}

fn rand_tensor(shape: &[usize], seed: &mut u64, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (((*seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5) * 2.0 * scale
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

/// Write a tiny llama-architecture GGUF (hidden 256 so k-quants apply) to `path`.
pub fn write_tiny_gguf(path: &Path) {
    let chars = byte_chars();
    let mut tokens: Vec<String> = (0..256).map(|b| chars[b].to_string()).collect();
    let g = chars[b' ' as usize];
    for l in ["A", "B", "C"] {
        tokens.push(format!("{g}{l}"));
    }
    for s in ["<|im_start|>", "<|im_end|>", "<|endoftext|>"] {
        tokens.push(s.to_string());
    }
    let n_vocab = tokens.len();
    let types: Vec<Value> = (0..n_vocab)
        .map(|i| Value::I32(if i >= 259 { 3 } else { 1 }))
        .collect();
    let merges: Vec<Value> = ["A", "B", "C"]
        .iter()
        .map(|l| Value::String(format!("{g} {l}")))
        .collect();
    let template = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let (hidden, ffn, layers, heads, kv) = (256usize, 512usize, 2usize, 4u32, 2u32);
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", Value::U32(hidden as u32)),
        ("llama.feed_forward_length", Value::U32(ffn as u32)),
        ("llama.block_count", Value::U32(layers as u32)),
        ("llama.attention.head_count", Value::U32(heads)),
        ("llama.attention.head_count_kv", Value::U32(kv)),
        ("llama.context_length", Value::U32(2048)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.iter().map(|t| Value::String(t.clone())).collect()),
        ),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", Value::Array(merges)),
        ("tokenizer.ggml.eos_token_id", Value::U32(260)),
        ("tokenizer.ggml.bos_token_id", Value::U32(261)),
        ("tokenizer.chat_template", Value::String(template.into())),
    ];
    let mut seed = 7u64;
    let kvd = hidden / heads as usize * kv as usize;
    let mut ts: Vec<(String, Tensor)> = vec![
        (
            "token_embd.weight".into(),
            rand_tensor(&[n_vocab, hidden], &mut seed, 1.0),
        ),
        (
            "output_norm.weight".into(),
            Tensor::ones(hidden, candle_core::DType::F32, &Device::Cpu).expect("ones"),
        ),
    ];
    for l in 0..layers {
        let p = |s: &str| format!("blk.{l}.{s}");
        ts.push((
            p("attn_q.weight"),
            rand_tensor(&[hidden, hidden], &mut seed, 0.1),
        ));
        ts.push((
            p("attn_k.weight"),
            rand_tensor(&[kvd, hidden], &mut seed, 0.1),
        ));
        ts.push((
            p("attn_v.weight"),
            rand_tensor(&[kvd, hidden], &mut seed, 0.1),
        ));
        ts.push((
            p("attn_output.weight"),
            rand_tensor(&[hidden, hidden], &mut seed, 0.1),
        ));
        ts.push((
            p("ffn_gate.weight"),
            rand_tensor(&[ffn, hidden], &mut seed, 0.1),
        ));
        ts.push((
            p("ffn_up.weight"),
            rand_tensor(&[ffn, hidden], &mut seed, 0.1),
        ));
        ts.push((
            p("ffn_down.weight"),
            rand_tensor(&[hidden, ffn], &mut seed, 0.1),
        ));
        ts.push((
            p("attn_norm.weight"),
            Tensor::ones(hidden, candle_core::DType::F32, &Device::Cpu).expect("ones"),
        ));
        ts.push((
            p("ffn_norm.weight"),
            Tensor::ones(hidden, candle_core::DType::F32, &Device::Cpu).expect("ones"),
        ));
    }
    let qts: Vec<(String, QTensor)> = ts
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                QTensor::quantize(&t, GgmlDType::F32).expect("f32 qtensor"),
            )
        })
        .collect();
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qts.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).expect("create gguf");
    gguf_file::write(&mut f, &md_refs, &t_refs).expect("write gguf");
}

/// Count records per precision and unique (precision, category, example_id, seed) keys
/// through pyarrow's hive-partitioned dataset reader.
pub fn pyarrow_counts(records: &Path) -> String {
    let script = "import sys, pyarrow.dataset as ds\n\
        t = ds.dataset(sys.argv[1], partitioning='hive').to_table()\n\
        d = t.to_pydict()\n\
        keys = set(zip(d['model'], d['scheme'], d['precision'], d['category'], d['example_id'], d['seed']))\n\
        per = {}\n\
        for p in d['precision']: per[p] = per.get(p, 0) + 1\n\
        print(t.num_rows, len(keys), ','.join(f'{k}={per[k]}' for k in sorted(per)))\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(records)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pyarrow failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Run `scripts/check_report.py`, which recomputes every statistic of `report` with scipy
/// and statsmodels, on a results folder.
pub fn check_report(out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_report.py");
    let r = Command::new("python3")
        .arg(script)
        .arg(bin())
        .arg(out)
        .output()
        .expect("python3 runs");
    assert!(
        r.status.success(),
        "check_report.py disagrees:\n{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
}
