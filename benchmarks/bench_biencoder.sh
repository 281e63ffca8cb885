#!/usr/bin/env bash
# Bi-encoder fine-tuning runs of BENCHMARKS.md "Bi-encoder training": all-MiniLM-L6-v2 with
# InfoNCE and MW on SciFact and NFCorpus, one `densekit train biencoder` per config, each log
# in runs/ft-<name>.log. With DENSEKIT_LOCK=FILE each run holds that flock on its own (one
# heavy job at a time on a shared machine).
# Usage: DENSEKIT_DATA_DIR=DIR benchmarks/bench_biencoder.sh [config names...]   (default: all four)
set -u
cd "$(dirname "$0")/.."
: "${DENSEKIT_DATA_DIR:?set DENSEKIT_DATA_DIR to the folder of BEIR data sets}"
export DENSEKIT_DATA_DIR HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(scifact-infonce scifact-mw nfcorpus-infonce nfcorpus-mw)
lock=()
[ -n "${DENSEKIT_LOCK:-}" ] && lock=(flock "$DENSEKIT_LOCK")
mkdir -p runs
for n in "${names[@]}"; do
  echo "== $n $(date -u +%FT%TZ)"
  "${lock[@]}" timeout 900 .venv/bin/densekit train biencoder --config "configs/biencoder/$n.yaml" --no-progress \
    > "runs/ft-$n.log" 2>&1
  echo "== $n rc=$? $(date -u +%FT%TZ)"
done
