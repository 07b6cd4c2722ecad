//! Rendering: a pure function of the [`App`] state. The header, the footer and the help are
//! here; the screens are in `list`, `detail` and `summary`, the styles in `theme`.

use super::app::{App, Confirm, Prompt, Screen};
use super::theme::{self, ACCENT, clip};
use super::{detail, keymap, list, summary};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Gauge, Paragraph, Row, Scrollbar, ScrollbarOrientation,
    ScrollbarState, Table,
};

pub use super::theme::glyph;

/// Rows of the screen around a screen's body: the header (4) and the footer (1).
pub const CHROME: u16 = 5;

/// Draw the whole screen.
pub fn render(f: &mut Frame, app: &App) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(CHROME - 1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    render_header(f, app, header);
    match app.screen {
        Screen::List => list::render(f, app, body),
        Screen::Detail => detail::render(f, app, body),
        Screen::Summary => summary::render(f, app, body),
    }
    render_footer(f, app, footer);
    render_long_status(f, app, footer);
    if app.help {
        render_help(f, app);
    }
}

/// Lines a message longer than the footer may take, over the bottom of the screen's body,
/// until the next key.
const STATUS_LINES: usize = 4;

/// A message longer than the footer, wrapped at word boundaries into lines that end at the
/// footer, over the bottom of the body (nothing else moves, and the next key clears it).
fn render_long_status(f: &mut Frame, app: &App, footer: Rect) {
    let width = footer.width as usize;
    let plain = app.confirm.is_none() && matches!(app.prompt, Prompt::None);
    if !plain || app.status.chars().count() <= width {
        return;
    }
    let lines = wrapped(&app.status, width, STATUS_LINES);
    let n = (lines.len() as u16).min(footer.y + 1);
    let area = Rect::new(footer.x, footer.y + 1 - n, footer.width, n);
    let style = theme::styled(
        app.no_color,
        Style::default().add_modifier(Modifier::REVERSED),
    );
    let text: Vec<Line> = lines
        .into_iter()
        .map(|l| Line::from(format!("{l:<width$}")))
        .collect();
    f.render_widget(Clear, area);
    f.render_widget(Paragraph::new(text).style(style), area);
}

/// `s` wrapped greedily at spaces into lines of at most `width` characters (a word longer
/// than a line is cut), at most `max` lines, the last clipped with `…` when more is left.
fn wrapped(s: &str, width: usize, max: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in s.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let used = cur.chars().count();
            let need = if used == 0 {
                word.len()
            } else {
                used + 1 + word.len()
            };
            if need <= width {
                if used > 0 {
                    cur.push(' ');
                }
                cur.extend(word.iter());
                break;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut cur));
                continue;
            }
            let rest = word.split_off(width);
            lines.push(word.iter().collect());
            word = rest;
        }
    }
    lines.push(cur);
    if lines.len() > max.max(1) {
        let rest = lines.split_off(max.max(1) - 1).join(" ");
        let kept: String = rest.chars().take(width.saturating_sub(1)).collect();
        lines.push(format!("{}…", kept.trim_end()));
    }
    lines
}

/// The footer: a question, the prompt's line editor, a message, or the key hints that fit.
fn render_footer(f: &mut Frame, app: &App, area: Rect) {
    let width = area.width as usize;
    let style = theme::styled(
        app.no_color,
        Style::default().add_modifier(Modifier::REVERSED),
    );
    let text = match (&app.confirm, &app.prompt) {
        (Some(Confirm::Quit), _) => {
            let ask = "The run is still going. Quit and cancel it (finished parts are kept)? y / n";
            let more = " (Ctrl-C again: y)";
            if ask.chars().count() + more.chars().count() <= width {
                format!("{ask}{more}")
            } else {
                ask.into()
            }
        }
        (Some(Confirm::Overwrite(path, _)), _) => {
            format!("{} exists. Replace it? y / n", path.display())
        }
        (None, Prompt::Search(i) | Prompt::Export(i)) => {
            let label = if matches!(app.prompt, Prompt::Search(_)) {
                "search: "
            } else {
                "export CSV to: "
            };
            let keys = "  Enter ok · Esc cancel";
            let room = width
                .saturating_sub(label.len() + keys.chars().count())
                .max(8);
            let scroll = i.visual_scroll(room);
            let shown: String = i.value().chars().skip(scroll).take(room).collect();
            let x = label.len() + i.visual_cursor().saturating_sub(scroll);
            f.set_cursor_position(Position::new(area.x + x as u16, area.y));
            let keys = if label.len() + room + keys.chars().count() <= width {
                keys
            } else {
                ""
            };
            format!("{label}{shown:<room$}{keys}")
        }
        (None, Prompt::None) if !app.status.is_empty() => clip(&app.status, width),
        (None, Prompt::None) => keymap::footer(app, width),
    };
    f.render_widget(Paragraph::new(text).style(style), area);
}

/// "stereoscope · model · device · folder"; when that is too wide, without the device, then
/// with the model's file name only, then with the folder shortened from the left: the
/// folder stays in sight.
fn title(app: &App, width: usize) -> String {
    let folder = app.folder.display().to_string();
    let full = format!("stereoscope · {} · {} · {folder}", app.model, app.device);
    if full.chars().count() <= width {
        return full;
    }
    let short = short_model(&app.model);
    for model in [app.model.as_str(), short.as_str()] {
        let head = format!("stereoscope · {model} · ");
        let room = width.saturating_sub(head.chars().count());
        if folder.chars().count() <= room {
            return format!("{head}{folder}");
        }
    }
    let head = format!("stereoscope · {short} · ");
    let room = width.saturating_sub(head.chars().count());
    if room >= 12 {
        let tail: String = folder
            .chars()
            .skip(folder.chars().count() + 1 - room)
            .collect();
        return format!("{head}…{tail}");
    }
    clip(&format!("stereoscope · {short} · {folder}"), width)
}

/// A model named by a path, as its file name (with the rest of the title, " · scheme …").
fn short_model(model: &str) -> String {
    let (path, rest) = match model.find(" · ") {
        Some(i) => model.split_at(i),
        None => (model, ""),
    };
    let name = std::path::Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().to_string());
    format!("{name}{rest}")
}

fn run_gauge(f: &mut Frame, app: &App, area: Rect) {
    let Some(p) = &app.progress else {
        let complete = app.partial.is_none()
            && app
                .precisions
                .iter()
                .all(|p| app.views.iter().all(|v| v.cells.contains_key(p)));
        let msg = if app.views.is_empty() {
            "opened folder (no run here): no records yet".to_string()
        } else if complete {
            "opened folder (no run here): complete".to_string()
        } else {
            "opened folder (no run here): incomplete; rerun the study's command to resume"
                .to_string()
        };
        f.render_widget(Paragraph::new(clip(&msg, area.width as usize)), area);
        return;
    };
    let ratio = if p.total > 0 {
        p.done as f64 / p.total as f64
    } else {
        0.0
    };
    let eta = if p.records_per_s > 0.0 && p.running {
        let s = ((p.total - p.done.min(p.total)) as f64 / p.records_per_s) as u64;
        format!("ETA {}:{:02}  ", s / 60, s % 60)
    } else {
        String::new()
    };
    let state = if let Some(e) = &p.error {
        format!("stopped: {e} (r resumes)")
    } else if p.finished {
        "finished".into()
    } else if p.cancelling {
        "cancelling: the part in flight is dropped".into()
    } else if p.running {
        p.stage.clone()
    } else {
        "cancelled (r resumes)".into()
    };
    let label = format!(
        "{}/{} records  {:.1} rec/s  {eta}{state}",
        p.done, p.total, p.records_per_s
    );
    f.render_widget(
        Gauge::default()
            .ratio(ratio.clamp(0.0, 1.0))
            .label(clip(&label, area.width as usize))
            .gauge_style(theme::styled(app.no_color, Style::default().fg(ACCENT))),
        area,
    );
}

/// Per precision of the run: a small gauge of its records (or of the items on disk), or,
/// where the gauges do not fit in `width`, the percentages alone.
fn precision_progress<'a>(app: &App, width: usize) -> Line<'a> {
    let line = precision_line(app, true);
    if line.width() <= width {
        line
    } else {
        precision_line(app, false)
    }
}

fn precision_line<'a>(app: &App, bars: bool) -> Line<'a> {
    let mut spans = Vec::new();
    let from_run = app
        .progress
        .as_ref()
        .filter(|p| !p.per_precision.is_empty());
    for name in &app.precisions {
        let (total, done) =
            match from_run.and_then(|p| p.per_precision.iter().find(|e| &e.0 == name)) {
                Some(e) => (e.1, e.2),
                None => (
                    app.views.len() as u64,
                    app.views
                        .iter()
                        .filter(|v| v.cells.contains_key(name))
                        .count() as u64,
                ),
            };
        let r = if total > 0 {
            done as f64 / total as f64
        } else {
            0.0
        };
        let focus = name == app.focus_precision() && name != &app.precisions[0];
        let label = if focus {
            Span::styled(
                format!("{name}◆"),
                theme::styled(app.no_color, theme::bold()),
            )
        } else {
            Span::raw(format!("{name} "))
        };
        spans.push(label);
        if done == 0 {
            let word = if bars { "pending " } else { "0% " };
            spans.push(Span::styled(word, theme::dim(app.no_color)));
        } else if bars {
            spans.push(Span::styled(
                theme::bar(r, 5),
                theme::styled(app.no_color, Style::default().fg(ACCENT)),
            ));
            spans.push(Span::raw(format!("{:>4.0}% ", 100.0 * r)));
        } else if done >= total {
            spans.push(Span::raw("✓ "));
        } else {
            spans.push(Span::raw(format!("{:.0}% ", 100.0 * r)));
        }
    }
    Line::from(spans)
}

/// Shown items, the chosen precision, the order, marks, then the filters that are active;
/// where that does not fit in `width`, the same in short words.
fn filters_line(app: &App, width: usize) -> String {
    let long = filters_words(app);
    if long.chars().count() <= width {
        return long;
    }
    let sort = match app.sort {
        super::app::Sort::Id => "id",
        super::app::Sort::DeltaP => "ΔP",
        super::app::Sort::Kld => "KLD",
    };
    let mut parts = vec![
        format!("{}/{}", app.visible.len(), app.views.len()),
        format!(
            "{}{}",
            if app.transitions_only { "▲" } else { "at " },
            app.focus_precision()
        ),
        format!("{sort}{}", if app.reverse { "↑" } else { "↓" }),
        format!("{} marked", app.marked.len()),
    ];
    parts.extend(
        [&app.category, &app.polarity, &app.condition]
            .into_iter()
            .flatten()
            .cloned(),
    );
    clip(&parts.join(" · "), width)
}

fn filters_words(app: &App) -> String {
    let mut parts = vec![
        format!("{}/{} items", app.visible.len(), app.views.len()),
        format!(
            "{}at {}",
            if app.transitions_only {
                "▲ became biased "
            } else {
                ""
            },
            app.focus_precision()
        ),
        format!(
            "sort {} {}",
            app.sort.label(),
            if app.reverse { "↑" } else { "↓" }
        ),
        format!("{} marked", app.marked.len()),
    ];
    for (name, v) in [
        ("category", &app.category),
        ("polarity", &app.polarity),
        ("condition", &app.condition),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name} {v}"));
        }
    }
    parts.join(" · ")
}

fn render_header(f: &mut Frame, app: &App, area: Rect) {
    let [l1, l2, l_prec, l3] = Layout::vertical([Constraint::Length(1); 4]).areas(area);
    let width = area.width as usize;
    f.render_widget(
        Paragraph::new(title(app, width)).style(theme::styled(app.no_color, theme::bold())),
        l1,
    );
    run_gauge(f, app, l2);
    f.render_widget(Paragraph::new(precision_progress(app, width)), l_prec);
    f.render_widget(Paragraph::new(filters_line(app, width)), l3);
}

/// The help's lines on a terminal `width` columns wide: each key with its text, wrapped
/// under its text column where the overlay is narrow.
pub fn help_lines(width: u16) -> Vec<(String, String)> {
    let text_w = (HELP_W.min(width) as usize).saturating_sub(2 + 11);
    let mut out = Vec::new();
    for (k, h) in keymap::help_rows() {
        for (i, line) in detail::wrap(&h, text_w).into_iter().enumerate() {
            out.push((if i == 0 { k.clone() } else { String::new() }, line));
        }
    }
    out
}

/// The help overlay's widest width.
const HELP_W: u16 = 84;

/// How many lines of the help fit on a terminal `width` × `height`.
pub fn help_rows_shown(width: u16, height: u16) -> usize {
    help_lines(width)
        .len()
        .min(height.saturating_sub(2) as usize)
}

fn render_help(f: &mut Frame, app: &App) {
    let area = f.area();
    let rows = help_lines(area.width);
    let w = HELP_W.min(area.width);
    let h = (help_rows_shown(area.width, area.height) as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let inner = h.saturating_sub(2) as usize;
    let total = rows.len();
    let scroll = (app.help_scroll as usize).min(total.saturating_sub(inner));
    let title = if total > inner {
        let lines = format!(
            "{}-{} of {}",
            scroll + 1,
            (scroll + inner).min(total),
            total
        );
        [
            format!(" help lines {lines} · ↑↓ PgUp PgDn scroll · other keys close "),
            format!(" help {lines} · ↑↓ PgUp PgDn · other keys close "),
            format!(" help {lines} · ↑↓ scroll "),
        ]
        .into_iter()
        .find(|t| t.chars().count() + 2 <= w as usize)
        .unwrap_or_else(|| format!(" help {lines} "))
    } else {
        " keys (any key closes) ".to_string()
    };
    let table = Table::new(
        rows.into_iter()
            .skip(scroll)
            .map(|(k, h)| Row::new(vec![Cell::from(k), Cell::from(h)]))
            .collect::<Vec<_>>(),
        [Constraint::Length(10), Constraint::Min(10)],
    )
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title(Line::from(title)),
    )
    .style(theme::styled(app.no_color, Style::default()));
    f.render_widget(Clear, popup);
    f.render_widget(table, popup);
    if total > inner {
        let mut state = ScrollbarState::new(total - inner)
            .position(scroll)
            .viewport_content_length(inner);
        f.render_stateful_widget(
            Scrollbar::new(ScrollbarOrientation::VerticalRight)
                .begin_symbol(None)
                .end_symbol(None)
                .track_symbol(Some("│"))
                .thumb_symbol("█"),
            popup.inner(ratatui::layout::Margin::new(0, 1)),
            &mut state,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::wrapped;

    #[test]
    fn messages_wrap_at_spaces_cut_long_words_and_clip_the_last_line() {
        assert_eq!(wrapped("one two three", 7, 4), ["one two", "three"]);
        assert_eq!(wrapped("abcdefghij kl", 4, 4), ["abcd", "efgh", "ij", "kl"]);
        assert_eq!(wrapped("a b c d e f", 3, 2), ["a b", "c…"]);
        assert_eq!(wrapped("short", 80, 4), ["short"]);
    }
}
