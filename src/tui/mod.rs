//! The explorer: a terminal UI over a results folder, optionally while the study runs in
//! its own thread. On a tokio runtime, one `select!` waits on terminal events, the job's
//! events, the results of background work and a render tick; each becomes an `Action` for
//! the one `update`, whose effects run here: reading the folder and writing files on
//! blocking tasks (never on the UI task), run control on the job. Nothing polls the disk:
//! the job says when a part is written. Rendering is a pure function of the state, drawn
//! at most once per tick. The terminal is restored on exit and on panic.

pub mod app;
pub mod detail;
pub mod keymap;
pub mod list;
pub mod summary;
pub mod theme;
pub mod view;

mod runner;
mod update;

use crate::analysis;
use crate::error::Result;
use crate::store::{self, ResultsDir, view::ItemView};
use std::path::Path;

/// Read a results folder's items, records and report.
pub fn load(dir: &ResultsDir) -> Result<(Vec<ItemView>, Option<analysis::Report>)> {
    if !dir.items_path().is_file() {
        return Ok((Vec::new(), None));
    }
    let items = store::read_items(&dir.items_path())?;
    let records = store::read_all_records(dir)?;
    let report = if records.is_empty() {
        None
    } else {
        Some(analysis::compute(&records, &items).with_perplexity(store::perplexity::read(dir)?))
    };
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

/// The precisions of the folder's plan (as its manifest names them), in ladder order.
pub fn plan_precisions(dir: &Path) -> Option<Vec<String>> {
    let m = store::read_manifest(&ResultsDir::at(dir).manifest_path()).ok()?;
    let names: Vec<String> = m["plan"]["precisions"]
        .as_array()?
        .iter()
        .filter_map(|p| p.as_str().map(String::from))
        .collect();
    (!names.is_empty()).then_some(names)
}

/// Run the explorer on `dir` until the user quits; with `study`, the study runs alongside
/// (and `r` resumes it after a cancel or a failure).
pub fn run(dir: &Path, device: &str, study: Option<crate::study::Study>) -> Result<()> {
    runner::run(dir, device, study)
}
