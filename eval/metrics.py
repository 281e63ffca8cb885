"""nDCG@k, Recall@k, MRR@k and MAP@k as trec_eval defines them, computed by
pytrec-eval-terrier (the reference), with BEIR's ignore_identical_ids option.

MRR@k is trec_eval's recip_rank on the run cut to its top k (in trec_eval's own order),
which is what BEIR's and MTEB's MRR@k compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytrec_eval

from densekit.eval.trec import Run, truncate_run

DEFAULT_K = (1, 3, 5, 10, 100, 1000)


@dataclass
class MetricResult:
    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)


def drop_identical_ids(run: Run) -> Run:
    """BEIR's ignore_identical_ids: a query never retrieves itself (e.g. ArguAna, Quora)."""
    return {q: {d: s for d, s in docs.items() if d != q} for q, docs in run.items()}


def trec_metrics(qrels: dict[str, dict[str, int]], run: Run, k_values=DEFAULT_K, ignore_identical_ids: bool = False) -> MetricResult:
    if ignore_identical_ids:
        run = drop_identical_ids(run)
    # trec_eval scores only queries present in both; queries with no run count as 0, as
    # BEIR does by averaging over the evaluated queries (it passes the same dicts).
    run = {q: run.get(q, {}) for q in qrels}
    ks = ",".join(str(k) for k in k_values)
    measures = {f"ndcg_cut.{ks}", f"recall.{ks}", f"map_cut.{ks}"}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, measures)
    scores = evaluator.evaluate(run)
    per_query: dict[str, dict[str, float]] = {}
    for qid, vals in scores.items():
        row = per_query.setdefault(qid, {})
        for k in k_values:
            row[f"ndcg@{k}"] = vals[f"ndcg_cut_{k}"]
            row[f"recall@{k}"] = vals[f"recall_{k}"]
            row[f"map@{k}"] = vals[f"map_cut_{k}"]
    rr_eval = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
    for k in k_values:
        rr = rr_eval.evaluate(truncate_run(run, k))
        for qid, vals in rr.items():
            per_query.setdefault(qid, {})[f"mrr@{k}"] = vals["recip_rank"]
    # Queries with an empty run are absent from pytrec_eval's output: they score 0.
    names = [f"{m}@{k}" for m in ("ndcg", "recall", "map", "mrr") for k in k_values]
    for qid in qrels:
        row = per_query.setdefault(qid, {})
        for n in names:
            row.setdefault(n, 0.0)
    aggregate = {n: float(np.mean([per_query[q][n] for q in per_query])) if per_query else 0.0 for n in names}
    return MetricResult(aggregate, per_query)
