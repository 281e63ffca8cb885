"""HTTP-level behaviour of the service beyond each route's own job: slow clients cut off (a
real `densekit serve` process and raw sockets), protected API docs, HEAD, no file paths in any
answer, OpenAI's error object under /v1/, Cohere's v2 rerank shape, refusals counted by
reason, and one error shape for CORS refusals and a missing reranker."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time

import pytest
from fastapi.testclient import TestClient
from service_support import FakeReranker, ServerProcess, make_state

from densekit.service.app import create_app
from densekit.settings import Settings

KEY = "secret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _client(index_dir, encoder, reranker=None, **overrides) -> TestClient:
    settings = Settings(index_dir=index_dir, device="cpu", max_client_batch=8, max_payload_bytes=64_000, **overrides)
    return TestClient(create_app(settings, make_state(settings, encoder, reranker)))


def _rejected(client: TestClient, reason: str) -> float:
    for line in client.get("/metrics", headers=AUTH).text.splitlines():
        if line.startswith(f'densekit_rejected_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# ---- slow clients: a real server process, raw sockets ---------------------------------------
def _read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed."""
    t0 = time.monotonic()
    data = b""
    sock.settimeout(limit_s)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data, time.monotonic() - t0


def _trickle(port: int, head: bytes, drip: bytes, every_s: float, limit_s: float) -> tuple[bytes, float]:
    """Send `head`, then `drip` every `every_s` seconds, as a slow client does; return what the
    server answered and how long after the first byte the connection was closed."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    t0 = time.monotonic()
    closed = threading.Event()

    def drip_loop() -> None:
        while not closed.is_set() and time.monotonic() - t0 < limit_s:
            time.sleep(every_s)
            try:
                sock.sendall(drip)
            except OSError:
                return

    sock.sendall(head)
    dripper = threading.Thread(target=drip_loop, daemon=True)
    dripper.start()
    try:
        data, _ = _read_until_closed(sock, limit_s)
    finally:
        closed.set()
        sock.close()
    dripper.join(5)
    return data, time.monotonic() - t0


@pytest.fixture(scope="module")
def slow_client_server(base_index, tmp_path_factory):
    index = tmp_path_factory.mktemp("slow") / "index"
    shutil.copytree(base_index, index)
    server = ServerProcess(
        "--index", str(index), "--device", "cpu", "--read-only",
        "--request-header-timeout-s", "2", "--request-read-timeout-s", "2", "--max-header-bytes", "4096",
    )  # fmt: skip
    try:
        server.wait_ready(timeout=180)
        yield server
    finally:
        server.stop()


def test_slow_clients_are_cut_off(slow_client_server):
    import httpx

    port = slow_client_server.port
    # A header line every half second: the head never completes; 408 and closed after ~2 s.
    data, took = _trickle(port, b"GET /health HTTP/1.1\r\nHost: x\r\n", b"X-Slow: 1\r\n", 0.5, 10)
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error_type"] == "request_timeout"
    assert 1.5 < took < 6, took
    # The head arrives, the body trickles: the app's read deadline answers 408 and closes.
    head = b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    data, took = _trickle(port, head, b" ", 0.5, 10)
    assert data.startswith(b"HTTP/1.1 408"), data[:300]
    assert b'"request_timeout"' in data and b"request_read_timeout_s" in data
    assert 1.5 < took < 6, took
    # A head past max_header_bytes: 431 at once.
    data, took = _trickle(port, b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 8000, b"a", 0.5, 10)
    assert data.startswith(b"HTTP/1.1 431"), data[:200]
    assert took < 1.5
    # A connection that sends nothing is closed too, without an answer.
    data, took = _trickle(port, b"", b"", 0.5, 10)
    assert data == b"" and took < 6
    # Ordinary clients are not affected, keep-alive included; HEAD works on a real server.
    with httpx.Client(base_url=slow_client_server.url) as c:
        for _ in range(3):
            assert c.get("/health").status_code == 200
        r = c.head("/health")
        assert r.status_code == 200 and r.content == b""
        assert c.post("/embed", json={"inputs": "cats"}).status_code == 200
        metrics = c.get("/metrics").text
        assert 'densekit_rejected_total{reason="request_timeout"} 2.0' in metrics  # the head's and the body's
        assert 'densekit_rejected_total{reason="headers_too_large"} 1.0' in metrics


# ---- API docs behind the key ---------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_docs_need_the_key_unless_public(index_dir, encoder, path):
    with _client(index_dir, encoder, api_keys=[KEY]) as c:
        r = c.get(path)
        assert r.status_code == 401 and r.json()["error_type"] == "unauthorized"
        assert c.get(path, headers=AUTH).status_code == 200
    with _client(index_dir, encoder, api_keys=[KEY], public_docs=True) as c:
        assert c.get(path).status_code == 200
    with _client(index_dir, encoder) as c:  # no keys: nothing to protect
        assert c.get(path).status_code == 200


# ---- HEAD wherever GET works ------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/health", "/ready", "/info", "/metrics", "/openapi.json", "/documents/d1"])
def test_head_answers_like_get_without_a_body(index_dir, encoder, path):
    with _client(index_dir, encoder) as c:
        get, head = c.get(path), c.head(path)
        assert head.status_code == get.status_code == 200
        assert head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
        if path != "/metrics":  # the metrics change between the two requests
            assert head.headers["content-length"] == str(len(get.content))
        assert 'method="HEAD"' in c.get("/metrics").text
        assert c.head("/documents/nope").status_code == 404


# ---- no file paths on any route -------------------------------------------------------------------
def test_no_route_shows_a_file_path(index_dir, tiny_ce_dir, tmp_path_factory):
    root = str(tmp_path_factory.getbasetemp())
    settings = Settings(index_dir=index_dir, reranker=str(tiny_ce_dir), device="cpu")
    with TestClient(create_app(settings)) as c:
        info = c.get("/info").json()
        model, reranker = info["model"], info["reranker"]
        assert "/" not in model and "/" not in reranker and reranker == tiny_ce_dir.name
        assert info["index"]["wal_dir"] == "index.wal"
        answers = [
            c.get("/health"),
            c.get("/ready"),
            c.get("/info"),
            c.get("/openapi.json"),
            c.get("/metrics"),
            c.post("/search", json={"query": "capital of France", "rerank": True}),
            c.post("/embed", json={"inputs": "cats"}),
            c.post("/v1/embeddings", json={"input": "cats", "model": model}),
            c.post("/v1/embeddings", json={"input": "cats", "model": "other"}),
            c.post("/rerank", json={"query": "cats", "texts": ["a cat"]}),
            c.post("/v1/rerank", json={"query": "cats", "documents": ["a cat"], "model": reranker}),
            c.post("/v1/rerank", json={"query": "cats", "documents": ["a cat"], "model": "other"}),
            c.post("/v2/rerank", json={"query": "cats", "documents": ["a cat"], "model": reranker}),
            c.get("/documents/d1"),
        ]
        for r in answers:
            assert r.status_code in (200, 404), (r.request.url, r.text)
            assert root not in r.text, (r.request.url, r.text)
        assert answers[7].json()["model"] == model
        assert answers[10].json()["model"] == reranker


def test_failed_load_shows_no_path(tmp_path):
    missing = tmp_path / "no-such-index"
    with TestClient(create_app(Settings(index_dir=missing, device="cpu", load_in_background=True))) as c:
        deadline = time.monotonic() + 30
        while c.get("/health").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        for path in ("/health", "/ready", "/info"):
            r = c.get(path)
            assert str(tmp_path) not in r.text, (path, r.text)
        assert c.get("/health").status_code == 503
        assert "no-such-index" in c.get("/ready").json()["error"]  # named, not located


def test_served_names_come_from_settings_or_the_folder(tmp_path):
    from densekit.service.served_names import served_name

    folder = tmp_path / "my-model"
    folder.mkdir()
    assert served_name(None, str(folder)) == "my-model"
    assert served_name(None, str(folder) + "/") == "my-model"
    assert served_name(None, "BAAI/bge-reranker-base") == "BAAI/bge-reranker-base"
    assert served_name("prod-embedder", str(folder)) == "prod-embedder"


# ---- OpenAI's error object and model names under /v1/ -------------------------------------------
def test_openai_error_object_and_model_not_found(index_dir, encoder):
    with _client(index_dir, encoder, FakeReranker(), api_keys=[KEY]) as c:
        served = c.get("/info", headers=AUTH).json()["model"]
        r = c.post("/v1/embeddings", json={"input": "cats", "model": "text-embedding-3-small"}, headers=AUTH)
        assert r.status_code == 404
        assert r.json() == {
            "error": {
                "message": f"The model `text-embedding-3-small` does not exist: this server serves `{served}` "
                "(or start it with --allow-any-model)",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        }
        r = c.post("/v1/embeddings", json={"input": "cats"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error" and r.json()["error"]["code"] == "unauthorized"
        r = c.post("/v1/embeddings", json={"input": 5, "model": served}, headers=AUTH)
        assert r.status_code == 422 and r.json()["error"]["param"] == "input" and r.json()["error"]["code"] == "validation"
        r = c.post("/v1/rerank", json={"query": "q", "documents": ["a"], "model": "rerank-v3"}, headers=AUTH)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = c.post("/v1/embeddings", content=b"x" * 70_000, headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"  # the middleware's answer too
        # Other routes keep densekit's shape.
        assert set(c.post("/embed", json={"inputs": ""}, headers=AUTH).json()) == {"error", "error_type"}
        r = c.post("/v2/rerank", json={"query": "q", "documents": ["a"], "model": "rerank-v3.5"}, headers=AUTH)
        assert r.status_code == 404 and r.json()["error_type"] == "model_not_found"
    with _client(index_dir, encoder, FakeReranker(), allow_any_model=True) as c:
        r = c.post("/v1/embeddings", json={"input": "cats", "model": "text-embedding-3-small"})
        assert r.status_code == 200 and r.json()["model"] == served  # the name of what answered
        assert c.post("/v2/rerank", json={"query": "q", "documents": ["a"], "model": "x"}).status_code == 200


# ---- Cohere v2 -------------------------------------------------------------------------------------
def test_cohere_v2_rerank_shape(index_dir, encoder):
    docs = ["dogs", "the capital city of Italy is Rome", "Paris is in France"]
    with _client(index_dir, encoder, FakeReranker()) as c:
        r = c.post("/v2/rerank", json={"model": "fake-reranker", "query": "capital city of Italy", "documents": docs, "top_n": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"id", "results", "meta"} and body["id"] == r.headers["x-request-id"]
        assert body["meta"] == {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
        assert [x["index"] for x in body["results"]] == [1, 2] or body["results"][0]["index"] == 1
        assert len(body["results"]) == 2 and set(body["results"][0]) == {"index", "relevance_score"}
        expected = FakeReranker().score("capital city of Italy", docs)
        assert body["results"][0]["relevance_score"] == pytest.approx(expected[1])
        with_docs = c.post("/v2/rerank", json={"query": "capital city of Italy", "documents": docs, "return_documents": True}).json()
        assert with_docs["results"][0]["document"] == {"text": docs[1]}
        # max_tokens_per_doc cuts each document before scoring (words stand in for tokens here).
        long = ["a b c d capital city of Italy"]
        full = c.post("/v2/rerank", json={"query": "capital city of Italy", "documents": long}).json()
        cut = c.post("/v2/rerank", json={"query": "capital city of Italy", "documents": long, "max_tokens_per_doc": 4}).json()
        assert full["results"][0]["relevance_score"] == 1.0 and cut["results"][0]["relevance_score"] == 0.0
        for bad in ({"query": "q", "documents": []}, {"query": "", "documents": ["a"]}, {"query": "q", "documents": ["a"], "top_n": 0}):
            r = c.post("/v2/rerank", json=bad)
            assert r.status_code in (400, 422) and set(r.json()) == {"error", "error_type"}


def test_truncate_to_tokens_with_a_real_tokenizer(tiny_st_model_dir):
    from transformers import AutoTokenizer

    from densekit.service.token_count import TokenCounter

    tok = AutoTokenizer.from_pretrained(str(tiny_st_model_dir))
    counter = TokenCounter(tok, None)
    text = "Unbelievably, tokenization splits words into pieces."
    cut = counter.truncate([text, "short"], 3)
    assert cut[1] == "short"
    assert text.startswith(cut[0]) and len(cut[0]) < len(text)
    assert len(tok(cut[0], add_special_tokens=False)["input_ids"]) == 3


# ---- refusals counted by reason ---------------------------------------------------------------------
def test_every_refusal_is_counted_by_reason(index_dir, encoder):
    rr = FakeReranker()
    rr.gate = threading.Event()
    with _client(index_dir, encoder, rr, max_queue=1, api_keys=[KEY]) as c:
        batcher = c.app.state.dk.rerank.batcher
        results = []

        def call(q: str) -> None:
            results.append(c.post("/rerank", json={"query": q, "texts": [q]}, headers=AUTH))

        t1 = threading.Thread(target=call, args=("a",))
        t1.start()
        assert rr.started.wait(10)
        t2 = threading.Thread(target=call, args=("b",))
        t2.start()
        deadline = time.monotonic() + 10
        while batcher.depth < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        overloaded = [c.post("/rerank", json={"query": "c", "texts": ["c"]}, headers=AUTH) for _ in range(3)]
        assert [r.status_code for r in overloaded] == [429] * 3
        rr.gate.set()
        t1.join(10)
        t2.join(10)
        assert sorted(r.status_code for r in results) == [200, 200]
        assert _rejected(c, "overloaded") == 3
        assert c.post("/search", json={"query": "x"}).status_code == 401
        assert c.post("/embed", json={"inputs": ["a"] * 9}, headers=AUTH).status_code == 413
        assert c.post("/embed", content=b"x" * 70_000, headers={**AUTH, "Content-Type": "application/json"}).status_code == 413
        assert c.post("/search", json={"query": ""}, headers=AUTH).status_code == 400
        assert c.post("/search", json={"top_k": 1}, headers=AUTH).status_code == 422
        assert _rejected(c, "unauthorized") == 1
        assert _rejected(c, "payload_too_large") == 2
        assert _rejected(c, "empty_input") == 1
        assert _rejected(c, "validation") == 1
        # An unknown document is an answer, not a refusal.
        assert c.get("/documents/nope", headers=AUTH).status_code == 404
        assert _rejected(c, "not_found") == 0


# ---- one error shape: CORS refusals, a missing reranker ----------------------------------------------
def test_disallowed_cors_preflight_answers_json(index_dir, encoder):
    with _client(index_dir, encoder, cors_origins=["https://app.example"]) as c:
        pre = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        r = c.options("/search", headers=pre)
        assert r.status_code == 400 and r.headers["content-type"] == "application/json"
        assert r.json()["error_type"] == "cors_rejected" and "origin" in r.json()["error"]
        r = c.options("/v1/embeddings", headers=pre)
        assert r.json()["error"]["code"] == "cors_rejected"
        ok = c.options("/search", headers={**pre, "Origin": "https://app.example"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
        assert _rejected(c, "cors_rejected") == 2


def test_error_message_quoting_a_lone_surrogate_is_not_a_500():
    from densekit.service.errors import error_body

    r = error_body(422, "validation", "filter.\ud800: unknown operator", path="/search")
    assert r.status_code == 422 and b"\\ud800" in r.body
