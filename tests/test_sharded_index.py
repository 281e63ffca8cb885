"""Embedding shards and sharded indexes without Ray: the shard format, resuming an encode run,
sharded builds (flat equal to one flat index; IVF-PQ shards sharing one quantiser), loading
them in the server and in evaluation, routing live updates, and refusing bad folders."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from densekit.errors import ConfigError, IndexCorruptError, IndexMismatchError
from densekit.index import embeddings_store as store
from densekit.index.dense_index import DenseIndex
from densekit.index.embedding_encode import EncodeOptions, encode_corpus_to_shards, encoder_key
from densekit.index.embeddings_store import EmbeddingsFolder
from densekit.index.loading import open_index, open_live_index
from densekit.index.manifest import EncoderSpec
from densekit.index.sharded_build import build_sharded
from densekit.index.sharded_index import ShardedIndex
from densekit.index.sharded_manifest import SHARDED_MANIFEST, read_sharded_manifest, shard_of
from densekit.index.trained_checksum import trained_checksum

DIM = 32


def write_synthetic(tmp: Path, n: int, seed: int = 0, shard_size: int = 128) -> tuple[Path, Path, np.ndarray, list[str]]:
    """An embeddings folder of n clustered unit vectors (as `densekit encode` writes it) and its corpus."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, DIM))
    vectors = centers[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, DIM))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"doc-{i}" for i in range(n)]
    corpus = tmp / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"_id": d, "title": f"t{i}", "text": f"text {i}", "metadata": {"i": i}}) + "\n" for i, d in enumerate(ids))
    )
    spec = EncoderSpec(name="synthetic", dim=DIM)
    key = encoder_key(spec)
    texts = [f"t{i} text {i}" for i in range(n)]
    emb = tmp / "emb"
    emb.mkdir()
    plans = store.plan_shards(ids, texts, shard_size, key, "float32")
    records = [
        store.write_shard(emb, p, ids[p.first_row : p.first_row + p.rows], vectors[p.first_row : p.first_row + p.rows]) for p in plans
    ]
    store.write_manifest(emb, spec, key, "float32", shard_size, records, str(corpus))
    return emb, corpus, vectors, ids


def one_index(vectors: np.ndarray, ids: list[str], corpus: Path, kind: str = "flat", params: dict | None = None) -> DenseIndex:
    from densekit.index.corpus_source import read_corpus

    return DenseIndex.build(vectors, read_corpus(corpus), ids, EncoderSpec(name="synthetic", dim=DIM), kind=kind, build_params=params)


def queries(n: int = 25, seed: int = 7) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_flat_shards_equal_one_flat_index(tmp_path, shards):
    emb, corpus, vectors, ids = write_synthetic(tmp_path, 300)
    manifest = build_sharded(emb, tmp_path / "sharded", shards, kind="flat")
    assert manifest.doc_count == 300 and len(manifest.shards) == shards
    q = queries()
    with one_index(vectors, ids, corpus) as flat, open_index(tmp_path / "sharded") as sharded:
        assert isinstance(sharded, ShardedIndex) and len(sharded) == 300
        for want, got in zip(flat.search(q, 10), sharded.search(q, 10)):
            assert [h.id for h in got] == [h.id for h in want]
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-5)
        # every document sits on the shard its id hashes to, and a hit's row finds its document
        for s, shard in enumerate(sharded.shards):
            assert all(shard_of(d, shards) == s for d in shard.docstore.row_to_id().values())
        hit = sharded.search(q[:1], 1)[0][0]
        assert sharded.documents([hit.row])[hit.row]["id"] == hit.id
        assert sharded.docstore.rows_of([hit.id]) == {hit.id: hit.row}
        np.testing.assert_allclose(sharded.faiss.reconstruct(hit.row), vectors[ids.index(hit.id)], atol=1e-6)


def _recall(approx, exact) -> float:
    return float(np.mean([len({h.id for h in a} & {h.id for h in e}) / len(e) for a, e in zip(approx, exact)]))


def test_ivfpq_shards_share_the_quantiser_and_keep_recall(tmp_path):
    emb, corpus, vectors, ids = write_synthetic(tmp_path, 2000, shard_size=500)
    params = {"nlist": 16, "pq_m": 8}
    build_sharded(emb, tmp_path / "sharded", 3, kind="ivfpq", build_params=params, search_params={"nprobe": 4})
    sm = read_sharded_manifest(tmp_path / "sharded")
    q = queries(60)
    with one_index(vectors, ids, corpus) as flat, one_index(vectors, ids, corpus, "ivfpq", params) as single:
        with open_index(tmp_path / "sharded") as sharded:
            assert isinstance(sharded, ShardedIndex)
            checks = {trained_checksum(s.faiss) for s in sharded.shards}
            assert checks == {sm.trained_sha256}
            assert {s.manifest.extra["trained_sha256"] for s in sharded.shards} == {sm.trained_sha256}
            exact = flat.search(q, 10)
            r_sharded = _recall(sharded.search(q, 10, {"nprobe": 4}), exact)
            r_single = _recall(single.search(q, 10, {"nprobe": 4}), exact)
    assert r_single > 0.3  # the comparison means something
    assert abs(r_sharded - r_single) <= 0.005


def test_sharded_index_serves_live_updates_routed_to_the_owning_shard(tmp_path):
    emb, corpus, vectors, ids = write_synthetic(tmp_path, 120)
    build_sharded(emb, tmp_path / "sharded", 3)
    from densekit.index.live import Delete, Upsert, WriteResult

    live = open_live_index(tmp_path / "sharded", snapshot_every=1000)
    new = [{"id": f"new-{i}", "title": "", "text": f"new {i}", "metadata": {}} for i in range(6)]
    vec = queries(6, seed=3)
    [res] = live.write([Upsert(new, vec)])
    assert isinstance(res, WriteResult) and res.count == 6
    hits = live.index.search(vec[:1], 1)[0]
    assert hits[0].id == "new-0" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    owner = shard_of("new-0", 3)
    assert live.lives[owner].index.docstore.rows_of(["new-0"])
    assert all(not live.lives[s].index.docstore.rows_of(["new-0"]) for s in range(3) if s != owner)
    [gone] = live.write([Delete(["doc-5"])])
    assert isinstance(gone, WriteResult) and gone.count == 1
    live.close(snapshot=False)
    # reopened: every shard replays its own log
    again = open_live_index(tmp_path / "sharded")
    assert len(again.index) == 120 + 6 - 1
    assert again.index.docstore.rows_of(["new-3", "doc-5"]).keys() == {"new-3"}
    again.close(snapshot=True)
    with open_index(tmp_path / "sharded") as snap:  # snapshots written: shards checked by their own manifests
        assert len(snap) == 125


def test_server_and_evaluation_load_a_sharded_index(tmp_path, tiny_st_model_dir):
    from fastapi.testclient import TestClient

    from densekit.data.beir import BeirDataset
    from densekit.encoder import Encoder
    from densekit.eval.evaluate import evaluate_index
    from densekit.service.app import create_app
    from densekit.settings import Settings

    docs = [
        (f"d{i}", f"title {i}", f"document number {i} about {w}") for i, w in enumerate("cats dogs paris python faiss rome".split() * 5)
    ]
    data = tmp_path / "data"
    data.mkdir()
    (data / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs))
    encode_corpus_to_shards(data, tmp_path / "emb", EncodeOptions(model=str(tiny_st_model_dir), device="cpu"), shard_size=7, progress=False)
    build_sharded(tmp_path / "emb", tmp_path / "sharded", 2)
    enc = Encoder(str(tiny_st_model_dir), device="cpu")
    qrels = {"q1": {"d4": 1}, "q2": {"d9": 1}}
    ds = BeirDataset(name="tiny", folder=data, split="test", corpus={}, queries={"q1": "about python", "q2": "about faiss"}, qrels=qrels)
    with open_index(tmp_path / "sharded") as sharded:
        out = evaluate_index(sharded, enc, ds, top_k=10)
    with build_one(docs, enc) as single:
        want = evaluate_index(single, enc, ds, top_k=10)
    assert out.metrics == pytest.approx(want.metrics, abs=1e-6)
    app = create_app(Settings(index_dir=tmp_path / "sharded", model=str(tiny_st_model_dir), device="cpu"))
    with TestClient(app) as client:
        got = client.post("/search", json={"query": "about rome", "top_k": 5}).json()
        assert [h["id"] for h in got["hits"]] == [h.id for h in single_search(docs, enc, "about rome", 5)]
        r = client.post("/documents", json={"documents": [{"id": "zz", "title": "Zebra", "text": "zebras are striped"}]})
        assert r.status_code == 200, r.text
        assert r.json()["documents"] == len(docs) + 1
        assert client.get("/documents/zz").json()["title"] == "Zebra"
        info = client.get("/info").json()
        assert info["index"]["documents"] == len(docs) + 1 and "2 shards" in info["index"]["faiss"]
        assert client.delete("/documents/zz").status_code == 200
        assert client.get("/documents/zz").status_code == 404


def build_one(docs, enc):
    from densekit.index.dense_index import build_from_corpus

    return build_from_corpus(enc, {i: {"title": t, "text": x} for i, t, x in docs}, progress=False)


def single_search(docs, enc, query: str, k: int):
    with build_one(docs, enc) as idx:
        return idx.search(enc.encode_queries([query]), k)[0]


def test_encode_resumes_without_re_encoding_complete_shards(tmp_path, tiny_st_model_dir):
    from densekit.encoder import Encoder
    from densekit.index.corpus_source import read_corpus

    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps({"_id": f"d{i}", "title": f"T{i}", "text": f"body of document {i}"}) + "\n" for i in range(30)))
    opts = EncodeOptions(model=str(tiny_st_model_dir), device="cpu")
    first = encode_corpus_to_shards(data, tmp_path / "emb", opts, shard_size=8, dtype="float16", progress=False)
    assert first.encoded_rows == 30 and [r.rows for r in first.manifest.shards] == [8, 8, 8, 6]
    emb = tmp_path / "emb"
    mtimes = {p.name: p.stat().st_mtime_ns for p in emb.glob("shard-0000[023]*")}
    for p in emb.glob("shard-00001*"):
        p.unlink()
    time.sleep(0.01)
    again = encode_corpus_to_shards(data, emb, opts, shard_size=8, dtype="float16", progress=False)
    assert again.encoded_shards == ["shard-00001"] and again.encoded_rows == 8
    assert {p.name: p.stat().st_mtime_ns for p in emb.glob("shard-0000[023]*")} == mtimes
    ids, vectors = EmbeddingsFolder(emb).load_all()
    corpus = read_corpus(data)
    want = Encoder(str(tiny_st_model_dir), device="cpu").encode_documents([f"{d['title']} {d['text']}" for d in corpus.values()])
    assert ids == list(corpus) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, want, atol=2e-3)  # stored as float16
    # a changed plan (another dtype) re-encodes everything
    assert encode_corpus_to_shards(data, emb, opts, shard_size=8, dtype="float32", progress=False).encoded_rows == 30


def test_encode_and_sharded_build_from_the_command_line(tmp_path, tiny_st_model_dir):
    from typer.testing import CliRunner

    from densekit.cli.main import app

    data = tmp_path / "c.jsonl"
    data.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"text {i}"}) + "\n" for i in range(12)))
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "encode",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "emb"),
            "--model",
            str(tiny_st_model_dir),
            "--device",
            "cpu",
            "--shard-size",
            "5",
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "emb" / store.MANIFEST).is_file()
    r = runner.invoke(app, ["index", "build", "--from-embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "ix"), "--shards", "2"])
    assert r.exit_code == 0, r.output
    assert read_sharded_manifest(tmp_path / "ix").doc_count == 12


# ---- bad input ----------------------------------------------------------------------------
def test_missing_shard_is_refused(tmp_path):
    emb, *_ = write_synthetic(tmp_path, 100)
    build_sharded(emb, tmp_path / "s", 2)
    shutil.rmtree(tmp_path / "s" / "shard-00001")
    with pytest.raises(IndexCorruptError, match="shard-00001.*missing"):
        open_index(tmp_path / "s")
    with pytest.raises(IndexCorruptError, match="missing"):
        open_live_index(tmp_path / "s")


def test_shard_swapped_for_another_builds_fails_the_checksum(tmp_path):
    emb, *_ = write_synthetic(tmp_path, 100)
    (tmp_path / "other").mkdir()
    emb2, *_ = write_synthetic(tmp_path / "other", 100, seed=1)
    build_sharded(emb, tmp_path / "a", 2)
    build_sharded(emb2, tmp_path / "b", 2)
    shutil.rmtree(tmp_path / "a" / "shard-00001")
    shutil.copytree(tmp_path / "b" / "shard-00001", tmp_path / "a" / "shard-00001")
    with pytest.raises(IndexCorruptError, match="checksums differ"):
        open_index(tmp_path / "a")


def test_shards_trained_with_different_quantisers_are_refused(tmp_path):
    emb, *_ = write_synthetic(tmp_path, 1200, shard_size=400)
    params = {"nlist": 8, "pq_m": 8}
    build_sharded(emb, tmp_path / "a", 2, kind="ivfpq", build_params=params)
    build_sharded(emb, tmp_path / "b", 2, kind="ivfpq", build_params={**params, "seed": 99})
    shutil.rmtree(tmp_path / "a" / "shard-00001")
    shutil.copytree(tmp_path / "b" / "shard-00001", tmp_path / "a" / "shard-00001")
    # make the listed checksums agree, so only the quantiser check can notice
    raw = json.loads((tmp_path / "a" / SHARDED_MANIFEST).read_text())
    raw["shards"][1] = json.loads((tmp_path / "b" / SHARDED_MANIFEST).read_text())["shards"][1]
    (tmp_path / "a" / SHARDED_MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(IndexMismatchError, match="another quantiser"):
        open_index(tmp_path / "a")


def test_embeddings_folder_refuses_missing_or_corrupt_shards(tmp_path):
    emb, *_ = write_synthetic(tmp_path, 300)
    vec = emb / "shard-00001.npy"
    data = bytearray(vec.read_bytes())
    data[-1] ^= 0xFF
    vec.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match="shard-00001.npy fails its checksum"):
        build_sharded(emb, tmp_path / "s", 2)
    vec.unlink()
    with pytest.raises(IndexCorruptError, match="shard-00001.npy is missing"):
        EmbeddingsFolder(emb)
    assert not (tmp_path / "s").exists()


def test_bad_options_are_refused_before_any_work(tmp_path):
    emb, *_ = write_synthetic(tmp_path, 50)
    with pytest.raises(ConfigError, match="engine"):
        build_sharded(emb, tmp_path / "s", 2, engine="spark")
    with pytest.raises(ConfigError, match="shards"):
        build_sharded(emb, tmp_path / "s", 0)
    with pytest.raises(ConfigError, match="dtype"):
        encode_corpus_to_shards(tmp_path / "corpus.jsonl", tmp_path / "e", dtype="int8")


def test_ray_engine_without_the_extra_names_it(tmp_path, monkeypatch):
    # An entry of None in sys.modules makes `import ray` fail as it does where Ray is not installed.
    monkeypatch.setitem(sys.modules, "ray", None)
    emb, corpus, *_ = write_synthetic(tmp_path, 20)
    with pytest.raises(ConfigError, match=r"densekit\[ray\]"):
        encode_corpus_to_shards(corpus, tmp_path / "e", engine="ray")
    with pytest.raises(ConfigError, match=r"densekit\[ray\]"):
        build_sharded(emb, tmp_path / "s", 2, engine="ray")


def test_unreachable_address_fails_fast(tmp_path):
    pytest.importorskip("ray")
    from conftest import free_port

    from densekit.index.ray_cluster import connect

    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="cannot reach a Ray cluster"):
        connect(f"127.0.0.1:{free_port()}", timeout_s=5)
    assert time.monotonic() - t0 < 30
