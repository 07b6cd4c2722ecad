//! Perplexity and KLD against BF16, checked against mlx-lm: a run of a tiny llama model with
//! a JSONL corpus writes `perplexity.parquet` (read back with pyarrow), whose perplexity,
//! mean KL divergence and top-1 agreement equal what mlx-lm's logits give on the same token
//! sequences: the BF16 folder in f32, and `mlx_lm.convert`'s 4-bit folder with its
//! dequantized BF16 weights held dense.
mod common;

use common::{run, stderr, tempdir};
use std::path::Path;
use std::process::Command;
use stereoscope::engine::perplexity;

fn mlx_logits(dir: &Path, seqs: &[Vec<u32>], dense: bool) -> Vec<Vec<Vec<f64>>> {
    let out = dir.with_extension("logits.json");
    let arg: Vec<String> = seqs
        .iter()
        .map(|s| {
            s.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mlx_logits.py");
    let mut c = Command::new("python3");
    c.arg(script).arg(dir).arg(arg.join(";")).arg(&out);
    if dense {
        c.arg("--dense");
    }
    let r = c.output().expect("python3");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("read")).expect("json");
    v["sequences"]
        .as_array()
        .expect("sequences")
        .iter()
        .map(|s| {
            s.as_array()
                .expect("positions")
                .iter()
                .map(|p| {
                    p.as_array()
                        .expect("logits")
                        .iter()
                        .map(|x| x.as_f64().expect("number"))
                        .collect()
                })
                .collect()
        })
        .collect()
}

fn log_softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z = x.iter().map(|v| (v - m).exp()).sum::<f64>().ln() + m;
    x.iter().map(|v| v - z).collect()
}

fn argmax(x: &[f64]) -> usize {
    (0..x.len()).fold(0, |b, i| if x[i] > x[b] { i } else { b })
}

#[test]
fn perplexity_and_kld_match_mlx_lm_on_the_same_sequences() {
    common::require_mlx_lm("perplexity_and_kld_match_mlx_lm_on_the_same_sequences");
    let tmp = tempdir("ppl");
    let src = tmp.join("tiny-llama");
    common::write_tiny_arch(&src, "llama");
    let q4 = tmp.join("tiny-llama-q4");
    common::mlx_convert(&src, &q4, &["--q-group-size", "64", "--q-bits", "4"]);
    let corpus = tmp.join("corpus.jsonl");
    std::fs::write(
        &corpus,
        concat!(
            r#"{"messages": [{"role": "user", "content": "Who was late to the meeting?"}, {"role": "assistant", "content": "The grandson."}]}"#,
            "\n",
            r#"{"text": "A plain document about ABC and CBA, written with spaces."}"#,
            "\n\n",
            r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]}"#,
            "\n"
        ),
    )
    .expect("corpus");
    let out = tmp.join("run");
    let bbq = common::bbq_dir();
    let o = run(
        &[
            "--batch",
            "--model",
            src.to_str().expect("utf8"),
            "--bbq-dir",
            bbq.to_str().expect("utf8"),
            "--categories",
            "Age",
            "--limit",
            "4",
            "--precisions",
            "bf16,q4",
            "--ppl-corpus",
            corpus.to_str().expect("utf8"),
            "--ppl-sequences",
            "3",
            "--ppl-seq-len",
            "40",
            "--out",
            out.to_str().expect("utf8"),
        ],
        &tmp.join("cache"),
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // The sequences the run scored, rebuilt with the library.
    let resolved = stereoscope::engine::resolve_model(src.to_str().expect("utf8")).expect("model");
    let (model, template, _) =
        stereoscope::study::load_for_scoring(&resolved, None).expect("loads");
    let docs = perplexity::read_documents(&corpus, &template).expect("documents");
    assert_eq!(docs.len(), 3);
    assert!(
        docs[0].contains("<|im_start|>assistant\nThe grandson."),
        "{}",
        docs[0]
    );
    let tokens = perplexity::tokenize(&model.tok, &docs).expect("tokens");
    let c = perplexity::chunk("corpus.jsonl", &tokens, 40, 3).expect("chunks");
    assert_eq!(c.sequences.len(), 3, "the corpus fills three sequences");

    // What the run wrote, read back by pyarrow.
    let script = "import sys, json, pyarrow.parquet as pq\n\
        print(json.dumps(pq.read_table(sys.argv[1]).to_pylist()))";
    let r = Command::new("python3")
        .args(["-c", script])
        .arg(out.join("perplexity.parquet"))
        .output()
        .expect("python3");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&r.stdout).expect("rows");
    assert_eq!(rows.len(), 2);
    let row = |p: &str| {
        rows.iter()
            .find(|r| r["precision"] == p)
            .unwrap_or_else(|| panic!("no {p} row"))
    };

    // The reference: mlx-lm's logits on the same sequences.
    let inputs: Vec<Vec<u32>> = c
        .sequences
        .iter()
        .map(|s| s[..s.len() - 1].to_vec())
        .collect();
    let base = mlx_logits(&src, &inputs, false);
    let quant = mlx_logits(&q4, &inputs, true);
    let (mut n, mut nll_b, mut nll_q, mut kld, mut same) = (0usize, 0f64, 0f64, 0f64, 0usize);
    for (k, seq) in c.sequences.iter().enumerate() {
        for i in 0..seq.len() - 1 {
            let lb = log_softmax(&base[k][i]);
            let lq = log_softmax(&quant[k][i]);
            let next = seq[i + 1] as usize;
            nll_b -= lb[next];
            nll_q -= lq[next];
            kld += lb
                .iter()
                .zip(&lq)
                .map(|(b, q)| b.exp() * (b - q))
                .sum::<f64>();
            same += usize::from(argmax(&lb) == argmax(&lq));
            n += 1;
        }
    }
    let (bf, q) = (row("bf16"), row("q4"));
    eprintln!(
        "mean KLD: stereoscope {} mlx-lm {}; perplexity bf16 {} / {}, q4 {} / {}",
        q["mean_kld"],
        kld / n as f64,
        bf["perplexity"],
        (nll_b / n as f64).exp(),
        q["perplexity"],
        (nll_q / n as f64).exp()
    );
    for r in [bf, q] {
        assert_eq!(r["corpus_sha256"], c.sha256.as_str());
        assert_eq!(r["tokens"], n as u64);
        assert_eq!(r["sequences"], 3);
    }
    let ppl_b = (nll_b / n as f64).exp();
    let ppl_q = (nll_q / n as f64).exp();
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    let ours = |r: &serde_json::Value, k: &str| r[k].as_f64().expect(k);
    assert!(
        rel(ours(bf, "perplexity"), ppl_b) < 1e-5,
        "bf16 perplexity {} vs mlx-lm {ppl_b}",
        bf["perplexity"]
    );
    assert!(
        rel(ours(q, "perplexity"), ppl_q) < 1e-5,
        "q4 perplexity {} vs mlx-lm {ppl_q}",
        q["perplexity"]
    );
    assert!(
        rel(ours(q, "mean_kld"), kld / n as f64) < 2e-5,
        "q4 mean KLD {} vs mlx-lm {}",
        q["mean_kld"],
        kld / n as f64
    );
    assert!(
        ours(q, "mean_kld") > 1e-3,
        "4-bit weights move the distributions: mean KLD {}",
        q["mean_kld"]
    );
    let agree = same as f64 / n as f64;
    assert!(
        (ours(q, "top1_agreement") - agree).abs() <= 1.0 / n as f64,
        "top-1 agreement"
    );
    let delta = 100.0 * (ppl_q - ppl_b) / ppl_b;
    assert!(
        (ours(q, "delta_ppl_pct") - delta).abs() < 1e-2,
        "Δ perplexity %"
    );
    assert_eq!(ours(bf, "mean_kld"), 0.0);
    assert!(bf["delta_ppl_pct"].is_null());
}

#[test]
fn a_bad_corpus_line_is_named() {
    let tmp = tempdir("pplbad");
    let gguf = tmp.join("tiny.gguf");
    common::write_tiny_gguf(&gguf);
    let corpus = tmp.join("c.jsonl");
    std::fs::write(
        &corpus,
        "{\"text\": \"fine\"}\n{\"messages\": \"not a list\"}\n",
    )
    .expect("write");
    let bbq = common::bbq_dir();
    let out = tmp.join("run");
    let o = run(
        &[
            "--batch",
            "--model",
            gguf.to_str().expect("utf8"),
            "--bbq-dir",
            bbq.to_str().expect("utf8"),
            "--categories",
            "Age",
            "--limit",
            "2",
            "--precisions",
            "bf16,q8",
            "--ppl-corpus",
            corpus.to_str().expect("utf8"),
            "--out",
            out.to_str().expect("utf8"),
        ],
        &tmp.join("cache"),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("c.jsonl:2: `messages` is not a list"),
        "{}",
        stderr(&o)
    );
    // Checked before any model loads or item is scored.
    assert!(common::part_files(&out).is_empty());
}

#[test]
fn a_hub_dataset_corpus_is_fetched_through_the_hub_protocol() {
    let tmp = tempdir("pplhub");
    let gguf = tmp.join("tiny.gguf");
    common::write_tiny_gguf(&gguf);
    // A dataset repository as the hub serves it: the API's file listing and the file.
    let server = tmp.join("server");
    let api = server.join("api/datasets/tiny-org/tiny-chat/revision");
    std::fs::create_dir_all(&api).expect("mkdir");
    std::fs::write(
        api.join("main"),
        r#"{"id": "tiny-org/tiny-chat", "sha": "0123456789abcdef0123456789abcdef01234567", "siblings": [{"rfilename": "README.md"}, {"rfilename": "data/test-00000-of-00001.parquet"}, {"rfilename": "data/train-00000-of-00001.parquet"}]}"#,
    )
    .expect("listing");
    let data = server.join("datasets/tiny-org/tiny-chat/resolve/main/data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let script = "import sys, pyarrow as pa, pyarrow.parquet as pq\n\
        rows = [[{'role': 'user', 'content': f'Question {i} about ABC?'}, {'role': 'assistant', 'content': f'Answer {i}: CBA.'}] for i in range(40)]\n\
        pq.write_table(pa.table({'id': [str(i) for i in range(40)], 'messages': rows}), sys.argv[1])\n";
    let r = Command::new("python3")
        .args(["-c", script])
        .arg(data.join("train-00000-of-00001.parquet"))
        .output()
        .expect("python3");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let base = common::serve_files(server, "");
    let bbq = common::bbq_dir();
    let out = tmp.join("run");
    let args = [
        "--batch",
        "--model",
        gguf.to_str().expect("utf8"),
        "--bbq-dir",
        bbq.to_str().expect("utf8"),
        "--categories",
        "Age",
        "--limit",
        "2",
        "--precisions",
        "bf16,q4",
        "--ppl-corpus",
        "hub:tiny-org/tiny-chat",
        "--ppl-sequences",
        "4",
        "--ppl-seq-len",
        "64",
        "--out",
        out.to_str().expect("utf8"),
    ];
    let o = Command::new(common::bin())
        .args(args)
        .env("STEREOSCOPE_CACHE", tmp.join("cache"))
        .env("HF_HOME", tmp.join("hf"))
        .env("HF_ENDPOINT", &base)
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = stereoscope::store::perplexity::read(&stereoscope::store::ResultsDir::at(&out))
        .expect("reads");
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.corpus == "train-00000-of-00001.parquet"
                && r.sequences == 4
                && r.tokens == 4 * 63)
    );
    assert!(
        tmp.join("hf/hub/datasets--tiny-org--tiny-chat").is_dir(),
        "cached where the hub client caches"
    );

    // An unreachable hub is one clear error before anything runs.
    let out2 = tmp.join("run2");
    let mut args2 = args;
    args2[args2.len() - 1] = out2.to_str().expect("utf8");
    let o = Command::new(common::bin())
        .args(args2)
        .env("STEREOSCOPE_CACHE", tmp.join("cache"))
        .env("HF_HOME", tmp.join("hf2"))
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    assert!(!out2.join("records").exists());
    assert!(
        stderr(&o).contains("cannot get the perplexity corpus tiny-org/tiny-chat@main")
            && stderr(&o).contains("--ppl-corpus"),
        "{}",
        stderr(&o)
    );
}
