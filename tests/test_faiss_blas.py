"""DENSEKIT_FAISS_BLAS_THRESHOLD reaches faiss; both search paths agree."""

from __future__ import annotations

import os
import subprocess
import sys

import faiss
import numpy as np

from densekit.index.faiss_blas import ENV_VAR, tune_blas_threshold


def _threshold_in_subprocess(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if env_value is not None:
        env[ENV_VAR] = env_value
    code = "import faiss; from densekit.index import faiss_kinds; print(faiss.cvar.distance_compute_blas_threshold)"
    out = subprocess.run([sys.executable, "-P", "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_importing_the_index_kinds_applies_the_variable_and_keeps_the_default_without_it():
    default_value = _threshold_in_subprocess(None)
    assert default_value == str(faiss.cvar.distance_compute_blas_threshold) or ENV_VAR in os.environ
    assert _threshold_in_subprocess("12345") == "12345"


def test_a_bad_value_keeps_the_default():
    default_value = _threshold_in_subprocess(None)
    assert _threshold_in_subprocess("lots") == default_value
    assert _threshold_in_subprocess("-1") == default_value


def test_tuning_returns_what_it_set(monkeypatch):
    saved = faiss.cvar.distance_compute_blas_threshold
    try:
        monkeypatch.setenv(ENV_VAR, "777")
        assert tune_blas_threshold() == 777
        assert faiss.cvar.distance_compute_blas_threshold == 777
        monkeypatch.delenv(ENV_VAR)
        assert tune_blas_threshold() is None
        assert faiss.cvar.distance_compute_blas_threshold == 777
    finally:
        faiss.cvar.distance_compute_blas_threshold = saved


def test_blas_and_scan_paths_return_the_same_neighbours():
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((5000, 64)).astype("float32")
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:40] + 0.05 * rng.standard_normal((40, 64)).astype("float32")
    index = faiss.IndexFlatIP(64)
    index.add(docs)
    saved = faiss.cvar.distance_compute_blas_threshold
    try:
        faiss.cvar.distance_compute_blas_threshold = 0
        blas_scores, blas_ids = index.search(queries, 10)
        faiss.cvar.distance_compute_blas_threshold = 2**31 - 1
        scan_scores, scan_ids = index.search(queries, 10)
    finally:
        faiss.cvar.distance_compute_blas_threshold = saved
    np.testing.assert_array_equal(blas_ids, scan_ids)
    np.testing.assert_allclose(blas_scores, scan_scores, atol=1e-5)
