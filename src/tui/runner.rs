//! The explorer's event loop and effect runner, on a single-threaded tokio runtime (as
//! ratatui's async template): one `select!` over terminal events (crossterm's
//! `EventStream`), the study job's events, the results of blocking tasks and a render tick.
//! Everything becomes an `Action` for `app::update`; this module only turns events into
//! actions and runs the effects `update` returns. Reading the folder, computing the report
//! and writing files run on `spawn_blocking` and come back as actions; the study runs on
//! its own thread (`study::Job`), never on the runtime.

use super::app::{self, Action, App, Effect, RunEnd};
use super::{check_folder, keymap, read, view};
use crate::analysis;
use crate::error::{Error, Result};
use crate::store::{self, ResultsDir, view::ItemView};
use crate::study::{Event, Job, Study};
use futures_util::StreamExt;
use ratatui::crossterm::event::{
    Event as TermEvent, EventStream, KeyCode, KeyEventKind, KeyModifiers, MouseButton,
    MouseEventKind,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::time::MissedTickBehavior;
use tui_input::backend::crossterm::to_input_request;

/// The shortest time between two frames; a frame is drawn only when something changed.
const FRAME: Duration = Duration::from_millis(50);

fn term_err(e: std::io::Error) -> Error {
    Error::Input(format!("terminal: {e}"))
}

/// Run the explorer on `dir` until the user quits; with `study`, the study runs alongside.
pub(super) fn run(dir: &Path, device: &str, study: Option<Study>) -> Result<()> {
    let model = check_folder(dir).unwrap_or_else(|_| "starting".into());
    let mut app = App::new(dir.to_path_buf(), model, device.to_string());
    if study.is_some() {
        app.resume_hint = Some(shell_words(std::env::args()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Input(format!("cannot start the explorer's runtime: {e}")))?;
    let mut explorer = Explorer::new(app, ResultsDir::at(dir), study);
    let mut terminal = ratatui::init();
    let _ = ratatui::crossterm::execute!(
        std::io::stdout(),
        ratatui::crossterm::event::EnableMouseCapture
    );
    let result = runtime.block_on(explorer.run(&mut terminal));
    let _ = ratatui::crossterm::execute!(
        std::io::stdout(),
        ratatui::crossterm::event::DisableMouseCapture
    );
    ratatui::restore();
    if let Some(msg) = explorer.app.exit_message() {
        eprintln!("{msg}");
    }
    // Dropping the job cancels it and waits for its thread, outside the runtime; dropping
    // the runtime lets a file write in flight finish.
    drop(explorer);
    drop(runtime);
    result
}

/// What woke the loop.
enum Wake {
    Term(Option<std::io::Result<TermEvent>>),
    Job(Option<Event>),
    Done(Action),
    Frame,
}

/// The explorer's state with what drives it: the job and the channel that blocking tasks
/// answer on.
struct Explorer {
    app: App,
    dir: ResultsDir,
    study: Option<Study>,
    job: Option<Job>,
    tx: UnboundedSender<Action>,
    rx: UnboundedReceiver<Action>,
}

/// The job's next event; never, when no job runs.
async fn next_event(job: &mut Option<Job>) -> Option<Event> {
    match job {
        Some(j) => j.next().await,
        None => std::future::pending().await,
    }
}

impl Explorer {
    fn new(app: App, dir: ResultsDir, study: Option<Study>) -> Explorer {
        let (tx, rx) = unbounded_channel();
        Explorer {
            app,
            dir,
            study,
            job: None,
            tx,
            rx,
        }
    }

    async fn run(&mut self, terminal: &mut ratatui::DefaultTerminal) -> Result<()> {
        let mut keys = EventStream::new();
        let mut tick = tokio::time::interval(FRAME);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        if let Ok(size) = terminal.size() {
            self.dispatch(Action::Resize(size.width, size.height));
        }
        self.start_job();
        self.dispatch(Action::Reload);
        let mut dirty = true;
        while !self.app.quit {
            let wake = tokio::select! {
                ev = keys.next() => Wake::Term(ev),
                ev = next_event(&mut self.job) => Wake::Job(ev),
                Some(a) = self.rx.recv() => Wake::Done(a),
                _ = tick.tick() => Wake::Frame,
            };
            let action = match wake {
                Wake::Term(Some(ev)) => term_action(&self.app, ev.map_err(term_err)?),
                Wake::Term(None) => Some(Action::Quit),
                Wake::Job(ev) => self.job_action(ev),
                Wake::Done(a) => Some(a),
                Wake::Frame => {
                    if std::mem::take(&mut dirty) {
                        let app = &self.app;
                        terminal.draw(|f| view::render(f, app)).map_err(term_err)?;
                    }
                    None
                }
            };
            if let Some(a) = action {
                self.dispatch(a);
                dirty = true;
            }
        }
        if let Some(job) = &self.job {
            job.cancel();
        }
        Ok(())
    }

    /// The one way state changes: `update`, then its effects.
    fn dispatch(&mut self, action: Action) {
        for effect in app::update(&mut self.app, action) {
            self.effect(effect);
        }
    }

    fn effect(&mut self, effect: Effect) {
        match effect {
            Effect::Reload => {
                let dir = self.dir.clone();
                self.blocking(move || {
                    let mut out = vec![match read(&dir) {
                        Ok(l) => Action::Loaded(Box::new(l)),
                        Err(e) => Action::LoadFailed(e.to_string()),
                    }];
                    out.extend(check_folder(&dir.root).ok().map(Action::Model));
                    out.extend(super::plan_precisions(&dir.root).map(Action::Precisions));
                    out
                });
            }
            Effect::WriteReport => {
                let dir = self.dir.clone();
                self.blocking(move || match analysis::write_report(&dir) {
                    Ok(_) => vec![],
                    Err(e) => vec![Action::Status(format!("report: {e}"))],
                });
            }
            Effect::Export {
                path,
                items,
                overwrite,
            } => {
                let folder = self.dir.root.clone();
                let precisions = self.app.precisions.clone();
                self.blocking(move || vec![export(&folder, &precisions, path, items, overwrite)])
            }
            Effect::Copy(text) => osc52(&text),
            Effect::CancelRun => {
                if let Some(j) = &self.job {
                    j.cancel();
                }
            }
            Effect::ResumeRun => self.start_job(),
            Effect::Quit => {}
        }
    }

    /// Run `work` on tokio's blocking pool; the actions it returns come back to the loop.
    fn blocking(&self, work: impl FnOnce() -> Vec<Action> + Send + 'static) {
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            for a in work() {
                let _ = tx.send(a);
            }
        });
    }

    /// Start (or resume) the study when there is one and no job runs.
    fn start_job(&mut self) {
        if self.job.is_some() {
            return;
        }
        if let Some(study) = &self.study {
            self.job = Some(Job::start(study.clone()));
            self.dispatch(Action::RunStarted);
        }
    }

    /// The job ended: its thread is joined on the blocking pool.
    fn end_job(&mut self) {
        if let Some(job) = self.job.take() {
            tokio::task::spawn_blocking(move || drop(job));
        }
    }

    /// A study event as an action.
    fn job_action(&mut self, ev: Option<Event>) -> Option<Action> {
        let at = Instant::now();
        let Some(ev) = ev else {
            self.end_job();
            return Some(Action::RunEnded(RunEnd::Failed(
                "the study stopped without a result".into(),
            )));
        };
        Some(match ev {
            Event::Planned {
                total,
                done,
                per_precision,
            } => Action::Planned {
                total,
                done,
                per_precision: per_precision
                    .into_iter()
                    .map(|(p, t, d)| (p.as_str().to_string(), t, d))
                    .collect(),
                at,
            },
            Event::Stage(s) => Action::Stage(s),
            Event::Progress {
                precision, records, ..
            } => Action::Advanced {
                precision: precision.as_str().to_string(),
                records,
                at,
            },
            Event::PartWritten { .. } => Action::Reload,
            Event::StageDone(_) => return None,
            Event::Finished(_) => {
                self.end_job();
                Action::RunEnded(RunEnd::Finished)
            }
            Event::Failed(e) => {
                self.end_job();
                Action::RunEnded(match e {
                    Error::Cancelled => RunEnd::Cancelled,
                    e => RunEnd::Failed(e.to_string()),
                })
            }
        })
    }
}

/// Write the CSV unless the path is inside the results folder or (without `overwrite`)
/// already exists; then the user is asked.
/// The CSV has columns for the run's precisions only.
fn export(
    folder: &Path,
    precisions: &[String],
    path: PathBuf,
    items: Vec<ItemView>,
    overwrite: bool,
) -> Action {
    let abs = |p: &Path| -> PathBuf {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        match (p.parent(), p.file_name()) {
            (Some(dir), Some(name)) => dir.canonicalize().unwrap_or(dir.to_path_buf()).join(name),
            _ => p,
        }
    };
    let root = folder.canonicalize().unwrap_or_else(|_| abs(folder));
    if abs(&path).starts_with(&root) {
        return Action::Status(format!(
            "export refused: {} is inside the results folder; choose a path outside it",
            path.display()
        ));
    }
    if path.exists() && !overwrite {
        return Action::ExportExists(path, items);
    }
    let precisions: Vec<&str> = precisions.iter().map(String::as_str).collect();
    Action::Status(
        match store::export::write_csv_for(&path, &items, &precisions) {
            Ok(()) => format!(
                "exported {} item{} to {}",
                items.len(),
                if items.len() == 1 { "" } else { "s" },
                path.display()
            ),
            Err(e) => format!("export failed: {e}"),
        },
    )
}

/// The command line as a shell would take it back (arguments quoted where needed).
fn shell_words(args: impl Iterator<Item = String>) -> String {
    args.map(|a| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c))
        {
            a
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    })
    .collect::<Vec<_>>()
    .join(" ")
}

/// A terminal event as an action: keys through the key table (or the open prompt's line
/// editor, or the open question), mouse wheel and clicks, resizes.
fn term_action(app: &App, ev: TermEvent) -> Option<Action> {
    match ev {
        TermEvent::Key(k) if k.kind != KeyEventKind::Release => {
            if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
                return Some(Action::ForceQuit);
            }
            if app.confirm.is_some() {
                return Some(Action::Confirm(matches!(
                    k.code,
                    KeyCode::Char('y') | KeyCode::Char('Y')
                )));
            }
            if app.prompt.is_open() {
                return match k.code {
                    KeyCode::Enter => Some(Action::Submit),
                    KeyCode::Esc => Some(Action::Escape),
                    _ => to_input_request(&ev).map(Action::Edit),
                };
            }
            match keymap::lookup(app.screen, k) {
                // The help scrolls with the keys that scroll a screen; others close it.
                Some(
                    a @ (Action::Up
                    | Action::Down
                    | Action::PageUp
                    | Action::PageDown
                    | Action::Top
                    | Action::Bottom),
                ) if app.help => Some(a),
                _ if app.help => Some(Action::Help),
                other => other.or(Some(Action::Unmapped)),
            }
        }
        TermEvent::Mouse(m) => match m.kind {
            MouseEventKind::ScrollUp => Some(Action::Up),
            MouseEventKind::ScrollDown => Some(Action::Down),
            MouseEventKind::Down(MouseButton::Left) => Some(Action::Click(m.row)),
            _ => None,
        },
        TermEvent::Resize(w, h) => Some(Action::Resize(w, h)),
        _ => None,
    }
}

/// Copy to the terminal's clipboard (OSC 52).
fn osc52(text: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(text);
    print!("\x1b]52;c;{b64}\x07");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::update::update;
    use ratatui::crossterm::event::KeyEvent;

    #[test]
    fn a_key_with_no_meaning_on_the_screen_clears_a_stale_message() {
        let mut app = App::new(std::path::PathBuf::from("r"), "m".into(), "cpu".into());
        app.status = "export refused: the path is inside the results folder".into();
        for code in [KeyCode::Esc, KeyCode::Left, KeyCode::Char('~')] {
            let ev = TermEvent::Key(KeyEvent::new(code, KeyModifiers::NONE));
            let action = term_action(&app, ev).expect("every key press is an action");
            update(&mut app, action);
            assert!(app.status.is_empty(), "{code:?} left {:?}", app.status);
            app.status = "stale".into();
        }
    }
}
