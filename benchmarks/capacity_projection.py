"""Project IVF-PQ capacity at 10M-1B passages from the measured scale curve.

    python benchmarks/capacity_projection.py [runs/bench-scale/results.jsonl]

Prints the README's "Capacity planning" table. Every figure is a projection; the models
below are fitted to the ivfpq 16 B cells that `densekit bench scale run` measured (100k, 1M,
5M on the 2-core machine), so the table moves when those cells are re-measured:

- adding: seconds per million vectors = a + b * nlist (PQ encoding per vector, plus the
  coarse assignment, whose cost grows with the number of centroids), least squares;
- quantiser training: p + q * nlist^2 (PQ codebooks, near fixed, plus k-means on 40 * nlist
  samples against nlist centroids), least squares. The bench trains on 40 * nlist vectors;
  `densekit index build --from-embeddings` samples at most `--train-size` (1M by default),
  which at 100M-1B is under faiss's 39 points per centroid: pass 40 * nlist there too;
- one-thread latency at nprobe 64: the coarse quantiser's scan of every centroid (nlist * d
  float32 read at the memory bandwidth the flat cells measured) plus the scan of 64 lists,
  at the 5M cell's cost per code scanned. A sharded index shares one quantiser, so every
  shard scans all nlist centroids of the whole index: at 1B that scan dominates. (At the
  measured sizes the centroid scan is 0.23, 0.72 and 1.6 ms of the 0.26, 1.04 and 2.95 ms.)
  A graph (HNSW) coarse quantiser would remove most of it (not measured). 32-byte codes are
  taken to cost twice as much per code scanned (not measured either);
- memory: code + 8-byte id per vector, plus each shard's copy of the centroids and the PQ
  codebooks;
- encoding: 1,775 passages/s per V100 (the published 14,200 sentences/s of all-MiniLM-L6-v2
  on a V100, divided by 8 for 256-token passages: an assumption, not a measurement).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

DIM = 384
SHARD_MAX = 25_000_000
V100_PASSAGES_PER_S = 14_200 / 8
SIZES = (10_000_000, 100_000_000, 1_000_000_000)
CODES = (16, 32)


def _cells(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    cells = sorted(
        (r for r in rows if r.get("kind") == "ivfpq" and "add_s" in r and r["build_params"].get("pq_m") == 16 and _point(r, 64)),
        key=lambda r: r["n"],
    )
    if len(cells) < 2:
        raise SystemExit(f"{path}: needs ivfpq 16-byte cells with an nprobe 64 point at two sizes at least (densekit bench scale run)")
    return cells


def _point(cell: dict, nprobe: int | None) -> dict | None:
    want = {} if nprobe is None else {"nprobe": nprobe}
    return next((p for p in cell.get("points", []) if p["search_params"] == want), None)


def _bandwidth(rows: list[dict]) -> float:
    """Bytes/s a one-thread exhaustive scan reads, from the flat cells (float32 vectors)."""
    flat = [r for r in rows if r.get("kind") == "flat" and _point(r, None)]
    if not flat:
        raise SystemExit("needs a flat cell (densekit bench scale run --kinds flat) for the scan bandwidth")
    return float(np.mean([r["n"] * DIM * 4 * _point(r, None)["qps_1"] for r in flat]))


def _nprobe64_ms(cell: dict) -> float:
    return 1000.0 / _point(cell, 64)["qps_1"]


def fit(cells: list[dict], bandwidth: float) -> dict[str, float]:
    n_m = np.array([c["n"] / 1e6 for c in cells])
    nlist = np.array([c["build_params"]["nlist"] for c in cells], dtype=float)
    add_per_m = np.array([c["add_s"] for c in cells]) / n_m
    b, a = np.polyfit(nlist, add_per_m, 1)
    q, p = np.polyfit(nlist**2, [c["train_s"] for c in cells], 1)
    largest = cells[-1]
    centroid_ms = largest["build_params"]["nlist"] * DIM * 4 / bandwidth * 1000
    codes = 64 * largest["n"] / largest["build_params"]["nlist"]
    per_code_ms = max(_nprobe64_ms(largest) - centroid_ms, 0.0) / codes
    return {"add_a": a, "add_b": b, "train_p": p, "train_q": q, "bandwidth": bandwidth, "per_code_ms": per_code_ms}


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _count(n: int) -> str:
    return f"{n // 1_000_000_000}B" if n >= 1_000_000_000 else f"{n // 1_000_000}M"


def _hours(h: float) -> str:
    return f"{h:.1f}" if h < 10 else f"{h:.0f}"


def project(m: dict[str, float]) -> list[str]:
    lines = [
        "| passages | code | index memory, all shards | shards x memory each | encoding, V100 GPU-hours "
        "| quantiser training, 2 cores | adding, 2 cores per shard (shards in parallel) | latency per shard, nprobe 64, 1 thread |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in SIZES:
        nlist = int(4 * math.sqrt(n))
        shards = math.ceil(n / SHARD_MAX)
        per_shard = n / shards
        train_s = m["train_p"] + m["train_q"] * nlist**2
        add_s = per_shard / 1e6 * (m["add_a"] + m["add_b"] * nlist)
        for code in CODES:
            latency = nlist * DIM * 4 / m["bandwidth"] * 1000 + 64 * per_shard / nlist * m["per_code_ms"] * code / 16
            fixed = nlist * DIM * 4 + 256 * DIM * 4  # centroids + PQ codebooks (256 entries per sub-vector)
            each = per_shard * (code + 8) + fixed
            gib = 2**30
            lines.append(
                f"| {_count(n)} | {code} B | {shards * each / gib:.2f} GiB | {shards} x {each / gib:.2f} GiB "
                f"| {_hours(n / V100_PASSAGES_PER_S / 3600)} | {_duration(train_s)} | {_duration(add_s)} | {latency:.0f} ms |"
            )
    return lines


def main(argv: list[str]) -> None:
    path = Path(argv[1] if len(argv) > 1 else "runs/bench-scale/results.jsonl")
    cells = _cells(path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    m = fit(cells, _bandwidth(rows))
    sizes = ", ".join(f"{c['n']:,}" for c in cells)
    print(
        f"fitted on ivfpq cells at {sizes}: adding {m['add_a']:.1f} + {m['add_b']:.5f} * nlist s per 1M vectors; "
        f"training {m['train_p']:.1f} + {m['train_q']:.3g} * nlist^2 s; scan bandwidth {m['bandwidth'] / 1e9:.1f} GB/s, "
        f"{m['per_code_ms'] * 1e6:.0f} ns per code scanned\n"
    )
    print("\n".join(project(m)))


if __name__ == "__main__":
    main(sys.argv)
