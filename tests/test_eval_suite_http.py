"""Evaluation over HTTP: `densekit eval --endpoint URL` against a real uvicorn server on
127.0.0.1 gives the same run and metrics as the in-process evaluation of the same index."""

from __future__ import annotations

import json

import pytest
from conftest import free_port
from service_support import serve_in_thread
from typer.testing import CliRunner

from densekit.cli.main import app

runner = CliRunner()


def _serve(tiny_beir, tiny_st_model_dir, tmp_path, **settings):
    """The tiny index, served by uvicorn in a thread of this process (real sockets)."""
    from densekit.service.app import create_app
    from densekit.settings import Settings

    ix = tmp_path / "ix"
    r = runner.invoke(app, ["index", "build", "--data", str(tiny_beir), "--model", str(tiny_st_model_dir), "--out", str(ix)])
    assert r.exit_code == 0, r.output
    with serve_in_thread(create_app(Settings(index_dir=ix, device="cpu", **settings))) as url:
        yield ix, url


@pytest.fixture()
def served_index(tiny_beir, tiny_st_model_dir, tmp_path):
    yield from _serve(tiny_beir, tiny_st_model_dir, tmp_path)


@pytest.fixture()
def served_with_reranker(tiny_beir, tiny_st_model_dir, tiny_ce_dir, tmp_path):
    yield from _serve(tiny_beir, tiny_st_model_dir, tmp_path, reranker=str(tiny_ce_dir))


def _run_lines(path):
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(q, d, int(r)) for q, _, d, r, _, _ in rows], {(q, d): float(s) for q, _, d, _, s, _ in rows}


def test_http_evaluation_equals_in_process(served_index, tiny_beir, tmp_path):
    ix, url = served_index
    http_out, local_out = tmp_path / "http", tmp_path / "local"
    r = runner.invoke(app, ["eval", "--data", str(tiny_beir), "--endpoint", url, "--out", str(http_out)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["eval", "--data", str(tiny_beir), "--index", str(ix), "--out", str(local_out)])
    assert r.exit_code == 0, r.output
    http_rank, http_scores = _run_lines(http_out / "run.trec")
    local_rank, local_scores = _run_lines(local_out / "run.trec")
    assert http_rank == local_rank and len(http_rank) == 3 * 6
    for key, s in local_scores.items():
        assert http_scores[key] == pytest.approx(s, abs=1e-5)
    m_http = json.loads((http_out / "metrics.json").read_text())
    m_local = json.loads((local_out / "metrics.json").read_text())
    assert m_http["endpoint"] == url and m_http["dataset"] == m_local["dataset"]
    assert m_http["metrics"].keys() == m_local["metrics"].keys()
    for k, v in m_local["metrics"].items():
        assert m_http["metrics"][k] == pytest.approx(v, abs=1e-6), k


def test_endpoint_and_index_side_by_side_in_one_report(served_index, tiny_beir, tmp_path):
    ix, url = served_index
    out = tmp_path / "suite"
    r = runner.invoke(app, ["eval", "--data", str(tiny_beir), "--index", str(ix), "--endpoint", url, "--out", str(out), "--no-plots"])
    assert r.exit_code == 0, r.output
    suite = json.loads((out / "suite.json").read_text())
    local, http = suite["datasets"]["tiny"]["results"].values()
    assert http["info"]["endpoint"] == url
    for k, v in local["metrics"].items():
        assert http["metrics"][k] == pytest.approx(v, abs=1e-6), k
    test = next(iter(suite["significance"]["tests"]["tiny"].values()))
    assert test["p_randomisation"] == 1.0


def test_endpoint_errors_are_clear(served_index, tiny_beir, tmp_path):
    _, url = served_index
    r = runner.invoke(app, ["eval", "--data", str(tiny_beir), "--endpoint", url, "--top-k", "5000", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "max_top_k" in str(r.exception)
    dead = f"http://127.0.0.1:{free_port()}"
    r = runner.invoke(app, ["eval", "--data", str(tiny_beir), "--endpoint", dead, "--out", str(tmp_path / "y")])
    assert r.exit_code != 0 and "endpoint" in str(r.exception)


def test_server_reranking_is_scored_like_in_process_reranking(served_with_reranker, tiny_beir, tiny_ce_dir, tmp_path):
    """The endpoint path where the server reranks follows the same two-stage protocol as
    `--rerank` in-process: same candidates, same numbers for both stages."""
    ix, url = served_with_reranker
    http_out, local_out = tmp_path / "http", tmp_path / "local"
    r = runner.invoke(
        app, ["eval", "--data", str(tiny_beir), "--endpoint", url, "--endpoint-rerank", "--rerank-top-n", "4", "--out", str(http_out)]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "eval",
            "--data",
            str(tiny_beir),
            "--index",
            str(ix),
            "--rerank",
            str(tiny_ce_dir),
            "--rerank-top-n",
            "4",
            "--out",
            str(local_out),
        ],
    )
    assert r.exit_code == 0, r.output
    m_http = json.loads((http_out / "rerank" / "metrics.json").read_text())
    m_local = json.loads((local_out / "rerank" / "metrics.json").read_text())
    assert m_http["info"]["pairs"] == m_local["info"]["pairs"] == 12 and m_http["info"]["endpoint"] == url
    for stage in ("first_stage", "reranked"):
        assert m_http[stage].keys() == m_local[stage].keys()
        for k, v in m_local[stage].items():
            assert m_http[stage][k] == pytest.approx(v, abs=1e-5), (stage, k)
    http_rank, http_scores = _run_lines(http_out / "rerank" / "run.trec")
    local_rank, local_scores = _run_lines(local_out / "rerank" / "run.trec")
    assert http_rank == local_rank
    for key, s in local_scores.items():
        assert http_scores[key] == pytest.approx(s, abs=1e-4)
