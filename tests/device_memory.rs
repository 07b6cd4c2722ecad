//! The device running out of memory, through the real binary on the tiny model: the
//! `device-oom` failure point raises the error candle gives when CUDA runs out of memory
//! (through the same conversion as a real one) as the third part is about to be written.
//! The run stops with one message that names `--batch-size`, exits with 2 and keeps the
//! parts finished before; the same command with a smaller `--batch-size` resumes and
//! completes, and without `--batch-size` it goes on at the batch size the finished parts
//! recorded, giving the records of an uninterrupted run.
mod common;

use common::{part_files, stderr, tempdir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use stereoscope::store::Record;

/// 4 Age items in parts of 2 at bf16 and q8 (4 parts: bf16 0 and 1, then q8 0 and 1).
fn study(model: &Path, out: &Path, batch_size: Option<&str>, fail_at: Option<&str>) -> Output {
    study_with(model, out, batch_size, fail_at, &[])
}

fn study_with(
    model: &Path,
    out: &Path,
    batch_size: Option<&str>,
    fail_at: Option<&str>,
    extra: &[&str],
) -> Output {
    let bbq = common::bbq_dir();
    let mut cmd = Command::new(common::bin());
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
        "--out",
        out.to_str().expect("utf8"),
    ])
    .env("STEREOSCOPE_CACHE", out.with_extension("cache"))
    .env_remove("STEREOSCOPE_BBQ_DIR")
    .env_remove("STEREOSCOPE_FAIL_AT")
    .env("HF_HUB_OFFLINE", "1");
    if let Some(b) = batch_size {
        cmd.args(["--batch-size", b]);
    }
    cmd.args(extra);
    if let Some(f) = fail_at {
        cmd.env("STEREOSCOPE_FAIL_AT", f);
    }
    cmd.output().expect("binary runs")
}

fn tiny_model(tmp: &Path) -> PathBuf {
    let model = tmp.join("tiny-llama.gguf");
    common::write_tiny_gguf(&model);
    model
}

/// Each listed part's batch size in the manifest, by path under `records/`.
fn listed_batch_sizes(out: &Path) -> Vec<(String, Option<u64>)> {
    listed_in(&out.join("manifest.json"))
}

fn listed_in(manifest: &Path) -> Vec<(String, Option<u64>)> {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).expect("manifest")).expect("json");
    m["parts"]
        .as_object()
        .expect("parts")
        .iter()
        .map(|(rel, e)| (rel.clone(), e["batch_size"].as_u64()))
        .collect()
}

fn bf16_part(k: usize) -> String {
    format!("model=tiny-llama/scheme=mlx/precision=bf16/part-{k:05}.parquet")
}

fn q8_part(k: usize) -> String {
    format!("model=tiny-llama/scheme=mlx/precision=q8/part-{k:05}.parquet")
}

/// Every part's records, latency aside (it measures time).
fn records(out: &Path) -> Vec<(PathBuf, Vec<Record>)> {
    part_files(out)
        .into_iter()
        .map(|p| {
            let mut recs = stereoscope::store::read_records(&p).expect("records");
            for r in &mut recs {
                r.latency_ms = 0.0;
            }
            (p.strip_prefix(out).expect("under").to_path_buf(), recs)
        })
        .collect()
}

/// Run with `--batch-size 4` until the device fails as the third part is written; check
/// the message, the exit status and the two parts kept.
fn run_out_of_memory(model: &Path, out: &Path) {
    let r = study(model, out, Some("4"), Some("device-oom:3"));
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    let err = stderr(&r);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one message: {err}");
    let want = format!(
        "ran out of memory scoring tiny-llama q8 part 0 at batch size 4: finished parts are kept in {}; rerun the same command with --batch-size 2 to resume (the device said: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\"))",
        out.display()
    );
    assert!(
        errors[0].starts_with("error: cpu (") && errors[0].ends_with(&want),
        "{}",
        errors[0]
    );
    assert_eq!(
        listed_batch_sizes(out),
        [(bf16_part(0), Some(4)), (bf16_part(1), Some(4))],
        "the parts finished before the failure are listed, at the batch size they were scored with"
    );
    let on_disk: Vec<PathBuf> = part_files(out)
        .iter()
        .map(|p| p.strip_prefix(out).expect("under").to_path_buf())
        .collect();
    assert_eq!(
        on_disk,
        [
            Path::new("records").join(bf16_part(0)),
            Path::new("records").join(bf16_part(1))
        ]
    );
}

#[test]
fn running_out_of_memory_measuring_perplexity_names_its_flags_and_keeps_the_records() {
    let tmp = tempdir("oom-ppl");
    let model = tiny_model(&tmp);
    let out = tmp.join("out");
    let ppl = ["--ppl-sequences", "2", "--ppl-seq-len", "16"];
    let r = study_with(&model, &out, Some("2"), Some("device-oom-ppl"), &ppl);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    let err = stderr(&r);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one message: {err}");
    let want = format!(
        "ran out of memory measuring the perplexity of tiny-llama bf16 over sequences of 16 tokens (BF16 is held beside it as the reference): its records are kept in {}; rerun the same command with a smaller --ppl-seq-len, or with --ppl-sequences 0 to skip perplexity, to finish (the device said: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\"))",
        out.display()
    );
    assert!(errors[0].ends_with(&want), "{}", errors[0]);
    assert_eq!(
        listed_batch_sizes(&out),
        [(bf16_part(0), Some(2)), (bf16_part(1), Some(2))],
        "bf16's parts are kept"
    );
    // What the message offers works: the same command without perplexity finishes.
    let r = study_with(&model, &out, Some("2"), None, &["--ppl-sequences", "0"]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(part_files(&out).len(), 4);
}

#[test]
fn a_device_out_of_memory_is_one_message_and_a_smaller_batch_size_resumes() {
    let tmp = tempdir("oom-smaller");
    let model = tiny_model(&tmp);
    let out = tmp.join("out");
    run_out_of_memory(&model, &out);
    let kept: Vec<Vec<u8>> = part_files(&out)
        .iter()
        .map(|p| std::fs::read(p).expect("part"))
        .collect();

    let r = study(&model, &out, Some("2"), None);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("resuming: 8 of 16 records already on disk"),
        "{}",
        stderr(&r)
    );
    assert_eq!(
        listed_batch_sizes(&out),
        [
            (bf16_part(0), Some(4)),
            (bf16_part(1), Some(4)),
            (q8_part(0), Some(2)),
            (q8_part(1), Some(2)),
        ]
    );
    let parts = part_files(&out);
    assert_eq!(parts.len(), 4);
    for (p, bytes) in parts.iter().take(2).zip(&kept) {
        assert_eq!(
            &std::fs::read(p).expect("part"),
            bytes,
            "{} kept",
            p.display()
        );
    }
    let r = Command::new(common::bin())
        .args(["report", out.to_str().expect("utf8")])
        .output()
        .expect("report runs");
    assert!(r.status.success(), "{}", stderr(&r));
}

#[test]
fn a_resume_without_batch_size_goes_on_at_the_batch_size_the_parts_recorded() {
    let tmp = tempdir("oom-recorded");
    let model = tiny_model(&tmp);
    let whole = tmp.join("whole");
    let r = study(&model, &whole, Some("4"), None);
    assert!(r.status.success(), "{}", stderr(&r));

    let out = tmp.join("out");
    run_out_of_memory(&model, &out);
    let r = study(&model, &out, None, None);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(
        stderr(&r).contains(
            "batch size 4, as the finished parts of tiny-llama in this folder were scored (--batch-size to change)"
        ),
        "{}",
        stderr(&r)
    );
    assert!(
        listed_batch_sizes(&out).iter().all(|(_, b)| *b == Some(4)),
        "{:?}",
        listed_batch_sizes(&out)
    );
    assert_eq!(
        records(&out),
        records(&whole),
        "the records of an uninterrupted run"
    );
}

#[test]
fn a_new_run_on_the_cpu_scores_prompt_by_prompt_and_records_it() {
    let tmp = tempdir("oom-cpu-default");
    let model = tiny_model(&tmp);
    let out = tmp.join("out");
    let r = study(&model, &out, None, None);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("1 prompt(s) per pass (--batch-size)"),
        "{}",
        stderr(&r)
    );
    let sizes = listed_batch_sizes(&out);
    assert_eq!(sizes.len(), 4);
    assert!(sizes.iter().all(|(_, b)| *b == Some(1)), "{sizes:?}");
}

#[test]
fn a_shard_goes_on_at_the_batch_size_another_shard_in_its_folder_recorded_and_merge_keeps_it() {
    let tmp = tempdir("oom-shards");
    let model = tiny_model(&tmp);
    let out = tmp.join("out");
    let r = study_with(&model, &out, Some("4"), None, &["--shard", "1/2"]);
    assert!(r.status.success(), "{}", stderr(&r));
    let r = study_with(&model, &out, None, None, &["--shard", "2/2"]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("batch size 4, as the finished parts of tiny-llama in this folder"),
        "{}",
        stderr(&r)
    );
    let second = listed_in(&out.join("manifest-s2.json"));
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(second.iter().all(|(_, b)| *b == Some(4)), "{second:?}");
    let o = out.to_str().expect("utf8");
    let r = Command::new(common::bin())
        .args(["merge", o, o])
        .output()
        .expect("merge runs");
    assert!(r.status.success(), "{}", stderr(&r));
    let merged = listed_batch_sizes(&out);
    assert_eq!(merged.len(), 4, "{merged:?}");
    assert!(merged.iter().all(|(_, b)| *b == Some(4)), "{merged:?}");
}
