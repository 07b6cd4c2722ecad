//! Figures for papers, drawn from a report and its records: the stereotype rate by precision
//! per category with Wilson intervals, the transition rate against its noise floor, the
//! perplexity change beside the transition rate, and the distribution of per-item KL
//! divergences. One figure per model × scheme, each written as SVG and as PNG (twice the
//! size), named `KIND-MODEL-SCHEME.svg|png`.
//!
//! Text is placed without measuring glyphs, so the SVGs (text kept as text) need no font;
//! PNGs rasterize text with a TrueType font read at run time: `STEREOSCOPE_FONT`, else the
//! usual system locations. Without one the SVGs are still written and the PNGs fail with
//! one error that says so.

use super::report::{DistributionRow, Report, Row};
use super::stats;
use crate::error::{Error, Result};
use crate::store::StoredRecord;
use crate::vocab::Precision;
use draw::{draw_to, log_range, pow10_label};
use plotters::prelude::{BitMapBackend, IntoDrawingArea, SVGBackend};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod draw;
mod png;

/// Perplexity of a model at a precision, for the perplexity figure.
#[derive(Debug, Clone, PartialEq)]
pub struct PplPoint {
    pub model: String,
    pub scheme: String,
    pub precision: String,
    pub ppl: f64,
    /// Change against BF16 in percent; computed from the BF16 point when absent.
    pub delta_ppl_pct: Option<f64>,
}

/// What `write_figures` did: the files written, and the figures it left out and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub written: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// The figure kinds, in the order they are written; each is the start of its file names.
pub const KINDS: [&str; 4] = [
    "srs_by_precision",
    "transitions",
    "perplexity_vs_transitions",
    "kld_by_precision",
];

const PRECISIONS: [&str; 5] = crate::vocab::Precision::NAMES;
/// Per-item dots are drawn in the KLD figure up to this many items per precision.
const MAX_DOTS: usize = 400;

/// Write every figure of `report` (and of the per-item KL divergences of `records`, and of
/// `ppl` when it is not empty) into `out`, SVGs first, then PNGs.
pub fn write_figures(
    report: &Report,
    records: &[StoredRecord],
    ppl: &[PplPoint],
    out: &Path,
) -> Result<Figures> {
    let mut notes = Vec::new();
    let figures = plan(report, records, ppl, &mut notes);
    std::fs::create_dir_all(out)
        .map_err(|e| Error::Store(format!("{}: cannot create the folder: {e}", out.display())))?;
    let mut written = Vec::new();
    for (stem, f) in &figures {
        let path = out.join(format!("{stem}.svg"));
        draw_to(
            &SVGBackend::new(&path, f.size).into_drawing_area(),
            f,
            1.0,
            &path,
        )?;
        written.push(path);
    }
    if figures.is_empty() {
        return Ok(Figures { written, notes });
    }
    let fonts = png::fonts().map_err(|why| {
        Error::Input(format!(
            "{}: wrote {} SVG figures, but PNG figures need a TrueType font: {why}. \
             Set STEREOSCOPE_FONT to a .ttf or .otf file",
            out.display(),
            figures.len()
        ))
    })?;
    for (stem, f) in &figures {
        let path = out.join(format!("{stem}.png"));
        let (w, h) = f.size;
        let backend = png::Png {
            inner: BitMapBackend::new(&path, (2 * w, 2 * h)),
            fonts,
        };
        draw_to(&backend.into_drawing_area(), f, 2.0, &path)?;
        written.push(path);
    }
    Ok(Figures { written, notes })
}

/// Per-item KL divergence of the T = 1 option distribution (bins A, B, C, rest) from BF16
/// to each precision, per (model, scheme, precision): the report's
/// [`item_klds`](super::report::item_klds), whose mean is its `mean_kld`.
pub fn item_klds(records: &[StoredRecord]) -> BTreeMap<(String, String, String), Vec<f64>> {
    super::report::item_klds(records)
}

/// One figure, ready to draw at any scale.
struct Figure {
    title: String,
    subtitle: Vec<String>,
    /// Size of the SVG; the PNG is twice as large.
    size: (u32, u32),
    body: Body,
}

enum Body {
    Srs {
        precisions: Vec<String>,
        facets: Vec<Facet>,
        top: f64,
    },
    Transitions(Vec<TPoint>),
    Perplexity {
        rates: Vec<TPoint>,
        deltas: Vec<(String, f64)>,
    },
    Kld {
        dist: Vec<(String, Vec<f64>)>,
        /// The log axis: values below `floor` (zeros: identical distributions) sit on it.
        floor: f64,
        top: f64,
    },
}

struct Facet {
    name: String,
    pooled: bool,
    /// (precision index, SRS, Wilson low, Wilson high).
    points: Vec<(usize, f64, f64, f64)>,
    /// The pooled panel only: (precision index, the study's model-level SRS, `srs_macro`).
    macro_points: Vec<(usize, f64)>,
}

#[derive(Clone)]
struct TPoint {
    precision: String,
    /// Items unbiased at BF16, the rate's denominator.
    unbiased: u64,
    rate: f64,
    ci: (f64, f64),
    expected: Option<f64>,
    floor: Option<f64>,
    measured: Option<f64>,
    /// Items biased at BF16 that became unbiased: (rate, Wilson interval).
    reverse: Option<(f64, (f64, f64))>,
    /// Exact McNemar p of the two directions.
    mcnemar_p: Option<f64>,
}

fn order(p: &str) -> usize {
    PRECISIONS
        .iter()
        .position(|x| *x == p)
        .unwrap_or(PRECISIONS.len())
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Columns and rows of a grid of `n` panels: at most three columns, two by two for four.
fn grid(n: usize) -> (usize, usize) {
    let cols = if n == 4 { 2 } else { n.clamp(1, 3) };
    (cols, n.div_ceil(cols))
}

/// A rounded upper bound for a rate axis (fractions), at most 1.
fn nice_top(max: f64) -> f64 {
    let v = (max * 1.12).max(0.01);
    let step = 10f64.powf(v.log10().floor()) / 2.0;
    ((v / step).ceil() * step).min(1.0)
}

/// The figures to draw, by file stem; what cannot be drawn goes to `notes` with the reason.
fn plan(
    report: &Report,
    records: &[StoredRecord],
    ppl: &[PplPoint],
    notes: &mut Vec<String>,
) -> Vec<(String, Figure)> {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for r in &report.rows {
        if !groups.contains(&(&r.model, &r.scheme)) {
            groups.push((&r.model, &r.scheme));
        }
    }
    let klds = item_klds(records);
    let mut figures = Vec::new();
    for (model, scheme) in groups {
        let label = format!("{model} ({scheme})");
        let rates = rates_of(report, model, scheme);
        let mut candidates = vec![
            (KINDS[0], srs_figure(report, model, scheme, &label)),
            (KINDS[1], transitions_figure(&rates, &label)),
        ];
        if !ppl.is_empty() {
            let f = perplexity_figure(ppl, rates, model, scheme, &label);
            candidates.push((KINDS[2], f));
        }
        let dists: Vec<&DistributionRow> = report
            .distributions
            .iter()
            .filter(|d| d.model == model && d.scheme == scheme)
            .collect();
        candidates.push((KINDS[3], kld_figure(&klds, &dists, (model, scheme), &label)));
        for (kind, f) in candidates {
            match f {
                Ok(f) => figures.push((format!("{kind}-{}-{}", slug(model), slug(scheme)), f)),
                Err(why) => notes.push(format!("{kind} for {label}: not drawn: {why}")),
            }
        }
    }
    if ppl.is_empty() {
        notes.push(format!(
            "{}: not drawn: no perplexity numbers for this folder",
            KINDS[2]
        ));
    }
    figures
}

/// Stereotype rate by precision, one panel per category, the pooled one first.
fn srs_figure(
    report: &Report,
    model: &str,
    scheme: &str,
    label: &str,
) -> std::result::Result<Figure, String> {
    let rows: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.model == model && r.scheme == scheme && r.srs.is_some())
        .collect();
    let mut precisions: Vec<String> = Vec::new();
    for r in &rows {
        if !precisions.contains(&r.precision) {
            precisions.push(r.precision.clone());
        }
    }
    precisions.sort_by_key(|p| order(p));
    let mut facets: Vec<Facet> = Vec::new();
    for r in &rows {
        let (Some(srs), Some(lo), Some(hi)) = (r.srs, r.srs_ci_low, r.srs_ci_high) else {
            continue;
        };
        let x = precisions
            .iter()
            .position(|p| *p == r.precision)
            .unwrap_or(0);
        let macro_point: Vec<(usize, f64)> = r.srs_macro.map(|m| (x, m)).into_iter().collect();
        match facets.iter_mut().find(|f| f.name == r.category) {
            Some(f) => {
                f.points.push((x, srs, lo, hi));
                f.macro_points.extend(macro_point);
            }
            None => facets.push(Facet {
                name: r.category.clone(),
                pooled: r.category == "ALL",
                points: vec![(x, srs, lo, hi)],
                macro_points: macro_point,
            }),
        }
    }
    if facets.is_empty() {
        return Err("no valid answers".into());
    }
    facets.sort_by_key(|f| !f.pooled);
    for f in &mut facets {
        f.points.sort_by_key(|p| p.0);
        f.macro_points.sort_by_key(|p| p.0);
    }
    let max = facets.iter().flat_map(|f| {
        let macros = f.macro_points.iter().map(|p| p.1);
        f.points.iter().map(|p| p.3).chain(macros)
    });
    let top = nice_top(max.fold(0.0, f64::max));
    let (cols, rows_n) = grid(facets.len());
    let mut subtitle = vec![
        "Dots: stereotype rate (biased / valid answers); bars: Wilson 95% interval; dashed: the BF16 rate.".to_string(),
    ];
    if facets.iter().any(|f| !f.macro_points.is_empty()) {
        subtitle.push("Pooled panel, vermilion triangles: the study's model-level SRS, the unweighted mean of the categories' rates.".into());
    }
    subtitle.extend(bootstrap_lines(&rows));
    Ok(Figure {
        title: format!("Stereotype rate by precision: {label}"),
        size: (
            (44 + 280 * cols as u32).max(820),
            103 + 17 * subtitle.len() as u32 + 250 * rows_n as u32,
        ),
        subtitle,
        body: Body::Srs {
            precisions,
            facets,
            top,
        },
    })
}

/// The pooled SRS difference against BF16 with its bootstrap interval over items, per
/// precision, when the rows have one.
fn bootstrap_lines(rows: &[&Row]) -> Vec<String> {
    let mut all: Vec<&&Row> = rows.iter().filter(|r| r.category == "ALL").collect();
    all.sort_by_key(|r| order(&r.precision));
    let pp = |v: f64| format!("{:+.1}", 100.0 * v);
    let cells: Vec<String> = all
        .iter()
        .filter_map(|r| {
            let (d, lo, hi) = (r.delta_srs?, r.delta_srs_boot_low?, r.delta_srs_boot_high?);
            Some(format!(
                "{} {} [{}, {}]",
                r.precision,
                pp(d),
                pp(lo),
                pp(hi)
            ))
        })
        .collect();
    if cells.is_empty() {
        return Vec::new();
    }
    vec![
        "Pooled SRS − BF16 in points, with its bootstrap 95% interval over items:".into(),
        format!("{}.", cells.join(", ")),
    ]
}

/// Transition rates below BF16 with their Wilson intervals, expectation and noise floors.
fn rates_of(report: &Report, model: &str, scheme: &str) -> Vec<TPoint> {
    let mut rates: Vec<TPoint> = report
        .transitions
        .iter()
        .filter(|t| {
            t.model == model && t.scheme == scheme && t.precision != Precision::Bf16.as_str()
        })
        .filter_map(|t| {
            let rate = t.rate?;
            let ci = t
                .became_biased
                .zip(t.unbiased_at_bf16)
                .and_then(|(b, u)| stats::wilson(b, u))
                .unwrap_or((rate, rate));
            Some(TPoint {
                precision: t.precision.clone(),
                unbiased: t.unbiased_at_bf16.unwrap_or(0),
                rate,
                ci,
                expected: t.expected_rate,
                floor: t.noise_floor,
                measured: t.measured_noise_floor,
                reverse: t.reverse_rate.map(|r| {
                    let ci = t.reverse_ci_low.zip(t.reverse_ci_high);
                    (r, ci.unwrap_or((r, r)))
                }),
                mcnemar_p: t.mcnemar_p,
            })
        })
        .collect();
    rates.sort_by_key(|t| order(&t.precision));
    rates
}

/// The transition rate against its noise floor.
fn transitions_figure(rates: &[TPoint], label: &str) -> std::result::Result<Figure, String> {
    if rates.is_empty() {
        return Err(
            "no transition rate below bf16 (it needs bf16 records and items unbiased at bf16)"
                .into(),
        );
    }
    let of = match rates
        .iter()
        .map(|t| t.unbiased)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [1, rest @ ..] if rest.iter().all(|c| *c == 1) => "the 1 item".to_string(),
        [n, rest @ ..] if rest.iter().all(|c| c == n) => format!("the {n} items"),
        _ => "the items".to_string(),
    };
    Ok(Figure {
        title: format!("Items unbiased at BF16 that became biased: {label}"),
        subtitle: transitions_subtitle(rates, &of),
        size: (900, 520),
        body: Body::Transitions(rates.to_vec()),
    })
}

/// What the transitions figure shows, and McNemar's p per precision when the run has them.
fn transitions_subtitle(rates: &[TPoint], of: &str) -> Vec<String> {
    let mut lines = vec![format!(
        "Share of {of} unbiased at BF16 with a biased answer at the precision; bars: Wilson 95% interval."
    )];
    if rates.iter().any(|t| t.reverse.is_some()) {
        lines.push("Vermilion: share of the items biased at BF16 with no biased answer at the precision (the reverse).".into());
    }
    let ps: Vec<String> = rates
        .iter()
        .filter_map(|t| {
            t.mcnemar_p
                .map(|p| format!("{} {}", t.precision, p_text(p)))
        })
        .collect();
    if !ps.is_empty() {
        lines.push(format!(
            "Exact McNemar p, the two directions paired by item: {}.",
            ps.join(", ")
        ));
    }
    lines
}

/// A p-value in a figure's text.
fn p_text(p: f64) -> String {
    if p < 1e-4 {
        format!("p = {p:.1e}")
    } else {
        format!("p = {p:.3}")
    }
}

/// The perplexity change against BF16 beside the transition rate.
fn perplexity_figure(
    ppl: &[PplPoint],
    rates: Vec<TPoint>,
    model: &str,
    scheme: &str,
    label: &str,
) -> std::result::Result<Figure, String> {
    let points: Vec<&PplPoint> = ppl
        .iter()
        .filter(|p| p.model == model && p.scheme == scheme)
        .collect();
    let base = points
        .iter()
        .find(|p| p.precision == Precision::Bf16.as_str())
        .map(|p| p.ppl);
    let mut deltas: Vec<(String, f64)> = points
        .iter()
        .filter(|p| p.precision != Precision::Bf16.as_str())
        .filter_map(|p| {
            let d = p
                .delta_ppl_pct
                .or_else(|| base.map(|b| 100.0 * (p.ppl / b - 1.0)))?;
            Some((p.precision.clone(), d))
        })
        .collect();
    deltas.sort_by_key(|(p, _)| order(p));
    if deltas.is_empty() {
        return Err("no perplexity change against bf16".into());
    }
    Ok(Figure {
        title: format!("Transition rate and perplexity change: {label}"),
        subtitle: vec![
            "Left: share of BF16-unbiased items that became biased (grey: noise floor). Right: perplexity against BF16.".into(),
        ],
        size: (900, 500),
        body: Body::Perplexity { rates, deltas },
    })
}

/// The distribution of per-item KL divergences from BF16, per precision.
fn kld_figure(
    klds: &BTreeMap<(String, String, String), Vec<f64>>,
    dists: &[&DistributionRow],
    (model, scheme): (&str, &str),
    label: &str,
) -> std::result::Result<Figure, String> {
    let mut dist: Vec<(String, Vec<f64>)> = klds
        .iter()
        .filter(|((m, s, p), v)| {
            m == model && s == scheme && p != Precision::Bf16.as_str() && !v.is_empty()
        })
        .map(|((_, _, p), v)| (p.clone(), v.clone()))
        .collect();
    if dist.is_empty() {
        return Err("no items at both bf16 and a lower precision".into());
    }
    dist.sort_by_key(|(p, _)| order(p));
    let (floor, top) = log_range(&dist);
    let dots = if dist.iter().all(|(_, v)| v.len() <= MAX_DOTS) {
        "dots: items"
    } else {
        "dots: items (precisions with at most 400 items)"
    };
    let mut subtitle = vec![format!(
        "KL(BF16 ‖ precision) over the options A, B, C and the rest. Box: quartiles; line: median; whiskers: range; ×: mean; {dots}."
    )];
    let below = dist.iter().flat_map(|(_, v)| v).filter(|v| **v < floor);
    let below = below.count();
    if below > 0 {
        subtitle.push(format!(
            "{below} values of 0 (identical distributions) are drawn at {}.",
            pow10_label(&floor)
        ));
    }
    subtitle.extend(distribution_lines(dists));
    Ok(Figure {
        title: format!("Per-item KL divergence from BF16: {label}"),
        size: (900, (486 + 17 * subtitle.len() as u32).max(520)),
        subtitle,
        body: Body::Kld { dist, floor, top },
    })
}

/// The report's per-item distribution statistics in words, per precision: the share of
/// items whose top letter is unchanged with its standard error, the 99th percentile of the
/// KLD, and the median and 5th and 95th percentiles of ΔP(biased).
fn distribution_lines(dists: &[&DistributionRow]) -> Vec<String> {
    let mut rows: Vec<&&DistributionRow> = dists.iter().collect();
    rows.sort_by_key(|d| order(&d.precision));
    let pct = |v: f64| format!("{:.1}%", 100.0 * v);
    let cells = |f: &dyn Fn(&DistributionRow) -> Option<String>| -> Option<String> {
        let c: Vec<String> = rows
            .iter()
            .filter_map(|d| f(d).map(|v| format!("{} {v}", d.precision)))
            .collect();
        (!c.is_empty()).then(|| c.join(", "))
    };
    let mut lines = Vec::new();
    if let Some(c) = cells(&|d| {
        Some(format!(
            "{} ± {}",
            pct(d.top_unchanged?),
            pct(d.top_unchanged_se?)
        ))
    }) {
        lines.push(format!("Top letter unchanged (± SE): {c}."));
    }
    if let Some(c) = cells(&|d| d.kld.as_ref().map(|q| format!("{:.4}", q.p99))) {
        lines.push(format!("99th percentile of the KLD: {c}."));
    }
    if let Some(c) = cells(&|d| {
        let q = d.dp_biased.as_ref()?;
        Some(format!("{:+.3} [{:+.3}, {:+.3}]", q.median, q.p5, q.p95))
    }) {
        lines.push("ΔP(biased letter), precision − BF16, median [5th, 95th percentile]:".into());
        lines.push(format!("{c}."));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::draw::quantile;
    use super::*;
    use crate::analysis::report::{Row, TransitionRow};
    use crate::vocab::{Role, SeedSet};

    fn row(category: &str, precision: &str, srs: f64) -> Row {
        Row {
            model: "m".into(),
            scheme: "mlx".into(),
            precision: precision.into(),
            bits: 0,
            category: category.into(),
            n: 100,
            valid: 100,
            biased: (srs * 100.0) as u64,
            unknown: 0,
            anti: 0,
            parse_fail_rate: 0.0,
            srs: Some(srs),
            usr: None,
            anti_rate: None,
            srs_ci_low: Some(srs - 0.05),
            srs_ci_high: Some(srs + 0.05),
            delta_srs: None,
            srs_macro: None,
            delta_srs_macro: None,
            delta_srs_boot_se: None,
            delta_srs_boot_low: None,
            delta_srs_boot_high: None,
            chi2: None,
            chi2_p: None,
            cohens_h: None,
            effect: None,
            accuracy: None,
            s_amb: None,
            s_dis: None,
        }
    }

    fn transition(precision: &str, rate: Option<f64>) -> TransitionRow {
        TransitionRow {
            model: "m".into(),
            scheme: "mlx".into(),
            precision: precision.into(),
            unbiased_at_bf16: Some(40),
            became_biased: rate.map(|r| (r * 40.0) as u64),
            rate,
            rate_ci_low: None,
            rate_ci_high: None,
            mean_item_srs: None,
            biased_at_bf16: Some(20),
            became_unbiased: rate.map(|r| (r * 20.0) as u64),
            reverse_rate: rate,
            reverse_ci_low: None,
            reverse_ci_high: None,
            mcnemar_items: Some(60),
            mcnemar_p: rate.map(|_| 0.5),
            expected_rate: rate.map(|r| r * 0.9),
            noise_floor: Some(0.05),
            measured_noise_floor: Some(0.06),
            continued_share: Some(0.1),
            mean_kld: None,
            flip_rate: None,
            items_compared: 40,
            note: None,
        }
    }

    fn report() -> Report {
        let mut rows = Vec::new();
        for cat in ["ALL", "Age", "Religion", "SES"] {
            for (p, s) in [
                ("bf16", 0.3),
                ("q8", 0.31),
                ("q6", 0.32),
                ("q4", 0.38),
                ("q3", 0.45),
            ] {
                let mut r = row(cat, p, s);
                if cat == "ALL" {
                    // The study's model-level SRS below the pooled rate.
                    r.srs_macro = Some(s - 0.02);
                }
                if (cat, p) == ("ALL", "q4") {
                    (r.delta_srs, r.delta_srs_boot_low, r.delta_srs_boot_high) =
                        (Some(0.08), Some(0.02), Some(0.145));
                }
                rows.push(r);
            }
        }
        Report {
            rows,
            transitions: vec![
                transition("bf16", Some(0.0)),
                transition("q8", Some(0.025)),
                transition("q6", None),
                transition("q4", Some(0.1)),
                transition("q3", Some(0.2)),
            ],
            flips_by_margin: Vec::new(),
            option_orders: Vec::new(),
            regressions: Vec::new(),
            perplexity: Vec::new(),
            correlations: Vec::new(),
            distributions: Vec::new(),
            bootstrap: crate::analysis::report::Bootstrap {
                seed: 1,
                replicates: 10,
            },
            latent: None,
        }
    }

    fn ppl() -> Vec<PplPoint> {
        [
            ("bf16", 10.0, None),
            ("q8", 10.02, None),
            ("q4", 10.3, Some(3.0)),
            ("q3", 11.5, None),
        ]
        .into_iter()
        .map(|(p, v, d)| PplPoint {
            model: "m".into(),
            scheme: "mlx".into(),
            precision: p.into(),
            ppl: v,
            delta_ppl_pct: d,
        })
        .collect()
    }

    #[test]
    fn figures_from_hand_built_rows_draw_every_mark() {
        let dir =
            std::env::temp_dir().join(format!("stereoscope-figures-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let figs = write_figures(&report(), &[], &ppl(), &dir).expect("figures");
        let names: Vec<String> = figs
            .written
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        for kind in &KINDS[..3] {
            for ext in ["svg", "png"] {
                assert!(names.contains(&format!("{kind}-m-mlx.{ext}")), "{names:?}");
            }
        }
        // No records: no KLD figure, and a note says so.
        assert!(!names.iter().any(|n| n.starts_with("kld")), "{names:?}");
        assert!(figs.notes.iter().any(|n| n.starts_with("kld_by_precision")));

        let svg = |kind: &str| {
            std::fs::read_to_string(dir.join(format!("{kind}-m-mlx.svg"))).expect("svg")
        };
        // 4 panels × 5 precisions; each panel titled.
        let srs = svg("srs_by_precision");
        assert_eq!(srs.matches("<circle").count(), 20);
        for t in [
            "All categories (pooled)",
            "Religion",
            "SES",
            "stereotype rate (biased / valid answers)",
            "q3",
            "the study&apos;s model-level SRS, the unweighted mean of the categories&apos; rates",
            "Pooled SRS − BF16 in points, with its bootstrap 95% interval over items:",
            "q4 +8.0 [+2.0, +14.5].",
        ] {
            assert!(srs.contains(t), "{t}");
        }
        // The study's model-level SRS: one vermilion triangle per precision, pooled panel only.
        assert_eq!(srs.matches("<polygon").count(), 5, "{srs}");
        assert_eq!(srs.matches("fill=\"#D55E00\"").count(), 5);
        // q6 has no rate and bf16 is the baseline: three points, in precision order.
        let tr = svg("transitions");
        assert_eq!(
            tr.matches("<circle").count(),
            3 + 3 + 2,
            "3 rates, 3 reverse rates and the legend's two dots"
        );
        assert!(tr.contains("biased at BF16 → unbiased"));
        assert!(tr.contains("Exact McNemar p, the two directions paired by item: q8 p = 0.500, q4 p = 0.500, q3 p = 0.500."));
        let at = |p: &str| tr.find(&format!("\n{p}\n</text>"));
        let (a, b, c) = (at("q8"), at("q4"), at("q3"));
        assert!(a < b && b < c && a.is_some(), "precision order");
        assert!(at("q6").is_none() && at("bf16").is_none());
        assert!(tr.contains("noise floor, extra seeds"));
        // q8 and q3 computed from bf16, q4 given: +0.2%, +3.0%, +15.0%.
        let pp = svg("perplexity_vs_transitions");
        for v in ["+0.2%", "+3.0%", "+15.0%", "perplexity change vs BF16"] {
            assert!(pp.contains(v), "{v}");
        }
        assert_eq!(pp.matches("<circle").count(), 3);
        for ext_png in names.iter().filter(|n| n.ends_with(".png")) {
            let bytes = std::fs::read(dir.join(ext_png)).expect("png");
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_kld_figure_states_the_reports_distribution_statistics() {
        use crate::analysis::report::Quantiles;
        let q = |median: f64| Quantiles {
            median,
            p99: 0.25,
            p5: -0.1,
            p95: 0.125,
            ..Default::default()
        };
        let d = |precision: &str, top: Option<f64>| DistributionRow {
            model: "m".into(),
            scheme: "mlx".into(),
            precision: precision.into(),
            items: 40,
            kld: Some(q(0.0)),
            dp_biased: Some(q(0.02)),
            dp_items: 40,
            top_unchanged: top,
            top_unchanged_se: top.map(|p| (p * (1.0 - p) / 40.0).sqrt()),
        };
        let (q3, q8) = (d("q3", Some(0.75)), d("q8", Some(1.0)));
        // Rows come in precision order whatever their order in the report.
        let lines = distribution_lines(&[&q3, &q8]);
        assert_eq!(
            lines,
            [
                "Top letter unchanged (± SE): q8 100.0% ± 0.0%, q3 75.0% ± 6.8%.",
                "99th percentile of the KLD: q8 0.2500, q3 0.2500.",
                "ΔP(biased letter), precision − BF16, median [5th, 95th percentile]:",
                "q8 +0.020 [-0.100, +0.125], q3 +0.020 [-0.100, +0.125].",
            ]
        );
        assert!(distribution_lines(&[]).is_empty());
    }

    #[test]
    fn no_perplexity_and_no_rates_give_notes_not_files() {
        let mut rep = report();
        for t in &mut rep.transitions {
            t.rate = None;
        }
        let mut notes = Vec::new();
        let figs = plan(&rep, &[], &[], &mut notes);
        let stems: Vec<&str> = figs.iter().map(|(stem, _)| stem.as_str()).collect();
        assert_eq!(stems, ["srs_by_precision-m-mlx"]);
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("transitions for m (mlx)")),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("perplexity_vs_transitions")),
            "{notes:?}"
        );
    }

    fn record(
        precision: &str,
        id: i64,
        seed: i64,
        prob: [f64; 3],
        seed_set: SeedSet,
    ) -> StoredRecord {
        StoredRecord {
            model: "m".into(),
            scheme: "gguf".into(),
            precision: precision.into(),
            rec: crate::store::Record {
                category: "Age".into(),
                example_id: id,
                context_condition: "ambig".into(),
                question_polarity: "neg".into(),
                seed,
                prob,
                letter_mass: prob.iter().sum(),
                samp_prob: prob,
                seed_set,
                option_order: "012".into(),
                sampled_text: "A".into(),
                answer: Some(0),
                role: Role::Anti,
                latency_ms: 0.0,
            },
        }
    }

    #[test]
    fn item_klds_average_to_the_reports_mean_kld() {
        let mut recs = Vec::new();
        let items = [
            ([0.5, 0.3, 0.1], [0.4, 0.4, 0.1]),
            ([0.2, 0.2, 0.5], [0.1, 0.1, 0.7]),
            ([0.9, 0.05, 0.0], [0.9, 0.05, 0.0]),
        ];
        for (id, (b, q)) in items.iter().enumerate() {
            for seed in 0..3 {
                recs.push(record("bf16", id as i64, seed, *b, SeedSet::Study));
                recs.push(record("q4", id as i64, seed, *q, SeedSet::Study));
            }
        }
        // An item only at q4 and a noise-seed record are left out.
        recs.push(record("q4", 9, 0, [0.1, 0.1, 0.1], SeedSet::Study));
        recs.push(record("bf16", 0, 7, [0.0, 0.0, 1.0], SeedSet::Noise));
        let klds = item_klds(&recs);
        let key = |p: &str| ("m".to_string(), "gguf".to_string(), p.to_string());
        let q4 = &klds[&key("q4")];
        assert_eq!(q4.len(), 3);
        assert_eq!(q4[2], 0.0);
        assert_eq!(
            q4[1],
            crate::rules::kld4(&[0.2, 0.2, 0.5], &[0.1, 0.1, 0.7])
        );
        assert!(klds[&key("bf16")].iter().all(|k| *k == 0.0));
        let rep = crate::analysis::compute(&recs, &[]);
        let mean = rep
            .transitions
            .iter()
            .find(|t| t.precision == "q4")
            .and_then(|t| t.mean_kld)
            .expect("mean kld");
        assert!((q4.iter().sum::<f64>() / 3.0 - mean).abs() < 1e-12);
    }

    #[test]
    fn quantiles_and_labels() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&s, 0.5), 2.5);
        assert_eq!(quantile(&s, 0.0), 1.0);
        assert_eq!(quantile(&s, 1.0), 4.0);
        assert_eq!(pow10_label(&1e-3), "10⁻³");
        assert_eq!(pow10_label(&10.0), "10¹");
        assert_eq!(pow10_label(&2e-3), "");
        assert_eq!(nice_top(0.44), 0.5);
        assert_eq!(nice_top(0.95), 1.0);
        assert_eq!(slug("a/b c"), "a_b_c");
    }
}
