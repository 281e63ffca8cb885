"""POST /search in lexical and hybrid mode (tiny random bi-encoder, the six-document index of
service_support with its BM25 part): modes, defaults from the index, fusion overrides, live
updates seen by BM25, and the 422 answers."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient
from service_support import build_index, make_state

from densekit.index.manifest import update_search_defaults
from densekit.service.app import create_app
from densekit.settings import Settings


@pytest.fixture(scope="module")
def lexical_base(tmp_path_factory, tiny_st_model_dir):
    return build_index(tiny_st_model_dir, tmp_path_factory.mktemp("lex-index") / "index", lexical=True)


@pytest.fixture()
def lexical_dir(lexical_base, tmp_path):
    dst = tmp_path / "index"
    shutil.copytree(lexical_base, dst)
    return dst


def _client(index_dir, encoder):
    settings = Settings(index_dir=index_dir, device="cpu", max_top_k=50)
    return TestClient(create_app(settings, make_state(settings, encoder)))


def _ids(r) -> list[str]:
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["hits"]]


def test_lexical_and_hybrid_modes(lexical_dir, encoder):
    with _client(lexical_dir, encoder) as c:
        assert c.get("/info").json()["index"]["lexical"] is True
        assert _ids(c.post("/search", json={"query": "capital of France", "mode": "lexical"}))[0] == "d3"
        r = c.post("/search", json={"query": "capital city", "mode": "lexical", "top_k": 5})
        assert set(_ids(r)) == {"d3", "d6"}  # only documents sharing a word
        hits = c.post("/search", json={"query": "capital city", "mode": "hybrid", "top_k": 6}).json()["hits"]
        assert len(hits) == 6 and {h["id"] for h in hits[:2]} == {"d3", "d6"}
        assert all("dense_score" in h for h in hits) and sum("lexical_score" in h for h in hits) == 2
        convex = c.post("/search", json={"query": "capital city", "mode": "hybrid", "fusion": "convex", "alpha": 0.0, "top_k": 6}).json()
        assert convex["hits"][0]["id"] == r.json()["hits"][0]["id"] and convex["hits"][0]["score"] == 1.0  # alpha 0: BM25's best first
        batch = c.post("/search", json={"queries": ["Python language", "wolves"], "mode": "lexical"}).json()["results"]
        assert [b["hits"][0]["id"] for b in batch] == ["d4", "d2"]


def test_stopword_query_gives_empty_lexical_list_and_dense_hybrid(lexical_dir, encoder):
    with _client(lexical_dir, encoder) as c:
        assert _ids(c.post("/search", json={"query": "the of and is", "mode": "lexical"})) == []
        assert _ids(c.post("/search", json={"query": "qwzx vbnm", "mode": "lexical"})) == []
        dense = _ids(c.post("/search", json={"query": "the of and is", "mode": "dense", "top_k": 4}))
        assert _ids(c.post("/search", json={"query": "the of and is", "mode": "hybrid", "top_k": 4})) == dense


def test_default_mode_comes_from_the_index(lexical_dir, encoder):
    # an index built with its lexical part defaults to hybrid
    with _client(lexical_dir, encoder) as c:
        assert c.get("/info").json()["index"]["search_mode"] == "hybrid"
        assert any("lexical_score" in h for h in c.post("/search", json={"query": "capital city"}).json()["hits"])
    update_search_defaults(lexical_dir, search_mode="lexical")
    with _client(lexical_dir, encoder) as c:
        assert set(_ids(c.post("/search", json={"query": "capital city", "top_k": 6}))) == {"d3", "d6"}


@pytest.mark.parametrize(
    "body",
    [
        {"query": "x", "mode": "sparse"},
        {"query": "x", "mode": "hybrid", "fusion": "max"},
        {"query": "x", "mode": "hybrid", "alpha": 1.5},
    ],
)
def test_bad_mode_or_fusion_is_422(lexical_dir, encoder, body):
    with _client(lexical_dir, encoder) as c:
        r = c.post("/search", json=body)
        assert r.status_code == 422 and r.json()["error_type"] == "validation", r.text


def test_lexical_mode_on_index_without_lexical_part_is_422(index_dir, encoder):
    with _client(index_dir, encoder) as c:
        assert c.get("/info").json()["index"]["lexical"] is False
        for mode in ("lexical", "hybrid"):
            r = c.post("/search", json={"query": "cats", "mode": mode})
            assert r.status_code == 422 and "--lexical" in r.json()["error"], r.text
        assert c.post("/search", json={"query": "cats"}).status_code == 200  # dense, as before


def test_upserted_document_found_and_deleted_one_never_returned(lexical_dir, encoder):
    with _client(lexical_dir, encoder) as c:
        doc = {"id": "n1", "title": "Axolotl", "text": "The axolotl is a neotenic salamander."}
        assert c.post("/documents", json={"documents": [doc]}).status_code == 200
        assert _ids(c.post("/search", json={"query": "axolotl salamander", "mode": "lexical"})) == ["n1"]
        assert "n1" in _ids(c.post("/search", json={"query": "axolotl", "mode": "hybrid"}))
        assert c.delete("/documents/d3").status_code == 200
        for mode in ("lexical", "hybrid"):
            assert "d3" not in _ids(c.post("/search", json={"query": "capital of France Paris", "mode": mode, "top_k": 10}))
    with _client(lexical_dir, encoder) as c:  # after the restart (snapshot + log)
        assert _ids(c.post("/search", json={"query": "axolotl", "mode": "lexical"})) == ["n1"]
        assert "d3" not in _ids(c.post("/search", json={"query": "Paris France", "mode": "lexical"}))
