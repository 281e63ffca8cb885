"""Paired significance tests on constructed runs with known answers, and `densekit eval compare`."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from densekit.cli.main import app
from densekit.eval.significance import compare_paired, paired_ttest, randomisation_test

runner = CliRunner()


def test_identical_runs_give_p_one():
    rng = np.random.default_rng(0)
    a = {f"q{i}": float(v) for i, v in enumerate(rng.random(50))}
    t = compare_paired(a, dict(a))
    assert t.p_randomisation == 1.0
    assert t.p_ttest == 1.0
    assert t.mean_diff == 0.0 and t.ties == 50 and t.wins == t.losses == 0


def test_better_on_every_query_gives_small_p():
    rng = np.random.default_rng(1)
    base = rng.random(40) * 0.5
    a = {f"q{i}": float(v) for i, v in enumerate(base)}
    b = {f"q{i}": float(v + 0.05 + 0.1 * rng.random()) for i, v in enumerate(base)}
    t = compare_paired(a, b, n_permutations=5000)
    assert t.wins == 40 and t.losses == 0
    # 40 positive differences: no random sign pattern of 5000 reaches the observed mean.
    assert t.p_randomisation == pytest.approx(1 / 5001)
    assert t.p_ttest < 1e-6
    assert t.mean_diff > 0 and t.cohens_d > 1 and t.ci95_low > 0


def test_symmetric_differences_are_not_significant():
    a = {f"q{i}": 0.5 for i in range(20)}
    b = {f"q{i}": 0.5 + (0.1 if i % 2 else -0.1) for i in range(20)}
    t = compare_paired(a, b)
    assert t.mean_diff == pytest.approx(0.0, abs=1e-12)
    assert t.p_randomisation > 0.9 and t.p_ttest > 0.9


def test_exact_enumeration_matches_brute_force():
    diff = np.array([0.3, 0.1, -0.05, 0.2, 0.15, -0.1, 0.25])
    a = np.zeros_like(diff)
    p, n, exact = randomisation_test(a, diff, n_permutations=10_000)
    assert exact and n == 2 ** len(diff)
    observed = abs(diff.mean())
    count = sum(abs(np.mean(np.array(s) * diff)) >= observed - 1e-12 for s in itertools.product([-1, 1], repeat=len(diff)))
    assert p == pytest.approx(count / 2 ** len(diff))


def test_sampled_test_agrees_with_exact_one():
    rng = np.random.default_rng(3)
    diff = rng.normal(0.05, 0.2, size=14)
    p_exact, _, exact = randomisation_test(np.zeros(14), diff, n_permutations=20_000)
    assert exact
    p_sampled, _, sampled_exact = randomisation_test(np.zeros(14), diff, n_permutations=4000)
    assert not sampled_exact
    assert p_sampled == pytest.approx(p_exact, abs=0.03)


def test_ttest_matches_scipy():
    from scipy import stats

    rng = np.random.default_rng(4)
    a, b = rng.random(30), rng.random(30)
    p, t = paired_ttest(a, b)
    ref = stats.ttest_rel(b, a)
    assert p == pytest.approx(ref.pvalue) and t == pytest.approx(ref.statistic)


def _write_csv(path, values: dict[str, float], metric="ndcg@10"):
    path.write_text("qid," + metric + ",recall@100\n" + "".join(f"{q},{v:.6f},{min(1.0, v + 0.1):.6f}\n" for q, v in values.items()))


def test_cli_compare_csv_and_json(tmp_path):
    rng = np.random.default_rng(5)
    a = {f"q{i}": float(v) for i, v in enumerate(rng.random(30) * 0.6)}
    b = {q: v + 0.2 for q, v in a.items()}
    _write_csv(tmp_path / "a.csv", a)
    _write_csv(tmp_path / "b.csv", b)
    out = tmp_path / "cmp.json"
    r = runner.invoke(
        app, ["eval", "compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "-m", "ndcg@10", "-m", "recall@100", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "p (randomisation)" in r.stdout and "ndcg@10*" in r.stdout
    tests = json.loads(out.read_text())["tests"]
    assert [t["metric"] for t in tests] == ["ndcg@10", "recall@100"]
    assert tests[0]["mean_diff"] == pytest.approx(0.2, abs=1e-6) and tests[0]["p_ttest"] < 1e-6
    r = runner.invoke(app, ["eval", "compare", str(tmp_path / "a.csv"), str(tmp_path / "a.csv")])
    assert r.exit_code == 0 and "| 1.0000 (" in r.stdout


def test_cli_compare_trec_runs_with_qrels(tmp_path):
    from densekit.eval.trec import write_run

    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(12)))
    good = {f"q{i}": {f"d{i}": 2.0, f"x{i}": 1.0} for i in range(12)}
    bad = {f"q{i}": {f"x{i}": 2.0, f"d{i}": 1.0} for i in range(12)}
    write_run(tmp_path / "good.trec", good)
    write_run(tmp_path / "bad.trec", bad)
    r = runner.invoke(
        app,
        [
            "eval",
            "compare",
            str(tmp_path / "bad.trec"),
            str(tmp_path / "good.trec"),
            "--qrels",
            str(qrels),
            "-m",
            "mrr@10",
            "--out",
            str(tmp_path / "c.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    t = json.loads((tmp_path / "c.json").read_text())["tests"][0]
    assert t["mean_a"] == pytest.approx(0.5) and t["mean_b"] == pytest.approx(1.0)
    assert t["wins"] == 12 and t["exact"] and t["p_randomisation"] == pytest.approx(2 / 2**12)
    # A run file without qrels is refused with a message, not a stack trace.
    r = runner.invoke(app, ["eval", "compare", str(tmp_path / "bad.trec"), str(tmp_path / "good.trec")])
    assert r.exit_code != 0 and "--qrels" in str(r.exception)


@pytest.mark.parametrize("cmd", [["eval", "compare", "--help"], ["eval", "mteb", "--help"]])
def test_subcommand_help(cmd):
    r = runner.invoke(app, cmd)
    assert r.exit_code == 0 and "Usage" in r.output


def _random_pairs(rng, n_queries=25, ties=True):
    from densekit.eval.auc import AucPairs

    pairs = AucPairs()
    for i in range(n_queries):
        pos = rng.normal(0.6, 0.2, size=int(rng.integers(1, 4)))
        neg = rng.normal(0.4, 0.2, size=int(rng.integers(0, 12)))
        if ties:  # coarse scores so that positives and negatives tie
            pos, neg = np.round(pos, 1), np.round(neg, 1)
        pairs.pos[f"q{i}"], pairs.neg[f"q{i}"] = pos.tolist(), neg.tolist()
    return pairs


def test_auc_bootstrap_matches_resampling_by_concatenation():
    """The weighted computation equals pooling the resampled queries' pairs (duplicates
    included) and calling auc_score, resample by resample, with the same draws."""
    from densekit.eval.auc import auc_score
    from densekit.eval.significance import bootstrap_global_auc

    rng = np.random.default_rng(7)
    pa, pb = _random_pairs(rng), _random_pairs(rng)
    got = bootstrap_global_auc(pa, pb, resamples=200, seed=3)
    qids = sorted(pa.pos)

    def pooled(pairs, sample):
        return auc_score(np.concatenate([pairs.pos[q] for q in sample]), np.concatenate([pairs.neg[q] for q in sample]))

    draws = np.random.default_rng(3)
    diffs = []
    for _ in range(200):
        sample = [qids[i] for i in draws.integers(0, len(qids), len(qids))]
        diffs.append(pooled(pb, sample) - pooled(pa, sample))
    assert got.auc_a == pytest.approx(pooled(pa, qids), abs=1e-12) and got.auc_b == pytest.approx(pooled(pb, qids), abs=1e-12)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    assert (got.ci95_low, got.ci95_high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert got.p_diff_le_0 == pytest.approx(np.mean(np.array(diffs) <= 0))


def test_auc_bootstrap_identical_runs_and_a_clearly_better_run():
    from densekit.eval.auc import AucPairs
    from densekit.eval.significance import bootstrap_global_auc

    rng = np.random.default_rng(11)
    pa = _random_pairs(rng, ties=False)
    same = bootstrap_global_auc(pa, pa, resamples=300)
    assert same.diff == 0.0 and same.ci95_low <= 0.0 <= same.ci95_high and same.p_diff_le_0 == 1.0
    # B ranks every positive above its negatives: its global AUC is far above A's.
    pb = AucPairs({q: [5.0 + s for s in v] for q, v in pa.pos.items()}, dict(pa.neg))
    better = bootstrap_global_auc(pa, pb, resamples=300)
    assert better.auc_b == 1.0 and better.diff > 0.1
    assert better.ci95_low > 0 and better.p_diff_le_0 == 0.0
    with pytest.raises(Exception, match="share no query"):
        bootstrap_global_auc(pa, AucPairs(), resamples=10)


def test_cli_compare_auc_bootstrap(tmp_path):
    from densekit.eval.trec import write_run

    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(20)))
    good = {f"q{i}": {f"d{i}": 2.0, f"x{i}": 1.0, f"y{i}": 0.5} for i in range(20)}
    bad = {f"q{i}": {f"x{i}": 2.0, f"d{i}": 1.0, f"y{i}": 0.5} for i in range(20)}
    write_run(tmp_path / "bad.trec", bad)
    (tmp_path / "good").mkdir()
    write_run(tmp_path / "good" / "run.trec", good)  # a report folder's run
    (tmp_path / "good" / "per_query.csv").write_text("qid,mrr@10\n" + "".join(f"q{i},1.0\n" for i in range(20)))
    args = ["eval", "compare", str(tmp_path / "bad.trec"), str(tmp_path / "good"), "--qrels", str(qrels), "-m", "mrr@10"]
    r = runner.invoke(app, [*args, "--auc-bootstrap", "200", "--out", str(tmp_path / "c.json")])
    assert r.exit_code == 0, r.output
    assert "Global ROC-AUC" in r.stdout and "P(B - A <= 0)" in r.stdout
    boot = json.loads((tmp_path / "c.json").read_text())["auc_bootstrap"]
    # bad: each positive beats one of two negatives (AUC 0.5); good: both (AUC 1).
    assert boot["auc_a"] == pytest.approx(0.5) and boot["auc_b"] == pytest.approx(1.0)
    assert boot["ci95_low"] > 0 and boot["p_diff_le_0"] == 0.0 and boot["n_queries"] == 20
    r = runner.invoke(
        app,
        [
            "eval",
            "compare",
            str(tmp_path / "bad.trec"),
            str(tmp_path / "bad.trec"),
            "--qrels",
            str(qrels),
            "--auc-bootstrap",
            "50",
            "-m",
            "mrr@10",
        ],
    )
    assert r.exit_code == 0 and "| +0.0000 | [+0.0000, +0.0000] | 1.000 |" in r.stdout
    r = runner.invoke(
        app, ["eval", "compare", str(tmp_path / "good" / "per_query.csv"), str(tmp_path / "good"), "--auc-bootstrap", "50", "-m", "mrr@10"]
    )
    assert r.exit_code != 0 and "--qrels" in r.output + str(r.exception)


def test_auc_bootstrap_uses_the_exact_positive_scores_beside_a_run(tmp_path):
    """Relevant documents outside the run: with their exact scores (the sidecar the report
    writes) p1 at 0.8 beats q2's negative at 0.5; without them both sit below every negative."""
    from densekit.eval.compare import compare_global_auc
    from densekit.eval.report import write_report

    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\tp1\t1\nq2\tp2\t1\n")
    run = {"q1": {"n1": 0.9}, "q2": {"n2": 0.5}}
    write_report(tmp_path / "exact", {}, {}, run, {}, {"q1": {"p1": 0.8}, "q2": {"p2": 0.4}})
    write_report(tmp_path / "bare", {}, {}, run, {})
    boot = compare_global_auc(tmp_path / "bare", tmp_path / "exact" / "run.trec", qrels, resamples=20)
    assert boot.auc_a == pytest.approx(0.0) and boot.auc_b == pytest.approx(0.25)
    # A later run into the same folder without exact scores (a hybrid run, say) drops the sidecar.
    write_report(tmp_path / "exact", {}, {}, run, {})
    assert compare_global_auc(tmp_path / "exact", tmp_path / "exact", qrels, resamples=20).auc_a == pytest.approx(0.0)


@pytest.mark.parametrize(
    "line, problem",
    [
        ("q1\td1", "3 tab-separated columns"),
        ("q1\td1\tx", "not a number"),
        ("q1\td1\tnan", "not finite"),
        ("q1\td1\t0.5", "a second score"),
    ],
)
def test_a_malformed_positive_score_sidecar_names_its_file_and_line(tmp_path, line, problem):
    from densekit.errors import DataFormatError
    from densekit.eval.trec import positive_scores_path, read_positive_scores, write_run

    write_run(tmp_path / "run.trec", {"q1": {"d1": 1.0}})
    sidecar = positive_scores_path(tmp_path / "run.trec")
    sidecar.write_text(f"q1\td1\t0.5\n{line}\n")
    with pytest.raises(DataFormatError, match=problem) as err:
        read_positive_scores(tmp_path / "run.trec")
    assert str(sidecar) in str(err.value) and ":2" in str(err.value)
