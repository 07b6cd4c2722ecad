//! Crashes at exact points: the real binary, stopped by `STEREOSCOPE_FAIL_AT=NAME:N` (the
//! process aborts there, as after `kill -9`: no destructor, no flush), then the same command
//! without it. Every resumed folder must hold exactly the records and perplexity rows of an
//! uninterrupted run (every column but `latency_ms`, which measures time), list every part,
//! carry the end-of-run stamp, and `report` must read it.
mod common;

use common::{part_files, stderr, tempdir};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use stereoscope::store::Record;
use stereoscope::store::perplexity::PplRow;

/// 4 Age items in parts of 2 at bf16 and q8 (4 parts), 2 seeds, perplexity over 2
/// sequences of the run's prompts.
fn study(model: &Path, out: &Path, fail_at: Option<&str>) -> Output {
    let bbq = common::bbq_dir();
    // Through a shell that turns core dumps off, so an abort leaves no core file behind.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -c 0; exec \"$0\" \"$@\""])
        .arg(common::bin());
    cmd.args([
        "--batch",
        "--model",
        model.to_str().expect("utf8"),
        "--bbq-dir",
        bbq.to_str().expect("utf8"),
        "--categories",
        "Age",
        "--limit",
        "4",
        "--part-size",
        "2",
        "--precisions",
        "bf16,q8",
        "--seeds",
        "1,2",
        "--ppl-sequences",
        "2",
        "--ppl-seq-len",
        "32",
        "--out",
        out.to_str().expect("utf8"),
    ])
    .env("STEREOSCOPE_CACHE", out.with_extension("cache"))
    .env_remove("STEREOSCOPE_BBQ_DIR")
    .env_remove("STEREOSCOPE_FAIL_AT")
    .env("HF_HUB_OFFLINE", "1");
    if let Some(f) = fail_at {
        cmd.env("STEREOSCOPE_FAIL_AT", f);
    }
    cmd.output().expect("binary runs")
}

/// What a folder holds, latency aside: each part's path and records, and the perplexity rows.
#[derive(Debug, PartialEq)]
struct Contents {
    parts: Vec<(PathBuf, Vec<Record>)>,
    ppl: Vec<PplRow>,
}

fn contents(root: &Path) -> Contents {
    let parts = part_files(root)
        .into_iter()
        .map(|p| {
            let mut recs = stereoscope::store::read_records(&p).expect("records");
            for r in &mut recs {
                r.latency_ms = 0.0;
            }
            (p.strip_prefix(root).expect("under").to_path_buf(), recs)
        })
        .collect();
    let ppl = stereoscope::store::perplexity::read(&stereoscope::store::ResultsDir::at(root))
        .expect("perplexity rows");
    Contents { parts, ppl }
}

fn manifest(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root.join("manifest.json")).expect("manifest"))
        .expect("json")
}

/// The tiny model and the folder of an uninterrupted run, made once for every test.
fn baseline() -> &'static (PathBuf, Contents) {
    static BASE: OnceLock<(PathBuf, Contents)> = OnceLock::new();
    BASE.get_or_init(|| {
        let tmp = tempdir("crash-base");
        let model = tmp.join("tiny-llama.gguf");
        common::write_tiny_gguf(&model);
        let out = tmp.join("out");
        let r = study(&model, &out, None);
        assert!(r.status.success(), "{}", stderr(&r));
        let c = contents(&out);
        assert_eq!(c.parts.len(), 4, "4 parts");
        assert_eq!(c.parts.iter().map(|p| p.1.len()).sum::<usize>(), 16);
        assert_eq!(c.ppl.len(), 2, "bf16 and q8 perplexity rows");
        (model, c)
    })
}

/// Every file under `root`, relative, sorted (the lock file aside).
fn files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("list").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                let rel = p.strip_prefix(root).expect("under").display().to_string();
                if !rel.ends_with(".stereoscope.lock") {
                    out.push(rel);
                }
            }
        }
    }
    let mut out = Vec::new();
    if root.is_dir() {
        walk(root, root, &mut out);
    }
    out.sort();
    out
}

/// Crash at `point`, check the folder at the crash with `at_crash`, resume, and compare.
fn crash_and_resume(point: &str, at_crash: impl Fn(&Path, &[String])) {
    let (model, base) = baseline();
    let tmp = tempdir(&format!("crash-{}", point.replace(':', "-")));
    let out = tmp.join("out");
    let r = study(model, &out, Some(point));
    assert_eq!(
        r.status.signal(),
        Some(6),
        "aborted (SIGABRT) at {point}: {:?} {}",
        r.status,
        stderr(&r)
    );
    assert!(
        stderr(&r).contains(&format!("aborting at {point}")),
        "{}",
        stderr(&r)
    );
    at_crash(&out, &files(&out));
    let r = study(model, &out, None);
    assert!(r.status.success(), "resume after {point}: {}", stderr(&r));
    assert_eq!(&contents(&out), base, "records after a crash at {point}");
    let m = manifest(&out);
    assert_eq!(m["parts"].as_object().map(|p| p.len()), Some(4), "{m}");
    let runs = m["runs"].as_array().expect("runs");
    assert!(runs.last().is_some_and(|r| r["finished_at"].is_string()));
    assert!(
        files(&out).iter().all(|f| !f.ends_with(".tmp")),
        "no temporary file left: {:?}",
        files(&out)
    );
    let r = Command::new(common::bin())
        .args(["report", out.to_str().expect("utf8")])
        .output()
        .expect("report runs");
    assert!(r.status.success(), "report after {point}: {}", stderr(&r));
}

fn tmp_files(files: &[String]) -> Vec<&String> {
    files.iter().filter(|f| f.ends_with(".tmp")).collect()
}

fn parts_on_disk(files: &[String]) -> usize {
    files
        .iter()
        .filter(|f| f.starts_with("records/") && f.ends_with(".parquet") && !f.contains("/."))
        .count()
}

#[test]
fn a_crash_at_the_first_manifest_write_resumes_to_the_same_records() {
    crash_and_resume("manifest-tmp:1", |_, files| {
        assert!(!files.iter().any(|f| f == "manifest.json"), "{files:?}");
        assert_eq!(tmp_files(files).len(), 1, "{files:?}");
    });
}

#[test]
fn a_crash_inside_a_later_manifest_write_resumes_to_the_same_records() {
    // The 5th manifest write: after the model's entry and a precision's; the manifest in
    // place is the previous one.
    crash_and_resume("manifest-tmp:5", |out, files| {
        assert!(files.iter().any(|f| f == "manifest.json"), "{files:?}");
        assert_eq!(tmp_files(files).len(), 1, "{files:?}");
        assert!(manifest(out)["runs"][0]["finished_at"].is_null());
    });
}

#[test]
fn a_crash_inside_the_items_write_resumes_to_the_same_records() {
    crash_and_resume("items-tmp:1", |_, files| {
        assert!(files.iter().any(|f| f == "manifest.json"), "{files:?}");
        assert!(!files.iter().any(|f| f == "items.parquet"), "{files:?}");
        assert_eq!(tmp_files(files).len(), 1, "{files:?}");
    });
}

#[test]
fn a_crash_before_a_parts_rename_resumes_to_the_same_records() {
    crash_and_resume("part-tmp:2", |_, files| {
        assert_eq!(parts_on_disk(files), 1, "{files:?}");
        assert_eq!(tmp_files(files).len(), 1, "{files:?}");
    });
}

#[test]
fn a_crash_between_a_parts_rename_and_its_listing_resumes_to_the_same_records() {
    crash_and_resume("part-renamed:2", |out, files| {
        assert_eq!(parts_on_disk(files), 2, "{files:?}");
        let listed = manifest(out)["parts"].as_object().map(|p| p.len());
        assert_eq!(listed, Some(1), "the second part is not listed yet");
    });
}

#[test]
fn a_crash_during_perplexity_resumes_to_the_same_records() {
    crash_and_resume("perplexity:2", |out, files| {
        assert_eq!(parts_on_disk(files), 4, "{files:?}");
        assert!(!files.iter().any(|f| f.contains("perplexity")), "{files:?}");
        assert!(manifest(out)["runs"][0]["finished_at"].is_null());
    });
}

#[test]
fn a_crash_inside_the_perplexity_rows_write_resumes_to_the_same_records() {
    crash_and_resume("table-tmp:1", |_, files| {
        assert_eq!(parts_on_disk(files), 4, "{files:?}");
        assert_eq!(tmp_files(files).len(), 1, "{files:?}");
    });
}

#[test]
fn a_crash_before_the_final_manifest_resumes_to_the_same_records() {
    crash_and_resume("final-manifest:1", |out, files| {
        assert_eq!(parts_on_disk(files), 4, "{files:?}");
        assert!(manifest(out)["runs"][0]["finished_at"].is_null());
        assert!(
            manifest(out)["models"]
                .as_object()
                .is_some_and(|m| m.values().all(|e| e["perplexity"].is_object())),
            "the perplexity summary is in the manifest before the final stamp"
        );
    });
}

/// The model `scripts/crash-random.sh` runs: the tiny answering llama GGUF of
/// `tests/common`, written to `STEREOSCOPE_CRASH_MODEL`.
#[test]
#[ignore = "writes the model of scripts/crash-random.sh to STEREOSCOPE_CRASH_MODEL; run by it"]
fn write_the_random_kill_model() {
    let path = std::env::var_os("STEREOSCOPE_CRASH_MODEL")
        .map(PathBuf::from)
        .expect("STEREOSCOPE_CRASH_MODEL names the file to write");
    common::write_answering_gguf(&path);
    stereoscope::engine::gguf::validate(&path).expect("the model reads");
}
