"""Flat index folders: build, save atomically, reload identically, refuse corrupt ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from densekit.errors import IndexCorruptError, IndexMismatchError
from densekit.index.dense_index import DenseIndex, load_index
from densekit.index.manifest import EncoderSpec


def make_index(n=50, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"doc{i}" for i in range(n)]
    corpus = {d: {"title": f"t{i}", "text": f"text {i}"} for i, d in enumerate(ids)}
    spec = EncoderSpec(name="test", dim=dim)
    return DenseIndex.build(vecs, corpus, ids, spec), vecs


def test_search_is_exact_inner_product():
    idx, vecs = make_index()
    q = vecs[:3] + 0.01
    hits = idx.search(q, 5)
    expected = np.argsort(-(q @ vecs.T), axis=1)[:, :5]
    assert [[h.id for h in row] for row in hits] == [[f"doc{i}" for i in row] for row in expected]
    assert hits[0][0].score == pytest.approx(float(q[0] @ vecs[expected[0][0]]), abs=1e-5)


def test_save_load_roundtrip(tmp_path):
    idx, vecs = make_index()
    idx.save(tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["doc_count"] == 50 and manifest["encoder"]["dim"] == 8
    assert set(manifest["checksums"]) == {"index.faiss", "docstore.sqlite"}
    back = load_index(tmp_path / "ix")
    before = idx.search(vecs[:4], 10)
    after = back.search(vecs[:4], 10)
    assert [[(h.id, round(h.score, 6)) for h in r] for r in before] == [[(h.id, round(h.score, 6)) for h in r] for r in after]
    assert back.documents([after[0][0].row])[after[0][0].row]["title"].startswith("t")
    # No temporary folders are left beside the index.
    assert [p.name for p in tmp_path.iterdir()] == ["ix"]


def test_overwrite_replaces_whole_folder(tmp_path):
    idx, _ = make_index(n=20)
    idx.save(tmp_path / "ix")
    idx2, _ = make_index(n=30, seed=1)
    idx2.save(tmp_path / "ix")
    assert len(load_index(tmp_path / "ix")) == 30


def test_failed_save_keeps_old_index(tmp_path, monkeypatch):
    idx, _ = make_index(n=20)
    idx.save(tmp_path / "ix")
    idx2, _ = make_index(n=30, seed=1)
    import densekit.index.dense_index as mod

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(mod, "write_json_atomic", boom)
    with pytest.raises(OSError):
        idx2.save(tmp_path / "ix")
    assert len(load_index(tmp_path / "ix")) == 20
    assert [p.name for p in tmp_path.iterdir()] == ["ix"]


def test_truncated_index_is_refused(tmp_path):
    idx, _ = make_index()
    idx.save(tmp_path / "ix")
    f = tmp_path / "ix" / "index.faiss"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(IndexCorruptError, match="checksum"):
        load_index(tmp_path / "ix")
    # Even without checksum verification faiss' own read error is reported cleanly.
    with pytest.raises(IndexCorruptError, match="faiss cannot read"):
        load_index(tmp_path / "ix", verify=False)


def test_missing_manifest_and_bad_json(tmp_path):
    idx, _ = make_index()
    idx.save(tmp_path / "ix")
    m = tmp_path / "ix" / "manifest.json"
    m.write_text("{not json")
    with pytest.raises(IndexCorruptError, match="not valid JSON"):
        load_index(tmp_path / "ix")
    m.unlink()
    with pytest.raises(IndexCorruptError, match="missing"):
        load_index(tmp_path / "ix")
    with pytest.raises(IndexCorruptError, match="not found"):
        load_index(tmp_path / "nope")


def test_version_and_dim_mismatch(tmp_path):
    idx, _ = make_index()
    idx.save(tmp_path / "ix")
    m = tmp_path / "ix" / "manifest.json"
    data = json.loads(m.read_text())
    data["format_version"] = 99
    m.write_text(json.dumps(data))
    with pytest.raises(IndexMismatchError, match="format version 99"):
        load_index(tmp_path / "ix")
    data["format_version"] = 1
    m.write_text(json.dumps(data))
    with pytest.raises(IndexMismatchError, match="index dim 8, encoder dim 16"):
        DenseIndex.load(tmp_path / "ix", expected_dim=16)
    with pytest.raises(IndexMismatchError):
        load_index(tmp_path / "ix").search(np.zeros((1, 16), dtype=np.float32), 3)


def test_upsert_and_remove_keep_store_in_step():
    idx, vecs = make_index(n=10)
    new = np.eye(8, dtype=np.float32)[:2]
    idx.upsert([{"id": "doc3", "title": "new3", "text": "replaced"}, {"id": "fresh", "title": "f", "text": "new doc"}], new)
    assert len(idx) == 11 and len(idx.docstore) == 11
    top = idx.search(new[:1], 1)[0][0]
    assert top.id == "doc3" and idx.documents([top.row])[top.row]["text"] == "replaced"
    assert idx.remove(["fresh", "unknown"]) == 1
    assert len(idx) == 10 and len(idx.docstore) == 10
    assert all(h.id != "fresh" for h in idx.search(new[1:2], 10)[0])


def test_embedding_cache_key_separates_half_precision(tiny_st_model_dir):
    import torch

    from densekit.encoder import Encoder
    from densekit.index.embedding_cache import cache_key

    enc = Encoder(str(tiny_st_model_dir), device="cpu")
    texts = ["a", "b"]
    fp32 = cache_key(enc, texts)
    assert cache_key(enc, texts) == fp32
    assert cache_key(enc, ["a", "c"]) != fp32
    enc.model.to(torch.bfloat16)
    assert cache_key(enc, texts) != fp32


# ---- temporary document stores of in-memory indexes -----------------------------------------
@pytest.fixture()
def temp_root(tmp_path, monkeypatch):
    """tempfile's folder pointed at a fresh one, so a test sees every temporary folder made."""
    import tempfile

    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _stores(root) -> list:
    return sorted(root.glob("densekit-docstore-*"))


def test_in_memory_index_removes_its_document_store_on_close_gc_and_with(temp_root):
    import gc

    idx, _ = make_index()
    assert idx.temp_dir is not None and _stores(temp_root) == [idx.temp_dir]
    idx.close()
    assert _stores(temp_root) == [] and idx.temp_dir is None
    idx.close()  # twice is harmless

    idx, _ = make_index()
    assert len(_stores(temp_root)) == 1
    del idx
    gc.collect()
    assert _stores(temp_root) == []

    with make_index()[0] as idx:
        assert len(idx.search(np.ones((1, 8), dtype=np.float32), 3)[0]) == 3
        assert len(_stores(temp_root)) == 1
    assert _stores(temp_root) == []


def test_saved_index_keeps_working_after_the_in_memory_one_is_closed(temp_root, tmp_path):
    with make_index()[0] as idx:
        idx.save(tmp_path / "ix")
    assert _stores(temp_root) == []
    with load_index(tmp_path / "ix") as back:
        assert len(back) == 50 and back.temp_dir is None
    assert (tmp_path / "ix" / "docstore.sqlite").is_file()


def test_failed_build_leaves_no_temporary_folder(temp_root):
    from densekit.errors import InvalidInputError

    vecs = np.eye(3, 8, dtype=np.float32)
    corpus = {"a": {"text": "x"}, "b": {"text": "y", "metadata": {"tags": {"not", "json"}}}, "c": {"text": "z"}}
    with pytest.raises(InvalidInputError, match="metadata of document 'b'"):
        DenseIndex.build(vecs, corpus, ["a", "b", "c"], EncoderSpec(name="t", dim=8))
    assert list(temp_root.iterdir()) == []
    with pytest.raises(InvalidInputError, match="not in the corpus"):
        DenseIndex.build(vecs, corpus, ["a", "b", "zz"], EncoderSpec(name="t", dim=8))
    assert list(temp_root.iterdir()) == []


def test_evaluation_leaves_no_temporary_folder(temp_root, tiny_beir, tiny_st_model_dir, tmp_path):
    from typer.testing import CliRunner

    from densekit.cli.main import app
    from densekit.data import load_beir
    from densekit.encoder import Encoder
    from densekit.eval.evaluate import evaluate_encoder

    outcome = evaluate_encoder(Encoder(str(tiny_st_model_dir), device="cpu"), load_beir(tiny_beir, "test"), top_k=5, progress=False)
    assert outcome.metrics["ndcg@10"] >= 0
    assert _stores(temp_root) == []
    args = ["eval", "--data", str(tiny_beir), "--split", "test", "--model", str(tiny_st_model_dir), "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert _stores(temp_root) == []


# ---- metric ---------------------------------------------------------------------------------
def test_distance_similarities_are_refused_at_build_and_load(tmp_path):
    vecs = np.eye(3, 8, dtype=np.float32)
    corpus = {d: {"text": d} for d in "abc"}
    with pytest.raises(IndexMismatchError, match="similarity 'l2' is not supported"):
        DenseIndex.build(vecs, corpus, list("abc"), EncoderSpec(name="t", dim=8, similarity="l2"))
    with make_index()[0] as idx:
        idx.save(tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    manifest["metric"] = "l2"
    (tmp_path / "ix" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError, match="metric 'l2' is not supported"):
        load_index(tmp_path / "ix")
