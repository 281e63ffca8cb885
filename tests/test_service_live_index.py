"""index/live.py: acknowledged writes survive a reopen without a snapshot (log replay), a
cut-short log tail is dropped, corruption is refused, snapshots truncate the log, an
interrupted snapshot rename is recovered, one writer per index, HNSW refuses removal."""

from __future__ import annotations

import os

import faiss
import numpy as np
import pytest

from densekit.errors import ConfigError, DocumentNotFoundError, IndexCorruptError, InvalidInputError
from densekit.index.dense_index import DenseIndex, load_index
from densekit.index.live import Delete, LiveIndex, Upsert, accepts_removal, faiss_ids, iter_records
from densekit.index.manifest import EncoderSpec

DIM = 8


def _vec(seed: int, n: int = 1) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _docs(*ids: str) -> list[dict]:
    return [{"id": i, "title": f"t-{i}", "text": f"text of {i}", "metadata": {"k": i}} for i in ids]


@pytest.fixture()
def folder(tmp_path):
    corpus = {f"d{i}": {"title": f"t{i}", "text": f"x{i}"} for i in range(5)}
    idx = DenseIndex.build(_vec(0, 5), corpus, list(corpus), EncoderSpec(name="test", dim=DIM))
    return idx.save(tmp_path / "index")


def _state(live: LiveIndex) -> dict[str, np.ndarray]:
    """id -> stored vector (reconstructed from faiss), the view a reader has."""
    out = {}
    for d in live.index.docstore.iter_all():
        out[d["id"]] = live.index.faiss.reconstruct(d["row"])
    return out


def test_writes_survive_reopen_by_log_replay(folder):
    live = LiveIndex.open(folder)
    res = live.write([Upsert(_docs("a", "b"), _vec(1, 2)), Delete(["d0"]), Upsert(_docs("d1"), _vec(2))])
    assert [r.count for r in res] == [2, 1, 1]
    before = _state(live)
    live.close(snapshot=False)  # as after kill -9: the folder still holds the old snapshot
    assert len(load_index(folder)) == 5
    again = LiveIndex.open(folder)
    assert again.stats.replayed == 3
    after = _state(again)
    assert after.keys() == before.keys() == {"a", "b", "d1", "d2", "d3", "d4"}
    for k in before:
        assert np.array_equal(before[k], after[k]), k
    assert again.index.docstore.rows_of(["a"]) and again.index.documents(list(again.index.docstore.rows_of(["a"]).values()))
    again.check_consistent()
    hits = again.index.search(_vec(1, 2)[:1], 1)[0]
    assert hits[0].id == "a"
    again.close(snapshot=False)


def test_cut_short_tail_is_dropped_and_appends_continue(folder):
    live = LiveIndex.open(folder)
    live.write([Upsert(_docs("a"), _vec(1))])
    seg = sorted((folder.parent / "index.wal").glob("wal-*.log"))[-1]
    live.close(snapshot=False)
    good = seg.stat().st_size
    whole = open(seg, "rb").read()
    with open(seg, "ab") as fh:  # a second record cut short by the crash
        fh.write(whole[: len(whole) // 2])
    live = LiveIndex.open(folder)
    assert seg.stat().st_size == good
    assert "a" in _state(live)
    live.write([Upsert(_docs("b"), _vec(2))])
    live.close(snapshot=False)
    live = LiveIndex.open(folder)
    assert {"a", "b"} <= set(_state(live)) and live.stats.replayed == 2
    live.close(snapshot=False)


def test_corruption_before_the_tail_is_refused(folder):
    live = LiveIndex.open(folder)
    live.write([Upsert(_docs("a"), _vec(1))])
    live.write([Upsert(_docs("b"), _vec(2))])
    seg = sorted((folder.parent / "index.wal").glob("wal-*.log"))[-1]
    live.close(snapshot=False)
    data = bytearray(seg.read_bytes())
    data[20] ^= 0xFF  # inside the first record
    seg.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match="corrupt"):
        LiveIndex.open(folder)


def test_snapshot_truncates_the_log(folder):
    live = LiveIndex.open(folder, snapshot_every=2)
    live.write([Upsert(_docs("a"), _vec(1))])
    assert not live.snapshot_due()
    live.write([Delete(["d0"])])
    assert live.snapshot_due() and live.snapshot()
    assert list(iter_records(live.wal_dir)) == []
    on_disk = load_index(folder)
    assert on_disk.manifest.extra["wal_seq"] == 2 and len(on_disk) == 5
    live.write([Upsert(_docs("c"), _vec(3))])
    live.close(snapshot=False)
    again = LiveIndex.open(folder)
    assert again.stats.replayed == 1 and set(_state(again)) == {"a", "c", "d1", "d2", "d3", "d4"}
    again.close()
    assert again.stats.snapshots == 1
    assert len(load_index(folder)) == 6


def test_interrupted_snapshot_rename_is_recovered(folder):
    live = LiveIndex.open(folder)
    live.write([Upsert(_docs("a"), _vec(1))])
    live.close(snapshot=False)
    # atomic_dir moved the old folder aside and died before renaming the new one in.
    os.replace(folder, folder.parent / ".index.old-4242")
    (folder.parent / ".index.abc.tmp").mkdir()
    live = LiveIndex.open(folder)
    assert folder.is_dir() and "a" in _state(live)
    live.close(snapshot=False)
    assert not (folder.parent / ".index.abc.tmp").exists()


def test_one_writer_per_index(folder):
    live = LiveIndex.open(folder)
    with pytest.raises(ConfigError, match="locked"):
        LiveIndex.open(folder)
    live.close(snapshot=False)
    LiveIndex.open(folder).close(snapshot=False)


def test_refused_writes_never_reach_the_log(folder):
    live = LiveIndex.open(folder)
    res = live.write([Delete(["nope"]), Upsert(_docs("x", "x"), _vec(1, 2)), Upsert(_docs("y"), _vec(1, 2)), Upsert(_docs("z"), _vec(4))])
    assert isinstance(res[0], DocumentNotFoundError) and isinstance(res[1], InvalidInputError) and isinstance(res[2], InvalidInputError)
    assert res[3].count == 1
    assert [seq for seq, _ in iter_records(live.wal_dir)] == [1]
    live.close(snapshot=False)


def test_hnsw_accepts_new_documents_but_refuses_removal(tmp_path):
    from densekit.index.docstore import DocStore
    from densekit.index.manifest import Manifest

    hnsw = faiss.IndexIDMap2(faiss.IndexHNSWFlat(DIM, 8, faiss.METRIC_INNER_PRODUCT))
    assert not accepts_removal(hnsw)
    hnsw.add_with_ids(_vec(0, 3), np.arange(3, dtype=np.int64))
    store = DocStore(tmp_path / "ds.sqlite")
    store.add_many((i, f"h{i}", "", f"x{i}", None) for i in range(3))
    DenseIndex(hnsw, store, Manifest(kind="hnsw", encoder=EncoderSpec(name="t", dim=DIM), doc_count=3)).save(tmp_path / "hnsw")
    live = LiveIndex.open(tmp_path / "hnsw")
    assert live.accepts_removal is False
    res = live.write([Upsert(_docs("new"), _vec(5)), Upsert(_docs("h1"), _vec(6)), Delete(["h2"])])
    assert res[0].count == 1 and isinstance(res[1], InvalidInputError) and isinstance(res[2], InvalidInputError)
    assert set(_state(live)) == {"h0", "h1", "h2", "new"}
    live.close()


def test_ivf_removal_and_id_set(tmp_path):
    quant = faiss.IndexFlatIP(DIM)
    ivf = faiss.IndexIVFFlat(quant, DIM, 2, faiss.METRIC_INNER_PRODUCT)
    ivf.train(_vec(0, 50))
    assert accepts_removal(ivf)
    ivf.add_with_ids(_vec(1, 4), np.arange(4, dtype=np.int64))
    assert faiss_ids(ivf) == {0, 1, 2, 3}
    ivf.remove_ids(np.array([2], dtype=np.int64))
    assert faiss_ids(ivf) == {0, 1, 3}


def test_mistyped_index_path_creates_nothing(tmp_path):
    with pytest.raises(IndexCorruptError, match="not found"):
        LiveIndex.open(tmp_path / "nope")
    assert list(tmp_path.iterdir()) == []


def test_search_during_a_snapshot_does_not_wait_for_it(folder):
    """The service's index thread copies the index and hands the file writing to another
    thread: a search sent while a (deliberately slow) snapshot is being written is answered
    before the snapshot finishes, and a write acknowledged meanwhile survives a crash."""
    import asyncio
    import statistics
    import time

    from densekit.service.engines import IndexEngine, Timings
    from densekit.service.metrics import ServiceMetrics
    from densekit.settings import Settings

    live = LiveIndex.open(folder, snapshot_every=1)
    engine = IndexEngine(live.index, live, Settings(), ServiceMetrics())
    query = _vec(1)

    async def search() -> tuple[list, float]:
        t0 = time.monotonic()
        hits = await engine.search(query, 3, {}, Timings())
        return hits, time.monotonic() - t0

    async def scenario() -> dict:
        engine.batcher.start()
        try:
            usual = statistics.median([(await search())[1] for _ in range(7)])
            hold = max(2.0, 50 * usual)  # the snapshot writer sleeps this long: far beyond a search
            started = asyncio.Event()
            loop = asyncio.get_running_loop()

            def slow_writer() -> None:
                loop.call_soon_threadsafe(started.set)
                time.sleep(hold)

            live.snapshot_hook = slow_writer
            await engine.write(Upsert(_docs("a"), _vec(1)), Timings())  # snapshot_every=1: due now
            await asyncio.wait_for(started.wait(), 30)
            hits, during = await search()
            searched_at = time.monotonic()
            written = await engine.write(Upsert(_docs("b"), _vec(2)), Timings())
            await asyncio.to_thread(live.wait_for_snapshot, 60)
            return {"usual": usual, "during": during, "searched_at": searched_at, "hits": hits, "written": written}
        finally:
            await engine.batcher.stop()

    out = asyncio.run(scenario())
    assert live.stats.snapshots == 1
    assert out["searched_at"] < live.stats.last_snapshot_at, (
        f"a search during the snapshot took {out['during']:.3f} s (usually {out['usual']:.4f} s): it waited for the snapshot"
    )
    assert out["hits"][0][0].id == "a"  # the write just before the snapshot is visible
    assert out["written"].seq == 2
    live.close(snapshot=False)  # as after kill -9
    on_disk = load_index(folder)
    assert on_disk.manifest.extra["wal_seq"] == 1 and len(on_disk) == 6  # the snapshot holds "a", not "b"
    on_disk.close()
    again = LiveIndex.open(folder)
    assert again.stats.replayed == 1 and {"a", "b"} <= set(_state(again))
    again.close(snapshot=False)


def test_failed_background_snapshot_keeps_the_log(folder):
    live = LiveIndex.open(folder, snapshot_every=1)

    def broken() -> None:
        raise OSError("disk full")

    live.snapshot_hook = broken
    live.write([Upsert(_docs("a"), _vec(1))])
    assert live.snapshot_due() and live.snapshot_in_background()
    live.wait_for_snapshot(30)
    assert live.stats.snapshots == 0 and live.stats.records_since_snapshot == 1 and live.snapshot_due()
    live.close(snapshot=False)
    again = LiveIndex.open(folder)
    assert again.stats.replayed == 1 and "a" in _state(again)
    again.close()
