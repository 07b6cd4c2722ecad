//! Hugging Face model sources: a safetensors folder computes exactly what the same weights
//! in a GGUF file compute, and a hub id is fetched through the hub protocol (a local server
//! standing in for huggingface.co) into the standard cache, then found there offline.
mod common;

use common::{run, stderr, tempdir};
use stereoscope::engine::{self, Compute, KvCache, Precision, Scheme, quant};
use stereoscope::prompt;

#[test]
fn hf_folder_and_gguf_of_the_same_weights_give_the_same_logits() {
    let tmp = tempdir("hfeq");
    let gguf = tmp.join("tiny-qwen2.gguf");
    let hf = tmp.join("tiny-qwen2-hf");
    common::write_tiny(&gguf, "qwen2", Some(&hf));
    let a =
        engine::source::load(&engine::resolve_model(gguf.to_str().expect("utf8")).expect("gguf"))
            .expect("loads");
    let b = engine::source::load(&engine::resolve_model(hf.to_str().expect("utf8")).expect("hf"))
        .expect("loads");
    assert_eq!(a.cfg.rope_style, b.cfg.rope_style);
    assert_eq!(a.tensors.len(), b.tensors.len());
    let item = stereoscope::bbq::read_category_file(
        &common::bbq_dir().join("Age.jsonl"),
        &Default::default(),
    )
    .expect("reads")
    .remove(0);
    let ta = prompt::ChatTemplate::new(a.chat_template.as_deref().expect("template"), "", "")
        .expect("template");
    let tb = prompt::ChatTemplate::new(b.chat_template.as_deref().expect("template"), "", "")
        .expect("template");
    let ids_a = a
        .tok
        .encode(&prompt::study_prompt(&ta, &item).expect("prompt"))
        .expect("ids");
    let ids_b = b
        .tok
        .encode(&prompt::study_prompt(&tb, &item).expect("prompt"))
        .expect("ids");
    assert_eq!(ids_a, ids_b);
    for p in [Precision::Bf16, Precision::Q4] {
        let ma = quant::build(
            &a,
            p,
            Scheme::Gguf,
            Compute::Dequant,
            &candle_core::Device::Cpu,
        )
        .expect("build");
        let mb = quant::build(
            &b,
            p,
            Scheme::Gguf,
            Compute::Dequant,
            &candle_core::Device::Cpu,
        )
        .expect("build");
        let (la, _) = ma
            .model
            .forward(&ids_a, &KvCache::default())
            .expect("forward");
        let (lb, _) = mb
            .model
            .forward(&ids_b, &KvCache::default())
            .expect("forward");
        let (la, lb): (Vec<f32>, Vec<f32>) =
            (la.to_vec1().expect("vec"), lb.to_vec1().expect("vec"));
        let max = common::max_abs_diff(&la, &lb);
        assert!(max == 0.0, "{p:?}: max abs logit difference {max}");
    }
}

#[test]
fn hub_id_downloads_through_the_hub_protocol_and_then_works_offline() {
    let tmp = tempdir("hub");
    let gguf = tmp.join("tiny.gguf");
    let repo = tmp.join("server/tiny-org/tiny-qwen2/resolve/main");
    common::write_tiny(&gguf, "qwen2", Some(&repo));
    let base = common::serve_files(tmp.join("server"), "");
    let hf_home = tmp.join("hf-home");
    let out = tmp.join("out");
    let bbq = common::bbq_dir();
    let args = [
        "--batch",
        "--model",
        "tiny-org/tiny-qwen2",
        "--bbq-dir",
        bbq.to_str().expect("utf8"),
        "--categories",
        "Religion",
        "--limit",
        "3",
        "--precisions",
        "bf16,q8",
        "--out",
        out.to_str().expect("utf8"),
    ];
    let online = std::process::Command::new(common::bin())
        .args(args)
        .env("HF_ENDPOINT", &base)
        .env("HF_HOME", &hf_home)
        .env_remove("HF_HUB_OFFLINE")
        .env("STEREOSCOPE_CACHE", &tmp)
        .output()
        .expect("runs");
    assert!(online.status.success(), "{}", stderr(&online));
    assert!(
        hf_home.join("hub/models--tiny-org--tiny-qwen2").is_dir(),
        "standard HF cache layout"
    );
    assert_eq!(
        common::pyarrow_counts(&out.join("records")),
        "30 30 bf16=15,q8=15"
    );
    // Offline, from the cache, with the server gone from the picture.
    let offline = std::process::Command::new(common::bin())
        .args(args)
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HF_HOME", &hf_home)
        .env("HF_HUB_OFFLINE", "1")
        .env("STEREOSCOPE_CACHE", &tmp)
        .output()
        .expect("runs");
    assert!(offline.status.success(), "{}", stderr(&offline));
    assert!(
        String::from_utf8_lossy(&offline.stderr).contains("resuming: 30 of 30"),
        "{}",
        stderr(&offline)
    );
    // An id the hub does not have is one clear error.
    let missing = run(
        &[
            "--batch",
            "--model",
            "tiny-org/absent",
            "--out",
            tmp.join("o2").to_str().expect("utf8"),
            "--bbq-dir",
            common::bbq_dir().to_str().expect("utf8"),
            "--categories",
            "Religion",
        ],
        &tmp,
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("tiny-org/absent"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn convert_writes_a_folder_that_computes_what_the_gguf_computes() {
    // A llama GGUF stores q/k rows permuted for interleaved rotary embeddings; the folder has
    // them in the Hugging Face layout and is run with half-split rotary embeddings.
    let tmp = tempdir("convert");
    let gguf = tmp.join("tiny-llama.gguf");
    common::write_tiny_gguf(&gguf);
    let dir = tmp.join("hf");
    let r = run(
        &[
            "convert",
            "--from",
            gguf.to_str().expect("utf8"),
            "--to",
            dir.to_str().expect("utf8"),
        ],
        &tmp,
    );
    assert!(r.status.success(), "{}", stderr(&r));
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let a =
        engine::source::load(&engine::resolve_model(gguf.to_str().expect("utf8")).expect("gguf"))
            .expect("loads");
    let b = engine::source::load(&engine::resolve_model(dir.to_str().expect("utf8")).expect("dir"))
        .expect("loads");
    assert_eq!(a.cfg.rope_style, engine::RopeStyle::Interleaved);
    assert_eq!(b.cfg.rope_style, engine::RopeStyle::Half);
    let item = stereoscope::bbq::read_category_file(
        &common::bbq_dir().join("Religion.jsonl"),
        &Default::default(),
    )
    .expect("reads")
    .remove(0);
    let t = prompt::ChatTemplate::new(b.chat_template.as_deref().expect("template"), "", "")
        .expect("template");
    let ids = b
        .tok
        .encode(&prompt::study_prompt(&t, &item).expect("prompt"))
        .expect("ids");
    assert_eq!(
        ids,
        a.tok
            .encode(&prompt::study_prompt(&t, &item).expect("prompt"))
            .expect("ids")
    );
    let ma = quant::build(
        &a,
        Precision::Bf16,
        Scheme::Mlx,
        Compute::Dequant,
        &candle_core::Device::Cpu,
    )
    .expect("build");
    let mb = quant::build(
        &b,
        Precision::Bf16,
        Scheme::Mlx,
        Compute::Dequant,
        &candle_core::Device::Cpu,
    )
    .expect("build");
    let (la, _) = ma
        .model
        .forward(&ids, &KvCache::default())
        .expect("forward");
    let (lb, _) = mb
        .model
        .forward(&ids, &KvCache::default())
        .expect("forward");
    let (la, lb): (Vec<f32>, Vec<f32>) = (la.to_vec1().expect("vec"), lb.to_vec1().expect("vec"));
    let max = common::max_abs_diff(&la, &lb);
    assert!(max < 1e-4, "max abs logit difference {max}");
    // A wrong un-permutation would show: the difference is not tiny by accident.
    let spread = la.iter().copied().fold(f32::NEG_INFINITY, f32::max)
        - la.iter().copied().fold(f32::INFINITY, f32::min);
    assert!(spread > 0.1, "logits vary ({spread})");
}

#[test]
fn zero_or_uneven_head_counts_are_errors_naming_the_file_not_panics() {
    let tmp = tempdir("heads");
    let gguf = tmp.join("tiny.gguf");
    let hf = tmp.join("tiny-hf");
    common::write_tiny(&gguf, "llama", Some(&hf));
    let cfg_path = hf.join("config.json");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).expect("read")).expect("json");
    let bbq = common::bbq_dir();
    for (heads, kv, needle) in [
        (0, 2, "the attention head count is 0"),
        (4, 0, "the key-value head count is 0"),
        (
            4,
            3,
            "4 attention heads do not split evenly over 3 key-value heads",
        ),
    ] {
        let mut c = cfg.clone();
        c["num_attention_heads"] = heads.into();
        c["num_key_value_heads"] = kv.into();
        std::fs::write(&cfg_path, c.to_string()).expect("write");
        let out = tmp.join(format!("out-{heads}-{kv}"));
        let r = run(
            &[
                "--batch",
                "--model",
                hf.to_str().expect("utf8"),
                "--bbq-dir",
                bbq.to_str().expect("utf8"),
                "--categories",
                "Age",
                "--limit",
                "1",
                "--precisions",
                "bf16",
                "--out",
                out.to_str().expect("utf8"),
            ],
            &tmp,
        );
        let e = stderr(&r);
        assert_eq!(r.status.code(), Some(2), "heads {heads}/{kv}: {e}");
        assert!(
            e.contains(needle) && e.contains("config.json"),
            "heads {heads}/{kv} should name the file and say `{needle}`:\n{e}"
        );
        assert!(!e.contains("panicked"), "{e}");
    }
    // The same in a GGUF header.
    let zero = tmp.join("zero-heads.gguf");
    {
        use candle_core::quantized::gguf_file::{self, Value};
        let mut f = std::fs::File::open(&gguf).expect("open");
        let ct = gguf_file::Content::read(&mut f).expect("read");
        let tensors: Vec<(String, candle_core::quantized::QTensor)> = ct
            .tensor_infos
            .keys()
            .map(|n| {
                let t = ct.tensor(&mut f, n, &candle_core::Device::Cpu);
                (n.clone(), t.expect("tensor"))
            })
            .collect();
        let mut md: Vec<(String, Value)> = ct
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in md.iter_mut() {
            if k == "llama.attention.head_count" {
                *v = Value::U32(0);
            }
        }
        let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let t_refs: Vec<(&str, &candle_core::quantized::QTensor)> =
            tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut out_f = std::fs::File::create(&zero).expect("create");
        gguf_file::write(&mut out_f, &md_refs, &t_refs).expect("write");
    }
    let e = match engine::source::load(
        &engine::resolve_model(zero.to_str().expect("utf8")).expect("resolves"),
    ) {
        Ok(_) => panic!("a GGUF with zero heads loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("zero-heads.gguf") && e.contains("the attention head count is 0"),
        "{e}"
    );
}
