#!/usr/bin/env bash
# GPU check, from a fresh checkout with the project's venv on a machine with an NVIDIA GPU
# (the venv needs a CUDA torch, and a GPU faiss for GPU search; see README "Deploying with
# Docker Compose"). A wrapper of `densekit bench gpu check` (see its --help) that reads its
# settings from the environment. In under 5 minutes on one GPU it:
#   1. prints what densekit picks: device, dtype, where faiss searches;
#   2. measures corpus-encoding throughput and builds a SciFact index on the GPU;
#   3. runs `densekit eval` with that index on the GPU, and a full CPU run, and checks that
#      nDCG@10 agrees within 0.002;
#   4. serves the index on 127.0.0.1 and drives /embed and /search with concurrent clients,
#      printing throughput and p50/p95/p99 latency.
# Everything lands in $OUT (check.log, summary.json, the eval reports, server.log).
#
#   bash scripts/gpu_check.sh
#   Env: PYTHON (.venv/bin/python)  DENSEKIT_DATA_DIR (data)  DATASET (scifact: a name under
#        DENSEKIT_DATA_DIR, or a folder)  OUT (runs/gpu-check)  PORT (8765)  LOAD_SECONDS (20)
#        CONCURRENCY (32)
#        SKIP_CPU_EVAL=1 with CPU_NDCG10=0.6451 compares with a recorded CPU figure instead
#        ALLOW_CPU=1 runs the whole check without a GPU (to test this script)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
[[ -x "$PY" ]] || { echo "no python at $PY: create the venv first (make install) or set PYTHON" >&2; exit 2; }
args=(--data "${DATASET:-scifact}" --out "${OUT:-runs/gpu-check}" --port "${PORT:-8765}"
      --load-seconds "${LOAD_SECONDS:-20}" --concurrency "${CONCURRENCY:-32}")
if [[ "${SKIP_CPU_EVAL:-0}" == 1 ]]; then args+=(--cpu-ndcg10 "${CPU_NDCG10:?set CPU_NDCG10 with SKIP_CPU_EVAL=1}"); fi
if [[ "${ALLOW_CPU:-0}" == 1 ]]; then args+=(--allow-cpu); fi
exec "$PY" -m densekit.cli.main bench gpu check "${args[@]}"
