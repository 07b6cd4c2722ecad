//! stereoscope measures how quantizing an instruct LLM changes its answers on the BBQ bias
//! benchmark. Data flows one way: `bbq → prompt → engine → study → store → analysis → cli`,
//! over the terms of [`vocab`] and the study's rules in [`rules`].

pub mod analysis;
pub mod bbq;
pub mod bench;
pub mod cli;
pub mod engine;
pub mod error;
pub mod prompt;
pub mod rules;
pub mod store;
pub mod study;
pub mod tui;
pub mod vocab;

pub use error::{Error, Result};

use std::path::PathBuf;

/// The root of stereoscope's caches: `STEREOSCOPE_CACHE` when set, else the platform cache
/// folder (for example `~/.cache/stereoscope` on Linux).
pub fn cache_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("STEREOSCOPE_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("org", "stereoscope", "stereoscope")
        .map(|d| d.cache_dir().to_path_buf())
        .ok_or_else(|| {
            Error::Input("no home folder to hold the cache; set STEREOSCOPE_CACHE".into())
        })
}
