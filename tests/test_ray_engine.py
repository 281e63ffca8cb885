"""The Ray engine on a real local Ray cluster (started once per session): Ray Data encoding
equals the local engine, an interrupted run resumes, shard builds as Ray tasks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from densekit.index.embedding_encode import EncodeOptions, RayOptions, encode_corpus_to_shards
from densekit.index.embeddings_store import EmbeddingsFolder

pytestmark = pytest.mark.slow

# four shards, one re-encoded on resume: enough to show order, resume and equality, small enough
# that the two engines' model loads, not the encoding, are most of the time
DOCS = 64
SHARD_SIZE = 16


@pytest.fixture(scope="module")
def scifact_slice(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("scifact-slice") / "corpus.jsonl"
    with open(data_dir / "scifact" / "corpus.jsonl", encoding="utf-8") as src:
        out.write_text("".join(next(src) for _ in range(DOCS)), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def encoded(ray_cluster, scifact_slice, minilm_path, tmp_path_factory):
    """The slice encoded by both engines: (local folder, ray folder, local result, ray result)."""
    base = tmp_path_factory.mktemp("encoded")
    opts = EncodeOptions(model=minilm_path, device="cpu")
    local = encode_corpus_to_shards(scifact_slice, base / "local", opts, shard_size=SHARD_SIZE, progress=False)
    on_ray = encode_corpus_to_shards(
        scifact_slice, base / "ray", opts, engine="ray", shard_size=SHARD_SIZE, ray=RayOptions(actors=2), progress=False
    )
    print(
        f"\nray cluster start {ray_cluster:.1f}s; encode {DOCS} docs: local {DOCS / local.encode_s:.0f} rows/s, "
        f"ray (2 actors, incl. actor start) {DOCS / on_ray.encode_s:.0f} rows/s"
    )
    return base / "local", base / "ray", local, on_ray


def test_ray_data_vectors_equal_the_local_engine(encoded):
    local_dir, ray_dir, local, on_ray = encoded
    assert on_ray.encoded_rows == DOCS and len(on_ray.manifest.shards) == 4
    assert on_ray.manifest.encoder == local.manifest.encoder and on_ray.manifest.encoder_key == local.manifest.encoder_key
    ids_l, vec_l = EmbeddingsFolder(local_dir).load_all()
    ids_r, vec_r = EmbeddingsFolder(ray_dir).load_all()
    assert ids_r == ids_l
    np.testing.assert_allclose(vec_r, vec_l, atol=1e-5)


def test_interrupted_ray_run_resumes_without_re_encoding_finished_shards(encoded, scifact_slice, minilm_path):
    _, ray_dir, _, _ = encoded
    kept = {p.name: p.stat().st_mtime_ns for p in ray_dir.glob("shard-0000[023]*")}
    for p in ray_dir.glob("shard-00001*"):
        p.unlink()
    again = encode_corpus_to_shards(
        scifact_slice,
        ray_dir,
        EncodeOptions(model=minilm_path, device="cpu"),
        engine="ray",
        shard_size=SHARD_SIZE,
        ray=RayOptions(actors=1),
        progress=False,
    )
    assert again.encoded_shards == ["shard-00001"] and again.encoded_rows == SHARD_SIZE
    assert {p.name: p.stat().st_mtime_ns for p in ray_dir.glob("shard-0000[023]*")} == kept
    assert EmbeddingsFolder(ray_dir).rows == DOCS


def test_shards_built_as_ray_tasks_equal_the_local_build(encoded, tmp_path):
    from densekit.index.loading import open_index
    from densekit.index.sharded_build import build_sharded

    local_dir, _, _, _ = encoded
    on_ray = build_sharded(local_dir, tmp_path / "ray", 2, engine="ray")
    local = build_sharded(local_dir, tmp_path / "local", 2, engine="local")
    assert [s.doc_count for s in on_ray.shards] == [s.doc_count for s in local.shards]
    assert sum(s.doc_count for s in on_ray.shards) == DOCS
    q = EmbeddingsFolder(local_dir).load_all()[1][:20]
    with open_index(tmp_path / "ray") as a, open_index(tmp_path / "local") as b:
        for x, y in zip(a.search(q, 10), b.search(q, 10)):
            assert [h.id for h in x] == [h.id for h in y]
            np.testing.assert_allclose([h.score for h in x], [h.score for h in y], atol=1e-6)
    assert json.loads((tmp_path / "ray" / "sharded_manifest.json").read_text())["extra"]["engine"] == "ray"
