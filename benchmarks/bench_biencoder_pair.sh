#!/usr/bin/env bash
# Two fine-tuning runs (e.g. InfoNCE then MW on one data set) back to back, so the pair is
# compared on the same machine state; with DENSEKIT_LOCK=FILE both run inside ONE hold of
# that flock. Usage: DENSEKIT_DATA_DIR=DIR benchmarks/bench_biencoder_pair.sh NAME_A NAME_B
set -u
cd "$(dirname "$0")/.."
: "${DENSEKIT_DATA_DIR:?set DENSEKIT_DATA_DIR to the folder of BEIR data sets}"
export DENSEKIT_DATA_DIR HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
lock=()
[ -n "${DENSEKIT_LOCK:-}" ] && lock=(flock "$DENSEKIT_LOCK")
mkdir -p runs
"${lock[@]}" bash -c '
for n in "$@"; do
  echo "== $n $(date -u +%FT%TZ)"
  timeout 1500 .venv/bin/densekit train biencoder --config "configs/biencoder/$n.yaml" --no-progress > "runs/ft-$n.log" 2>&1
  echo "== $n rc=$? $(date -u +%FT%TZ)"
done' _ "$@"
