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
//!
//! Two points do not abort but fail as the device would ([`device`]): the N-th time, the
//! run gets the error candle gives when CUDA runs out of memory, through the same
//! conversion and message as a real one.
//! - `device-oom`: a part's records are scored and about to be written;
//! - `device-oom-ppl`: a precision's perplexity is about to be measured.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Every point name, for the parser and the documentation.
pub const POINTS: [&str; 9] = [
    "manifest-tmp",
    "items-tmp",
    "part-tmp",
    "part-renamed",
    "perplexity",
    "table-tmp",
    "final-manifest",
    "device-oom",
    "device-oom-ppl",
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
    if let Some(n) = reached(name) {
        eprintln!("STEREOSCOPE_FAIL_AT: aborting at {name}:{n}");
        std::process::abort();
    }
}

/// The run reached point `name` where the device may fail: the armed point's N-th time,
/// the error candle reports when CUDA runs out of memory (cudarc's `DriverError` in
/// `candle_core::Error::Cuda`), converted as every candle error is.
pub fn device(name: &str) -> crate::error::Result<()> {
    match reached(name) {
        Some(n) => {
            eprintln!("STEREOSCOPE_FAIL_AT: the device fails at {name}:{n}");
            Err(candle_core::Error::Cuda(Box::new(DriverOutOfMemory))
                .bt()
                .into())
        }
        None => Ok(()),
    }
}

/// N when this is the armed point's N-th time.
fn reached(name: &str) -> Option<u64> {
    if !ARMED.load(Ordering::Relaxed) {
        return None;
    }
    let Some(Some((target, n))) = TARGET.get() else {
        return None;
    };
    (target == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n).then_some(*n)
}

/// What cudarc's `DriverError(CUDA_ERROR_OUT_OF_MEMORY)` says (its `Display` is its
/// `Debug`, with the driver's error string).
#[derive(Debug)]
struct DriverOutOfMemory;

impl std::fmt::Display for DriverOutOfMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"
        )
    }
}

impl std::error::Error for DriverOutOfMemory {}

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
            assert!(device(p).is_ok(), "{p}");
        }
    }
}
