//! The item list: one row per item with its seed-level evidence per precision of the run.
//!
//! A cell shows one glyph per seed (`B` biased, `a` anti, `u` unknown, `?` invalid), so the
//! any-of-seeds transition rule can be read from the strip: the cell where an item unbiased at
//! bf16 first had a biased seed is reversed and preceded by `▲`. Rows that the rule can never
//! flag (a biased seed, or no valid seed, at bf16) are dimmed and lose the role colours.

use super::app::{App, Sort};
use super::theme::{self, ACCENT, MATCH, clip, glyph};
use crate::bbq::Role;
use crate::store::view::{Cell as ViewCell, ItemView};
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Paragraph, Row, Scrollbar, ScrollbarOrientation, ScrollbarState, Table,
};

/// Seeds shown one glyph each up to this many; more are shown as counts.
const MAX_SEED_GLYPHS: usize = 8;

/// How wide the list's cells are for this data and which columns fit. The strip, the id and
/// the question are always shown; as the width shrinks the others are given up in this
/// order: `pol`, the category's width (10, then 6), `1st` (the strip's `▲` says the same),
/// then `category` and `P(b)`, then the sort value (the header still names the order).
struct Layout {
    /// Characters of a precision cell's seeds (without its leading marker).
    seeds: usize,
    /// Whether the seeds are shown one glyph each (else as `B2/9`).
    glyphs: bool,
    /// Whether the sort value is a column (the header names the order either way).
    show_sort: bool,
    show_pol: bool,
    /// The category column's width (0: not shown).
    category: u16,
    show_first: bool,
    show_spark: bool,
}

/// The question column's width below which columns are given up.
const MIN_QUESTION: usize = 12;

impl Layout {
    fn of(app: &App, width: u16) -> Layout {
        let most = app
            .views
            .iter()
            .flat_map(|v| v.cells.values().map(|c| c.seeds.len()))
            .max()
            .unwrap_or(5);
        let glyphs = most <= MAX_SEED_GLYPHS;
        let seeds = if glyphs { most.max(4) } else { 5 };
        let strip = (seeds + 1) * app.precisions.len();
        let spark = app.precisions.len().max(4) + 1;
        // Each column with the space after it: marker, strip, id; then the scrollbar.
        let base = 2 + (strip + 1) + 6 + 1;
        let question = |extra: usize| (width as usize).saturating_sub(base + extra);
        let fits = |extra: usize| question(extra) >= MIN_QUESTION;
        let show_sort = app.sort != Sort::Id && fits(7);
        let sort = if show_sort { 7 } else { 0 };
        let (mut show_first, mut show_spark) = (true, true);
        let mut extra = sort + spark + 5;
        let category: u16 = if fits(extra + 11) {
            10
        } else if fits(extra + 7) {
            6
        } else {
            if !fits(extra) {
                show_first = false;
                extra -= 5;
            }
            if !fits(extra) {
                show_spark = false;
                extra -= spark;
            }
            0
        };
        if category > 0 {
            extra += category as usize + 1;
        }
        let show_pol = question(extra + 7) >= 20;
        Layout {
            seeds,
            glyphs,
            show_sort,
            show_pol,
            category,
            show_first,
            show_spark,
        }
    }
}

/// Whether the transition rule can flag the item at all: unbiased at bf16.
fn eligible(app: &App, v: &ItemView) -> bool {
    let bf16 = app.precisions.first().and_then(|p| v.cells.get(p));
    bf16.is_none_or(|c| c.tally.unbiased())
}

/// A cell's seeds: one glyph per seed in seed order, or counts when there are many.
fn seed_spans<'a>(
    app: &App,
    c: &ViewCell,
    v: &ItemView,
    lay: &Layout,
    live: bool,
) -> Vec<Span<'a>> {
    let style_of = |role: Role| {
        if live {
            theme::role_style(app.no_color, role)
        } else {
            theme::dim(app.no_color)
        }
    };
    if !lay.glyphs {
        let text = format!("B{}/{}", c.tally.biased, c.seeds.len());
        let role = if c.tally.any_biased() {
            Role::Biased
        } else {
            Role::Unknown
        };
        return vec![Span::styled(
            format!("{text:<w$}", w = lay.seeds),
            style_of(role),
        )];
    }
    let mut spans: Vec<Span> = c
        .seeds
        .iter()
        .map(|r| {
            let role = v.item.role_of(r.answer);
            Span::styled(glyph(role).to_string(), style_of(role))
        })
        .collect();
    spans.push(Span::raw(
        " ".repeat(lay.seeds.saturating_sub(c.seeds.len())),
    ));
    spans
}

/// The precision strip of an item: a marker and the seeds for every precision of the run.
fn strip<'a>(app: &App, v: &ItemView, lay: &Layout, selected: bool) -> Line<'a> {
    let live = eligible(app, v);
    let mut spans = Vec::new();
    for p in &app.precisions {
        let first = v.transition_first.as_deref() == Some(p.as_str());
        match v.cells.get(p) {
            Some(c) if first => {
                // Reversed (un-reversed inside the selected row) and marked with ▲.
                let flip = |s: Style| {
                    if selected {
                        s.remove_modifier(Modifier::REVERSED)
                    } else {
                        s.add_modifier(Modifier::REVERSED)
                    }
                };
                spans.push(Span::styled(
                    "▲",
                    flip(theme::role_style(app.no_color, Role::Biased)),
                ));
                for s in seed_spans(app, c, v, lay, live) {
                    let st = flip(s.style);
                    spans.push(s.style(st));
                }
            }
            Some(c) => {
                spans.push(Span::raw(" "));
                spans.extend(seed_spans(app, c, v, lay, live));
            }
            None => spans.push(Span::styled(
                format!(" {:<w$}", "·".repeat(3), w = lay.seeds),
                theme::dim(app.no_color),
            )),
        }
    }
    Line::from(spans)
}

/// P(biased) at T = 1 across the run's precisions, one glyph each.
fn sparkline(app: &App, v: &ItemView) -> String {
    app.precisions
        .iter()
        .map(|p| v.cells.get(p).map_or(' ', |c| theme::spark(c.p_biased)))
        .collect()
}

/// `text` with the case-insensitive matches of `needle` highlighted.
fn highlighted<'a>(app: &App, text: &str, needle: &str) -> Line<'a> {
    let lower = text.to_lowercase();
    let needle = needle.to_lowercase();
    if needle.is_empty() || lower.len() != text.len() {
        return Line::from(text.to_string());
    }
    let hl = theme::styled(
        app.no_color,
        Style::default()
            .bg(MATCH)
            .fg(ratatui::style::Color::Black)
            .add_modifier(Modifier::UNDERLINED | Modifier::BOLD),
    );
    let mut spans = Vec::new();
    let mut at = 0;
    while let Some(i) = lower[at..].find(&needle) {
        let (s, e) = (at + i, at + i + needle.len());
        if !text.is_char_boundary(s) || !text.is_char_boundary(e) {
            break;
        }
        spans.push(Span::raw(text[at..s].to_string()));
        spans.push(Span::styled(text[s..e].to_string(), hl));
        at = e;
    }
    spans.push(Span::raw(text[at..].to_string()));
    Line::from(spans)
}

fn sort_value(app: &App, v: &ItemView) -> String {
    match (app.sort, app.sort_value(v)) {
        (_, None) => "-".into(),
        (Sort::DeltaP, Some(x)) => format!("{x:+.3}"),
        (_, Some(x)) => format!("{x:.4}"),
    }
}

fn row<'a>(app: &App, lay: &Layout, pos: usize, v: &'a ItemView) -> Row<'a> {
    let selected = pos == app.selected;
    let first = v
        .transition_first
        .as_ref()
        .map(|p| format!("▲{p}"))
        .unwrap_or_default();
    let it = &v.item;
    let mut cells = vec![
        Cell::from(if app.is_marked(v) { "●" } else { " " }),
        Cell::from(strip(app, v, lay, selected)),
    ];
    if lay.show_spark {
        cells.push(Cell::from(Span::styled(
            sparkline(app, v),
            theme::styled(app.no_color, Style::default().fg(ACCENT)),
        )));
    }
    if lay.show_first {
        cells.push(Cell::from(Span::styled(
            first,
            theme::role_style(app.no_color, Role::Biased),
        )));
    }
    if lay.show_sort {
        cells.push(Cell::from(sort_value(app, v)));
    }
    if lay.category > 0 {
        cells.push(Cell::from(clip(&it.category, lay.category as usize)));
    }
    cells.push(Cell::from(it.example_id.to_string()));
    if lay.show_pol {
        cells.push(Cell::from(it.question_polarity.clone()));
    }
    cells.push(Cell::from(highlighted(app, &it.question, &app.search)));
    let mut style = Style::default();
    if !eligible(app, v) {
        style = style.patch(theme::dim(app.no_color));
    }
    if selected {
        style = style.add_modifier(Modifier::REVERSED);
    }
    Row::new(cells).style(style)
}

fn header<'a>(app: &App, lay: &Layout) -> (Row<'a>, Vec<Constraint>) {
    let strip: String = app
        .precisions
        .iter()
        .map(|p| format!(" {p:<w$}", w = lay.seeds))
        .collect();
    let spark_w = app.precisions.len().max(4) as u16;
    let mut names = vec![String::new(), strip.clone()];
    let mut widths = vec![
        Constraint::Length(1),
        Constraint::Length(strip.chars().count() as u16),
    ];
    if lay.show_spark {
        names.push("P(b)".into());
        widths.push(Constraint::Length(spark_w));
    }
    if lay.show_first {
        names.push("1st".into());
        widths.push(Constraint::Length(4));
    }
    if lay.show_sort {
        names.push(format!(
            "{}{}",
            app.sort.column(),
            if app.reverse { "↑" } else { "↓" }
        ));
        widths.push(Constraint::Length(6));
    }
    if lay.category > 0 {
        names.push(if lay.category >= 8 { "category" } else { "cat" }.into());
        widths.push(Constraint::Length(lay.category));
    }
    names.push("id".into());
    widths.push(Constraint::Length(5));
    if lay.show_pol {
        names.push("pol".into());
        widths.push(Constraint::Length(6));
    }
    names.push("question".into());
    widths.push(Constraint::Fill(1));
    let row = Row::new(names).style(theme::styled(app.no_color, theme::bold()));
    (row, widths)
}

/// The list's title: what the glyphs mean (as much as fits) and the position.
fn titles<'a>(app: &App, width: u16) -> (Line<'a>, Line<'a>) {
    let long = " one glyph per seed: B biased  a anti  u unknown  ? invalid · ▲ reversed: first precision with a biased seed · dim: already biased at bf16 · P(b): P(biased) ";
    let short =
        " seeds: B biased a anti u unknown ? invalid · ▲ first biased · dim: biased at bf16 ";
    let tiny = " B biased a anti u unknown · ▲ first biased ";
    let narrow = " B biased a anti u unknown ▲1st ";
    let least = " B bias a anti u unk ▲1st ";
    let pos = if app.visible.is_empty() {
        " 0/0 ".to_string()
    } else {
        format!(" {}/{} ", app.selected + 1, app.visible.len())
    };
    let room = (width as usize).saturating_sub(pos.chars().count() + 2);
    let legend = [long, short, tiny, narrow, least]
        .into_iter()
        .find(|l| l.chars().count() <= room)
        .unwrap_or("");
    (Line::from(legend), Line::from(pos).right_aligned())
}

/// Draw the list.
pub fn render(f: &mut Frame, app: &App, area: Rect) {
    let (legend, pos) = titles(app, area.width);
    let block = Block::default()
        .borders(Borders::TOP | Borders::BOTTOM)
        .title(legend)
        .title(pos);
    if app.visible.is_empty() {
        let msg = if app.views.is_empty() {
            "no items yet: results appear as parts are written"
        } else if app.transitions_only {
            "no item became biased at this precision ([ ] another precision, t all items)"
        } else {
            "no item matches the filters"
        };
        f.render_widget(Paragraph::new(msg).block(block), area);
        return;
    }
    let lay = Layout::of(app, area.width);
    let height = area.height.saturating_sub(3) as usize;
    let start = app.list_start(height);
    let rows: Vec<Row> = app
        .visible
        .iter()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(pos, &i)| row(app, &lay, pos, &app.views[i]))
        .collect();
    let (head, widths) = header(app, &lay);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let table_area = Rect {
        width: inner.width.saturating_sub(1),
        ..inner
    };
    f.render_widget(Table::new(rows, widths).header(head), table_area);
    if app.visible.len() > height {
        let bar_area = Rect {
            x: inner.x + inner.width.saturating_sub(1),
            y: inner.y + 1,
            width: 1,
            height: inner.height.saturating_sub(1),
        };
        let mut state = ScrollbarState::new(app.visible.len().saturating_sub(height))
            .position(start)
            .viewport_content_length(height);
        f.render_stateful_widget(
            Scrollbar::new(ScrollbarOrientation::VerticalRight)
                .begin_symbol(None)
                .end_symbol(None)
                .track_symbol(Some("│"))
                .thumb_symbol("█"),
            bar_area,
            &mut state,
        );
    }
}
