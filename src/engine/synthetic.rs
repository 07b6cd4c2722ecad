//! Random-weight models of the study's real shapes, made in process, for benchmarks that
//! need a 7B model without downloading one: Qwen2.5-7B-Instruct, Mistral-7B-Instruct-v0.3,
//! Phi-3.5-mini-instruct (and Qwen2.5-0.5B for a quick check). The weights are BF16 and
//! deterministic. A random model rarely starts its answer with a letter, which would make
//! every seed decode five tokens; so the final norm keeps one dimension and the output rows
//! of the letters A and B read it with opposite signs, which makes the first token a letter
//! (as a real instruct model's is) at no change in cost.

use super::model::{ModelConfig, RopeStyle};
use super::sample::Letters;
use super::source::SourceModel;
use super::tokenizer::Tok;
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use half::bf16;
use std::collections::BTreeMap;

/// The shapes `bench --synthetic` knows.
pub const SHAPES: [&str; 4] = ["qwen2.5-7b", "mistral-7b", "phi3.5-mini", "qwen2.5-0.5b"];

/// The configuration of a named shape.
pub fn shape(name: &str) -> Result<ModelConfig> {
    // (architecture, hidden, intermediate, layers, heads, kv heads, vocab, rope θ, tied)
    let (arch, h, i, l, nh, nkv, v, theta, tie) = match name {
        "qwen2.5-7b" => ("qwen2", 3584, 18944, 28, 28, 4, 152064, 1e6, false),
        "qwen2.5-0.5b" => ("qwen2", 896, 4864, 24, 14, 2, 151936, 1e6, true),
        "mistral-7b" => ("mistral", 4096, 14336, 32, 32, 8, 32768, 1e6, false),
        "phi3.5-mini" => ("phi3", 3072, 8192, 32, 32, 32, 32064, 1e4, false),
        other => {
            return Err(Error::Input(format!(
                "unknown synthetic shape `{other}`; use one of {}",
                SHAPES.join(", ")
            )));
        }
    };
    Ok(ModelConfig {
        architecture: arch.into(),
        hidden_size: h,
        intermediate_size: i,
        num_layers: l,
        num_heads: nh,
        num_kv_heads: nkv,
        head_dim: h / nh,
        vocab_size: v,
        rms_norm_eps: 1e-6,
        rope_theta: theta,
        rope_style: RopeStyle::Half,
        rope_freqs: Vec::new(),
        rope_mscale: 1.0,
        max_positions: 4096,
        tie_embeddings: tie,
    })
}

/// Weights drawn uniformly from ±`scale`, from a stream keyed by `key` (on all cores).
fn random(key: u64, rows: usize, cols: usize, scale: f32) -> Result<Tensor> {
    use rayon::prelude::*;
    let mut vals = vec![bf16::ZERO; rows * cols];
    vals.par_chunks_mut(cols.max(1))
        .enumerate()
        .for_each(|(r, row)| {
            let mut s = key ^ (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for v in row.iter_mut() {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                let u = (z >> 40) as f32 / (1u64 << 24) as f32;
                *v = bf16::from_f32((2.0 * u - 1.0) * scale);
            }
        });
    Ok(Tensor::from_vec(vals, (rows, cols), &Device::Cpu)?)
}

fn ones(n: usize) -> Result<Tensor> {
    Ok(Tensor::ones(n, candle_core::DType::F32, &Device::Cpu)?)
}

/// A random-weight model of shape `name` with tokenizer `tok` and chat template
/// `chat_template`.
pub fn model(name: &str, tok: Tok, chat_template: Option<String>) -> Result<SourceModel> {
    let cfg = shape(name)?;
    if tok.vocab_size() > cfg.vocab_size {
        return Err(Error::Input(format!(
            "the tokenizer has {} tokens, more than the {} of shape {name}",
            tok.vocab_size(),
            cfg.vocab_size
        )));
    }
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
    );
    let scale = |fan_in: usize| (3.0 / fan_in as f32).sqrt();
    let mut t: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut key = 1u64;
    let mut next = || {
        key += 1;
        key
    };
    t.insert("token_embd.weight".into(), random(next(), v, h, 1.0)?);
    for l in 0..cfg.num_layers {
        let n = |s: &str| format!("blk.{l}.{s}");
        t.insert(n("attn_q.weight"), random(next(), q, h, scale(h))?);
        t.insert(n("attn_k.weight"), random(next(), kv, h, scale(h))?);
        t.insert(n("attn_v.weight"), random(next(), kv, h, scale(h))?);
        t.insert(n("attn_output.weight"), random(next(), h, q, scale(q))?);
        t.insert(n("ffn_gate.weight"), random(next(), i, h, scale(h))?);
        t.insert(n("ffn_up.weight"), random(next(), i, h, scale(h))?);
        t.insert(n("ffn_down.weight"), random(next(), h, i, scale(i))?);
        t.insert(n("attn_norm.weight"), ones(h)?);
        t.insert(n("ffn_norm.weight"), ones(h)?);
        if cfg.architecture == "qwen2" {
            t.insert(n("attn_q.bias"), (ones(q)? * 0.01)?);
            t.insert(n("attn_k.bias"), (ones(kv)? * 0.01)?);
            t.insert(n("attn_v.bias"), (ones(kv)? * 0.01)?);
        }
    }
    // The final norm keeps dimension 0 alone; the letters A and B read it.
    let mut norm = vec![0f32; h];
    norm[0] = 1.0;
    t.insert(
        "output_norm.weight".into(),
        Tensor::from_vec(norm, h, &Device::Cpu)?,
    );
    let letters = Letters::find(&tok)?;
    let mut head = vec![bf16::ZERO; v * h];
    // ±2,000 × the normed dimension: a letter wins unless that dimension is within about
    // 0.005 of zero, so nearly every prompt is answered with a first-token letter.
    for (k, sign) in [(0usize, 2000.0f32), (1, -2000.0)] {
        for &id in &letters.ids[k] {
            head[id as usize * h] = bf16::from_f32(sign);
        }
    }
    let head = Tensor::from_vec(head, (v, h), &Device::Cpu)?;
    let mut cfg = cfg;
    if cfg.tie_embeddings {
        // A tied model's head is its embedding: keep the letter rows' reading there.
        cfg.tie_embeddings = false;
    }
    t.insert("output.weight".into(), head);
    Ok(SourceModel {
        id: format!("synthetic:{name}"),
        slug: format!("synthetic-{name}"),
        cfg,
        tensors: t,
        tok,
        chat_template,
        dequantized_from: None,
        format: "synthetic (random BF16 weights of the real shapes)".into(),
        mlx_quant: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_the_published_ones() {
        let q = shape("qwen2.5-7b").expect("qwen");
        assert_eq!(
            (q.hidden_size, q.num_layers, q.num_kv_heads, q.vocab_size),
            (3584, 28, 4, 152064)
        );
        let m = shape("mistral-7b").expect("mistral");
        assert_eq!(
            (m.hidden_size, m.intermediate_size, m.vocab_size),
            (4096, 14336, 32768)
        );
        let p = shape("phi3.5-mini").expect("phi");
        assert_eq!(
            (p.hidden_size, p.num_layers, p.num_kv_heads),
            (3072, 32, 32)
        );
        assert!(shape("llama-70b").is_err());
    }

    #[test]
    fn random_weights_are_deterministic_and_in_range() {
        let a: Vec<bf16> = random(7, 3, 64, 0.5)
            .expect("a")
            .flatten_all()
            .expect("f")
            .to_vec1()
            .expect("v");
        let b: Vec<bf16> = random(7, 3, 64, 0.5)
            .expect("b")
            .flatten_all()
            .expect("f")
            .to_vec1()
            .expect("v");
        assert_eq!(a, b);
        assert!(a.iter().all(|v| v.to_f32().abs() <= 0.5));
        assert!(a.iter().any(|v| v.to_f32() < 0.0) && a.iter().any(|v| v.to_f32() > 0.0));
    }
}
