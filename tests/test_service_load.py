"""A bounded load test on loopback: `densekit serve` as a real uvicorn process, 32 concurrent
clients, mixed search / search+rerank / rerank / embed for 10 s (densekit.bench.load; the
60-s run with the real model is in BENCHMARKS.md). No 5xx, every response valid, 429 only
when the queue is full."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from service_support import build_index, synthetic_docs, tiny_cross_encoder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_st_model_dir, minilm_path):
    base = tmp_path_factory.mktemp("load")
    index = build_index(tiny_st_model_dir, base / "index", synthetic_docs(300))
    reranker = tiny_cross_encoder(base / "ce", minilm_path)
    return index, reranker, base


def _run(**options) -> dict:
    from densekit.bench.load import LoadOptions, run_load

    result = run_load(LoadOptions(spawn=True, read_only=True, clients=32, max_requests=50000, data_dir=None, **options))
    assert json.loads(Path(options["out"]).read_text()) == result  # the JSON written is the result returned
    return result


def test_load_32_clients_no_5xx_every_response_valid(served):
    index, reranker, base = served
    res = _run(
        index=str(index), reranker=str(reranker), duration=10, warmup=1, out=str(base / "load.json"), server_log=str(base / "server.log")
    )
    # On failure, the result (status counts per kind, transport errors, invalid bodies) and
    # the server's own log say which side broke.
    why = f"{res}\nserver log tail:\n{(base / 'server.log').read_text(errors='replace')[-3000:]}"
    assert res["http_5xx_or_failed"] == 0 and res["invalid"] == 0, why
    assert res["ok"] > 0 and res["requests"] == res["ok"], why
    # 32 clients with one request in flight each never fill a queue of 512: no 429 at all.
    assert res["http_429"] == 0, why
    assert set(res["latency"]) == {"search", "search_rerank", "rerank", "embed"}


def test_overload_gets_429_not_errors(served):
    index, reranker, base = served
    res = _run(
        index=str(index),
        reranker=str(reranker),
        duration=4,
        warmup=0.5,
        max_queue=1,
        out=str(base / "overload.json"),
        server_log=str(base / "server.log"),
    )
    assert res["http_429"] > 0, res  # queues of one request are full under 32 clients
    assert res["http_5xx_or_failed"] == 0 and res["invalid"] == 0, res
    assert res["ok"] > 0
