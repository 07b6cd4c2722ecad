#!/usr/bin/env bash
# Fuzz every reader of untrusted files (or the targets named after SECONDS) for SECONDS each
# (default 600), starting from the seeds in seeds/TARGET and keeping what libFuzzer finds in
# corpus/TARGET. A crashing input lands in artifacts/TARGET/; make it a regression test
# (tests/mutation.rs). Each target ends with libFuzzer's final statistics
# (stat::number_of_executed_units is the inputs run).
# Needs a nightly toolchain and cargo-fuzz: `cargo install cargo-fuzz`.
#   fuzz/run.sh 600                      # every target, one after another
#   fuzz/run.sh 600 hf_config manifest   # those two
set -euo pipefail
cd "$(dirname "$0")"
# The binary seeds (a small GGUF, the GGUF that once overflowed, a safetensors file) and the
# model folders the hf_config target reads its configs into are written by the test suite
# rather than kept in the repository.
(cd .. && cargo test --release --test mutation -- --ignored write_fuzz_seeds)
secs="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(bbq_jsonl gguf_header safetensors_header manifest hf_config)
fi
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== $t: ${secs}s"
    cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1
done
