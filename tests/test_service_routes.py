"""Every route of the HTTP API (docs/architecture.md) and every error code, with and without API keys
(tiny random bi-encoder, six-document index, a fake reranker)."""

from __future__ import annotations

import base64
import math
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_support import DOCS, FakeReranker, make_state

from densekit.service.app import create_app
from densekit.settings import Settings

KEYS = ["key-one", "key-two"]


def _client(index_dir, encoder, reranker=None, read_only=False, **overrides):
    settings = Settings(
        index_dir=index_dir, device="cpu", max_top_k=50, max_client_batch=8, max_text_chars=2000, max_payload_bytes=64_000, **overrides
    )
    app = create_app(settings, make_state(settings, encoder, reranker, read_only=read_only))
    return TestClient(app)


@pytest.fixture()
def client(index_dir, encoder):
    with _client(index_dir, encoder, FakeReranker()) as c:
        yield c


@pytest.fixture()
def keyed(index_dir, encoder):
    with _client(index_dir, encoder, FakeReranker(), api_keys=KEYS) as c:
        yield c


def _err(r, status, error_type=None):
    """An error answer: densekit's {error, error_type}, or OpenAI's error object under /v1/."""
    assert r.status_code == status, r.text
    body = r.json()
    if r.request.url.path.startswith("/v1/"):
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["message"]
        kind = body["error"]["code"]
    else:
        assert set(body) == {"error", "error_type"} and body["error"]
        kind = body["error_type"]
    if error_type:
        assert kind == error_type, body


# ---- health, ready, info, metrics ---------------------------------------------------------
def test_health_ready_info_metrics(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["ready"] is True
    info = client.get("/info").json()
    assert info["model_dim"] == 32 and info["index"]["documents"] == len(DOCS)
    assert info["reranker"] == "fake-reranker"
    assert info["index"]["live_updates"] is True and info["index"]["accepts_removal"] is True
    from densekit.service.routes.health import LIMIT_FIELDS

    for k in LIMIT_FIELDS:
        assert k in info["limits"], k
    assert info["limits"]["max_client_batch"] == 8 and info["limits"]["auth"] is False
    client.post("/search", json={"query": "cats", "top_k": 2})
    text = client.get("/metrics").text
    assert 'densekit_requests_total{method="POST",route="/search",status="200"} 1.0' in text
    for name in (
        "densekit_stage_seconds_bucket",
        "densekit_batch_requests_bucket",
        "densekit_queue_depth",
        "densekit_request_seconds_bucket",
    ):
        assert name in text, name
    assert 'stage="encode"' in text and 'stage="search"' in text


def test_request_id_and_timing_headers(client):
    r = client.post("/search", json={"query": "capital of France", "top_k": 3}, headers={"X-Request-ID": "abc-123"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "abc-123"
    for h in ("x-total-time", "x-encode-time", "x-search-time", "x-queue-time", "x-tokenize-time"):
        assert float(r.headers[h]) >= 0, h
    assert "encode;dur=" in r.headers["server-timing"]
    # A malformed id is replaced by a generated one, errors carry one too.
    r = client.post("/search", json={"query": ""}, headers={"X-Request-ID": "bad id with spaces"})
    assert r.status_code == 400 and r.headers["x-request-id"] != "bad id with spaces" and len(r.headers["x-request-id"]) == 32


# ---- search --------------------------------------------------------------------------------
def test_search_single_and_batch(client, encoder):
    r = client.post("/search", json={"query": "capital of France", "top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "capital of France" and len(body["hits"]) == 3
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True)
    # The scores are the encoder's cosine similarities.
    q = encoder.encode_queries(["capital of France"])[0]
    by_id = {i: f"{t} {x}" for i, t, x in DOCS}
    top = body["hits"][0]
    d = encoder.encode_documents([by_id[top["id"]]])[0]
    assert top["score"] == pytest.approx(float(q @ d), abs=1e-4)
    r = client.post("/search", json={"queries": ["cats", "capital of France", "vectors"], "top_k": 2})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["query"] for x in results] == ["cats", "capital of France", "vectors"]
    assert results[1]["hits"] == body["hits"][:2]


def test_search_rerank_two_stage(client):
    r = client.post("/search", json={"query": "capital city of Italy", "top_k": 2, "rerank": True, "rerank_top_n": 6})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 2 and hits[0]["id"] == "d6"  # the fake reranker's word overlap favours Rome
    assert all("dense_score" in h for h in hits)
    expected = FakeReranker().score("capital city of Italy", ["Rome Rome is the capital city of Italy."])[0]
    assert hits[0]["score"] == pytest.approx(expected)
    r = client.post("/search", json={"queries": ["capital city of Italy", "wolves"], "top_k": 1, "rerank": True})
    assert [x["hits"][0]["id"] for x in r.json()["results"]] == ["d6", "d2"]


def test_search_rerank_rrf_fusion(client):
    from densekit.fusion import fuse_rrf

    body = {"query": "capital city of Italy", "top_k": 6, "rerank": True, "rerank_top_n": 6}
    plain = client.post("/search", json=body).json()["hits"]
    fused = client.post("/search", json={**body, "rerank_fusion": "rrf"}).json()["hits"]
    assert {h["id"] for h in fused} == {h["id"] for h in plain}
    dense = {h["id"]: h["dense_score"] for h in fused}
    rerank = {h["id"]: h["rerank_score"] for h in fused}
    assert rerank == {h["id"]: pytest.approx(h["score"]) for h in plain}  # rerank_score is the reranker's score
    expected = fuse_rrf([{"q": dense}, {"q": rerank}])["q"]
    for h in fused:
        assert h["score"] == pytest.approx(expected[h["id"]])
    scores = [h["score"] for h in fused]
    assert scores == sorted(scores, reverse=True)
    _err(client.post("/search", json={**body, "rerank_fusion": "max"}), 422, "validation")


@pytest.mark.parametrize(
    "body,status,kind",
    [
        ({"query": ""}, 400, "empty_input"),
        ({"query": "  "}, 400, "empty_input"),
        ({"queries": []}, 400, "empty_input"),
        ({"queries": ["ok", ""]}, 400, "empty_input"),
        ({"queries": ["q"] * 9}, 413, "payload_too_large"),
        ({"query": "x" * 2001}, 413, "payload_too_large"),
        ({"query": "x", "queries": ["y"]}, 422, "validation"),
        ({"top_k": 3}, 422, "validation"),
        ({"query": "x", "top_k": 51}, 422, "validation"),
        ({"query": "x", "top_k": 0}, 422, "validation"),
        ({"query": "x", "rerank": True, "rerank_top_n": 51}, 422, "validation"),
        ({"query": "x", "search_params": {"nprobe": 4}}, 422, "validation"),  # a flat index has no nprobe
        ({"query": "x", "search_params": {"bogus": 1}}, 422, "validation"),
        ({"query": 5}, 422, "validation"),
    ],
)
def test_search_errors(client, body, status, kind):
    _err(client.post("/search", json=body), status, kind)


def test_search_rerank_without_reranker(index_dir, encoder):
    # A missing capability is one non-retryable answer on every route that needs it.
    with _client(index_dir, encoder, reranker=None) as c:
        _err(c.post("/search", json={"query": "x", "rerank": True}), 422, "no_reranker")
        _err(c.post("/rerank", json={"query": "x", "texts": ["a"]}), 422, "no_reranker")
        _err(c.post("/v1/rerank", json={"query": "x", "documents": ["a"]}), 422, "no_reranker")
        _err(c.post("/v2/rerank", json={"query": "x", "documents": ["a"]}), 422, "no_reranker")


# ---- embed ---------------------------------------------------------------------------------
def test_embed_tei(client, encoder):
    r = client.post("/embed", json={"inputs": ["hello world", "cats purr"]})
    assert r.status_code == 200, r.text
    vecs = np.array(r.json(), dtype=np.float32)
    assert vecs.shape == (2, 32)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    direct = encoder.model.encode(["hello world", "cats purr"], normalize_embeddings=True)
    assert np.allclose(vecs, direct, atol=1e-5)
    one = client.post("/embed", json={"inputs": "hello world", "normalize": False}).json()
    assert len(one) == 1 and len(one[0]) == 32
    # truncate=false refuses an input longer than the model (64 tokens), as TEI does.
    long = "word " * 200
    _err(client.post("/embed", json={"inputs": [long]}), 413, "payload_too_large")
    assert client.post("/embed", json={"inputs": [long], "truncate": True}).status_code == 200
    q = client.post("/embed", json={"inputs": "cats", "prompt_name": "query"})
    assert q.status_code == 200


@pytest.mark.parametrize(
    "body,status",
    [
        ({"inputs": []}, 400),
        ({"inputs": ""}, 400),
        ({"inputs": ["a", " "]}, 400),
        ({"inputs": ["a"] * 9}, 413),
        ({"inputs": 3}, 422),
        ({"inputs": ["a"], "prompt_name": "x"}, 422),
        ({}, 422),
    ],
)
def test_embed_errors(client, body, status):
    _err(client.post("/embed", json=body), status)


def test_openai_embeddings(client):
    served = client.get("/info").json()["model"]
    r = client.post("/v1/embeddings", json={"input": ["hello world", "cats"], "model": served})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == served
    assert [d["index"] for d in body["data"]] == [0, 1] and all(d["object"] == "embedding" for d in body["data"])
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] >= 4
    b64 = client.post("/v1/embeddings", json={"input": ["hello world", "cats"], "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, body["data"][0]["embedding"], atol=1e-6)
    _err(client.post("/v1/embeddings", json={"input": "x", "dimensions": 16}), 422)
    _err(client.post("/v1/embeddings", json={"input": [[1, 2, 3]]}), 422)  # token ids
    _err(client.post("/v1/embeddings", json={"input": []}), 400)
    _err(client.post("/v1/embeddings", json={"input": ["a"] * 9}), 413)


# ---- rerank --------------------------------------------------------------------------------
def test_rerank_tei(client):
    texts = ["Paris is in France", "the capital city of Italy is Rome", "dogs"]
    r = client.post("/rerank", json={"query": "capital city of Italy", "texts": texts, "return_text": True})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [x["index"] for x in out] == [1, 0, 2] or out[0]["index"] == 1
    assert out[0]["text"] == texts[1]
    expected = FakeReranker().score("capital city of Italy", texts)
    assert {x["index"]: x["score"] for x in out} == pytest.approx(dict(enumerate(expected)))
    raw = client.post("/rerank", json={"query": "capital city of Italy", "texts": texts, "raw_scores": True}).json()
    for x in raw:
        p = min(max(expected[x["index"]], 1e-7), 1 - 1e-7)
        assert x["score"] == pytest.approx(math.log(p / (1 - p)), rel=1e-6)
        assert "text" not in x or x["text"] is None


def test_rerank_cohere(client):
    docs = ["dogs", {"text": "the capital city of Italy is Rome"}, "Paris is in France"]
    r = client.post(
        "/v1/rerank",
        json={"model": "fake-reranker", "query": "capital city of Italy", "documents": docs, "top_n": 2, "return_documents": True},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 2 and body["results"][0]["index"] == 1
    assert body["results"][0]["document"] == {"text": "the capital city of Italy is Rome"}
    assert body["results"][0]["relevance_score"] >= body["results"][1]["relevance_score"]
    assert body["usage"]["total_tokens"] == sum(
        FakeReranker().count_tokens("capital city of Italy", ["dogs", "the capital city of Italy is Rome", "Paris is in France"])
    )
    assert body["id"] == r.headers["x-request-id"]


@pytest.mark.parametrize(
    "path,body,status",
    [
        ("/rerank", {"query": "q", "texts": []}, 400),
        ("/rerank", {"query": "", "texts": ["a"]}, 400),
        ("/rerank", {"query": "q", "texts": ["a"] * 9}, 413),
        ("/rerank", {"query": "q"}, 422),
        ("/v1/rerank", {"query": "q", "documents": []}, 400),
        ("/v1/rerank", {"query": "q", "documents": ["a", ""]}, 400),
        ("/v1/rerank", {"query": "q", "documents": ["a"] * 9}, 413),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, 422),
    ],
)
def test_rerank_errors(client, path, body, status):
    _err(client.post(path, json=body), status)


# ---- documents ------------------------------------------------------------------------------
def test_documents_upsert_replace_delete(client):
    new = {"id": "n1", "title": "Zebra", "text": "Zebras have black and white stripes.", "metadata": {"source": "test"}}
    r = client.post("/documents", json={"documents": [new]})
    assert r.status_code == 200, r.text
    assert r.json() == {"upserted": 1, "documents": len(DOCS) + 1}
    hit = client.post("/search", json={"query": "Zebra Zebras have black and white stripes.", "top_k": 1}).json()["hits"][0]
    assert hit["id"] == "n1" and hit["metadata"] == {"source": "test"} and hit["score"] == pytest.approx(1.0, abs=1e-4)
    assert client.get("/documents/n1").json()["title"] == "Zebra"
    # Replacing keeps the count and changes what is found.
    r = client.post("/documents", json={"documents": [{"id": "n1", "text": "Giraffes have long necks."}]})
    assert r.json()["documents"] == len(DOCS) + 1
    assert client.get("/documents/n1").json()["text"] == "Giraffes have long necks."
    assert client.post("/search", json={"query": "Giraffes have long necks.", "top_k": 1}).json()["hits"][0]["id"] == "n1"
    assert client.delete("/documents/n1").json() == {"deleted": "n1", "documents": len(DOCS)}
    _err(client.get("/documents/n1"), 404, "not_found")
    _err(client.delete("/documents/n1"), 404, "not_found")
    ids = {h["id"] for h in client.post("/search", json={"query": "Giraffes", "top_k": 50}).json()["hits"]}
    assert "n1" not in ids and len(ids) == len(DOCS)


@pytest.mark.parametrize(
    "body,status",
    [
        ({"documents": []}, 400),
        ({"documents": [{"id": "a", "text": ""}]}, 400),
        ({"documents": [{"id": " ", "text": "x"}]}, 400),
        ({"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, 422),
        ({"documents": [{"id": f"a{i}", "text": "x"} for i in range(9)]}, 413),
        ({"documents": [{"text": "no id"}]}, 422),
    ],
)
def test_documents_errors(client, body, status):
    _err(client.post("/documents", json=body), status)


def test_documents_read_only_server(index_dir, encoder):
    with _client(index_dir, encoder, read_only=True) as c:
        assert c.get("/info").json()["index"]["live_updates"] is False
        _err(c.post("/documents", json={"documents": [{"id": "x", "text": "y"}]}), 409, "unsupported")
        _err(c.delete("/documents/d1"), 409, "unsupported")
        assert c.get("/documents/d1").status_code == 200


def test_documents_persist_across_restart(index_dir, encoder):
    with _client(index_dir, encoder) as c:
        assert c.post("/documents", json={"documents": [{"id": "p1", "text": "persisted text"}]}).status_code == 200
        assert c.delete("/documents/d1").status_code == 200
    # A clean shutdown snapshots; the folder alone (no log) has both changes.
    from densekit.index.dense_index import load_index

    idx = load_index(index_dir)
    ids = {d["id"] for d in idx.docstore.iter_all()}
    assert "p1" in ids and "d1" not in ids and len(idx) == len(ids)


# ---- limits: payload, queue, readiness --------------------------------------------------------
def test_payload_limit_413(client):
    big = {"inputs": ["x" * 1000] * 70}  # ~70 kB > 64 kB
    _err(client.post("/embed", json=big), 413, "payload_too_large")

    def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(70):
            yield b"x" * 1000

    _err(client.post("/embed", content=chunks(), headers={"Content-Type": "application/json"}), 413, "payload_too_large")


def test_queue_full_429_at_once(index_dir, encoder):
    rr = FakeReranker()
    rr.gate = threading.Event()
    with _client(index_dir, encoder, rr, max_queue=1) as c:
        batcher = c.app.state.dk.rerank.batcher
        results = []
        t1 = threading.Thread(target=lambda: results.append(c.post("/rerank", json={"query": "a", "texts": ["a"]})))
        t1.start()
        assert rr.started.wait(10)  # job 1 is inside the model call
        t2 = threading.Thread(target=lambda: results.append(c.post("/rerank", json={"query": "b", "texts": ["b"]})))
        t2.start()
        deadline = time.monotonic() + 10
        while batcher.depth < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.depth == 1  # job 2 waits: the queue is full
        r = c.post("/rerank", json={"query": "c", "texts": ["c"]})
        _err(r, 429, "overloaded")
        assert r.headers["retry-after"] == "1"
        rr.gate.set()
        t1.join(10)
        t2.join(10)
        assert sorted(x.status_code for x in results) == [200, 200]
        assert 'densekit_requests_total{method="POST",route="/rerank",status="429"} 1.0' in c.get("/metrics").text


def test_not_ready_503_while_loading(index_dir, monkeypatch):
    import densekit.service.app as app_mod

    gate = threading.Event()
    real = app_mod.load_state

    def slow_load(settings):
        gate.wait(30)
        return real(settings)

    monkeypatch.setattr(app_mod, "load_state", slow_load)
    settings = Settings(index_dir=index_dir, device="cpu", load_in_background=True)
    with TestClient(create_app(settings)) as c:
        assert c.get("/health").status_code == 200
        _err(c.get("/ready"), 503, "not_ready")
        _err(c.post("/search", json={"query": "x"}), 503, "not_ready")
        _err(c.post("/embed", json={"inputs": "x"}), 503, "not_ready")
        gate.set()
        deadline = time.monotonic() + 60
        while c.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/ready").status_code == 200
        assert c.post("/search", json={"query": "cats", "top_k": 1}).status_code == 200


def test_failed_load_reports_503(tmp_path):
    settings = Settings(index_dir=tmp_path / "missing", device="cpu", load_in_background=True)
    with TestClient(create_app(settings)) as c:
        deadline = time.monotonic() + 30
        while c.get("/health").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        _err(c.get("/health"), 503, "failed")
        r = c.get("/ready")
        _err(r, 503, "not_ready")
        assert "missing" in r.json()["error"]


def test_failed_load_stops_startup(tmp_path):
    from densekit.errors import IndexCorruptError

    with pytest.raises(IndexCorruptError):
        with TestClient(create_app(Settings(index_dir=tmp_path / "missing", device="cpu"))):
            pass


# ---- API keys ------------------------------------------------------------------------------
PROTECTED = [
    ("get", "/ready", None),
    ("get", "/info", None),
    ("post", "/search", {"query": "cats"}),
    ("post", "/embed", {"inputs": "cats"}),
    ("post", "/v1/embeddings", {"input": "cats"}),
    ("post", "/rerank", {"query": "cats", "texts": ["a"]}),
    ("post", "/v1/rerank", {"query": "cats", "documents": ["a"]}),
    ("post", "/documents", {"documents": [{"id": "k1", "text": "keyed"}]}),
    ("get", "/documents/d2", None),
    ("delete", "/documents/d3", None),
]


@pytest.mark.parametrize("method,path,body", PROTECTED)
def test_api_keys_protect_routes(keyed, method, path, body):
    kw = {"json": body} if body is not None else {}
    r = getattr(keyed, method)(path, **kw)
    _err(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    _err(getattr(keyed, method)(path, headers={"Authorization": "Bearer nope"}, **kw), 401, "unauthorized")
    _err(getattr(keyed, method)(path, headers={"Authorization": "Basic a2V5LW9uZQ=="}, **kw), 401, "unauthorized")
    _err(getattr(keyed, method)(path, headers={"Authorization": "Bearer key-one-and-more"}, **kw), 401, "unauthorized")
    for key in KEYS:
        ok = getattr(keyed, method)(path, headers={"Authorization": f"Bearer {key}"}, **kw)
        assert ok.status_code in (200, 404), (key, ok.text)  # 404: deleted by the first key


def test_api_keys_leave_health_and_metrics_public(keyed):
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/metrics").status_code == 200
    info = keyed.get("/info", headers={"Authorization": "Bearer key-two"}).json()
    assert info["limits"]["auth"] is True
    # Errors other than 401 still come with a valid key.
    _err(keyed.post("/search", json={"query": ""}, headers={"Authorization": "Bearer key-one"}), 400)


def test_key_matches_compares_every_key():
    from densekit.service.auth import key_matches

    assert key_matches("b", ["a", "b"]) and not key_matches("c", ["a", "b"]) and not key_matches("", ["a"])
    assert key_matches("ключ", ["ключ"])


# ---- CORS ------------------------------------------------------------------------------------
def test_cors_off_unless_configured(index_dir, encoder, client):
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    r = client.options("/search", headers=pre)
    assert "access-control-allow-origin" not in r.headers
    with _client(index_dir, encoder, read_only=True, cors_origins=["https://app.example"]) as c:
        r = c.options("/search", headers=pre)
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        r = c.post("/search", json={"query": "cats"}, headers={"Origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-total-time" in r.headers["access-control-expose-headers"].lower()
        r = c.options("/search", headers={**pre, "Origin": "https://evil.example"})
        assert r.headers.get("access-control-allow-origin") != "https://evil.example"


def test_openapi_documents_every_route_and_field(client):
    from densekit.service.metrics import API_ROUTES

    spec = client.get("/openapi.json").json()
    # Both ways: every route the metrics label by name is documented, and no documented route
    # falls into the metrics' "other" label.
    assert sorted(spec["paths"]) == sorted(API_ROUTES)
    schemas = spec["components"]["schemas"]
    for name in (
        "SearchRequest",
        "EmbedRequest",
        "RerankRequest",
        "CohereRerankRequest",
        "CohereV2RerankRequest",
        "OpenAIEmbeddingRequest",
        "UpsertRequest",
    ):
        for field, prop in schemas[name]["properties"].items():
            assert prop.get("description"), f"{name}.{field} has no description"
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_read_only_index_folder_is_served_read_only(index_dir, tiny_st_model_dir, monkeypatch):
    """Updates left at their default on an index folder that cannot be written: the server
    starts read-only (409 on writes) instead of refusing to start; asked for explicitly, it
    refuses with a message naming the setting."""
    import densekit.index.live as live_mod
    from densekit.errors import ConfigError
    from densekit.service.state import load_state

    def no_write(*a, **k):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(live_mod.LiveIndex, "open", classmethod(lambda cls, *a, **k: no_write()))
    state = load_state(Settings(index_dir=index_dir, device="cpu"))
    assert state.live is None and state.index is not None and len(state.index) == len(DOCS)
    with pytest.raises(ConfigError, match="allow_updates"):
        load_state(Settings(index_dir=index_dir, device="cpu", allow_updates=True))
