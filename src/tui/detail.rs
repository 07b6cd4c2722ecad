//! The item detail: the item's text with each option's role as a word, then per precision of
//! the run the letter probabilities (the column headers map each letter to its role), every
//! seed's answer letter under its seed label, and the sampled texts, wrapped and scrollable.
//!
//! Where the terminal has room the parts sit one above the other (the split view): the
//! context keeps every line it can, the options fold onto fewer lines, and the sampled texts
//! give way first. Where even that does not fit, or after `Enter`, the detail is one
//! scrolling page that starts with the answers; its last line says where it is.

use super::app::App;
use super::theme::{self, bar, word};
use crate::bbq::Role;
use crate::store::view::ItemView;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

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

/// The line above the answers: the item's verdict.
fn verdict(v: &ItemView) -> String {
    match &v.transition_first {
        Some(p) => format!("▲ unbiased at bf16, biased from {p}"),
        None => "answers by precision: the letter each seed chose".to_string(),
    }
}

/// `line` with each role tag (`[biased]`, `[anti]`, …) in its role's style.
fn tagged<'a>(app: &App, line: &str) -> Line<'a> {
    let mut spans = Vec::new();
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']').map(|c| open + c) else {
            break;
        };
        let role = [Role::Biased, Role::Anti, Role::Unknown, Role::Invalid]
            .into_iter()
            .find(|r| word(*r) == &rest[open + 1..close]);
        let Some(role) = role else {
            spans.push(Span::raw(rest[..=close].to_string()));
            rest = &rest[close + 1..];
            continue;
        };
        spans.push(Span::raw(rest[..open].to_string()));
        spans.push(Span::styled(
            rest[open..=close].to_string(),
            theme::role_style(app.no_color, role).add_modifier(Modifier::REVERSED),
        ));
        rest = &rest[close + 1..];
    }
    spans.push(Span::raw(rest.to_string()));
    Line::from(spans)
}

/// The options with their roles: one per line (`compact`: as many per line as fit), each
/// wrapped to `width`.
fn option_lines<'a>(app: &App, v: &ItemView, width: usize, compact: bool) -> Vec<Line<'a>> {
    let it = &v.item;
    let options: Vec<String> = (0..3u8)
        .map(|k| {
            let correct = match (k == it.label, compact) {
                (false, _) => "",
                (true, false) => "  ✓ correct",
                (true, true) => " ✓",
            };
            format!(
                "{}) {} [{}]{correct}",
                (b'A' + k) as char,
                it.answers[k as usize],
                word(it.role_of(Some(k)))
            )
        })
        .collect();
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for o in options {
        let joined = current.chars().count() + 2 + o.chars().count();
        if compact && !current.is_empty() && joined <= width {
            current = format!("{current}  {o}");
            continue;
        }
        if !current.is_empty() {
            lines.push(std::mem::take(&mut current));
        }
        let mut parts = wrap(&o, width);
        current = parts.pop().unwrap_or_default();
        lines.extend(parts);
    }
    lines.push(current);
    lines.iter().map(|l| tagged(app, l)).collect()
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

/// The answers' columns, by the room they have: bars and numbers for the three letters, the
/// numbers alone, or the biased letter's probability alone (the seeds' letters always).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cols {
    Bars(usize),
    Numbers,
    Biased,
}

/// A cell of `text` padded to `w` columns and a space.
fn pad<'a>(text: String, w: usize, style: Style) -> Span<'a> {
    Span::styled(format!("{text:<w$} "), style)
}

/// Per precision of the run: a header, then the probabilities and the seeds' letters.
fn answers_lines<'a>(app: &App, v: &ItemView, width: usize) -> Vec<Line<'a>> {
    let it = &v.item;
    let labels = seed_labels(app, v);
    let seeds_head = format!("seeds {}", labels.join(" "));
    let long = |k: u8| format!("P({}) {}", (b'A' + k) as char, word(it.role_of(Some(k))));
    let short = |k: u8| format!("{} {}", (b'A' + k) as char, word(it.role_of(Some(k))));
    let bar_w = if width >= 120 { 10 } else { 4 };
    let pw = (bar_w + 5).max(12);
    let numbers_w: usize = (0..3).map(|k| short(k).chars().count().max(4) + 1).sum();
    let cols = if 6 + 3 * (pw + 1) + seeds_head.chars().count() <= width {
        Cols::Bars(bar_w)
    } else if 6 + numbers_w + seeds_head.chars().count() <= width {
        Cols::Numbers
    } else {
        Cols::Biased
    };
    let b = it.biased_index;
    let letters: Vec<u8> = match cols {
        Cols::Biased => vec![b],
        _ => vec![0, 1, 2],
    };
    let head_of = |k: u8| match cols {
        Cols::Bars(_) | Cols::Biased => long(k),
        Cols::Numbers => short(k),
    };
    let width_of = |k: u8| match cols {
        Cols::Bars(_) => pw,
        _ => head_of(k).chars().count().max(4),
    };
    let bold = theme::styled(app.no_color, theme::bold());
    let mut header = vec![pad("prec".into(), 5, bold)];
    for &k in &letters {
        header.push(pad(head_of(k), width_of(k), bold));
    }
    header.push(Span::styled(
        if cols == Cols::Biased {
            "seeds".to_string()
        } else {
            seeds_head
        },
        bold,
    ));
    let mut out = vec![Line::from(header)];
    for p in &app.precisions {
        let first = v.transition_first.as_deref() == Some(p.as_str());
        let mark = if first { "▲" } else { " " };
        let mut spans = vec![pad(format!("{mark}{p}"), 5, Style::default())];
        let Some(c) = v.cells.get(p) else {
            spans.push(Span::styled("pending", theme::dim(app.no_color)));
            out.push(Line::from(spans));
            continue;
        };
        for &k in &letters {
            let p = c.probs[k as usize];
            // The biased letter alone keeps a small bar: its header is wider than the number.
            let value = match cols {
                Cols::Bars(w) => format!("{} {p:.2}", bar(p, w)),
                Cols::Biased => format!("{} {p:.2}", bar(p, 4)),
                Cols::Numbers => format!("{p:.2}"),
            };
            let style = theme::role_style(app.no_color, it.role_of(Some(k)));
            spans.push(pad(value, width_of(k), style));
        }
        let blank = String::new();
        for (r, l) in c
            .seeds
            .iter()
            .zip(labels.iter().chain(std::iter::repeat(&blank)))
        {
            let letter = r.answer.map_or('?', |a| (b'A' + a) as char);
            let w = if cols == Cols::Biased {
                1
            } else {
                l.len().max(1)
            };
            spans.push(pad(
                letter.to_string(),
                w,
                theme::role_style(app.no_color, it.role_of(r.answer)),
            ));
        }
        let line = Line::from(spans);
        out.push(if first {
            line.style(Style::default().add_modifier(Modifier::REVERSED))
        } else {
            line
        });
    }
    out
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

/// The split view's rows: context and question lines kept, options folded or not, rows of
/// sampled texts (their title included; 0: none), and whether anything was left out.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Split {
    context: usize,
    question: usize,
    compact: bool,
    sampled: u16,
    cut: bool,
}

/// The rows of the answers part: its title, its header and a row per precision.
fn answers_height(app: &App) -> u16 {
    app.precisions.len() as u16 + 2
}

/// How the split view lays out in `area`; `None` where even the context's first line, the
/// question's, the folded options and the answers do not fit.
fn split(app: &App, v: &ItemView, area: Rect) -> Option<Split> {
    let width = area.width as usize;
    let context = wrap(&format!("Context: {}", v.item.context), width).len();
    let question = wrap(&format!("Question: {}", v.item.question), width).len();
    let folded = option_lines(app, v, width, true).len();
    let whole = option_lines(app, v, width, false).len();
    let base = 3 + folded as u16 + answers_height(app);
    let mut left = area.height.checked_sub(base)? as usize;
    let context_n = 1 + (context - 1).min(left);
    left -= context_n - 1;
    let question_n = 1 + (question - 1).min(left);
    left -= question_n - 1;
    let compact = whole - folded > left;
    if !compact {
        left -= whole - folded;
    }
    let sampled = if left >= 2 { left as u16 } else { 0 };
    let has_texts = !sampled_lines(app, v, width).is_empty();
    Some(Split {
        cut: context_n < context || question_n < question || (sampled == 0 && has_texts),
        context: context_n,
        question: question_n,
        compact,
        sampled,
    })
}

/// The split view's text part: title, context, question (cut with `…`) and options.
fn text_lines<'a>(app: &App, v: &ItemView, width: usize, s: &Split) -> Vec<Line<'a>> {
    let mut context = wrap(&format!("Context: {}", v.item.context), width);
    let mut question = wrap(&format!("Question: {}", v.item.question), width);
    cut(&mut context, s.context);
    cut(&mut question, s.question);
    let mut lines = vec![title(app, v)];
    lines.extend(context.into_iter().chain(question).map(Line::from));
    lines.extend(option_lines(app, v, width, s.compact));
    lines
}

/// The one-page view's lines: the answers first, then the item's whole text and the
/// sampled texts.
fn page_lines<'a>(app: &App, v: &ItemView, width: usize) -> Vec<Line<'a>> {
    let mut lines = answers_lines(app, v, width);
    let head: String = title(app, v)
        .spans
        .iter()
        .map(|s| s.content.as_ref())
        .collect();
    let bold = theme::styled(app.no_color, theme::bold());
    lines.extend(
        wrap(&head, width)
            .into_iter()
            .map(|l| Line::styled(l, bold)),
    );
    for t in [
        verdict(v),
        format!("Context: {}", v.item.context),
        format!("Question: {}", v.item.question),
    ] {
        lines.extend(wrap(&t, width).into_iter().map(Line::from));
    }
    lines.extend(option_lines(app, v, width, false));
    let texts = sampled_lines(app, v, width);
    if !texts.is_empty() {
        lines.push(Line::styled(
            "sampled texts",
            theme::styled(app.no_color, theme::bold()),
        ));
        lines.extend(texts);
    }
    lines
}

/// The body's area on the app's terminal.
fn body(app: &App) -> Rect {
    Rect::new(
        0,
        0,
        app.width,
        app.height.saturating_sub(super::view::CHROME),
    )
}

/// Whether the split view fits the terminal; where it does not, the detail is the one-page
/// view whatever `Enter` chose.
pub fn split_fits(app: &App) -> bool {
    app.current()
        .is_some_and(|v| split(app, v, body(app)).is_some())
}

/// Whether the detail shows the one-page view (chosen with `Enter`, or for want of room).
pub fn page_shown(app: &App) -> bool {
    app.detail_page || !split_fits(app)
}

/// The split view's layout on `area`, unless the one-page view is shown there.
fn split_of(app: &App, v: &ItemView, area: Rect) -> Option<Split> {
    if app.detail_page {
        return None;
    }
    split(app, v, area)
}

/// The lines that scroll and how many of them are shown at once.
fn scrolling(app: &App, v: &ItemView, area: Rect) -> (usize, usize) {
    let width = area.width as usize;
    match split_of(app, v, area) {
        Some(s) => (
            sampled_lines(app, v, width).len(),
            s.sampled.saturating_sub(1) as usize,
        ),
        None => (
            page_lines(app, v, width).len(),
            area.height.saturating_sub(1) as usize,
        ),
    }
}

/// The furthest the detail scrolls on the terminal: its scrolling lines less the rows shown.
pub fn max_scroll(app: &App) -> usize {
    let Some(v) = app.current() else { return 0 };
    let (lines, shown) = scrolling(app, v, body(app));
    lines.saturating_sub(shown)
}

/// How far PgUp/PgDn move the detail: the rows shown less one (one at least).
pub fn page_step(app: &App) -> usize {
    let Some(v) = app.current() else { return 1 };
    let (_, shown) = scrolling(app, v, body(app));
    shown.saturating_sub(1).max(1)
}

/// Draw the detail of the selected item.
pub fn render(f: &mut Frame, app: &App, area: Rect) {
    let Some(v) = app.current() else {
        f.render_widget(Paragraph::new("no item selected"), area);
        return;
    };
    match split_of(app, v, area) {
        Some(s) => render_split(f, app, v, area, &s),
        None => render_page(f, app, v, area),
    }
}

fn render_split(f: &mut Frame, app: &App, v: &ItemView, area: Rect, s: &Split) {
    let width = area.width as usize;
    let text = text_lines(app, v, width, s);
    let [top, mid, bottom] = Layout::vertical([
        Constraint::Length(text.len() as u16),
        Constraint::Length(answers_height(app)),
        Constraint::Min(0),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(text), top);
    let more = if s.cut { "· Enter: whole item " } else { "" };
    f.render_widget(
        Paragraph::new(answers_lines(app, v, width)).block(
            Block::default()
                .borders(Borders::TOP)
                .title(format!(" {} {more}", verdict(v))),
        ),
        mid,
    );
    if s.sampled == 0 {
        return;
    }
    let lines = sampled_lines(app, v, width);
    let inner = s.sampled.saturating_sub(1) as usize;
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

/// The one-page view: the lines from the scroll position, and a last line saying which are
/// shown, how to scroll and how to leave it.
fn render_page(f: &mut Frame, app: &App, v: &ItemView, area: Rect) {
    let width = area.width as usize;
    let lines = page_lines(app, v, width);
    let [page, foot] = Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
    let inner = page.height as usize;
    let scroll = (app.detail_scroll as usize).min(lines.len().saturating_sub(inner));
    let total = lines.len();
    f.render_widget(Paragraph::new(lines).scroll((scroll as u16, 0)), page);
    let leave = if split(app, v, area).is_some() {
        "Enter: split view".to_string()
    } else {
        format!("split view from {} rows", needed_rows(app, v, area))
    };
    let parts = [
        format!("{} {}", v.item.category, v.item.example_id),
        format!(
            "lines {}-{}/{total}",
            (scroll + 1).min(total),
            (scroll + inner).min(total)
        ),
        "PgUp/PgDn".to_string(),
        leave,
    ];
    let mut hint = String::new();
    for p in parts {
        let sep = if hint.is_empty() { "" } else { " · " };
        if hint.chars().count() + sep.chars().count() + p.chars().count() > width {
            break;
        }
        hint = format!("{hint}{sep}{p}");
    }
    f.render_widget(
        Paragraph::new(hint).style(theme::styled(
            app.no_color,
            Style::default().add_modifier(Modifier::REVERSED),
        )),
        foot,
    );
}

/// The terminal rows the split view needs at this width.
fn needed_rows(app: &App, v: &ItemView, area: Rect) -> u16 {
    let folded = option_lines(app, v, area.width as usize, true).len() as u16;
    3 + folded + answers_height(app) + super::view::CHROME
}
