#!/usr/bin/env bash
# Two runs (e.g. InfoNCE then MW on one dataset) inside ONE hold of the shared CPU lock, so
# the pair is compared on the same machine state. Usage: scripts/bench_biencoder_pair.sh NAME_A NAME_B
set -u
cd "$(dirname "$0")/.."
export DENSEKIT_DATA_DIR=${DENSEKIT_DATA_DIR:-../shared/data} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
flock /tmp/densekit-cpu.lock bash -c '
for n in "$@"; do
  echo "== $n $(date -u +%FT%TZ)"
  timeout 1500 .venv/bin/densekit train biencoder --config "configs/biencoder/$n.yaml" --no-progress > "runs/ft-$n.log" 2>&1
  echo "== $n rc=$? $(date -u +%FT%TZ)"
done' _ "$@"
