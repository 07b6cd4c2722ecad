//! A GGUF file: the header check (`validate`: header, metadata, tensor extents) and, when
//! it passes, the whole load (configuration, tokenizer, tensors) give a model or an error;
//! never a panic.
#![no_main]

#[path = "input.rs"]
mod input;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = input::file("model.gguf", data);
    if stereoscope::engine::gguf::validate(&path).is_ok() {
        let _ = stereoscope::engine::gguf::load("fuzz", &path);
    }
});
