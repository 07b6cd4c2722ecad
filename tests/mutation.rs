//! Deterministic mutation tests of the readers of untrusted files: a valid input of each
//! kind (BBQ JSONL lines, a GGUF file, a safetensors file, a manifest) is mutated a few
//! thousand times by a fixed-seed generator (bytes overwritten, inserted, deleted, chunks
//! copied, lengths set to extreme values, the file cut short), written to a file and read by
//! the real reader. Every input must give `Ok` or an error; a panic fails the test and names
//! the seed input, the iteration and where the mutated file was kept. The same readers are
//! fuzzed for longer by the cargo-fuzz targets in `fuzz/` (see RELIABILITY.md).
mod common;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

/// xorshift64*: a fixed sequence, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that break length and count fields: 0, 1, around powers of two, the maximum.
const EXTREMES: [u64; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    i64::MAX as u64,
    u64::MAX,
];

/// One to four mutations of `input`.
fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len());
        match rng.below(7) {
            0 if !b.is_empty() => b[at] = rng.next() as u8,
            1 if !b.is_empty() => b[at] ^= 1 << rng.below(8),
            2 => b.insert(at, rng.next() as u8),
            3 if !b.is_empty() => {
                let n = (1 + rng.below(16)).min(b.len() - at);
                b.drain(at..at + n);
            }
            4 if !b.is_empty() => {
                // A chunk copied elsewhere.
                let n = (1 + rng.below(32)).min(b.len() - at);
                let chunk = b[at..at + n].to_vec();
                let to = rng.below(b.len());
                b.splice(to..to, chunk);
            }
            5 if b.len() >= 8 => {
                // An extreme little-endian integer (a length, a count, an offset).
                let v = EXTREMES[rng.below(EXTREMES.len())];
                let width = [1, 2, 4, 8][rng.below(4)];
                let at = at.min(b.len() - width);
                b[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
            _ => b.truncate(at),
        }
    }
    b
}

/// Mutate `seed` `n` times; each mutated input is written to `file` and read by `read`,
/// which must not panic. A panicking input is kept beside `file` and named.
fn no_panics(name: &str, seed: &[u8], n: usize, file: &Path, read: impl Fn(&Path)) {
    std::fs::write(file, seed).expect("write seed");
    read(file);
    let mut rng = Rng(0x5EED_0000 + name.len() as u64);
    let mut panics = Vec::new();
    for i in 0..n {
        let input = mutate(seed, &mut rng);
        std::fs::write(file, &input).expect("write input");
        if std::panic::catch_unwind(AssertUnwindSafe(|| read(file))).is_err() {
            let kept = file.with_extension(format!("panic-{i}"));
            std::fs::write(&kept, &input).expect("keep input");
            panics.push(kept.display().to_string());
        }
    }
    assert!(
        panics.is_empty(),
        "{name}: {} of {n} mutated inputs panicked; kept as {}",
        panics.len(),
        panics.join(", ")
    );
}

fn dir(tag: &str) -> PathBuf {
    common::tempdir(&format!("mutation-{tag}"))
}

#[test]
fn mutated_bbq_lines_give_items_or_an_error() {
    let bbq = common::bbq_dir();
    let text = std::fs::read_to_string(bbq.join("Age.jsonl")).expect("Age.jsonl");
    let seed: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    let targets = Default::default();
    let d = dir("bbq");
    let read = |p: &Path| {
        let _ = stereoscope::bbq::read_category(p, &targets, false);
        let _ = stereoscope::bbq::read_category(p, &targets, true);
    };
    // The seed itself reads: the mutations start from a valid file.
    let items = stereoscope::bbq::read_category(
        &{
            let p = d.join("seed.jsonl");
            std::fs::write(&p, &seed).expect("seed");
            p
        },
        &targets,
        false,
    )
    .expect("the seed reads");
    assert_eq!(items.0.len(), 3);
    no_panics("bbq", seed.as_bytes(), 3000, &d.join("Age.jsonl"), read);
}

/// A safetensors file of three small tensors (F32, BF16, I64).
fn small_safetensors() -> Vec<u8> {
    let header = br#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},"c":{"dtype":"I64","shape":[1],"data_offsets":[32,40]}}"#;
    let mut seed = (header.len() as u64).to_le_bytes().to_vec();
    seed.extend_from_slice(header);
    seed.extend((0..40u8).map(|i| i.wrapping_mul(37)));
    seed
}

#[test]
fn mutated_safetensors_give_tensors_or_an_error() {
    let seed = small_safetensors();
    let d = dir("safetensors");
    let p = d.join("seed.safetensors");
    std::fs::write(&p, &seed).expect("seed");
    let t = stereoscope::engine::safetensors::load(&p).expect("the seed reads");
    assert_eq!(t.len(), 3);
    no_panics("safetensors", &seed, 3000, &d.join("m.safetensors"), |p| {
        let _ = stereoscope::engine::safetensors::load(p);
    });
}

/// A small llama GGUF (hidden 8, one layer, a byte-level vocabulary) in memory.
fn small_gguf() -> Vec<u8> {
    let mut tokens: Vec<String> = (0..256u32)
        .map(|b| char::from_u32(0x100 + b).expect("char").to_string())
        .collect();
    for s in ["<|im_start|>", "<|im_end|>"] {
        tokens.push(s.to_string());
    }
    let n_vocab = tokens.len();
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", Value::U32(8)),
        ("llama.feed_forward_length", Value::U32(16)),
        ("llama.block_count", Value::U32(1)),
        ("llama.attention.head_count", Value::U32(2)),
        ("llama.attention.head_count_kv", Value::U32(1)),
        ("llama.context_length", Value::U32(64)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.iter().map(|t| Value::String(t.clone())).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array((0..n_vocab).map(|_| Value::I32(1)).collect()),
        ),
        ("tokenizer.ggml.merges", Value::Array(vec![])),
        ("tokenizer.ggml.eos_token_id", Value::U32(257)),
        ("tokenizer.ggml.bos_token_id", Value::U32(256)),
        ("tokenizer.chat_template", Value::String("{{x}}".into())),
    ];
    let t = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.01).collect();
        let t = Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor");
        QTensor::quantize(&t, GgmlDType::F32).expect("qtensor")
    };
    let ts: Vec<(&str, QTensor)> = vec![
        ("token_embd.weight", t(&[n_vocab, 8])),
        ("output_norm.weight", t(&[8])),
        ("blk.0.attn_q.weight", t(&[8, 8])),
        ("blk.0.attn_k.weight", t(&[4, 8])),
        ("blk.0.attn_v.weight", t(&[4, 8])),
        ("blk.0.attn_output.weight", t(&[8, 8])),
        ("blk.0.ffn_gate.weight", t(&[16, 8])),
        ("blk.0.ffn_up.weight", t(&[16, 8])),
        ("blk.0.ffn_down.weight", t(&[8, 16])),
        ("blk.0.attn_norm.weight", t(&[8])),
        ("blk.0.ffn_norm.weight", t(&[8])),
    ];
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = ts.iter().map(|(k, v)| (*k, v)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md_refs, &t_refs).expect("write gguf");
    out.into_inner()
}

#[test]
fn mutated_gguf_files_give_a_model_or_an_error() {
    let seed = small_gguf();
    let d = dir("gguf");
    let p = d.join("seed.gguf");
    std::fs::write(&p, &seed).expect("seed");
    stereoscope::engine::gguf::validate(&p).expect("the seed's header reads");
    let m = stereoscope::engine::gguf::load("seed", &p).expect("the seed loads");
    assert_eq!(m.cfg.hidden_size, 8);
    no_panics("gguf", &seed, 2000, &d.join("m.gguf"), |p| {
        if stereoscope::engine::gguf::validate(p).is_ok() {
            let _ = stereoscope::engine::gguf::load("m", p);
        }
    });
}

#[test]
fn mutated_manifests_give_a_manifest_or_an_error() {
    use stereoscope::store::manifest::{Manifest, Plan, PlanItems, PlanModel};
    let plan = Plan {
        models: vec![PlanModel {
            slug: "tiny".into(),
            sha256: "ab".repeat(32),
            checkpoints: [("q4".to_string(), "cd".repeat(32))].into_iter().collect(),
        }],
        scheme: stereoscope::engine::Scheme::Gguf,
        precisions: vec![
            stereoscope::engine::Precision::Bf16,
            stereoscope::engine::Precision::Q4,
        ],
        seeds: vec![1, 2],
        compute: stereoscope::engine::Compute::Dequant,
        protocol: serde_json::json!({"system": "s", "user": "u {context}"}),
        selection: serde_json::json!({"categories": ["Age"], "limit": 4}),
        items: PlanItems {
            count: 4,
            sha256: "ef".repeat(32),
        },
        part_size: 2,
        noise_seeds: vec![7],
        option_orders: vec!["012".into(), "120".into()],
    };
    let mut m = Manifest::new(plan, None);
    m.runs
        .push(serde_json::json!({"started_at": "2026-01-01T00:00:00Z"}));
    let d = dir("manifest");
    let p = d.join("manifest.json");
    stereoscope::store::manifest::write_manifest_at(&p, &m).expect("write");
    stereoscope::store::manifest::read_manifest(&p).expect("the seed reads");
    let seed = std::fs::read(&p).expect("seed");
    no_panics("manifest", &seed, 3000, &d.join("m.json"), |p| {
        let _ = stereoscope::store::manifest::read_manifest(p);
    });
}

/// The offset just past `blk.0.attn_q.weight`'s name in a GGUF header: its tensor info
/// (n_dims as u32, then each dimension as u64).
fn after_q_name(b: &[u8]) -> usize {
    let name = b"blk.0.attn_q.weight";
    b.windows(name.len())
        .position(|w| w == name)
        .expect("the tensor's name in the header")
        + name.len()
}

/// [`small_gguf`] with the dimensions of `blk.0.attn_q.weight` set so that their product
/// passes `usize::MAX` (2^40 × 2^40): the header the mutation test above once found.
fn overflowing_gguf() -> Vec<u8> {
    let mut b = small_gguf();
    let at = after_q_name(&b);
    // Tensor info: name, then n_dims (u32), then each dimension (u64).
    assert_eq!(
        u32::from_le_bytes(b[at..at + 4].try_into().expect("u32")),
        2
    );
    for d in 0..2 {
        let o = at + 4 + 8 * d;
        b[o..o + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    }
    b
}

#[test]
fn a_gguf_whose_tensor_shape_overflows_is_an_error_naming_the_tensor() {
    // Found by the mutation test above: a header whose tensor dimensions multiply past
    // usize::MAX made the extent check panic (exit 101) instead of refusing the file.
    let p = dir("overflow").join("gguf-shape-overflow.gguf");
    std::fs::write(&p, overflowing_gguf()).expect("write");
    let e = stereoscope::engine::gguf::validate(&p).expect_err("refused");
    let e = e.to_string();
    assert!(e.contains("gguf-shape-overflow.gguf"), "{e}");
    assert!(e.contains("tensor `blk.0.attn_q.weight`"), "{e}");
    assert!(e.contains("does not fit any file"), "{e}");
}

#[test]
fn a_gguf_tensor_of_no_values_is_an_error_naming_the_tensor() {
    // Found by the gguf_header fuzz target: a tensor whose shape holds no values (or less
    // than one block) reached candle's tensor reader as an empty buffer, whose pointer is not
    // aligned for the tensor's type (`slice::from_raw_parts` precondition violated: the
    // process aborted). The header check now refuses it.
    let mut b = small_gguf();
    let at = after_q_name(&b);
    b[at + 4..at + 12].copy_from_slice(&0u64.to_le_bytes());
    let p = dir("empty-tensor").join("empty-tensor.gguf");
    std::fs::write(&p, b).expect("write");
    let e = stereoscope::engine::gguf::validate(&p).expect_err("refused");
    let e = e.to_string();
    assert!(
        e.contains("empty-tensor.gguf: tensor `blk.0.attn_q.weight`: shape [8, 0] holds 0 values"),
        "{e}"
    );
}

/// The seed inputs of the fuzz targets in `fuzz/seeds/`: the text ones are kept in the
/// repository, the binary ones (GGUF, safetensors) are written here, by `fuzz/run.sh`
/// before it fuzzes (`cargo test --test mutation -- --ignored write_fuzz_seeds`).
#[test]
#[ignore = "writes the binary fuzz seeds into fuzz/seeds; run by fuzz/run.sh"]
fn write_fuzz_seeds() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let write = |rel: &str, bytes: &[u8]| {
        let p = seeds.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, bytes).expect("write seed");
    };
    write("gguf_header/small-llama.gguf", &small_gguf());
    write("gguf_header/gguf-shape-overflow.gguf", &overflowing_gguf());
    write(
        "safetensors_header/three-tensors.safetensors",
        &small_safetensors(),
    );
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fixtures");
    write_config_fixtures(&fixtures);
}

/// The folders the `hf_config` fuzz target writes each input into as `config.json`: `hf`,
/// [`small_gguf`] converted to a Hugging Face folder (BF16, hidden 8, one layer), and `mlx`,
/// a folder of the same tokenizer whose weights (hidden 32, one layer, the embedding tied)
/// are packed as MLX 4-bit, group 32. Neither holds a `config.json`: the seeds in
/// `fuzz/seeds/hf_config/` are the configs that load them.
fn write_config_fixtures(fixtures: &Path) {
    let hf = fixtures.join("hf");
    let _ = std::fs::remove_dir_all(&hf);
    let g = dir("fixtures").join("small-llama.gguf");
    std::fs::write(&g, small_gguf()).expect("write");
    stereoscope::engine::convert::convert_gguf(&g, &hf).expect("convert");
    std::fs::remove_file(hf.join("config.json")).expect("rm config");
    let mlx = fixtures.join("mlx");
    let _ = std::fs::remove_dir_all(&mlx);
    std::fs::create_dir_all(&mlx).expect("mkdir");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(hf.join(f), mlx.join(f)).expect("copy tokenizer");
    }
    candle_core::safetensors::save(&mlx_tensors(), mlx.join("model.safetensors"))
        .expect("write safetensors");
}

/// The `mlx` fixture's tensors: every matrix packed (weight, scales, biases), norms F32.
fn mlx_tensors() -> std::collections::HashMap<String, Tensor> {
    use half::bf16;
    let (vocab, hidden, ffn, kv) = (258, 32, 64, 16);
    let mut out = std::collections::HashMap::new();
    let mut pack = |name: &str, rows: usize, cols: usize| {
        let w: Vec<bf16> = (0..rows * cols)
            .map(|i| bf16::from_f32(((i * 7919) % 13) as f32 * 0.01 - 0.06))
            .collect();
        let q = stereoscope::engine::mlx::quantize(&w, rows, cols, 4, 32).expect("quantize");
        let words = Tensor::from_vec(q.words, (rows, cols * 4 / 32), &Device::Cpu);
        let groups = (rows, cols / 32);
        let scales = Tensor::from_vec(q.scales, groups, &Device::Cpu);
        let biases = Tensor::from_vec(q.biases, groups, &Device::Cpu);
        out.insert(format!("{name}.weight"), words.expect("words"));
        out.insert(format!("{name}.scales"), scales.expect("scales"));
        out.insert(format!("{name}.biases"), biases.expect("biases"));
    };
    pack("model.embed_tokens", vocab, hidden);
    let l = "model.layers.0";
    pack(&format!("{l}.self_attn.q_proj"), hidden, hidden);
    pack(&format!("{l}.self_attn.k_proj"), kv, hidden);
    pack(&format!("{l}.self_attn.v_proj"), kv, hidden);
    pack(&format!("{l}.self_attn.o_proj"), hidden, hidden);
    pack(&format!("{l}.mlp.gate_proj"), ffn, hidden);
    pack(&format!("{l}.mlp.up_proj"), ffn, hidden);
    pack(&format!("{l}.mlp.down_proj"), hidden, ffn);
    for n in [
        "model.norm",
        "model.layers.0.input_layernorm",
        "model.layers.0.post_attention_layernorm",
    ] {
        let ones = Tensor::ones(hidden, candle_core::DType::F32, &Device::Cpu).expect("ones");
        out.insert(format!("{n}.weight"), ones);
    }
    out
}

/// Load `fixture` (a folder of [`write_config_fixtures`]) with `config` as its config.json,
/// as the `hf_config` fuzz target does, and build it at the precision it holds.
fn load_with_config(fixture: &Path, config: &Path) -> stereoscope::Result<String> {
    let d = dir(&format!(
        "config-{}",
        config.file_stem().and_then(|s| s.to_str()).unwrap_or("x")
    ));
    for e in std::fs::read_dir(fixture).expect("fixture") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), d.join(e.file_name())).expect("copy");
    }
    std::fs::copy(config, d.join("config.json")).expect("copy config");
    let held = stereoscope::engine::hf::held_precision(&d)?;
    let src = stereoscope::engine::hf::load("seed", &d)?;
    let p = held.unwrap_or(stereoscope::engine::Precision::Bf16);
    let built = stereoscope::engine::quant::build(
        &src,
        p,
        stereoscope::engine::Scheme::Mlx,
        stereoscope::engine::Compute::Dequant,
        &Device::Cpu,
    )?;
    built
        .model
        .forward(&[1, 2, 3], &Default::default())
        .map(|_| format!("{} {p}", src.cfg.architecture))
}

#[test]
fn the_fuzz_seeds_are_valid_inputs_of_their_readers() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let (items, skipped) = stereoscope::bbq::read_category(
        &seeds.join("bbq_jsonl/two-items.jsonl"),
        &Default::default(),
        false,
    )
    .expect("BBQ seed");
    assert_eq!((items.len(), skipped.len()), (2, 0));
    stereoscope::store::manifest::read_manifest(&seeds.join("manifest/manifest.json"))
        .expect("manifest seed");
    // The binary seeds as write_fuzz_seeds writes them.
    let d = dir("seeds");
    let g = d.join("small-llama.gguf");
    std::fs::write(&g, small_gguf()).expect("write");
    stereoscope::engine::gguf::load("seed", &g).expect("GGUF seed");
    let s = d.join("three-tensors.safetensors");
    std::fs::write(&s, small_safetensors()).expect("write");
    assert_eq!(
        stereoscope::engine::safetensors::load(&s)
            .expect("safetensors seed")
            .len(),
        3
    );
    // Each config seed loads its fixture folder and runs, but the one with zero heads.
    let fixtures = dir("config-fixtures");
    write_config_fixtures(&fixtures);
    let configs = seeds.join("hf_config");
    for (seed, folder, want) in [
        ("llama", "hf", "llama bf16"),
        ("qwen2-linear-rope", "hf", "qwen2 bf16"),
        ("llama3-rope", "hf", "llama bf16"),
        ("phi3-longrope", "hf", "phi3 bf16"),
        ("mistral-mlx-q4", "mlx", "mistral q4"),
    ] {
        let config = configs.join(format!("{seed}.json"));
        let got = load_with_config(&fixtures.join(folder), &config);
        assert_eq!(got.expect(seed), want);
    }
    let e = load_with_config(&fixtures.join("hf"), &configs.join("zero-heads.json"))
        .expect_err("zero heads are refused");
    assert!(
        e.to_string()
            .contains("config.json: model shapes: the attention head count is 0"),
        "{e}"
    );
}

/// The `llama` config seed with `from` replaced by `to`, loaded into the `hf` fixture.
fn load_edited_config(tag: &str, from: &str, to: &str) -> stereoscope::Result<String> {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/hf_config");
    let text = std::fs::read_to_string(seeds.join("llama.json")).expect("seed");
    assert!(text.contains(from), "{from}");
    let d = dir(&format!("edited-{tag}"));
    write_config_fixtures(&d);
    let config = d.join(format!("{tag}.json"));
    std::fs::write(&config, text.replace(from, to)).expect("write");
    load_with_config(&d.join("hf"), &config)
}

#[test]
fn a_config_whose_sizes_the_weights_do_not_have_is_an_error_naming_the_field() {
    // Before: a layer count of 10^11 made the build reserve 32 TB for the layer list (the
    // process aborted: "memory allocation of 32000000000000 bytes failed"); a head dimension
    // of 2^62 made the rotary tables panic ("capacity overflow"). Neither looked at the
    // weights. The sizes are now checked against them before anything is sized from them.
    let layers = "\"num_hidden_layers\": 1";
    let e = load_edited_config("layers", layers, "\"num_hidden_layers\": 100000000000")
        .expect_err("refused")
        .to_string();
    assert!(e.contains("config.json: model shapes: num_hidden_layers is 100000000000, but the weights hold 1 layer(s)"), "{e}");
    let heads = "\"num_attention_heads\": 2";
    for (tag, extra) in [
        ("head-dim", ""),
        (
            "head-dim-rope",
            ", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}",
        ),
    ] {
        let e = load_edited_config(
            tag,
            heads,
            &format!("{heads}, \"head_dim\": 4611686018427387904{extra}"),
        )
        .expect_err("refused")
        .to_string();
        assert!(e.contains("config.json: model shapes: num_attention_heads × head_dim is 9223372036854775808, but model.layers.0.self_attn.q_proj.weight has shape [8, 8]"), "{e}");
    }
    let e = load_edited_config(
        "ffn",
        "\"intermediate_size\": 16",
        "\"intermediate_size\": 17",
    )
    .expect_err("refused")
    .to_string();
    assert!(
        e.contains(
            "intermediate_size is 17, but model.layers.0.mlp.gate_proj.weight has shape [16, 8]"
        ),
        "{e}"
    );
    let e = load_edited_config("hidden", "\"hidden_size\": 8", "\"hidden_size\": 16")
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("hidden_size is 16, but model.embed_tokens.weight has shape [258, 8]"),
        "{e}"
    );
}
