"""Retrieval evaluation: run queries through an index, score the run, time each stage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from densekit.eval.auc import auc_metrics, collect_pairs
from densekit.eval.metrics import DEFAULT_K, trec_metrics
from densekit.eval.trec import Run


@dataclass
class EvalOutcome:
    metrics: dict[str, Any]
    per_query: dict[str, dict[str, float]]
    run: Run
    timings: dict[str, float] = field(default_factory=dict)
    positive_scores: dict[str, dict[str, float]] | None = None  # exact scores of judged-relevant documents


def retrieve(index, encoder, queries: dict[str, str], top_k: int = 1000, search_params: dict | None = None, batch: int = 256):
    """Encode queries and search; returns (run, query vectors in `queries` order, timings)."""
    qids = list(queries)
    t0 = time.perf_counter()
    qvecs = encoder.encode_queries([queries[q] for q in qids])
    t1 = time.perf_counter()
    run: Run = {}
    for start in range(0, len(qids), batch):
        hits = index.search(qvecs[start : start + batch], top_k, search_params)
        for qid, row in zip(qids[start : start + batch], hits):
            run[qid] = {h.id: h.score for h in row}
    t2 = time.perf_counter()
    return run, qvecs, {"encode_queries_s": t1 - t0, "search_s": t2 - t1}


def exact_positive_scores(index, qids: list[str], qvecs: np.ndarray, qrels: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    """Exact scores of every judged-relevant document, including those outside the run,
    from the vectors the index stores (exact for flat indexes, the reconstruction for
    compressed ones). Empty when the index cannot reconstruct."""
    pos_ids = {d for q in qids for d, g in qrels.get(q, {}).items() if g > 0}
    rows = index.docstore.rows_of(pos_ids)
    if not rows:
        return {}
    try:
        vecs = {d: index.faiss.reconstruct(int(r)) for d, r in rows.items()}
    except RuntimeError:
        return {}
    out: dict[str, dict[str, float]] = {}
    for i, q in enumerate(qids):
        out[q] = {d: float(np.dot(qvecs[i], vecs[d])) for d, g in qrels.get(q, {}).items() if g > 0 and d in vecs}
    return out


def score_run(
    qrels: dict[str, dict[str, int]],
    run: Run,
    positive_scores: dict[str, dict[str, float]] | None = None,
    k_values=DEFAULT_K,
    ignore_identical_ids: bool = False,
    auc_negatives: int = 500,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """All metrics of one run: trec_eval measures plus global and per-query ROC-AUC."""
    if ignore_identical_ids:
        run = {q: {d: s for d, s in docs.items() if d != q} for q, docs in run.items()}
    result = trec_metrics(qrels, run, k_values)
    pairs = collect_pairs(qrels, run, positive_scores, auc_negatives)
    auc_global, auc_mean, auc_per_query = auc_metrics(pairs)
    metrics = dict(result.aggregate)
    metrics["auc_global"] = auc_global
    metrics["auc_per_query"] = auc_mean
    per_query = result.per_query
    for qid, v in auc_per_query.items():
        per_query.setdefault(qid, {})["auc"] = v
    return metrics, per_query


def evaluate_index(
    index,
    encoder,
    dataset,
    top_k: int = 1000,
    search_params: dict | None = None,
    ignore_identical_ids: bool = False,
    auc_negatives: int = 500,
) -> EvalOutcome:
    run, qvecs, timings = retrieve(index, encoder, dataset.queries, top_k, search_params)
    t0 = time.perf_counter()
    pos = exact_positive_scores(index, list(dataset.queries), qvecs, dataset.qrels)
    metrics, per_query = score_run(dataset.qrels, run, pos, ignore_identical_ids=ignore_identical_ids, auc_negatives=auc_negatives)
    timings["metrics_s"] = time.perf_counter() - t0
    return EvalOutcome(metrics, per_query, run, timings, pos)


def evaluate_encoder(encoder, dataset, top_k: int = 1000, ignore_identical_ids: bool = False, progress: bool = True) -> EvalOutcome:
    """Build a flat index of `dataset.corpus` with `encoder` in memory and evaluate it
    (what training runs call before and after training)."""
    from densekit.index.dense_index import build_from_corpus

    t0 = time.perf_counter()
    with build_from_corpus(encoder, dataset.corpus, progress=progress) as idx:
        build_s = time.perf_counter() - t0
        outcome = evaluate_index(idx, encoder, dataset, top_k=top_k, ignore_identical_ids=ignore_identical_ids)
    outcome.timings = {"encode_corpus_and_build_s": build_s, **outcome.timings}
    return outcome
