"""Paired bootstrap (over queries) of the global ROC-AUC difference between two runs.

Global AUC pools every query's pairs, so it has no per-query value for a paired test; this
resamples queries with replacement and recomputes both runs' global AUC on each sample.
Positives are scored from the run files (a relevant document outside the retrieved top-k
gets the query's floor, as in eval.auc.collect_pairs without exact scores).

Usage: .venv/bin/python scripts/auc_bootstrap.py RUN_A.trec RUN_B.trec BEIR_FOLDER [split] [reps]
"""

from __future__ import annotations

import sys

import numpy as np

from densekit.data.beir import load_qrels
from densekit.eval.auc import auc_score, collect_pairs
from densekit.eval.trec import read_run


def main(run_a: str, run_b: str, folder: str, split: str = "test", reps: int = 300) -> None:
    qrels = load_qrels(folder, split)
    pa, pb = collect_pairs(qrels, read_run(run_a)), collect_pairs(qrels, read_run(run_b))
    qids = sorted(set(pa.pos) & set(pb.pos))

    def global_auc(pairs, sample):
        pos = np.concatenate([pairs.pos[q] for q in sample])
        neg = np.concatenate([pairs.neg.get(q, []) for q in sample])
        return auc_score(pos, neg)

    a, b = global_auc(pa, qids), global_auc(pb, qids)
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(int(reps)):
        sample = [qids[i] for i in rng.integers(0, len(qids), len(qids))]
        diffs.append(global_auc(pb, sample) - global_auc(pa, sample))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    print(
        f"global AUC A={a:.4f} B={b:.4f} diff(B-A)={b - a:+.4f} 95% CI [{lo:+.4f}, {hi:+.4f}] P(diff<=0)={np.mean(np.array(diffs) <= 0):.3f} ({len(qids)} queries, {reps} resamples)"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
