"""Metadata filters (densekit.index.filters): the parser, the SQL evaluation against a
Python reference on random metadata, filtered faiss search against brute force, live
upserts/deletes, and POST /search with a filter over HTTP."""

from __future__ import annotations

import math
import random
import shutil

import faiss
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from densekit.errors import ConfigError
from densekit.index.dense_index import DenseIndex
from densekit.index.filters import And, Compare, Or, Value, parse_filter, to_sql
from densekit.index.manifest import EncoderSpec

DIM = 16
N = 800
SPEC = EncoderSpec(name="synthetic", dim=DIM)
COLORS = ["red", "green", "blue", "1"]


# ---- random metadata and a reference evaluator ---------------------------------------------
def random_metadata(rng: random.Random) -> dict:
    """Keys that are sometimes missing and values of mixed JSON types, so type-strict equality
    and missing-key semantics are exercised."""
    md: dict = {}
    if rng.random() < 0.85:
        md["color"] = rng.choice(COLORS)
    if rng.random() < 0.85:
        md["year"] = rng.choice([rng.randint(2000, 2024), float(rng.randint(2000, 2024)) + rng.choice([0.0, 0.5])])
    if rng.random() < 0.7:
        md["flag"] = rng.choice([True, False, None, 1, 0])
    if rng.random() < 0.3:
        md["a.b"] = rng.choice(["x", "y"])
    if rng.random() < 0.1:
        md["nested"] = {"color": "red"}
    return md


def _same(stored, want) -> bool:
    """JSON equality: booleans and numbers never equal each other, 1 equals 1.0."""
    if isinstance(want, bool) or isinstance(stored, bool):
        return isinstance(want, bool) and isinstance(stored, bool) and want is stored
    if want is None or stored is None:
        return want is None and stored is None
    if isinstance(want, str) or isinstance(stored, str):
        return isinstance(want, str) and isinstance(stored, str) and want == stored
    if isinstance(want, (int, float)) and isinstance(stored, (int, float)):
        return want == stored
    return False


_CMP = {"$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b, "$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b}


def reference_match(md: dict, flt: dict) -> bool:
    """The documented semantics, written plainly in Python (independent of the SQL)."""
    for key, cond in flt.items():
        if key == "$and":
            ok = all(reference_match(md, f) for f in cond)
        elif key == "$or":
            ok = any(reference_match(md, f) for f in cond)
        elif isinstance(cond, dict):
            ok = True
            for op, arg in cond.items():
                present = key in md
                v = md.get(key)
                if op == "$eq":
                    ok &= present and _same(v, arg)
                elif op == "$ne":
                    ok &= not (present and _same(v, arg))
                elif op == "$in":
                    ok &= present and any(_same(v, a) for a in arg)
                else:
                    number = isinstance(v, (int, float)) and not isinstance(v, bool)
                    ok &= present and number and _CMP[op](v, arg)
        else:
            ok = key in md and _same(md[key], cond)
        if not ok:
            return False
    return True


SCALARS = st.one_of(
    st.sampled_from(COLORS),
    st.integers(1999, 2025),
    st.sampled_from([2010.5, 2020.0]),
    st.booleans(),
    st.none(),
    st.just(1),
    st.just(0),
)
FIELDS = st.sampled_from(["color", "year", "flag", "a.b", "missing", "nested"])


def _condition():
    return st.one_of(
        SCALARS,
        st.fixed_dictionaries({"$in": st.lists(SCALARS, min_size=1, max_size=4)}),
        st.fixed_dictionaries({"$ne": SCALARS}),
        st.fixed_dictionaries({"$eq": SCALARS}),
        st.dictionaries(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), st.integers(1998, 2026) | st.just(2012.5), min_size=1),
    )


FILTERS = st.recursive(
    st.dictionaries(FIELDS, _condition(), min_size=1, max_size=2),
    lambda inner: st.one_of(
        st.fixed_dictionaries({"$and": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"$or": st.lists(inner, min_size=1, max_size=3)}),
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def world():
    rng = random.Random(7)
    metadata = [random_metadata(rng) for _ in range(N)]
    nrng = np.random.default_rng(7)
    vectors = nrng.standard_normal((N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = nrng.standard_normal((5, DIM)).astype(np.float32)
    ids = [f"doc{i}" for i in range(N)]
    corpus = {d: {"title": "", "text": f"text {i}", "metadata": metadata[i]} for i, d in enumerate(ids)}
    return vectors, queries, ids, corpus, metadata


def build(world, kind="flat", bp=None, sp=None) -> DenseIndex:
    vectors, _, ids, corpus, _ = world
    return DenseIndex.build(vectors, corpus, ids, SPEC, kind=kind, build_params=bp, search_params=sp)


@pytest.fixture(scope="module")
def flat(world):
    with build(world) as idx:
        yield idx


@pytest.fixture(scope="module")
def ivf(world):
    with build(world, "ivf", {"nlist": 16}, {"nprobe": 2}) as idx:
        yield idx


def brute_force(world, flt: dict, k: int) -> tuple[list[list[str]], list[np.ndarray]]:
    """Each query's top-k ids and scores among the documents the reference matches."""
    vectors, queries, ids, _, metadata = world
    keep = np.array([i for i in range(N) if reference_match(metadata[i], flt)], dtype=np.int64)
    out_ids, out_scores = [], []
    for q in queries:
        scores = vectors[keep] @ q if keep.size else np.zeros(0, dtype=np.float32)
        order = np.argsort(-scores, kind="stable")[:k]
        out_ids.append([ids[int(keep[j])] for j in order])
        out_scores.append(scores[order])
    return out_ids, out_scores


def assert_same_topk(hits, world, flt: dict, k: int) -> None:
    """The same ids in the same order; where faiss and numpy round a near-tie differently, the
    same scores and only matching documents."""
    want_ids, want_scores = brute_force(world, flt, k)
    metadata = world[4]
    for got, ids, scores in zip(hits, want_ids, want_scores):
        if [h.id for h in got] != ids:
            assert len(got) == len(ids)
            assert np.allclose([h.score for h in got], scores, atol=1e-5)
            assert all(reference_match(metadata[int(h.id[3:])], flt) for h in got)


# ---- the parser ------------------------------------------------------------------------------
def test_parse_forms():
    assert parse_filter(None) is None and parse_filter({}) is None
    assert parse_filter({"lang": "en"}) == Compare("lang", "eq", (Value("string", "en"),))
    got = parse_filter({"year": {"$gte": 2020, "$lt": 2024}, "$or": [{"a": True}, {"a": None}]})
    assert got == And(
        (
            Compare("year", "gte", (Value("number", 2020),)),
            Compare("year", "lt", (Value("number", 2024),)),
            Or((Compare("a", "eq", (Value("bool", True),)), Compare("a", "eq", (Value("null", None),)))),
        )
    )
    # true and 1 are equal in Python but different filters (the service groups equal filters).
    assert parse_filter({"a": True}) != parse_filter({"a": 1})
    assert hash(parse_filter({"a": {"$in": ["x", 2]}})) == hash(parse_filter({"a": {"$in": ["x", 2]}}))


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ([1, 2], "filter"),
        ({"a": [1, 2]}, "filter.a"),
        ({"a": {"b": 1}}, "filter.a.b"),
        ({"a": {}}, "filter.a"),
        ({"a": {"$regex": "x"}}, "filter.a.$regex"),
        ({"$not": {"a": 1}}, "filter.$not"),
        ({"$and": {"a": 1}}, "filter.$and"),
        ({"$or": []}, "filter.$or"),
        ({"$or": [{"a": 1}, 5]}, "filter.$or[1]"),
        ({"a": {"$in": "x"}}, "filter.a.$in"),
        ({"a": {"$in": []}}, "filter.a.$in"),
        ({"a": {"$in": [1, [2]]}}, "filter.a.$in[1]"),
        ({"a": {"$gt": "2020"}}, "filter.a.$gt"),
        ({"a": {"$gte": True}}, "filter.a.$gte"),
        ({"a": {"$lt": None}}, "filter.a.$lt"),
        ({"a": 2**64}, "filter.a"),
        ({"a": {"$in": [-(2**63) - 1]}}, "filter.a.$in[0]"),
        ({"a": math.nan}, "filter.a"),
        ({"a": math.inf}, "filter.a"),
        ({"a": "\ud800"}, "filter.a"),
        ({"\udfff": 1}, "filter.<field name>"),
        ({"": 1}, "filter"),
        ({"x" * 300: 1}, "filter"),
        ({"a": {"$in": list(range(2000))}}, "filter.a.$in"),
    ],
)
def test_bad_filters_name_the_part(raw, where):
    with pytest.raises(ConfigError) as info:
        parse_filter(raw)
    assert info.value.field == where, info.value


def test_depth_and_size_are_bounded():
    deep: dict = {"a": 1}
    for _ in range(50):
        deep = {"$and": [deep]}
    with pytest.raises(ConfigError, match="deeper"):
        parse_filter(deep)
    many = {"$or": [{"a": {"$in": list(range(1000))}} for _ in range(5)]}
    with pytest.raises(ConfigError, match="more than"):
        parse_filter(many)


# ---- SQL against the reference ---------------------------------------------------------------
@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flt=FILTERS)
def test_sql_matches_the_reference(flat, world, flt):
    metadata = world[4]
    condition, params = to_sql(parse_filter(flt))
    got = set(flat.docstore.rows_where(condition, params))
    want = {i for i in range(N) if reference_match(metadata[i], flt)}
    assert got == want


def test_keys_with_dots_and_quotes_are_literal(tmp_path):
    from densekit.index.docstore import DocStore

    store = DocStore(tmp_path / "d.sqlite")
    store.add_many([(0, "x", "", "", {"a.b": 1, 'q"k': "v"}), (1, "y", "", "", {"a": {"b": 1}})])
    for flt, rows in [({"a.b": 1}, [0]), ({'q"k': "v"}, [0]), ({"a.b": {"$ne": 1}}, [1])]:
        assert store.rows_where(*to_sql(parse_filter(flt))) == rows
    store.close()


# ---- filtered search against brute force -----------------------------------------------------
@settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flt=FILTERS, k=st.sampled_from([1, 5, 37]))
def test_flat_filtered_topk_is_the_brute_force_topk(flat, world, flt, k):
    assert_same_topk(flat.search(world[1], k, where=parse_filter(flt)), world, flt, k)


@settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flt=FILTERS, k=st.sampled_from([3, 25]))
def test_ivf_with_every_list_probed_is_exact(ivf, world, flt, k):
    assert_same_topk(ivf.search(world[1], k, {"nprobe": 16}, where=parse_filter(flt)), world, flt, k)


KIND_PARAMS = {
    "ivf": ({"nlist": 16}, {"nprobe": 1}),
    "ivfpq": ({"nlist": 16, "pq_m": 4, "pq_nbits": 6}, {"nprobe": 1}),
    "opq-ivfpq": ({"nlist": 16, "pq_m": 4, "pq_nbits": 6, "opq_niter": 3}, {"nprobe": 1}),
    "hnsw": ({"hnsw_m": 8, "ef_construction": 40}, {"ef_search": 8}),
}


@pytest.mark.parametrize("kind", list(KIND_PARAMS))
def test_every_kind_fills_topk_from_matching_documents(world, kind):
    """Approximate kinds at their stingiest settings: a rare filter still fills top_k (a query
    answered short is searched again exhaustively), and every hit matches."""
    bp, sp = KIND_PARAMS[kind]
    metadata = world[4]
    rare = {"color": "1", "year": {"$gte": 2018}}
    matching = {f"doc{i}" for i in range(N) if reference_match(metadata[i], rare)}
    assert 10 < len(matching) < 80
    with build(world, kind, bp, sp) as idx:
        for k in (10, 500):
            hits = idx.search(world[1], k, where=parse_filter(rare))
            for per_query in hits:
                ids = [h.id for h in per_query]
                assert set(ids) <= matching
                assert len(ids) == min(k, len(matching)) and len(set(ids)) == len(ids)
        assert idx.search(world[1], 5, where=parse_filter({"color": "purple"})) == [[] for _ in range(len(world[1]))]


def test_a_kind_without_selector_support_is_named(world):
    with build(world) as idx:
        idx.faiss = faiss.IndexIDMap2(faiss.IndexLSH(DIM, 64))
        idx.manifest.kind = "lsh"
        with pytest.raises(ConfigError, match="'lsh' index") as info:
            idx.search(world[1], 3, where=parse_filter({"color": "red"}))
        assert info.value.field == "filter"


# ---- live upserts and deletes ----------------------------------------------------------------
def test_filters_follow_live_upserts_deletes_and_restarts(world, tmp_path):
    from densekit.index.live import Delete, LiveIndex, Upsert

    vectors, queries, *_ = world
    with build(world) as idx:
        idx.save(tmp_path / "index")
    live = LiveIndex.open(tmp_path / "index")
    tagged = {"tag": "fresh"}
    assert live.index.search(queries, 5, where=parse_filter(tagged)) == [[] for _ in queries]
    # Two new documents and one replaced (its row is reused), then one of them deleted.
    docs = [{"id": f"new{i}", "text": "t", "metadata": {"tag": "fresh", "n": i}} for i in range(2)]
    docs.append({"id": "doc3", "text": "t", "metadata": {"tag": "fresh", "n": 9}})
    results = live.write([Upsert(docs, vectors[:3].copy()), Delete(["new0"])])
    assert all(not isinstance(r, Exception) for r in results)

    def tagged_ids(index) -> set[str]:
        return {h.id for q in index.search(queries, 50, where=parse_filter(tagged)) for h in q}

    assert tagged_ids(live.index) == {"new1", "doc3"}
    assert {h.id for q in live.index.search(queries, 50, where=parse_filter({"n": {"$gt": 1}})) for h in q} == {"doc3"}
    live.close(snapshot=False)  # the log alone carries the writes over the restart
    live = LiveIndex.open(tmp_path / "index")
    assert tagged_ids(live.index) == {"new1", "doc3"}
    live.close()


# ---- HTTP ------------------------------------------------------------------------------------
@pytest.fixture()
def client(tmp_path, tiny_st_model_dir):
    from fastapi.testclient import TestClient
    from service_support import build_index, make_state

    from densekit.encoder import Encoder
    from densekit.service.app import create_app
    from densekit.settings import Settings

    index_dir = build_index(tiny_st_model_dir, tmp_path / "index")
    s = Settings(index_dir=index_dir, device="cpu", max_top_k=50, max_client_batch=8)
    app = create_app(s, make_state(s, Encoder(str(tiny_st_model_dir), device="cpu")))
    with TestClient(app) as c:
        yield c
    shutil.rmtree(tmp_path, ignore_errors=True)


def _ids(body) -> list[str]:
    return [h["id"] for h in body["hits"]]


def test_http_search_with_a_filter_after_upsert_and_delete(client):
    docs = [
        {"id": "e1", "title": "Cats", "text": "Cats purr.", "metadata": {"lang": "en", "year": 2021}},
        {"id": "e2", "title": "Cats", "text": "Cats sleep.", "metadata": {"lang": "en", "year": 2019}},
        {"id": "f1", "title": "Chats", "text": "Les chats dorment.", "metadata": {"lang": "fr", "year": 2022}},
    ]
    assert client.post("/documents", json={"documents": docs}).status_code == 200
    r = client.post("/search", json={"query": "cats", "top_k": 10, "filter": {"lang": "en"}})
    assert r.status_code == 200, r.text
    assert sorted(_ids(r.json())) == ["e1", "e2"]  # top_k 10 over 9 documents: filled from the matches only
    r = client.post("/search", json={"query": "cats", "top_k": 10, "filter": {"$or": [{"lang": "fr"}, {"year": {"$gte": 2021}}]}})
    assert sorted(_ids(r.json())) == ["e1", "f1"]
    batch = client.post("/search", json={"queries": ["cats", "dogs"], "top_k": 3, "filter": {"lang": {"$in": ["fr"]}}}).json()
    assert [_ids(q) for q in batch["results"]] == [["f1"], ["f1"]]
    # No filter: the six original documents (no metadata) are found too.
    assert len(_ids(client.post("/search", json={"query": "cats", "top_k": 10}).json())) == 9

    assert client.delete("/documents/e1").status_code == 200
    client.post("/documents", json={"documents": [{"id": "f1", "text": "Rewritten.", "metadata": {"lang": "de"}}]})
    r = client.post("/search", json={"query": "cats", "top_k": 10, "filter": {"lang": {"$in": ["en", "fr"]}}})
    assert _ids(r.json()) == ["e2"]
    r = client.post("/search", json={"query": "cats", "top_k": 10, "filter": {"lang": {"$ne": "en"}}})
    assert "e2" not in _ids(r.json()) and "f1" in _ids(r.json()) and len(_ids(r.json())) == 7


@pytest.mark.parametrize(
    ("flt", "part"),
    [({"year": {"$gte": "2020"}}, "filter.year.$gte"), ({"$nor": []}, "filter.$nor"), ({"a": {"$in": [{"x": 1}]}}, "filter.a.$in[0]")],
)
def test_http_bad_filter_is_422_naming_the_part(client, flt, part):
    r = client.post("/search", json={"query": "cats", "filter": flt})
    assert r.status_code == 422, r.text
    assert r.json()["error_type"] == "validation" and part in r.json()["error"]


def test_empty_and_or_hold_for_all_and_none():
    from densekit.index.filters import parse_filter, to_sql

    for raw, expect in (({"$and": [{}]}, True), ({"$and": []}, True), ({"$or": []}, False)):
        try:
            sql, params = to_sql(parse_filter(raw))
        except Exception as exc:  # a clear refusal is also acceptable, never a SQL error
            from densekit.errors import DensekitError

            assert isinstance(exc, DensekitError), exc
            continue
        import sqlite3

        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE TABLE docs (row INTEGER, metadata TEXT)")
        conn.execute("INSERT INTO docs VALUES (0, '{\"a\": 1}')")
        rows = [r for (r,) in conn.execute(f"SELECT row FROM docs WHERE {sql}", params)]
        assert rows == ([0] if expect else []), raw
