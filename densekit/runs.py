"""Ranked result lists ("runs") in memory, and trec_eval's order of them.

A run maps query id -> {document id: score}; every stage that ranks documents (search,
reranking, fusion, evaluation) speaks it.
"""

from __future__ import annotations

Run = dict[str, dict[str, float]]


def trec_order(scores: dict[str, float]) -> list[tuple[str, float]]:
    """trec_eval's ranking: score descending, ties by docid descending."""
    return sorted(scores.items(), key=lambda kv: (-kv[1], _Desc(kv[0])))


class _Desc(str):
    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)


def truncate_run(run: Run, k: int) -> Run:
    """Each query's top `k` documents in trec_eval's order."""
    return {q: dict(trec_order(docs)[:k]) for q, docs in run.items()}
