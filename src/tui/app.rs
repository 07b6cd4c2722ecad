//! The explorer's state and its one `update`: actions in, state changes and effects out.
//! Keys, the study's events and the results of background work all arrive as actions;
//! rendering reads the state; effects (reading the folder, file writes, clipboard, run
//! control) run outside. Reloads are coalesced: at most one in flight, one more queued.

use crate::analysis::Report;
use crate::store::view::{ItemView, LADDER};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

/// The screens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    List,
    Detail,
    Summary,
}

/// A text prompt in progress.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    None,
    Search(String),
    Export(String),
}

/// How the list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Id,
    DeltaP,
    Kld,
}

impl Sort {
    pub fn label(self) -> &'static str {
        match self {
            Sort::Id => "id",
            Sort::DeltaP => "Δ P(biased)",
            Sort::Kld => "KL divergence",
        }
    }
}

/// Run progress as the header shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub total: u64,
    pub done: u64,
    pub records_per_s: f64,
    pub stage: String,
    /// Per precision: (name, records in the plan, records done).
    pub per_precision: Vec<(String, u64, u64)>,
    pub running: bool,
    pub finished: bool,
    pub error: Option<String>,
    /// When the plan arrived and how many records were already done then (for the rate).
    pub planned_at: Option<Instant>,
    pub done_at_start: u64,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    Finished,
    Cancelled,
    Failed(String),
}

/// Everything that can happen.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Open,
    Back,
    Summary,
    Help,
    StartSearch,
    SearchNext,
    SearchPrev,
    ToggleTransitions,
    PrevPrecision,
    NextPrecision,
    CycleCategory,
    CyclePolarity,
    CycleCondition,
    CycleSort,
    Mark,
    StartExport,
    CopyId,
    CancelRun,
    ResumeRun,
    Quit,
    /// Typed text while a prompt is open.
    Char(char),
    Backspace,
    Submit,
    Escape,
    /// New data read from the results folder.
    Data(Vec<ItemView>, Option<Report>),
    /// The results folder could not be read.
    LoadFailed(String),
    /// The folder's model and scheme, once its manifest names them.
    Model(String),
    /// The results folder changed (a part was written): read it again.
    Reload,
    /// A run started (or resumed).
    RunStarted,
    /// The run's plan: records in total and already done, per precision (name, total, done).
    Planned {
        total: u64,
        done: u64,
        per_precision: Vec<(String, u64, u64)>,
        at: Instant,
    },
    /// A stage of the run starts.
    Stage(String),
    /// Records finished at a precision.
    Advanced {
        precision: String,
        records: u64,
        at: Instant,
    },
    RunEnded(RunEnd),
    Status(String),
    Resize(u16),
}

impl Action {
    /// Actions that come from the run, the folder or the terminal rather than from the
    /// user's keys: they apply even while a prompt or the help is open.
    fn is_background(&self) -> bool {
        matches!(
            self,
            Action::Data(..)
                | Action::LoadFailed(_)
                | Action::Model(_)
                | Action::Reload
                | Action::RunStarted
                | Action::Planned { .. }
                | Action::Stage(_)
                | Action::Advanced { .. }
                | Action::RunEnded(_)
                | Action::Status(_)
                | Action::Resize(_)
                | Action::Quit
        )
    }
}

/// Work for the effect runner.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Read the results folder (items, records, report) off the UI task.
    Reload,
    /// Write the finished run's report files off the UI task.
    WriteReport,
    Export(PathBuf, Vec<ItemView>),
    Copy(String),
    CancelRun,
    ResumeRun,
    Quit,
}

/// The explorer's state.
#[derive(Debug, Clone)]
pub struct App {
    pub folder: PathBuf,
    pub model: String,
    pub device: String,
    pub views: Vec<ItemView>,
    pub report: Option<Report>,
    /// Indices into `views` that pass the filters, in display order.
    pub visible: Vec<usize>,
    pub selected: usize,
    pub screen: Screen,
    pub prompt: Prompt,
    pub help: bool,
    pub marked: BTreeSet<(String, i64)>,
    pub category: Option<String>,
    pub polarity: Option<String>,
    pub condition: Option<String>,
    pub transitions_only: bool,
    /// Index into the ladder (1..=4) of the precision used by `t` and sorting.
    pub focus: usize,
    pub sort: Sort,
    pub search: String,
    pub progress: Option<Progress>,
    pub status: String,
    /// Rows of the list that fit on screen (for paging).
    pub page: usize,
    pub no_color: bool,
    pub quit: bool,
    /// A reload is in flight; `stale`: the folder changed again since it started.
    pub loading: bool,
    pub stale: bool,
}

impl App {
    pub fn new(folder: PathBuf, model: String, device: String) -> App {
        App {
            folder,
            model,
            device,
            views: Vec::new(),
            report: None,
            visible: Vec::new(),
            selected: 0,
            screen: Screen::List,
            prompt: Prompt::None,
            help: false,
            marked: BTreeSet::new(),
            category: None,
            polarity: None,
            condition: None,
            transitions_only: false,
            focus: 4,
            sort: Sort::Id,
            search: String::new(),
            progress: None,
            status: String::new(),
            page: 10,
            no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
            quit: false,
            loading: false,
            stale: false,
        }
    }

    /// The precision `t` and sorting refer to.
    pub fn focus_precision(&self) -> &'static str {
        LADDER[self.focus]
    }

    /// The selected item.
    pub fn current(&self) -> Option<&ItemView> {
        self.visible
            .get(self.selected)
            .and_then(|&i| self.views.get(i))
    }

    fn key_of(v: &ItemView) -> (String, i64) {
        (v.item.category.clone(), v.item.example_id)
    }

    fn matches(&self, v: &ItemView) -> bool {
        let it = &v.item;
        self.category.as_ref().is_none_or(|c| &it.category == c)
            && self
                .polarity
                .as_ref()
                .is_none_or(|p| &it.question_polarity == p)
            && self
                .condition
                .as_ref()
                .is_none_or(|c| &it.context_condition == c)
            && (!self.transitions_only || v.became_biased_at(self.focus_precision()))
    }

    /// Recompute the visible rows, keeping the selected item when it is still visible.
    pub fn refilter(&mut self) {
        let keep = self.current().map(Self::key_of);
        let p = self.focus_precision();
        let mut vis: Vec<usize> = (0..self.views.len())
            .filter(|&i| self.matches(&self.views[i]))
            .collect();
        let key = |i: &usize| -> f64 {
            let v = &self.views[*i];
            match self.sort {
                Sort::Id => 0.0,
                Sort::DeltaP => -v.delta_p_biased(p).unwrap_or(f64::NEG_INFINITY),
                Sort::Kld => -v.kld(p).unwrap_or(f64::NEG_INFINITY),
            }
        };
        if self.sort != Sort::Id {
            vis.sort_by(|a, b| key(a).total_cmp(&key(b)).then(a.cmp(b)));
        }
        self.visible = vis;
        self.selected = keep
            .and_then(|k| {
                self.visible
                    .iter()
                    .position(|&i| Self::key_of(&self.views[i]) == k)
            })
            .unwrap_or(0)
            .min(self.visible.len().saturating_sub(1));
    }

    fn cycle(values: Vec<String>, cur: &Option<String>) -> Option<String> {
        match cur {
            None => values.first().cloned(),
            Some(c) => values
                .iter()
                .position(|v| v == c)
                .and_then(|i| values.get(i + 1).cloned()),
        }
    }

    fn distinct(&self, f: fn(&ItemView) -> &String) -> Vec<String> {
        self.views
            .iter()
            .map(|v| f(v).clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    fn find(&mut self, forward: bool) {
        if self.search.is_empty() || self.visible.is_empty() {
            return;
        }
        let needle = self.search.to_lowercase();
        let n = self.visible.len();
        for step in 1..=n {
            let pos = if forward {
                (self.selected + step) % n
            } else {
                (self.selected + n * 2 - step) % n
            };
            let it = &self.views[self.visible[pos]].item;
            let hay = format!(
                "{} {} {} {} {} {}",
                it.context, it.question, it.answers[0], it.answers[1], it.answers[2], it.example_id
            )
            .to_lowercase();
            if hay.contains(&needle) {
                self.selected = pos;
                return;
            }
        }
        self.status = format!("no match for “{}”", self.search);
    }

    fn export_targets(&self) -> Vec<ItemView> {
        if self.marked.is_empty() {
            self.visible
                .iter()
                .map(|&i| self.views[i].clone())
                .collect()
        } else {
            self.views
                .iter()
                .filter(|v| self.marked.contains(&Self::key_of(v)))
                .cloned()
                .collect()
        }
    }
}

/// The one place state changes.
pub fn update(app: &mut App, action: Action) -> Vec<Effect> {
    if action.is_background() {
        return background(app, action);
    }
    // An open prompt takes typed text first.
    if !matches!(app.prompt, Prompt::None) {
        return prompt(app, action);
    }
    if app.help {
        app.help = false;
        return vec![];
    }
    navigate(app, action)
}

/// Typed text while a prompt is open.
fn prompt(app: &mut App, action: Action) -> Vec<Effect> {
    match action {
        Action::Char(c) => {
            if let Prompt::Search(s) | Prompt::Export(s) = &mut app.prompt {
                s.push(c);
            }
        }
        Action::Backspace => {
            if let Prompt::Search(s) | Prompt::Export(s) = &mut app.prompt {
                s.pop();
            }
        }
        Action::Escape => app.prompt = Prompt::None,
        Action::Submit => match std::mem::replace(&mut app.prompt, Prompt::None) {
            Prompt::Search(s) => {
                app.search = s;
                app.find(true);
            }
            Prompt::Export(path) if !path.trim().is_empty() => {
                let items = app.export_targets();
                return vec![Effect::Export(PathBuf::from(path.trim()), items)];
            }
            _ => {}
        },
        _ => {}
    }
    vec![]
}

/// Keys on a screen.
fn navigate(app: &mut App, action: Action) -> Vec<Effect> {
    let last = app.visible.len().saturating_sub(1);
    match action {
        Action::Up => app.selected = app.selected.saturating_sub(1),
        Action::Down => app.selected = (app.selected + 1).min(last),
        Action::PageUp => app.selected = app.selected.saturating_sub(app.page.max(1)),
        Action::PageDown => app.selected = (app.selected + app.page.max(1)).min(last),
        Action::Top => app.selected = 0,
        Action::Bottom => app.selected = last,
        Action::Open => {
            if app.current().is_some() {
                app.screen = Screen::Detail;
            }
        }
        Action::Back | Action::Escape => app.screen = Screen::List,
        Action::Summary => {
            app.screen = if app.screen == Screen::Summary {
                Screen::List
            } else {
                Screen::Summary
            }
        }
        Action::Help => app.help = true,
        Action::StartSearch => app.prompt = Prompt::Search(String::new()),
        Action::SearchNext => app.find(true),
        Action::SearchPrev => app.find(false),
        Action::Mark => {
            if let Some(k) = app.current().map(App::key_of) {
                if !app.marked.remove(&k) {
                    app.marked.insert(k);
                }
                if app.screen == Screen::List {
                    app.selected = (app.selected + 1).min(last);
                }
            }
        }
        Action::StartExport => {
            let default = app.folder.join("export.csv");
            app.prompt = Prompt::Export(default.display().to_string());
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
    vec![]
}

/// Filters, the focus precision and the order of the list.
fn filter(app: &mut App, action: Action) {
    match action {
        Action::ToggleTransitions => app.transitions_only = !app.transitions_only,
        Action::PrevPrecision => app.focus = if app.focus <= 1 { 4 } else { app.focus - 1 },
        Action::NextPrecision => app.focus = if app.focus >= 4 { 1 } else { app.focus + 1 },
        Action::CycleCategory => {
            app.category = App::cycle(app.distinct(|v| &v.item.category), &app.category)
        }
        Action::CyclePolarity => {
            app.polarity = App::cycle(app.distinct(|v| &v.item.question_polarity), &app.polarity)
        }
        Action::CycleCondition => {
            app.condition = App::cycle(app.distinct(|v| &v.item.context_condition), &app.condition)
        }
        Action::CycleSort => {
            app.sort = match app.sort {
                Sort::Id => Sort::DeltaP,
                Sort::DeltaP => Sort::Kld,
                Sort::Kld => Sort::Id,
            }
        }
        _ => return,
    }
    app.refilter();
}

/// `c` and `r`: cancel a running study, resume a stopped one.
fn run_control(app: &mut App, action: Action) -> Vec<Effect> {
    let running = app.progress.as_ref().map(|p| (p.running, p.finished));
    match (action, running) {
        (Action::CancelRun, Some((true, _))) => {
            app.status =
                "cancelling: the part in flight is dropped, finished parts are kept".into();
            vec![Effect::CancelRun]
        }
        (Action::ResumeRun, Some((false, false))) => {
            app.status = "resuming".into();
            vec![Effect::ResumeRun]
        }
        _ => vec![],
    }
}

/// Actions from the run, the folder and the terminal.
fn background(app: &mut App, action: Action) -> Vec<Effect> {
    match action {
        Action::Quit => {
            app.quit = true;
            return vec![Effect::Quit];
        }
        Action::Data(views, report) => {
            app.views = views;
            app.report = report;
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
        Action::Reload => return reload(app),
        Action::Status(s) => app.status = s,
        Action::Resize(rows) => app.page = rows.saturating_sub(8).max(1) as usize,
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
    let p = app.progress.get_or_insert_with(Progress::default);
    match action {
        Action::RunStarted => {
            p.running = true;
            p.error = None;
            if p.stage.is_empty() {
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
    let mut effects = Vec::new();
    match end {
        RunEnd::Finished => {
            p.finished = true;
            p.stage = "finished".into();
            effects.push(Effect::WriteReport);
        }
        RunEnd::Cancelled => {}
        RunEnd::Failed(e) => p.error = Some(e),
    }
    effects.extend(reload(app));
    effects
}
