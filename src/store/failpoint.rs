//! Failure points, a testing hook for crash tests: with `STEREOSCOPE_FAIL_AT=NAME[:N]` in the
//! environment, a study run aborts the process (`std::process::abort`: no destructor runs,
//! nothing is flushed, as after `kill -9`) the N-th time (from 1; 1 when left out) it reaches
//! the point NAME. Only a study run arms the hook ([`arm`]); other commands never stop.
//!
//! The points, in the order a run reaches them:
//! - `manifest-tmp`: a manifest's temporary file is written, not yet renamed into place;
//! - `items-tmp`: `items.parquet`'s temporary file is written, not yet renamed;
//! - `part-tmp`: a part's temporary file is written, not yet renamed;
//! - `part-renamed`: a part is in place, the manifest does not list it yet;
//! - `perplexity`: a precision's perplexity is measured (the rows are not written yet);
//! - `table-tmp`: a derived table's temporary file (the perplexity rows) is written, not
//!   yet renamed;
//! - `final-manifest`: everything is written but the manifest's end-of-run stamp.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Every point name, for the parser and the documentation.
pub const POINTS: [&str; 7] = [
    "manifest-tmp",
    "items-tmp",
    "part-tmp",
    "part-renamed",
    "perplexity",
    "table-tmp",
    "final-manifest",
];

static ARMED: AtomicBool = AtomicBool::new(false);
static HITS: AtomicU64 = AtomicU64::new(0);
static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();

/// Parse `NAME[:N]`; `None` for an unknown point or a bad count.
pub fn parse(spec: &str) -> Option<(String, u64)> {
    let (name, n) = match spec.split_once(':') {
        Some((name, n)) => (name, n.trim().parse().ok().filter(|&n| n >= 1)?),
        None => (spec, 1),
    };
    let name = name.trim();
    POINTS.contains(&name).then(|| (name.to_string(), n))
}

/// Arm the hook for this process (a study run does): reads `STEREOSCOPE_FAIL_AT` once. A
/// value that names no point is said on stderr and ignored.
pub fn arm() {
    TARGET.get_or_init(|| {
        let spec = std::env::var("STEREOSCOPE_FAIL_AT").ok()?;
        let target = parse(&spec);
        if target.is_none() {
            eprintln!(
                "warning: STEREOSCOPE_FAIL_AT={spec} ignored: expected NAME[:N] with NAME one of {}",
                POINTS.join(", ")
            );
        }
        target
    });
    ARMED.store(true, Ordering::Relaxed);
}

/// The run reached point `name`: abort if it is the armed point's N-th time.
pub fn hit(name: &str) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let Some(Some((target, n))) = TARGET.get() else {
        return;
    };
    if target == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
        eprintln!("STEREOSCOPE_FAIL_AT: aborting at {name}:{n}");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_names_a_known_point_and_a_count_from_one() {
        assert_eq!(parse("part-tmp"), Some(("part-tmp".into(), 1)));
        assert_eq!(parse("part-renamed:3"), Some(("part-renamed".into(), 3)));
        assert_eq!(parse("part-tmp:0"), None);
        assert_eq!(parse("part-tmp:x"), None);
        assert_eq!(parse("parts-tmp"), None);
    }

    #[test]
    fn an_unarmed_process_passes_every_point() {
        // The unit-test process never arms the hook: every point returns.
        for p in POINTS {
            hit(p);
        }
    }
}
