//! Rendering: a pure function of the [`App`] state. Colour is never the only signal: every
//! role has a glyph (B biased, a anti, u unknown, ? invalid), and `NO_COLOR` drops colour.

use super::app::{App, Prompt, Screen};
use super::keymap;
use crate::bbq::Role;
use crate::store::view::{ItemView, LADDER};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Gauge, Paragraph, Row, Table, Wrap};

/// Okabe–Ito colours, distinguishable with the common colour-vision deficiencies.
fn role_color(role: Role) -> Color {
    match role {
        Role::Biased => Color::Rgb(213, 94, 0),
        Role::Anti => Color::Rgb(0, 114, 178),
        Role::Unknown => Color::Rgb(0, 158, 115),
        Role::Invalid => Color::Rgb(150, 150, 150),
    }
}

/// The glyph of a role.
pub fn glyph(role: Role) -> char {
    match role {
        Role::Biased => 'B',
        Role::Anti => 'a',
        Role::Unknown => 'u',
        Role::Invalid => '?',
    }
}

fn style(app: &App, s: Style) -> Style {
    if app.no_color {
        Style::default().add_modifier(s.add_modifier)
    } else {
        s
    }
}

fn role_style(app: &App, role: Role) -> Style {
    let s = Style::default().fg(role_color(role));
    style(
        app,
        if role == Role::Biased {
            s.add_modifier(Modifier::BOLD)
        } else {
            s
        },
    )
}

/// Draw the whole screen.
pub fn render(f: &mut Frame, app: &App) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    render_header(f, app, header);
    match app.screen {
        Screen::List => render_list(f, app, body),
        Screen::Detail => render_detail(f, app, body),
        Screen::Summary => render_summary(f, app, body),
    }
    let foot = match &app.prompt {
        Prompt::Search(s) => format!("search: {s}▏  (Enter find, Esc cancel)"),
        Prompt::Export(s) => format!("export CSV to: {s}▏  (Enter write, Esc cancel)"),
        Prompt::None if !app.status.is_empty() => app.status.clone(),
        Prompt::None => keymap::footer(app.screen),
    };
    f.render_widget(
        Paragraph::new(foot).style(style(
            app,
            Style::default().add_modifier(Modifier::REVERSED),
        )),
        footer,
    );
    if app.help {
        render_help(f, app);
    }
}

fn render_header(f: &mut Frame, app: &App, area: Rect) {
    let [l1, l2, l_prec, l3] = Layout::vertical([Constraint::Length(1); 4]).areas(area);
    let title = format!(
        "stereoscope · {} · {} · {}",
        app.model,
        app.device,
        app.folder.display()
    );
    f.render_widget(
        Paragraph::new(title).style(style(app, Style::default().add_modifier(Modifier::BOLD))),
        l1,
    );
    match &app.progress {
        Some(p) => {
            let ratio = if p.total > 0 {
                p.done as f64 / p.total as f64
            } else {
                0.0
            };
            let eta = if p.records_per_s > 0.0 && p.running {
                let s = ((p.total - p.done.min(p.total)) as f64 / p.records_per_s) as u64;
                format!("ETA {}:{:02}", s / 60, s % 60)
            } else {
                String::new()
            };
            let state = if let Some(e) = &p.error {
                format!("stopped: {e}")
            } else if p.finished {
                "finished".into()
            } else if p.running {
                p.stage.clone()
            } else {
                "cancelled (r resumes)".into()
            };
            let label = format!(
                "{}/{} records  {:.1} rec/s  {eta}  {state}",
                p.done, p.total, p.records_per_s
            );
            f.render_widget(
                Gauge::default()
                    .ratio(ratio.clamp(0.0, 1.0))
                    .label(label)
                    .gauge_style(style(app, Style::default().fg(Color::Rgb(86, 180, 233)))),
                l2,
            );
        }
        None => f.render_widget(Paragraph::new("opened folder (no run in progress)"), l2),
    }
    // Per-precision progress: a small gauge per precision, or what is on disk when opened.
    let mut spans = Vec::new();
    let per: Vec<(String, u64, u64)> = match &app.progress {
        Some(p) if !p.per_precision.is_empty() => p.per_precision.clone(),
        _ => LADDER
            .iter()
            .map(|p| {
                let n = app
                    .views
                    .iter()
                    .filter(|v| v.cells.contains_key(*p))
                    .count() as u64;
                (p.to_string(), app.views.len() as u64, n)
            })
            .collect(),
    };
    for (name, total, done) in per {
        let r = if total > 0 {
            done as f64 / total as f64
        } else {
            0.0
        };
        spans.push(Span::raw(format!("{name} ")));
        spans.push(Span::styled(
            bar(r, 6),
            style(app, Style::default().fg(Color::Rgb(86, 180, 233))),
        ));
        spans.push(Span::raw(format!(" {:>3.0}%  ", 100.0 * r)));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), l_prec);
    let filters = format!(
        "{} items shown of {} · category {} · polarity {} · condition {} · {}at {} · sort {} · {} marked",
        app.visible.len(),
        app.views.len(),
        app.category.as_deref().unwrap_or("all"),
        app.polarity.as_deref().unwrap_or("all"),
        app.condition.as_deref().unwrap_or("all"),
        if app.transitions_only {
            "▲ became biased "
        } else {
            ""
        },
        app.focus_precision(),
        app.sort.label(),
        app.marked.len()
    );
    f.render_widget(Paragraph::new(filters), l3);
}

/// The five-cell precision strip of an item: majority role glyph and its seed count.
fn strip<'a>(app: &App, v: &ItemView) -> Vec<Span<'a>> {
    let mut spans = Vec::new();
    for p in LADDER {
        match v.cells.get(p) {
            Some(c) => {
                let s = format!("{}{} ", glyph(c.majority), c.majority_count);
                let mut st = role_style(app, c.majority);
                if v.transition_first.as_deref() == Some(p) {
                    st = st.add_modifier(Modifier::UNDERLINED);
                }
                spans.push(Span::styled(s, st));
            }
            None => spans.push(Span::raw("·  ")),
        }
    }
    spans
}

fn render_list(f: &mut Frame, app: &App, area: Rect) {
    let height = area.height.saturating_sub(2) as usize;
    let start = app.selected.saturating_sub(height.saturating_sub(1));
    let rows: Vec<Row> = app
        .visible
        .iter()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(pos, &i)| {
            let v = &app.views[i];
            let marked = app
                .marked
                .contains(&(v.item.category.clone(), v.item.example_id));
            let trans = v
                .transition_first
                .as_ref()
                .map(|p| format!("▲{p}"))
                .unwrap_or_default();
            let row = Row::new(vec![
                Cell::from(if marked { "●" } else { " " }),
                Cell::from(Line::from(strip(app, v))),
                Cell::from(Span::styled(trans, role_style(app, Role::Biased))),
                Cell::from(v.item.category.clone()),
                Cell::from(v.item.example_id.to_string()),
                Cell::from(v.item.question_polarity.clone()),
                Cell::from(v.item.question.clone()),
            ]);
            if pos == app.selected {
                row.style(Style::default().add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        })
        .collect();
    let header = Row::new(vec![
        "",
        "bf16 q8 q6 q4 q3",
        "became",
        "category",
        "id",
        "pol",
        "question",
    ])
    .style(style(app, Style::default().add_modifier(Modifier::BOLD)));
    let widths = [
        Constraint::Length(1),
        Constraint::Length(16),
        Constraint::Length(6),
        Constraint::Length(18),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Min(10),
    ];
    let table = Table::new(rows, widths).header(header).block(Block::default().borders(Borders::TOP | Borders::BOTTOM).title(
        " items · B biased  a anti  u unknown  ? invalid (majority of seeds, with count) · ▲ first precision that turned biased ",
    ));
    if app.visible.is_empty() {
        let msg = if app.views.is_empty() {
            "no items yet: results appear as parts are written"
        } else {
            "no item matches the filters"
        };
        f.render_widget(
            Paragraph::new(msg).block(Block::default().borders(Borders::TOP | Borders::BOTTOM)),
            area,
        );
    } else {
        f.render_widget(table, area);
    }
}

fn bar(p: f64, width: usize) -> String {
    let full = (p.clamp(0.0, 1.0) * width as f64).round() as usize;
    format!("{}{}", "█".repeat(full), "·".repeat(width - full))
}

fn render_detail(f: &mut Frame, app: &App, area: Rect) {
    let Some(v) = app.current() else {
        f.render_widget(Paragraph::new("no item selected"), area);
        return;
    };
    let it = &v.item;
    let mut lines = vec![
        Line::from(Span::styled(
            format!(
                "{} {} · {} · {}",
                it.category, it.example_id, it.context_condition, it.question_polarity
            ),
            style(app, Style::default().add_modifier(Modifier::BOLD)),
        )),
        Line::from(format!("Context: {}", it.context)),
        Line::from(format!("Question: {}", it.question)),
    ];
    for k in 0..3u8 {
        let role = it.role_of(Some(k));
        let correct = if k == it.label { "  ✓ correct" } else { "" };
        lines.push(Line::from(vec![
            Span::raw(format!(
                "{}) {} ",
                (b'A' + k) as char,
                it.answers[k as usize]
            )),
            Span::styled(
                format!("[{} {}]", glyph(role), role.as_str()),
                role_style(app, role),
            ),
            Span::raw(correct),
        ]));
    }
    let text_height = (lines.len() as u16 + 3).min(area.height / 2);
    let [top, bottom] =
        Layout::vertical([Constraint::Length(text_height), Constraint::Min(3)]).areas(area);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::default().borders(Borders::BOTTOM)),
        top,
    );
    let bar_w = if area.width >= 120 { 10 } else { 4 };
    let rows: Vec<Row> = LADDER
        .iter()
        .filter_map(|p| v.cells.get(*p).map(|c| (p, c)))
        .map(|(p, c)| {
            let first = v.transition_first.as_deref() == Some(*p);
            let answers: Vec<Span> = c
                .seeds
                .iter()
                .map(|r| {
                    let role = it.role_of(r.answer);
                    Span::styled(format!("{} ", glyph(role)), role_style(app, role))
                })
                .collect();
            let sample = c
                .seeds
                .iter()
                .map(|r| r.sampled_text.trim().replace('\n', "⏎"))
                .collect::<Vec<_>>()
                .join(" | ");
            let mut cells = vec![Cell::from(format!(
                "{}{}",
                if first { "▲" } else { " " },
                p
            ))];
            for k in 0..3 {
                cells.push(Cell::from(Span::styled(
                    format!("{} {:.2}", bar(c.probs[k], bar_w), c.probs[k]),
                    role_style(app, it.role_of(Some(k as u8))),
                )));
            }
            cells.push(Cell::from(Line::from(answers)));
            cells.push(Cell::from(sample));
            let row = Row::new(cells);
            if first {
                row.style(style(
                    app,
                    Style::default()
                        .add_modifier(Modifier::BOLD)
                        .fg(role_color(Role::Biased)),
                ))
            } else {
                row
            }
        })
        .collect();
    let pw = bar_w as u16 + 5;
    let widths = [
        Constraint::Length(5),
        Constraint::Length(pw),
        Constraint::Length(pw),
        Constraint::Length(pw),
        Constraint::Length(10),
        Constraint::Min(10),
    ];
    let header = Row::new(vec![
        "prec",
        "P(A)",
        "P(B)",
        "P(C)",
        "seeds",
        "sampled text",
    ])
    .style(style(app, Style::default().add_modifier(Modifier::BOLD)));
    let title = match &v.transition_first {
        Some(p) => format!(" ▲ unbiased at bf16, biased from {p} "),
        None => " answers by precision ".to_string(),
    };
    f.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::default().title(title)),
        bottom,
    );
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", 100.0 * v))
        .unwrap_or_else(|| "-".into())
}

fn render_summary(f: &mut Frame, app: &App, area: Rect) {
    let Some(rep) = &app.report else {
        f.render_widget(Paragraph::new("no records yet"), area);
        return;
    };
    let mut lines = vec![Line::from(Span::styled(
        "Stereotype rate (SRS = biased / valid) by precision, with 95% Wilson intervals",
        style(app, Style::default().add_modifier(Modifier::BOLD)),
    ))];
    let mut cats: Vec<String> = Vec::new();
    for r in &rep.rows {
        if !cats.contains(&r.category) {
            cats.push(r.category.clone());
        }
    }
    let wide = area.width >= 120;
    for cat in &cats {
        let mut spans = vec![Span::raw(format!("{cat:<20}"))];
        for p in LADDER {
            if let Some(r) = rep
                .rows
                .iter()
                .find(|r| &r.category == cat && r.precision == p)
            {
                let srs = r.srs.unwrap_or(0.0);
                let chart = bar(srs, if wide { 12 } else { 5 });
                let ci = if wide {
                    format!(" [{}–{}]", pct(r.srs_ci_low), pct(r.srs_ci_high))
                } else {
                    String::new()
                };
                spans.push(Span::raw(format!("{p} ")));
                spans.push(Span::styled(chart, role_style(app, Role::Biased)));
                spans.push(Span::raw(format!(" {}{ci}  ", pct(r.srs))));
            }
        }
        lines.push(Line::from(spans));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "Items unbiased at bf16 that became biased (study's rule) · expected from probabilities · noise floor",
        style(app, Style::default().add_modifier(Modifier::BOLD)),
    )));
    for t in &rep.transitions {
        let line = match (t.became_biased, t.unbiased_at_bf16) {
            (Some(b), Some(u)) => format!(
                "{:<5} {:>6} ({b}/{u})  expected {:>6}  noise floor {:>6}{}  mean KLD {}  flips {}{}  study {}",
                t.precision,
                pct(t.rate),
                pct(t.expected_rate),
                pct(t.noise_floor),
                t.measured_noise_floor
                    .map(|m| format!(" (measured {})", pct(Some(m))))
                    .unwrap_or_default(),
                t.mean_kld
                    .map(|k| format!("{k:.4}"))
                    .unwrap_or_else(|| "-".into()),
                pct(t.flip_rate),
                t.continued_share
                    .filter(|c| *c > 0.0)
                    .map(|c| format!("  continued {}", pct(Some(c))))
                    .unwrap_or_default(),
                crate::analysis::report::study_range(&t.precision),
            ),
            _ => format!("{:<5} {}", t.precision, t.note.clone().unwrap_or_default()),
        };
        lines.push(Line::from(line));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(
        "A rate at or below the noise floor is what re-sampling the BF16 model alone would show. `continued`: answers read from text after a first token that was not a letter, which the expected rate and noise floor do not model.",
    ));
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
}

fn render_help(f: &mut Frame, app: &App) {
    let rows = keymap::help_rows();
    let area = f.area();
    let h = (rows.len() as u16 + 2).min(area.height);
    let w = 72.min(area.width);
    let popup = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let table = Table::new(
        rows.into_iter()
            .map(|(k, h)| Row::new(vec![Cell::from(k), Cell::from(h)]))
            .collect::<Vec<_>>(),
        [Constraint::Length(10), Constraint::Min(10)],
    )
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title(" keys (any key closes) "),
    )
    .style(style(app, Style::default()));
    f.render_widget(Clear, popup);
    f.render_widget(table, popup);
}
