#!/usr/bin/env bash
# Drives the explorer as a person would, in tmux, on a small real run of three precisions
# (bf16, q8, q4):
#   1. while the run goes, `q` and Ctrl-C ask before quitting; `n` keeps it going;
#   2. `x` cancels it, `r` resumes it in the explorer;
#   3. Ctrl-C twice quits the live run, and the last line says how to resume it;
#   4. the same command resumes the run to the end; no q6 or q3 appears on the screen;
#   5. two marked items are exported beside the results folder, and exporting again asks
#      before replacing the file;
#   6. the detail at 40×12 is one page that starts with every precision's answers, and
#      Enter switches the split view and that page; `q` goes back from the detail to the
#      list, and quits from the list;
# then checks the CSV (only the run's precisions) and that the terminal was restored.
#
# Usage: scripts/tui-e2e.sh BINARY MODEL.gguf BBQ_DIR
set -euo pipefail
bin=$1 model=$2 bbq=$3
work=$(mktemp -d)
out=$work/out
sock=stereoscope-e2e-$$
trap 'tmux -L "$sock" kill-server 2>/dev/null || true' EXIT

cmd="STEREOSCOPE_CACHE='$work' '$bin' --model '$model' --bbq-dir '$bbq' --categories Age,Religion --limit 24 --precisions bf16,q8,q4 --part-size 4 --ppl-sequences 2 --out '$out'"
tmux -L "$sock" new-session -d -x 120 -y 40 \
  "cd '$work' && $cmd; echo STEREOSCOPE-FIRST-EXITED \$?; $cmd; echo STEREOSCOPE-SECOND-EXITED \$?; sleep 600"

screen() { tmux -L "$sock" capture-pane -p -t 0; }
wait_for() { # pattern, seconds
  local end=$((SECONDS + $2))
  until screen | grep -qF -- "$1"; do
    if [ $SECONDS -ge $end ]; then
      echo "timed out waiting for: $1"; screen; exit 1
    fi
    sleep 0.3
  done
}
fail() { echo "$1"; screen; exit 1; }
keys() { tmux -L "$sock" send-keys -t 0 "$@"; }

# 1. The explorer is up with the run going: q asks first, n keeps the run.
wait_for "? help  q quit" 120
wait_for "records" 120
keys q
wait_for "Quit and cancel it (finished parts are kept)? y / n" 10
keys n
wait_for "? help  q quit" 10
keys C-c
wait_for "Quit and cancel it (finished parts are kept)? y / n (Ctrl-C again: y)" 10
keys n
wait_for "? help  q quit" 10
screen | grep -qF "STEREOSCOPE-FIRST-EXITED" && fail "n quit the explorer"

# 2. Cancel, then resume in the explorer.
keys x
wait_for "cancelled (r resumes)" 120
keys r
end=$((SECONDS + 30))
while screen | grep -qF "cancelled (r resumes)"; do
  [ $SECONDS -ge $end ] && fail "r did not resume the run"
  sleep 0.3
done
screen | grep -qF "rec/s  finished" && fail "the run finished before it could be quit live"

# 3. Quit the live run with Ctrl-C: asked, Ctrl-C again; the last line says how to resume.
keys C-c
wait_for "Quit and cancel it" 10
keys C-c
wait_for "STEREOSCOPE-FIRST-EXITED 0" 240
wait_for "is incomplete" 5
wait_for "To resume: " 5

# 4. The same command resumes and finishes; only the run's precisions are shown.
wait_for "rec/s  finished" 900
for p in q6 q3; do
  screen | grep -qw "$p" && fail "$p appears on a bf16,q8,q4 run"
done

# 5. Mark two items and export them beside the folder; exporting again asks first.
keys g Space Space
wait_for "2 marked" 10
keys e
wait_for "export CSV to: $out-items.csv" 10
keys Enter
wait_for "exported 2 items to $out-items.csv" 30
keys e
wait_for "export CSV to:" 10
keys Enter
wait_for "$out-items.csv exists. Replace it? y / n" 30
keys y
wait_for "exported 2 items to $out-items.csv" 30
# A path inside the results folder is refused.
keys e
wait_for "export CSV to:" 10
keys C-u
keys -l "$out/inside.csv"
keys Enter
wait_for "inside the results folder" 30
[ -e "$out/inside.csv" ] && fail "an export was written inside the results folder"

# 6. The detail: at 40×12 it is one page that starts with the answers and says where it is;
#    back at 120×40 it is split again; Enter shows the page and returns. q goes back from the
#    detail, then quits from the list (no run is going: no question).
keys Enter
wait_for "sampled texts" 10
tmux -L "$sock" resize-window -t 0 -x 40 -y 12
wait_for "P(" 10
wait_for " · lines 1-6/" 10
for p in bf16 q8 q4; do
  screen | grep -qE "^(▲| )$p +[^ ]+ [0-9.]+ +([A-C?] ){4}[A-C?]" || fail "no $p answers at 40x12"
done
tmux -L "$sock" resize-window -t 0 -x 120 -y 40
wait_for "sampled texts" 10
keys Enter
wait_for "Enter: split view" 10
keys Enter
wait_for "sampled texts" 10
keys q
wait_for "? help  q quit" 10
keys q
wait_for "STEREOSCOPE-SECOND-EXITED 0" 60
if screen | sed -n '/STEREOSCOPE-FIRST-EXITED/,$p' | sed 1d | grep -qF "is incomplete"; then
  fail "a finished run was called incomplete"
fi
if [ "$(tmux -L "$sock" display -p -t 0 '#{alternate_on}')" != "0" ]; then
  echo "the terminal was left in the alternate screen"; exit 1
fi

python3 - "$out-items.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
assert len(rows) == 2, f"expected 2 rows, got {len(rows)}"
cols = rows[0].keys()
for p in ("q6", "q3"):
    assert not any(c.endswith("_" + p) for c in cols), f"a {p} column: {list(cols)}"
for r in rows:
    assert r["category"] in ("Age", "Religion"), r
    for p in ("bf16", "q8", "q4"):
        assert r[f"role_{p}"] in ("biased", "anti", "unknown", "invalid"), r
        assert 0.0 <= float(r[f"p_biased_{p}"]) <= 1.0
    assert r["transition_first"] in ("", "q8", "q4"), r["transition_first"]
print("tui e2e: exported", [(r["category"], r["example_id"], r["transition_first"]) for r in rows])
PY
