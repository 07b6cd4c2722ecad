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
pub use app::{Loaded, Partial};
use std::path::Path;

/// Read a results folder through the verified reader: the list gets every finished record;
/// the report (and the summary, through `partial`) only the items the reader's `--partial`
/// rule pools when the folder is unfinished, labelled as it labels them.
pub fn read(dir: &ResultsDir) -> Result<Loaded> {
    if !dir.items_path().is_file() {
        return Ok(Loaded::default());
    }
    if !dir.manifest_path().is_file() {
        let items = store::read_items(&dir.items_path())?;
        return Ok(Loaded {
            views: store::view::build(&items, &[], None),
            ..Loaded::default()
        });
    }
    let verified = store::verify::read_verified(dir)?;
    // The explorer and the export show the study's option order.
    let views = store::view::build(
        &verified.items,
        &store::study_order(verified.records.clone()),
        None,
    );
    let pooled = verified.pooled(true, &dir.root)?;
    let report = if pooled.records.is_empty() {
        None
    } else {
        let ppl = store::perplexity::read(dir)?;
        Some(Box::new(
            analysis::compute(&pooled.records, &pooled.items).with_perplexity(ppl),
        ))
    };
    let partial = pooled.partial.map(|label| Partial {
        label,
        items: pooled
            .items
            .iter()
            .map(|i| (i.category.clone(), i.example_id))
            .collect(),
    });
    Ok(Loaded {
        views,
        report,
        partial,
    })
}

/// Read a results folder's items, records and report: [`read`] less the partial label.
pub fn load(dir: &ResultsDir) -> Result<(Vec<ItemView>, Option<analysis::Report>)> {
    let l = read(dir)?;
    Ok((l.views, l.report.map(|r| *r)))
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
