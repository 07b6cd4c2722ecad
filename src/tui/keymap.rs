//! The one table of keys: it drives key handling, the help overlay, the footer hints and
//! the README's key table.

use super::app::{Action, App, Screen};
use super::detail;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// One binding.
pub struct Binding {
    /// How the key is written in help and README.
    pub keys: &'static str,
    pub codes: &'static [KeyCode],
    pub action: Action,
    pub help: &'static str,
    /// Screens where it applies (empty: all).
    pub screens: &'static [Screen],
    /// Its hint in the footer, key and word (empty: not shown there).
    pub hint: &'static str,
}

const LIST: &[Screen] = &[Screen::List];
const LIST_DETAIL: &[Screen] = &[Screen::List, Screen::Detail];
const ALL: &[Screen] = &[];
const DETAIL_SUMMARY: &[Screen] = &[Screen::Detail, Screen::Summary];

/// Every key of the explorer, in the order of the help (and README) table; the footer
/// shows the hints in this order too, `? help` first.
pub const KEYMAP: &[Binding] = &[
    Binding {
        keys: "?",
        codes: &[KeyCode::Char('?')],
        action: Action::Help,
        help: "this help (↑↓ PgUp PgDn g G scroll it, other keys close it)",
        screens: ALL,
        hint: "? help",
    },
    Binding {
        keys: "q",
        codes: &[KeyCode::Char('q')],
        action: Action::Quit,
        help: "back one screen; quit from the list (asks while a run goes on)",
        screens: LIST,
        hint: "q quit",
    },
    Binding {
        keys: "",
        codes: &[KeyCode::Char('q')],
        action: Action::Quit,
        help: "back to the list",
        screens: DETAIL_SUMMARY,
        hint: "q back",
    },
    Binding {
        keys: "Ctrl-C",
        codes: &[],
        action: Action::ForceQuit,
        help: "quit; during a run, asks first (y or Ctrl-C again quits)",
        screens: ALL,
        hint: "",
    },
    Binding {
        keys: "↑/k ↓/j",
        codes: &[KeyCode::Up, KeyCode::Char('k')],
        action: Action::Up,
        help: "previous / next item (on the summary: scroll)",
        screens: ALL,
        hint: "",
    },
    Binding {
        keys: "",
        codes: &[KeyCode::Down, KeyCode::Char('j')],
        action: Action::Down,
        help: "next item",
        screens: ALL,
        hint: "",
    },
    Binding {
        keys: "PgUp PgDn",
        codes: &[KeyCode::PageUp],
        action: Action::PageUp,
        help: "page up / down (in the detail: scroll the texts or the page)",
        screens: ALL,
        hint: "",
    },
    Binding {
        keys: "",
        codes: &[KeyCode::PageDown],
        action: Action::PageDown,
        help: "page down",
        screens: ALL,
        hint: "",
    },
    Binding {
        keys: "g G",
        codes: &[KeyCode::Home, KeyCode::Char('g')],
        action: Action::Top,
        help: "first / last item (on the summary: top / bottom)",
        screens: ALL,
        hint: "",
    },
    Binding {
        keys: "",
        codes: &[KeyCode::End, KeyCode::Char('G')],
        action: Action::Bottom,
        help: "last item",
        screens: ALL,
        hint: "",
    },
    Binding {
        keys: "Enter",
        codes: &[KeyCode::Enter],
        action: Action::Open,
        help: "item detail; a click selects a row; in the detail: one-page view",
        screens: LIST,
        hint: "Enter detail",
    },
    Binding {
        keys: "",
        codes: &[KeyCode::Enter],
        action: Action::Open,
        help: "whole item as one page, and back",
        screens: &[Screen::Detail],
        hint: "Enter page",
    },
    Binding {
        keys: "",
        codes: &[KeyCode::Enter],
        action: Action::Open,
        help: "back to the split view",
        screens: &[Screen::Detail],
        hint: "Enter split",
    },
    Binding {
        keys: "Esc",
        codes: &[KeyCode::Esc],
        action: Action::Back,
        help: "back to the list",
        screens: DETAIL_SUMMARY,
        hint: "",
    },
    Binding {
        keys: "s",
        codes: &[KeyCode::Char('s')],
        action: Action::Summary,
        help: "summary screen (follows the filters)",
        screens: ALL,
        hint: "s summary",
    },
    Binding {
        keys: "/",
        codes: &[KeyCode::Char('/')],
        action: Action::StartSearch,
        help: "search item text (matches highlighted)",
        screens: LIST,
        hint: "/ search",
    },
    Binding {
        keys: "n N",
        codes: &[KeyCode::Char('n')],
        action: Action::SearchNext,
        help: "next / previous match",
        screens: LIST,
        hint: "",
    },
    Binding {
        keys: "",
        codes: &[KeyCode::Char('N')],
        action: Action::SearchPrev,
        help: "previous match",
        screens: LIST,
        hint: "",
    },
    Binding {
        keys: "t",
        codes: &[KeyCode::Char('t')],
        action: Action::ToggleTransitions,
        help: "only items that became biased at the chosen precision",
        screens: LIST,
        hint: "t flagged",
    },
    Binding {
        keys: "[ ]",
        codes: &[KeyCode::Char('[')],
        action: Action::PrevPrecision,
        help: "previous / next precision of the run for t and sorting",
        screens: LIST,
        hint: "[ ] prec",
    },
    Binding {
        keys: "",
        codes: &[KeyCode::Char(']')],
        action: Action::NextPrecision,
        help: "next precision",
        screens: LIST,
        hint: "",
    },
    Binding {
        keys: "o",
        codes: &[KeyCode::Char('o')],
        action: Action::CycleSort,
        help: "sort by id, Δ P(biased) or KL divergence (largest first)",
        screens: LIST,
        hint: "o sort",
    },
    Binding {
        keys: "O",
        codes: &[KeyCode::Char('O')],
        action: Action::ReverseSort,
        help: "reverse the order",
        screens: LIST,
        hint: "",
    },
    Binding {
        keys: "c",
        codes: &[KeyCode::Char('c')],
        action: Action::CycleCategory,
        help: "filter by category",
        screens: LIST,
        hint: "c category",
    },
    Binding {
        keys: "p",
        codes: &[KeyCode::Char('p')],
        action: Action::CyclePolarity,
        help: "filter by polarity",
        screens: LIST,
        hint: "",
    },
    Binding {
        keys: "d",
        codes: &[KeyCode::Char('d')],
        action: Action::CycleCondition,
        help: "filter by context condition",
        screens: LIST,
        hint: "",
    },
    Binding {
        keys: "Space",
        codes: &[KeyCode::Char(' ')],
        action: Action::Mark,
        help: "mark or unmark the item",
        screens: LIST_DETAIL,
        hint: "Space mark",
    },
    Binding {
        keys: "e",
        codes: &[KeyCode::Char('e')],
        action: Action::StartExport,
        help: "export marked items (or the filtered list) to CSV",
        screens: LIST_DETAIL,
        hint: "e export",
    },
    Binding {
        keys: "y",
        codes: &[KeyCode::Char('y')],
        action: Action::CopyId,
        help: "copy the item id (OSC 52)",
        screens: LIST_DETAIL,
        hint: "",
    },
    Binding {
        keys: "x",
        codes: &[KeyCode::Char('x')],
        action: Action::CancelRun,
        help: "cancel the run (finished parts are kept)",
        screens: ALL,
        hint: "",
    },
    Binding {
        keys: "r",
        codes: &[KeyCode::Char('r')],
        action: Action::ResumeRun,
        help: "resume a cancelled run",
        screens: ALL,
        hint: "",
    },
];

/// The action for a key on `screen`.
pub fn lookup(screen: Screen, key: KeyEvent) -> Option<Action> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Some(Action::ForceQuit);
    }
    KEYMAP
        .iter()
        .find(|b| {
            b.codes.contains(&key.code) && (b.screens.is_empty() || b.screens.contains(&screen))
        })
        .map(|b| b.action.clone())
}

/// The rows of the help overlay: keys and what they do (continuation rows merged).
pub fn help_rows() -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = Vec::new();
    for b in KEYMAP {
        if b.keys.is_empty() {
            continue;
        }
        rows.push((b.keys.to_string(), b.help.to_string()));
    }
    rows
}

/// The footer hints that fit in `width` columns: whole hints only, in `hints_now`'s order
/// (`? help` first).
pub fn footer(app: &App, width: usize) -> String {
    let mut out = String::new();
    for hint in hints_now(app) {
        let sep = if out.is_empty() { "" } else { "  " };
        if out.chars().count() + sep.len() + hint.chars().count() > width {
            break;
        }
        out.push_str(sep);
        out.push_str(hint);
    }
    out
}

/// The hints of the app's screen that apply now: the detail's `Enter` names the view it
/// switches to, and has none where the split view does not fit (the page is all there is).
pub fn hints_now(app: &App) -> Vec<&'static str> {
    let (page, fits) = if app.screen == Screen::Detail {
        (detail::page_shown(app), detail::split_fits(app))
    } else {
        (false, true)
    };
    hints(app.screen)
        .into_iter()
        .filter(|h| match *h {
            "Enter page" => !page,
            "Enter split" => page && fits,
            _ => true,
        })
        .collect()
}

/// Every footer hint of `screen` (whatever the state).
pub fn hints(screen: Screen) -> Vec<&'static str> {
    KEYMAP
        .iter()
        .filter(|b| !b.hint.is_empty() && (b.screens.is_empty() || b.screens.contains(&screen)))
        .map(|b| b.hint)
        .collect()
}

/// The key table of README.md.
pub fn readme_table() -> String {
    let mut s = String::from("| key | action |\n| --- | --- |\n");
    for (k, h) in help_rows() {
        s.push_str(&format!("| `{k}` | {h} |\n"));
    }
    s
}
