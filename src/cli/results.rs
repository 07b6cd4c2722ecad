//! The commands that read a finished results folder: `report`, `export` and `open`. Each
//! goes through the verified reader (`store::verify`): an unfinished folder is refused
//! unless `--partial`, which restricts the statistics to the items finished at every
//! precision and labels them. `report` writes its derived tables only where it may (never
//! on a read-only folder, never for a partial report); `export` never overwrites without
//! `--force` and never writes into the results folder; `open` needs a terminal.

use super::args::{ExportArgs, ReportArgs, ReportFormat};
use crate::analysis;
use crate::error::{Error, Result};
use crate::store::{self, ResultsDir, verify};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// The verified items and records of a results folder that statistics may pool.
fn pooled(dir: &Path, partial: bool) -> Result<(ResultsDir, store::Manifest, verify::Pooled)> {
    let rd = ResultsDir::at(dir);
    if !rd.manifest_path().is_file() {
        return Err(store::not_a_results_folder(dir));
    }
    let v = verify::read_verified(&rd)?;
    for p in &v.pending {
        eprintln!(
            "note: {} is not listed in the manifest yet (a run is writing it, or stopped just after it); left out",
            p.display()
        );
    }
    let manifest = v.manifest.clone();
    let pooled = v.pooled(partial, dir)?;
    if let Some(label) = &pooled.partial {
        eprintln!("{label}");
    }
    Ok((rd, manifest, pooled))
}

/// Whether files can be written into `dir`.
fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".write-probe.{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// `report`: compute and print the statistics of a results folder; write
/// metrics.parquet, transitions.parquet and report.md into it when it is whole and writable.
pub fn report(a: &ReportArgs) -> Result<()> {
    let (rd, _, pooled) = pooled(&a.dir, a.partial)?;
    let options = analysis::report::Options {
        latent_band: a.latent_band,
    };
    let report = analysis::report::compute_with(&pooled.records, &pooled.items, &options)
        .with_perplexity(store::perplexity::read(&rd)?);
    let label = pooled.partial.as_deref();
    let markdown = match label {
        Some(l) => format!("> {l}\n\n{}", report.markdown()),
        None => report.markdown(),
    };
    if label.is_some() {
        eprintln!(
            "note: a partial report: metrics.parquet, transitions.parquet and report.md not written"
        );
    } else if !writable(&rd.root) {
        eprintln!(
            "note: {} is not writable: metrics.parquet, transitions.parquet and report.md not written",
            rd.root.display()
        );
    } else {
        analysis::tables::METRICS.write(&rd.root.join("metrics.parquet"), &report.rows)?;
        analysis::tables::TRANSITIONS
            .write(&rd.root.join("transitions.parquet"), &report.transitions)?;
        std::fs::write(rd.root.join("report.md"), &markdown).map_err(|e| {
            Error::Store(format!(
                "{}: cannot write report.md: {e}",
                rd.root.display()
            ))
        })?;
    }
    match a.format {
        ReportFormat::Table => {
            if let Some(l) = label {
                println!("{l}");
            }
            println!("{}", report.table());
        }
        ReportFormat::Markdown => println!("{markdown}"),
        ReportFormat::Json => {
            let mut v = serde_json::to_value(&report)
                .map_err(|e| Error::Store(format!("report as JSON: {e}")))?;
            if let (Some(l), Some(o)) = (label, v.as_object_mut()) {
                o.insert("partial".into(), l.into());
            }
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
    }
    if let Some(out) = &a.figures {
        figures(&report, store::study_order(pooled.records), out)?;
    }
    Ok(())
}

/// `report --figures`: write the figures and say what was written.
fn figures(report: &analysis::Report, records: Vec<store::StoredRecord>, out: &Path) -> Result<()> {
    let ppl: Vec<analysis::figures::PplPoint> = report
        .perplexity
        .iter()
        .map(|r| analysis::figures::PplPoint {
            model: r.model.clone(),
            scheme: r.scheme.clone(),
            precision: r.precision.clone(),
            ppl: r.perplexity,
            delta_ppl_pct: r.delta_ppl_pct,
        })
        .collect();
    let written = analysis::figures::write_figures(report, &records, &ppl, out)?;
    for note in &written.notes {
        eprintln!("note: {note}");
    }
    for path in &written.written {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The absolute form of `p` with its existing part resolved (symlinks, `..`).
fn resolved(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = match parent.as_os_str().is_empty() {
                true => Path::new("."),
                false => parent,
            };
            resolved(parent).join(name)
        }
        _ => p.to_path_buf(),
    }
}

/// Where `export` may write: not inside the results folder, not a folder, not an existing
/// file unless `force`.
fn check_export_out(a: &ExportArgs) -> Result<()> {
    let out = &a.out;
    if out.is_dir() {
        return Err(Error::Input(format!(
            "--out {} is a folder; name the CSV file to write",
            out.display()
        )));
    }
    if resolved(out).starts_with(resolved(&a.dir)) {
        return Err(Error::Input(format!(
            "--out {} is inside the results folder {}; write the CSV elsewhere (the folder holds only what runs write)",
            out.display(),
            a.dir.display()
        )));
    }
    if out.exists() && !a.force {
        return Err(Error::Input(format!(
            "--out {} exists; pass --force to replace it",
            out.display()
        )));
    }
    Ok(())
}

/// `export`: items of a results folder to CSV, with a column pair per precision of the run.
pub fn export(a: &ExportArgs) -> Result<()> {
    check_export_out(a)?;
    let (_, manifest, pooled) = pooled(&a.dir, a.partial)?;
    let records = store::study_order(pooled.records);
    let views: Vec<_> = store::view::build(&pooled.items, &records, None)
        .into_iter()
        .filter(|v| a.category.as_ref().is_none_or(|c| &v.item.category == c))
        .filter(|v| {
            a.transitions_at
                .is_none_or(|p| v.became_biased_at(p.as_str()))
        })
        .collect();
    let precisions: Vec<&str> = manifest
        .plan
        .precisions
        .iter()
        .map(|p| p.as_str())
        .collect();
    store::export::write_csv_for(&a.out, &views, &precisions)?;
    eprintln!("exported {} items to {}", views.len(), a.out.display());
    Ok(())
}

/// `open`: the explorer on a results folder, which must be finished unless `partial`.
pub fn open(dir: &Path, partial: bool) -> Result<()> {
    crate::tui::check_folder(dir)?;
    let rd = ResultsDir::at(dir);
    let v = verify::read_verified(&rd)?;
    let unfinished = v.unfinished();
    if !unfinished.is_empty() {
        if !partial {
            return Err(Error::Input(format!(
                "{}: unfinished: {}; rerun the same command to finish it (it resumes), or `open --partial` to browse what is finished",
                dir.display(),
                unfinished.join(", ")
            )));
        }
        eprintln!(
            "PARTIAL: unfinished: {}; the explorer shows every finished record",
            unfinished.join(", ")
        );
    }
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return Err(Error::Input(format!(
            "open needs a terminal (stdin and stdout are not one); headless, use `stereoscope report {}` or `stereoscope export {} --out FILE.csv`",
            dir.display(),
            dir.display()
        )));
    }
    crate::tui::run(dir, "no model loaded", None)
}
