"""Project IVF-PQ capacity at 10M-1B passages from the measured scale curve.

    python benchmarks/capacity_projection.py [runs/bench-scale/results.jsonl]

Prints the README's "Capacity planning" table. Every figure is a projection; the models
below are fitted to the ivfpq 16 B cells that `densekit bench scale run` measured (100k, 1M,
5M on the 2-core machine), so the table moves when those cells are re-measured:

- adding: seconds per million vectors = a + b * nlist (PQ encoding per vector, plus the
  coarse assignment, whose cost grows with the number of centroids), least squares;
- quantiser training: p + q * nlist^2 (PQ codebooks, near fixed, plus k-means on 40 * nlist
  samples against nlist centroids), least squares;
- one-thread latency at nprobe 64: a power law in the number of vectors an index holds,
  evaluated at one shard's size (the shard answers as an index of its own);
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
    cells = sorted((r for r in rows if r.get("kind") == "ivfpq" and "add_s" in r), key=lambda r: r["n"])
    if len(cells) < 2:
        raise SystemExit(f"{path}: needs ivfpq cells at two sizes at least (densekit bench scale run)")
    return cells


def _nprobe64_ms(cell: dict) -> float:
    point = next(p for p in cell["points"] if p["search_params"].get("nprobe") == 64)
    return 1000.0 / point["qps_1"]


def fit(cells: list[dict]) -> dict[str, float]:
    n_m = np.array([c["n"] / 1e6 for c in cells])
    nlist = np.array([c["build_params"]["nlist"] for c in cells], dtype=float)
    add_per_m = np.array([c["add_s"] for c in cells]) / n_m
    b, a = np.polyfit(nlist, add_per_m, 1)
    q, p = np.polyfit(nlist**2, [c["train_s"] for c in cells], 1)
    lat_exp, log_lat = np.polyfit(np.log([c["n"] for c in cells]), np.log([_nprobe64_ms(c) for c in cells]), 1)
    return {"add_a": a, "add_b": b, "train_p": p, "train_q": q, "lat_c": math.exp(log_lat), "lat_e": lat_exp}


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
        latency = m["lat_c"] * per_shard ** m["lat_e"]
        for code in CODES:
            fixed = nlist * DIM * 4 + 16 * 256 * (DIM // 16) * 4 * (code // 16)
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
    m = fit(cells)
    sizes = ", ".join(f"{c['n']:,}" for c in cells)
    print(
        f"fitted on ivfpq cells at {sizes}: adding {m['add_a']:.1f} + {m['add_b']:.5f} * nlist s per 1M vectors; "
        f"training {m['train_p']:.1f} + {m['train_q']:.3g} * nlist^2 s; latency at nprobe 64 {m['lat_c']:.3g} * n^{m['lat_e']:.2f} ms\n"
    )
    print("\n".join(project(m)))


if __name__ == "__main__":
    main(sys.argv)
