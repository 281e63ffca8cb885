"""Rank fusion of several runs of the same queries (used by /search and by evaluation)."""

from __future__ import annotations

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
