"""When faiss's exhaustive search switches from its own scan to a BLAS matrix product.

faiss decides per search call: below a threshold it scans the database once per query with
its SIMD kernels, above it one GEMM scores the whole query batch. Since faiss 1.14 the
threshold compares `nq * d` (default 128,000) instead of `nq` (default 20), which keeps 384-d
batches under 334 queries on the scan path. Measured at 100k vectors on a quiet 2-core machine
(benchmarks/faiss_blas_threshold.py): 256-query batches run 766 queries/s on BLAS vs 66 on the
scan with one thread, 1,255 vs 102 with two. But with two threads and another busy process on
the machine, BLAS collapsed to 4-41 queries/s for 2-64-query batches (the scan kept 52-65):
its thread pool spins against the other process. A serving box shares its cores with the
encoder, so densekit keeps faiss's default and lets a dedicated machine opt in through
DENSEKIT_FAISS_BLAS_THRESHOLD (faiss's own unit: nq * d on faiss >= 1.14, nq before).
"""

from __future__ import annotations

import logging
import os

import faiss

log = logging.getLogger(__name__)

ENV_VAR = "DENSEKIT_FAISS_BLAS_THRESHOLD"


def tune_blas_threshold() -> int | None:
    """Apply DENSEKIT_FAISS_BLAS_THRESHOLD to faiss; returns the value set (None: faiss's default kept)."""
    override = os.environ.get(ENV_VAR)
    if override is None:
        return None
    try:
        value = int(override)
        if value < 0:
            raise ValueError
    except ValueError:
        log.warning(
            "%s=%r is not a non-negative integer; faiss's BLAS threshold stays %d",
            ENV_VAR,
            override,
            faiss.cvar.distance_compute_blas_threshold,
        )
        return None
    faiss.cvar.distance_compute_blas_threshold = min(value, 2**31 - 1)
    return value
