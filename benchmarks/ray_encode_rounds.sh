#!/usr/bin/env bash
# The Ray engine's encoding overhead, settled by repetition: ROUNDS rounds of one local run and
# one Ray run (2 actors x 1 CPU, the configuration the README recommends on a small machine),
# alternating the order (L R, R L, L R, ...) so that neighbours share the machine's drift, then
# the table with the median of the per-round pairs. With DENSEKIT_LOCK=FILE every run sits in
# ONE hold of that flock. Usage:
#   DENSEKIT_DATA_DIR=DIR benchmarks/ray_encode_rounds.sh [OUT_DIR] [ROUNDS] [DOCS]
set -u
cd "$(dirname "$0")/.."
: "${DENSEKIT_DATA_DIR:?set DENSEKIT_DATA_DIR to the folder of BEIR data sets}"
export DENSEKIT_DATA_DIR HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
out=${1:-runs/bench-ray/rounds}
rounds=${2:-5}
docs=${3:-2000}
lock=()
[ -n "${DENSEKIT_LOCK:-}" ] && lock=(flock "$DENSEKIT_LOCK")
mkdir -p "$out"
"${lock[@]}" bash -c '
out=$1 rounds=$2 docs=$3
cell() {  # round, position, engine flags...
  local name="$out/encode-r$1-$2.json"; shift 2
  [ -f "$name" ] && { echo "== $name exists, kept"; return; }
  echo "== $name $(date -u +%FT%TZ)"
  timeout 900 .venv/bin/densekit bench ray encode --data scifact --docs "$docs" "$@" --out "$name" || echo "== $name failed rc=$?"
}
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then
    cell "$r" a --engine local; cell "$r" b --engine ray --actors 2 --cpus-per-actor 1
  else
    cell "$r" a --engine ray --actors 2 --cpus-per-actor 1; cell "$r" b --engine local
  fi
done
.venv/bin/densekit bench ray report "$out"' _ "$out" "$rounds" "$docs"
