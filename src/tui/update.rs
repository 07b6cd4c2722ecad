//! The one place the explorer's state changes: [`update`] takes an action and returns the
//! effects for the runner. Reloads are coalesced: at most one in flight, one more queued.

use super::app::{
    Action, App, Confirm, Effect, LIST_CHROME, LIST_TOP, Loaded, Progress, Prompt, RunEnd,
};
use super::app::{Screen, Sort};
use super::{detail, summary, view};
use std::collections::BTreeSet;
use std::path::PathBuf;
use tui_input::{Input, InputRequest};

/// The one place state changes.
pub fn update(app: &mut App, action: Action) -> Vec<Effect> {
    if action.is_background() {
        return background(app, action);
    }
    // A message answers the key before this one; a new key makes it stale.
    app.status.clear();
    if app.confirm.is_some() {
        return confirm(app, action);
    }
    if app.prompt.is_open() {
        return prompt(app, action);
    }
    if app.help {
        return help(app, action);
    }
    navigate(app, action)
}

/// The help overlay: ↑/↓, PgUp/PgDn and g/G scroll it (when it is taller than the
/// terminal), any other key closes it.
fn help(app: &mut App, action: Action) -> Vec<Effect> {
    match action {
        Action::Up
        | Action::Down
        | Action::PageUp
        | Action::PageDown
        | Action::Top
        | Action::Bottom => {
            let shown = view::help_rows_shown(app.width, app.height);
            // The last offset that still fills the overlay, as a length for `scrolled`.
            let len = view::help_lines(app.width).len().saturating_sub(shown) + 1;
            app.help_scroll = scrolled(app.help_scroll, &action, shown, len);
        }
        _ => {
            app.help = false;
            app.help_scroll = 0;
        }
    }
    vec![]
}

/// The answer to a yes/no question.
fn confirm(app: &mut App, action: Action) -> Vec<Effect> {
    let yes = matches!(action, Action::Confirm(true));
    match app.confirm.take() {
        Some(Confirm::Quit) if yes => {
            app.quit = true;
            vec![Effect::Quit]
        }
        Some(Confirm::Overwrite(path, items)) if yes => vec![Effect::Export {
            path,
            items,
            overwrite: true,
        }],
        Some(Confirm::Overwrite(..)) => {
            app.status = "export cancelled: the file was left as it was".into();
            vec![]
        }
        _ => vec![],
    }
}

/// Keys while a prompt is open: a line editor, Enter submits, Esc cancels.
fn prompt(app: &mut App, action: Action) -> Vec<Effect> {
    let req = match action {
        Action::Edit(r) => Some(r),
        Action::Char(c) => Some(InputRequest::InsertChar(c)),
        Action::Backspace => Some(InputRequest::DeletePrevChar),
        _ => None,
    };
    if let Some(req) = req {
        if let Prompt::Search(i) | Prompt::Export(i) = &mut app.prompt {
            i.handle(req);
        }
        return vec![];
    }
    match action {
        Action::Escape => app.prompt = Prompt::None,
        Action::Submit => match std::mem::replace(&mut app.prompt, Prompt::None) {
            Prompt::Search(s) => {
                app.search = s.value().to_string();
                app.rematch();
                // The selected item counts when it matches.
                app.find_from(app.selected);
            }
            Prompt::Export(path) if !path.value().trim().is_empty() => {
                return vec![Effect::Export {
                    path: PathBuf::from(path.value().trim()),
                    items: app.export_targets(),
                    overwrite: false,
                }];
            }
            _ => {}
        },
        _ => {}
    }
    vec![]
}

/// Keys on a screen.
fn navigate(app: &mut App, action: Action) -> Vec<Effect> {
    match (app.screen, &action) {
        (Screen::Summary, Action::Up | Action::Down | Action::PageUp | Action::PageDown)
        | (Screen::Summary, Action::Top | Action::Bottom) => {
            let len = summary::max_scroll(app) + 1;
            app.summary_scroll = scrolled(app.summary_scroll, &action, app.page, len);
            return vec![];
        }
        (Screen::Detail, Action::PageUp | Action::PageDown) => {
            let len = detail::max_scroll(app) + 1;
            let step = detail::page_step(app);
            app.detail_scroll = scrolled(app.detail_scroll, &action, step, len);
            return vec![];
        }
        _ => {}
    }
    let last = app.visible.len().saturating_sub(1);
    let before = app.selected;
    match action {
        Action::Up => app.selected = app.selected.saturating_sub(1),
        Action::Down => app.selected = (app.selected + 1).min(last),
        Action::PageUp => app.selected = app.selected.saturating_sub(app.page.max(1)),
        Action::PageDown => app.selected = (app.selected + app.page.max(1)).min(last),
        Action::Top => app.selected = 0,
        Action::Bottom => app.selected = last,
        Action::Click(row) => click(app, row),
        Action::Open if app.screen == Screen::Detail => {
            // Where the split view does not fit, the page is all there is.
            if !detail::split_fits(app) {
                return vec![];
            }
            app.detail_page = !app.detail_page;
            app.detail_scroll = 0;
        }
        Action::Open => {
            if app.current().is_some() {
                app.screen = Screen::Detail;
            }
        }
        Action::Back | Action::Escape => app.screen = Screen::List,
        Action::Quit => return quit(app),
        Action::Summary => {
            app.screen = if app.screen == Screen::Summary {
                Screen::List
            } else {
                Screen::Summary
            }
        }
        Action::Help => app.help = true,
        Action::StartSearch => app.prompt = Prompt::Search(Input::default()),
        Action::SearchNext => app.find(true),
        Action::SearchPrev => app.find(false),
        Action::Mark => mark(app),
        Action::StartExport => {
            let default = app.default_export_path().display().to_string();
            app.prompt = Prompt::Export(Input::new(default));
        }
        Action::CopyId => {
            if let Some(v) = app.current() {
                let id = format!("{}:{}", v.item.category, v.item.example_id);
                app.status = format!("copied {id}");
                return vec![Effect::Copy(id)];
            }
        }
        Action::CancelRun | Action::ResumeRun => return run_control(app, action),
        other => filter(app, other),
    }
    if app.selected != before {
        app.detail_scroll = 0;
    }
    app.scroll_into_view();
    vec![]
}

/// A scroll offset moved by a key, kept within `len` lines.
fn scrolled(at: u16, action: &Action, page: usize, len: usize) -> u16 {
    let page = page.max(1) as u16;
    let max = (len as u16).saturating_sub(1);
    match action {
        Action::Up => at.saturating_sub(1),
        Action::Down => at.saturating_add(1).min(max),
        Action::PageUp => at.saturating_sub(page),
        Action::PageDown => at.saturating_add(page).min(max),
        Action::Top => 0,
        _ => max,
    }
}

/// `q`: back one screen; on the list, quit, asking first while the run goes on.
fn quit(app: &mut App) -> Vec<Effect> {
    if app.screen != Screen::List {
        app.screen = Screen::List;
        return vec![];
    }
    if app.running() {
        app.confirm = Some(Confirm::Quit);
        return vec![];
    }
    app.quit = true;
    vec![Effect::Quit]
}

/// A click selects the list row under it.
fn click(app: &mut App, row: u16) {
    if app.screen != Screen::List || row < LIST_TOP {
        return;
    }
    let pos = app.list_start(app.page) + (row - LIST_TOP) as usize;
    if ((row - LIST_TOP) as usize) < app.page && pos < app.visible.len() {
        app.selected = pos;
    }
}

fn mark(app: &mut App) {
    if let Some(k) = app.current().map(App::key_of) {
        if !app.marked.remove(&k) {
            app.marked.insert(k);
        }
        if app.screen == Screen::List {
            app.selected = (app.selected + 1).min(app.visible.len().saturating_sub(1));
        }
    }
}

/// Filters, the focus precision and the order of the list.
fn filter(app: &mut App, action: Action) {
    let quantized = app.precisions.len().saturating_sub(1);
    match action {
        Action::ToggleTransitions => app.transitions_only = !app.transitions_only,
        Action::PrevPrecision | Action::NextPrecision if quantized > 0 => {
            // Cycle over the run's precisions below bf16 (indices 1..=quantized).
            let at = app.focus.clamp(1, quantized) - 1;
            let step = if action == Action::NextPrecision {
                1
            } else {
                quantized - 1
            };
            app.focus = (at + step) % quantized + 1;
        }
        Action::CycleCategory => {
            app.category = App::cycle(app.distinct(|v| &v.item.category), &app.category)
        }
        Action::CyclePolarity => {
            app.polarity = App::cycle(app.distinct(|v| &v.item.question_polarity), &app.polarity)
        }
        Action::CycleCondition => {
            app.condition = App::cycle(app.distinct(|v| &v.item.context_condition), &app.condition)
        }
        Action::CycleSort | Action::ReverseSort => {
            if action == Action::CycleSort {
                app.sort = match app.sort {
                    Sort::Id => Sort::DeltaP,
                    Sort::DeltaP => Sort::Kld,
                    Sort::Kld => Sort::Id,
                };
            } else {
                app.reverse = !app.reverse;
            }
            app.refilter();
            // A new order starts at its top.
            app.selected = 0;
            app.offset = 0;
            return;
        }
        _ => return,
    }
    app.summary_scroll = 0;
    app.refilter();
}

/// `x` and `r`: cancel a running study, resume a stopped one.
fn run_control(app: &mut App, action: Action) -> Vec<Effect> {
    let Some(p) = app.progress.as_mut() else {
        app.status = "no run in this explorer: `stereoscope open` only reads a folder".into();
        return vec![];
    };
    match (action, p.running, p.finished) {
        (Action::CancelRun, true, _) => {
            p.cancelling = true;
            vec![Effect::CancelRun]
        }
        (Action::ResumeRun, false, false) => vec![Effect::ResumeRun],
        (Action::ResumeRun, true, _) => {
            app.status = "the run is already going".into();
            vec![]
        }
        (Action::ResumeRun, false, true) => {
            app.status = "the run is finished: nothing to resume".into();
            vec![]
        }
        _ => {
            app.status = "the run is not going: r resumes it".into();
            vec![]
        }
    }
}

/// Actions from the run, the folder and the terminal.
fn background(app: &mut App, action: Action) -> Vec<Effect> {
    match action {
        Action::ForceQuit => {
            // As `q` on the list: a live run is quit only once confirmed (y, or Ctrl-C again).
            if app.running() && app.confirm != Some(Confirm::Quit) {
                app.help = false;
                app.confirm = Some(Confirm::Quit);
                return vec![];
            }
            app.confirm = None;
            app.quit = true;
            return vec![Effect::Quit];
        }
        Action::Data(views, report) => {
            return background(
                app,
                Action::Loaded(Box::new(Loaded {
                    views,
                    report,
                    partial: None,
                })),
            );
        }
        Action::Loaded(l) => {
            let Loaded {
                views,
                report,
                partial,
            } = *l;
            app.views = views;
            app.report = report;
            app.partial = partial;
            if app.precisions.is_empty() {
                let on_disk: BTreeSet<String> = app
                    .views
                    .iter()
                    .flat_map(|v| v.cells.keys().cloned())
                    .collect();
                app.set_precisions(on_disk.into_iter().collect());
            }
            app.refilter();
            return loaded(app);
        }
        Action::LoadFailed(e) => {
            app.status = format!("cannot read results: {e}");
            return loaded(app);
        }
        Action::Model(m) => {
            if app.model == "starting" {
                app.model = m;
            }
        }
        Action::Precisions(names) if !names.is_empty() => {
            app.set_precisions(names);
            app.refilter();
        }
        Action::Reload => return reload(app),
        Action::ExportExists(path, items) => app.confirm = Some(Confirm::Overwrite(path, items)),
        Action::Status(s) => app.status = s,
        Action::Resize(w, h) => {
            app.width = w;
            app.height = h;
            app.page = h.saturating_sub(LIST_CHROME).max(1) as usize;
            app.scroll_into_view();
        }
        Action::RunEnded(end) => return run_ended(app, end),
        other => progress(app, other),
    }
    vec![]
}

/// Ask for a reload, or queue one behind the reload in flight.
fn reload(app: &mut App) -> Vec<Effect> {
    if app.loading {
        app.stale = true;
        return vec![];
    }
    app.loading = true;
    vec![Effect::Reload]
}

/// A reload finished: start the queued one, if any.
fn loaded(app: &mut App) -> Vec<Effect> {
    app.loading = false;
    if std::mem::take(&mut app.stale) {
        return reload(app);
    }
    vec![]
}

/// The run's progress as its events report it.
fn progress(app: &mut App, action: Action) {
    if let Action::Planned { per_precision, .. } = &action
        && !per_precision.is_empty()
    {
        app.set_precisions(per_precision.iter().map(|p| p.0.clone()).collect());
        app.refilter();
    }
    let p = app.progress.get_or_insert_with(Progress::default);
    match action {
        Action::RunStarted => {
            p.running = true;
            p.cancelling = false;
            p.error = None;
            if p.stage.is_empty() || !p.finished {
                p.stage = "starting".into();
            }
        }
        Action::Planned {
            total,
            done,
            per_precision,
            at,
        } => {
            p.total = total;
            p.done = done;
            p.per_precision = per_precision;
            p.done_at_start = done;
            p.planned_at = Some(at);
        }
        Action::Stage(s) => p.stage = s,
        Action::Advanced {
            precision,
            records,
            at,
        } => {
            p.done += records;
            if let Some(e) = p.per_precision.iter_mut().find(|e| e.0 == precision) {
                e.2 += records;
            }
            let secs = p
                .planned_at
                .map_or(0.0, |t| at.saturating_duration_since(t).as_secs_f64());
            p.records_per_s = p.done.saturating_sub(p.done_at_start) as f64 / secs.max(1e-3);
        }
        _ => {}
    }
}

/// The run stopped: say how, write the report of a finished run, read the folder again.
fn run_ended(app: &mut App, end: RunEnd) -> Vec<Effect> {
    let p = app.progress.get_or_insert_with(Progress::default);
    p.running = false;
    p.cancelling = false;
    let mut effects = Vec::new();
    match end {
        RunEnd::Finished => {
            p.finished = true;
            p.stage = "finished".into();
            effects.push(Effect::WriteReport);
        }
        RunEnd::Cancelled => p.stage = "cancelled".into(),
        RunEnd::Failed(e) => p.error = Some(e),
    }
    // The run's messages ("quit and cancel the run?") no longer apply.
    if app.confirm == Some(Confirm::Quit) {
        app.confirm = None;
    }
    effects.extend(reload(app));
    effects
}
