//! Colours, glyphs and styles. Colour is never the only signal: every role has a glyph
//! (`B` biased, `a` anti, `u` unknown, `?` invalid) and a word, the first biased cell is
//! reversed and preceded by `▲`, and `NO_COLOR` keeps every modifier while dropping colour.

use crate::bbq::Role;
use ratatui::style::{Color, Modifier, Style};

/// Okabe–Ito colours, distinguishable with the common colour-vision deficiencies.
pub fn role_color(role: Role) -> Color {
    match role {
        Role::Biased => Color::Rgb(213, 94, 0),
        Role::Anti => Color::Rgb(0, 114, 178),
        Role::Unknown => Color::Rgb(0, 158, 115),
        Role::Invalid => Color::Rgb(150, 150, 150),
    }
}

/// Sky blue, for gauges and bars that are not a role.
pub const ACCENT: Color = Color::Rgb(86, 180, 233);
/// Yellow, behind search matches.
pub const MATCH: Color = Color::Rgb(240, 228, 66);

/// The glyph of a role in the item list.
pub fn glyph(role: Role) -> char {
    match role {
        Role::Biased => 'B',
        Role::Anti => 'a',
        Role::Unknown => 'u',
        Role::Invalid => '?',
    }
}

/// The word of a role in the detail view.
pub fn word(role: Role) -> &'static str {
    match role {
        Role::Biased => "biased",
        Role::Anti => "anti",
        Role::Unknown => "unknown",
        Role::Invalid => "invalid",
    }
}

/// `s`, or only its modifiers under `NO_COLOR`.
pub fn styled(no_color: bool, s: Style) -> Style {
    if no_color {
        let mut out = Style::default().add_modifier(s.add_modifier);
        out.sub_modifier = s.sub_modifier;
        out
    } else {
        s
    }
}

/// A role's colour; biased is bold too.
pub fn role_style(no_color: bool, role: Role) -> Style {
    let s = Style::default().fg(role_color(role));
    styled(
        no_color,
        if role == Role::Biased {
            s.add_modifier(Modifier::BOLD)
        } else {
            s
        },
    )
}

/// Bold text.
pub fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

/// Grey and dim: rows the transition rule can never flag, pending cells.
pub fn dim(no_color: bool) -> Style {
    styled(
        no_color,
        Style::default()
            .fg(role_color(Role::Invalid))
            .add_modifier(Modifier::DIM),
    )
}

/// A bar of `width` cells filled to `p` (0 to 1).
pub fn bar(p: f64, width: usize) -> String {
    let full = (p.clamp(0.0, 1.0) * width as f64).round() as usize;
    format!("{}{}", "█".repeat(full), "·".repeat(width - full))
}

/// One sparkline glyph for `p` (0 to 1).
pub fn spark(p: f64) -> char {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    LEVELS[((p.clamp(0.0, 1.0) * 7.0).round() as usize).min(7)]
}

/// A percentage with one decimal, or `-`.
pub fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", 100.0 * v))
        .unwrap_or_else(|| "-".into())
}

/// `s` cut to `width` characters, with `…` when cut.
pub fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}
