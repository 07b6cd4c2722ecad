#!/usr/bin/env bash
# Fuzz every reader of untrusted files for SECONDS each (default 600), starting from the
# seeds in seeds/TARGET and keeping what libFuzzer finds in corpus/TARGET. A
# crashing input lands in artifacts/TARGET/; make it a regression test (tests/mutation.rs).
# Needs a nightly toolchain and cargo-fuzz: `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")"
# The binary seeds (a small GGUF, the GGUF that once overflowed, a safetensors file) are
# written by the test suite rather than kept in the repository.
(cd .. && cargo test --release --test mutation -- --ignored write_fuzz_seeds)
secs="${1:-600}"
for t in bbq_jsonl gguf_header safetensors_header manifest; do
    mkdir -p "corpus/$t"
    echo "== $t: ${secs}s"
    cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1
done
