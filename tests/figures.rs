//! `report DIR --figures OUT` with the real binary: on a run of the SmolLM2 demo model every
//! figure is written as SVG and PNG with its titles, axis labels and one mark per plotted
//! value; a missing font fails the PNGs with one message while the SVGs are kept; a run of
//! the tiny GGUF whose head answers with letters draws both directions of the transitions;
//! a run of a tiny random-weight GGUF, which never gives a valid answer, gets notes instead
//! of empty charts.
mod common;

use common::{run, stderr, tempdir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A finished `--batch` run of `model` over Age and Religion.
fn batch(model: &Path, tmp: &Path, limit: &str, extra: &[&str]) -> PathBuf {
    let bbq = common::bbq_dir();
    let out = tmp.join("run");
    let mut args = vec![
        "--batch",
        "--model",
        model.to_str().expect("utf8"),
        "--bbq-dir",
        bbq.to_str().expect("utf8"),
        "--categories",
        "Age,Religion",
        "--limit",
        limit,
        "--scheme",
        "gguf",
        "--out",
        out.to_str().expect("utf8"),
    ];
    args.extend(extra);
    let o = run(&args, tmp);
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

fn figures(dir: &Path, out: &Path, tmp: &Path) -> Output {
    let args = [
        "report",
        dir.to_str().expect("utf8"),
        "--figures",
        out.to_str().expect("utf8"),
    ];
    run(&args, tmp)
}

fn report_json(dir: &Path, tmp: &Path) -> Value {
    let o = run(
        &["report", dir.to_str().expect("utf8"), "--format", "json"],
        tmp,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("json")
}

/// The names of the files in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).expect("png");
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    assert_eq!(&b[12..16], b"IHDR", "{}", path.display());
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

/// A text element of an SVG holding exactly `s` (escaped as XML).
fn label(s: &str) -> String {
    let s = s
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;");
    format!("\n{s}\n</text>")
}

#[test]
fn smollm2_run_gets_every_figure_as_svg_and_png() {
    let tmp = tempdir("figures");
    let dir = batch(&common::smollm2(), &tmp, "8", &["--noise-seeds", "7,8"]);
    let figs = tmp.join("figs/nested");
    let o = figures(&dir, &figs, &tmp);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let json = report_json(&dir, &tmp);
    // A run with real answers and noise seeds: every statistic, the measured noise floor
    // included, recomputed independently.
    common::check_report(&dir);
    let model = json["rows"][0]["model"]
        .as_str()
        .expect("model")
        .to_string();
    let stem = |kind: &str| format!("{kind}-{model}-gguf");

    // The run measured perplexity (the default stage), so every figure is drawn.
    assert!(json["perplexity"].as_array().expect("perplexity").len() == 5);
    let kinds = [
        "srs_by_precision",
        "transitions",
        "perplexity_vs_transitions",
        "kld_by_precision",
    ];
    let mut want = Vec::new();
    for kind in kinds {
        for ext in ["png", "svg"] {
            let p = figs.join(format!("{}.{ext}", stem(kind)));
            assert!(err.contains(&format!("wrote {}", p.display())), "{err}");
            want.push(format!("{}.{ext}", stem(kind)));
        }
        let (w, h) = png_size(&figs.join(format!("{}.png", stem(kind))));
        assert!(w >= 1600 && h >= 700, "{kind}: {w}x{h}");
    }
    want.sort();
    assert_eq!(names(&figs), want, "only the figures announced");
    let svg = |kind: &str| {
        std::fs::read_to_string(figs.join(format!("{}.svg", stem(kind)))).expect("svg")
    };

    // One dot per (category, precision) with answers, precisions in ladder order.
    let rows = json["rows"].as_array().expect("rows");
    let with_srs = rows.iter().filter(|r| r["srs"].is_number()).count();
    assert_eq!(with_srs, 15, "ALL, Age, Religion × 5 precisions");
    let ppl = svg("perplexity_vs_transitions");
    assert!(
        ppl.contains(&label("perplexity change vs BF16")),
        "axis label"
    );
    for r in json["perplexity"].as_array().expect("perplexity") {
        if let Some(d) = r["delta_ppl_pct"].as_f64() {
            let bar = format!("{d:+.1}%");
            assert!(ppl.contains(&label(&bar)), "bar label {bar}");
        }
    }
    let srs = svg("srs_by_precision");
    assert_eq!(srs.matches("<circle").count(), with_srs);
    let title = format!("Stereotype rate by precision: {model} (gguf)");
    for t in [
        title.as_str(),
        "All categories (pooled)",
        "Age",
        "Religion",
        "stereotype rate (biased / valid answers)",
        "precision",
    ] {
        assert!(srs.contains(&label(t)), "srs figure lacks {t}");
    }
    let at = |s: &str, p: &str| s.find(&label(p)).expect(p);
    assert!(at(&srs, "bf16") < at(&srs, "q8"));
    assert!(at(&srs, "q8") < at(&srs, "q6") && at(&srs, "q4") < at(&srs, "q3"));

    // One dot per precision below bf16 with a rate, plus the legend's; the extra seeds'
    // noise floor is in the legend.
    let transitions = json["transitions"].as_array().expect("transitions");
    let rates = transitions
        .iter()
        .filter(|t| t["precision"] != "bf16" && t["rate"].is_number())
        .count();
    assert!(rates > 0, "{transitions:?}");
    assert!(
        transitions
            .iter()
            .any(|t| t["measured_noise_floor"].is_number())
    );
    // Beside each rate the reverse (items biased at BF16 that became unbiased), when the
    // precision has items biased at BF16, and its legend's dot.
    let reverses = transitions
        .iter()
        .filter(|t| t["precision"] != "bf16" && t["rate"].is_number())
        .filter(|t| t["reverse_rate"].is_number())
        .count();
    let tr = svg("transitions");
    assert_eq!(
        tr.matches("<circle").count(),
        rates + 1 + reverses + usize::from(reverses > 0)
    );
    assert!(reverses > 0, "{transitions:?}");
    assert!(tr.contains(&label("biased at BF16 → unbiased")));
    assert!(tr.contains("Exact McNemar p, the two directions paired by item:"));
    for t in [
        "became biased (share of BF16-unbiased items)",
        "rate by the study's rule",
        "expected from probabilities",
        "noise floor (from BF16)",
        "noise floor, extra seeds",
    ] {
        assert!(tr.contains(&label(t)), "transitions figure lacks {t}");
    }
    assert!(
        !tr.contains(&label("bf16")),
        "bf16 is the baseline, not a point"
    );

    // One dot per item and precision below bf16, each precision labelled with its count.
    let kld = svg("kld_by_precision");
    assert_eq!(kld.matches("<circle").count(), 4 * 8);
    for p in ["q8", "q6", "q4", "q3"] {
        assert!(kld.contains(&label(&format!("{p} (n=8)"))), "kld lacks {p}");
    }
    assert!(kld.contains(&label("KL divergence from BF16 (nats, log scale)")));

    // Without a font the SVGs are written and the PNGs fail with one message.
    let bare = tmp.join("bare");
    let o = std::process::Command::new(common::bin())
        .args([
            "report",
            dir.to_str().expect("utf8"),
            "--figures",
            bare.to_str().expect("utf8"),
        ])
        .env("STEREOSCOPE_CACHE", &tmp)
        .env("STEREOSCOPE_FONT", tmp.join("no-such-font.ttf"))
        .output()
        .expect("binary runs");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("STEREOSCOPE_FONT"), "{err}");
    assert!(errors[0].contains(bare.to_str().expect("utf8")), "{err}");
    let svgs: Vec<String> = want
        .iter()
        .filter(|n| n.ends_with(".svg"))
        .cloned()
        .collect();
    assert_eq!(names(&bare), svgs);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn a_run_without_valid_answers_gets_notes_not_empty_charts() {
    let tmp = tempdir("figures-tiny");
    let model = tmp.join("tiny-llama.gguf");
    common::write_tiny_gguf(&model);
    let dir = batch(&model, &tmp, "6", &["--ppl-sequences", "0"]);
    let figs = tmp.join("figs");
    let o = figures(&dir, &figs, &tmp);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let json = report_json(&dir, &tmp);
    assert!(
        json["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .all(|r| r["valid"] == 0),
        "the tiny model's answers are all invalid"
    );
    for note in [
        "note: srs_by_precision for tiny-llama (gguf): not drawn",
        "note: transitions for tiny-llama (gguf): not drawn",
        "note: perplexity_vs_transitions: not drawn",
    ] {
        assert!(err.contains(note), "{err}");
    }
    // The option probabilities exist without valid answers: the KLD figure is drawn.
    assert_eq!(
        names(&figs),
        [
            "kld_by_precision-tiny-llama-gguf.png",
            "kld_by_precision-tiny-llama-gguf.svg"
        ]
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn a_tiny_run_with_answers_of_every_role_draws_both_directions_of_the_transitions() {
    let tmp = tempdir("figures-answering");
    let model = tmp.join("tiny-llama.gguf");
    common::write_answering_gguf(&model);
    let dir = batch(
        &model,
        &tmp,
        "8",
        &[
            "--conditions",
            "both",
            "--ppl-sequences",
            "2",
            "--ppl-seq-len",
            "16",
        ],
    );
    common::assert_answering(&dir);
    common::check_report(&dir);
    let figs = tmp.join("figs");
    let o = figures(&dir, &figs, &tmp);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("not drawn"), "{err}");
    let json = report_json(&dir, &tmp);
    let mut want: Vec<String> = [
        "kld_by_precision",
        "perplexity_vs_transitions",
        "srs_by_precision",
        "transitions",
    ]
    .iter()
    .flat_map(|k| ["png", "svg"].map(|e| format!("{k}-tiny-llama-gguf.{e}")))
    .collect();
    want.sort();
    assert_eq!(names(&figs), want);
    let svg = |kind: &str| {
        std::fs::read_to_string(figs.join(format!("{kind}-tiny-llama-gguf.svg"))).expect("svg")
    };
    // One dot per row with an SRS: every row has valid answers.
    let rows = json["rows"].as_array().expect("rows");
    assert!(rows.iter().all(|r| r["srs"].is_number()), "{rows:?}");
    assert_eq!(
        svg("srs_by_precision").matches("<circle").count(),
        rows.len()
    );
    // Both directions: rates below BF16, and items biased at BF16 whose reverse is drawn.
    let below: Vec<&Value> = json["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .filter(|t| t["precision"] != "bf16")
        .collect();
    assert_eq!(below.len(), 4);
    assert!(
        below
            .iter()
            .all(|t| t["rate"].is_number() && t["reverse_rate"].is_number()),
        "{below:?}"
    );
    let tr = svg("transitions");
    assert_eq!(tr.matches("<circle").count(), 4 + 1 + 4 + 1);
    assert!(tr.contains(&label("biased at BF16 → unbiased")));
    assert!(tr.contains("Exact McNemar p, the two directions paired by item:"));
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn figures_of_a_folder_that_is_not_a_run_name_it() {
    let tmp = tempdir("figures-bad");
    let o = figures(&tmp, &tmp.join("figs"), &tmp);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(tmp.to_str().expect("utf8")));
    assert!(!tmp.join("figs").exists());
    let _ = std::fs::remove_dir_all(&tmp);
}
