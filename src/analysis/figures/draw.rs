//! Drawing of the figures with plotters, on any backend. `k` scales every length: 1 for
//! SVG, 2 for PNG. Text is placed by anchors, never measured, so the SVG backend needs no
//! font.

use super::{Body, Facet, Figure, MAX_DOTS, TPoint, grid, nice_top, order};
use crate::error::{Error, Result};
use crate::vocab::Precision;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;
use std::path::Path;

// Okabe–Ito colours, distinguishable with the common colour-vision deficiencies.
const INK: RGBColor = RGBColor(25, 25, 25);
const SKY: RGBColor = RGBColor(86, 180, 233);
const DEEP: RGBColor = RGBColor(0, 114, 178);
const AMBER: RGBColor = RGBColor(230, 159, 0);
const VERMILION: RGBColor = RGBColor(213, 94, 0);
const GREY: RGBColor = RGBColor(120, 120, 120);
const GRID: RGBColor = RGBColor(228, 228, 228);

type DResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;
type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn px(k: f64, v: f64) -> i32 {
    (v * k).round() as i32
}

/// A text style of `pt` points (at k = 1) with an anchor.
fn font_of(k: f64, pt: f64, color: RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    styled(k, pt, color, h, v, FontStyle::Normal)
}

fn styled(k: f64, pt: f64, color: RGBColor, h: HPos, v: VPos, s: FontStyle) -> TextStyle<'static> {
    FontDesc::new(FontFamily::SansSerif, pt * 1.24 * k, s)
        .color(&color)
        .pos(Pos::new(h, v))
}

fn text<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    s: &str,
    at: (i32, i32),
    style: &TextStyle,
) -> DResult<DB> {
    root.draw(&Text::new(s.to_string(), at, style.clone()))
}

pub(super) fn draw_to<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    f: &Figure,
    k: f64,
    path: &Path,
) -> Result<()> {
    let fail = |e: DrawingAreaErrorKind<DB::ErrorType>| {
        Error::Store(format!("{}: cannot draw the figure: {e}", path.display()))
    };
    draw(root, f, k).map_err(fail)?;
    root.present().map_err(fail)
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, f: &Figure, k: f64) -> DResult<DB> {
    root.fill(&WHITE)?;
    let (w, _) = root.dim_in_pixel();
    let mid = w as i32 / 2;
    let title = styled(k, 17.0, INK, HPos::Center, VPos::Top, FontStyle::Bold);
    text(root, &f.title, (mid, px(k, 12.0)), &title)?;
    let sub = font_of(k, 12.5, GREY, HPos::Center, VPos::Top);
    for (i, line) in f.subtitle.iter().enumerate() {
        text(root, line, (mid, px(k, 38.0 + 17.0 * i as f64)), &sub)?;
    }
    let head = px(k, 50.0 + 17.0 * f.subtitle.len() as f64);
    let (_, body) = root.split_vertically(head);
    match &f.body {
        Body::Srs {
            precisions,
            facets,
            top,
        } => draw_srs(root, &body, k, precisions, facets, *top),
        Body::Transitions(t) => draw_transitions(root, &body, k, t),
        Body::Perplexity { rates, deltas } => draw_perplexity(root, &body, k, rates, deltas),
        Body::Kld { dist, floor, top } => draw_kld(root, &body, k, dist, *floor, *top),
    }
}

/// Percent labels with as many decimals as the axis needs.
fn pct_label(top: f64) -> impl Fn(&f64) -> String {
    let digits = if top >= 0.1 {
        0
    } else if top >= 0.01 {
        1
    } else {
        2
    };
    move |v: &f64| format!("{:.*}%", digits, 100.0 * v)
}

/// A panel with categorical x (labels drawn below the axis) and a linear y.
#[allow(clippy::too_many_arguments)]
fn panel<'a, DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &'a DrawingArea<DB, Shift>,
    k: f64,
    xs: &[String],
    y: Range<f64>,
    y_desc: &str,
    y_fmt: &dyn Fn(&f64) -> String,
    x_desc: Option<&str>,
) -> std::result::Result<Chart<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = ChartBuilder::on(area)
        .margin_top(px(k, 26.0))
        .margin_right(px(k, 14.0))
        .margin_left(px(k, 6.0))
        .x_label_area_size(px(k, if x_desc.is_some() { 54.0 } else { 30.0 }))
        .y_label_area_size(px(k, if y_desc.is_empty() { 52.0 } else { 76.0 }))
        .build_cartesian_2d(-0.5..xs.len() as f64 - 0.5, y)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh()
        .x_labels(0)
        .y_labels(6)
        .y_label_formatter(y_fmt)
        .label_style(font_of(k, 13.0, INK, HPos::Center, VPos::Center))
        .axis_desc_style(font_of(k, 14.0, INK, HPos::Center, VPos::Center))
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID.stroke_width(px(k, 1.0).max(1) as u32))
        .axis_style(INK.stroke_width(px(k, 1.0).max(1) as u32));
    if !y_desc.is_empty() {
        mesh.y_desc(y_desc);
    }
    if let Some(d) = x_desc {
        mesh.x_desc(d);
    }
    mesh.draw()?;
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    let style = font_of(k, 13.5, INK, HPos::Center, VPos::Top);
    for (i, name) in xs.iter().enumerate() {
        let x = xr.start + ((i as f64 + 0.5) / xs.len() as f64 * (xr.end - xr.start) as f64) as i32;
        text(root, name, (x, yr.end + px(k, 7.0)), &style)?;
    }
    Ok(chart)
}

/// A panel title centred above the plotting area.
fn panel_title<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart<DB>,
    k: f64,
    s: &str,
    strong: bool,
) -> DResult<DB> {
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    let weight = if strong {
        FontStyle::Bold
    } else {
        FontStyle::Normal
    };
    let style = styled(k, 14.0, INK, HPos::Center, VPos::Bottom, weight);
    text(
        root,
        s,
        ((xr.start + xr.end) / 2, yr.start - px(k, 7.0)),
        &style,
    )
}

fn stroke(color: RGBColor, k: f64, w: f64) -> ShapeStyle {
    color.stroke_width(px(k, w).max(1) as u32)
}

/// A vertical interval with caps at x from lo to hi.
fn error_bar<DB: DrawingBackend>(
    chart: &Chart<DB>,
    x: f64,
    (lo, hi): (f64, f64),
    cap: f64,
    style: ShapeStyle,
) -> DResult<DB> {
    let area = chart.plotting_area();
    area.draw(&PathElement::new(vec![(x, lo), (x, hi)], style))?;
    for y in [lo, hi] {
        area.draw(&PathElement::new(vec![(x - cap, y), (x + cap, y)], style))?;
    }
    Ok(())
}

fn draw_srs<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    body: &DrawingArea<DB, Shift>,
    k: f64,
    xs: &[String],
    facets: &[Facet],
    top: f64,
) -> DResult<DB> {
    let (w, h) = body.dim_in_pixel();
    let (left, rest) = body.split_horizontally(px(k, 30.0));
    let (panels, bottom) = rest.split_vertically(h as i32 - px(k, 30.0));
    let desc = font_of(k, 14.0, INK, HPos::Center, VPos::Center);
    let (lx, ly) = left.get_base_pixel();
    text(
        root,
        "stereotype rate (biased / valid answers)",
        (lx + px(k, 12.0), ly + (h as i32 - px(k, 30.0)) / 2),
        &desc.transform(FontTransform::Rotate270),
    )?;
    let (bx, by) = bottom.get_base_pixel();
    text(
        root,
        "precision",
        (bx + (w as i32 - px(k, 30.0)) / 2, by + px(k, 12.0)),
        &desc,
    )?;
    let (cols, rows) = grid(facets.len());
    let fmt = pct_label(top);
    for (f, area) in facets.iter().zip(panels.split_evenly((rows, cols)).iter()) {
        let chart = panel(root, area, k, xs, 0.0..top, "", &fmt, None)?;
        let name = if f.pooled {
            "All categories (pooled)".to_string()
        } else {
            f.name.replace('_', " ")
        };
        panel_title(root, &chart, k, &name, f.pooled)?;
        let color = if f.pooled { INK } else { DEEP };
        let area = chart.plotting_area();
        let bf16 = xs.first().is_some_and(|p| p == Precision::Bf16.as_str());
        if let Some(&(0, base, _, _)) = f.points.first().filter(|_| bf16) {
            area.draw(&DashedPathElement::new(
                vec![(-0.5, base), (xs.len() as f64 - 0.5, base)],
                px(k, 5.0),
                px(k, 4.0),
                stroke(GREY, k, 1.0),
            ))?;
        }
        let line: Vec<(f64, f64)> = f.points.iter().map(|p| (p.0 as f64, p.1)).collect();
        area.draw(&PathElement::new(line, stroke(color, k, 1.5)))?;
        for &(x, srs, lo, hi) in &f.points {
            error_bar(&chart, x as f64, (lo, hi), 0.09, stroke(color, k, 1.5))?;
            let r = if f.pooled { 5.0 } else { 4.0 };
            area.draw(&Circle::new((x as f64, srs), px(k, r), color.filled()))?;
        }
        draw_macro(&chart, k, &f.macro_points)?;
    }
    Ok(())
}

/// The study's model-level SRS (the mean of the categories' rates) beside the pooled rate:
/// vermilion triangles joined by a dashed line, set right of each precision's dot.
fn draw_macro<DB: DrawingBackend>(
    chart: &Chart<DB>,
    k: f64,
    points: &[(usize, f64)],
) -> DResult<DB> {
    let area = chart.plotting_area();
    let at: Vec<(f64, f64)> = points.iter().map(|&(x, m)| (x as f64 + 0.2, m)).collect();
    area.draw(&DashedPathElement::new(
        at.clone(),
        px(k, 4.0),
        px(k, 3.0),
        stroke(VERMILION, k, 1.2),
    ))?;
    for p in at {
        area.draw(&TriangleMarker::new(p, px(k, 5.5), VERMILION.filled()))?;
    }
    Ok(())
}

/// A legend entry's mark.
enum Swatch {
    Dot(RGBColor),
    Triangle(RGBColor),
    Band(RGBAColor),
    Dash(RGBColor),
}

/// The legend of a single-panel figure, stacked at the top of `area`.
fn legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    k: f64,
    entries: &[(Swatch, &str)],
) -> DResult<DB> {
    let (x0, y0) = area.get_base_pixel();
    let style = font_of(k, 13.0, INK, HPos::Left, VPos::Center);
    for (i, (swatch, label)) in entries.iter().enumerate() {
        let y = y0 + px(k, 40.0 + 24.0 * i as f64);
        let cx = x0 + px(k, 16.0);
        match swatch {
            Swatch::Dot(c) => {
                root.draw(&PathElement::new(
                    vec![(cx, y - px(k, 7.0)), (cx, y + px(k, 7.0))],
                    stroke(*c, k, 1.5),
                ))?;
                root.draw(&Circle::new((cx, y), px(k, 4.5), c.filled()))?
            }
            Swatch::Triangle(c) => {
                root.draw(&TriangleMarker::new((cx, y), px(k, 5.5), c.filled()))?
            }
            Swatch::Band(c) => root.draw(&Rectangle::new(
                [
                    (cx - px(k, 10.0), y - px(k, 6.0)),
                    (cx + px(k, 10.0), y + px(k, 6.0)),
                ],
                c.filled(),
            ))?,
            Swatch::Dash(c) => root.draw(&DashedPathElement::new(
                vec![(cx - px(k, 11.0), y), (cx + px(k, 11.0), y)],
                px(k, 5.0),
                px(k, 3.0),
                stroke(*c, k, 2.0),
            ))?,
        }
        text(root, label, (cx + px(k, 18.0), y), &style)?;
    }
    Ok(())
}

fn band_color() -> RGBAColor {
    GREY.mix(0.22)
}

/// The noise floor as a shaded band from 0, one rectangle per run of equal values (so
/// that no seams show where precisions meet).
fn floor_band<DB: DrawingBackend>(
    chart: &Chart<DB>,
    k: f64,
    floors: &[(f64, Option<f64>)],
) -> DResult<DB> {
    let area = chart.plotting_area();
    let mut i = 0;
    while i < floors.len() {
        let (x0, f) = floors[i];
        let mut j = i;
        while j + 1 < floors.len() && floors[j + 1].1 == f && floors[j + 1].0 == floors[j].0 + 1.0 {
            j += 1;
        }
        if let Some(f) = f {
            let x1 = floors[j].0;
            area.draw(&Rectangle::new(
                [(x0 - 0.5, 0.0), (x1 + 0.5, f)],
                band_color().filled(),
            ))?;
            area.draw(&PathElement::new(
                vec![(x0 - 0.5, f), (x1 + 0.5, f)],
                stroke(GREY, k, 1.0),
            ))?;
        }
        i = j + 1;
    }
    Ok(())
}

/// Noise floor band and observed rates with their intervals, at x positions `xs`; shared
/// by two figures.
fn draw_rates<DB: DrawingBackend>(
    chart: &Chart<DB>,
    k: f64,
    t: &[TPoint],
    xs: &[f64],
) -> DResult<DB> {
    let area = chart.plotting_area();
    let floors: Vec<(f64, Option<f64>)> = xs.iter().zip(t).map(|(x, p)| (*x, p.floor)).collect();
    floor_band(chart, k, &floors)?;
    let line: Vec<(f64, f64)> = xs.iter().zip(t).map(|(x, p)| (*x, p.rate)).collect();
    area.draw(&PathElement::new(line, stroke(INK, k, 1.5)))?;
    for (x, p) in xs.iter().zip(t) {
        error_bar(chart, *x, p.ci, 0.06, stroke(INK, k, 1.5))?;
        area.draw(&Circle::new((*x, p.rate), px(k, 5.0), INK.filled()))?;
    }
    Ok(())
}

fn draw_transitions<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    body: &DrawingArea<DB, Shift>,
    k: f64,
    t: &[TPoint],
) -> DResult<DB> {
    let (plot, side) = body.split_horizontally(body.dim_in_pixel().0 as i32 - px(k, 250.0));
    let xs: Vec<String> = t.iter().map(|p| p.precision.clone()).collect();
    let max = t
        .iter()
        .flat_map(|p| {
            [
                Some(p.ci.1),
                p.expected,
                p.floor,
                p.measured,
                p.reverse.map(|r| r.1.1),
            ]
        })
        .flatten()
        .fold(0.0, f64::max);
    let top = nice_top(max);
    let fmt = pct_label(top);
    let chart = panel(
        root,
        &plot,
        k,
        &xs,
        0.0..top,
        "became biased (share of BF16-unbiased items)",
        &fmt,
        Some("precision"),
    )?;
    let at: Vec<f64> = (0..t.len()).map(|i| i as f64).collect();
    draw_rates(&chart, k, t, &at)?;
    let area = chart.plotting_area();
    for (i, p) in t.iter().enumerate() {
        if let Some(m) = p.measured {
            let x = i as f64;
            area.draw(&DashedPathElement::new(
                vec![(x - 0.5, m), (x + 0.5, m)],
                px(k, 6.0),
                px(k, 4.0),
                stroke(AMBER, k, 2.5),
            ))?;
        }
    }
    let expected: Vec<(f64, f64)> = t
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.expected.map(|e| (i as f64, e)))
        .collect();
    area.draw(&DashedPathElement::new(
        expected.clone(),
        px(k, 5.0),
        px(k, 4.0),
        stroke(DEEP, k, 1.5),
    ))?;
    for &(x, e) in &expected {
        area.draw(&TriangleMarker::new(
            (x + 0.0, e),
            px(k, 6.0),
            DEEP.filled(),
        ))?;
    }
    draw_reverse(&chart, k, t)?;
    let mut entries = vec![
        (Swatch::Dot(INK), "rate by the study's rule"),
        (Swatch::Triangle(DEEP), "expected from probabilities"),
        (Swatch::Band(band_color()), "noise floor (from BF16)"),
    ];
    if t.iter().any(|p| p.measured.is_some()) {
        entries.push((Swatch::Dash(AMBER), "noise floor, extra seeds"));
    }
    if t.iter().any(|p| p.reverse.is_some()) {
        entries.push((Swatch::Dot(VERMILION), "biased at BF16 → unbiased"));
    }
    legend(root, &side, k, &entries)
}

/// The reverse transitions (biased at BF16 → unbiased) beside each precision's rate, with
/// their Wilson intervals.
fn draw_reverse<DB: DrawingBackend>(chart: &Chart<DB>, k: f64, t: &[TPoint]) -> DResult<DB> {
    let area = chart.plotting_area();
    for (i, p) in t.iter().enumerate() {
        if let Some((rate, ci)) = p.reverse {
            let x = i as f64 + 0.2;
            error_bar(chart, x, ci, 0.05, stroke(VERMILION, k, 1.5))?;
            area.draw(&Circle::new((x, rate), px(k, 4.5), VERMILION.filled()))?;
        }
    }
    Ok(())
}

fn draw_perplexity<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    body: &DrawingArea<DB, Shift>,
    k: f64,
    rates: &[TPoint],
    deltas: &[(String, f64)],
) -> DResult<DB> {
    let halves = body.split_evenly((1, 2));
    let [left, right] = halves.as_slice() else {
        return Ok(());
    };
    // One x axis for both panels: every precision that has a rate or a perplexity.
    let mut xs: Vec<String> = rates.iter().map(|p| p.precision.clone()).collect();
    for (p, _) in deltas {
        if !xs.contains(p) {
            xs.push(p.clone());
        }
    }
    xs.sort_by_key(|p| order(p));
    let at = |p: &str| xs.iter().position(|x| x == p).unwrap_or(0) as f64;

    let max = rates
        .iter()
        .flat_map(|p| [p.ci.1, p.floor.unwrap_or(0.0)])
        .fold(0.0, f64::max);
    let top = nice_top(max);
    let fmt = pct_label(top);
    let chart = panel(
        root,
        left,
        k,
        &xs,
        0.0..top,
        "became biased (share of BF16-unbiased items)",
        &fmt,
        Some("precision"),
    )?;
    panel_title(root, &chart, k, "Transition rate", true)?;
    // Rates drawn at their precision's place on the shared axis.
    let placed: Vec<f64> = rates.iter().map(|p| at(&p.precision)).collect();
    draw_rates(&chart, k, rates, &placed)?;

    let lo = deltas.iter().map(|d| d.1).fold(0.0, f64::min);
    let hi = deltas.iter().map(|d| d.1).fold(0.0, f64::max);
    let pad = ((hi - lo) * 0.15).max(0.5);
    let y = (if lo < 0.0 { lo - pad } else { 0.0 })..(hi + pad);
    let digits = if hi - lo >= 5.0 { 0 } else { 1 };
    let fmt = move |v: &f64| {
        if v.abs() < 1e-9 {
            "0%".to_string()
        } else {
            format!("{v:+.digits$}%")
        }
    };
    let chart = panel(
        root,
        right,
        k,
        &xs,
        y,
        "perplexity change vs BF16",
        &fmt,
        Some("precision"),
    )?;
    panel_title(root, &chart, k, "Perplexity", true)?;
    let area = chart.plotting_area();
    area.draw(&PathElement::new(
        vec![(-0.5, 0.0), (xs.len() as f64 - 0.5, 0.0)],
        stroke(INK, k, 1.0),
    ))?;
    let label = font_of(k, 12.5, INK, HPos::Center, VPos::Bottom);
    for (p, d) in deltas {
        let x = at(p);
        area.draw(&Rectangle::new(
            [(x - 0.3, 0.0), (x + 0.3, *d)],
            VERMILION.filled(),
        ))?;
        let (cx, cy) = chart.backend_coord(&(x, d.max(0.0)));
        text(root, &format!("{d:+.1}%"), (cx, cy - px(k, 4.0)), &label)?;
    }
    Ok(())
}

/// The log axis of the KLD figure: from the power of ten at or below the smallest positive
/// value to the one at or above the largest.
pub(super) fn log_range(dist: &[(String, Vec<f64>)]) -> (f64, f64) {
    let all = || dist.iter().flat_map(|(_, v)| v.iter().copied());
    let min_pos = all().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let max = all().fold(0.0, f64::max);
    let floor = if min_pos.is_finite() {
        10f64.powf(min_pos.log10().floor()).max(1e-12)
    } else {
        1e-6
    };
    (floor, 10f64.powf(max.max(floor * 10.0).log10().ceil()))
}

/// Linear-interpolated quantile of sorted values.
pub(super) fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    let next = sorted.get(i + 1).copied().unwrap_or(sorted[i]);
    sorted[i] + frac * (next - sorted[i])
}

pub(super) fn pow10_label(v: &f64) -> String {
    let e = v.log10();
    if (e - e.round()).abs() < 1e-6 {
        let sup: String = format!("{}", e.round() as i64)
            .chars()
            .map(|c| match c {
                '-' => '⁻',
                d => "⁰¹²³⁴⁵⁶⁷⁸⁹"
                    .chars()
                    .nth(d.to_digit(10).unwrap_or(0) as usize)
                    .unwrap_or(d),
            })
            .collect();
        format!("10{sup}")
    } else {
        String::new()
    }
}

fn draw_kld<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    body: &DrawingArea<DB, Shift>,
    k: f64,
    dist: &[(String, Vec<f64>)],
    floor: f64,
    top: f64,
) -> DResult<DB> {
    let xs: Vec<String> = dist.iter().map(|(p, _)| p.clone()).collect();
    let mut chart = ChartBuilder::on(body)
        .margin_top(px(k, 26.0))
        .margin_right(px(k, 24.0))
        .margin_left(px(k, 6.0))
        .x_label_area_size(px(k, 54.0))
        .y_label_area_size(px(k, 76.0))
        .build_cartesian_2d(
            -0.5..xs.len() as f64 - 0.5,
            // A hair wider, so the powers of ten at both ends get their labels.
            (floor * 0.999..top * 1.001).log_scale(),
        )?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&pow10_label)
        .label_style(font_of(k, 13.0, INK, HPos::Center, VPos::Center))
        .axis_desc_style(font_of(k, 14.0, INK, HPos::Center, VPos::Center))
        .light_line_style(TRANSPARENT)
        .bold_line_style(stroke(GRID, k, 1.0))
        .axis_style(stroke(INK, k, 1.0))
        .y_desc("KL divergence from BF16 (nats, log scale)")
        .x_desc("precision")
        .draw()?;
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    let style = font_of(k, 13.5, INK, HPos::Center, VPos::Top);
    for (i, (name, v)) in dist.iter().enumerate() {
        let x = xr.start + ((i as f64 + 0.5) / xs.len() as f64 * (xr.end - xr.start) as f64) as i32;
        text(
            root,
            &format!("{name} (n={})", v.len()),
            (x, yr.end + px(k, 7.0)),
            &style,
        )?;
    }
    let area = chart.plotting_area();
    for (i, (_, v)) in dist.iter().enumerate() {
        let x = i as f64;
        let mut s: Vec<f64> = v.iter().map(|x| x.max(floor)).collect();
        s.sort_by(f64::total_cmp);
        let (q1, med, q3) = (quantile(&s, 0.25), quantile(&s, 0.5), quantile(&s, 0.75));
        let (lo, hi) = (s[0], s[s.len() - 1]);
        let edge = stroke(DEEP, k, 1.5);
        area.draw(&PathElement::new(vec![(x, lo), (x, q1)], edge))?;
        area.draw(&PathElement::new(vec![(x, q3), (x, hi)], edge))?;
        for y in [lo, hi] {
            area.draw(&PathElement::new(vec![(x - 0.08, y), (x + 0.08, y)], edge))?;
        }
        area.draw(&Rectangle::new(
            [(x - 0.25, q1), (x + 0.25, q3)],
            SKY.mix(0.35).filled(),
        ))?;
        area.draw(&Rectangle::new([(x - 0.25, q1), (x + 0.25, q3)], edge))?;
        area.draw(&PathElement::new(
            vec![(x - 0.25, med), (x + 0.25, med)],
            stroke(DEEP, k, 3.0),
        ))?;
        if v.len() <= MAX_DOTS {
            for (j, y) in v.iter().enumerate() {
                // A fixed low-discrepancy jitter, so the same data draw the same picture.
                let dx = ((j as f64 * 0.618_034).fract() - 0.5) * 0.36;
                area.draw(&Circle::new(
                    (x + dx, y.max(floor)),
                    px(k, 2.5),
                    INK.mix(0.45).filled(),
                ))?;
            }
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        area.draw(&Cross::new(
            (x, mean.max(floor)),
            px(k, 6.0),
            stroke(VERMILION, k, 2.5),
        ))?;
    }
    Ok(())
}
