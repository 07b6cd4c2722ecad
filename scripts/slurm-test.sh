#!/usr/bin/env bash
# Test examples/slurm against a real single-node Slurm on this machine: starts munged,
# slurmctld and slurmd (Debian's packages, installed with apt-get when missing) with a
# private configuration, key, socket, ports and state under a temporary folder; submits a
# study of two shards as an array job and the merge after it through examples/slurm/submit.sh
# on the CPU with the demo model (SmolLM2-135M-Instruct GGUF); waits for the jobs; checks
# that the merged records equal one unsharded run's (pyarrow: the same part files, every
# column but latency_ms, and items.parquet and perplexity.parquet whole); then stops the
# daemons it started. Exit 0 only when all of that held.
#
# Run as root (slurmd starts the jobs). Nothing outside the temporary folder is configured
# or started; a Slurm or munged already on the machine is left alone (other ports, own socket).
# Settings (environment): STEREOSCOPE (the binary; default: cargo build, then target/debug),
# STEREOSCOPE_TEST_MODEL (default: the SmolLM2 GGUF in the cache, fetched when missing),
# STEREOSCOPE_TEST_BBQ (default ../shared/bbq beside the repository when there, else the
# binary's own BBQ download), SLURM_TEST_PORT (slurmctld's port, slurmd's is the next; default
# 16817), SLURM_TEST_KEEP=1 keeps the temporary folder (logs, results) afterwards.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

fail() {
    echo "slurm-test: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || fail "run as root: slurmd starts the jobs and the packages are installed with apt-get"

# Debian's packages: slurmctld, slurmd, the client commands, munge.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
    ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    echo "installing slurmctld, slurmd, slurm-client and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
python3 -c "import pyarrow" 2>/dev/null ||
    python3 -m pip install -q --disable-pip-version-check pyarrow

if [ -n "${STEREOSCOPE:-}" ]; then
    bin="$STEREOSCOPE"
else
    (cd "$repo" && cargo build -q --bin stereoscope)
    bin="$repo/target/debug/stereoscope"
fi
[ -x "$bin" ] || fail "no stereoscope binary at $bin"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
if [ -n "${STEREOSCOPE_TEST_MODEL:-}" ]; then
    model="$STEREOSCOPE_TEST_MODEL"
else
    cache="${STEREOSCOPE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stereoscope}"
    model="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    [ -f "$model" ] || HF_HUB_OFFLINE=0 "$bin" fetch-model smollm2 >/dev/null
fi
[ -f "$model" ] || fail "model not found: $model"
bbq="${STEREOSCOPE_TEST_BBQ:-$repo/../shared/bbq}"
bbq_args=""
[ -f "$bbq/Age.jsonl" ] && bbq_args="--bbq-dir $(cd "$bbq" && pwd)"

work="$(mktemp -d "${TMPDIR:-/tmp}/stereoscope-slurm.XXXXXX")"
pids=()
cleanup() {
    local rc=$?
    # Stop what this script started, newest first, by process id.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill "${pids[i]}" 2>/dev/null || true
        wait "${pids[i]}" 2>/dev/null || true
    done
    if [ "$rc" != 0 ]; then
        for log in "$work"/munge/*.out "$work"/munge/*.log "$work"/slurm/*.out "$work"/slurm/*.log "$work"/jobs/*.log; do
            [ -f "$log" ] && { echo "--- $log (last lines)"; tail -n 30 "$log"; } >&2
        done
    fi
    if [ "${SLURM_TEST_KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
        echo "slurm-test: files kept in $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for SECONDS WHAT COMMAND...: run COMMAND every second until it succeeds
    local limit="$1" what="$2" t=0
    shift 2
    until "$@" >/dev/null 2>&1; do
        t=$((t + 1))
        [ "$t" -le "$limit" ] || fail "timed out after ${limit}s waiting for $what"
        sleep 1
    done
}

# munged with its own key and socket.
mkdir -p "$work/munge" "$work/slurm/state" "$work/slurm/spool" "$work/jobs"
# munged wants its socket's folder (and those above it) open to every user for execute.
chmod 711 "$work" "$work/munge"
sock="$work/munge/munge.socket"
mungekey --create --keyfile="$work/munge/munge.key"
munged --foreground --socket="$sock" --key-file="$work/munge/munge.key" \
    --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" \
    --seed-file="$work/munge/munged.seed" >"$work/munge/munged.out" 2>&1 &
pids+=($!)
wait_for 30 "munged" bash -c "munge -S '$sock' -n | unmunge -S '$sock'"

# slurm.conf: this host as controller and the one node (its CPUs and memory as slurmd
# measures them), no cgroups, no accounting, no GRES (the shards run on the CPU).
host="$(hostname -s)"
port="${SLURM_TEST_PORT:-16817}"
node="$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]* //')"
export SLURM_CONF="$work/slurm/slurm.conf"
cat >"$SLURM_CONF" <<EOF
ClusterName=stereoscope-test
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${port}
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${sock}
StateSaveLocation=$work/slurm/state
SlurmdSpoolDir=$work/slurm/spool
SlurmctldPidFile=$work/slurm/slurmctld.pid
SlurmdPidFile=$work/slurm/slurmd.pid
SlurmctldLogFile=$work/slurm/slurmctld.log
SlurmdLogFile=$work/slurm/slurmd.log
PlugStackConfig=$work/slurm/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=600
NodeName=${host} NodeAddr=127.0.0.1 ${node} State=UNKNOWN
PartitionName=test Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
: >"$work/slurm/plugstack.conf"
echo "slurm.conf: $(grep -c . "$SLURM_CONF") lines; node: ${host} ${node}"
slurmctld -D -i -f "$SLURM_CONF" >"$work/slurm/slurmctld.out" 2>&1 &
pids+=($!)
wait_for 60 "slurmctld" scontrol ping
slurmd -D -f "$SLURM_CONF" >"$work/slurm/slurmd.out" 2>&1 &
pids+=($!)
wait_for 60 "node ${host} to be idle" bash -c "sinfo -h -n '$host' -o %t | grep -qx idle"
sinfo

# The study: two shards in an array, the merge after them, as examples/slurm/submit.sh
# queues them. --cpus-per-task and --time replace study.sbatch's defaults (8 CPUs, 4 h).
study_args="--categories Age,Religion --limit 6 --precisions bf16,q8 --seeds 42,123 \
--part-size 2 --ppl-sequences 2 --ppl-seq-len 64 $bbq_args"
cd "$work/jobs"
submitted="$(MODEL="$model" OUT="$work/sharded" SHARDS=2 DEVICE=cpu GRES=none STEREOSCOPE="$bin" \
    STUDY_ARGS="$study_args" "$repo/examples/slurm/submit.sh" --cpus-per-task=1 --time=00:30:00)"
echo "$submitted"
array_id="$(sed -n 's/^shards: job \([0-9]*\) .*/\1/p' <<<"$submitted")"
merge_id="$(sed -n 's/.*merge: job \([0-9]*\) after it.*/\1/p' <<<"$submitted")"
[ -n "$array_id" ] && [ -n "$merge_id" ] || fail "could not read the job ids from submit.sh's output"

job_states() { # one line per job or array task: id, state, reason, exit code, node, start, end
    scontrol -o show job "$1" | awk '{
        delete f
        for (i = 1; i <= NF; i++) { k = $i; sub(/=.*/, "", k); v = $i; sub(/^[^=]*=/, "", v); f[k] = v }
        id = ("ArrayTaskId" in f) ? f["ArrayJobId"] "_" f["ArrayTaskId"] : f["JobId"]
        print id, f["JobState"], "reason=" f["Reason"], "exit=" f["ExitCode"], "node=" f["NodeList"],
            "start=" f["StartTime"], "end=" f["EndTime"]
    }'
}
t=0
while :; do
    st="$(job_states "$merge_id")"
    case "$st" in
    *DependencyNeverSatisfied* | *FAILED* | *CANCELLED* | *TIMEOUT* | *NODE_FAIL*)
        job_states "$array_id" >&2
        fail "the merge job will not finish well: $st"
        ;;
    *" COMPLETED "*) break ;;
    esac
    t=$((t + 1))
    [ "$t" -le 900 ] || fail "timed out after 900s waiting for the shards and the merge"
    sleep 1
done
echo "jobs:"
job_states "$array_id"
job_states "$merge_id"
[ "$(job_states "$array_id" | grep -c " COMPLETED .*exit=0:0 ")" = 2 ] ||
    fail "the two shard tasks did not both complete with exit 0"
[ "$(job_states "$merge_id" | grep -c " COMPLETED .*exit=0:0 ")" = 1 ] ||
    fail "the merge job did not complete with exit 0"
for log in stereoscope-shard-"${array_id}"_1.log stereoscope-shard-"${array_id}"_2.log \
    stereoscope-merge-"${merge_id}".log; do
    [ -f "$log" ] || fail "no job log $log"
done
for i in 1 2; do
    grep -q "^shard $i/2: " "stereoscope-shard-${array_id}_$i.log" ||
        fail "array task $i did not run shard $i/2 (stereoscope-shard-${array_id}_$i.log)"
done
# afterok: the merge starts only once both shards have ended.
last_end="$(job_states "$array_id" | sed 's/.* end=//' | sort | tail -n 1)"
merge_start="$(job_states "$merge_id" | sed 's/.* start=\([^ ]*\) .*/\1/')"
[[ ! "$merge_start" < "$last_end" ]] ||
    fail "the merge started ($merge_start) before the last shard ended ($last_end)"
echo "--- merge job's log (stereoscope-merge-${merge_id}.log)"
cat "stereoscope-merge-${merge_id}.log"

# One unsharded run of the same plan, outside Slurm, to compare with.
# shellcheck disable=SC2086
"$bin" --batch --model "$model" --device cpu --out "$work/single" $study_args \
    >"$work/jobs/single.log" 2>&1 || { cat "$work/jobs/single.log"; fail "the unsharded run failed"; }

python3 - "$work/sharded" "$work/single" <<'EOF'
import pathlib, sys
import pyarrow.parquet as pq

sharded, single = (pathlib.Path(p) for p in sys.argv[1:3])
def parts(root):
    return sorted(p.relative_to(root) for p in (root / "records").rglob("*.parquet"))
a, b = parts(sharded), parts(single)
if a != b:
    sys.exit(f"part files differ:\n merged: {[str(p) for p in a]}\n single: {[str(p) for p in b]}")
if not a:
    sys.exit("no part files")
rows = 0
for rel in a:
    ta, tb = pq.read_table(sharded / rel), pq.read_table(single / rel)
    if ta.num_rows == 0:
        sys.exit(f"{rel}: no rows")
    ta, tb = ta.drop_columns(["latency_ms"]), tb.drop_columns(["latency_ms"])
    if not ta.equals(tb):
        sys.exit(f"{rel}: the merged records differ from the single run's")
    rows += ta.num_rows
for name in ["items.parquet", "perplexity.parquet"]:
    ta, tb = pq.read_table(sharded / name), pq.read_table(single / name)
    if ta.num_rows == 0 or not ta.equals(tb):
        sys.exit(f"{name}: the merged folder's differs from the single run's (or is empty)")
ppl = pq.read_table(sharded / "perplexity.parquet").to_pylist()
print(f"merged = single: {len(a)} part files, {rows} records (every column but latency_ms), "
      f"items.parquet, perplexity.parquet ("
      + ", ".join(f"{r['precision']} {r['perplexity']:.4f}" for r in ppl) + ")")
EOF
echo "slurm-test: passed"
