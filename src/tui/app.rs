//! The explorer's state and its one `update`: actions in, state changes and effects out.
//! Rendering reads the state; effects (file writes, clipboard, run control) run outside.

use crate::analysis::Report;
use crate::store::view::{ItemView, LADDER};
use std::collections::BTreeSet;
use std::path::PathBuf;

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
    Progress(Progress),
    Status(String),
    Resize(u16),
}

/// Work for the effect runner.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
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
    // An open prompt takes typed text first.
    if !matches!(app.prompt, Prompt::None) {
        match action {
            Action::Char(c) => {
                match &mut app.prompt {
                    Prompt::Search(s) | Prompt::Export(s) => s.push(c),
                    Prompt::None => {}
                }
                return vec![];
            }
            Action::Backspace => {
                if let Prompt::Search(s) | Prompt::Export(s) = &mut app.prompt {
                    s.pop();
                }
                return vec![];
            }
            Action::Escape => {
                app.prompt = Prompt::None;
                return vec![];
            }
            Action::Submit => {
                let prompt = std::mem::replace(&mut app.prompt, Prompt::None);
                match prompt {
                    Prompt::Search(s) => {
                        app.search = s;
                        app.find(true);
                    }
                    Prompt::Export(path) if !path.trim().is_empty() => {
                        let items = app.export_targets();
                        return vec![Effect::Export(PathBuf::from(path.trim()), items)];
                    }
                    _ => {}
                }
                return vec![];
            }
            Action::Data(..)
            | Action::Progress(_)
            | Action::Status(_)
            | Action::Resize(_)
            | Action::Quit => {}
            _ => return vec![],
        }
    }
    if app.help
        && !matches!(
            action,
            Action::Data(..)
                | Action::Progress(_)
                | Action::Status(_)
                | Action::Resize(_)
                | Action::Quit
        )
    {
        app.help = false;
        return vec![];
    }
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
        Action::ToggleTransitions => {
            app.transitions_only = !app.transitions_only;
            app.refilter();
        }
        Action::PrevPrecision => {
            app.focus = if app.focus <= 1 { 4 } else { app.focus - 1 };
            app.refilter();
        }
        Action::NextPrecision => {
            app.focus = if app.focus >= 4 { 1 } else { app.focus + 1 };
            app.refilter();
        }
        Action::CycleCategory => {
            app.category = App::cycle(app.distinct(|v| &v.item.category), &app.category);
            app.refilter();
        }
        Action::CyclePolarity => {
            app.polarity = App::cycle(app.distinct(|v| &v.item.question_polarity), &app.polarity);
            app.refilter();
        }
        Action::CycleCondition => {
            app.condition = App::cycle(app.distinct(|v| &v.item.context_condition), &app.condition);
            app.refilter();
        }
        Action::CycleSort => {
            app.sort = match app.sort {
                Sort::Id => Sort::DeltaP,
                Sort::DeltaP => Sort::Kld,
                Sort::Kld => Sort::Id,
            };
            app.refilter();
        }
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
        Action::CancelRun => {
            if app.progress.as_ref().is_some_and(|p| p.running) {
                app.status =
                    "cancelling: the part in flight is dropped, finished parts are kept".into();
                return vec![Effect::CancelRun];
            }
        }
        Action::ResumeRun => {
            if app
                .progress
                .as_ref()
                .is_some_and(|p| !p.running && !p.finished)
            {
                app.status = "resuming".into();
                return vec![Effect::ResumeRun];
            }
        }
        Action::Quit => {
            app.quit = true;
            return vec![Effect::Quit];
        }
        Action::Data(views, report) => {
            app.views = views;
            app.report = report;
            app.refilter();
        }
        Action::Progress(p) => app.progress = Some(p),
        Action::Status(s) => app.status = s,
        Action::Resize(rows) => app.page = rows.saturating_sub(8).max(1) as usize,
        Action::Char(_) | Action::Backspace | Action::Submit => {}
    }
    vec![]
}
