//! The `stereoscope` binary.
fn main() {
    std::process::exit(stereoscope::cli::main());
}
