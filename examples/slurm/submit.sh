#!/bin/bash
# Queue a sharded study on Slurm: an array of SHARDS tasks (study.sbatch, one shard each)
# and the merge (merge.sbatch) after all of them succeed. Extra arguments go to both
# sbatch calls (such as --partition=gpu or --account=...).
#   MODEL=Qwen/Qwen2.5-7B-Instruct OUT=results/qwen7b SHARDS=8 \
#     STUDY_ARGS="--limit all --noise-seeds 7,8,9,10,11" examples/slurm/submit.sh --partition=gpu
# On a cluster without GPUs: DEVICE=cpu and GRES=none.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${MODEL:?set MODEL}"
: "${OUT:?set OUT}"
shards="${SHARDS:-8}"
gres=(--gres="${GRES:-gpu:1}")
[ "${GRES:-}" = none ] && gres=()
SHARDS="$shards"
export MODEL OUT SHARDS
array=$(sbatch --parsable --array="1-${shards}" "${gres[@]}" --export=ALL "$@" "$here/study.sbatch")
array="${array%%;*}"
merge=$(sbatch --parsable --dependency="afterok:${array}" --export=ALL "$@" "$here/merge.sbatch")
echo "shards: job ${array} (array 1-${shards}); merge: job ${merge%%;*} after it; results in ${OUT}"
