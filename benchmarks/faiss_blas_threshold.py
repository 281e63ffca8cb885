"""Exhaustive-search throughput on faiss's scan path vs its BLAS path, by batch size and threads.

Shows where the crossover lies on this machine (densekit.index.faiss_blas sets faiss's switch
from it). Random unit vectors; inner product; top 10; each cell ~1 s.

    python benchmarks/faiss_blas_threshold.py [--n 100000] [--dim 384]
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np


def queries_per_second(index: faiss.Index, queries: np.ndarray, seconds: float = 1.0) -> float:
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        index.search(queries, 10)
        done += len(queries)
    return done / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((args.n, args.dim)).astype("float32")
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:256] + 0.1
    index = faiss.IndexFlatIP(args.dim)
    index.add(docs)
    print(f"faiss {faiss.__version__}, default threshold {faiss.cvar.distance_compute_blas_threshold}")
    print("| threads | queries per call | BLAS q/s | scan q/s |\n|---|---|---|---|")
    for threads in (1, 2):
        faiss.omp_set_num_threads(threads)
        for nq in (1, 2, 4, 8, 16, 64, 256):
            faiss.cvar.distance_compute_blas_threshold = 0
            blas = queries_per_second(index, queries[:nq])
            faiss.cvar.distance_compute_blas_threshold = 2**31 - 1
            scan = queries_per_second(index, queries[:nq])
            print(f"| {threads} | {nq} | {blas:.0f} | {scan:.0f} |")


if __name__ == "__main__":
    main()
