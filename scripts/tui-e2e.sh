#!/usr/bin/env bash
# Drives the explorer as a person would, in tmux: starts the real binary on a small real run,
# waits until results appear and the run finishes, filters to items that became biased at q3,
# marks two, exports them to CSV, quits, and checks the CSV and that the terminal was restored.
#
# Usage: scripts/tui-e2e.sh BINARY MODEL.gguf BBQ_DIR
set -euo pipefail
bin=$1 model=$2 bbq=$3
work=$(mktemp -d)
out=$work/out
sock=stereoscope-e2e-$$
trap 'tmux -L "$sock" kill-server 2>/dev/null || true' EXIT

tmux -L "$sock" new-session -d -x 120 -y 40 \
  "cd '$work' && STEREOSCOPE_CACHE='$work' '$bin' --model '$model' --bbq-dir '$bbq' --categories Age,Religion --limit 30 --ppl-sequences 2 --out '$out'; echo STEREOSCOPE-EXITED \$?; sleep 600"

screen() { tmux -L "$sock" capture-pane -p -t 0; }
wait_for() { # pattern, seconds
  local end=$((SECONDS + $2))
  until screen | grep -qF -- "$1"; do
    if [ $SECONDS -ge $end ]; then
      echo "timed out waiting for: $1"; screen; exit 1
    fi
    sleep 0.5
  done
}
keys() { tmux -L "$sock" send-keys -t 0 "$@"; }

wait_for "bf16 q8 q6 q4 q3" 120          # the explorer is up
wait_for "records" 120                   # the run header
wait_for "finished" 900                  # results appeared while it ran; now complete
keys t
wait_for "▲ became biased at q3" 10
shown=$(screen | grep -o '[0-9]* items shown' | grep -o '^[0-9]*')
if [ "${shown:-0}" -lt 2 ]; then echo "fewer than two items became biased at q3 ($shown)"; screen; exit 1; fi
keys Space Space
wait_for "2 marked" 10
keys e
wait_for "export CSV to:" 10
keys Enter
wait_for "exported 2 items" 10
keys q
wait_for "STEREOSCOPE-EXITED 0" 60
if [ "$(tmux -L "$sock" display -p -t 0 '#{alternate_on}')" != "0" ]; then
  echo "the terminal was left in the alternate screen"; exit 1
fi

python3 - "$out/export.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
assert len(rows) == 2, f"expected 2 rows, got {len(rows)}"
for r in rows:
    assert r["category"] in ("Age", "Religion"), r
    assert r["role_bf16"] in ("anti", "unknown", "invalid"), r["role_bf16"]
    assert r["transition_first"] in ("q8", "q6", "q4", "q3"), r["transition_first"]
    for p in ("bf16", "q8", "q6", "q4", "q3"):
        assert 0.0 <= float(r[f"p_biased_{p}"]) <= 1.0
print("tui e2e: exported", [(r["category"], r["example_id"], r["transition_first"]) for r in rows])
PY
