"""ROC-AUC for retrievers, which BEIR, MTEB and ranx lack.

Per query, the scores of its judged-relevant documents are positives and the scores of its
top-N retrieved non-relevant documents are negatives (N = 500 by default, as in the MW
paper, arXiv 2510.00137). The *global* AUC pools every query's positives and negatives into
one binary problem: it rewards scores that are comparable across queries, the property the
MW loss optimises. The *per-query* AUC averages each query's own AUC.

AUC is the Mann-Whitney U statistic divided by n_pos * n_neg, with ties counted as 1/2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

from densekit.eval.trec import Run, trec_order


def auc_score(pos: np.ndarray, neg: np.ndarray) -> float:
    pos = np.asarray(pos, dtype=np.float64).ravel()
    neg = np.asarray(neg, dtype=np.float64).ravel()
    n_pos, n_neg = len(pos), len(neg)
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks give ties 1/2
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@dataclass
class AucPairs:
    """The scores each query contributes: positives and negatives."""

    pos: dict[str, list[float]] = field(default_factory=dict)
    neg: dict[str, list[float]] = field(default_factory=dict)


def collect_pairs(
    qrels: dict[str, dict[str, int]],
    run: Run,
    positive_scores: dict[str, dict[str, float]] | None = None,
    num_negatives: int = 500,
) -> AucPairs:
    """Positives: every judged-relevant document (grade > 0) with its score, taken from
    `positive_scores` (exact scores, also for relevant documents outside the run) or else
    from the run; a relevant document with no known score is placed below the query's
    lowest retrieved score. Negatives: the first `num_negatives` retrieved documents that
    are not judged relevant."""
    pairs = AucPairs()
    for qid, judged in qrels.items():
        relevant = {d for d, g in judged.items() if g > 0}
        if not relevant:
            continue
        ranked = trec_order(run.get(qid, {}))
        floor = (ranked[-1][1] - 1.0) if ranked else 0.0
        known = (positive_scores or {}).get(qid, {})
        scores_by_doc = dict(ranked)
        pairs.pos[qid] = [known.get(d, scores_by_doc.get(d, floor)) for d in sorted(relevant)]
        pairs.neg[qid] = [s for d, s in ranked if d not in relevant][:num_negatives]
    return pairs


def auc_metrics(pairs: AucPairs) -> tuple[float, float, dict[str, float]]:
    """(global AUC, mean per-query AUC, per-query AUC)."""
    per_query = {}
    for qid in pairs.pos:
        value = auc_score(np.array(pairs.pos[qid]), np.array(pairs.neg.get(qid, [])))
        if not math.isnan(value):
            per_query[qid] = value
    all_pos = np.array([s for v in pairs.pos.values() for s in v])
    all_neg = np.array([s for v in pairs.neg.values() for s in v])
    global_auc = auc_score(all_pos, all_neg)
    mean = float(np.mean(list(per_query.values()))) if per_query else math.nan
    return global_auc, mean, per_query
