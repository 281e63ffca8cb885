"""Index kinds: build, save, reload, search params, bytes per vector, corrupt files."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from densekit.errors import ConfigError, IndexCorruptError, InvalidInputError
from densekit.index import faiss_kinds
from densekit.index.dense_index import DenseIndex
from densekit.index.manifest import EncoderSpec

DIM = 32
N = 1200


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((24, dim))
    x = centers[rng.integers(0, len(centers), n)] + 0.6 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    docs = clustered(N, DIM, 0)
    queries = clustered(40, DIM, 1)
    ids = [f"doc{i}" for i in range(N)]
    corpus = {d: {"title": f"t{i}", "text": f"text {i}"} for i, d in enumerate(ids)}
    return docs, queries, ids, corpus


SPEC = EncoderSpec(name="synthetic", dim=DIM)

BUILD = {
    "flat": ({}, {}),
    "ivf": ({"nlist": 16}, {"nprobe": 2}),
    "ivfpq": ({"nlist": 16, "pq_m": 8, "pq_nbits": 8}, {"nprobe": 2}),
    "opq-ivfpq": ({"nlist": 16, "pq_m": 8, "pq_nbits": 6, "opq_niter": 5}, {"nprobe": 2}),
    "hnsw": ({"hnsw_m": 8, "ef_construction": 40}, {"ef_search": 16}),
}


def build(kind, data, **kw):
    docs, _, ids, corpus = data
    bp, sp = BUILD[kind]
    return DenseIndex.build(docs, corpus, ids, SPEC, kind=kind, build_params=kw.get("bp", bp), search_params=kw.get("sp", sp))


def distilled(data) -> DenseIndex:
    from densekit.training.distill_vq_config import DistillVQConfig
    from densekit.training.distill_vq_run import distill_faiss_index

    docs, queries, ids, corpus = data
    cfg = DistillVQConfig(
        data="-", out="-", index={"nlist": 16, "pq_m": 8, "pq_nbits": 6, "opq_niter": 5}, train={"epochs": 1, "batch_size": 16}
    )
    _, _, exported, _ = distill_faiss_index(docs, clustered(64, DIM, 2), cfg, progress=False)
    return DenseIndex.build(
        docs,
        corpus,
        ids,
        SPEC,
        kind="distilled",
        build_params={"nlist": 16, "pq_m": 8, "pq_nbits": 6},
        search_params={"nprobe": 2},
        trained_index=exported,
    )


def hits(idx: DenseIndex, q: np.ndarray, params=None, k: int = 10):
    return [[(h.id, round(h.score, 5)) for h in row] for row in idx.search(q, k, params)]


@pytest.mark.parametrize("kind", [*BUILD, "distilled"])
def test_kind_builds_saves_reloads_same_results(kind, data, tmp_path):
    idx = distilled(data) if kind == "distilled" else build(kind, data)
    q = data[1]
    before = hits(idx, q)
    assert all(len(r) == 10 for r in before)
    idx.save(tmp_path / kind)
    loaded = DenseIndex.load(tmp_path / kind)
    assert loaded.manifest.kind == kind
    assert loaded.manifest.search_params == idx.manifest.search_params
    assert hits(loaded, q) == before
    assert loaded.manifest.build_time_s is not None and loaded.manifest.build_time_s >= 0
    assert loaded.manifest.extra["index_bytes_per_vector"] > 0


def test_bytes_per_vector(data):
    assert build("flat", data).manifest.bytes_per_vector == 4 * DIM
    assert build("ivfpq", data).manifest.bytes_per_vector == 8  # pq_m=8 x 8 bits
    assert build("opq-ivfpq", data).manifest.bytes_per_vector == 6  # pq_m=8 x 6 bits
    hnsw = build("hnsw", data).manifest
    assert hnsw.bytes_per_vector == 4 * DIM and hnsw.extra["index_bytes_per_vector"] > 4 * DIM  # + graph links


def _faiss_search(index, q, k, params):
    d, i = index.search(q, k, params=params)
    return i


@pytest.mark.parametrize("kind", ["ivf", "opq-ivfpq"])
def test_manifest_nprobe_applied_and_overridable_per_query(kind, data, tmp_path):
    q = data[1]
    idx = build(kind, data, sp={"nprobe": 1})
    idx.save(tmp_path / "i")
    loaded = DenseIndex.load(tmp_path / "i")
    for nprobe in (1, 16):
        # reference: the same faiss index searched with nprobe set on a private copy
        ref = faiss.clone_index(loaded.faiss)
        faiss.extract_index_ivf(ref).nprobe = nprobe
        _, rows = ref.search(q, 10)
        got = loaded.search(q, 10, None if nprobe == 1 else {"nprobe": nprobe})
        assert [[h.row for h in r] for r in got] == rows.tolist()
    assert faiss.extract_index_ivf(loaded.faiss).nprobe == 1, "a per-query nprobe must not change the shared index"
    one, all_lists = loaded.search(q, 10), loaded.search(q, 10, {"nprobe": 16})
    assert [[h.row for h in r] for r in one] != [[h.row for h in r] for r in all_lists], "nprobe=1 vs 16 should differ somewhere"


def test_hnsw_ef_search_applied(data, tmp_path):
    q = data[1]
    idx = build("hnsw", data, sp={"efSearch": 4})  # faiss spelling is accepted
    assert idx.manifest.search_params == {"ef_search": 4}
    idx.save(tmp_path / "h")
    loaded = DenseIndex.load(tmp_path / "h")
    for ef in (4, 200):
        ref = faiss.clone_index(loaded.faiss)
        faiss.downcast_index(ref.index).hnsw.efSearch = ef
        _, rows = ref.search(q, 10)
        got = loaded.search(q, 10, None if ef == 4 else {"ef_search": ef})
        assert [[h.row for h in r] for r in got] == rows.tolist()
    assert faiss.downcast_index(loaded.faiss.index).hnsw.efSearch == 4


def test_bad_params_name_the_field(data):
    with pytest.raises(ConfigError) as e:
        build("ivfpq", data, bp={"nlist": 16, "pqm": 8})
    assert e.value.field == "build_params.pqm"
    with pytest.raises(ConfigError) as e:
        build("flat", data, sp={"nprobe": 4})
    assert e.value.field == "search_params.nprobe"
    with pytest.raises(ConfigError):
        build("ivfpq", data, bp={"nlist": 16, "pq_m": 7})  # 32 is not a multiple of 7
    with pytest.raises(ConfigError) as e:
        faiss_kinds.make_index("nope", DIM)
    assert e.value.field == "kind"
    idx = build("ivf", data)
    with pytest.raises(ConfigError):
        idx.search(data[1], 5, {"nprobe": 0})


def test_too_few_vectors_for_pq_is_a_config_error(data):
    docs, _, ids, corpus = data
    with pytest.raises(ConfigError) as e:
        DenseIndex.build(docs[:100], corpus, ids[:100], SPEC, kind="ivfpq", build_params={"nlist": 2, "pq_m": 8, "pq_nbits": 8})
    assert e.value.field == "build_params.pq_nbits"


def test_updates_on_compressed_kinds(data):
    docs, q, ids, corpus = data
    idx = build("ivfpq", data)
    assert idx.remove(["doc0", "doc1"]) == 2 and len(idx) == N - 2
    idx.upsert([{"id": "doc5", "title": "", "text": "moved"}], docs[7:8])
    top = idx.search(docs[7:8], 2, {"nprobe": 16})[0]
    assert {h.id for h in top} == {"doc5", "doc7"}
    hnsw = build("hnsw", data)
    with pytest.raises(InvalidInputError, match="cannot remove"):
        hnsw.remove(["doc0"])


def test_truncated_or_corrupt_index_faiss_is_refused(data, tmp_path):
    idx = build("ivfpq", data)
    folder = tmp_path / "ix"
    idx.save(folder)
    path = folder / "index.faiss"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(IndexCorruptError, match="checksum"):
        DenseIndex.load(folder)
    # without checksum verification, faiss's own read error must still come out clean
    with pytest.raises(IndexCorruptError, match="faiss cannot read"):
        DenseIndex.load(folder, verify=False)
    path.write_bytes(b"not a faiss index at all")
    with pytest.raises(IndexCorruptError, match="faiss cannot read"):
        DenseIndex.load(folder, verify=False)


def test_cli_build_kind_params_and_info(tiny_beir, tiny_st_model_dir, tmp_path):
    from densekit.cli.main import app

    runner = CliRunner()

    def build_cli(out, kind, *params):
        args = ["index", "build", "--data", str(tiny_beir), "--model", str(tiny_st_model_dir), "--out", str(out), "--kind", kind]
        return runner.invoke(app, [*args, *params])

    ix = tmp_path / "pq"
    r = build_cli(ix, "ivfpq", "--nlist", "2", "--pq-m", "4", "--pq-nbits", "2", "--nprobe", "2")
    assert r.exit_code == 0, r.output
    manifest = json.loads(runner.invoke(app, ["index", "info", str(ix)]).stdout)
    assert manifest["kind"] == "ivfpq" and manifest["bytes_per_vector"] == 1  # 4 codes x 2 bits
    assert manifest["build_params"]["nlist"] == 2 and manifest["search_params"] == {"nprobe": 2}
    summary = runner.invoke(app, ["index", "info", str(ix), "--summary"]).stdout
    assert "bytes/vector (codes)" in summary and "build time s" in summary
    bad = runner.invoke(app, ["index", "build", "--data", str(tiny_beir), "--out", str(tmp_path / "x"), "--kind", "hnsw", "--nprobe", "3"])
    assert bad.exit_code != 0 and not (tmp_path / "x").exists()
    # OPQ on fewer vectors than dimensions would abort inside faiss: refused up front instead
    opq = build_cli(tmp_path / "o", "opq-ivfpq", "--nlist", "2", "--pq-m", "4", "--pq-nbits", "2")
    assert opq.exit_code != 0 and "OPQ needs more training vectors" in str(opq.exception or opq.output)


@pytest.mark.parametrize(
    "kind, core",
    [
        ("flat", faiss.IndexFlat),
        ("ivf", faiss.IndexIVFFlat),
        ("ivfpq", faiss.IndexIVFPQ),
        ("opq-ivfpq", faiss.IndexIVFPQ),
        ("hnsw", faiss.IndexHNSWFlat),
    ],
)
def test_core_index_sees_through_every_wrapper(kind, core, data, tmp_path):
    """One unwrapping function serves every kind, fresh and reloaded from disk."""
    with build(kind, data) as idx:
        idx.save(tmp_path / kind)
    with DenseIndex.load(tmp_path / kind) as idx:
        inner = faiss_kinds.core_index(idx.faiss)
        assert isinstance(inner, core)
        ivf = faiss_kinds.ivf_of(idx.faiss)
        assert isinstance(ivf, core) if kind in faiss_kinds.IVF_KINDS else ivf is None
        if ivf is not None:
            assert ivf.nprobe == BUILD[kind][1]["nprobe"]  # apply_defaults reached it through the wrappers
    refine = faiss.IndexRefineFlat(faiss_kinds.make_index(kind, DIM, BUILD[kind][0], n_train=N))
    assert isinstance(faiss_kinds.core_index(refine), core)
