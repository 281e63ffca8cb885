"""Real model, real data: the default model's SciFact figure, metrics on the real run
against pytrec_eval, and a real uvicorn process answering /search over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import pytrec_eval
from conftest import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scifact_eval(scifact_index_dir, data_dir, minilm_path):
    from densekit.data import load_beir
    from densekit.encoder import Encoder
    from densekit.eval.evaluate import evaluate_index
    from densekit.index.dense_index import load_index

    ds = load_beir(data_dir / "scifact", "test")
    return ds, evaluate_index(load_index(scifact_index_dir), Encoder(minilm_path, device="cpu"), ds, top_k=1000)


def test_default_model_matches_published_scifact_ndcg(scifact_eval):
    _, outcome = scifact_eval
    # MTEB's published nDCG@10 for all-MiniLM-L6-v2 on SciFact is 0.645.
    assert outcome.metrics["ndcg@10"] == pytest.approx(0.645, abs=0.005)
    assert 0.5 < outcome.metrics["auc_global"] <= 1.0


def test_real_run_metrics_equal_pytrec_eval(scifact_eval):
    ds, outcome = scifact_eval
    ref = pytrec_eval.RelevanceEvaluator(ds.qrels, {"ndcg_cut.10,100", "recall.10,100", "map_cut.100"}).evaluate(outcome.run)
    for ours, theirs in (
        ("ndcg@10", "ndcg_cut_10"),
        ("ndcg@100", "ndcg_cut_100"),
        ("recall@100", "recall_100"),
        ("map@100", "map_cut_100"),
    ):
        assert outcome.metrics[ours] == pytest.approx(np.mean([v[theirs] for v in ref.values()]), abs=1e-6)


def test_uvicorn_serves_scifact_search(scifact_index_dir):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DENSEKIT_DEVICE": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "densekit.cli.main", "serve", "--index", str(scifact_index_dir), "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.stdout.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("server did not become ready in 180 s")
        r = httpx.post(f"{base}/search", json={"query": "0-dimensional biomaterials show inductive properties.", "top_k": 10}, timeout=30)
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert len(hits) == 10 and all(h["text"] for h in hits)
        # SciFact test query 1's judged document.
        assert "31715818" in [h["id"] for h in hits]
        bad = httpx.post(f"{base}/search", json={"query": "", "top_k": 5}, timeout=30)
        assert bad.status_code == 400 and bad.json()["error_type"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
