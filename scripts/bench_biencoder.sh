#!/usr/bin/env bash
# Issue 3 benchmark: fine-tune all-MiniLM-L6-v2 with InfoNCE and MW on SciFact and NFCorpus.
# Each run takes the shared CPU lock on its own (one heavy job at a time on the 2 cores).
# Usage: scripts/bench_biencoder.sh [config names...]   (default: all four)
set -u
cd "$(dirname "$0")/.."
export DENSEKIT_DATA_DIR=${DENSEKIT_DATA_DIR:-../shared/data} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(scifact-infonce scifact-mw nfcorpus-infonce nfcorpus-mw)
mkdir -p runs
for n in "${names[@]}"; do
  echo "== $n $(date -u +%FT%TZ)"
  flock /tmp/densekit-cpu.lock timeout 900 .venv/bin/densekit train biencoder --config "configs/biencoder/$n.yaml" --no-progress \
    > "runs/ft-$n.log" 2>&1
  echo "== $n rc=$? $(date -u +%FT%TZ)"
done
