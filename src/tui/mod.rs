//! The explorer: a terminal UI over a results folder, optionally while the study runs in a
//! background thread. Events → actions → one `update` → effects; rendering is a pure
//! function of the state. The terminal is restored on exit and on panic.

pub mod app;
pub mod keymap;
pub mod view;

use crate::analysis;
use crate::error::{Error, Result};
use crate::store::{self, ResultsDir, view::ItemView};
use crate::study::Event;
use app::{Action, App, Effect, Progress, Prompt};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, MouseEventKind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Read a results folder's items, records and report.
pub fn load(dir: &ResultsDir) -> Result<(Vec<ItemView>, Option<analysis::Report>)> {
    if !dir.items_path().is_file() {
        return Ok((Vec::new(), None));
    }
    let items = store::read_items(&dir.items_path())?;
    let records = store::read_all_records(dir)?;
    let report = (!records.is_empty()).then(|| analysis::compute(&records, &items));
    // The explorer and the export show the study's option order.
    let records = store::study_order(records);
    Ok((store::view::build(&items, &records, None), report))
}

/// Check that `dir` is a results folder this version reads, and name its model and scheme.
pub fn check_folder(dir: &Path) -> Result<String> {
    let rd = ResultsDir::at(dir);
    if !rd.manifest_path().is_file() {
        return Err(store::not_a_results_folder(dir));
    }
    let m = store::read_manifest(&rd.manifest_path())?;
    let model = m["models"]
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v["id"].as_str())
        .map(|s| s.to_string())
        .or_else(|| m["plan"]["models"][0]["slug"].as_str().map(String::from))
        .unwrap_or_else(|| "?".into());
    match m["plan"]["scheme"].as_str() {
        Some(scheme) => Ok(format!("{model} · scheme {scheme}")),
        None => Ok(model),
    }
}

/// A study running in the background, as the explorer controls it.
pub struct Job {
    pub events: Receiver<Event>,
    pub cancel: Arc<AtomicBool>,
    pub handle: std::thread::JoinHandle<Result<crate::study::Outcome>>,
}

/// Starts (or restarts, for resume) the background study.
pub type Starter = Box<dyn Fn() -> Job>;

fn part_count(dir: &ResultsDir) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.records_dir()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                n += 1;
            }
        }
    }
    n
}

fn osc52(text: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(text);
    print!("\x1b]52;c;{b64}\x07");
}

/// Run the explorer on `dir` until the user quits; `starter` runs the study alongside.
pub fn run(dir: &Path, device: &str, starter: Option<Starter>) -> Result<()> {
    let model = check_folder(dir).unwrap_or_else(|_| "starting".into());
    let rd = ResultsDir::at(dir);
    let mut app = App::new(dir.to_path_buf(), model, device.to_string());
    let mut job = starter.as_ref().map(|s| s());
    if job.is_some() {
        app.progress = Some(Progress {
            running: true,
            stage: "starting".into(),
            ..Default::default()
        });
    }
    let mut terminal = ratatui::init();
    let _ = ratatui::crossterm::execute!(
        std::io::stdout(),
        ratatui::crossterm::event::EnableMouseCapture
    );
    let result = event_loop(&mut terminal, &mut app, &rd, &mut job, starter.as_ref());
    let _ = ratatui::crossterm::execute!(
        std::io::stdout(),
        ratatui::crossterm::event::DisableMouseCapture
    );
    ratatui::restore();
    if let Some(j) = job.take() {
        j.cancel.store(true, Ordering::Relaxed);
        let _ = j.handle.join();
    }
    result
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    rd: &ResultsDir,
    job: &mut Option<Job>,
    starter: Option<&Starter>,
) -> Result<()> {
    let term_err = |e: std::io::Error| Error::Input(format!("terminal: {e}"));
    let mut parts_seen = usize::MAX;
    let mut started = Instant::now();
    let mut done_at_start: Option<u64> = None;
    if let Ok(size) = terminal.size() {
        update(app, Action::Resize(size.height));
    }
    loop {
        // Progress from the study.
        let mut finished = None;
        if let Some(j) = job.as_ref() {
            while let Ok(ev) = j.events.try_recv() {
                let p = app.progress.get_or_insert_with(Progress::default);
                match ev {
                    Event::Planned {
                        total,
                        done,
                        per_precision,
                    } => {
                        p.total = total;
                        p.done = done;
                        p.per_precision = per_precision
                            .into_iter()
                            .map(|(q, t, d)| (q.as_str().to_string(), t, d))
                            .collect();
                        done_at_start = Some(done);
                        started = Instant::now();
                    }
                    Event::Stage(s) => p.stage = s,
                    Event::Progress {
                        precision, records, ..
                    } => {
                        p.done += records;
                        if let Some(e) = p
                            .per_precision
                            .iter_mut()
                            .find(|e| e.0 == precision.as_str())
                        {
                            e.2 += records;
                        }
                        let secs = started.elapsed().as_secs_f64();
                        p.records_per_s =
                            (p.done - done_at_start.unwrap_or(0)) as f64 / secs.max(1e-3);
                    }
                    Event::Measured { .. } => {}
                }
            }
            if j.handle.is_finished() {
                finished = job.take().map(|j| j.handle.join());
            }
        }
        if let Some(res) = finished {
            let p = app.progress.get_or_insert_with(Progress::default);
            p.running = false;
            match res {
                Ok(Ok(outcome)) => {
                    p.finished = true;
                    p.stage = "finished".into();
                    if let Err(e) = analysis::write_report(&outcome.dir) {
                        app.status = format!("report: {e}");
                    }
                }
                Ok(Err(Error::Cancelled)) => {}
                Ok(Err(e)) => p.error = Some(e.to_string()),
                Err(_) => p.error = Some("the study thread panicked".into()),
            }
            if app.model == "starting"
                && let Ok(m) = check_folder(&rd.root)
            {
                app.model = m;
            }
            parts_seen = usize::MAX;
        }
        // New parts on disk → reload.
        let parts = part_count(rd);
        if parts != parts_seen {
            parts_seen = parts;
            match load(rd) {
                Ok((views, report)) => update(app, Action::Data(views, report)),
                Err(e) => app.status = format!("cannot read results: {e}"),
            }
            if app.model == "starting"
                && let Ok(m) = check_folder(&rd.root)
            {
                app.model = m;
            }
        }
        terminal.draw(|f| view::render(f, app)).map_err(term_err)?;
        let mut effects = Vec::new();
        if event::poll(Duration::from_millis(100)).map_err(term_err)? {
            let action = match event::read().map_err(term_err)? {
                TermEvent::Key(k) if k.kind != KeyEventKind::Release => {
                    if matches!(app.prompt, Prompt::None) {
                        if app.help {
                            Some(Action::Help)
                        } else {
                            keymap::lookup(app.screen, k)
                        }
                    } else {
                        match k.code {
                            KeyCode::Enter => Some(Action::Submit),
                            KeyCode::Esc => Some(Action::Escape),
                            KeyCode::Backspace => Some(Action::Backspace),
                            KeyCode::Char(c) => Some(Action::Char(c)),
                            _ => None,
                        }
                    }
                }
                TermEvent::Mouse(m) => match m.kind {
                    MouseEventKind::ScrollUp => Some(Action::Up),
                    MouseEventKind::ScrollDown => Some(Action::Down),
                    _ => None,
                },
                TermEvent::Resize(_, h) => Some(Action::Resize(h)),
                _ => None,
            };
            if let Some(a) = action {
                effects = app::update(app, a);
            }
        }
        for e in effects {
            match e {
                Effect::Export(path, items) => {
                    let msg = match store::export::write_csv(&path, &items) {
                        Ok(()) => format!("exported {} items to {}", items.len(), path.display()),
                        Err(e) => format!("export failed: {e}"),
                    };
                    update(app, Action::Status(msg));
                }
                Effect::Copy(text) => osc52(&text),
                Effect::CancelRun => {
                    if let Some(j) = job.as_ref() {
                        j.cancel.store(true, Ordering::Relaxed);
                    }
                }
                Effect::ResumeRun => {
                    if job.is_none()
                        && let Some(s) = starter
                    {
                        *job = Some(s());
                        let p = app.progress.get_or_insert_with(Progress::default);
                        p.running = true;
                        p.error = None;
                    }
                }
                Effect::Quit => {}
            }
        }
        if app.quit {
            if let Some(j) = job.as_ref() {
                j.cancel.store(true, Ordering::Relaxed);
            }
            return Ok(());
        }
    }
}

fn update(app: &mut App, action: Action) {
    let _ = app::update(app, action);
}
