"""Crash safety of live updates: `kill -9` the server during a stream of upserts and
deletes, restart it, and check that every acknowledged write is there (searchable, readable)
and that the faiss index, the document store and (for an index with one) the BM25 part agree."""

from __future__ import annotations

import random
import signal
import threading
import time

import httpx
import pytest
from service_support import ServerProcess, build_index

pytestmark = pytest.mark.slow


def _writer(url: str, stop: threading.Event, acked: dict[str, str | None], seed: int) -> None:
    """Sequential upserts of 3 documents (and now and then a delete of an acknowledged one);
    `acked` maps id -> text for acknowledged upserts and id -> None for acknowledged deletes."""
    rng = random.Random(seed)
    n = 0
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            n += 1
            live = [k for k, v in acked.items() if v is not None]
            if live and rng.random() < 0.2:
                victim = rng.choice(live)
                try:
                    r = c.delete(f"/documents/{victim}")
                except httpx.HTTPError:
                    acked.pop(victim)  # in flight when the server died: may or may not be gone
                    return
                if r.status_code == 200:
                    acked[victim] = None
                continue
            try:
                docs = [
                    {"id": f"k{seed}-{n}-{j}", "title": "", "text": f"crash test document {seed} {n} {j} {rng.random()}"} for j in range(3)
                ]
                r = c.post("/documents", json={"documents": docs})
                if r.status_code == 200:
                    for d in docs:
                        acked[d["id"]] = d["text"]
            except httpx.HTTPError:
                return  # the server died under us: whatever was in flight is unknown


@pytest.mark.parametrize("lexical", [False, True], ids=["dense", "dense+lexical"])
def test_kill_9_during_upserts_loses_no_acknowledged_write(tmp_path, tiny_st_model_dir, lexical):
    index = build_index(tiny_st_model_dir, tmp_path / "index", lexical=lexical)
    acked: dict[str, str | None] = {}
    log = tmp_path / "server.log"
    for cycle in range(2):
        # Small snapshot interval: kills land before, during and after snapshots too.
        server = ServerProcess("--index", str(index), "--snapshot-every", "5", log_path=log)
        server.wait_ready()
        stop = threading.Event()
        t = threading.Thread(target=_writer, args=(server.url, stop, acked, cycle), daemon=True)
        t.start()
        time.sleep(1.0 + random.Random(cycle).random() * 2.0)
        server.stop(kill=True)
        stop.set()
        t.join(15)
        assert not t.is_alive()
    assert sum(v is not None for v in acked.values()) > 10 and any(v is None for v in acked.values())

    # A fast machine acknowledges more than the default max_top_k (1000) documents.
    server = ServerProcess("--index", str(index), "--max-top-k", "100000", log_path=log)
    server.wait_ready()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for doc_id, text in acked.items():
                r = c.get(f"/documents/{doc_id}")
                if text is None:
                    assert r.status_code == 404, doc_id
                    continue
                assert r.status_code == 200 and r.json()["text"] == text, doc_id
            present = [(i, t) for i, t in acked.items() if t is not None]
            for doc_id, text in random.Random(0).sample(present, min(25, len(present))):
                hits = c.post("/search", json={"query": text, "top_k": 3, "mode": "dense"}).json()["hits"]
                assert doc_id in [h["id"] for h in hits], doc_id
                if lexical:  # the random number in its text is a word no other document has
                    hits = c.post("/search", json={"query": text, "top_k": 1, "mode": "lexical"}).json()["hits"]
                    assert [h["id"] for h in hits] == [doc_id], doc_id
            if lexical:
                r = c.post("/search", json={"query": "crash test document", "top_k": len(acked) + 10, "mode": "lexical"})
                found = {h["id"] for h in r.json()["hits"]}
                assert {i for i, _ in present} <= found  # every acknowledged upsert
                assert not found & {i for i, t in acked.items() if t is None}  # no acknowledged delete
            documents = c.get("/info").json()["index"]["documents"]
    finally:
        # Graceful stop (uvicorn re-raises SIGTERM once it has shut down cleanly).
        assert server.stop() in (0, -signal.SIGTERM)

    from densekit.index.live import LiveIndex

    live = LiveIndex.open(index)
    try:
        assert live.stats.replayed == 0  # the graceful stop snapshotted everything
        live.check_consistent()  # faiss ids == document-store rows
        assert len(live.index) == documents == len(live.index.docstore)
        ids = {d["id"] for d in live.index.docstore.iter_all()}
        assert {i for i, t in acked.items() if t is not None} <= ids
        assert not ({i for i, t in acked.items() if t is None} & ids)
    finally:
        live.close(snapshot=False)
