"""Input integrity of the HTTP API: metadata the response serialiser can always write back,
no lone surrogates anywhere, document ids with "/" that round-trip through the URL, bounded
answers, and writes whose answer is the truth even when good and bad writers share a batch
(tiny random bi-encoder, six-document index, real FastAPI app; a real server for kill -9)."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from service_support import DOCS, FakeReranker, ServerProcess, build_index, make_state

from densekit.errors import InvalidInputError
from densekit.index.live import LiveIndex, Upsert, WriteResult
from densekit.service.app import create_app
from densekit.settings import Settings

SURROGATE = "\ud800"


def _settings(index_dir, **overrides) -> Settings:
    base = {"index_dir": index_dir, "device": "cpu", "max_top_k": 50, "max_client_batch": 8, "max_text_chars": 2000}
    return Settings(**{**base, **overrides})


def _client(settings, encoder, state=None) -> TestClient:
    return TestClient(create_app(settings, state or make_state(settings, encoder, FakeReranker())))


@pytest.fixture()
def client(index_dir, encoder):
    with _client(_settings(index_dir), encoder) as c:
        yield c


def _post(client, path: str, body) -> httpx.Response:
    # json.dumps escapes a lone surrogate as "\ud800" (valid JSON the server must refuse).
    return client.post(path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


def _validation(r, *needles: str) -> None:
    assert r.status_code == 422, r.text
    body = r.json()
    # densekit's error shape, or OpenAI's error object under /v1/.
    message, kind = (
        (body["error"]["message"], body["error"]["code"]) if isinstance(body["error"], dict) else (body["error"], body["error_type"])
    )
    assert kind == "validation", body
    for n in needles:
        assert n in message, (n, message)


def _nested(depth: int) -> dict:
    out: dict = {"leaf": 1}
    for _ in range(depth - 1):
        out = {"a": out}
    return out


def _count(client) -> int:
    return client.get("/info").json()["index"]["documents"]


# ---- metadata ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "metadata,needles",
    [
        ({"n": 2**64}, ["documents.1.metadata", "metadata.n", "64-bit"]),
        ({"n": -(2**63) - 1}, ["metadata.n", "64-bit"]),
        ({"list": [1, {"deep": 10**30}]}, ["metadata.list[1].deep"]),
        ({"x": float("nan")}, ["metadata.x", "NaN"]),
        ({"x": float("inf")}, ["metadata.x"]),
        (_nested(300), ["nested deeper"]),
        (_nested(33), ["documents[1].metadata", "max_metadata_depth"]),
        ({"k" + SURROGATE: 1}, ["metadata", "surrogate"]),
        ({"tags": ["ok", "bad" + SURROGATE]}, ["metadata.tags[1]", "surrogate"]),
        ({"blob": "x" * 70_000}, ["documents[1].metadata", "max_metadata_bytes"]),
    ],
    ids=["int-2^64", "int-below-min", "nested-bigint", "nan", "inf", "depth-300", "depth-33", "key-surrogate", "value-surrogate", "size"],
)
def test_metadata_refused_with_422_naming_the_field(client, metadata, needles):
    before = _count(client)
    docs = [{"id": "ok", "text": "fine document"}, {"id": "bad", "text": "poisoned document", "metadata": metadata}]
    _validation(_post(client, "/documents", {"documents": docs}), *needles)
    # Refused as a whole: not even the good document of the request was written.
    assert _count(client) == before
    assert client.get("/documents/ok").status_code == 404


def test_metadata_at_the_limits_is_stored_and_returned(client):
    meta = {"max": 2**64 - 1, "min": -(2**63), "f": 1.5, "deep": _nested(31), "s": "é ✓ 𝄞"}
    r = _post(client, "/documents", {"documents": [{"id": "edge", "title": "Edge", "text": "metadata at the limits", "metadata": meta}]})
    assert r.status_code == 200, r.text
    assert client.get("/documents/edge").json()["metadata"] == meta
    hits = client.post("/search", json={"query": "metadata at the limits", "top_k": 3}).json()["hits"]
    assert next(h for h in hits if h["id"] == "edge")["metadata"] == meta


def test_metadata_limits_are_settings(index_dir, encoder):
    with _client(_settings(index_dir, max_metadata_bytes=100, max_metadata_depth=2), encoder) as c:
        _validation(_post(c, "/documents", {"documents": [{"id": "a", "text": "t", "metadata": {"s": "x" * 100}}]}), "max_metadata_bytes")
        _validation(_post(c, "/documents", {"documents": [{"id": "a", "text": "t", "metadata": {"a": {"b": {}}}}]}), "max_metadata_depth")
        assert _post(c, "/documents", {"documents": [{"id": "a", "text": "t", "metadata": {"a": {"b": 1}}}]}).status_code == 200


def test_stored_unwritable_metadata_never_breaks_search_or_get(index_dir, encoder, caplog):
    """Documents written before validation existed (or by another tool), straight into the
    live index: their metadata is answered as null, the hit and every other hit still come."""
    settings = _settings(index_dir)
    state = make_state(settings, encoder)
    poisoned = [
        {"id": "big", "title": "Poison", "text": "an integer beyond sixty four bits", "metadata": {"n": 2**70}},
        {"id": "deep", "title": "Poison", "text": "metadata nested three hundred levels", "metadata": _nested(300)},
    ]
    vectors = encoder.encode_documents([f"{d['title']} {d['text']}" for d in poisoned])
    results = state.live.write([Upsert(poisoned, vectors)])
    assert isinstance(results[0], WriteResult)
    with _client(settings, encoder, state) as c:
        r = c.post("/search", json={"query": "Poison an integer beyond sixty four bits", "top_k": 8})
        assert r.status_code == 200, r.text
        hits = {h["id"]: h for h in r.json()["hits"]}
        assert {"big", "deep"} <= set(hits) and len(hits) == len(DOCS) + 2
        for doc_id in ("big", "deep"):
            assert hits[doc_id]["metadata"] is None and "cannot be written" in hits[doc_id]["metadata_error"]
            assert hits[doc_id]["text"] == next(d["text"] for d in poisoned if d["id"] == doc_id)
            got = c.get(f"/documents/{doc_id}")
            assert got.status_code == 200, got.text
            assert got.json()["metadata"] is None and got.json()["metadata_error"]
        assert all(h["metadata"] == {} and "metadata_error" not in h for i, h in hits.items() if i not in ("big", "deep"))
        batch = c.post("/search", json={"queries": ["Poison", "cats"], "top_k": 8})
        assert batch.status_code == 200 and len(batch.json()["results"]) == 2
    assert any("metadata cannot be written" in rec.getMessage() for rec in caplog.records)


# ---- lone surrogates --------------------------------------------------------------------------
S = SURROGATE
SURROGATE_CASES = [
    ("/search", {"query": "cats " + S}),
    ("/search", {"queries": ["cats", "dogs" + S]}),
    ("/embed", {"inputs": "text " + S}),
    ("/embed", {"inputs": ["ok", S]}),
    ("/v1/embeddings", {"input": "text " + S}),
    ("/v1/embeddings", {"input": ["ok", "x" + S]}),
    ("/rerank", {"query": "q" + S, "texts": ["a", "b"]}),
    ("/rerank", {"query": "q", "texts": ["a", S]}),
    ("/v1/rerank", {"query": "q" + S, "documents": ["a"]}),
    ("/v1/rerank", {"query": "q", "documents": ["a", "b" + S]}),
    ("/v1/rerank", {"query": "q", "documents": [{"text": "b" + S}]}),
    ("/documents", {"documents": [{"id": "s1", "title": "t" + S, "text": "x"}]}),
    ("/documents", {"documents": [{"id": "s1", "text": "x" + S}]}),
    ("/documents", {"documents": [{"id": "s" + S, "text": "x"}]}),
    ("/documents", {"documents": [{"id": "s1", "text": "x", "metadata": {S: 1}}]}),
    ("/documents", {"documents": [{"id": "s1", "text": "x", "metadata": {"k": S}}]}),
]


@pytest.mark.parametrize("path,body", SURROGATE_CASES, ids=[f"{p}-{i}" for i, (p, _) in enumerate(SURROGATE_CASES)])
def test_lone_surrogates_are_refused_with_422(client, path, body):
    before = _count(client)
    r = _post(client, path, body)
    _validation(r)
    # Our own check says "lone surrogate"; pydantic's length-checked string (the id) says "unicode".
    assert "surrogate" in r.text or "unicode" in r.text, r.text
    assert _count(client) == before


def test_a_write_that_cannot_be_logged_fails_alone(index_dir, encoder):
    """The last line of defence under the API: in one group commit, an operation that cannot
    be written to the log is refused alone, nothing of it applied; the others are durable."""
    live = LiveIndex.open(index_dir)
    try:
        vec = encoder.encode_documents(["good one", "bad", "good two"])
        ops = [
            Upsert([{"id": "g1", "title": "", "text": "good one", "metadata": {}}], vec[0:1]),
            Upsert([{"id": "b1", "title": "", "text": "bad" + SURROGATE, "metadata": {}}], vec[1:2]),
            Upsert([{"id": "g2", "title": "", "text": "good two", "metadata": {}}], vec[2:3]),
        ]
        results = live.write(ops)
        assert isinstance(results[0], WriteResult) and isinstance(results[2], WriteResult)
        assert isinstance(results[1], InvalidInputError)
        assert live.failed is None
        assert set(live.index.docstore.rows_of(["g1", "b1", "g2"])) == {"g1", "g2"}
    finally:
        live.close(snapshot=False)
    live = LiveIndex.open(index_dir)  # replayed from the log alone
    try:
        assert set(live.index.docstore.rows_of(["g1", "b1", "g2"])) == {"g1", "g2"}
        live.check_consistent()
    finally:
        live.close(snapshot=False)


# ---- ids that need the URL path -----------------------------------------------------------------
@pytest.mark.parametrize("doc_id", ["a/b", "a/b/", "/leading", "dir/sub/file.txt", "q?x=1#frag 100%", "ünï/cødé"])
def test_document_ids_round_trip_through_the_url(client, doc_id):
    r = _post(client, "/documents", {"documents": [{"id": doc_id, "title": "T", "text": "a document with a path-like id"}]})
    assert r.status_code == 200, r.text
    for url in (f"/documents/{quote(doc_id, safe='')}", f"/documents/{quote(doc_id, safe='/')}"):
        got = client.get(url)
        assert got.status_code == 200, (url, got.text)
        assert got.json()["id"] == doc_id
    hits = client.post("/search", json={"query": "T a document with a path-like id", "top_k": 1}).json()["hits"]
    assert hits[0]["id"] == doc_id
    assert client.delete(f"/documents/{quote(doc_id, safe='/')}").json()["deleted"] == doc_id
    assert client.get(f"/documents/{quote(doc_id, safe='')}").status_code == 404


@pytest.mark.parametrize("doc_id", [".", "..", "a/../b", "./a", "tab\there", "nul\x00"])
def test_ids_a_url_cannot_carry_are_refused(client, doc_id):
    _validation(_post(client, "/documents", {"documents": [{"id": doc_id, "text": "x"}]}), "documents.0.id")


# ---- response size ------------------------------------------------------------------------------
def test_include_text_and_metadata_options(client):
    _post(client, "/documents", {"documents": [{"id": "m1", "title": "Meta", "text": "with metadata", "metadata": {"k": "v"}}]})
    full = client.post("/search", json={"query": "Meta with metadata", "top_k": 1}).json()["hits"][0]
    assert full["id"] == "m1" and full["title"] == "Meta" and full["text"] == "with metadata" and full["metadata"] == {"k": "v"}
    bare = client.post("/search", json={"query": "Meta with metadata", "top_k": 1, "include_text": False}).json()["hits"][0]
    assert bare["id"] == "m1" and "text" not in bare and "title" not in bare and bare["metadata"] == {"k": "v"}
    bare = client.post("/search", json={"query": "Meta with metadata", "top_k": 1, "include_metadata": False}).json()["hits"][0]
    assert bare["text"] == "with metadata" and "metadata" not in bare


def test_answers_past_max_response_bytes_are_refused_with_413(index_dir, encoder):
    with _client(_settings(index_dir, max_response_bytes=4096, max_text_chars=5000), encoder) as c:
        # Below the budget nothing changes.
        assert len(c.post("/search", json={"query": "cats", "top_k": 7}).json()["hits"]) == len(DOCS)
        big = {"id": "big", "text": "large document " + "x" * 3000, "metadata": {"blob": "y" * 3000}}
        assert _post(c, "/documents", {"documents": [big]}).status_code == 200
        for body in ({"query": "large document", "top_k": 7}, {"queries": ["large document", "cats", "dogs"], "top_k": 2}):
            r = c.post("/search", json=body)
            assert r.status_code == 413, r.text
            msg = r.json()["error"]
            assert r.json()["error_type"] == "payload_too_large"
            assert "max_response_bytes" in msg and "top_k" in msg and "include_text" in msg
            slim = c.post("/search", json={**body, "include_text": False, "include_metadata": False})
            assert slim.status_code == 200, slim.text
            assert len(slim.content) <= 4096


# ---- concurrent good and bad writers, kill -9 ---------------------------------------------------
def _bad_docs(kind: str, tag: str) -> list[dict]:
    good = {"id": f"{tag}-companion", "text": f"valid companion of a bad write {tag}"}
    if kind == "surrogate-text":
        return [good, {"id": f"{tag}-bad", "text": "bad text " + SURROGATE}]
    if kind == "surrogate-metadata":
        return [{"id": f"{tag}-bad", "text": "bad metadata key", "metadata": {"k" + SURROGATE: 1}}, good]
    if kind == "bigint":
        return [good, {"id": f"{tag}-bad", "text": "bad integer", "metadata": {"n": 2**64}}]
    return [good, {"id": f"{tag}-bad", "text": "too deep", "metadata": _nested(300)}]


def _writers(url: str, stop: threading.Event, record: dict, seed: int, bad: bool) -> None:
    """Upserts until stopped. record["acked"] / ["refused"]: ids of writes answered 200 / 422;
    record["other"]: any other answer (a failure of this test)."""
    rng = random.Random(seed)
    kinds = ["surrogate-text", "surrogate-metadata", "bigint", "deep"]
    n = 0
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            n += 1
            tag = f"w{seed}-{n}"
            docs = (
                _bad_docs(rng.choice(kinds), tag) if bad else [{"id": f"{tag}-{j}", "text": f"good document {tag} {j}"} for j in range(2)]
            )
            try:
                r = c.post("/documents", content=json.dumps({"documents": docs}).encode(), headers={"Content-Type": "application/json"})
            except httpx.HTTPError:
                return  # the server died under us: the write in flight is unknown
            ids = [d["id"] for d in docs]
            if r.status_code == 200:
                record["acked"].extend(ids)
            elif r.status_code == 422:
                record["refused"].extend(ids)
            else:
                record["other"].append((r.status_code, r.text[:200]))
            if bad:
                time.sleep(0.01)  # refusals are cheap: leave the CPU to the good writers


@pytest.mark.slow
def test_concurrent_good_and_bad_writers_then_kill_9(tmp_path, tiny_st_model_dir):
    """Good and bad writers at once against a real server with a write-ahead log: every good
    write is answered 200, every bad one 422 (never 500); after kill -9 and a restart every
    acknowledged write is there and nothing of a refused one is."""
    index = build_index(tiny_st_model_dir, tmp_path / "index")
    log = tmp_path / "server.log"
    server = ServerProcess("--index", str(index), log_path=log)
    server.wait_ready()
    record: dict[str, list] = {"acked": [], "refused": [], "other": []}
    stop = threading.Event()
    threads = [threading.Thread(target=_writers, args=(server.url, stop, record, i, i % 2 == 1), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(6.0)
    server.stop(kill=True)
    stop.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    acked, refused = set(record["acked"]), set(record["refused"])
    assert not record["other"], record["other"][:5]
    assert len(acked) >= 10 and len(refused) >= 10 and not (acked & refused)

    server = ServerProcess("--index", str(index), log_path=log)
    server.wait_ready()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            present = [i for i in acked if c.get(f"/documents/{quote(i, safe='')}").status_code == 200]
            leaked = [i for i in refused if c.get(f"/documents/{quote(i, safe='')}").status_code != 404]
            assert c.post("/search", json={"query": "good document", "top_k": 50}).status_code == 200
    finally:
        assert server.stop() in (0, -signal.SIGTERM)
    print(
        f"\ngood+bad writers, kill -9: {len(acked)} acknowledged, {len(present)} present after restart, {len(refused)} refused, {len(refused) - len(leaked)} absent"
    )
    assert len(present) == len(acked)
    assert leaked == []
