#!/usr/bin/env bash
# Random-kill crash test: a small study (the tiny answering llama GGUF of tests/common, 16 Age
# items in parts of 2, bf16 and q4, seeds 1 and 2, perplexity over 2 sequences of 32 tokens;
# 16 parts, 64 records) runs once uninterrupted into a reference folder. Then, ROUNDS times,
# the same command starts into a fresh folder and is killed with SIGKILL after a delay drawn
# uniformly over the reference run's duration (shortened by any first run that ends sooner);
# in about one round of three the rerun is killed the same way too; then the same command
# runs to the end. After FAILPOINTS further
# rounds each stopped at a failure point drawn at random (STEREOSCOPE_FAIL_AT=NAME:N, an
# abort with nothing flushed: the narrow windows inside a manifest, items or part write that
# a timed kill rarely hits), every finished folder is compared with the reference: the
# records of each precision (pyarrow, every column but latency_ms, a measured time), the
# part files' names, items.parquet and perplexity.parquet; `report` must read it and no
# temporary file may be left (one of the report's own tables is counted apart: see below).
#
#   scripts/crash-random.sh [ROUNDS [FAILPOINTS]]     # default 30 and 10
#   CRASH_SEED=N scripts/crash-random.sh              # repeat a run's random draws
#
# Exits non-zero on any mismatch, any rerun that fails, or a report that fails. Needs
# python3 with pyarrow and the BBQ data (STEREOSCOPE_TEST_BBQ, else ../shared/bbq).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-30}"
failpoints="${2:-10}"
bbq="${STEREOSCOPE_TEST_BBQ:-$(pwd)/../shared/bbq}"
[ -f "$bbq/Age.jsonl" ] || { echo "BBQ data not found at $bbq; set STEREOSCOPE_TEST_BBQ" >&2; exit 2; }
work="$(mktemp -d "${TMPDIR:-/tmp}/stereoscope-crash-random.XXXXXX")"
echo "work folder: $work"
cargo build --release --bin stereoscope
STEREOSCOPE_CRASH_MODEL="$work/tiny.gguf" \
    cargo test --release --test crash -- --ignored --exact write_the_random_kill_model >/dev/null
ulimit -c 0
exec python3 - "$(pwd)/target/release/stereoscope" "$work" "$bbq" "$rounds" "$failpoints" <<'PY'
import os, random, signal, subprocess, sys, time
import pyarrow.parquet as pq

binary, work, bbq, rounds, failpoints = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 2**32))
rng = random.Random(seed)
print(f"CRASH_SEED={seed}")

env = {k: v for k, v in os.environ.items() if k not in ("STEREOSCOPE_FAIL_AT", "STEREOSCOPE_BBQ_DIR")}
env.update(STEREOSCOPE_CACHE=os.path.join(work, "cache"), HF_HUB_OFFLINE="1")

def command(out):
    return [binary, "--batch", "--device", "cpu", "--model", os.path.join(work, "tiny.gguf"),
            "--bbq-dir", bbq, "--categories", "Age", "--limit", "16", "--part-size", "2",
            "--precisions", "bf16,q4", "--seeds", "1,2", "--ppl-sequences", "2",
            "--ppl-seq-len", "32", "--out", out]

def run(out, fail_at=None):
    e = dict(env)
    if fail_at:
        e["STEREOSCOPE_FAIL_AT"] = fail_at
    return subprocess.run(command(out), env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

def parts(root):
    rec = os.path.join(root, "records")
    out = []
    for d, _, fs in os.walk(rec):
        out += [os.path.relpath(os.path.join(d, f), root) for f in fs if f.endswith(".parquet") and not f.startswith(".")]
    return sorted(out)

def precisions(root):
    """Each precision folder's rows (latency aside) in file order, and its part names."""
    out = {}
    for p in parts(root):
        t = pq.read_table(os.path.join(root, p))
        rows = t.drop_columns(["latency_ms"]).to_pylist()
        key = os.path.dirname(p)
        names, acc = out.setdefault(key, ([], []))
        names.append(os.path.basename(p))
        acc.extend(rows)
    return out

def table(root, name):
    return pq.read_table(os.path.join(root, name)).to_pylist()

# The report's tables are written by commands that take no lock, so a run does not remove
# their temporary files (RELIABILITY.md); one left by a stop is counted, not failed.
REPORT_TABLES = (".metrics.parquet.", ".transitions.parquet.", ".report.md.")

def temporaries(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, fs in os.walk(root) for f in fs if f.endswith(".tmp"))

ref = os.path.join(work, "reference")
t0 = time.monotonic()
r = run(ref)
duration = time.monotonic() - t0
if r.returncode != 0:
    sys.exit(f"the reference run failed ({r.returncode}): {r.stderr}")
want = precisions(ref)
want_items, want_ppl = table(ref, "items.parquet"), table(ref, "perplexity.parquet")
n_records = sum(len(v[1]) for v in want.values())
print(f"reference: {len(parts(ref))} parts, {n_records} records, "
      f"{len(want_ppl)} perplexity rows, {duration:.2f} s")

stats = dict(killed=0, finished_first=0, aborted=0, compared=0, mismatches=0, failures=0,
             report_tmp=0)
at_kill = []

def start_and_kill(out):
    """Start the command, SIGKILL it after a uniform delay; True if it was still running.
    A first run that ends before its kill shortens the duration drawn over (a machine
    busier while the reference ran would otherwise leave most runs unkilled)."""
    global duration
    delay = rng.uniform(0, duration)
    first = not os.path.exists(out)
    t = time.monotonic()
    p = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        p.wait(timeout=delay)
        if first and p.returncode == 0:
            duration = min(duration, time.monotonic() - t)
        if p.returncode != 0:
            print(f"  {out}: a run exited {p.returncode} before its kill")
            stats["failures"] += 1
        return False
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        at_kill.append(len(parts(out)))
        return True

def finish_and_compare(out, what):
    r = run(out)
    if r.returncode != 0:
        print(f"  {what}: the rerun exited {r.returncode}: {r.stderr.strip()[-300:]}")
        stats["failures"] += 1
        return
    problems = []
    got = precisions(out)
    for key in sorted(set(want) | set(got)):
        w, g = want.get(key, ([], [])), got.get(key, ([], []))
        if w[0] != g[0]:
            problems.append(f"{key}: parts {g[0]} != {w[0]}")
        if w[1] != g[1]:
            bad = sum(1 for a, b in zip(w[1], g[1]) if a != b) + abs(len(w[1]) - len(g[1]))
            problems.append(f"{key}: {bad} of {len(w[1])} records differ")
        stats["compared"] += len(g[1])
    if table(out, "items.parquet") != want_items:
        problems.append("items.parquet differs")
    if table(out, "perplexity.parquet") != want_ppl:
        problems.append("perplexity.parquet differs")
    left = temporaries(out)
    report_left = [f for f in left if os.path.basename(f).startswith(REPORT_TABLES)]
    if report_left:
        print(f"  {what}: a report table's temporary file left: {report_left}")
        stats["report_tmp"] += 1
    if len(left) > len(report_left):
        problems.append(f"temporary files left: {sorted(set(left) - set(report_left))}")
    rep = subprocess.run([binary, "report", out], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    if rep.returncode != 0:
        problems.append(f"report exited {rep.returncode}: {rep.stderr.strip()[-300:]}")
    for p in problems:
        print(f"  {what}: MISMATCH {p}")
    stats["mismatches"] += len(problems)

for i in range(1, rounds + 1):
    out = os.path.join(work, f"kill-{i:03}")
    killed = 0
    if start_and_kill(out):
        killed += 1
    else:
        stats["finished_first"] += 1
    if killed and rng.random() < 1 / 3 and start_and_kill(out):
        killed += 1
    stats["killed"] += killed
    finish_and_compare(out, f"round {i} ({killed} kill(s))")
    print(f"round {i}: {killed} kill(s), parts on disk at the kills {at_kill[-killed:] if killed else []}")

# Failure points: the N-th time a run reaches NAME it aborts. N is drawn up to the times an
# uninterrupted run of this study reaches NAME (measured).
# (table-tmp: the perplexity rows, then the report's two tables.)
reach = {"manifest-tmp": 22, "items-tmp": 1, "part-tmp": 16, "part-renamed": 16,
         "perplexity": 2, "table-tmp": 3, "final-manifest": 1}
for i in range(1, failpoints + 1):
    name = rng.choice(sorted(reach))
    point = f"{name}:{rng.randint(1, reach[name])}"
    out = os.path.join(work, f"point-{i:03}")
    r = run(out, point)
    if r.returncode == -signal.SIGABRT:
        stats["aborted"] += 1
        state = f"aborted, {len(parts(out))} parts on disk"
    else:
        state = f"not reached (exit {r.returncode})"
    finish_and_compare(out, f"failure point {point}")
    print(f"failure point {point}: {state}")

print(f"points killed: {stats['killed']} (SIGKILL in {rounds} rounds, delays drawn over {duration:.2f} s at the end; "
      f"{stats['finished_first']} "
      f"first runs finished before their kill), failure-point aborts: {stats['aborted']} of {failpoints}")
print(f"parts on disk at the kills: {sorted(at_kill)}")
print(f"records compared: {stats['compared']} (every column but latency_ms), "
      f"mismatches: {stats['mismatches']}, failed reruns: {stats['failures']}")
print(f"folders left with a report table's temporary file: {stats['report_tmp']}")
sys.exit(1 if stats["mismatches"] or stats["failures"] else 0)
PY
