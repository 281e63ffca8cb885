"""trec metrics agree with pytrec-eval-terrier (the reference) to 1e-6, MRR@k with a
brute-force definition, and ROC-AUC with scikit-learn on the same pairs."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import pytrec_eval
from sklearn.metrics import roc_auc_score

from densekit.eval.auc import auc_metrics, auc_score, collect_pairs
from densekit.eval.evaluate import score_run
from densekit.eval.metrics import trec_metrics
from densekit.eval.trec import read_run, trec_order, write_run


def random_case(seed: int, n_queries: int = 25, n_docs: int = 300, run_len: int = 120, graded: bool = True):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(n_docs)]
    qrels, run = {}, {}
    for q in range(n_queries):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 12))
        qrels[qid] = {d: (rng.randint(0, 2) if graded else 1) for d in judged}
        retrieved = rng.sample(docs, run_len)
        # Mix in some relevant documents so metrics are not all zero.
        for d in judged[: rng.randint(0, len(judged))]:
            if d not in retrieved:
                retrieved[rng.randrange(run_len)] = d
        run[qid] = {d: rng.random() for d in retrieved}
    return qrels, run


def reference_mrr(qrels, run, k):
    vals = []
    for qid, judged in qrels.items():
        ranked = [d for d, _ in trec_order(run.get(qid, {}))][:k]
        rr = 0.0
        for rank, d in enumerate(ranked, start=1):
            if judged.get(d, 0) > 0:
                rr = 1.0 / rank
                break
        vals.append(rr)
    return float(np.mean(vals))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_agrees_with_pytrec_eval_on_random_runs(seed):
    qrels, run = random_case(seed)
    ours = trec_metrics(qrels, run, k_values=(1, 5, 10, 100))
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.1,5,10,100", "recall.1,5,10,100", "map_cut.1,5,10,100"}).evaluate(run)
    for k in (1, 5, 10, 100):
        for ours_name, ref_name in (("ndcg", "ndcg_cut"), ("recall", "recall"), ("map", "map_cut")):
            expected = np.mean([ref[q][f"{ref_name}_{k}"] for q in ref])
            assert ours.aggregate[f"{ours_name}@{k}"] == pytest.approx(expected, abs=1e-6)
            for q in ref:
                assert ours.per_query[q][f"{ours_name}@{k}"] == pytest.approx(ref[q][f"{ref_name}_{k}"], abs=1e-6)
        assert ours.aggregate[f"mrr@{k}"] == pytest.approx(reference_mrr(qrels, run, k), abs=1e-6)


def test_ties_follow_trec_eval_order():
    qrels = {"q": {"b": 1}}
    run = {"q": {"a": 0.5, "b": 0.5, "c": 0.5}}
    # trec_eval breaks score ties by docid descending: c, b, a -> b at rank 2.
    assert trec_metrics(qrels, run, (1, 10)).aggregate["mrr@10"] == pytest.approx(0.5)
    assert trec_metrics(qrels, run, (1, 10)).aggregate["mrr@1"] == 0.0


def test_ignore_identical_ids():
    qrels = {"q1": {"d1": 1}}
    run = {"q1": {"q1": 0.9, "d1": 0.8}}
    with_self, _ = score_run(qrels, run)
    without_self, _ = score_run(qrels, run, ignore_identical_ids=True)
    assert with_self["mrr@10"] == pytest.approx(0.5)
    assert without_self["mrr@10"] == pytest.approx(1.0)


def test_query_missing_from_run_scores_zero():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    run = {"q1": {"d1": 1.0}}
    m = trec_metrics(qrels, run, (10,)).aggregate
    assert m["ndcg@10"] == pytest.approx(0.5)


def test_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pos = np.round(rng.normal(1, 1, rng.integers(1, 30)), 1)
        neg = np.round(rng.normal(0, 1, rng.integers(1, 60)), 1)
        y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        assert auc_score(pos, neg) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=1e-12)
    assert math.isnan(auc_score(np.array([1.0]), np.array([])))


def test_global_and_per_query_auc_against_sklearn():
    qrels, run = random_case(7, graded=True)
    pairs = collect_pairs(qrels, run, num_negatives=50)
    g, mean, per_q = auc_metrics(pairs)
    ys, ss = [], []
    expected_per_q = {}
    for qid, judged in qrels.items():
        rel = {d for d, v in judged.items() if v > 0}
        if not rel:
            continue
        ranked = trec_order(run[qid])
        floor = ranked[-1][1] - 1.0
        pos = [run[qid].get(d, floor) for d in sorted(rel)]
        neg = [s for d, s in ranked if d not in rel][:50]
        ys += [1] * len(pos) + [0] * len(neg)
        ss += pos + neg
        expected_per_q[qid] = roc_auc_score([1] * len(pos) + [0] * len(neg), pos + neg)
    assert g == pytest.approx(roc_auc_score(ys, ss), abs=1e-12)
    assert per_q == pytest.approx(expected_per_q, abs=1e-12)
    assert mean == pytest.approx(np.mean(list(expected_per_q.values())), abs=1e-12)


def test_global_auc_sees_cross_query_calibration():
    # Each query ranks perfectly, but one query's scores sit above the other's positives:
    # per-query AUC is 1, the pooled (global) AUC is not.
    qrels = {"a": {"a1": 1}, "b": {"b1": 1}}
    run = {"a": {"a1": 0.9, "a2": 0.8}, "b": {"b1": 0.3, "b2": 0.1}}
    g, mean, _ = auc_metrics(collect_pairs(qrels, run))
    assert mean == 1.0
    assert g == pytest.approx(0.75)


def test_exact_positive_scores_used_for_unretrieved_relevant():
    qrels = {"q": {"x": 1}}
    run = {"q": {"a": 0.5, "b": 0.4}}
    pairs = collect_pairs(qrels, run, positive_scores={"q": {"x": 0.45}})
    assert pairs.pos["q"] == [0.45]
    assert auc_metrics(pairs)[0] == pytest.approx(0.5)


def test_run_file_roundtrip(tmp_path):
    _, run = random_case(3, n_queries=5, run_len=20)
    write_run(tmp_path / "r.trec", run)
    back = read_run(tmp_path / "r.trec")
    assert back.keys() == run.keys()
    for q in run:
        assert back[q] == pytest.approx(run[q], abs=1e-6)
