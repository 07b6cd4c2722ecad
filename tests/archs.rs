//! The one transformer against mlx-lm: tiny random-weight models of the four architectures
//! (llama, mistral, qwen2, phi3), each with the features that set it apart, give the same
//! next-token logits in f32 as mlx-lm's own implementation, at every position of a
//! sequence run first as a prompt and then token by token through the KV cache.
mod common;

use common::tempdir;
use stereoscope::engine::{self, Compute, KvCache, Precision, Scheme, quant};

const TOKENS: [u32; 16] = [
    261, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 256, 257, 258, 46,
];
const PROMPT: usize = 5;

fn stereoscope_logits(dir: &std::path::Path) -> Vec<Vec<f32>> {
    let src = engine::source::load(
        &engine::resolve_model(dir.to_str().expect("utf8")).expect("resolves"),
    )
    .expect("loads");
    let built = quant::build(
        &src,
        Precision::Bf16,
        Scheme::Mlx,
        Compute::Dequant,
        &candle_core::Device::Cpu,
    )
    .expect("builds");
    let (first, mut cache) = built
        .model
        .forward(&TOKENS[..PROMPT], &KvCache::default())
        .expect("forward");
    let mut out = vec![first.to_vec1::<f32>().expect("logits")];
    for &t in &TOKENS[PROMPT..] {
        let (l, c) = built.model.forward(&[t], &cache).expect("forward");
        cache = c;
        out.push(l.to_vec1().expect("logits"));
    }
    out
}

fn mlx_logits(dir: &std::path::Path) -> Vec<Vec<f32>> {
    let out = dir.join("mlx-logits.json");
    let ids: Vec<String> = TOKENS.iter().map(|t| t.to_string()).collect();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mlx_logits.py");
    let r = std::process::Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg(ids.join(","))
        .arg(&out)
        .output()
        .expect("python3 runs");
    assert!(
        r.status.success(),
        "mlx_logits.py failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("read")).expect("json");
    v["logits"]
        .as_array()
        .expect("rows")
        .iter()
        .skip(PROMPT - 1)
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("number") as f32)
                .collect()
        })
        .collect()
}

#[test]
fn four_architectures_match_mlx_lm_logits_in_f32() {
    common::require_mlx_lm("four_architectures_match_mlx_lm_logits_in_f32");
    let tmp = tempdir("archs");
    let mut report = Vec::new();
    for arch in ["llama", "mistral", "qwen2", "phi3"] {
        let dir = tmp.join(arch);
        common::write_tiny_arch(&dir, arch);
        let ours = stereoscope_logits(&dir);
        let theirs = mlx_logits(&dir);
        assert_eq!(ours.len(), theirs.len(), "{arch}: positions");
        let mut max = 0f32;
        let mut spread = 0f32;
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a.len(), b.len(), "{arch}: vocabulary");
            for (x, y) in a.iter().zip(b) {
                max = max.max((x - y).abs());
                spread = spread.max(y.abs());
            }
        }
        report.push(format!(
            "{arch}: max |Δ logit| {max:.2e} (logits up to {spread:.1})"
        ));
        // Logits of a few units: a wrong rotary scaling or a swapped split moves them by
        // far more than the tolerance.
        assert!(
            spread > 1.0,
            "{arch}: logits too flat to test anything ({spread})"
        );
        assert!(max <= 1e-4, "{arch}: max |Δ logit| {max} > 1e-4");
    }
    eprintln!("{}", report.join("\n"));
}
