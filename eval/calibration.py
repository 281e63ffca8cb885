"""Score calibration for the AUC story: where should a RAG pipeline cut to say "no good
document"?

Two populations of (score, relevant?) pairs, pooled over queries:
- the global AUC's pairs: every judged-relevant document against the top-N retrieved
  non-relevant documents of every query (what the ROC and the histogram show);
- the top `depth` retrieved documents of every query, labelled by the qrels (unjudged counts
  as non-relevant): what a pipeline that takes the top hit(s) and filters them by score sees.

precision(t) is the share of relevant pairs among the pairs scoring at least t. The
threshold that keeps a chosen precision is the lowest t whose precision reaches it (so
recall is as high as it can be). It is an estimate from judged data, only as good as the
judgements are complete.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from densekit.eval.trec import Run, trec_order


@dataclass
class Calibration:
    target_precision: float
    threshold: float | None  # None: no cut reaches the target
    precision: float | None
    recall: float | None  # share of relevant pairs at or above the threshold
    negatives_kept: float | None  # share of negatives at or above the threshold
    n_pos: int
    n_neg: int
    pos_mean: float
    neg_mean: float

    def to_dict(self) -> dict:
        return asdict(self)


def threshold_for_precision(pos: np.ndarray, neg: np.ndarray, target: float = 0.9) -> Calibration:
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    pos_mean = float(pos.mean()) if len(pos) else math.nan
    neg_mean = float(neg.mean()) if len(neg) else math.nan

    def calibration(threshold=None, precision=None, recall=None, negatives_kept=None) -> Calibration:
        return Calibration(target, threshold, precision, recall, negatives_kept, len(pos), len(neg), pos_mean, neg_mean)

    if len(pos) == 0:
        return calibration()
    # Candidate cuts are the distinct scores; counting ">= t" with sorted arrays is O(n log n).
    cuts = np.unique(np.concatenate([pos, neg]))[::-1]  # descending: precision is read as t falls
    pos_sorted = np.sort(pos)
    neg_sorted = np.sort(neg)
    tp = len(pos) - np.searchsorted(pos_sorted, cuts, side="left")
    fp = len(neg) - np.searchsorted(neg_sorted, cuts, side="left")
    precision = tp / np.maximum(tp + fp, 1)
    ok = np.nonzero((precision >= target) & (tp > 0))[0]
    if len(ok) == 0:
        return calibration()
    i = ok[-1]  # the lowest qualifying cut keeps the most relevant documents
    return calibration(float(cuts[i]), float(precision[i]), float(tp[i] / len(pos)), float(fp[i] / len(neg)) if len(neg) else 0.0)


def top_k_pairs(qrels: dict[str, dict[str, int]], run: Run, depth: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(scores of relevant, scores of non-relevant) among each judged query's top `depth` hits."""
    pos: list[float] = []
    neg: list[float] = []
    for qid, judged in qrels.items():
        for did, score in trec_order(run.get(qid, {}))[:depth]:
            (pos if judged.get(did, 0) > 0 else neg).append(score)
    return np.array(pos, dtype=np.float64), np.array(neg, dtype=np.float64)
