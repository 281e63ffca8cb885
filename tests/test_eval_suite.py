"""Multi-dataset x multi-configuration evaluation: the reports hold every number of every
per-run metrics file; calibration, recall and ROC curves against independent references."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from densekit.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def cls_model_dir(tiny_st_model_dir, tmp_path_factory):
    """A second tiny encoder (CLS pooling over the same BERT), so two configurations differ."""
    from sentence_transformers import SentenceTransformer, models

    word = models.Transformer(str(tiny_st_model_dir.parent / "bert"), max_seq_length=64)
    pool = models.Pooling(word.get_embedding_dimension(), pooling_mode="cls")
    out = tmp_path_factory.mktemp("tiny-cls") / "st"
    SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu").save(str(out))
    return out


@pytest.fixture()
def two_datasets(tiny_beir, tmp_path):
    """tiny_beir and a variant with other judgements (so the two datasets' numbers differ)."""
    other = tmp_path / "tiny2"
    shutil.copytree(tiny_beir, other)
    (other / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td6\t1\nq1\td3\t2\nq2\td4\t1\nq3\td1\t1\nq3\td2\t1\n")
    return tiny_beir, other


def _fmt(v: float) -> str:
    return f"{v:.4f}"


def test_two_datasets_two_configurations_report_every_number(two_datasets, tiny_st_model_dir, cls_model_dir, tmp_path):
    d1, d2 = two_datasets
    out = tmp_path / "suite"
    r = runner.invoke(
        app,
        ["eval", "--data", str(d1), "--data", str(d2), "--model", str(tiny_st_model_dir), "--model", str(cls_model_dir), "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    suite = json.loads((out / "suite.json").read_text())
    report = (out / "report.md").read_text()
    names = list(suite["configurations"])
    assert len(names) == 2 and set(suite["datasets"]) == {"tiny", "tiny2"}
    long_rows = list(csv.DictReader((out / "per_query.csv").open()))
    differs = False
    for dname, d in suite["datasets"].items():
        section = report.split(f"## {dname} (")[1].split("\n## ")[0]
        table = section.split("<summary>all metrics</summary>")[1].split("</details>")[0].strip().splitlines()
        header = [c.strip() for c in table[0].strip("|").split("|")]
        all_metrics = {}
        for line in table[2:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            all_metrics[cells[0]] = dict(zip(header[1:], cells[1:]))
        for cname in names:
            cell = d["results"][cname]
            run_dir = out / cell["run_dir"]
            per_run = json.loads((run_dir / "metrics.json").read_text())
            assert per_run["dataset"] == dname and per_run["config"] == cname
            assert per_run["metrics"], "empty per-run metrics"
            for k, v in per_run["metrics"].items():
                # suite.json holds the very number; report.md shows it (all-metrics table).
                assert cell["metrics"][k] == v, (dname, cname, k)
                assert all_metrics[k][cname] == _fmt(v), (dname, cname, k)
            # The long per-query CSV holds each run's per-query file row for row.
            own = {row["qid"]: row for row in csv.DictReader((run_dir / "per_query.csv").open())}
            mine = {row["qid"]: row for row in long_rows if row["dataset"] == dname and row["config"] == cname}
            assert own.keys() == mine.keys() and own
            for qid, row in own.items():
                for col, val in row.items():
                    if col != "qid":
                        assert mine[qid][col] == val
            assert (run_dir / "run.trec").is_file() and (run_dir / "report.md").is_file()
        a, b = (d["results"][n]["metrics"] for n in names)
        differs |= a != b
    assert differs, "the two configurations should not give identical numbers"
    # The average is the unweighted mean over datasets, in JSON and in the Markdown.
    avg_section = report.split("## Average over datasets")[1]
    for cname in names:
        for k in ("ndcg@10", "recall@100", "auc_global"):
            expect = np.mean([suite["datasets"][dn]["results"][cname]["metrics"][k] for dn in suite["datasets"]])
            assert suite["average"][cname]["metrics"][k] == pytest.approx(expect, abs=1e-12)
            assert _fmt(expect) in avg_section
    # Paired test of the second configuration against the first, and the plots.
    assert set(suite["significance"]["tests"]["tiny"]) == {names[1]}
    for dname in ("tiny", "tiny2"):
        for key in ("roc", "recall"):
            png = out / suite["plots"][dname][key]
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(suite["plots"][dname]["calibration"]) == 2
    assert (out / "config.yaml").is_file()


def test_yaml_config_and_bad_field(tiny_beir, tiny_st_model_dir, tmp_path):
    import yaml

    ix = tmp_path / "ix"
    assert (
        runner.invoke(app, ["index", "build", "--data", str(tiny_beir), "--model", str(tiny_st_model_dir), "--out", str(ix)]).exit_code == 0
    )
    cfg = {
        "datasets": [{"name": str(tiny_beir), "label": "tiny"}],
        "configurations": [{"name": "encode", "model": str(tiny_st_model_dir)}, {"name": "prebuilt", "index": {"tiny": str(ix)}}],
        "plots": False,
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["eval", "--config", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o" / "suite.json").read_text())["datasets"]["tiny"]["results"]
    # A prebuilt index of the same model gives the same numbers as encoding the corpus.
    assert res["encode"]["metrics"]["ndcg@10"] == pytest.approx(res["prebuilt"]["metrics"]["ndcg@10"], abs=1e-6)
    assert not (tmp_path / "o" / "plots").exists()
    # A bad field fails before any work, naming the field.
    cfg["configurations"][1]["index"] = {"tiny": str(tmp_path / "missing")}
    cfg["top_k"] = 10
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["eval", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o2")])
    assert r.exit_code != 0 and "configurations.1.index" in str(r.exception)
    assert not (tmp_path / "o2").exists()
    cfg["configurations"][1]["index"] = str(ix)
    cfg["datasets"].append({"name": str(tiny_beir), "label": "again"})
    (tmp_path / "bad1.yaml").write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["eval", "--config", str(tmp_path / "bad1.yaml"), "--out", str(tmp_path / "o2")])
    assert r.exit_code != 0 and "configurations.1.index" in str(r.exception) and "{dataset}" in str(r.exception)
    cfg["configurations"][1] = {"name": "x", "modle": "typo"}
    (tmp_path / "bad2.yaml").write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["eval", "--config", str(tmp_path / "bad2.yaml"), "--out", str(tmp_path / "o3")])
    assert "configurations.1.modle" in str(r.exception)


def test_calibration_threshold_known_answer():
    from densekit.eval.calibration import threshold_for_precision

    pos, neg = np.array([0.9, 0.8, 0.7]), np.array([0.85, 0.6, 0.5])
    # precision at t = .9 .85 .8 .7 .6 .5 -> 1, 1/2, 2/3, 3/4, 3/5, 1/2
    c = threshold_for_precision(pos, neg, 0.7)
    assert c.threshold == 0.7 and c.precision == 0.75 and c.recall == 1.0 and c.negatives_kept == pytest.approx(1 / 3)
    c = threshold_for_precision(pos, neg, 0.8)
    assert c.threshold == 0.9 and c.recall == pytest.approx(1 / 3)
    assert threshold_for_precision(np.array([0.1]), np.array([0.5, 0.9]), 0.9).threshold is None
    from densekit.eval.calibration import top_k_pairs

    run = {"q1": {"a": 0.9, "b": 0.8}, "q2": {"c": 0.7, "d": 0.95}, "q3": {"e": 0.5}}
    qrels = {"q1": {"a": 1}, "q2": {"c": 1, "d": 0}}
    pos, neg = top_k_pairs(qrels, run, 1)
    assert pos.tolist() == [0.9] and neg.tolist() == [0.95]
    pos, neg = top_k_pairs(qrels, run, 2)
    assert sorted(pos.tolist()) == [0.7, 0.9] and sorted(neg.tolist()) == [0.8, 0.95]


def test_recall_curve_and_roc_match_references():
    import pytrec_eval
    from sklearn.metrics import roc_auc_score

    from densekit.eval.auc import auc_metrics, collect_pairs
    from densekit.eval.curves import pooled_scores, recall_curve, roc_points

    rng = np.random.default_rng(0)
    qrels = {f"q{i}": {f"d{j}": int(rng.integers(0, 3)) for j in rng.choice(60, 6, replace=False)} for i in range(15)}
    run = {q: {f"d{j}": float(rng.random()) for j in range(60)} for q in qrels}
    ks, rec = recall_curve(qrels, run, 60)
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"recall.1,5,10,30,60"}).evaluate(run)
    for k in (1, 5, 10, 30, 60):
        with_rel = [q for q in qrels if any(g > 0 for g in qrels[q].values())]
        assert rec[k - 1] == pytest.approx(np.mean([ref[q][f"recall_{k}"] for q in with_rel]), abs=1e-9)
    pairs = collect_pairs(qrels, run, None, 20)
    pos, neg = pooled_scores(pairs)
    fpr, tpr = roc_points(pos, neg)
    auc_global, _, _ = auc_metrics(pairs)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc_global, abs=1e-9)
    assert auc_global == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=1e-9)


def test_reranked_configuration_reports_both_stages(tiny_beir, tiny_st_model_dir, tiny_llm_dir, tmp_path):
    import yaml

    from densekit.data import load_beir
    from densekit.eval.evaluate import score_run
    from densekit.eval.rerank import candidates, rerank_run, score_stages
    from densekit.eval.trec import read_run
    from densekit.rerankers import load_reranker

    cfg = {
        "datasets": [str(tiny_beir)],
        "configurations": [
            {"name": "dense", "model": str(tiny_st_model_dir)},
            {"name": "dense+llm", "model": str(tiny_st_model_dir), "reranker": str(tiny_llm_dir), "rerank_top_n": 4},
        ],
        "plots": False,
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["eval", "--config", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o" / "suite.json").read_text())["datasets"]["tiny"]["results"]
    reranked = read_run(tmp_path / "o" / res["dense+llm"]["run_dir"] / "run.trec")
    assert all(len(v) == 4 for v in reranked.values())
    # The first stage of the reranked configuration is the dense run scored on the same
    # candidates (its top 4), not the dense configuration's top_k run.
    ds = load_beir(tiny_beir, "test")
    dense = read_run(tmp_path / "o" / res["dense"]["run_dir"] / "run.trec")
    first, qrels = candidates(ds, dense, 4)
    assert {q: set(v) for q, v in first.items()} == {q: set(v) for q, v in reranked.items()}
    (m_first, _), (m_rr, _) = score_stages(qrels, first, reranked, 4)
    assert res["dense+llm"]["first_stage"] == pytest.approx(m_first, abs=1e-9)
    assert res["dense+llm"]["metrics"] == pytest.approx(m_rr, abs=1e-9)
    assert res["dense+llm"]["first_stage"]["recall@100"] <= res["dense"]["metrics"]["recall@100"]
    again = rerank_run(load_reranker(str(tiny_llm_dir), device="cpu"), ds, dense, 4, progress=False)
    metrics, _ = score_run(ds.qrels, again)
    for k in ("ndcg@10", "mrr@10", "recall@10"):
        assert res["dense+llm"]["metrics"][k] == pytest.approx(metrics[k], abs=1e-5)
    # Flags: --rerank gives each first stage a reranked twin, on every dataset.
    shutil.copytree(tiny_beir, tmp_path / "copy")
    r = runner.invoke(
        app,
        [
            "eval",
            "--data",
            str(tiny_beir),
            "--data",
            str(tmp_path / "copy"),
            "--model",
            str(tiny_st_model_dir),
            "--rerank",
            str(tiny_llm_dir),
            "--rerank-top-n",
            "4",
            "--out",
            str(tmp_path / "f"),
            "--no-plots",
        ],
    )
    assert r.exit_code == 0, r.output
    flags = json.loads((tmp_path / "f" / "suite.json").read_text())["datasets"]["tiny"]["results"]
    assert len(flags) == 2
    twin = next(v for v in flags.values() if v["first_stage"])
    assert twin["metrics"]["ndcg@10"] == pytest.approx(res["dense+llm"]["metrics"]["ndcg@10"], abs=1e-6)
    # A reranker that cannot load fails before any work, naming the field.
    cfg["configurations"][1]["reranker"] = str(tmp_path / "nope")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["eval", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o2")])
    assert r.exit_code != 0 and "configurations.1.reranker" in str(r.exception) and not (tmp_path / "o2").exists()


def _ndcg10_by_query(per_query_csv: Path) -> dict[str, float]:
    with per_query_csv.open(newline="") as fh:
        return {row["qid"]: float(row["ndcg@10"]) for row in csv.DictReader(fh)}


def test_one_dataset_alone_and_in_a_suite_gives_identical_numbers(tiny_beir, tiny_st_model_dir, tiny_ce_dir, tmp_path):
    """`densekit eval --data D --rerank R` and a suite with the same dataset and reranker go
    through one evaluation path: the same first-stage, reranked and RRF numbers, per query too."""
    import yaml

    from densekit.eval.trec import read_run

    # tiny, plus relevant documents the tiny encoder ranks last (outside the top 4), so the
    # protocol's choices (what the first stage is scored on, which positives the AUC
    # counts) show in the numbers.
    tiny_beir = shutil.copytree(tiny_beir, tmp_path / "data" / "tiny")
    with (tiny_beir / "qrels" / "test.tsv").open("a") as fh:
        fh.write("q1\td1\t1\nq2\td1\t1\n")
    single = tmp_path / "single"
    args = ["eval", "--data", str(tiny_beir), "--model", str(tiny_st_model_dir), "--device", "cpu"]
    r = runner.invoke(app, [*args, "--rerank", str(tiny_ce_dir), "--rerank-top-n", "4", "--out", str(single)])
    assert r.exit_code == 0, r.output
    cfg = {
        "datasets": [str(tiny_beir)],
        "configurations": [
            {"name": "dense", "model": str(tiny_st_model_dir)},
            {"name": "dense+ce", "model": str(tiny_st_model_dir), "reranker": str(tiny_ce_dir), "rerank_top_n": 4},
        ],
        "plots": False,
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["eval", "--config", str(tmp_path / "s.yaml"), "--device", "cpu", "--out", str(tmp_path / "suite")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "suite" / "suite.json").read_text())["datasets"]["tiny"]["results"]
    dense_dir, rr_dir = (tmp_path / "suite" / res[n]["run_dir"] for n in ("dense", "dense+ce"))

    # The first stage alone.
    assert json.loads((single / "metrics.json").read_text())["metrics"] == res["dense"]["metrics"]
    assert (single / "per_query.csv").read_text() == (dense_dir / "per_query.csv").read_text()
    assert (single / "run.trec").read_text() == (dense_dir / "run.trec").read_text()
    # Both stages of the reranked configuration, on the same candidates.
    two_stage = json.loads((single / "rerank" / "metrics.json").read_text())
    assert two_stage["reranked"] == res["dense+ce"]["metrics"]
    assert two_stage["first_stage"] == res["dense+ce"]["first_stage"]
    assert json.loads((single / "rerank-rrf" / "metrics.json").read_text())["reranked"] == res["dense+ce"]["rrf"]
    assert read_run(single / "rerank" / "run.trec") == read_run(rr_dir / "run.trec")
    assert (single / "rerank" / "per_query.csv").read_text() == (rr_dir / "per_query.csv").read_text()
    assert (single / "rerank" / "per_query_first_stage.csv").read_text() == (rr_dir / "per_query_first_stage.csv").read_text()
    # The fused stage is written beside it and tested against the baseline like the others.
    assert read_run(single / "rerank-rrf" / "run.trec") == read_run(rr_dir / "run_rrf.trec")
    assert (single / "rerank-rrf" / "per_query.csv").read_text() == (rr_dir / "per_query_rrf.csv").read_text()
    tests = json.loads((tmp_path / "suite" / "suite.json").read_text())["significance"]["tests"]["tiny"]
    assert set(tests) == {"dense+ce", "dense+ce (RRF)"}
    base, fused = (_ndcg10_by_query(path) for path in (dense_dir / "per_query.csv", rr_dir / "per_query_rrf.csv"))
    shared = sorted(set(base) & set(fused))
    assert tests["dense+ce (RRF)"]["mean_diff"] == pytest.approx(
        sum(fused[q] - base[q] for q in shared) / len(shared), abs=1e-5
    )  # the CSV keeps 6 decimals
    # Some relevant document sits outside the candidates, so a protocol that scored it (or
    # kept the first stage's full top_k) would give other first-stage and AUC numbers.
    assert res["dense+ce"]["first_stage"]["recall@100"] < res["dense"]["metrics"]["recall@100"]
    # The reranker changed something, so the equalities above compare two different stages.
    assert (rr_dir / "per_query.csv").read_text() != (rr_dir / "per_query_first_stage.csv").read_text()


def test_eval_compare_on_a_run_file_gives_the_reports_global_auc(tiny_beir, tiny_st_model_dir, tmp_path):
    """With top_k 2, judged-relevant documents fall outside the run: the report scores them
    exactly, and `eval compare` on its run file must too (from the sidecar beside run.trec),
    not place them below the run's lowest score."""
    from densekit.eval.compare import compare_global_auc
    from densekit.eval.trec import positive_scores_path, read_positive_scores

    tiny_beir = shutil.copytree(tiny_beir, tmp_path / "data" / "tiny")
    with (tiny_beir / "qrels" / "test.tsv").open("a") as fh:
        fh.write("q1\td1\t1\nq2\td1\t1\nq1\td4\t1\nq3\td6\t1\n")  # documents the tiny encoder ranks low
    out = tmp_path / "dense"
    args = ["eval", "--data", str(tiny_beir), "--model", str(tiny_st_model_dir), "--device", "cpu", "--top-k", "2", "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    report_auc = json.loads((out / "metrics.json").read_text())["metrics"]["auc_global"]
    exact = read_positive_scores(out / "run.trec")
    judged = {("q1", "d3"), ("q2", "d5"), ("q3", "d2"), ("q1", "d1"), ("q2", "d1"), ("q1", "d4"), ("q3", "d6")}
    assert exact is not None and {(q, d) for q, docs in exact.items() for d in docs} == judged

    assert compare_global_auc(out, out / "run.trec", tiny_beir, resamples=10).auc_a == pytest.approx(report_auc, abs=1e-6)
    # Without the sidecar the run file alone gives another AUC: the check above can fail.
    positive_scores_path(out / "run.trec").unlink()
    assert compare_global_auc(out, out, tiny_beir, resamples=10).auc_a != pytest.approx(report_auc, abs=1e-3)
