"""Curves behind the report's plots: ROC over the pooled (global) AUC pairs, and mean
Recall@k for every k up to the retrieval depth."""

from __future__ import annotations

import numpy as np

from densekit.eval.auc import AucPairs
from densekit.eval.trec import Run, trec_order


def pooled_scores(pairs: AucPairs) -> tuple[np.ndarray, np.ndarray]:
    """(positive scores, negative scores) pooled over every query: the global AUC's pairs."""
    pos = np.array([s for v in pairs.pos.values() for s in v], dtype=np.float64)
    neg = np.array([s for v in pairs.neg.values() for s in v], dtype=np.float64)
    return pos, neg


def roc_points(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) of the pooled pairs, scikit-learn's roc_curve."""
    from sklearn.metrics import roc_curve

    if len(pos) == 0 or len(neg) == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    fpr, tpr, _ = roc_curve(y, np.concatenate([pos, neg]))
    return fpr, tpr


def recall_curve(qrels: dict[str, dict[str, int]], run: Run, max_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(k = 1..max_k, mean Recall@k over the judged queries), trec_eval's recall: relevant
    means grade > 0, ranks in trec_eval's order, a query with no run counts as 0."""
    ks = np.arange(1, max_k + 1)
    totals = np.zeros(max_k, dtype=np.float64)
    n = 0
    for qid, judged in qrels.items():
        relevant = {d for d, g in judged.items() if g > 0}
        if not relevant:
            continue  # trec_eval drops queries without relevant documents from recall's mean
        n += 1
        hits = np.zeros(max_k, dtype=np.float64)
        for rank, (did, _) in enumerate(trec_order(run.get(qid, {}))[:max_k]):
            if did in relevant:
                hits[rank] = 1.0
        totals += np.cumsum(hits) / len(relevant)
    return ks, totals / max(n, 1)
