#!/usr/bin/env bash
# GPU check, from a fresh checkout with the project's venv on a machine with an NVIDIA GPU
# (the venv needs a CUDA torch, and a GPU faiss for GPU search; see README "Deploying with
# Docker Compose"). In under 5 minutes on one GPU it:
#   1. prints what densekit picks: device, dtype, where faiss searches;
#   2. measures corpus-encoding throughput and builds a SciFact index on the GPU;
#   3. runs `densekit eval` with that index on the GPU, and a full CPU run, and checks that
#      nDCG@10 agrees within 0.002;
#   4. serves the index on 127.0.0.1 and drives /embed and /search with concurrent clients,
#      printing throughput and p50/p95/p99 latency.
# Everything lands in $OUT (summary.json, the eval reports, server.log).
#
#   bash scripts/gpu_check.sh
#   Env: PYTHON (.venv/bin/python)  DENSEKIT_DATA_DIR (../shared/data)  DATASET (scifact)
#        OUT (runs/gpu-check)  PORT (8765)  LOAD_SECONDS (20)  CONCURRENCY (32)
#        SKIP_CPU_EVAL=1 with CPU_NDCG10=0.6451 compares with a recorded CPU figure instead
#        ALLOW_CPU=1 runs the whole check without a GPU (to test this script)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
export DENSEKIT_DATA_DIR=${DENSEKIT_DATA_DIR:-$(cd .. && pwd)/shared/data}
DATASET=${DATASET:-scifact}
OUT=${OUT:-runs/gpu-check}
PORT=${PORT:-8765}
LOAD_SECONDS=${LOAD_SECONDS:-20}
CONCURRENCY=${CONCURRENCY:-32}
# Measure real encoding, never vectors cached by an earlier run (the cache ignores dtype).
export DENSEKIT_NO_EMBED_CACHE=1
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
DK=("$PY" -m densekit.cli.main)
GC=("$PY" scripts/gpu_check.py)

if [[ -d "$DATASET" ]]; then DATA=$DATASET; else DATA=$DENSEKIT_DATA_DIR/$DATASET; fi
[[ -f "$DATA/corpus.jsonl" ]] || { echo "no BEIR corpus at $DATA (set DENSEKIT_DATA_DIR or DATASET)" >&2; exit 2; }
[[ -x "$PY" ]] || { echo "no python at $PY: create the venv first (make install) or set PYTHON" >&2; exit 2; }
rm -rf "$OUT" && mkdir -p "$OUT"
LOG=$OUT/check.log
START=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$1" "$(( $(date +%s) - START ))" | tee -a "$LOG"; }
run() { "$@" 2>&1 | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }

SERVER_PID=""
cleanup() { if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

step "device"
run "${GC[@]}" probe $([[ "${ALLOW_CPU:-0}" == 1 ]] && echo --allow-cpu)
command -v nvidia-smi >/dev/null && run nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

step "encode throughput ($DATASET corpus)"
run "${GC[@]}" encode --data "$DATA"

step "index build"
t0=$(date +%s%N)
run timeout 300 "${DK[@]}" index build --data "$DATA" --out "$OUT/index"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "index_build {\"seconds\": $((ms / 1000)).$(printf %03d $((ms % 1000)))}" | tee -a "$LOG"

step "eval on the GPU (index above)"
run timeout 300 "${DK[@]}" eval --data "$DATA" --split test --index "$OUT/index" --out "$OUT/eval-gpu"

if [[ "${SKIP_CPU_EVAL:-0}" == 1 ]]; then
  step "CPU reference nDCG@10 = ${CPU_NDCG10:?set CPU_NDCG10 with SKIP_CPU_EVAL=1}"
  mkdir -p "$OUT/eval-cpu"
  echo "{\"metrics\": {\"ndcg@10\": $CPU_NDCG10}}" > "$OUT/eval-cpu/metrics.json"
else
  step "eval on the CPU (encode + flat search, for the comparison)"
  DENSEKIT_DEVICE=cpu DENSEKIT_FAISS_DEVICE=cpu run timeout 600 "${DK[@]}" eval --data "$DATA" --split test --out "$OUT/eval-cpu"
fi
cmp_rc=0
run "${GC[@]}" compare "$OUT/eval-gpu/metrics.json" "$OUT/eval-cpu/metrics.json" || cmp_rc=$?

step "serve on 127.0.0.1:$PORT"
# Read-only serving: the live-update log would otherwise be written beside the index.
DENSEKIT_ALLOW_UPDATES=false "${DK[@]}" serve --index "$OUT/index" --host 127.0.0.1 --port "$PORT" > "$OUT/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 180); do
  if "$PY" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/ready', timeout=2)" 2>/dev/null; then break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited:" >&2; tail -30 "$OUT/server.log" >&2; exit 1; }
  sleep 1
done
"$PY" -c "import urllib.request; print('info', urllib.request.urlopen('http://127.0.0.1:$PORT/info').read().decode())" | tee -a "$LOG"

step "load: /embed, $CONCURRENCY clients x 32 sentences, ${LOAD_SECONDS}s"
run "${GC[@]}" load --url "http://127.0.0.1:$PORT" --route embed --data "$DATA" --seconds "$LOAD_SECONDS" --concurrency "$CONCURRENCY"
step "load: /search top_k=10, $CONCURRENCY clients, ${LOAD_SECONDS}s"
run "${GC[@]}" load --url "http://127.0.0.1:$PORT" --route search --data "$DATA" --seconds "$LOAD_SECONDS" --concurrency "$CONCURRENCY"
cleanup
SERVER_PID=""

step "summary"
"$PY" - "$LOG" "$OUT/summary.json" <<'EOF'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    name, _, rest = line.partition(" ")
    if name in ("probe", "encode", "index_build", "compare", "load") and rest.startswith("{"):
        d = json.loads(rest)
        rows[f"load_{d['route']}" if name == "load" else name] = d
json.dump(rows, open(sys.argv[2], "w"), indent=2)
p, e, c = rows.get("probe", {}), rows.get("encode", {}), rows.get("compare", {})
le, ls = rows.get("load_embed", {}), rows.get("load_search", {})
print(f"device        : {p.get('device')} ({', '.join(p.get('gpus') or ['no GPU'])}), dtype {p.get('dtype')}, faiss on {p.get('faiss_device')} (faiss GPUs: {p.get('faiss_gpus')})")
print(f"encode        : {e.get('docs_per_s')} docs/s ({e.get('docs')} docs, batch {e.get('batch_size')})")
print(f"index build   : {rows.get('index_build', {}).get('seconds')} s (model load + encode + flat index)")
print(f"nDCG@10       : GPU {c.get('ndcg@10_gpu')}  CPU {c.get('ndcg@10_cpu')}  |delta| {c.get('abs_delta')}  ({'OK' if c.get('ok') else 'FAIL'} at {c.get('tol')})")
print(f"/embed        : {le.get('sentences_per_s')} sentences/s, p50 {le.get('p50_ms')} ms, p95 {le.get('p95_ms')} ms, p99 {le.get('p99_ms')} ms, status {le.get('status')}")
print(f"server        : models on {le.get('server_device')}, faiss search on {ls.get('server_search_device')}")
print(f"/search       : {ls.get('queries_per_s')} queries/s, p50 {ls.get('p50_ms')} ms, p95 {ls.get('p95_ms')} ms, p99 {ls.get('p99_ms')} ms, status {ls.get('status')}")
EOF
echo "total: $(( $(date +%s) - START ))s; details in $OUT"
exit "$cmp_rc"
