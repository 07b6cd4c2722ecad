//! A results folder's `manifest.json`: a manifest or an error naming the file; never a
//! panic.
#![no_main]

#[path = "input.rs"]
mod input;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = input::file("manifest.json", data);
    let _ = stereoscope::store::manifest::read_manifest(&path);
});
