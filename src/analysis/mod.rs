//! Statistics over a results folder: per-precision rates with intervals and tests, BBQ bias
//! scores, the study's transitions with their exact expectation and noise floor, per-item
//! KL divergence and flips, and a logistic regression on bit width.

pub mod figures;
pub mod orders;
pub mod report;
pub mod stats;

pub use report::{Report, compute};

use crate::error::Result;
use crate::store::{self, ResultsDir};

/// Compute the report of a results folder and write `metrics.parquet` (the rows),
/// `transitions.parquet` and `report.md` into it.
pub fn write_report(dir: &ResultsDir) -> Result<Report> {
    let items = if dir.items_path().is_file() {
        store::read_items(&dir.items_path())?
    } else {
        Vec::new()
    };
    let report = compute(&store::read_all_records(dir)?, &items)
        .with_perplexity(store::perplexity::read(dir)?);
    let to_values = |v: &dyn erased::Rows| v.values();
    store::write_json_table(&dir.root.join("metrics.parquet"), &to_values(&report.rows))?;
    store::write_json_table(
        &dir.root.join("transitions.parquet"),
        &to_values(&report.transitions),
    )?;
    std::fs::write(dir.root.join("report.md"), report.markdown()).map_err(|e| {
        crate::Error::Store(format!(
            "{}: cannot write report.md: {e}",
            dir.root.display()
        ))
    })?;
    Ok(report)
}

mod erased {
    /// Rows that serialize to JSON objects.
    pub trait Rows {
        fn values(&self) -> Vec<serde_json::Value>;
    }
    impl<T: serde::Serialize> Rows for Vec<T> {
        fn values(&self) -> Vec<serde_json::Value> {
            self.iter()
                .filter_map(|r| serde_json::to_value(r).ok())
                .collect()
        }
    }
}
