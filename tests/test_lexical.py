"""The BM25 part of an index folder (index/lexical.py) and hybrid fusion (densekit/fusion.py):
scores against a plain reference implementation, persistence and checksums, live updates and
write-ahead-log replay, fusion math, and `densekit tune fusion` refusing a test split."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from densekit.errors import ConfigError, IndexCorruptError, InvalidInputError
from densekit.fusion import FusionSettings, fuse_convex, fuse_hybrid, fuse_rrf, min_max
from densekit.index.dense_index import DenseIndex
from densekit.index.filters import parse_filter
from densekit.index.lexical import LexicalIndex
from densekit.index.live import LiveIndex, Upsert
from densekit.index.manifest import EncoderSpec, LexicalSpec, read_manifest, update_search_defaults

TOY = [
    "The cat sat on the mat and the cat purred",
    "Dogs chase cats; a dog is loyal",
    "Running runners run in the running race",
    "A fish swims in water, fishes swim",
    "Cats and dogs and fish are pets",
    "the and of to",  # stop-words only: counts in N, holds no token
]


# ---- a straightforward reference BM25 ------------------------------------------------------
def _reference_tokens(text: str) -> list[str]:
    """bm25s's tokenisation spelled out: lower-case, \\b\\w\\w+\\b, drop its English stop-words, Snowball-stem."""
    import Stemmer
    from bm25s.stopwords import STOPWORDS_EN

    stem = Stemmer.Stemmer("english").stemWord
    return [stem(w) for w in re.findall(r"\b\w\w+\b", text.lower()) if w not in set(STOPWORDS_EN)]


def _reference_scores(corpus: list[str], query: str, k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Lucene's BM25 (bm25s's default "lucene" variant), one document at a time."""
    docs = [_reference_tokens(t) for t in corpus]
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    df = Counter(t for d in docs for t in set(d))
    out = []
    for d in docs:
        tf = Counter(d)
        s = 0.0
        for t in _reference_tokens(query):  # a repeated query word counts each time
            if tf[t]:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                s += idf * tf[t] / (tf[t] + k1 * (1 - b + b * len(d) / avgdl))
        out.append(s)
    return out


@pytest.mark.parametrize("query", ["cat", "running dogs", "cats fish fish", "swimming pets on a mat"])
def test_bm25_scores_equal_reference(query):
    lex = LexicalIndex.build(enumerate(TOY))
    got = lex.document_scores(query, range(len(TOY)))
    want = _reference_scores(TOY, query)
    assert [got[i] for i in range(len(TOY))] == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert any(w > 0 for w in want)
    # search: exactly the documents with a positive score, best first
    hits = lex.search([query], top_k=10)[0]
    assert [r for r, _ in hits] == sorted((i for i, w in enumerate(want) if w > 0), key=lambda i: (-want[i], i))


def test_bm25_spec_parameters_are_applied():
    spec = LexicalSpec(k1=0.9, b=0.4)
    got = LexicalIndex.build(enumerate(TOY), spec).document_scores("cat dogs", range(len(TOY)))
    assert [got[i] for i in range(len(TOY))] == pytest.approx(_reference_scores(TOY, "cat dogs", 0.9, 0.4), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("query", ["the and of", "zyxwv qqqq", "a"])
def test_stopword_or_unknown_query_has_no_lexical_hits(query):
    lex = LexicalIndex.build(enumerate(TOY))
    assert lex.search([query, "cat"], top_k=5)[0] == []
    assert lex.search([query, "cat"], top_k=5)[1]  # the other query of the batch still answers


def test_top_k_and_allowed_rows():
    lex = LexicalIndex.build((10 + i, t) for i, t in enumerate(TOY))
    full = lex.search(["cats dogs fish"], top_k=10)[0]
    assert len(full) >= 3 and lex.search(["cats dogs fish"], top_k=2)[0] == full[:2]
    only = lex.search(["cats dogs fish"], top_k=10, allowed_rows=np.array([14, 13]))[0]
    assert {r for r, _ in only} <= {13, 14} and only


def test_ties_at_the_top_k_cut_go_by_row():
    # 300 documents with the same score: the top_k are the lowest rows, whatever the order of indexing.
    rows = np.random.default_rng(0).permutation(300)
    lex = LexicalIndex.build((int(r), "crash test document") for r in rows)
    hits = lex.search(["crash"], top_k=7)[0]
    assert [r for r, _ in hits] == list(range(7))
    assert len({s for _, s in hits}) == 1
    with pytest.raises(InvalidInputError, match="top_k"):
        lex.search(["crash"], top_k=0)


def test_empty_corpus():
    lex = LexicalIndex.build([])
    assert lex.search(["cat"], 3) == [[]]


# ---- fusion math -------------------------------------------------------------------------------
def test_min_max():
    assert min_max({"a": 2.0, "b": 4.0, "c": 3.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert min_max({"a": 7.0}) == {"a": 1.0} and min_max({}) == {}


def test_convex_fusion_by_hand():
    dense = {"q": {"a": 0.9, "b": 0.5, "c": 0.1}}
    lexical = {"q": {"c": 12.0, "d": 6.0, "a": 0.0}}
    fused = fuse_convex(dense, lexical, alpha=0.3)["q"]
    # dense normalised: a 1, b 0.5, c 0; lexical: c 1, d 0.5, a 0
    assert fused == pytest.approx({"a": 0.3, "b": 0.15, "c": 0.7, "d": 0.35})
    assert fuse_convex(dense, lexical, alpha=1.0)["q"] == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0, "d": 0.0})
    with pytest.raises(ValueError):
        fuse_convex(dense, lexical, alpha=1.5)


def test_empty_lexical_list_leaves_dense_order():
    dense = {"q": {"a": 0.2, "b": 0.9, "c": 0.5}}
    for settings in (FusionSettings(method="rrf"), FusionSettings(method="convex", alpha=0.0), FusionSettings(method="convex", alpha=0.7)):
        fused = fuse_hybrid(dense, {"q": {}}, settings)["q"]
        assert sorted(fused, key=lambda d: -fused[d]) == ["b", "c", "a"]


def test_rrf_hybrid_is_reciprocal_rank_fusion():
    dense = {"q": {"a": 0.9, "b": 0.5}}
    lexical = {"q": {"b": 3.0, "c": 1.0}}
    fused = fuse_hybrid(dense, lexical, FusionSettings(method="rrf", rrf_k=60))["q"]
    assert fused == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 62})
    assert fused == fuse_rrf([dense, lexical])["q"]


# ---- the lexical part of an index folder -------------------------------------------------------
DOCS = [{"id": f"d{i}", "title": f"title {i}", "text": t, "metadata": {"n": i}} for i, t in enumerate(TOY)]
DIM = 8


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _build(folder, lexical: bool = True):
    corpus = {d["id"]: {"title": d["title"], "text": d["text"], "metadata": d["metadata"]} for d in DOCS}
    spec = EncoderSpec(name="random", dim=DIM)
    with DenseIndex.build(_vectors(len(DOCS)), corpus, list(corpus), spec, lexical=lexical) as idx:
        idx.save(folder)
    return folder


def _lexical_ids(idx, query: str, k: int = 10) -> list[str]:
    return [h.id for h in idx.lexical_search([query], k)[0]]


def test_index_folder_holds_checksummed_lexical_part(tmp_path):
    folder = _build(tmp_path / "index")
    m = read_manifest(folder)
    assert m.lexical is not None and m.lexical.files and all(f in m.checksums for f in m.lexical.files)
    assert all((folder / f).is_file() for f in m.lexical.files)
    with DenseIndex.load(folder) as idx:
        assert _lexical_ids(idx, "cat mat")[0] == "d0"
        assert idx.lexical_search(["the of"], 5) == [[]]
        assert [h.id for h in idx.lexical_search(["cats"], 10, where=parse_filter({"n": 4}))[0]] == ["d4"]
    victim = folder / m.lexical.files[0]
    victim.write_bytes(victim.read_bytes()[:-3])
    with pytest.raises(IndexCorruptError, match="checksum"):
        DenseIndex.load(folder)


def test_folder_without_lexical_part_loads_and_refuses_lexical_search(tmp_path):
    folder = _build(tmp_path / "index", lexical=False)
    raw = json.loads((folder / "manifest.json").read_text())
    for key in ("lexical", "search_mode", "fusion"):  # as written before lexical search existed
        raw.pop(key)
    (folder / "manifest.json").write_text(json.dumps(raw))
    with DenseIndex.load(folder) as idx:
        assert idx.manifest.search_mode == "dense" and not idx.has_lexical
        assert len(idx.search(_vectors(1, 5), 3)[0]) == 3
        with pytest.raises(ConfigError, match="--lexical"):
            idx.lexical_search(["cat"], 3)
    with pytest.raises(Exception, match="lexical"):
        update_search_defaults(folder, search_mode="hybrid")


def test_updates_keep_lexical_part_exact(tmp_path):
    folder = _build(tmp_path / "index")
    with DenseIndex.load(folder, writable=True) as idx:
        idx.upsert([{"id": "new", "title": "", "text": "an aardvark eats ants"}], _vectors(1, 1))
        assert _lexical_ids(idx, "aardvark") == ["new"]
        idx.upsert([{"id": "d0", "title": "", "text": "replaced text about zebras"}], _vectors(1, 2))
        assert "d0" not in _lexical_ids(idx, "cat mat purred")
        assert _lexical_ids(idx, "zebra") == ["d0"]
        idx.remove(["d4"])
        assert all("d4" not in _lexical_ids(idx, q) for q in ("cats dogs fish pets", "pets"))
        # every score is BM25 over the current documents (N, df and avgdl included)
        texts = [d["text"] for d in idx.docstore.iter_all()]
        rows = [d["row"] for d in idx.docstore.iter_all()]
        got = idx.lexical_index().document_scores("cats dogs zebra", rows)
        want = _reference_scores([f"{d['title']} {d['text']}" for d in idx.docstore.iter_all()], "cats dogs zebra")
        assert [got[r] for r in rows] == pytest.approx(want, rel=1e-5, abs=1e-6) and len(texts) == len(DOCS)
        idx.save(tmp_path / "saved")
    with DenseIndex.load(tmp_path / "saved") as again:
        assert _lexical_ids(again, "aardvark") == ["new"] and "d4" not in _lexical_ids(again, "pets")


def test_wal_replay_and_snapshot_rebuild_the_lexical_part(tmp_path):
    folder = _build(tmp_path / "index")
    live = LiveIndex.open(folder)
    live.write([Upsert([{"id": "w1", "title": "", "text": "quokka island"}], _vectors(1, 3))])
    from densekit.index.live import Delete

    live.write([Delete(["d1"])])
    live.close(snapshot=False)  # as after a crash: the writes are only in the log
    live = LiveIndex.open(folder)
    try:
        assert live.stats.replayed == 2
        live.check_consistent()
        assert _lexical_ids(live.index, "quokka") == ["w1"] and "d1" not in _lexical_ids(live.index, "loyal dog")
        assert live.snapshot()
    finally:
        live.close(snapshot=False)
    with DenseIndex.load(folder) as snap:  # the snapshot's own lexical files hold the writes
        assert _lexical_ids(snap, "quokka") == ["w1"] and "d1" not in _lexical_ids(snap, "loyal dog")


def test_lexical_rows_must_match_document_store(tmp_path):
    folder = _build(tmp_path / "index")
    other = _build(tmp_path / "other")
    # A lexical part from another folder with one row fewer: checksums updated, rows disagree.
    with DenseIndex.load(other, writable=True) as idx:
        idx.remove(["d5"])
        idx.save(tmp_path / "fewer")
    m = read_manifest(folder)
    fewer = read_manifest(tmp_path / "fewer")
    shutil.rmtree(folder / "lexical")
    shutil.copytree(tmp_path / "fewer" / "lexical", folder / "lexical")
    m.checksums.update({f: fewer.checksums[f] for f in fewer.lexical.files})
    (folder / "manifest.json").write_text(m.model_dump_json())
    with pytest.raises(IndexCorruptError, match="different rows"):
        DenseIndex.load(folder)


def test_update_search_defaults(tmp_path):
    folder = _build(tmp_path / "index")
    update_search_defaults(folder, search_mode="lexical", fusion=FusionSettings(method="convex", alpha=0.3))
    with DenseIndex.load(folder) as idx:  # the manifest is not checksummed: still loads
        assert idx.manifest.search_mode == "lexical" and idx.manifest.fusion.alpha == 0.3


# ---- densekit tune fusion ---------------------------------------------------------------------
def test_tune_fusion_refuses_test_split(tiny_beir, monkeypatch):
    from densekit.cli.main import app
    from densekit.eval.fusion_tune import check_tuning_split, tune_fusion

    monkeypatch.setenv("DENSEKIT_DATA_DIR", str(tiny_beir.parent))
    for split in ("test", "TEST", "dev-test"):
        with pytest.raises(ConfigError, match="never on"):
            check_tuning_split(split)
    with pytest.raises(ConfigError, match="never on"):
        tune_fusion(str(tiny_beir), "test", settings=None)
    result = CliRunner().invoke(app, ["tune", "fusion", "--data", str(tiny_beir), "--split", "test"])
    assert result.exit_code != 0 and "never on 'test'" in str(result.exception)


def test_tune_fusion_on_dev_split_writes_the_index(tiny_beir, tiny_st_model_dir, tmp_path, monkeypatch):
    from service_support import build_index

    from densekit.cli.main import app

    shutil.copy(tiny_beir / "qrels" / "test.tsv", tiny_beir / "qrels" / "dev.tsv")
    index = build_index(tiny_st_model_dir, tmp_path / "index", lexical=True)
    monkeypatch.setenv("DENSEKIT_DATA_DIR", str(tiny_beir.parent))
    out = tmp_path / "tune.json"
    args = ["tune", "fusion", "--data", str(tiny_beir), "--split", "dev", "--index", str(index), "--write", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    tuned = json.loads(out.read_text())
    assert len(tuned["grid"]) == 12 and tuned["best"]["ndcg@10"] == max(g["ndcg@10"] for g in tuned["grid"])
    m = read_manifest(index)
    assert m.search_mode == "hybrid" and m.fusion.method == tuned["best"]["method"]
