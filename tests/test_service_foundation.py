"""The /search service of the foundation: app factory, pydantic shapes, 4xx never 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from densekit.service.app import create_app
from densekit.settings import Settings


@pytest.fixture(scope="module")
def tiny_index_dir(tmp_path_factory, tiny_st_model_dir):
    import json

    from densekit.data import load_corpus
    from densekit.encoder import Encoder
    from densekit.index.dense_index import build_from_corpus

    d = tmp_path_factory.mktemp("svc")
    (d / "data").mkdir()
    docs = [
        ("d1", "Paris", "Paris is the capital of France."),
        ("d2", "Faiss", "Faiss searches dense vectors."),
        ("d3", "Cats", "Cats purr."),
    ]
    (d / "data" / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs))
    idx = build_from_corpus(Encoder(str(tiny_st_model_dir), device="cpu"), load_corpus(d / "data"), progress=False)
    idx.save(d / "index")
    return d / "index"


@pytest.fixture(scope="module")
def client(tiny_index_dir):
    app = create_app(Settings(index_dir=tiny_index_dir, device="cpu", max_top_k=50))
    with TestClient(app) as c:
        yield c


def test_health_ready_info(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    info = client.get("/info").json()
    assert info["index"]["documents"] == 3 and info["model_dim"] == 32
    assert info["limits"]["max_top_k"] == 50


def test_search_returns_ranked_documents(client):
    r = client.post("/search", json={"query": "capital of France", "top_k": 2})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 2
    assert hits[0]["score"] >= hits[1]["score"]
    assert set(hits[0]) >= {"id", "score", "title", "text"}
    assert {h["id"] for h in hits} <= {"d1", "d2", "d3"}


@pytest.mark.parametrize(
    "body,status",
    [
        ({"query": "", "top_k": 3}, 400),
        ({"query": "   ", "top_k": 3}, 400),
        ({"query": "x", "top_k": 0}, 422),
        ({"query": "x", "top_k": 51}, 422),
        ({"query": "x", "top_k": "many"}, 422),
        ({"query": 5}, 422),
        ({"top_k": 3}, 422),
        ({"query": "x", "unknown": 1}, 422),
    ],
)
def test_bad_requests_get_json_4xx(client, body, status):
    r = client.post("/search", json=body)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] and body["error_type"]


def test_malformed_json_body(client):
    r = client.post("/search", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert "error" in r.json()
