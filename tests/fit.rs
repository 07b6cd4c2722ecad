//! An item too long for the model's positions: the real binary on the tiny GGUF rewritten
//! with a small `context_length`. The run names the items that do not fit before it scores
//! anything; `--skip-bad` leaves them out and lists them in the manifest.
mod common;

use candle_core::Device;
use candle_core::quantized::gguf_file::{self, Value};
use common::{part_files, run, stderr, tempdir};
use std::path::Path;

/// The tiny GGUF with `context_length` set to `n`.
fn tiny_with_context(path: &Path, n: u32) {
    let full = path.with_extension("full.gguf");
    common::write_tiny_gguf(&full);
    let mut f = std::fs::File::open(&full).expect("open");
    let ct = gguf_file::Content::read(&mut f).expect("read gguf");
    let mut md: Vec<(String, Value)> = ct
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in &mut md {
        if k == "llama.context_length" {
            *v = Value::U32(n);
        }
    }
    assert!(md.iter().any(|(k, _)| k == "llama.context_length"));
    let names: Vec<String> = ct.tensor_infos.keys().cloned().collect();
    let ts: Vec<(String, _)> = names
        .iter()
        .map(|n| {
            let t = ct.tensor(&mut f, n, &Device::Cpu).expect("tensor");
            (n.clone(), t)
        })
        .collect();
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, _)> = ts.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::fs::File::create(path).expect("create");
    gguf_file::write(&mut out, &md_refs, &t_refs).expect("write gguf");
}

fn study(model: &Path, out: &Path, cache: &Path, extra: &[&str]) -> std::process::Output {
    let bbq = common::bbq_dir();
    let mut args = vec![
        "--batch",
        "--model",
        model.to_str().expect("utf8"),
        "--bbq-dir",
        bbq.to_str().expect("utf8"),
        "--categories",
        "Age",
        "--limit",
        "6",
        "--part-size",
        "2",
        "--precisions",
        "bf16",
        "--seeds",
        "1,2",
        "--ppl-sequences",
        "0",
        "--out",
        out.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    run(&args, cache)
}

/// The items an error names, as `(category:id, prompt tokens)`.
fn named(err: &str) -> Vec<(String, usize)> {
    let list = err
        .split_once("positions (prompt plus 4 answer tokens): ")
        .map(|(_, l)| l)
        .unwrap_or_else(|| panic!("no item list in: {err}"));
    let list = list.split("; nothing was scored").next().expect("list");
    list.split(", ")
        .map(|s| {
            let (id, rest) = s.split_once(" (").expect("item (n prompt tokens)");
            let n = rest.trim_end_matches(" prompt tokens)");
            (id.to_string(), n.parse().expect("token count"))
        })
        .collect()
}

#[test]
fn an_item_longer_than_the_models_positions_is_named_before_scoring_and_skippable() {
    let tmp = tempdir("fit");
    // 64 positions: no BBQ prompt fits, so every item is named with its length.
    let small = tmp.join("ctx64.gguf");
    tiny_with_context(&small, 64);
    let r = study(&small, &tmp.join("out64"), &tmp, &[]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    let err = stderr(&r);
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1);
    assert!(err.contains("6 item(s) do not fit"), "{err}");
    assert!(err.contains("--skip-bad"), "{err}");
    let all = named(&err);
    assert_eq!(all.len(), 6, "{err}");
    assert!(all.iter().all(|(id, n)| id.starts_with("Age:") && *n > 64));
    assert!(!err.contains("scoring"), "stopped before scoring: {err}");
    assert!(part_files(&tmp.join("out64")).is_empty());

    // A context between the shortest and the longest need: exactly the longer items are named.
    let mut lens: Vec<usize> = all.iter().map(|(_, n)| *n).collect();
    lens.sort();
    let (short, long) = (lens[0], lens[5]);
    assert!(
        short < long,
        "the items' prompts differ in length: {lens:?}"
    );
    let ctx = (short + 4) as u32; // the shortest fits exactly (prompt + 4 answer tokens)
    let mid = tmp.join("ctx-mid.gguf");
    tiny_with_context(&mid, ctx);
    let out = tmp.join("out-mid");
    let r = study(&mid, &out, &tmp, &[]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    let expect: Vec<(String, usize)> = all
        .iter()
        .filter(|(_, n)| n + 4 > ctx as usize)
        .cloned()
        .collect();
    assert!(!expect.is_empty() && expect.len() < 6);
    assert_eq!(named(&stderr(&r)), expect);
    assert!(stderr(&r).contains(&format!("{ctx} positions")));
    assert!(part_files(&out).is_empty(), "nothing scored");

    // --skip-bad: the run goes on with the items that fit; the manifest lists the others.
    let r = study(&mid, &out, &tmp, &["--skip-bad"]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(
        stderr(&r).contains(&format!(
            "--skip-bad left out {} item(s) too long",
            expect.len()
        )),
        "{}",
        stderr(&r)
    );
    let mut scored: Vec<String> = Vec::new();
    for p in part_files(&out) {
        for rec in stereoscope::store::read_records(&p).expect("records") {
            let id = format!("{}:{}", rec.category, rec.example_id);
            if !scored.contains(&id) {
                scored.push(id);
            }
        }
    }
    scored.sort();
    let mut fits: Vec<String> = all
        .iter()
        .filter(|a| !expect.contains(a))
        .map(|(id, _)| id.clone())
        .collect();
    fits.sort();
    assert_eq!(scored, fits);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).expect("manifest"))
            .expect("json");
    let skipped: Vec<&str> = manifest["selection"]["skipped_lines"]
        .as_array()
        .expect("skipped_lines")
        .iter()
        .map(|v| v.as_str().expect("str"))
        .collect();
    assert_eq!(skipped.len(), expect.len());
    for ((id, _), line) in expect.iter().zip(&skipped) {
        assert!(line.starts_with(&format!("{id} (")), "{line}");
        assert!(line.contains(&format!("{ctx} positions")), "{line}");
    }
    // The same command again finds the folder complete and keeps it.
    let r = study(&mid, &out, &tmp, &["--skip-bad"]);
    assert!(r.status.success(), "{}", stderr(&r));
}
