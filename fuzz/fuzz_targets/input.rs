//! The readers take paths: each fuzz input is written to one file per process (in the
//! system's temporary folder) and read from there.

use std::path::PathBuf;

/// Write `data` to this process's input file named `name` and return its path.
pub fn file(name: &str, data: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stereoscope-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary folder");
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write the input");
    path
}
