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

/// Write a tiny llama-architecture GGUF (hidden 256 so k-quants apply) to `path`. Its tied
/// random head practically never puts a letter first: every answer is invalid.
pub fn write_tiny_gguf(path: &Path) {
    write_tiny(path, "llama", None);
}

/// Write the tiny llama GGUF with an untied head (`output.weight`) that answers as an
/// instruct model does: the first token is almost always a letter, which letter depends on
/// the prompt; a few replies start with `T` and are decoded and parsed, a few are empty
/// (invalid). Valid answers of all three roles, seeds that sometimes disagree, and quantized
/// precisions that change some answers (see `answering_head`).
pub fn write_answering_gguf(path: &Path) {
    write_tiny_model(path, "llama", None, Head::Answering);
}

/// The output head of a tiny model.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Tied to the token embeddings (random: the answers are invalid).
    Tied,
    /// An untied `output.weight` whose letter rows dominate.
    Answering,
}

/// The token ids of the letters: the bytes `A`, `B`, `C` and the tokens ` A`, ` B`, ` C`.
pub const LETTER_IDS: [usize; 6] = [65, 66, 67, 256, 257, 258];

/// The tokens the answering model's head weighs as it does the letters: `T` (a reply such as
/// "The answer…", decoded further and parsed) and `<|im_end|>` (an empty reply: invalid).
pub const RIVAL_IDS: [usize; 2] = [84, 260];

/// The tiny model's tensors (GGUF names) and metadata, written as GGUF of architecture
/// `arch` (`qwen2` adds q/k/v biases); with `hf_dir`, the same model is also written as a
/// Hugging Face folder.
pub fn write_tiny(path: &Path, arch: &str, hf_dir: Option<&Path>) {
    write_tiny_model(path, arch, hf_dir, Head::Tied);
}

/// [`write_tiny`] with a choice of output head.
pub fn write_tiny_model(path: &Path, arch: &str, hf_dir: Option<&Path>, head: Head) {
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
    let keys: Vec<String> = [
        "embedding_length",
        "feed_forward_length",
        "block_count",
        "attention.head_count",
        "attention.head_count_kv",
        "context_length",
        "rope.freq_base",
        "attention.layer_norm_rms_epsilon",
    ]
    .iter()
    .map(|x| format!("{arch}.{x}"))
    .collect();
    let k = |name: &str| -> &str {
        keys.iter()
            .find(|x| x.ends_with(&format!(".{name}")))
            .map(|s| s.as_str())
            .expect("key")
    };
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String(arch.into())),
        (k("embedding_length"), Value::U32(hidden as u32)),
        (k("feed_forward_length"), Value::U32(ffn as u32)),
        (k("block_count"), Value::U32(layers as u32)),
        (k("attention.head_count"), Value::U32(heads)),
        (k("attention.head_count_kv"), Value::U32(kv)),
        (k("context_length"), Value::U32(2048)),
        (k("rope.freq_base"), Value::F32(10000.0)),
        (k("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
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
    if head == Head::Answering {
        let head = answering_head(&ts[0].1, n_vocab, hidden);
        ts.push(("output.weight".into(), head));
    }
    if let Some(dir) = hf_dir {
        write_hf_dir(
            dir,
            arch,
            &ts,
            &md,
            template,
            (hidden, ffn, layers, heads, kv, n_vocab),
        );
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

/// The answering model's head. Most rows are small and random. The rows of the letters and
/// of [`RIVAL_IDS`] have a shared component along the embedding of the prompt's last token
/// (`\n`, id 10, which dominates the final hidden state, so they all score high) plus a
/// random component orthogonal to it: large for the letters (which letter wins depends on
/// the rest of the hidden state, that is on the item), small for the rivals, whose shared
/// component is set so that `T` starts about one reply in ten and `<|im_end|>` ends about
/// one in twelve.
fn answering_head(embed: &Tensor, n_vocab: usize, hidden: usize) -> Tensor {
    let nl: Vec<f32> = embed.get(10).and_then(|r| r.to_vec1()).expect("row");
    let norm = nl.iter().map(|x| x * x).sum::<f32>().sqrt();
    let unit: Vec<f32> = nl.iter().map(|x| x / norm).collect();
    let mut seed = 1234u64;
    let rows: Vec<Vec<f32>> = (0..n_vocab)
        .map(|i| {
            // (scale of the random component, the shared component)
            let (scale, shared) = match i {
                _ if i == RIVAL_IDS[0] => (0.1, 0.9),
                _ if i == RIVAL_IDS[1] => (0.1, 1.1),
                _ if LETTER_IDS.contains(&i) => (0.5, 1.0),
                _ => (0.02, 0.0),
            };
            let r: Vec<f32> = rand_tensor(&[hidden], &mut seed, scale)
                .to_vec1()
                .expect("row");
            if shared == 0.0 {
                return r;
            }
            let along: f32 = r.iter().zip(&unit).map(|(a, b)| a * b).sum();
            r.iter()
                .zip(&unit)
                .map(|(a, u)| a - along * u + shared * u)
                .collect()
        })
        .collect();
    let flat: Vec<f32> = rows.into_iter().flatten().collect();
    Tensor::from_vec(flat, (n_vocab, hidden), &Device::Cpu).expect("head")
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

/// The answers of a results folder per precision (study seeds, the study's option order),
/// read back with pyarrow: role counts, and how many answers differ from BF16's for the same
/// item and seed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mix {
    pub biased: u64,
    pub anti: u64,
    pub unknown: u64,
    pub invalid: u64,
    /// Records whose answer differs from BF16's (same item, seed and order); 0 at BF16.
    pub changed: u64,
}

impl Mix {
    pub fn n(&self) -> u64 {
        self.biased + self.anti + self.unknown + self.invalid
    }

    pub fn valid_share(&self) -> f64 {
        (self.n() - self.invalid) as f64 / self.n().max(1) as f64
    }
}

pub fn answer_mix(out: &Path) -> std::collections::BTreeMap<String, Mix> {
    let script = "import sys, pyarrow.dataset as ds\n\
        t = ds.dataset(sys.argv[1] + '/records', partitioning='hive').to_table().to_pandas()\n\
        t = t[(t.seed_set == 'study') & (t.option_order == '012')]\n\
        key = ['model', 'scheme', 'category', 'example_id', 'seed']\n\
        base = t[t.precision == 'bf16'].set_index(key).answer\n\
        for p, g in t.groupby('precision'):\n\
        \tc = g.role.value_counts()\n\
        \tj = g.set_index(key).answer.to_frame('a').join(base.rename('b'), how='inner')\n\
        \tch = int((j.a.fillna(-1) != j.b.fillna(-1)).sum())\n\
        \tprint(p, *[int(c.get(r, 0)) for r in ['biased', 'anti', 'unknown', 'invalid']], ch)\n";
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(out)
        .output()
        .expect("python3 runs");
    assert!(
        o.status.success(),
        "pyarrow failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| f[i].parse::<u64>().expect("count");
            let mix = Mix {
                biased: n(1),
                anti: n(2),
                unknown: n(3),
                invalid: n(4),
                changed: n(5),
            };
            (f[0].to_string(), mix)
        })
        .collect()
}

/// Checks that a run of the answering model has data a statistic can be wrong about: at
/// every precision more than half the answers valid, and at BF16 at least one answer of each
/// role. Returns the mix for further checks.
pub fn assert_answering(out: &Path) -> std::collections::BTreeMap<String, Mix> {
    let mix = answer_mix(out);
    eprintln!("answers per precision in {}: {mix:?}", out.display());
    assert!(!mix.is_empty(), "no records in {}", out.display());
    for (p, m) in &mix {
        assert!(m.valid_share() > 0.5, "{p}: valid share {m:?}");
    }
    let b = mix.get("bf16").expect("bf16 records");
    assert!(
        b.biased > 0 && b.anti > 0 && b.unknown > 0,
        "bf16 answers lack a role: {b:?}"
    );
    mix
}

/// Run `scripts/check_report.py`, which recomputes the statistics of `report` from the
/// records with pandas, scipy and statsmodels (its docstring lists what it checks), on a
/// results folder.
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

/// The same model as a Hugging Face folder: config.json, model.safetensors, tokenizer.json
/// (the GGUF tokenizer saved by the tokenizers crate) and tokenizer_config.json.
fn write_hf_dir(
    dir: &Path,
    arch: &str,
    ts: &[(String, Tensor)],
    md: &[(&str, Value)],
    template: &str,
    (hidden, ffn, layers, heads, kv, vocab): (usize, usize, usize, u32, u32, usize),
) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let tensors: std::collections::HashMap<String, Tensor> = ts
        .iter()
        .map(|(n, t)| {
            (
                stereoscope::engine::convert::hf_name(n).expect("hf name"),
                t.clone(),
            )
        })
        .collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).expect("safetensors");
    let config = serde_json::json!({
        "model_type": arch, "hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 2048,
        "tie_word_embeddings": !ts.iter().any(|(n, _)| n == "output.weight"),
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    // Build the tokenizer through the GGUF path and save it as tokenizer.json.
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let tmp = dir.join("tokenizer-source.gguf");
    {
        let mut f = std::fs::File::create(&tmp).expect("create");
        gguf_file::write(&mut f, &md_refs, &[]).expect("write");
    }
    let mut f = std::fs::File::open(&tmp).expect("open");
    let ct = gguf_file::Content::read(&mut f).expect("read");
    let tok = stereoscope::engine::tokenizer::from_gguf(&ct, "tiny").expect("tokenizer");
    tok.inner
        .save(dir.join("tokenizer.json"), false)
        .expect("save tokenizer");
    std::fs::remove_file(&tmp).expect("rm");
    let tc = serde_json::json!({"chat_template": template, "eos_token": "<|im_end|>", "bos_token": "<|endoftext|>"});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).expect("tokenizer_config");
}

/// A minimal HTTP server for files under `dir`: `GET /PATH` with optional `Range`, answering
/// as the Hugging Face hub's `resolve` endpoint does (etag, x-repo-commit, Content-Range);
/// `prefix` is stripped from request paths. Returns the base URL.
pub fn serve_files(dir: PathBuf, prefix: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            use std::io::{BufRead, Write};
            let mut reader = std::io::BufReader::new(s.try_clone().expect("clone"));
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let mut range_start = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map(|n| n == 0).unwrap_or(true) || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range_start = v
                        .split('-')
                        .next()
                        .and_then(|x| x.trim().parse::<usize>().ok());
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
            let rel = path
                .strip_prefix(prefix)
                .unwrap_or(&path)
                .trim_start_matches('/')
                .to_string();
            match std::fs::read(dir.join(&rel)) {
                Ok(body) if !rel.is_empty() => {
                    let start = range_start.unwrap_or(0).min(body.len());
                    let end = body.len();
                    let part = &body[start..end];
                    let etag = format!("{:x}", body.len() * 31 + rel.len());
                    let _ = write!(
                        s,
                        "HTTP/1.1 {}\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\netag: \"{}\"\r\nx-repo-commit: 0123456789abcdef0123456789abcdef01234567\r\nConnection: close\r\n\r\n",
                        if range_start.is_some() {
                            "206 Partial Content"
                        } else {
                            "200 OK"
                        },
                        part.len(),
                        start,
                        end.saturating_sub(1),
                        body.len(),
                        etag
                    );
                    let _ = s.write_all(part);
                }
                _ => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        }
    });
    format!("http://{addr}")
}

/// A fresh temporary folder for one test.
pub fn tempdir(tag: &str) -> PathBuf {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let d = std::env::temp_dir().join(format!("stereoscope-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

/// The finished part files (`part-*.parquet`) of a results folder, sorted.
pub fn part_files(root: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![root.join("records")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// Fails the calling test, naming what is missing, when mlx-lm (the reference for MLX
/// numerics) cannot be imported. scripts/test installs it.
pub fn require_mlx_lm(test: &str) {
    let ok = Command::new("python3")
        .args(["-c", "import mlx.core, mlx_lm"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{test} compares against mlx-lm, which is not installed: pip install \"mlx[cpu]\" mlx-lm (scripts/test does)"
    );
}

/// A tiny random-weight model of architecture `arch` (llama, mistral, qwen2, phi3) as a
/// Hugging Face folder with BF16 safetensors, each architecture with what sets it apart:
/// llama an untied head and llama3 rotary scaling, mistral an explicit head_dim smaller than
/// hidden/heads, qwen2 q/k/v biases and tied embeddings, phi3 fused `qkv_proj` and
/// `gate_up_proj` and longrope scaling. Hidden size 128 so MLX groups of 64 apply.
pub fn write_tiny_arch(dir: &Path, arch: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    // The tokenizer files of the tiny GGUF model, saved as a folder.
    let tok_src = dir.join("tokenizer-src");
    write_tiny(&dir.join("tokenizer-src.gguf"), "llama", Some(&tok_src));
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tok_src.join(f), dir.join(f)).expect("copy tokenizer");
    }
    std::fs::remove_dir_all(&tok_src).expect("rm");
    std::fs::remove_file(dir.join("tokenizer-src.gguf")).expect("rm");
    let (vocab, hidden, ffn, layers) = (262usize, 128usize, 256usize, 2usize);
    let (heads, kv, head_dim) = match arch {
        "mistral" => (4usize, 2usize, 16usize),
        _ => (4, 2, 32),
    };
    let mut seed = 11u64 + arch.len() as u64;
    let mut ts: Vec<(String, Tensor)> = Vec::new();
    let mut add = |name: String, shape: &[usize], scale: f32, offset: f32| {
        let t = (rand_tensor(shape, &mut seed, scale) + offset as f64).expect("offset");
        ts.push((name, t));
    };
    add(
        "model.embed_tokens.weight".into(),
        &[vocab, hidden],
        1.0,
        0.0,
    );
    add("model.norm.weight".into(), &[hidden], 0.1, 1.0);
    if arch != "qwen2" {
        add("lm_head.weight".into(), &[vocab, hidden], 0.1, 0.0);
    }
    let (q, kvd) = (heads * head_dim, kv * head_dim);
    for l in 0..layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        if arch == "phi3" {
            add(
                p("self_attn.qkv_proj.weight"),
                &[q + 2 * kvd, hidden],
                0.1,
                0.0,
            );
            add(p("mlp.gate_up_proj.weight"), &[2 * ffn, hidden], 0.1, 0.0);
        } else {
            add(p("self_attn.q_proj.weight"), &[q, hidden], 0.1, 0.0);
            add(p("self_attn.k_proj.weight"), &[kvd, hidden], 0.1, 0.0);
            add(p("self_attn.v_proj.weight"), &[kvd, hidden], 0.1, 0.0);
            add(p("mlp.gate_proj.weight"), &[ffn, hidden], 0.1, 0.0);
            add(p("mlp.up_proj.weight"), &[ffn, hidden], 0.1, 0.0);
        }
        if arch == "qwen2" {
            add(p("self_attn.q_proj.bias"), &[q], 0.5, 0.0);
            add(p("self_attn.k_proj.bias"), &[kvd], 0.5, 0.0);
            add(p("self_attn.v_proj.bias"), &[kvd], 0.5, 0.0);
        }
        add(p("self_attn.o_proj.weight"), &[hidden, q], 0.1, 0.0);
        add(p("mlp.down_proj.weight"), &[hidden, ffn], 0.1, 0.0);
        add(p("input_layernorm.weight"), &[hidden], 0.1, 1.0);
        add(p("post_attention_layernorm.weight"), &[hidden], 0.1, 1.0);
    }
    let tensors: std::collections::HashMap<String, Tensor> = ts
        .into_iter()
        .map(|(n, t)| (n, t.to_dtype(candle_core::DType::BF16).expect("bf16")))
        .collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).expect("save");
    let mut config = serde_json::json!({
        "model_type": arch, "hidden_size": hidden, "intermediate_size": ffn,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
        "vocab_size": vocab, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 2048, "tie_word_embeddings": arch == "qwen2",
        "torch_dtype": "bfloat16",
    });
    match arch {
        "llama" => {
            config["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
        }
        "mistral" => {
            config["head_dim"] = serde_json::json!(head_dim);
            config["sliding_window"] = serde_json::Value::Null;
        }
        "phi3" => {
            let half = head_dim / 2;
            let short: Vec<f64> = (0..half).map(|i| 1.0 + 0.05 * i as f64).collect();
            let long: Vec<f64> = (0..half).map(|i| 1.0 + 0.5 * i as f64).collect();
            config["rope_scaling"] = serde_json::json!({"type": "longrope",
                "short_factor": short, "long_factor": long});
            config["max_position_embeddings"] = serde_json::json!(131072);
            config["original_max_position_embeddings"] = serde_json::json!(4096);
        }
        _ => {}
    }
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
}

/// Quantize the Hugging Face folder `src` into an MLX folder `out` with `mlx_lm.convert -q`
/// and the given extra arguments (`--q-bits 4 --q-group-size 64`, `--quant-predicate …`).
pub fn mlx_convert(src: &Path, out: &Path, args: &[&str]) {
    let r = Command::new("python3")
        .args(["-m", "mlx_lm", "convert", "--hf-path"])
        .arg(src)
        .arg("--mlx-path")
        .arg(out)
        .arg("-q")
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        r.status.success(),
        "mlx_lm convert failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
}

/// The largest absolute difference between two vectors of logits, after checking that they
/// have the same, non-zero length (a shorter side would hide differences).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert!(!a.is_empty(), "nothing to compare");
    assert_eq!(a.len(), b.len(), "compared vectors differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}
