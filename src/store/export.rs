//! CSV export of items: text, roles and, per precision of the run, the majority role,
//! P(biased) and the seeds' counts (valid answers, biased answers: the study's rule reads
//! these, so a flagged row is explained by its own cells), then the first precision at
//! which the item became biased. Text cells a spreadsheet would
//! run as a formula (starting with `=`, `+`, `-`, `@`, tab or carriage return) are prefixed
//! with a single quote.

use super::view::{ItemView, LADDER};
use crate::error::{Error, Result};
use std::path::Path;

fn text(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The precisions the views hold, in ladder order.
pub fn precisions_of(views: &[ItemView]) -> Vec<&'static str> {
    LADDER
        .into_iter()
        .filter(|p| views.iter().any(|v| v.cells.contains_key(*p)))
        .collect()
}

/// The CSV text of `views`, with columns for the precisions they hold.
pub fn csv(views: &[ItemView]) -> String {
    csv_for(views, &precisions_of(views))
}

/// The CSV text of `views`, with columns for `precisions` (the run's, in ladder order).
pub fn csv_for(views: &[ItemView], precisions: &[&str]) -> String {
    let mut header: Vec<String> = [
        "category",
        "example_id",
        "context_condition",
        "question_polarity",
        "context",
        "question",
        "ans0",
        "ans1",
        "ans2",
        "label",
        "biased_index",
        "unknown_index",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for p in precisions {
        header.push(format!("role_{p}"));
        header.push(format!("p_biased_{p}"));
        header.push(format!("valid_seeds_{p}"));
        header.push(format!("biased_seeds_{p}"));
    }
    header.push("transition_first".into());
    let mut out = header.join(",");
    out.push('\n');
    for v in views {
        let it = &v.item;
        let mut row = vec![
            text(&it.category),
            it.example_id.to_string(),
            text(&it.context_condition),
            text(&it.question_polarity),
            text(&it.context),
            text(&it.question),
            text(&it.answers[0]),
            text(&it.answers[1]),
            text(&it.answers[2]),
            it.label.to_string(),
            it.biased_index.to_string(),
            it.unknown_index.to_string(),
        ];
        for p in precisions {
            match v.cells.get(*p) {
                Some(c) => {
                    row.push(c.majority.as_str().to_string());
                    row.push(format!("{:.6}", c.p_biased));
                    row.push(c.tally.valid.to_string());
                    row.push(c.tally.biased.to_string());
                }
                None => row.extend([String::new(), String::new(), String::new(), String::new()]),
            }
        }
        row.push(v.transition_first.clone().unwrap_or_default());
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// Write `views` as CSV to `path` (through a temporary file), with columns for the
/// precisions they hold.
pub fn write_csv(path: &Path, views: &[ItemView]) -> Result<()> {
    write_csv_for(path, views, &precisions_of(views))
}

/// Write `views` as CSV to `path` with columns for `precisions`: through a hidden temporary
/// file beside it, renamed into place, and removed when anything fails.
pub fn write_csv_for(path: &Path, views: &[ItemView], precisions: &[&str]) -> Result<()> {
    if path.is_dir() {
        return Err(Error::Store(format!(
            "{} is a folder; name the CSV file to write",
            path.display()
        )));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("export.csv");
    let tmp = path.with_file_name(format!(".{name}.{}", super::tmp_suffix()));
    let written =
        std::fs::write(&tmp, csv_for(views, precisions)).and_then(|_| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Store(format!("cannot write {}: {e}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralized_and_quotes_escaped() {
        assert_eq!(text("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(text("@cmd"), "'@cmd");
        assert_eq!(text("-2+3"), "'-2+3");
        assert_eq!(text("a, \"b\""), "\"a, \"\"b\"\"\"");
        assert_eq!(text("plain"), "plain");
    }
}
