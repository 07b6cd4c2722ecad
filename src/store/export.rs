//! CSV export of items: text, roles and, per precision, the majority role and P(biased),
//! then the first precision at which the item became biased. Text cells a spreadsheet would
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

/// The CSV text of `views`.
pub fn csv(views: &[ItemView]) -> String {
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
    for p in LADDER {
        header.push(format!("role_{p}"));
        header.push(format!("p_biased_{p}"));
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
        for p in LADDER {
            match v.cells.get(p) {
                Some(c) => {
                    row.push(c.majority.as_str().to_string());
                    row.push(format!("{:.6}", c.p_biased));
                }
                None => row.extend([String::new(), String::new()]),
            }
        }
        row.push(v.transition_first.clone().unwrap_or_default());
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// Write `views` as CSV to `path` (through a temporary file).
pub fn write_csv(path: &Path, views: &[ItemView]) -> Result<()> {
    let tmp = path.with_extension("csv.tmp");
    std::fs::write(&tmp, csv(views))
        .map_err(|e| Error::Store(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::Store(format!("cannot write {}: {e}", path.display())))
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
