"""Construct faiss indexes of each kind with explicit constructors and apply search params.

Kinds are built with faiss constructors rather than index_factory strings, so that nothing
switches on behind the user's back (index_factory's PQ enables polysemous training, which
made training 4-20x slower here).
"""
from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from densekit.errors import ConfigError

KINDS = ("flat",)


def metric_of(similarity: str) -> int:
    # Cosine is served as inner product over unit-normalised vectors.
    return faiss.METRIC_INNER_PRODUCT if similarity in ("cosine", "dot", "inner_product") else faiss.METRIC_L2


def make_index(kind: str, dim: int, params: dict[str, Any] | None = None, metric: int = faiss.METRIC_INNER_PRODUCT) -> faiss.Index:
    """An empty (untrained where training applies) index whose ids are densekit row numbers."""
    params = dict(params or {})
    if kind == "flat":
        inner = faiss.IndexFlat(dim, metric)
        return faiss.IndexIDMap2(inner)
    raise ConfigError("kind", f"unknown index kind '{kind}' (known: {', '.join(KINDS)})")


def train_index(index: faiss.Index, vectors: np.ndarray, params: dict[str, Any] | None = None) -> None:
    if not index.is_trained:
        index.train(vectors)


def search_parameters(index: faiss.Index, params: dict[str, Any] | None) -> faiss.SearchParameters | None:
    """Per-query search parameters (nprobe, efSearch) without mutating the shared index."""
    return None


def describe(index: faiss.Index) -> str:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    return type(inner).__name__


def bytes_per_vector(index: faiss.Index, dim: int) -> float:
    return float(dim * 4)
