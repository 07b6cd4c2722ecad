//! Results that cannot silently lie: the real binary on real folders, each tampered with the
//! way a sync tool, a hand or a crash would (copied and replaced parts, a missing or
//! foreign items.parquet, deleted parts, a forged part, an old or unknown manifest, a held
//! lock, a folder stopped before its first manifest, a read-only folder), and `export`'s
//! guards. Every error must exit 2 with one message naming the file.
mod common;

use common::{part_files, run, stderr, stdout, tempdir};
use std::path::{Path, PathBuf};
use std::process::Output;

/// A finished tiny run: 6 items (3 parts of 2) at bf16 and q4, 5 seeds, no perplexity, of
/// the tiny model that answers with letters (valid answers of every role, and items that
/// become biased at q4), so the records and reports compared below hold real answers.
struct Fixture {
    tmp: PathBuf,
    model: PathBuf,
    out: PathBuf,
}

fn study_args<'a>(f: &'a Fixture, out: &'a str, limit: &'a str) -> Vec<String> {
    let bbq = common::bbq_dir();
    [
        "--batch",
        "--model",
        f.model.to_str().expect("utf8"),
        "--bbq-dir",
        bbq.to_str().expect("utf8"),
        "--categories",
        "Age,Religion",
        "--limit",
        limit,
        "--part-size",
        "2",
        "--precisions",
        "bf16,q4",
        "--ppl-sequences",
        "0",
        "--out",
        out,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Every record of a folder's parts, latency aside (never part of an equality check).
fn records(root: &Path) -> Vec<(PathBuf, Vec<stereoscope::store::Record>)> {
    part_files(root)
        .into_iter()
        .map(|p| {
            let mut recs = stereoscope::store::read_records(&p).expect("records");
            for r in &mut recs {
                r.latency_ms = 0.0;
            }
            (
                p.strip_prefix(root).expect("under root").to_path_buf(),
                recs,
            )
        })
        .collect()
}

fn run_s(args: &[String], cache: &Path) -> Output {
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    run(&a, cache)
}

fn fixture(tag: &str) -> Fixture {
    let tmp = tempdir(tag);
    let model = tmp.join("tiny-llama.gguf");
    common::write_answering_gguf(&model);
    let out = tmp.join("out");
    let f = Fixture { tmp, model, out };
    let r = run_s(&study_args(&f, f.out.to_str().expect("utf8"), "6"), &f.tmp);
    assert!(r.status.success(), "{}", stderr(&r));
    common::assert_answering(&f.out);
    f
}

impl Fixture {
    fn o(&self) -> &str {
        self.out.to_str().expect("utf8")
    }

    fn rerun(&self) -> Output {
        run_s(&study_args(self, self.o(), "6"), &self.tmp)
    }

    fn part(&self, precision: &str, k: usize) -> PathBuf {
        self.out.join(format!(
            "records/model=tiny-llama/scheme=mlx/precision={precision}/part-{k:05}.parquet"
        ))
    }

    fn manifest(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.out.join("manifest.json")).expect("manifest");
        serde_json::from_str(&text).expect("json")
    }

    fn set_manifest(&self, v: &serde_json::Value) {
        std::fs::write(self.out.join("manifest.json"), v.to_string()).expect("write");
    }
}

/// Exit code 2, one `error:` line, no panic, and every needle in the message.
fn expect_error(r: &Output, needles: &[&str]) {
    let e = stderr(r);
    assert_eq!(r.status.code(), Some(2), "exit code: {e}");
    assert_eq!(e.matches("error:").count(), 1, "one message:\n{e}");
    assert!(!e.contains("panicked"), "a panic:\n{e}");
    for n in needles {
        assert!(e.contains(n), "the error should mention `{n}`:\n{e}");
    }
}

/// report, export and open all refuse the folder, naming `needles`.
fn readers_refuse(f: &Fixture, needles: &[&str]) {
    let csv = f.tmp.join("refused.csv");
    let c = csv.to_str().expect("utf8");
    expect_error(&run(&["report", f.o()], &f.tmp), needles);
    expect_error(&run(&["export", f.o(), "--out", c], &f.tmp), needles);
    expect_error(&run(&["open", f.o()], &f.tmp), needles);
    assert!(!csv.exists(), "export wrote a CSV from a refused folder");
}

#[test]
fn stray_replaced_and_forged_parts_are_errors_naming_the_file() {
    let f = fixture("stray");
    let good = run(&["report", f.o()], &f.tmp);
    assert!(good.status.success(), "{}", stderr(&good));

    // A copy a sync tool leaves beside a part.
    let copy = f
        .part("bf16", 0)
        .with_file_name("part-00000 (copy).parquet");
    std::fs::copy(f.part("bf16", 0), &copy).expect("copy");
    readers_refuse(&f, &["part-00000 (copy).parquet", "not a part"]);
    std::fs::remove_file(&copy).expect("rm");

    // A part copied over another: its hash is not the listed one.
    let saved = std::fs::read(f.part("q4", 0)).expect("read");
    std::fs::copy(f.part("q4", 1), f.part("q4", 0)).expect("copy over");
    readers_refuse(&f, &["part-00000.parquet", "changed or replaced"]);
    std::fs::write(f.part("q4", 0), &saved).expect("restore");

    // A forged part with its manifest entry made to match: the rows are checked too.
    let path = f.part("bf16", 1);
    let mut recs = stereoscope::store::read_records(&path).expect("records");
    let saved = std::fs::read(&path).expect("read");
    let manifest = f.manifest();
    let rel = "model=tiny-llama/scheme=mlx/precision=bf16/part-00001.parquet";
    let forge = |recs: &[stereoscope::store::Record]| {
        stereoscope::store::write_records(&path, recs).expect("write");
        let data = std::fs::read(&path).expect("read");
        let mut m = manifest.clone();
        m["parts"][rel] = serde_json::json!({
            "rows": recs.len(),
            "sha256": hex_sha256(&data),
        });
        f.set_manifest(&m);
    };
    recs[1] = recs[0].clone();
    forge(&recs);
    readers_refuse(&f, &["part-00001.parquet", "appears twice"]);
    recs[1].example_id = 999_999;
    forge(&recs);
    readers_refuse(&f, &["part-00001.parquet", ":999999"]);
    let whole = {
        std::fs::write(&path, &saved).expect("restore");
        stereoscope::store::read_records(&path).expect("records")
    };
    forge(&whole[..whole.len() - 1]);
    readers_refuse(&f, &["part-00001.parquet", "(1 missing)"]);
    std::fs::write(&path, saved).expect("restore");
    f.set_manifest(&manifest);
    let back = run(&["report", f.o()], &f.tmp);
    assert!(back.status.success(), "{}", stderr(&back));
    assert_eq!(stdout(&back), stdout(&good));
}

fn hex_sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[test]
fn a_missing_or_foreign_items_parquet_is_an_error_naming_it() {
    let f = fixture("items");
    let items = f.out.join("items.parquet");
    let saved = std::fs::read(&items).expect("read");
    std::fs::remove_file(&items).expect("rm");
    readers_refuse(&f, &["items.parquet", "missing"]);
    // The items of another selection (4 items instead of 6).
    let other = f.tmp.join("other");
    let r = run_s(&study_args(&f, other.to_str().expect("utf8"), "4"), &f.tmp);
    assert!(r.status.success(), "{}", stderr(&r));
    std::fs::copy(other.join("items.parquet"), &items).expect("copy");
    readers_refuse(&f, &["items.parquet", "not this folder's selection"]);
    // A run into the folder refuses it too, before anything is scored.
    expect_error(
        &f.rerun(),
        &["items.parquet", "not this folder's selection"],
    );
    std::fs::write(&items, saved).expect("restore");
    assert!(run(&["report", f.o()], &f.tmp).status.success());
}

#[test]
fn an_unfinished_precision_is_reported_partial_is_labelled_and_a_rerun_restores_it() {
    let f = fixture("partial");
    let before = records(&f.out);
    let full = run(&["report", f.o()], &f.tmp);
    assert!(full.status.success(), "{}", stderr(&full));
    std::fs::remove_file(f.part("q4", 2)).expect("rm");
    readers_refuse(&f, &["unfinished", "q4 (2 of 3 parts)", "--partial"]);
    // --partial: the 4 items finished at both precisions, labelled; no derived tables.
    std::fs::remove_file(f.out.join("report.md")).expect("rm");
    let partial = run(&["report", f.o(), "--partial"], &f.tmp);
    assert!(partial.status.success(), "{}", stderr(&partial));
    let text = stdout(&partial);
    assert!(
        text.starts_with("PARTIAL: 4 of 6 items") && text.contains("q4 (2 of 3 parts)"),
        "{text}"
    );
    assert!(
        !f.out.join("report.md").exists(),
        "a partial report.md was written"
    );
    let csv = f.tmp.join("partial.csv");
    let c = csv.to_str().expect("utf8");
    let e = run(&["export", f.o(), "--out", c, "--partial"], &f.tmp);
    assert!(e.status.success(), "{}", stderr(&e));
    let rows = std::fs::read_to_string(&csv).expect("csv").lines().count();
    assert_eq!(rows, 1 + 4, "header and the 4 common items");
    // The same command scores the lost part again: every record as it was.
    let again = f.rerun();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(before == records(&f.out), "records differ after the rerun");
    let back = run(&["report", f.o()], &f.tmp);
    assert_eq!(stdout(&back), stdout(&full));
}

#[test]
fn a_held_lock_refuses_a_second_run_and_a_half_made_folder_is_resumed() {
    let f = fixture("lock");
    let rd = stereoscope::store::ResultsDir::at(&f.out);
    let lock = stereoscope::store::lock::FolderLock::acquire(&rd).expect("lock");
    expect_error(
        &f.rerun(),
        &["another stereoscope run", ".stereoscope.lock"],
    );
    drop(lock);
    assert!(f.rerun().status.success());

    // Stopped between items.parquet and the first manifest (as version 1 wrote them): a
    // folder with only this plan's items.parquet is resumed, to the same records.
    let half = f.tmp.join("half");
    std::fs::create_dir_all(&half).expect("mkdir");
    std::fs::copy(f.out.join("items.parquet"), half.join("items.parquet")).expect("copy");
    let r = run_s(&study_args(&f, half.to_str().expect("utf8"), "6"), &f.tmp);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(
        records(&half) == records(&f.out),
        "the resumed folder's records differ"
    );
    // Another plan's items alone are not taken for this plan's.
    let foreign = f.tmp.join("foreign");
    std::fs::create_dir_all(&foreign).expect("mkdir");
    std::fs::copy(f.out.join("items.parquet"), foreign.join("items.parquet")).expect("copy");
    let r = run_s(
        &study_args(&f, foreign.to_str().expect("utf8"), "4"),
        &f.tmp,
    );
    expect_error(&r, &["items.parquet", "not this plan's"]);
}

#[test]
fn an_old_manifest_is_read_and_upgraded_and_an_unknown_one_refused() {
    let f = fixture("versions");
    let full = run(&["report", f.o()], &f.tmp);
    assert!(full.status.success(), "{}", stderr(&full));
    let mut m = f.manifest();
    assert_eq!(m["format_version"], 2);
    assert_eq!(m["parts"].as_object().map(|o| o.len()), Some(6));
    let v2 = m.clone();
    // Version 1 listed no parts: read, its parts checked by name and rows.
    m["format_version"] = 1.into();
    m.as_object_mut().expect("object").remove("parts");
    f.set_manifest(&m);
    let old = run(&["report", f.o()], &f.tmp);
    assert!(old.status.success(), "{}", stderr(&old));
    assert_eq!(stdout(&old), stdout(&full));
    // A rerun lists them again (checked) and finds nothing to do; the batch size they were
    // scored with is unknown, so not listed.
    assert!(f.rerun().status.success());
    let mut want = v2["parts"].clone();
    for e in want.as_object_mut().expect("parts").values_mut() {
        e.as_object_mut().expect("entry").remove("batch_size");
    }
    assert_eq!(f.manifest()["parts"], want);
    m["format_version"] = 9.into();
    f.set_manifest(&m);
    readers_refuse(
        &f,
        &["manifest.json", "format_version 9", "newer stereoscope"],
    );
}

#[test]
fn export_never_overwrites_unasked_never_writes_into_the_folder_and_explains_its_flags() {
    let f = fixture("export");
    let manifest = std::fs::read(f.out.join("manifest.json")).expect("read");
    let inside = f.out.join("manifest.json");
    let r = run(
        &[
            "export",
            f.o(),
            "--out",
            inside.to_str().expect("utf8"),
            "--force",
        ],
        &f.tmp,
    );
    expect_error(&r, &["inside the results folder"]);
    assert_eq!(std::fs::read(&inside).expect("read"), manifest);
    let r = run(
        &["export", f.o(), "--out", f.tmp.to_str().expect("utf8")],
        &f.tmp,
    );
    expect_error(&r, &["is a folder"]);
    let csv = f.tmp.join("items.csv");
    let c = csv.to_str().expect("utf8");
    std::fs::write(&csv, "mine").expect("write");
    expect_error(
        &run(&["export", f.o(), "--out", c], &f.tmp),
        &["exists", "--force"],
    );
    assert_eq!(std::fs::read_to_string(&csv).expect("read"), "mine");
    let r = run(&["export", f.o(), "--out", c, "--force"], &f.tmp);
    assert!(r.status.success(), "{}", stderr(&r));
    let left: Vec<String> = std::fs::read_dir(&f.tmp)
        .expect("dir")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    // Columns only for the run's precisions, with the seeds' counts the rule reads.
    let text = std::fs::read_to_string(&csv).expect("csv");
    let header: Vec<&str> = text.lines().next().expect("header").split(',').collect();
    let tail = &header[12..];
    assert_eq!(
        tail,
        [
            "role_bf16",
            "p_biased_bf16",
            "valid_seeds_bf16",
            "biased_seeds_bf16",
            "role_q4",
            "p_biased_q4",
            "valid_seeds_q4",
            "biased_seeds_q4",
            "transition_first"
        ]
    );
    // Read back by another tool: a flagged row has no biased seed at bf16 and one at q4;
    // an unflagged row with valid bf16 seeds does not. Both kinds occur.
    let script = "import sys, csv\n\
        rows = list(csv.DictReader(open(sys.argv[1])))\n\
        bad = [r['example_id'] for r in rows if (r['transition_first'] == 'q4') != \
        (int(r['valid_seeds_bf16']) > 0 and int(r['biased_seeds_bf16']) == 0 and int(r['biased_seeds_q4']) > 0)]\n\
        flagged = sum(r['transition_first'] == 'q4' for r in rows)\n\
        unflagged = sum(r['transition_first'] == '' and int(r['valid_seeds_bf16']) > 0 for r in rows)\n\
        print(len(rows), len(bad), flagged > 0, unflagged > 0)\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script, c])
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "6 0 True True",
        "{}",
        stderr(&out)
    );
}

#[test]
fn report_works_on_a_read_only_folder_and_open_needs_a_terminal() {
    let f = fixture("readonly");
    expect_error(&run(&["open", f.o()], &f.tmp), &["needs a terminal"]);
    let ro = f.tmp.join("ro");
    std::fs::create_dir_all(&ro).expect("mkdir");
    // A private mount namespace in which the folder is bind-mounted read-only.
    let script = format!(
        "mount --bind {src} {ro} && mount -o remount,bind,ro {ro} && {bin} report {ro}",
        src = f.o(),
        ro = ro.display(),
        bin = common::bin().display()
    );
    let r = std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c", &script])
        .env("STEREOSCOPE_CACHE", &f.tmp)
        .output()
        .expect("unshare runs");
    let e = stderr(&r);
    assert!(
        !e.contains("mount:") && !e.contains("unshare:"),
        "this test needs user namespaces (unshare -rm) to mount a folder read-only: {e}"
    );
    assert!(r.status.success(), "{e}");
    assert!(e.contains("is not writable"), "{e}");
    assert!(stdout(&r).contains("bf16"), "{}", stdout(&r));
}

/// A BBQ folder with an Age.jsonl made of `lines`.
fn bbq_with(tmp: &Path, name: &str, content: &[u8]) -> PathBuf {
    let d = tmp.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::write(d.join("Age.jsonl"), content).expect("write");
    d
}

#[test]
fn bad_bbq_bytes_and_an_overlong_ppl_sequence_are_refused_before_scoring() {
    let tmp = tempdir("inputs");
    let model = tmp.join("tiny-llama.gguf");
    common::write_tiny_gguf(&model);
    let m = model.to_str().expect("utf8");
    let age = std::fs::read(common::bbq_dir().join("Age.jsonl")).expect("Age.jsonl");
    let lines: Vec<&[u8]> = age.split(|b| *b == b'\n').take(3).collect();
    let study = |bbq: &Path, extra: &[&str]| {
        let out = tmp.join("out");
        let mut a = vec![
            "--batch",
            "--model",
            m,
            "--bbq-dir",
            bbq.to_str().expect("utf8"),
            "--categories",
            "Age",
            "--precisions",
            "bf16",
            "--out",
            out.to_str().expect("utf8"),
        ];
        a.extend(extra);
        let r = run(&a, &tmp);
        (r, out)
    };
    // A byte order mark on line 1.
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend(lines.join(&b'\n'));
    let (r, _) = study(&bbq_with(&tmp, "bom", &bom), &[]);
    expect_error(&r, &["Age.jsonl:1:", "byte order mark"]);
    // Invalid UTF-8 on line 2: named; --skip-bad leaves it out and goes on.
    let mut broken = lines[1].to_vec();
    broken[20] = 0xFF;
    let text = [lines[0], &broken, lines[2]].join(&b'\n');
    let dir = bbq_with(&tmp, "utf8", &text);
    let (r, _) = study(&dir, &["--dry-run"]);
    expect_error(&r, &["Age.jsonl:2:", "not valid UTF-8", "column 21"]);
    let (r, _) = study(&dir, &["--dry-run", "--skip-bad"]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(stderr(&r).contains("2 item(s)"), "{}", stderr(&r));
    // An empty category file.
    let (r, _) = study(&bbq_with(&tmp, "empty", b""), &["--dry-run"]);
    expect_error(&r, &["Age.jsonl", "no items", "empty"]);
    // A perplexity sequence longer than the model's 2048 positions: refused once the
    // model is loaded, before any part is scored.
    let good = bbq_with(&tmp, "good", &lines.join(&b'\n'));
    let (r, out) = study(&good, &["--ppl-seq-len", "4096"]);
    expect_error(&r, &["--ppl-seq-len 4096", "2048 positions"]);
    assert!(part_files(&out).is_empty(), "parts were scored first");
}

#[test]
fn a_part_written_just_before_a_stop_is_left_out_then_checked_and_listed_by_the_rerun() {
    let f = fixture("unlisted");
    let full = f.manifest();
    let rel = "model=tiny-llama/scheme=mlx/precision=q4/part-00001.parquet";
    // Killed between the part's rename and the manifest write: on disk, not listed.
    let mut m = full.clone();
    m["parts"].as_object_mut().expect("parts").remove(rel);
    f.set_manifest(&m);
    let r = run(&["report", f.o()], &f.tmp);
    expect_error(&r, &["q4 (2 of 3 parts)"]);
    assert!(stderr(&r).contains("part-00001.parquet is not listed in the manifest yet"));
    let saved = std::fs::read(f.part("q4", 1)).expect("read");
    assert!(f.rerun().status.success());
    // Listed again with its own hash: checked, not scored again (the batch size it was
    // scored with is unknown, so not listed; the other parts keep theirs).
    let mut want = full["parts"].clone();
    assert!(want[rel]["batch_size"].is_u64(), "{want}");
    want[rel]
        .as_object_mut()
        .expect("entry")
        .remove("batch_size");
    assert_eq!(f.manifest()["parts"], want);
    assert_eq!(std::fs::read(f.part("q4", 1)).expect("read"), saved);
    assert!(run(&["report", f.o()], &f.tmp).status.success());
}
