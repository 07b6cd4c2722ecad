//! A safetensors file (8-byte header length, JSON header, data): tensors or an error; never
//! a panic.
#![no_main]

#[path = "input.rs"]
mod input;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = input::file("model.safetensors", data);
    let _ = stereoscope::engine::safetensors::load(&path);
});
