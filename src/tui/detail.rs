//! The item detail: the item's text with each option's role as a word, then per precision of
//! the run the letter probabilities (the column headers map each letter to its role), every
//! seed's answer letter under its seed label, and the sampled texts, wrapped and scrollable.

use super::app::App;
use super::theme::{self, bar, word};
use crate::store::view::ItemView;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};

/// `text` broken into lines of at most `width` characters, at spaces where possible.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(8);
    let mut out = Vec::new();
    let mut line = String::new();
    for w in text.split(' ') {
        let mut w = w.to_string();
        let len = line.chars().count();
        if len > 0 && len + 1 + w.chars().count() > width {
            out.push(std::mem::take(&mut line));
        }
        while w.chars().count() > width {
            let head: String = w.chars().take(width).collect();
            w = w.chars().skip(width).collect();
            if !line.is_empty() {
                out.push(std::mem::take(&mut line));
            }
            out.push(head);
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&w);
    }
    out.push(line);
    out
}

/// The header: item, position in the list and mark.
fn title<'a>(app: &App, v: &ItemView) -> Line<'a> {
    let it = &v.item;
    let mark = if app.is_marked(v) {
        " · ● marked"
    } else {
        " · not marked"
    };
    Line::from(vec![
        Span::styled(
            format!(
                "{} {} · {} · {}",
                it.category, it.example_id, it.context_condition, it.question_polarity
            ),
            theme::styled(app.no_color, theme::bold()),
        ),
        Span::raw(format!(
            " · item {}/{}{mark}",
            app.selected + 1,
            app.visible.len()
        )),
    ])
}

/// Context, question and options with their roles, wrapped to `width`.
/// In at most `max` lines the title and the options are kept whole; the context, then the
/// question, are cut (ending in `…`) to make room.
fn text_lines<'a>(app: &App, v: &ItemView, width: usize, max: usize) -> Vec<Line<'a>> {
    let it = &v.item;
    let mut lines = vec![title(app, v)];
    let mut context = wrap(&format!("Context: {}", it.context), width);
    let mut question = wrap(&format!("Question: {}", it.question), width);
    let room = max.saturating_sub(1 + 3);
    // The question keeps what it needs but one line for the context (one line at least).
    let keep_q = question.len().min(room.saturating_sub(1).max(1));
    cut(&mut question, keep_q);
    cut(&mut context, room.saturating_sub(keep_q));
    lines.extend(context.into_iter().chain(question).map(Line::from));
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
                format!("[{}]", word(role)),
                theme::role_style(app.no_color, role).add_modifier(Modifier::REVERSED),
            ),
            Span::raw(correct),
        ]));
    }
    lines
}

/// `lines` cut to `n`, the last kept line ending in `…` when any was dropped.
fn cut(lines: &mut Vec<String>, n: usize) {
    if lines.len() <= n {
        return;
    }
    lines.truncate(n);
    if let Some(last) = lines.last_mut() {
        let keep = last.chars().count().saturating_sub(1);
        *last = format!("{}…", last.chars().take(keep).collect::<String>());
    }
}

/// The seeds' labels (42, 123, …) in seed order, from the first precision that has them.
fn seed_labels(app: &App, v: &ItemView) -> Vec<String> {
    app.precisions
        .iter()
        .find_map(|p| v.cells.get(p))
        .map(|c| c.seeds.iter().map(|r| r.seed.to_string()).collect())
        .unwrap_or_default()
}

/// Per precision: probabilities, the seeds' letters under their labels.
fn answers_table<'a>(app: &App, v: &ItemView, width: u16) -> Table<'a> {
    let it = &v.item;
    let bar_w = if width >= 120 { 10 } else { 4 };
    let labels = seed_labels(app, v);
    let rows: Vec<Row> = app
        .precisions
        .iter()
        .map(|p| {
            let first = v.transition_first.as_deref() == Some(p.as_str());
            let mark = if first { "▲" } else { " " };
            let Some(c) = v.cells.get(p) else {
                return Row::new(vec![
                    Cell::from(format!("{mark}{p}")),
                    Cell::from(Span::styled("pending", theme::dim(app.no_color))),
                ]);
            };
            let mut cells = vec![Cell::from(format!("{mark}{p}"))];
            for k in 0..3 {
                cells.push(Cell::from(Span::styled(
                    format!("{} {:.2}", bar(c.probs[k], bar_w), c.probs[k]),
                    theme::role_style(app.no_color, it.role_of(Some(k as u8))),
                )));
            }
            let seeds: Vec<Span> = c
                .seeds
                .iter()
                .zip(labels.iter().chain(std::iter::repeat(&String::new())))
                .map(|(r, l)| {
                    let role = it.role_of(r.answer);
                    let letter = r.answer.map_or('?', |a| (b'A' + a) as char);
                    Span::styled(
                        format!("{letter:<w$} ", w = l.len().max(1)),
                        theme::role_style(app.no_color, role),
                    )
                })
                .collect();
            cells.push(Cell::from(Line::from(seeds)));
            let row = Row::new(cells);
            if first {
                row.style(Style::default().add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        })
        .collect();
    let head = |k: u8| format!("P({}) {}", (b'A' + k) as char, word(it.role_of(Some(k))));
    let pw = (bar_w as u16 + 5).max(12);
    let seeds_head = format!("seeds {}", labels.join(" "));
    let widths = [
        Constraint::Length(5),
        Constraint::Length(pw),
        Constraint::Length(pw),
        Constraint::Length(pw),
        Constraint::Min(10),
    ];
    let header = Row::new(vec![
        "prec".to_string(),
        head(0),
        head(1),
        head(2),
        seeds_head,
    ])
    .style(theme::styled(app.no_color, theme::bold()));
    let title = match &v.transition_first {
        Some(p) => format!(" ▲ unbiased at bf16, biased from {p} "),
        None => " answers by precision: the letter each seed chose ".to_string(),
    };
    Table::new(rows, widths)
        .header(header)
        .block(Block::default().borders(Borders::TOP).title(title))
}

/// The sampled texts, one line per seed, wrapped to `width`.
fn sampled_lines<'a>(app: &App, v: &ItemView, width: usize) -> Vec<Line<'a>> {
    let mut out = Vec::new();
    for p in &app.precisions {
        let Some(c) = v.cells.get(p) else { continue };
        for r in &c.seeds {
            let role = v.item.role_of(r.answer);
            let text = r.sampled_text.trim().replace('\n', "⏎");
            let head = format!("{p:<4} {:>5} ", r.seed);
            for (i, l) in wrap(&text, width.saturating_sub(head.len() + 10))
                .into_iter()
                .enumerate()
            {
                let lead = if i == 0 {
                    head.clone()
                } else {
                    " ".repeat(head.len())
                };
                let tag = if i == 0 {
                    format!("{:<8}", word(role))
                } else {
                    " ".repeat(8)
                };
                out.push(Line::from(vec![
                    Span::raw(lead),
                    Span::styled(tag, theme::role_style(app.no_color, role)),
                    Span::raw(format!(" {l}")),
                ]));
            }
        }
    }
    out
}

/// The detail's three parts in `area`: the item's text, the answers table, the sampled texts.
fn areas(app: &App, v: &ItemView, area: Rect) -> ([Rect; 3], Vec<Line<'static>>) {
    let width = area.width as usize;
    let table_h = app.precisions.len() as u16 + 2;
    let full = text_lines(app, v, width, usize::MAX).len() as u16;
    let text_h = full.min(area.height.saturating_sub(table_h + 3) / 2 + 3);
    let text = text_lines(app, v, width, text_h as usize);
    let parts = Layout::vertical([
        Constraint::Length(text_h),
        Constraint::Length(table_h),
        Constraint::Min(2),
    ])
    .areas(area);
    (parts, text)
}

/// The furthest the sampled texts scroll on the terminal: their lines less the rows shown.
pub fn max_scroll(app: &App) -> usize {
    let Some(v) = app.current() else { return 0 };
    let area = Rect::new(
        0,
        0,
        app.width,
        app.height.saturating_sub(super::view::CHROME),
    );
    let ([_, _, bottom], _) = areas(app, v, area);
    let shown = bottom.height.saturating_sub(1) as usize;
    sampled_lines(app, v, app.width as usize)
        .len()
        .saturating_sub(shown)
}

/// Draw the detail of the selected item.
pub fn render(f: &mut Frame, app: &App, area: Rect) {
    let Some(v) = app.current() else {
        f.render_widget(Paragraph::new("no item selected"), area);
        return;
    };
    let ([top, mid, bottom], text) = areas(app, v, area);
    f.render_widget(Paragraph::new(text), top);
    f.render_widget(answers_table(app, v, area.width), mid);
    let lines = sampled_lines(app, v, area.width as usize);
    let inner = bottom.height.saturating_sub(1) as usize;
    let scroll = (app.detail_scroll as usize).min(lines.len().saturating_sub(inner));
    let shown = format!(
        " sampled texts {}-{} of {} (PgUp/PgDn) ",
        (scroll + 1).min(lines.len()),
        (scroll + inner).min(lines.len()),
        lines.len()
    );
    f.render_widget(
        Paragraph::new(lines)
            .scroll((scroll as u16, 0))
            .block(Block::default().borders(Borders::TOP).title(shown)),
        bottom,
    );
}
