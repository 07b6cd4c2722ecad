//! The manifest's entries that a run writes: per model (source, tokenizer, letters) and
//! per precision (tensor types, compute path, where the weights came from).

use super::{PlannedModel, StudySpec};
use crate::engine::quant::Built;
use crate::engine::sample::Letters;
use crate::engine::source::SourceModel;
use crate::engine::{Compute, Precision, Scheme};
use crate::store::Manifest;
use candle_core::DType;
use serde_json::json;

pub(super) fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

pub(super) fn model_entry<'a>(manifest: &'a mut Manifest, slug: &str) -> &'a mut serde_json::Value {
    manifest.model_entry(slug)
}

pub(super) fn record_model(
    manifest: &mut Manifest,
    m: &PlannedModel,
    src: &SourceModel,
    letters: &Letters,
) {
    let e = model_entry(manifest, &m.slug);
    e["id"] = json!(m.resolved.id);
    e["sha256"] = json!(m.sha256);
    e["format"] = json!(src.format);
    e["config"] = json!(src.cfg);
    e["tokenizer"] = json!(src.tok.origin);
    e["chat_template"] = json!(src.chat_template);
    e["letter_token_ids"] = json!(letters.ids);
    e["bf16_source"] = match &src.dequantized_from {
        Some(from) => json!({"dequantized": true, "from": from,
            "note": "the BF16 baseline was dequantized from a quantized GGUF, not an original BF16 checkpoint"}),
        None => json!({"dequantized": false}),
    };
    if let Some(q) = &src.mlx_quant {
        e["holds"] =
            json!({"precision": q.precision.as_str(), "bits": q.bits, "group_size": q.group_size});
        e["bf16_source"] = json!({"note": "an MLX folder: only the precision it holds is run"});
    }
}

pub(super) fn record_precision(
    manifest: &mut Manifest,
    m: &PlannedModel,
    p: Precision,
    built: &Built,
    secs: f64,
    spec: &StudySpec,
) {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for t in built.tensor_types.values() {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    let e = model_entry(manifest, &m.slug);
    if !e["precisions"].is_object() {
        e["precisions"] = json!({});
    }
    e["precisions"][p.as_str()] = json!({
        "type_counts": counts,
        "tensor_types": built.tensor_types,
        "compute": compute_path(p, spec.scheme, spec.compute, built.model.dtype),
        "build_secs": secs,
    });
    let from = match (m.checkpoint(p), m.holds) {
        (Some(c), _) => json!({"checkpoint": c.resolved.id, "sha256": c.sha256}),
        (None, Some(_)) => json!({"checkpoint": m.resolved.id, "sha256": m.sha256}),
        (None, None) => json!({"quantized_in_process": p != Precision::Bf16}),
    };
    e["precisions"][p.as_str()]["weights"] = from;
}

/// How a precision's layers are computed, for the manifest. `dtype` is the model's compute
/// dtype: F32 on the CPU, BF16 on a GPU.
fn compute_path(p: Precision, scheme: Scheme, compute: Compute, dtype: DType) -> &'static str {
    let gpu = dtype != DType::F32;
    match (p, scheme, compute, gpu) {
        (Precision::Bf16, _, _, false) => "bf16 weights, f32 activations",
        (Precision::Bf16, _, _, true) => {
            "bf16 weights and activations (f32 norm statistics and softmax accumulation), f32 output layer"
        }
        (_, Scheme::Mlx, _, false) => {
            "mlx affine weights dequantized to bf16 (as MLX's prefill), f32 activations"
        }
        (_, Scheme::Mlx, _, true) => {
            "mlx affine codes packed on the device, dequantized to bf16 before each use (MLX's values), bf16 activations, f32 output layer"
        }
        (_, Scheme::Gguf, Compute::Dequant, false) => {
            "quantized weights dequantized to f32, f32 activations"
        }
        (_, Scheme::Gguf, Compute::Dequant, true) => {
            "quantized weights dequantized to bf16, bf16 activations, f32 output layer"
        }
        (_, Scheme::Gguf, Compute::Kernels, _) => "candle quantized kernels",
    }
}
