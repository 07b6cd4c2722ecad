//! The summary: one row per precision of the run over the items the filters show, in fixed
//! columns, the report's statistics of the whole run (model-level SRS, bootstrap intervals,
//! McNemar, the clustered dose-response, per-item distribution statistics), then two
//! charts (SRS with its interval; the transition rate with its interval against the noise
//! floor). Columns that do not fit are dropped in a fixed order
//! ([`DROP_ORDER`]) rather than wrapped; the whole screen scrolls.
//!
//! The counts follow the study's rules ([`crate::rules`]) over the list's items, so with no
//! filter they equal the report's pooled `ALL` rows and `transitions`.

use super::app::App;
use super::theme::{self, ACCENT, clip, pct, role_color};
use crate::analysis::stats::{mcnemar_exact, wilson};
use crate::bbq::Role;
use crate::rules::{self, ExpectedRate};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Scrollbar, ScrollbarOrientation, ScrollbarState};

/// One precision over the shown items.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrecisionRow {
    pub precision: String,
    /// Answers (study seeds) and how many were valid, biased, unknown.
    pub answers: u64,
    pub valid: u64,
    pub biased: u64,
    pub unknown: u64,
    /// Items unbiased at bf16 (compared at this precision) and those that became biased.
    pub unbiased_at_bf16: u64,
    pub became_biased: u64,
    /// The reverse direction: items with a biased seed at bf16, and those with a valid seed
    /// and none biased here.
    pub biased_at_bf16: u64,
    pub became_unbiased: u64,
    pub expected: Option<f64>,
    pub noise_floor: Option<f64>,
    /// Answers read from text continued after a first token that was not a letter.
    pub continued: u64,
    /// Perplexity change against bf16 (whole run; not filtered).
    pub delta_ppl_pct: Option<f64>,
    /// SRS at bf16, for Δ.
    pub bf16_srs: Option<f64>,
}

impl PrecisionRow {
    pub fn srs(&self) -> Option<f64> {
        ratio(self.biased, self.valid)
    }
    pub fn srs_ci(&self) -> Option<(f64, f64)> {
        wilson(self.biased, self.valid)
    }
    pub fn rate(&self) -> Option<f64> {
        ratio(self.became_biased, self.unbiased_at_bf16)
    }
    pub fn rate_ci(&self) -> Option<(f64, f64)> {
        wilson(self.became_biased, self.unbiased_at_bf16)
    }
    /// The Wilson 95% interval of the reverse direction's rate.
    pub fn reverse_ci(&self) -> Option<(f64, f64)> {
        wilson(self.became_unbiased, self.biased_at_bf16)
    }
    fn is_bf16(&self) -> bool {
        self.precision == crate::vocab::Precision::Bf16.as_str()
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// The items the list shows that the statistics may pool (all of them in a finished folder).
fn pooled(app: &App) -> impl Iterator<Item = &crate::store::view::ItemView> {
    app.visible
        .iter()
        .map(|&i| &app.views[i])
        .filter(|v| app.pooled(v))
}

/// The rows of the summary over the items the list shows.
pub fn rows(app: &App) -> Vec<PrecisionRow> {
    let bf16 = app.precisions.first().cloned().unwrap_or_default();
    let mut out: Vec<PrecisionRow> = Vec::new();
    for p in &app.precisions {
        let mut r = PrecisionRow {
            precision: p.clone(),
            ..Default::default()
        };
        let mut expected = ExpectedRate::default();
        for v in pooled(app) {
            let Some(c) = v.cells.get(p) else { continue };
            let bi = v.item.biased_index as usize;
            for s in &c.seeds {
                let role = v.item.role_of(s.answer);
                r.answers += 1;
                r.valid += u64::from(role != Role::Invalid);
                r.biased += u64::from(role == Role::Biased);
                r.unknown += u64::from(role == Role::Unknown);
                r.continued += u64::from(!rules::first_token_answer(&s.sampled_text));
            }
            let Some(b) = v.cells.get(&bf16) else {
                continue;
            };
            if b.tally.unbiased() {
                r.unbiased_at_bf16 += 1;
                r.became_biased += u64::from(rules::became_biased(b.tally, c.tally));
            }
            if b.tally.any_biased() {
                r.biased_at_bf16 += 1;
                r.became_unbiased += u64::from(rules::became_unbiased(b.tally, c.tally));
            }
            if let (Some(bs), Some(ps)) = (b.seeds.last(), c.seeds.last()) {
                expected.add(b.seeds.len() as u32, bs.samp_prob[bi], ps.samp_prob[bi]);
            }
        }
        r.expected = expected.expected();
        r.noise_floor = expected.noise_floor();
        r.delta_ppl_pct = app.report.as_ref().and_then(|rep| {
            rep.perplexity
                .iter()
                .find(|x| &x.precision == p)
                .and_then(|x| x.delta_ppl_pct)
        });
        out.push(r);
    }
    let base = out.first().and_then(PrecisionRow::srs);
    for r in &mut out {
        r.bf16_srs = base;
    }
    out
}

/// A column: header, width, and its text for a row.
struct Column {
    name: &'static str,
    width: usize,
    text: fn(&PrecisionRow) -> String,
}

fn interval(ci: Option<(f64, f64)>) -> String {
    ci.map(|(l, h)| format!("{:.1}–{:.1}", 100.0 * l, 100.0 * h))
        .unwrap_or_else(|| "-".into())
}

fn quantized(r: &PrecisionRow, f: impl Fn(&PrecisionRow) -> String) -> String {
    if r.is_bf16() { "·".into() } else { f(r) }
}

const COLUMNS: &[Column] = &[
    Column {
        name: "prec",
        width: 4,
        text: |r| r.precision.clone(),
    },
    Column {
        name: "SRS",
        width: 6,
        text: |r| pct(r.srs()),
    },
    Column {
        name: "SRS-CI",
        width: 11,
        text: |r| interval(r.srs_ci()),
    },
    Column {
        name: "Δbf16",
        width: 7,
        text: |r| {
            quantized(r, |r| match (r.srs(), r.bf16_srs) {
                (Some(a), Some(b)) => format!("{:+.1}pp", 100.0 * (a - b)),
                _ => "-".into(),
            })
        },
    },
    Column {
        name: "USR",
        width: 6,
        text: |r| pct(ratio(r.unknown, r.valid)),
    },
    Column {
        name: "valid",
        width: 6,
        text: |r| pct(ratio(r.valid, r.answers)),
    },
    Column {
        name: "trans",
        width: 7,
        text: |r| quantized(r, |r| format!("{}/{}", r.became_biased, r.unbiased_at_bf16)),
    },
    Column {
        name: "rate",
        width: 6,
        text: |r| quantized(r, |r| pct(r.rate())),
    },
    Column {
        name: "rate-CI",
        width: 11,
        text: |r| quantized(r, |r| interval(r.rate_ci())),
    },
    Column {
        name: "rev",
        width: 7,
        text: |r| quantized(r, |r| format!("{}/{}", r.became_unbiased, r.biased_at_bf16)),
    },
    Column {
        name: "rev-CI",
        width: 11,
        text: |r| quantized(r, |r| interval(r.reverse_ci())),
    },
    Column {
        name: "McN-p",
        width: 6,
        text: |r| {
            quantized(r, |r| {
                format!("{:.3}", mcnemar_exact(r.became_biased, r.became_unbiased))
            })
        },
    },
    Column {
        name: "exp",
        width: 6,
        text: |r| quantized(r, |r| pct(r.expected)),
    },
    Column {
        name: "floor",
        width: 6,
        text: |r| quantized(r, |r| pct(r.noise_floor)),
    },
    Column {
        name: "cont",
        width: 6,
        text: |r| pct(ratio(r.continued, r.answers)),
    },
    Column {
        name: "Δppl",
        width: 7,
        text: |r| {
            quantized(r, |r| {
                r.delta_ppl_pct
                    .map(|d| format!("{d:+.1}%"))
                    .unwrap_or_else(|| "-".into())
            })
        },
    },
];

/// The columns dropped first when the screen is too narrow, in order.
pub const DROP_ORDER: [&str; 9] = [
    "rev-CI", "McN-p", "cont", "valid", "USR", "rev", "exp", "Δppl", "Δbf16",
];

/// The columns that fit in `width`, and those dropped.
fn fitting(width: usize) -> (Vec<&'static Column>, Vec<&'static str>) {
    let mut cols: Vec<&Column> = COLUMNS.iter().collect();
    let mut dropped = Vec::new();
    let total = |c: &[&Column]| c.iter().map(|c| c.width + 1).sum::<usize>();
    for name in DROP_ORDER {
        if total(&cols) <= width {
            break;
        }
        cols.retain(|c| c.name != name);
        dropped.push(name);
    }
    (cols, dropped)
}

fn cells(cols: &[&Column], texts: impl Fn(&Column) -> String) -> String {
    cols.iter()
        .map(|c| format!("{:>w$}", clip(&texts(c), c.width), w = c.width))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the summary pools, in words: the shown items (of an unfinished folder, only those
/// finished at every precision started) and the filters.
fn scope(app: &App) -> String {
    let mut f = Vec::new();
    if let Some(c) = &app.category {
        f.push(format!("category {c}"));
    }
    if let Some(p) = &app.polarity {
        f.push(format!("polarity {p}"));
    }
    if let Some(c) = &app.condition {
        f.push(format!("condition {c}"));
    }
    if app.transitions_only {
        f.push(format!("became biased at {}", app.focus_precision()));
    }
    let pooled = pooled(app).count();
    let filters = if f.is_empty() {
        String::new()
    } else {
        format!(" ({})", f.join(", "))
    };
    match (&app.partial, f.is_empty()) {
        (Some(_), _) => format!(
            "{pooled} of the {} shown items{filters}, by the rule below",
            app.visible.len()
        ),
        (None, true) => format!("all {pooled} items"),
        (None, false) => format!("{pooled} of {} items{filters}", app.views.len()),
    }
}

/// A chart row of `width` cells: `█` to `value`, `░` on to `band`, `├─┤` the interval.
fn chart(value: f64, band: Option<f64>, ci: Option<(f64, f64)>, max: f64, width: usize) -> String {
    let at = |x: f64| {
        ((x / max) * width as f64)
            .floor()
            .clamp(0.0, width as f64 - 1.0) as usize
    };
    let mut cells: Vec<char> = (0..width)
        .map(|i| {
            let x = (i as f64 + 0.5) / width as f64 * max;
            if x <= value {
                '█'
            } else if band.is_some_and(|b| x <= b) {
                '░'
            } else {
                ' '
            }
        })
        .collect();
    if let Some((lo, hi)) = ci {
        let (l, h) = (at(lo), at(hi));
        for c in cells.iter_mut().take(h + 1).skip(l) {
            if *c != '█' {
                *c = '─';
            }
        }
        cells[l] = '├';
        cells[h] = '┤';
    }
    cells.into_iter().collect()
}

fn charts<'a>(app: &App, rows: &[PrecisionRow], width: usize) -> Vec<Line<'a>> {
    let w = width.saturating_sub(24).clamp(10, 60);
    let bar = theme::role_style(app.no_color, Role::Biased);
    let axis = |max: f64| format!("{:>5}  0{:>w$}", "", format!("{:.0}%", 100.0 * max), w = w);
    let title = |t: &str| {
        super::detail::wrap(t, width)
            .into_iter()
            .map(|l| Line::styled(l, theme::styled(app.no_color, theme::bold())))
            .collect::<Vec<_>>()
    };
    let mut out = title("SRS by precision (█ rate, ├─┤ 95% interval)");
    let max = rows
        .iter()
        .filter_map(|r| r.srs_ci().map(|c| c.1))
        .fold(0.05, f64::max);
    for r in rows {
        out.push(Line::from(vec![
            Span::raw(format!("{:>5} │", r.precision)),
            Span::styled(chart(r.srs().unwrap_or(0.0), None, r.srs_ci(), max, w), bar),
            Span::raw(format!("│ {}", pct(r.srs()))),
        ]));
    }
    out.push(Line::from(axis(max)));
    out.push(Line::from(""));
    out.extend(title(
        "Became biased (█ rate, ├─┤ 95% interval) against its noise floor (░)",
    ));
    let q: Vec<&PrecisionRow> = rows.iter().filter(|r| !r.is_bf16()).collect();
    let max = q
        .iter()
        .flat_map(|r| [r.rate_ci().map(|c| c.1), r.noise_floor])
        .flatten()
        .fold(0.05, f64::max);
    let band = theme::styled(app.no_color, Style::default().fg(role_color(Role::Invalid)));
    for r in q {
        out.push(Line::from(vec![
            Span::raw(format!("{:>5} │", r.precision)),
            Span::styled(
                chart(r.rate().unwrap_or(0.0), None, r.rate_ci(), max, w),
                theme::styled(app.no_color, Style::default().fg(ACCENT)),
            ),
            Span::raw(format!("│ rate {}", pct(r.rate()))),
        ]));
        out.push(Line::from(vec![
            Span::raw(format!("{:>5} │", "")),
            Span::styled(chart(0.0, r.noise_floor, None, max, w), band),
            Span::raw(format!("│ floor {}", pct(r.noise_floor))),
        ]));
    }
    out.push(Line::from(axis(max)));
    out
}

/// The report's statistics of the whole run (not filtered), one paragraph each: the study's
/// model-level SRS (the mean of the categories' SRS), the bootstrap interval of each
/// precision's Δ SRS, McNemar's test against bf16, the dose-response slope with naive and
/// item-clustered standard errors, and the per-item distribution statistics over the answer
/// letters.
fn whole_run(app: &App) -> Vec<String> {
    let Some(rep) = &app.report else {
        return Vec::new();
    };
    let all_row = |p: &String| {
        rep.rows
            .iter()
            .find(|r| r.category == "ALL" && &r.precision == p)
    };
    let list = |items: Vec<String>| match items.is_empty() {
        true => "-".to_string(),
        false => items.join(", "),
    };
    let per =
        |f: &dyn Fn(&String) -> Option<String>| list(app.precisions.iter().filter_map(f).collect());
    let pp = |x: f64| format!("{:+.1}", 100.0 * x);
    let scope = if app.partial.is_some() {
        "Whole run (not filtered; PARTIAL: the common items only)"
    } else {
        "Whole run (not filtered)"
    };
    let mut out = vec![format!(
        "{scope}: model-level SRS, the mean over categories: {}.",
        per(&|p| all_row(p)?
            .srs_macro
            .map(|v| format!("{p} {}", pct(Some(v)))))
    )];
    out.push(format!(
        "Δ SRS against bf16 with its 95% bootstrap interval over items ({} resamples), points: {}.",
        rep.bootstrap.replicates,
        per(&|p| {
            let r = all_row(p)?;
            Some(format!(
                "{p} {} [{}, {}]",
                pp(r.delta_srs?),
                pp(r.delta_srs_boot_low?),
                pp(r.delta_srs_boot_high?)
            ))
        })
    ));
    out.push(format!(
        "McNemar p (items biased at bf16 against at the precision): {}.",
        per(&|p| {
            let t = rep.transitions.iter().find(|t| &t.precision == p)?;
            Some(format!("{p} {:.3}", t.mcnemar_p?))
        })
    ));
    for g in &rep.regressions {
        let (Some(fit), Some(cse)) = (&g.fit, &g.cluster_se) else {
            continue;
        };
        if let Some(i) = fit.names.iter().position(|n| n == "bits") {
            out.push(format!(
                "Biased answer ~ bits + category (logistic, {} answers, {} items): bits {:+.4}, SE {:.4} naive, {:.4} clustered by item.",
                g.n,
                g.clusters.unwrap_or(0),
                fit.coef[i],
                fit.se[i],
                cse.get(i).copied().unwrap_or(f64::NAN)
            ));
        }
    }
    let dist = |p: &String| rep.distributions.iter().find(|d| &d.precision == p);
    out.push(format!(
        "Per-item KL(bf16 ‖ precision) over the letters, nats, mean / median / p99: {}.",
        per(&|p| {
            let k = dist(p)?.kld.as_ref()?;
            Some(format!(
                "{p} {:.2e} / {:.2e} / {:.2e}",
                k.mean, k.median, k.p99
            ))
        })
    ));
    out.push(format!(
        "Per-item change in P(biased letter), points, median [p5, p95]: {}. Most probable letter unchanged: {}.",
        per(&|p| {
            let d = dist(p)?.dp_biased.as_ref()?;
            Some(format!("{p} {} [{}, {}]", pp(d.median), pp(d.p5), pp(d.p95)))
        }),
        per(&|p| {
            let d = dist(p)?;
            Some(format!(
                "{p} {} ± {:.1}",
                pct(d.top_unchanged),
                100.0 * d.top_unchanged_se?
            ))
        })
    ));
    out
}

/// Every line of the summary at `width`.
pub fn lines<'a>(app: &App, width: usize) -> Vec<Line<'a>> {
    let rows = rows(app);
    let (cols, dropped) = fitting(width);
    let bold = theme::styled(app.no_color, theme::bold());
    let mut out: Vec<Line> =
        super::detail::wrap(&format!("Per precision over {}", scope(app)), width)
            .into_iter()
            .map(|l| Line::from(Span::styled(l, bold)))
            .collect();
    if let Some(p) = &app.partial {
        let warn = theme::styled(app.no_color, theme::bold().fg(role_color(Role::Biased)));
        out.extend(
            super::detail::wrap(&p.label, width)
                .into_iter()
                .map(|l| Line::from(Span::styled(l, warn))),
        );
    }
    out.push(Line::from(Span::styled(
        cells(&cols, |c| c.name.to_string()),
        bold,
    )));
    for r in &rows {
        out.push(Line::from(cells(&cols, |c| (c.text)(r))));
    }
    out.push(Line::from(""));
    let mut notes = String::from(
        "SRS: biased / valid answers; SRS-CI: its Wilson 95% interval (%). Δbf16: SRS change in points. trans: items unbiased at bf16 \
         (no seed biased, one valid) with a biased seed here; rate: their share; rate-CI: \
         its interval; rev: the reverse, items with a biased seed at bf16 and none here (one \
         valid), rev-CI its interval; McN-p: the exact McNemar test of trans against rev; exp: expected from the probabilities; floor: what re-sampling bf16 alone \
         gives. cont: answers read after a first token that was not a letter. Δppl: the whole \
         run's perplexity change (not filtered).",
    );
    if !dropped.is_empty() {
        notes.push_str(&format!(
            " Hidden at this width: {} (widen the terminal to see them).",
            dropped.join(", ")
        ));
    }
    out.extend(
        super::detail::wrap(&notes, width)
            .into_iter()
            .map(Line::from),
    );
    out.push(Line::from(""));
    for paragraph in whole_run(app) {
        out.extend(
            super::detail::wrap(&paragraph, width)
                .into_iter()
                .map(Line::from),
        );
    }
    out.push(Line::from(""));
    if rows.len() > 1 {
        out.extend(charts(app, &rows, width));
    }
    out
}

/// The summary's text width in a body `width` columns wide: the last column is the
/// scrollbar's.
fn text_width(width: u16) -> usize {
    width.saturating_sub(1) as usize
}

/// The furthest the summary scrolls on the terminal: its lines less the body's rows.
pub fn max_scroll(app: &App) -> usize {
    let body = app.height.saturating_sub(super::view::CHROME) as usize;
    lines(app, text_width(app.width)).len().saturating_sub(body)
}

/// Draw the summary, scrolled, with a scrollbar when it is taller than the screen.
pub fn render(f: &mut Frame, app: &App, area: Rect) {
    if app.precisions.is_empty() || app.views.is_empty() {
        f.render_widget(Paragraph::new("no records yet"), area);
        return;
    }
    let lines = lines(app, text_width(area.width));
    let rows = area.height as usize;
    let max = lines.len().saturating_sub(rows);
    let scroll = (app.summary_scroll as usize).min(max);
    f.render_widget(Paragraph::new(lines).scroll((scroll as u16, 0)), area);
    if max > 0 {
        let mut state = ScrollbarState::new(max)
            .position(scroll)
            .viewport_content_length(rows);
        f.render_stateful_widget(
            Scrollbar::new(ScrollbarOrientation::VerticalRight)
                .begin_symbol(Some("↑"))
                .end_symbol(Some("↓"))
                .track_symbol(Some("│"))
                .thumb_symbol("█"),
            area,
            &mut state,
        );
    }
}
