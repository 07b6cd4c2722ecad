//! The batch size a study scores with when `--batch-size` is not given. On the CPU, 1
//! (prompt by prompt, reusing each previous prompt's prefix: the fastest there). On a GPU,
//! as many prompts as the device's free memory holds once the model's weights are resident,
//! rounded down to a power of two and capped at [`MAX_AUTO`], with a reserve kept free.
//!
//! The estimate of a prompt's device memory errs on the side of fitting. Measured on one
//! H200 (Qwen2.5-7B shapes, mean study prompt 99 tokens, 49 of them computed per prompt
//! after the shared prefix and contexts): peak device memory at BF16 was 16.70 GB at batch
//! 64 and 18.69 at 256 (q4: 5.75, 7.74), about 10 MB more per prompt in the batch, since a
//! batch's cache holds shared columns once. [`prompt_bytes`] gives about 38 MiB for those
//! shapes at the positions of the longest such prompt: it counts every position as computed
//! and cached per row. Throughput was best at batch 128-256.

use super::model::ModelConfig;
use crate::vocab::Precision;

/// The largest batch size chosen automatically (`--batch-size` may ask for more).
pub const MAX_AUTO: usize = 256;

/// Device memory always left free: a tenth of what is free, and at least this (the CUDA
/// context and cuBLAS workspaces grow, the allocator fragments).
pub const RESERVE_MIN: u64 = 1 << 30;

/// Bytes one prompt of `positions` tokens (prompt and decoded tokens) needs on the device
/// while its batch runs, activations being `act_bytes` wide (2 for BF16, 4 for F32): its
/// key-value cache in every layer, the widest layer's temporaries (queries, keys, values,
/// attention output, the MLP's gate, up and activation, the residual stream), the attention
/// scores and their softmax in F32, and the next-token logits and their softmax in F32.
pub fn prompt_bytes(cfg: &ModelConfig, positions: usize, act_bytes: u64) -> u64 {
    let (t, kv_width) = (positions as u64, (cfg.num_kv_heads * cfg.head_dim) as u64);
    let q_width = (cfg.num_heads * cfg.head_dim) as u64;
    let kv_cache = 2 * cfg.num_layers as u64 * kv_width * t * act_bytes;
    let per_token = 2 * q_width + 2 * kv_width + 3 * cfg.intermediate_size as u64;
    let layer = t * (per_token + 4 * cfg.hidden_size as u64) * act_bytes;
    let scores = 2 * cfg.num_heads as u64 * t * t * 4;
    let logits = 2 * cfg.vocab_size as u64 * 4;
    kv_cache + layer + scores + logits
}

/// Bytes of a model's weights at precision `p` on a GPU: the embedding at BF16; the
/// projection matrices and the output layer at BF16, or at the precision's bits plus one
/// 16-bit scale and bias per group of 64; norms aside. For Qwen2.5-7B's shapes this gives
/// 14.2 GiB at BF16 (15.23 GB measured) and 4.7 GiB at q4.
pub fn weight_bytes(cfg: &ModelConfig, p: Precision) -> u64 {
    let (h, inter) = (cfg.hidden_size as u64, cfg.intermediate_size as u64);
    let q_width = (cfg.num_heads * cfg.head_dim) as u64;
    let kv_width = (cfg.num_kv_heads * cfg.head_dim) as u64;
    let per_layer = 2 * h * q_width + 2 * h * kv_width + 3 * h * inter;
    let (matrices, table) = (cfg.num_layers as u64 * per_layer, cfg.vocab_size as u64 * h);
    match p {
        Precision::Bf16 => matrices * 2 + table * 2 * 2,
        q => {
            let bits_per_group = u64::from(q.bits()) * 64 + 32;
            (matrices + table) * bits_per_group / (8 * 64) + table * 2
        }
    }
}

/// The batch size for `free` bytes of free device memory, when `weights_to_come` bytes of
/// weights are still to be loaded (a larger precision built later) and each prompt takes
/// `per_prompt` bytes: what is left after the reserve, divided by a prompt's bytes, rounded
/// down to a power of two, between 1 and [`MAX_AUTO`].
pub fn batch_size_for(free: u64, weights_to_come: u64, per_prompt: u64) -> usize {
    let reserve = (free / 10).max(RESERVE_MIN);
    let usable = free.saturating_sub(reserve).saturating_sub(weights_to_come);
    let fits = (usable / per_prompt.max(1)).min(MAX_AUTO as u64);
    match fits {
        0 => 1,
        n => 1usize << n.ilog2(),
    }
}

/// The line that tells the user the choice, e.g. `batch size 128 (chosen from 120.3 GB
/// free on cuda:0; --batch-size to change)`.
pub fn chosen_line(batch: usize, free: u64, device_name: &str) -> String {
    format!(
        "batch size {batch} (chosen from {:.1} GB free on {device_name}; --batch-size to change)",
        free as f64 / 1e9
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RopeStyle;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// Qwen2.5-7B's shapes.
    fn qwen7b() -> ModelConfig {
        ModelConfig {
            architecture: "qwen2".into(),
            hidden_size: 3584,
            intermediate_size: 18944,
            num_layers: 28,
            num_heads: 28,
            num_kv_heads: 4,
            head_dim: 128,
            vocab_size: 152064,
            rms_norm_eps: 1e-6,
            rope_theta: 1e6,
            rope_style: RopeStyle::Half,
            rope_freqs: Vec::new(),
            rope_mscale: 1.0,
            max_positions: 32768,
            tie_embeddings: false,
        }
    }

    #[test]
    fn a_prompt_of_a_7b_model_is_estimated_above_what_was_measured() {
        // Measured: about 10 MB more peak memory per prompt in the batch (mean prompt 99
        // tokens; the longest of those prompts about 150, plus the decoded tokens). The
        // estimate counts all of the longest prompt's positions as computed and cached per
        // row, where the study's prompts share half of theirs: within 4× of the measure.
        let est = prompt_bytes(&qwen7b(), 154, 2);
        assert!((10 * MIB..=40 * MIB).contains(&est), "{} MiB", est / MIB);
        // Longer prompts cost more, and F32 activations twice the activations.
        assert!(prompt_bytes(&qwen7b(), 300, 2) > est);
        assert!(prompt_bytes(&qwen7b(), 154, 4) > est * 3 / 2);
    }

    #[test]
    fn a_7b_models_weights_are_estimated_as_measured() {
        // Measured peak at batch 32: 16.30 GB at BF16 and 5.58 GB at q4 (consistent read as GiB),
        // of which about 1.1 GiB was the batch's activations.
        let bf16 = weight_bytes(&qwen7b(), Precision::Bf16) as f64 / GIB as f64;
        let q4 = weight_bytes(&qwen7b(), Precision::Q4) as f64 / GIB as f64;
        assert!((14.0..16.0).contains(&bf16), "{bf16} GiB");
        assert!((4.0..5.5).contains(&q4), "{q4} GiB");
        let ladder: Vec<u64> = Precision::ALL
            .iter()
            .map(|&p| weight_bytes(&qwen7b(), p))
            .collect();
        assert!(ladder.windows(2).all(|w| w[0] > w[1]), "{ladder:?}");
    }

    #[test]
    fn the_batch_size_is_what_free_memory_holds_as_a_power_of_two_capped() {
        let per = prompt_bytes(&qwen7b(), 154, 2);
        // An H200 with a 7B model at BF16 resident: about 120 GB free, the cap.
        assert_eq!(batch_size_for(120_300_000_000, 0, per), MAX_AUTO);
        // A 24 GB GPU with the same model: about 7.5 GB free. Reserve 1 GiB: 6.43 GiB
        // left, 173 prompts of 38 MiB fit, so 128.
        assert_eq!(batch_size_for(7_500_000_000, 0, per), 128);
        // BF16 still to be loaded after q4 (its 10 GiB more) leaves little.
        assert_eq!(batch_size_for(20 * GIB, 10 * GIB, per), 128);
        assert_eq!(batch_size_for(12 * GIB, 10 * GIB, per), 16);
        assert_eq!(batch_size_for(11 * GIB, 10 * GIB, per), 1);
        // Exactly at the edges.
        assert_eq!(batch_size_for(RESERVE_MIN + 4 * per, 0, per), 4);
        assert_eq!(batch_size_for(RESERVE_MIN + 4 * per - 1, 0, per), 2);
        // Nothing free, or less than the reserve: still 1 (the out-of-memory message says
        // what to do).
        assert_eq!(batch_size_for(0, 0, per), 1);
        assert_eq!(batch_size_for(RESERVE_MIN / 2, 0, per), 1);
        assert_eq!(batch_size_for(u64::MAX, 0, 0), MAX_AUTO);
    }

    #[test]
    fn the_choice_is_said_with_the_free_memory_and_the_flag() {
        assert_eq!(
            chosen_line(128, 120_300_000_000, "cuda:0"),
            "batch size 128 (chosen from 120.3 GB free on cuda:0; --batch-size to change)"
        );
    }
}
