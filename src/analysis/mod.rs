//! Statistics over a results folder: per-precision rates with intervals and tests, BBQ bias
//! scores, the study's transitions with their exact expectation and noise floor, per-item
//! KL divergence and flips, and a logistic regression on bit width.

pub mod figures;
pub mod orders;
pub mod report;
pub mod stats;
pub mod tables;

pub use report::{Report, compute};

use crate::error::Result;
use crate::store::{self, ResultsDir};

/// Compute the report of a results folder and write `metrics.parquet` (the rows),
/// `transitions.parquet` and `report.md` into it.
pub fn write_report(dir: &ResultsDir) -> Result<Report> {
    write_report_with(dir, &report::Options::default())
}

/// [`write_report`] with `options` (such as the latent-bias filter).
pub fn write_report_with(dir: &ResultsDir, options: &report::Options) -> Result<Report> {
    let items = if dir.items_path().is_file() {
        store::read_items(&dir.items_path())?
    } else {
        Vec::new()
    };
    let report = report::compute_with(&store::read_all_records(dir)?, &items, options)
        .with_perplexity(store::perplexity::read(dir)?);
    tables::METRICS.write(&dir.root.join("metrics.parquet"), &report.rows)?;
    tables::TRANSITIONS.write(&dir.root.join("transitions.parquet"), &report.transitions)?;
    std::fs::write(dir.root.join("report.md"), report.markdown()).map_err(|e| {
        crate::Error::Store(format!(
            "{}: cannot write report.md: {e}",
            dir.root.display()
        ))
    })?;
    Ok(report)
}
