"""A bounded load test on loopback: `densekit serve` as a real uvicorn process, 32 concurrent
clients, mixed search / search+rerank / rerank / embed for 10 s (scripts/load_test.py; the
60-s run with the real model is in BENCHMARKS.md). No 5xx, every response valid, 429 only
when the queue is full."""

from __future__ import annotations

import pytest
from service_support import build_index, synthetic_docs, tiny_cross_encoder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_st_model_dir, minilm_path):
    base = tmp_path_factory.mktemp("load")
    index = build_index(tiny_st_model_dir, base / "index", synthetic_docs(300))
    reranker = tiny_cross_encoder(base / "ce", minilm_path)
    return index, reranker, base


def _run(args: list[str]) -> dict:
    import json

    from scripts.load_test import main

    out = args[args.index("--out") + 1]
    main(args)
    return json.loads(open(out).read())


def test_load_32_clients_no_5xx_every_response_valid(served):
    index, reranker, base = served
    res = _run(
        [
            "--spawn",
            "--index",
            str(index),
            "--reranker",
            str(reranker),
            "--read-only",
            "--clients",
            "32",
            "--duration",
            "10",
            "--warmup",
            "1",
            "--max-requests",
            "50000",
            "--data-dir",
            "",
            "--out",
            str(base / "load.json"),
            "--server-log",
            str(base / "server.log"),
        ]
    )
    assert res["ok"] > 0 and res["requests"] == res["ok"]
    assert res["http_5xx_or_failed"] == 0 and res["invalid"] == 0, res
    # 32 clients with one request in flight each never fill a queue of 512: no 429 at all.
    assert res["http_429"] == 0
    assert set(res["latency"]) == {"search", "search_rerank", "rerank", "embed"}


def test_overload_gets_429_not_errors(served):
    index, reranker, base = served
    res = _run(
        [
            "--spawn",
            "--index",
            str(index),
            "--reranker",
            str(reranker),
            "--read-only",
            "--clients",
            "32",
            "--duration",
            "4",
            "--warmup",
            "0.5",
            "--max-queue",
            "1",
            "--max-requests",
            "50000",
            "--data-dir",
            "",
            "--out",
            str(base / "overload.json"),
            "--server-log",
            str(base / "server.log"),
        ]
    )
    assert res["http_429"] > 0, res  # queues of one request are full under 32 clients
    assert res["http_5xx_or_failed"] == 0 and res["invalid"] == 0, res
    assert res["ok"] > 0
