"""Two-stage evaluation: rerank_run/evaluate_rerank with fake rerankers, and `densekit eval --rerank`."""

from __future__ import annotations

import json
import sys

import pytest

from densekit.data import load_beir


class OracleReranker:
    """Scores 1 for a judged-relevant document, 0 otherwise (knows the qrels)."""

    name = "oracle"
    kind = "fake"
    max_length = 512

    def __init__(self, ds):
        self.rel = {ds.queries[q]: {d for d, g in j.items() if g > 0} for q, j in ds.qrels.items()}
        self.text_to_id = {f"{doc.get('title', '')} {doc.get('text', '')}".strip(): d for d, doc in ds.corpus.items()}
        self.calls = []

    def score(self, query, documents, batch_size=None):
        self.calls.append(len(documents))
        return [1.0 if self.text_to_id.get(t.strip()) in self.rel.get(query, set()) else 0.0 for t in documents]

    def count_tokens(self, query, documents):
        return [len(d.split()) for d in documents]


def _reversed_run(ds):
    """A first stage that ranks every relevant document last among 6."""
    run = {}
    for q, judged in ds.qrels.items():
        rel = [d for d, g in judged.items() if g > 0]
        others = [d for d in ds.corpus if d not in rel]
        run[q] = {d: float(10 - i) for i, d in enumerate(others + rel)}
    return run


def test_rerank_run_reorders_only_the_top_n(tiny_beir):
    from densekit.eval.rerank import rerank_run

    ds = load_beir(tiny_beir, "test")
    rr = OracleReranker(ds)
    first = _reversed_run(ds)
    out = rerank_run(rr, ds, first, top_n=3, progress=False)
    assert all(len(v) == 3 for v in out.values()) and rr.calls == [3, 3, 3]
    # with texts given as a mapping
    texts = {d: f"{doc['title']} {doc['text']}" for d, doc in ds.corpus.items()}
    out2 = rerank_run(rr, texts, first, top_n=6, queries=ds.queries, progress=False)
    for q, judged in ds.qrels.items():
        best = max(out2[q], key=out2[q].get)
        assert judged.get(best, 0) > 0


def test_evaluate_rerank_scores_both_stages_on_the_same_candidates(tiny_beir, tmp_path):
    from densekit.eval.rerank import evaluate_rerank, write_rerank_report

    ds = load_beir(tiny_beir, "test")
    out = evaluate_rerank(OracleReranker(ds), ds, _reversed_run(ds), top_n=6, progress=False)
    assert out.reranked["ndcg@10"] == pytest.approx(1.0)
    assert out.first_stage["ndcg@10"] < 0.7
    assert out.reranked["auc_per_query"] == pytest.approx(1.0) and out.first_stage["auc_per_query"] == pytest.approx(0.0)
    assert out.info["pairs"] == 18 and out.info["queries"] == 3
    capped = evaluate_rerank(OracleReranker(ds), ds, _reversed_run(ds), top_n=6, max_queries=2, progress=False)
    assert capped.info["queries"] == 2 and set(capped.run_reranked) == {"q1", "q2"}
    folder = write_rerank_report(tmp_path / "rr", out)
    m = json.loads((folder / "metrics.json").read_text())
    assert set(m) == {"first_stage", "reranked", "info"}
    assert (folder / "run.trec").read_text().count("\n") == 18


def test_eval_cli_rerank(tiny_beir, tiny_st_model_dir, tiny_ce_dir, tmp_path, capsys, monkeypatch):
    from densekit.cli.main import main

    ce = tiny_ce_dir
    out = tmp_path / "report"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "densekit",
            "eval",
            "--data",
            str(tiny_beir),
            "--model",
            str(tiny_st_model_dir),
            "--out",
            str(out),
            "--rerank",
            str(ce),
            "--rerank-top-n",
            "4",
            "--device",
            "cpu",
        ],
    )
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code in (0, None)
    m = json.loads((out / "rerank" / "metrics.json").read_text())
    assert m["info"]["top_n"] == 4 and m["info"]["pairs"] == 12
    for stage in ("first_stage", "reranked"):
        assert 0.0 <= m[stage]["ndcg@10"] <= 1.0 and "auc_global" in m[stage]
    assert (out / "run.trec").is_file()  # the first-stage report is still written
    assert (out / "rerank" / "per_query_first_stage.csv").read_text().startswith("qid,")
    assert "->" in capsys.readouterr().err
    # The RRF fusion of both stages is reported beside them, computed from their runs.
    from densekit.eval.rerank import fuse_rrf, score_stages
    from densekit.eval.trec import read_run, truncate_run

    fused = json.loads((out / "rerank-rrf" / "metrics.json").read_text())
    assert fused["first_stage"] == m["first_stage"] and fused["info"]["fusion"] == "rrf"
    ds = load_beir(tiny_beir, "test")
    reranked = read_run(out / "rerank" / "run.trec")
    first = truncate_run({q: r for q, r in read_run(out / "run.trec").items() if q in reranked}, 4)
    _, (m_expected, _) = score_stages({q: ds.qrels[q] for q in first}, first, fuse_rrf([first, reranked]), 4)
    assert fused["reranked"]["ndcg@10"] == pytest.approx(m_expected["ndcg@10"])


def test_relevant_documents_missed_by_the_first_stage_stay_out_of_the_auc(tiny_beir):
    from densekit.eval.rerank import evaluate_rerank

    ds = load_beir(tiny_beir, "test")
    out = evaluate_rerank(OracleReranker(ds), ds, _reversed_run(ds), top_n=3, progress=False)
    # every relevant document sits below rank 3: nothing to rerank, no AUC positives
    assert out.reranked["ndcg@10"] == 0.0 and out.first_stage["ndcg@10"] == 0.0
    assert all("auc" not in row for row in out.per_query_reranked.values())


def test_rrf_fusion_matches_hand_computed_ranks():
    from densekit.fusion import fuse_rrf

    first = {"q": {"a": 0.9, "b": 0.8, "c": 0.1}}
    rerank = {"q": {"c": 5.0, "a": 1.0, "b": -2.0}}
    fused = fuse_rrf([first, rerank], k=60)
    # ranks: a 1 and 2, b 2 and 3, c 3 and 1
    assert fused["q"]["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["q"]["b"] == pytest.approx(1 / 62 + 1 / 63)
    assert fused["q"]["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert sorted(fused["q"], key=fused["q"].get, reverse=True) == ["a", "c", "b"]
    # a document only one run has gets only that run's share
    only = fuse_rrf([first, {"q": {"z": 1.0}}], k=0)
    assert only["q"]["z"] == pytest.approx(1.0) and only["q"]["a"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fuse_rrf([first], k=-1)
