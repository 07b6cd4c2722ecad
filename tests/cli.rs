//! The real binary on real folders: a tiny random-weight GGUF for fast checks of the whole
//! path, and bad input of every kind the design names.
mod common;

use common::{run, stderr, stdout};
use std::path::{Path, PathBuf};

use common::{part_files as parts, tempdir};

fn tiny(dir: &Path) -> PathBuf {
    let p = dir.join("tiny-llama.gguf");
    common::write_tiny_gguf(&p);
    p
}

/// The tiny model whose head answers with letters (`common::write_answering_gguf`), under
/// the same name, for the checks of statistics that need valid answers of every role.
fn answering(dir: &Path) -> PathBuf {
    let p = dir.join("tiny-llama.gguf");
    common::write_answering_gguf(&p);
    p
}

/// A path as the argument the binary takes.
fn utf8(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 test path")
}

fn batch_args<'a>(model: &'a str, bbq: &'a str, out: &'a str, limit: &'a str) -> Vec<&'a str> {
    vec![
        "--batch",
        "--model",
        model,
        "--bbq-dir",
        bbq,
        "--categories",
        "Age,Religion",
        "--limit",
        limit,
        "--out",
        out,
    ]
}

#[test]
fn tiny_model_runs_five_precisions_into_a_readable_folder_and_resumes() {
    let tmp = tempdir("tiny");
    let model = answering(&tmp);
    let bbq = common::bbq_dir();
    let out = tmp.join("out");
    let (m, b, o) = (utf8(&model), utf8(&bbq), utf8(&out));
    let mut args = batch_args(m, b, o, "12");
    args.extend([
        "--part-size",
        "5",
        "--conditions",
        "both",
        "--scheme",
        "gguf",
    ]);
    let first = run(&args, &tmp);
    assert!(first.status.success(), "{}", stderr(&first));
    // 12 items x 5 precisions x 5 seeds.
    assert_eq!(
        common::pyarrow_counts(&out.join("records")),
        "300 300 bf16=60,q3=60,q4=60,q6=60,q8=60"
    );
    let table = stdout(&first);
    for p in ["bf16", "q8", "q6", "q4", "q3"] {
        assert!(
            table.contains(&format!(" {p} ")),
            "summary lists {p}:\n{table}"
        );
    }
    // Every file written is a finished part: no temporary names left behind.
    let files = parts(&out);
    assert_eq!(files.len(), 5 * 3, "{files:?}");
    assert!(files.iter().all(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("part-"))
    }));
    // The manifest records the per-tensor types and that the k-quant types were used.
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    let model_entry = manifest["models"]
        .as_object()
        .and_then(|m| m.values().next())
        .expect("model entry")
        .clone();
    assert_eq!(
        model_entry["precisions"]["q4"]["tensor_types"]["blk.0.attn_q.weight"],
        "Q4K"
    );
    assert_eq!(
        model_entry["precisions"]["q3"]["tensor_types"]["blk.0.ffn_down.weight"],
        "Q3K"
    );
    assert_eq!(
        model_entry["precisions"]["q6"]["tensor_types"]["token_embd.weight"],
        "Q6K"
    );
    assert_eq!(
        model_entry["precisions"]["bf16"]["tensor_types"]["blk.1.ffn_up.weight"],
        "bf16"
    );
    assert_eq!(manifest["format_version"], 2);

    // Rerunning the same plan writes nothing.
    let before: Vec<_> = files
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .expect("mtime")
        })
        .collect();
    let second = run(&args, &tmp);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("resuming: 300 of 300 records"),
        "{}",
        stderr(&second)
    );
    let after: Vec<_> = parts(&out)
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .expect("mtime")
        })
        .collect();
    assert_eq!(before, after);

    // A lost part is recomputed, identically (answers depend only on the record's identity).
    let victim = out.join("records/model=tiny-llama/scheme=gguf/precision=q4/part-00001.parquet");
    assert!(victim.is_file(), "{victim:?}");
    let original = stereoscope::store::read_records(&victim).expect("reads");
    std::fs::remove_file(&victim).expect("rm");
    // Without --part-size, resuming into the folder takes the folder's part size (5, not
    // the CPU's default 32, which would be another plan).
    let mut resume = args.clone();
    let at = resume
        .iter()
        .position(|a| *a == "--part-size")
        .expect("flag");
    resume.drain(at..at + 2);
    let third = run(&resume, &tmp);
    assert!(third.status.success(), "{}", stderr(&third));
    let again = stereoscope::store::read_records(&victim).expect("rewritten");
    let strip = |v: Vec<stereoscope::store::Record>| {
        v.into_iter()
            .map(|mut r| {
                r.latency_ms = 0.0;
                r
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(original), strip(again));

    // Answers of every role, some changed by quantization: the statistics have something to
    // get wrong. Every statistic agrees with scipy and statsmodels, and the report files exist.
    let mix = common::assert_answering(&out);
    assert!(
        ["q8", "q6", "q4", "q3"].iter().any(|p| mix[*p].changed > 0),
        "{mix:?}"
    );
    assert!(mix.values().any(|m| m.invalid > 0), "{mix:?}");
    common::check_report(&out);
    for f in ["metrics.parquet", "transitions.parquet", "report.md"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // `report` reads the folder back.
    let rep = run(&["report", o, "--format", "json"], &tmp);
    assert!(rep.status.success(), "{}", stderr(&rep));
    let v: serde_json::Value = serde_json::from_str(&stdout(&rep)).expect("json");
    // 5 precisions x (Age, Religion, ALL), and one transition row per precision.
    assert_eq!(v["rows"].as_array().map(|r| r.len()), Some(15));
    let transitions = v["transitions"].as_array().expect("transitions");
    assert_eq!(transitions.len(), 5);
    // Items unbiased at BF16, and a precision where some became biased.
    assert!(
        transitions
            .iter()
            .all(|t| t["unbiased_at_bf16"].as_u64().is_some_and(|u| u > 0)),
        "{transitions:?}"
    );
    assert!(
        transitions
            .iter()
            .any(|t| t["became_biased"].as_u64().is_some_and(|b| b > 0)),
        "{transitions:?}"
    );
    // Some replies were decoded past their first token and parsed.
    assert!(
        transitions
            .iter()
            .any(|t| t["continued_share"].as_f64().is_some_and(|c| c > 0.0)),
        "{transitions:?}"
    );
}

#[test]
fn a_folder_of_another_plan_is_refused_not_overwritten() {
    let tmp = tempdir("plan");
    let model = tiny(&tmp);
    let bbq = common::bbq_dir();
    let out = tmp.join("out");
    let (m, b, o) = (utf8(&model), utf8(&bbq), utf8(&out));
    let mut args = batch_args(m, b, o, "3");
    args.extend(["--precisions", "bf16"]);
    assert!(run(&args, &tmp).status.success());
    let before = parts(&out);
    let mut other = batch_args(m, b, o, "3");
    other.extend(["--precisions", "bf16", "--seeds", "1,2"]);
    let r = run(&other, &tmp);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        stderr(&r).contains("different plan") && stderr(&r).contains("seeds"),
        "{}",
        stderr(&r)
    );
    assert_eq!(parts(&out), before);
    // A non-empty folder that is not a results folder is refused too.
    let foreign = tmp.join("foreign");
    std::fs::create_dir_all(&foreign).expect("mkdir");
    std::fs::write(foreign.join("notes.txt"), "mine").expect("write");
    let r = run(&batch_args(m, b, utf8(&foreign), "3"), &tmp);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        stderr(&r).contains("not a stereoscope results folder"),
        "{}",
        stderr(&r)
    );
}

fn expect_error(args: &[&str], cache: &Path, needle: &str) {
    let r = run(args, cache);
    assert_eq!(
        r.status.code(),
        Some(2),
        "exit code for {args:?}: {}",
        stderr(&r)
    );
    let e = stderr(&r);
    assert!(
        e.contains(needle),
        "error for {args:?} should mention `{needle}`:\n{e}"
    );
    assert_eq!(e.matches("error:").count(), 1, "one clear message:\n{e}");
}

#[test]
fn bad_input_gives_one_clear_error_and_exit_code_2() {
    let tmp = tempdir("bad");
    let model = tiny(&tmp);
    let m = utf8(&model);
    let bbq = common::bbq_dir();
    let b = utf8(&bbq);
    let out = tmp.join("out");
    let o = utf8(&out);

    // Unknown category.
    let mut a = batch_args(m, b, o, "3");
    a[6] = "Age,Religon";
    expect_error(&a, &tmp, "Religon");
    // Missing model file.
    let missing = tmp.join("nope.gguf");
    expect_error(&batch_args(utf8(&missing), b, o, "3"), &tmp, "nope.gguf");
    // Truncated GGUF.
    let bytes = std::fs::read(&model).expect("read");
    let cut = tmp.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    expect_error(&batch_args(utf8(&cut), b, o, "3"), &tmp, "truncated");
    // Not a GGUF at all.
    let junk = tmp.join("junk.gguf");
    std::fs::write(&junk, b"hello").expect("write");
    expect_error(&batch_args(utf8(&junk), b, o, "3"), &tmp, "junk.gguf");
    // Unwritable --out (a path below a regular file).
    let file = tmp.join("a-file");
    std::fs::write(&file, "x").expect("write");
    let below = file.join("out");
    expect_error(&batch_args(m, b, utf8(&below), "3"), &tmp, "--out");
    // Malformed BBQ line, through the binary.
    let bad_bbq = tmp.join("bbq");
    std::fs::create_dir_all(&bad_bbq).expect("mkdir");
    let age = std::fs::read_to_string(bbq.join("Age.jsonl")).expect("read");
    let mut lines: Vec<&str> = age.lines().take(4).collect();
    lines[3] = "not json";
    std::fs::write(bad_bbq.join("Age.jsonl"), lines.join("\n")).expect("write");
    let mut a = batch_args(m, utf8(&bad_bbq), o, "3");
    a[6] = "Age";
    expect_error(&a, &tmp, "Age.jsonl:4:");
    // Bad flag values.
    let mut a = batch_args(m, b, o, "3");
    a.extend(["--precisions", "bf16,q5"]);
    expect_error(&a, &tmp, "q5");
    expect_error(&batch_args(m, b, o, "zero"), &tmp, "--limit");
    // Nothing was written for any of these.
    assert!(!out.join("records").exists());
}

#[test]
fn a_list_flag_that_names_a_value_twice_is_refused_before_anything_runs() {
    let tmp = tempdir("repeats");
    let bbq = common::bbq_dir();
    let out = tmp.join("out");
    for (flag, value, named) in [
        ("--categories", "Age,Religion,Age", "Age"),
        ("--seeds", "42,123,42", "42"),
        ("--precisions", "bf16,q4,bf16", "bf16"),
        ("--noise-seeds", "7,7", "7"),
    ] {
        let r = run(
            &[
                "--batch",
                "--model",
                "no-such-model.gguf",
                "--bbq-dir",
                utf8(&bbq),
                "--out",
                utf8(&out),
                flag,
                value,
            ],
            &tmp,
        );
        assert_eq!(r.status.code(), Some(2), "{flag}: {}", stderr(&r));
        assert!(
            stderr(&r).contains(&format!("{flag} names {named} twice")),
            "{flag}: {}",
            stderr(&r)
        );
        assert!(!out.exists(), "{flag}: nothing is written");
    }
}

#[test]
fn dry_run_prints_the_plan_and_runs_nothing() {
    let tmp = tempdir("dry");
    let model = tiny(&tmp);
    let bbq = common::bbq_dir();
    let out = tmp.join("out");
    let mut a = batch_args(utf8(&model), utf8(&bbq), utf8(&out), "40");
    a.push("--dry-run");
    let r = run(&a, &tmp);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(
        stdout(&r).contains("Age: 30 items") && stdout(&r).contains("Religion: 10 items"),
        "{}",
        stdout(&r)
    );
    assert!(stderr(&r).contains("1000 records"), "{}", stderr(&r));
    // The ETA is projected from a few items scored at BF16.
    assert!(
        stdout(&r).contains("eta: about")
            && stdout(&r).contains("projected from BF16 on 4 item(s)"),
        "{}",
        stdout(&r)
    );
    assert!(!out.exists());
}

#[test]
fn open_and_report_refuse_what_is_not_a_results_folder() {
    let tmp = tempdir("open");
    let plain = tmp.join("plain");
    std::fs::create_dir_all(&plain).expect("mkdir");
    for cmd in ["open", "report"] {
        let r = run(&[cmd, utf8(&plain)], &tmp);
        assert_eq!(r.status.code(), Some(2), "{cmd}");
        assert!(
            stderr(&r).contains("not a stereoscope results folder"),
            "{cmd}: {}",
            stderr(&r)
        );
    }
    // A folder written by a newer format version.
    let newer = tmp.join("newer");
    std::fs::create_dir_all(&newer).expect("mkdir");
    std::fs::write(
        newer.join("manifest.json"),
        r#"{"format_version": 99, "plan": {}}"#,
    )
    .expect("write");
    for cmd in ["open", "report"] {
        let r = run(&[cmd, utf8(&newer)], &tmp);
        assert_eq!(r.status.code(), Some(2), "{cmd}");
        assert!(
            stderr(&r).contains("format_version 99"),
            "{cmd}: {}",
            stderr(&r)
        );
    }
}

#[test]
fn report_without_bf16_explains_instead_of_crashing_and_open_shows_the_report_numbers() {
    let tmp = tempdir("nobf16");
    let model = answering(&tmp);
    let bbq = common::bbq_dir();
    let out = tmp.join("out");
    let (m, b, o) = (utf8(&model), utf8(&bbq), utf8(&out));
    let mut args = batch_args(m, b, o, "6");
    args.extend(["--precisions", "q4,q3"]);
    let r = run(&args, &tmp);
    assert!(r.status.success(), "{}", stderr(&r));
    let rep = run(&["report", o, "--format", "json"], &tmp);
    assert!(rep.status.success(), "{}", stderr(&rep));
    let v: serde_json::Value = serde_json::from_str(&stdout(&rep)).expect("json");
    for t in v["transitions"].as_array().expect("transitions") {
        assert!(t["rate"].is_null());
        assert!(
            t["note"].as_str().is_some_and(|n| n.contains("no bf16")),
            "{t}"
        );
    }
    let md = run(&["report", o, "--format", "markdown"], &tmp);
    assert!(stdout(&md).contains("no bf16 records"), "{}", stdout(&md));

    // The explorer's summary screen shows the numbers `report` computes.
    let full = tmp.join("full");
    let f = utf8(&full);
    assert!(run(&batch_args(m, b, f, "6"), &tmp).status.success());
    common::assert_answering(&full);
    let rep = run(&["report", f, "--format", "json"], &tmp);
    let v: serde_json::Value = serde_json::from_str(&stdout(&rep)).expect("json");
    let rd = stereoscope::store::ResultsDir::at(&full);
    let (views, report) = stereoscope::tui::load(&rd).expect("loads");
    let mut app = stereoscope::tui::app::App::new(full.clone(), "tiny".into(), "cpu".into());
    stereoscope::tui::app::update(
        &mut app,
        stereoscope::tui::app::Action::Data(views, report.map(Box::new)),
    );
    stereoscope::tui::app::update(&mut app, stereoscope::tui::app::Action::Summary);
    let mut term =
        ratatui::Terminal::new(ratatui::backend::TestBackend::new(160, 48)).expect("terminal");
    term.draw(|fr| stereoscope::tui::view::render(fr, &app))
        .expect("draws");
    let buf = term.backend().buffer();
    let screen: String = (0..48u16)
        .map(|y| {
            (0..160u16)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                + "\n"
        })
        .collect();
    // The summary has one row per precision, pooled over categories (`ALL`), each with an
    // SRS (every precision has valid answers).
    let pooled: Vec<&serde_json::Value> = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["category"] == "ALL")
        .collect();
    assert_eq!(pooled.len(), 5);
    for row in pooled {
        let srs = row["srs"].as_f64().expect("an SRS");
        assert!(
            screen.contains(&format!("{:.1}%", 100.0 * srs)),
            "SRS {srs} not on screen:\n{screen}"
        );
    }
    for t in v["transitions"].as_array().expect("transitions") {
        let (b, u) = (
            t["became_biased"].as_u64().expect("b"),
            t["unbiased_at_bf16"].as_u64().expect("u"),
        );
        assert!(u > 0, "no item unbiased at bf16: {t}");
        assert!(
            screen.contains(&format!(" {b}/{u} ")),
            "transition {b}/{u} not on screen:\n{screen}"
        );
        let floor = t["noise_floor"].as_f64().expect("a noise floor");
        assert!(
            screen.contains(&format!("{:.1}%", 100.0 * floor)),
            "noise floor not on screen:\n{screen}"
        );
    }
}

#[test]
fn mlx_scheme_is_the_default_and_quantizes_every_linear_and_embedding() {
    let tmp = tempdir("mlx");
    let model = tiny(&tmp);
    let bbq = common::bbq_dir();
    let out = tmp.join("out");
    let (m, b, o) = (utf8(&model), utf8(&bbq), utf8(&out));
    let r = run(&batch_args(m, b, o, "4"), &tmp);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(
        out.join("records/model=tiny-llama/scheme=mlx/precision=q3")
            .is_dir()
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["plan"]["scheme"], "mlx");
    let entry = manifest["models"]
        .as_object()
        .and_then(|m| m.values().next())
        .expect("model")
        .clone();
    for (p, bits) in [("q8", 8), ("q6", 6), ("q4", 4), ("q3", 3)] {
        let types = &entry["precisions"][p]["tensor_types"];
        let want = format!("mlx-affine-{bits}bit-g64");
        for t in [
            "token_embd.weight",
            "blk.0.attn_q.weight",
            "blk.1.ffn_down.weight",
            "blk.1.attn_v.weight",
        ] {
            assert_eq!(types[t], want.as_str(), "{p} {t}");
        }
        assert_eq!(
            types["blk.0.attn_norm.weight"], "f32",
            "norms stay unquantized"
        );
        assert!(
            entry["precisions"][p]["compute"]
                .as_str()
                .is_some_and(|c| c.contains("mlx affine"))
        );
    }
}

#[test]
fn headless_export_writes_one_row_per_item_with_roles_per_precision() {
    let tmp = tempdir("export");
    let model = answering(&tmp);
    let bbq = common::bbq_dir();
    let out = tmp.join("out");
    let (m, b, o) = (utf8(&model), utf8(&bbq), utf8(&out));
    assert!(run(&batch_args(m, b, o, "8"), &tmp).status.success());
    let csv = tmp.join("all.csv");
    let r = run(&["export", o, "--out", utf8(&csv)], &tmp);
    assert!(r.status.success(), "{}", stderr(&r));
    let script = "import csv, sys\n\
        rows = list(csv.DictReader(open(sys.argv[1], newline='')))\n\
        print(len(rows), ','.join(rows[0].keys()))\n\
        for r in rows:\n\
        \tassert r['role_bf16'] in ('biased', 'anti', 'unknown', 'invalid'), r\n\
        \tassert 0 <= float(r['p_biased_q3']) <= 1\n\
        \tassert r['transition_first'] in ('', 'q8', 'q6', 'q4', 'q3')\n\
        roles = {r['role_bf16'] for r in rows}\n\
        assert {'biased', 'anti', 'unknown'} <= roles, roles\n\
        assert any(r['transition_first'] for r in rows), 'no item became biased'\n";
    let py = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&csv)
        .output()
        .expect("python3");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let head = String::from_utf8_lossy(&py.stdout).to_string();
    assert!(head.starts_with("8 category,example_id,context_condition,question_polarity,context,question,ans0,ans1,ans2,label,biased_index,unknown_index,role_bf16,p_biased_bf16,valid_seeds_bf16,biased_seeds_bf16,role_q8,p_biased_q8,valid_seeds_q8,biased_seeds_q8,role_q6,p_biased_q6,valid_seeds_q6,biased_seeds_q6,role_q4,p_biased_q4,valid_seeds_q4,biased_seeds_q4,role_q3,p_biased_q3,valid_seeds_q3,biased_seeds_q3,transition_first"), "{head}");
    // Filters: one category; a precision's transitions are a subset.
    let rel = tmp.join("rel.csv");
    let r = run(
        &["export", o, "--out", utf8(&rel), "--category", "Religion"],
        &tmp,
    );
    assert!(r.status.success(), "{}", stderr(&r));
    let text = std::fs::read_to_string(&rel).expect("csv");
    assert!(
        text.lines().skip(1).all(|l| l.starts_with("Religion,")),
        "{text}"
    );
    let bad = run(
        &["export", o, "--out", utf8(&rel), "--transitions-at", "q5"],
        &tmp,
    );
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn noise_seeds_measure_the_noise_floor() {
    let tmp = tempdir("noise");
    let model = answering(&tmp);
    let bbq = common::bbq_dir();
    let out = tmp.join("out");
    let (m, b, o) = (utf8(&model), utf8(&bbq), utf8(&out));
    let mut args = batch_args(m, b, o, "10");
    args.extend(["--precisions", "bf16,q3", "--noise-seeds", "7,8,9,10,11"]);
    let r = run(&args, &tmp);
    assert!(r.status.success(), "{}", stderr(&r));
    // 10 items: bf16 has 5 study + 5 noise seeds, q3 has 5 study seeds.
    assert_eq!(
        common::pyarrow_counts(&out.join("records")),
        "150 150 bf16=100,q3=50"
    );
    let rep = run(&["report", o, "--format", "json"], &tmp);
    let v: serde_json::Value = serde_json::from_str(&stdout(&rep)).expect("json");
    common::assert_answering(&out);
    let transitions = v["transitions"].as_array().expect("transitions");
    assert_eq!(transitions.len(), 2);
    for t in transitions {
        assert!(
            t["unbiased_at_bf16"].as_u64().is_some_and(|u| u > 0),
            "no item unbiased at bf16: {t}"
        );
        assert!(t["measured_noise_floor"].as_f64().is_some(), "{t}");
    }
    // The study statistics count study seeds only.
    let all = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["category"] == "ALL" && r["precision"] == "bf16")
        .expect("row")
        .clone();
    assert_eq!(all["n"], 50);
    common::check_report(&out);
    // Noise seeds that repeat a study seed are refused.
    let o2 = tmp.join("o2");
    let mut bad = batch_args(m, b, utf8(&o2), "3");
    bad.extend(["--noise-seeds", "42"]);
    let r = run(&bad, &tmp);
    assert_eq!(r.status.code(), Some(2));
    assert!(stderr(&r).contains("--noise-seeds"), "{}", stderr(&r));
}

/// Records of a results folder, sorted, with the timing column cleared.
fn records_of(dir: &Path) -> Vec<(String, String, String, stereoscope::store::Record)> {
    let rd = stereoscope::store::ResultsDir::at(dir);
    let mut v: Vec<_> = stereoscope::store::read_all_records(&rd)
        .expect("records")
        .into_iter()
        .map(|s| {
            let mut r = s.rec;
            r.latency_ms = 0.0;
            (s.model, s.scheme, s.precision, r)
        })
        .collect();
    v.sort_by(|a, b| {
        (
            &a.0,
            &a.1,
            &a.2,
            &a.3.category,
            a.3.example_id,
            a.3.seed,
            &a.3.seed_set,
        )
            .cmp(&(
                &b.0,
                &b.1,
                &b.2,
                &b.3.category,
                b.3.example_id,
                b.3.seed,
                &b.3.seed_set,
            ))
    });
    v
}

#[test]
fn shards_in_one_folder_or_several_merge_into_what_one_run_writes() {
    let tmp = tempdir("shards");
    let model = answering(&tmp);
    let bbq = common::bbq_dir();
    let (m, b) = (utf8(&model), utf8(&bbq));
    let path = |name: &str| tmp.join(name).to_str().expect("utf8").to_string();
    // 10 items in parts of 3: four parts per precision, perplexity on two short sequences.
    let study = |out: &str, extra: &[&str]| {
        let mut a = batch_args(m, b, out, "10");
        a.extend([
            "--part-size",
            "3",
            "--precisions",
            "bf16,q4",
            "--ppl-sequences",
            "2",
            "--ppl-seq-len",
            "16",
        ]);
        a.extend(extra.iter().copied());
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let ok = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let r = run(&a, &tmp);
        assert!(r.status.success(), "{a:?}: {}", stderr(&r));
        r
    };
    let whole = path("whole");
    ok(study(&whole, &[]));
    let expected = records_of(Path::new(&whole));
    assert_eq!(expected.len(), 10 * 2 * 5);
    common::assert_answering(Path::new(&whole));

    // Three shards sharing one folder.
    let shared = path("shared");
    for i in 1..=3 {
        let r = ok(study(&shared, &["--shard", &format!("{i}/3")]));
        assert!(
            stdout(&r).contains(&format!("shard {i}/3 finished")),
            "{}",
            stdout(&r)
        );
    }
    // Parts 0 and 3 belong to shard 1, part 1 to shard 2, part 2 to shard 3.
    let names: Vec<String> = parts(Path::new(&shared))
        .iter()
        .filter(|p| p.to_string_lossy().contains("precision=bf16"))
        .map(|p| p.file_name().expect("name").to_string_lossy().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "part-s1-00000.parquet",
            "part-s1-00003.parquet",
            "part-s2-00001.parquet",
            "part-s3-00002.parquet"
        ]
    );
    // Before the merge the folder is not a whole run, and a whole run is refused there.
    expect_error(&["report", &shared], &tmp, "shard(s) of a run");
    let a = study(&shared, &[]);
    expect_error(
        &a.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        &tmp,
        "stereoscope merge",
    );
    let r = ok(vec!["merge".into(), shared.clone(), shared.clone()]);
    assert!(
        stdout(&r).contains(" q4 "),
        "report printed:\n{}",
        stdout(&r)
    );
    assert_eq!(records_of(Path::new(&shared)), expected);
    assert_eq!(
        common::pyarrow_counts(&tmp.join("shared/records")),
        common::pyarrow_counts(&tmp.join("whole/records"))
    );
    assert!(!tmp.join("shared/manifest-s1.json").exists());
    let ppl = |d: &str| {
        stereoscope::store::perplexity::read(&stereoscope::store::ResultsDir::at(Path::new(d)))
            .expect("perplexity")
            .iter()
            .map(|r| (r.precision.clone(), r.perplexity))
            .collect::<Vec<_>>()
    };
    assert_eq!(ppl(&shared), ppl(&whole));
    assert_eq!(ppl(&shared).len(), 2);
    // The merged folder is the whole plan's folder: a rerun finds everything done.
    let r = ok(study(&shared, &[]));
    assert!(
        stderr(&r).contains("resuming: 100 of 100 records"),
        "{}",
        stderr(&r)
    );

    // Two shards in two folders, merged into a third.
    let (s1, s2, merged) = (path("s1"), path("s2"), path("merged"));
    ok(study(&s1, &["--shard", "1/2"]));
    ok(study(&s2, &["--shard", "2/2"]));
    expect_error(&["merge", &path("m-missing"), &s1], &tmp, "2/2 missing");
    ok(vec!["merge".into(), merged.clone(), s1.clone(), s2.clone()]);
    assert_eq!(records_of(Path::new(&merged)), expected);
    // The merged manifest keeps every shard's run history, each run labelled with its shard.
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.join("merged/manifest.json")).expect("manifest"),
    )
    .expect("json");
    let shards: Vec<&str> = manifest["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["shard"].as_str())
        .collect();
    assert!(
        shards.contains(&"1/2") && shards.contains(&"2/2"),
        "runs by shard: {shards:?}"
    );
    // Merging copies (links): the shard folders keep their files.
    assert!(tmp.join("s1/manifest-s1.json").is_file());

    // Shards of another plan, or of another split, are not joined.
    let other = path("other");
    ok(study(&other, &["--shard", "2/2", "--seeds", "1,2"]));
    expect_error(
        &["merge", &path("m-plan"), &s1, &other],
        &tmp,
        "different plans",
    );
    let third = path("third");
    ok(study(&third, &["--shard", "2/3"]));
    expect_error(
        &["merge", &path("m-split"), &s1, &third],
        &tmp,
        "different splits",
    );
    // An unfinished shard: nothing is merged, and the missing part is named.
    let gone = parts(Path::new(&s2)).into_iter().next().expect("a part");
    std::fs::remove_file(&gone).expect("rm");
    expect_error(
        &["merge", &path("m-unfinished"), &s1, &s2],
        &tmp,
        "not finished",
    );
    assert!(!tmp.join("m-unfinished").exists());
    // Bad --shard values name the flag.
    let a = study(&path("bad"), &["--shard", "3/2"]);
    expect_error(
        &a.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        &tmp,
        "--shard must be I/N",
    );
}

#[test]
fn the_prompt_can_be_replaced_and_the_manifest_shows_what_the_model_saw() {
    let tmp = tempdir("protocol");
    let model = tiny(&tmp);
    let bbq = common::bbq_dir();
    let (m, b) = (utf8(&model), utf8(&bbq));
    let path = |name: &str| tmp.join(name).to_str().expect("utf8").to_string();
    let user = tmp.join("user.txt");
    std::fs::write(
        &user,
        "Question: {question}\nContext: {context}\n(A) {ans0} (B) {ans1} (C) {ans2}\nLetter:\n",
    )
    .expect("write");
    let chat = tmp.join("chat.jinja");
    std::fs::write(
        &chat,
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}",
    )
    .expect("write");
    let run_ok = |out: &str, extra: &[&str]| {
        let mut a = batch_args(m, b, out, "6");
        a.extend(["--precisions", "bf16,q4", "--ppl-sequences", "0"]);
        a.extend(extra.iter().copied());
        let r = run(&a, &tmp);
        assert!(r.status.success(), "{a:?}: {}", stderr(&r));
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(Path::new(out).join("manifest.json")).expect("manifest"),
        )
        .expect("json");
        manifest
    };
    let study = run_ok(&path("study"), &[]);
    let custom = run_ok(
        &path("custom"),
        &[
            "--system-prompt",
            "Reply with one letter.",
            "--user-template",
            utf8(&user),
            "--chat-template",
            utf8(&chat),
        ],
    );
    let example = |m: &serde_json::Value| {
        let models = m["models"].as_object().expect("models");
        let entry = models.values().next().expect("one model");
        entry["example_prompt"]["text"]
            .as_str()
            .expect("example prompt")
            .to_string()
    };
    assert_eq!(study["plan"]["protocol"]["name"], "paper");
    assert!(
        example(&study).contains("Answer the following multiple choice question"),
        "{}",
        example(&study)
    );
    assert_eq!(custom["plan"]["protocol"]["name"], "custom");
    assert_eq!(
        custom["plan"]["protocol"]["system"],
        "Reply with one letter."
    );
    let text = example(&custom);
    assert!(
        text.starts_with("<|system|>Reply with one letter.\n<|user|>Question: "),
        "{text}"
    );
    assert!(text.ends_with("\nLetter:\n<|assistant|>"), "{text}");
    let entry = custom["models"]
        .as_object()
        .expect("models")
        .values()
        .next()
        .cloned();
    assert_eq!(
        entry.expect("model")["chat_template"].as_str(),
        Some(std::fs::read_to_string(&chat).expect("read").as_str())
    );
    // Another prompt gives other probabilities from the same model.
    let probs = |d: &str| {
        let rd = stereoscope::store::ResultsDir::at(Path::new(d));
        let mut v: Vec<(String, i64, i64, [f64; 3])> = stereoscope::store::read_all_records(&rd)
            .expect("records")
            .into_iter()
            .filter(|r| r.precision == "bf16")
            .map(|r| (r.rec.category, r.rec.example_id, r.rec.seed, r.rec.prob))
            .collect();
        v.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
        v
    };
    let (p_study, p_custom) = (probs(&path("study")), probs(&path("custom")));
    assert_eq!(p_study.len(), p_custom.len());
    assert!(p_study.iter().zip(&p_custom).all(|(a, b)| a.3 != b.3));
    // An empty system prompt sends no system message.
    let none = run_ok(
        &path("nosys"),
        &["--system-prompt", "", "--chat-template", utf8(&chat)],
    );
    assert!(
        example(&none).starts_with("<|user|>Context: "),
        "{}",
        example(&none)
    );
    // Another prompt into the study's folder is refused, naming the protocol.
    let dir_study = path("study");
    let mut a = batch_args(m, b, &dir_study, "6");
    a.extend([
        "--precisions",
        "bf16,q4",
        "--ppl-sequences",
        "0",
        "--system-prompt",
        "x",
    ]);
    expect_error(&a, &tmp, "protocol");
    // Bad templates are named before any model loads.
    let bad_user = tmp.join("bad-user.txt");
    std::fs::write(&bad_user, "{question}\n{ans0} {ans1} {answer2}\n").expect("write");
    let bad_chat = tmp.join("bad.jinja");
    std::fs::write(&bad_chat, "{% for m in messages %}{{ m.content }").expect("write");
    for (flag, file, needle) in [
        ("--user-template", utf8(&bad_user), "bad-user.txt, line 2"),
        ("--chat-template", utf8(&bad_chat), "bad.jinja"),
        ("--user-template", "/nonexistent/user.txt", "cannot read"),
    ] {
        let dir_bad = path("bad");
        let mut a = batch_args(m, b, &dir_bad, "6");
        a.extend([flag, file]);
        // (minijinja's own message says "syntax error:", so no single-message check here.)
        let r = run(&a, &tmp);
        assert_eq!(r.status.code(), Some(2), "{a:?}: {}", stderr(&r));
        assert!(stderr(&r).contains(needle), "{needle}: {}", stderr(&r));
    }
    assert!(!tmp.join("bad").exists());
    // A folder model without a chat template needs --chat-template.
    let folder = tmp.join("no-template");
    common::write_tiny_arch(&folder, "llama");
    let cfg_path = folder.join("tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).expect("read")).expect("json");
    cfg.as_object_mut().expect("object").remove("chat_template");
    std::fs::write(&cfg_path, cfg.to_string()).expect("write");
    let f = utf8(&folder);
    let dir_nt = path("nt");
    let mut a = batch_args(f, b, &dir_nt, "6");
    a.extend(["--precisions", "bf16", "--ppl-sequences", "0"]);
    expect_error(&a, &tmp, "pass --chat-template FILE");
    let dir_nt2 = path("nt2");
    let mut a = batch_args(f, b, &dir_nt2, "6");
    a.extend([
        "--precisions",
        "bf16",
        "--ppl-sequences",
        "0",
        "--chat-template",
        utf8(&chat),
    ]);
    let r = run(&a, &tmp);
    assert!(r.status.success(), "{}", stderr(&r));
}

#[test]
fn a_plan_that_only_adds_precisions_or_models_extends_the_folder() {
    let tmp = tempdir("extend");
    let model = tiny(&tmp);
    let second = tmp.join("second-tiny.gguf");
    std::fs::copy(&model, &second).expect("copy");
    let bbq = common::bbq_dir();
    let out = tmp.join("out");
    let (m, m2, b, o) = (utf8(&model), utf8(&second), utf8(&bbq), utf8(&out));
    let with = |precisions: &str, models: &[&str]| {
        let mut a = batch_args(m, b, o, "6");
        a.extend(["--precisions", precisions, "--ppl-sequences", "0"]);
        for extra in models {
            a.extend(["--model", extra]);
        }
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let go = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        run(&a, &tmp)
    };
    let first = go(with("bf16,q4", &[]));
    assert!(first.status.success(), "{}", stderr(&first));
    let before: Vec<(PathBuf, Vec<u8>)> = parts(&out)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect();
    assert_eq!(before.len(), 2);
    let more = go(with("bf16,q8,q4", &[]));
    assert!(more.status.success(), "{}", stderr(&more));
    assert!(
        stderr(&more).contains("adding precision q8"),
        "{}",
        stderr(&more)
    );
    assert!(
        stderr(&more).contains("resuming: 60 of 90 records"),
        "{}",
        stderr(&more)
    );
    // The parts already there are untouched; q8 is added.
    for (p, bytes) in &before {
        assert_eq!(&std::fs::read(p).expect("read"), bytes, "{}", p.display());
    }
    assert_eq!(
        common::pyarrow_counts(&out.join("records")),
        "90 90 bf16=30,q4=30,q8=30"
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(
        manifest["plan"]["precisions"],
        serde_json::json!(["bf16", "q8", "q4"])
    );
    // A second model is added the same way.
    let two = go(with("bf16,q8,q4", &[m2]));
    assert!(two.status.success(), "{}", stderr(&two));
    assert!(
        stderr(&two).contains("adding model second-tiny"),
        "{}",
        stderr(&two)
    );
    assert_eq!(parts(&out).len(), 6);
    // Dropping a precision, or changing anything else, is refused.
    let fewer = with("bf16,q4", &[m2]);
    expect_error(
        &fewer.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        &tmp,
        "different plan",
    );
    let mut seeds = with("bf16,q8,q4", &[m2]);
    seeds.extend(["--seeds".to_string(), "1,2".to_string()]);
    expect_error(
        &seeds.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        &tmp,
        "seeds",
    );
}

#[test]
fn option_orders_check_position_and_leave_the_study_order_unchanged() {
    let tmp = tempdir("orders");
    let model = answering(&tmp);
    let bbq = common::bbq_dir();
    let (m, b) = (utf8(&model), utf8(&bbq));
    let path = |name: &str| tmp.join(name).to_str().expect("utf8").to_string();
    let go = |out: &str, extra: &[&str]| {
        let mut a = batch_args(m, b, out, "6");
        a.extend(["--precisions", "bf16,q4", "--ppl-sequences", "0"]);
        a.extend(extra.iter().copied());
        let r = run(&a, &tmp);
        assert!(r.status.success(), "{a:?}: {}", stderr(&r));
        r
    };
    let (plain, cyclic) = (path("plain"), path("cyclic"));
    go(&plain, &[]);
    let r = go(&cyclic, &["--option-orders", "cyclic"]);
    assert!(stderr(&r).contains("× 3 option orders"), "{}", stderr(&r));
    // 6 items × 2 precisions × 3 orders × 5 seeds; the keys without the order are 60.
    assert_eq!(
        common::pyarrow_counts(&tmp.join("cyclic/records")),
        "180 60 bf16=90,q4=90"
    );
    // The study's order is computed exactly as in a run without other orders.
    let study = |d: &str| {
        records_of(Path::new(d))
            .into_iter()
            .filter(|r| r.3.option_order == "012")
            .collect::<Vec<_>>()
    };
    assert_eq!(study(&cyclic), records_of(Path::new(&plain)));
    let all = records_of(Path::new(&cyclic));
    assert!(all.iter().any(|r| r.3.option_order == "201"));
    // The main tables equal the plain run's; the option-order table is added.
    let json = |d: &str| -> serde_json::Value {
        let r = run(&["report", d, "--format", "json"], &tmp);
        assert!(r.status.success(), "{}", stderr(&r));
        serde_json::from_str(&stdout(&r)).expect("json")
    };
    let (jp, jc) = (json(&plain), json(&cyclic));
    common::assert_answering(Path::new(&plain));
    assert_eq!(jp["rows"], jc["rows"]);
    assert_eq!(jp["transitions"], jc["transitions"]);
    assert_eq!(jp["option_orders"], serde_json::json!([]));
    let orders: Vec<String> = jc["option_orders"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["precision"] == "q4")
        .map(|r| r["option_order"].as_str().expect("order").to_string())
        .collect();
    assert_eq!(orders, ["012", "120", "201", "every"]);
    // Every order has valid answers: its letter shares are numbers summing to one.
    for r in jc["option_orders"].as_array().expect("rows") {
        if r["option_order"] == "every" {
            continue;
        }
        let shares: Vec<f64> = r["letter_shares"]
            .as_array()
            .unwrap_or_else(|| panic!("no letter shares: {r}"))
            .iter()
            .map(|x| x.as_f64().expect("share"))
            .collect();
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{r}");
    }
    common::check_report(Path::new(&cyclic));
    let md = std::fs::read_to_string(tmp.join("cyclic/report.md")).expect("report.md");
    assert!(md.contains("### Option order"), "{md}");
    // The explorer's export shows the study's order only: one row per item.
    let csv = tmp.join("items.csv");
    let r = run(&["export", &cyclic, "--out", utf8(&csv)], &tmp);
    assert!(r.status.success(), "{}", stderr(&r));
    let a = std::fs::read_to_string(&csv).expect("csv");
    let r = run(&["export", &plain, "--out", utf8(&csv), "--force"], &tmp);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(a, std::fs::read_to_string(&csv).expect("csv"));
    // The study's order is required.
    let bad = path("bad");
    let mut args = batch_args(m, b, &bad, "6");
    args.extend(["--option-orders", "120,201"]);
    expect_error(&args, &tmp, "must include 012");
}

#[test]
fn skip_bad_leaves_out_malformed_lines_and_lists_them() {
    let tmp = tempdir("skip-bad");
    let model = tiny(&tmp);
    let bbq = tmp.join("bbq");
    std::fs::create_dir_all(&bbq).expect("mkdir");
    let src = std::fs::read_to_string(common::bbq_dir().join("Religion.jsonl")).expect("read");
    let mut lines: Vec<String> = src.lines().take(40).map(String::from).collect();
    lines[4] = "{\"example_id\": 4, \"broken".into();
    let mut no_question: serde_json::Value = serde_json::from_str(&lines[9]).expect("json");
    no_question
        .as_object_mut()
        .expect("object")
        .remove("question");
    lines[9] = no_question.to_string();
    std::fs::write(bbq.join("Religion.jsonl"), lines.join("\n")).expect("write");
    let out = tmp.join("out");
    let (m, b, o) = (utf8(&model), utf8(&bbq), utf8(&out));
    let mut args = vec![
        "--batch",
        "--model",
        m,
        "--bbq-dir",
        b,
        "--categories",
        "Religion",
        "--conditions",
        "both",
        "--limit",
        "all",
        "--precisions",
        "bf16",
        "--ppl-sequences",
        "0",
        "--out",
        o,
    ];
    // Without the flag the first bad line stops the run before anything is written.
    expect_error(&args, &tmp, "Religion.jsonl:5:");
    assert!(!out.exists());
    args.push("--skip-bad");
    let r = run(&args, &tmp);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("left out 2 malformed BBQ line(s)"),
        "{}",
        stderr(&r)
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    let skipped: Vec<&str> = manifest["selection"]["skipped_lines"]
        .as_array()
        .expect("skipped lines")
        .iter()
        .map(|v| v.as_str().expect("text"))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0].contains("Religion.jsonl:5:"), "{skipped:?}");
    assert!(
        skipped[1].contains("Religion.jsonl:10:") && skipped[1].contains("question"),
        "{skipped:?}"
    );
    // 38 items, one BF16 pass, five seeds.
    assert_eq!(
        common::pyarrow_counts(&out.join("records")),
        "190 190 bf16=190"
    );
}
