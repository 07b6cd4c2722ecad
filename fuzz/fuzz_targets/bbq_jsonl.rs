//! A BBQ category file (JSONL): every input reads to items or an error, with and without
//! `--skip-bad`; never a panic.
#![no_main]

#[path = "input.rs"]
mod input;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = input::file("Age.jsonl", data);
    let targets = Default::default();
    let _ = stereoscope::bbq::read_category(&path, &targets, false);
    let _ = stereoscope::bbq::read_category(&path, &targets, true);
});
