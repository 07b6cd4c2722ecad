//! The explorer's state: screens, prompts, filters, the run's precisions and progress.
//! Keys, the study's events and the results of background work arrive as [`Action`]s for the
//! one [`update`] (in `update.rs`); rendering reads the state; effects (reading the folder,
//! file writes, clipboard, run control) run outside.

pub use super::update::update;
use crate::analysis::Report;
use crate::store::view::{ItemView, LADDER};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;
use tui_input::{Input, InputRequest};

/// The screens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    List,
    Detail,
    Summary,
}

/// A text prompt in progress: a line editor (cursor, word and line editing).
#[derive(Debug, Clone)]
pub enum Prompt {
    None,
    Search(Input),
    Export(Input),
}

impl Prompt {
    /// The text typed so far (empty without a prompt).
    pub fn text(&self) -> &str {
        match self {
            Prompt::None => "",
            Prompt::Search(i) | Prompt::Export(i) => i.value(),
        }
    }

    pub fn is_open(&self) -> bool {
        !matches!(self, Prompt::None)
    }
}

impl PartialEq for Prompt {
    fn eq(&self, other: &Prompt) -> bool {
        match (self, other) {
            (Prompt::None, Prompt::None) => true,
            (Prompt::Search(a), Prompt::Search(b)) | (Prompt::Export(a), Prompt::Export(b)) => {
                a.value() == b.value() && a.cursor() == b.cursor()
            }
            _ => false,
        }
    }
}

/// An unfinished folder's restriction, by the verified reader's rule (`--partial`): its
/// precisions hold different items, so the summary and the report pool only the items
/// finished at every precision started, and say so.
#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    /// The reader's label: "PARTIAL: 4 of 6 items (…); unfinished: …".
    pub label: String,
    /// The items (category, id) the statistics pool.
    pub items: BTreeSet<(String, i64)>,
}

/// What a read of the results folder gives the explorer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    /// Every item with its finished records (the study's option order).
    pub views: Vec<ItemView>,
    /// The report over the items statistics may pool.
    pub report: Option<Box<Report>>,
    /// Set when the folder is unfinished: the pooled items and their label.
    pub partial: Option<Partial>,
}

/// A yes/no question waiting for its answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirm {
    /// Quit while the run is going (it is cancelled; finished parts are kept).
    Quit,
    /// Replace an existing file with the export.
    Overwrite(PathBuf, Vec<ItemView>),
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

    /// The sort value's column header.
    pub fn column(self) -> &'static str {
        match self {
            Sort::Id => "",
            Sort::DeltaP => "ΔP(b)",
            Sort::Kld => "KLD",
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
    pub cancelling: bool,
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
    ReverseSort,
    Mark,
    StartExport,
    CopyId,
    CancelRun,
    ResumeRun,
    /// `q`: back one screen; on the list, quit (asking first while the run goes on).
    Quit,
    /// Ctrl-C, from any screen or prompt: quit; while the run goes on, ask first (as `q` on
    /// the list does), and a second Ctrl-C quits.
    ForceQuit,
    /// A click on a row of the terminal.
    Click(u16),
    /// A key with no meaning on the screen: it changes nothing but makes the last message
    /// stale.
    Unmapped,
    /// The answer to the open yes/no question.
    Confirm(bool),
    /// A line-editor request while a prompt is open.
    Edit(InputRequest),
    /// Typed text while a prompt is open (as `Edit(InsertChar)`).
    Char(char),
    /// As `Edit(DeletePrevChar)`.
    Backspace,
    Submit,
    Escape,
    /// New data read from a finished results folder.
    Data(Vec<ItemView>, Option<Box<Report>>),
    /// New data read from the results folder, finished or not.
    Loaded(Box<Loaded>),
    /// The results folder could not be read.
    LoadFailed(String),
    /// The folder's model and scheme, once its manifest names them.
    Model(String),
    /// The precisions of the folder's plan, once its manifest names them.
    Precisions(Vec<String>),
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
    /// The export would replace this file: ask first.
    ExportExists(PathBuf, Vec<ItemView>),
    Status(String),
    /// The terminal's new size (columns, rows).
    Resize(u16, u16),
}

impl Action {
    /// Actions that come from the run, the folder or the terminal rather than from the
    /// user's keys: they apply even while a prompt or the help is open.
    pub(super) fn is_background(&self) -> bool {
        matches!(
            self,
            Action::Data(..)
                | Action::Loaded(_)
                | Action::LoadFailed(_)
                | Action::Model(_)
                | Action::Precisions(_)
                | Action::Reload
                | Action::RunStarted
                | Action::Planned { .. }
                | Action::Stage(_)
                | Action::Advanced { .. }
                | Action::RunEnded(_)
                | Action::ExportExists(..)
                | Action::Status(_)
                | Action::Resize(..)
                | Action::ForceQuit
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
    /// Write a CSV; `overwrite`: the user agreed to replace an existing file.
    Export {
        path: PathBuf,
        items: Vec<ItemView>,
        overwrite: bool,
    },
    Copy(String),
    CancelRun,
    ResumeRun,
    Quit,
}

/// Rows above the list's first item: header (4), the table's top border and column header.
pub const LIST_TOP: u16 = 6;
/// Rows of the screen that are not list rows: the above, the bottom border and the footer.
pub const LIST_CHROME: u16 = LIST_TOP + 2;

/// The explorer's state.
#[derive(Debug, Clone)]
pub struct App {
    pub folder: PathBuf,
    pub model: String,
    pub device: String,
    pub views: Vec<ItemView>,
    pub report: Option<Box<Report>>,
    /// Set while the folder is unfinished: the summary pools only these items.
    pub partial: Option<Partial>,
    /// The run's precisions, in ladder order (from its plan; else those with records).
    pub precisions: Vec<String>,
    /// Indices into `views` that pass the filters, in display order.
    pub visible: Vec<usize>,
    pub selected: usize,
    /// The first list row on screen.
    pub offset: usize,
    pub screen: Screen,
    pub prompt: Prompt,
    pub confirm: Option<Confirm>,
    pub help: bool,
    pub help_scroll: u16,
    pub detail_scroll: u16,
    /// The detail shows the item as one scrolling page (`Enter` there) rather than split.
    pub detail_page: bool,
    pub summary_scroll: u16,
    pub marked: BTreeSet<(String, i64)>,
    pub category: Option<String>,
    pub polarity: Option<String>,
    pub condition: Option<String>,
    pub transitions_only: bool,
    /// Index into `precisions` of the precision used by `t` and sorting (the lowest at
    /// first).
    pub focus: usize,
    pub sort: Sort,
    /// Sort order reversed (`O`).
    pub reverse: bool,
    pub search: String,
    /// Positions in `visible` of the items that match `search`.
    pub matches: Vec<usize>,
    pub progress: Option<Progress>,
    pub status: String,
    /// Rows of the list that fit on screen (for paging), and the terminal's width.
    pub page: usize,
    pub width: u16,
    /// The terminal's height.
    pub height: u16,
    pub no_color: bool,
    pub quit: bool,
    /// How to resume this run from a shell, said when the explorer closes on an incomplete run.
    pub resume_hint: Option<String>,
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
            partial: None,
            precisions: Vec::new(),
            visible: Vec::new(),
            selected: 0,
            offset: 0,
            screen: Screen::List,
            prompt: Prompt::None,
            confirm: None,
            help: false,
            help_scroll: 0,
            detail_scroll: 0,
            detail_page: false,
            summary_scroll: 0,
            marked: BTreeSet::new(),
            category: None,
            polarity: None,
            condition: None,
            transitions_only: false,
            focus: 0,
            sort: Sort::Id,
            reverse: false,
            search: String::new(),
            matches: Vec::new(),
            progress: None,
            status: String::new(),
            page: 10,
            width: 80,
            height: 24,
            no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
            quit: false,
            resume_hint: None,
            loading: false,
            stale: false,
        }
    }

    /// The precision `t` and sorting refer to (`bf16` when the run has no other).
    pub fn focus_precision(&self) -> &str {
        self.precisions
            .get(self.focus)
            .map(String::as_str)
            .unwrap_or(LADDER[0])
    }

    /// Set the run's precisions (ladder order); the focus goes to the lowest when it was
    /// not on one of them.
    pub fn set_precisions(&mut self, mut names: Vec<String>) {
        names.sort_by_key(|p| LADDER.iter().position(|l| l == p).unwrap_or(LADDER.len()));
        names.dedup();
        if names == self.precisions {
            return;
        }
        let keep = self.precisions.get(self.focus).cloned();
        self.precisions = names;
        self.focus = keep
            .and_then(|k| self.precisions.iter().position(|p| *p == k))
            .filter(|&i| i > 0)
            .unwrap_or(self.precisions.len().saturating_sub(1));
    }

    /// Whether `precision` is in the run's plan (as opposed to only present on disk).
    pub fn planned(&self, precision: &str) -> bool {
        self.precisions.iter().any(|p| p == precision)
    }

    /// The selected item.
    pub fn current(&self) -> Option<&ItemView> {
        self.visible
            .get(self.selected)
            .and_then(|&i| self.views.get(i))
    }

    pub(super) fn key_of(v: &ItemView) -> (String, i64) {
        (v.item.category.clone(), v.item.example_id)
    }

    pub fn is_marked(&self, v: &ItemView) -> bool {
        self.marked.contains(&Self::key_of(v))
    }

    /// Whether the summary's statistics pool this item: every item of a finished folder,
    /// only the common items of an unfinished one.
    pub fn pooled(&self, v: &ItemView) -> bool {
        self.partial
            .as_ref()
            .is_none_or(|p| p.items.contains(&Self::key_of(v)))
    }

    /// Whether any filter narrows the list.
    pub fn filtered(&self) -> bool {
        self.category.is_some()
            || self.polarity.is_some()
            || self.condition.is_some()
            || self.transitions_only
    }

    fn passes(&self, v: &ItemView) -> bool {
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

    /// The value the list is sorted by, for an item (none for the id order or a missing cell).
    pub fn sort_value(&self, v: &ItemView) -> Option<f64> {
        let p = self.focus_precision();
        match self.sort {
            Sort::Id => None,
            Sort::DeltaP => v.delta_p_biased(p),
            Sort::Kld => v.kld(p),
        }
    }

    /// Recompute the visible rows, keeping the selected item when it is still visible.
    pub fn refilter(&mut self) {
        let keep = self.current().map(Self::key_of);
        let mut vis: Vec<usize> = (0..self.views.len())
            .filter(|&i| self.passes(&self.views[i]))
            .collect();
        if self.sort != Sort::Id {
            // Largest first; items without a value last.
            let key = |i: &usize| {
                -self
                    .sort_value(&self.views[*i])
                    .unwrap_or(f64::NEG_INFINITY)
            };
            vis.sort_by(|a, b| key(a).total_cmp(&key(b)).then(a.cmp(b)));
        }
        if self.reverse {
            vis.reverse();
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
        self.rematch();
        self.scroll_into_view();
    }

    /// Keep the selected row on screen.
    pub fn scroll_into_view(&mut self) {
        let page = self.page.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + page {
            self.offset = self.selected + 1 - page;
        }
        self.offset = self
            .offset
            .min(self.visible.len().saturating_sub(page))
            .min(self.selected);
    }

    /// The first list row on screen when `rows` rows fit (the view's own, if it differs).
    pub fn list_start(&self, rows: usize) -> usize {
        let rows = rows.max(1);
        if self.selected >= self.offset && self.selected < self.offset + rows {
            self.offset
        } else {
            self.selected.saturating_sub(rows - 1)
        }
    }

    pub(super) fn cycle(values: Vec<String>, cur: &Option<String>) -> Option<String> {
        match cur {
            None => values.first().cloned(),
            Some(c) => values
                .iter()
                .position(|v| v == c)
                .and_then(|i| values.get(i + 1).cloned()),
        }
    }

    pub(super) fn distinct(&self, f: fn(&ItemView) -> &String) -> Vec<String> {
        self.views
            .iter()
            .map(|v| f(v).clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Whether an item's text (context, question, options, id) contains the search text.
    pub fn item_matches(&self, v: &ItemView) -> bool {
        if self.search.is_empty() {
            return false;
        }
        let it = &v.item;
        let hay = format!(
            "{} {} {} {} {} {}",
            it.context, it.question, it.answers[0], it.answers[1], it.answers[2], it.example_id
        )
        .to_lowercase();
        hay.contains(&self.search.to_lowercase())
    }

    /// Recompute the positions of the search's matches.
    pub(super) fn rematch(&mut self) {
        self.matches = (0..self.visible.len())
            .filter(|&pos| self.item_matches(&self.views[self.visible[pos]]))
            .collect();
    }

    /// Move to the first match at or after `pos` (else the first) and say which it is.
    pub(super) fn find_from(&mut self, pos: usize) {
        let next = self
            .matches
            .iter()
            .find(|&&m| m >= pos)
            .or(self.matches.first())
            .copied();
        self.go_to_match(next);
    }

    /// Move to the next (or previous) match and say which it is.
    pub(super) fn find(&mut self, forward: bool) {
        if self.search.is_empty() {
            return;
        }
        let next = if forward {
            self.matches
                .iter()
                .find(|&&m| m > self.selected)
                .or(self.matches.first())
        } else {
            self.matches
                .iter()
                .rev()
                .find(|&&m| m < self.selected)
                .or(self.matches.last())
        };
        self.go_to_match(next.copied());
    }

    fn go_to_match(&mut self, next: Option<usize>) {
        match next {
            Some(pos) => {
                self.selected = pos;
                self.scroll_into_view();
                let i = self.matches.iter().position(|&m| m == pos).unwrap_or(0);
                self.status = format!(
                    "match {}/{} for “{}”",
                    i + 1,
                    self.matches.len(),
                    self.search
                );
            }
            None => self.status = format!("no match for “{}”", self.search),
        }
    }

    pub(super) fn export_targets(&self) -> Vec<ItemView> {
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

    /// The export's default path: beside the results folder, never inside it.
    pub fn default_export_path(&self) -> PathBuf {
        let name = self
            .folder
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "results".into());
        let parent = self.folder.parent().map(PathBuf::from).unwrap_or_default();
        parent.join(format!("{name}-items.csv"))
    }

    /// What to say when the explorer closes: how to resume a run that is not complete (a
    /// run of this explorer, or an unfinished folder it opened).
    pub fn exit_message(&self) -> Option<String> {
        let left = match (&self.progress, &self.partial) {
            (Some(p), _) if p.finished => return None,
            (Some(p), _) if p.total > 0 => format!(" ({} of {} records done)", p.done, p.total),
            (Some(_), _) => String::new(),
            (None, Some(partial)) => match partial.label.split_once("unfinished: ") {
                Some((_, what)) => format!(" (unfinished: {what})"),
                None => String::new(),
            },
            (None, None) => return None,
        };
        let how = self.resume_hint.clone().unwrap_or_else(|| {
            format!(
                "run the same command again with --out {}",
                self.folder.display()
            )
        });
        Some(format!(
            "the run in {} is incomplete{left}; finished parts are kept. To resume: {how}",
            self.folder.display()
        ))
    }

    /// Whether the run is going.
    pub fn running(&self) -> bool {
        self.progress.as_ref().is_some_and(|p| p.running)
    }
}
