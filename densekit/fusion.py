"""Fusion of several runs of the same queries (used by /search and by evaluation): reciprocal
rank fusion, and the hybrid (dense + lexical) fusion settings with a convex combination of
normalised scores."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from densekit.runs import Run, trec_order

RRF_K = 60  # Cormack et al.'s constant


def fuse_rrf(runs: list[Run], k: int = RRF_K) -> Run:
    """Reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009):
    score(q, d) = sum over runs of 1 / (k + rank of d in that run), ranks from 1, a document
    missing from a run adding nothing. Fusing the first stage with a reranker's run keeps the
    retriever's signal where a weak reranker would throw it away, with no weight to tune
    (k = 60 is the paper's constant, not fitted here)."""
    if k < 0:
        raise ValueError("k must be >= 0")
    fused: Run = {}
    for run in runs:
        for qid, docs in run.items():
            row = fused.setdefault(qid, {})
            for rank, (doc, _) in enumerate(trec_order(docs), start=1):
                row[doc] = row.get(doc, 0.0) + 1.0 / (k + rank)
    return fused


# ---- hybrid (dense + lexical) fusion ----------------------------------------------------

SearchMode = Literal["dense", "lexical", "hybrid"]
SEARCH_MODES: tuple[str, ...] = ("dense", "lexical", "hybrid")
FusionMethod = Literal["rrf", "convex"]


class FusionSettings(BaseModel):
    """How a hybrid search merges its dense and lexical lists. Stored in an index's manifest
    (`densekit tune fusion` fits them on a dev or train split) and overridable per request."""

    model_config = ConfigDict(extra="forbid")

    method: FusionMethod = Field("rrf", description="'rrf': reciprocal rank fusion; 'convex': alpha * dense + (1 - alpha) * lexical")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="convex: weight of the min-max normalised dense scores")
    rrf_k: int = Field(RRF_K, ge=0, description="rrf: the constant k of 1 / (k + rank)")


def min_max(scores: dict[str, float]) -> dict[str, float]:
    """Scores mapped linearly onto [0, 1] (the list's best -> 1, its worst -> 0); a list whose
    scores are all equal maps to 1, since each of its documents is that list's best."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi == lo:
        return dict.fromkeys(scores, 1.0)
    return {d: (s - lo) / (hi - lo) for d, s in scores.items()}


def fuse_convex(dense: Run, lexical: Run, alpha: float) -> Run:
    """Convex combination of min-max normalised scores, per query:
    score(d) = alpha * norm_dense(d) + (1 - alpha) * norm_lexical(d), a document missing from a
    list scoring 0 there (the bottom of that list). A query with an empty list in one run keeps
    the other run's normalised scores (its order unchanged), whatever alpha is."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    fused: Run = {}
    for qid in dense.keys() | lexical.keys():
        d, lx = min_max(dense.get(qid, {})), min_max(lexical.get(qid, {}))
        if not d or not lx:
            fused[qid] = d or lx
            continue
        fused[qid] = {doc: alpha * d.get(doc, 0.0) + (1.0 - alpha) * lx.get(doc, 0.0) for doc in d.keys() | lx.keys()}
    return fused


def fuse_hybrid(dense: Run, lexical: Run, settings: FusionSettings) -> Run:
    """The dense and lexical runs merged as `settings` say (RRF or convex)."""
    if settings.method == "convex":
        return fuse_convex(dense, lexical, settings.alpha)
    return fuse_rrf([dense, lexical], k=settings.rrf_k)
