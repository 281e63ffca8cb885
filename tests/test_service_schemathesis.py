"""Schemathesis (property-based) against the app's own OpenAPI schema, over real HTTP
(uvicorn on 127.0.0.1 in a thread): for every generated request, no 5xx, a documented status
code and content type, and a body that matches the documented response schema.

Bounded: a fixed number of examples per operation (DENSEKIT_SCHEMATHESIS_EXAMPLES, default
15), derandomised so a CI failure reproduces."""

from __future__ import annotations

import math
import os
import shutil

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from service_support import FakeReranker, build_index, make_state, serve_in_thread  # noqa: E402

from densekit.service.metrics import API_ROUTES  # noqa: E402

EXAMPLES = int(os.environ.get("DENSEKIT_SCHEMATHESIS_EXAMPLES", "15"))


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, tiny_st_model_dir):
    from densekit.encoder import Encoder
    from densekit.service.app import create_app
    from densekit.settings import Settings

    base = tmp_path_factory.mktemp("schemathesis")
    index_dir = build_index(tiny_st_model_dir, base / "index")
    settings = Settings(index_dir=index_dir, device="cpu", max_top_k=50, max_client_batch=8, max_text_chars=2000, max_payload_bytes=200_000)
    app = create_app(settings, make_state(settings, Encoder(str(tiny_st_model_dir), device="cpu"), FakeReranker()))
    with serve_in_thread(app, start_timeout=30) as url:
        yield url
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def api_schema(live_server):
    return schemathesis.openapi.from_url(f"{live_server}/openapi.json")


# (Iterated by hand: schemathesis' lazy pytest loader does not run under pytest 9.)
@pytest.mark.parametrize("path", API_ROUTES)
def test_api_conforms_to_its_schema(api_schema, path):
    from hypothesis import given

    ops = [r.ok() for r in api_schema.get_all_operations() if r.ok().path == path]
    assert ops, f"{path} is not in the OpenAPI schema"
    for op in ops:

        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(
                timeout=30,
                checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
            )

        check()


# ---- stateful fuzzing ----------------------------------------------------------------------
# A Hypothesis state machine drives the real server over HTTP: upserts, searches (with and
# without filters), reads and deletes of the documents it wrote, and the model-facing routes,
# with text that holds lone surrogates, NULs and bidi/BOM characters, metadata with huge
# integers, NaN/Infinity and deep nesting, and filters built from the same pieces. The property:
# no answer is ever a 5xx, and a write's answer is the truth (a 200 upsert can be read back, a
# 200 delete cannot). Bounded by DENSEKIT_FUZZ_EXAMPLES runs of at most FUZZ_STEPS steps.
FUZZ_EXAMPLES = int(os.environ.get("DENSEKIT_FUZZ_EXAMPLES", "25"))
FUZZ_STEPS = 12


def _fuzz_strategies():
    from hypothesis import strategies as st

    surrogates = st.integers(0xD800, 0xDFFF).map(chr)
    odd = st.sampled_from(["\x00", "\u202e", "\ufeff", "\x7f", "/", "%2F", "..", ".", "\n", "😀", "e\u0301"])
    text = st.one_of(
        st.text(max_size=20),
        st.lists(st.one_of(st.text(max_size=4), surrogates, odd), min_size=1, max_size=8).map("".join),
    )
    huge_ints = st.one_of(st.just(2**64), st.just(-(2**63) - 1), st.integers(2**63, 2**90), st.integers(-(2**90), -(2**63) - 1))
    special_floats = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0])
    # Nesting deeper than a JSON encoder's recursion: a marker the request writer expands.
    deep = st.sampled_from([64, 254, 256, 300, 1200, 5000]).map(lambda d: DeepJSON(d))
    scalar = st.one_of(text, st.integers(-1000, 1000), huge_ints, st.floats(allow_nan=False), special_floats, st.booleans(), st.none())
    json_value = (
        st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8) | deep
    )
    metadata = st.one_of(st.dictionaries(text, json_value, max_size=4), st.fixed_dictionaries({"lang": st.sampled_from(["en", "fr"])}))
    field = st.one_of(st.sampled_from(["lang", "year", "a.b"]), text)
    condition = st.one_of(
        json_value,
        st.dictionaries(st.sampled_from(["$in", "$ne", "$gt", "$gte", "$lt", "$lte", "$eq", "$regex"]), json_value, min_size=1, max_size=2),
    )
    flt = (
        st.recursive(
            st.dictionaries(field, condition, max_size=2),
            lambda inner: st.dictionaries(st.sampled_from(["$and", "$or", "$not"]), st.lists(inner, max_size=3), min_size=1, max_size=1),
            max_leaves=5,
        )
        | deep
        | st.none()
    )
    return text, metadata, flt


class DeepJSON:
    """A value nested `depth` levels deep, written into the request text directly."""

    def __init__(self, depth: int):
        self.depth = depth

    def __repr__(self) -> str:
        return f"DeepJSON({self.depth})"


def _request_body(payload) -> bytes:
    """JSON text as a hostile client writes it: lone surrogates as \\ud800 escapes, NaN and
    Infinity as Python writes them, DeepJSON markers expanded to nested lists."""
    import json

    deep: dict[str, int] = {}

    def mark(value):
        if isinstance(value, DeepJSON):
            key = f"__deep_{len(deep)}__"
            deep[key] = value.depth
            return key
        if isinstance(value, dict):
            return {(k if isinstance(k, str) else str(k)): mark(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    out = json.dumps(mark(payload))
    for key, depth in deep.items():
        out = out.replace(f'"{key}"', "[" * depth + "1" + "]" * depth)
    return out.encode("ascii")


def test_stateful_fuzz_never_answers_5xx(live_server):
    statuses = run_stateful_fuzz(live_server, FUZZ_EXAMPLES)
    assert not [s for s in statuses if s >= 500], statuses


@pytest.mark.slow
def test_stateful_fuzz_long_run(live_server):
    """The same machine, ten times as many runs (CI)."""
    statuses = run_stateful_fuzz(live_server, FUZZ_EXAMPLES * 10)
    assert not [s for s in statuses if s >= 500], statuses


def run_stateful_fuzz(live_server: str, examples: int) -> dict[int, int]:
    """Run the state machine `examples` times; the count of answers by status."""
    import itertools
    from urllib.parse import quote

    import httpx
    from hypothesis import strategies as st
    from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, multiple, rule, run_state_machine_as_test

    text, metadata, flt = _fuzz_strategies()
    counter = itertools.count()
    seen: dict[int, int] = {}

    class Service(RuleBasedStateMachine):
        written = Bundle("written")

        def __init__(self):
            super().__init__()
            self.http = httpx.Client(base_url=live_server, timeout=60)

        def teardown(self):
            self.http.close()

        def call(self, method: str, path: str, payload=None) -> httpx.Response:
            body = _request_body(payload) if payload is not None else None
            r = self.http.request(method, path, content=body, headers={"content-type": "application/json"} if body else {})
            seen[r.status_code] = seen.get(r.status_code, 0) + 1
            assert r.status_code < 500, f"{method} {path} -> {r.status_code}: {r.text[:300]} (sent {body[:300] if body else b''!r})"
            return r

        @staticmethod
        def doc_path(doc_id: str) -> str:
            return "/documents/" + quote(doc_id, safe="", errors="surrogatepass")

        @rule(target=written, suffix=text, title=text, body=text, md=metadata)
        def upsert(self, suffix, title, body, md):
            doc_id = f"fz{next(counter)}-{suffix}"
            r = self.call("POST", "/documents", {"documents": [{"id": doc_id, "title": title, "text": body, "metadata": md}]})
            if r.status_code == 200:
                got = self.call("GET", self.doc_path(doc_id))
                assert got.status_code == 200 and got.json()["id"] == doc_id, got.text[:300]
                return doc_id
            return multiple()

        @rule(query=text, where=flt, top_k=st.sampled_from([1, 5, 50]), batch=st.booleans())
        def search(self, query, where, top_k, batch):
            payload = {"queries": [query, "cats"]} if batch else {"query": query}
            payload.update({"top_k": top_k} | ({"filter": where} if where is not None else {}))
            self.call("POST", "/search", payload)

        @rule(doc_id=written, lang=st.sampled_from(["en", "fr"]))
        def search_filtered(self, doc_id, lang):
            r = self.call("POST", "/search", {"query": "cats", "top_k": 50, "filter": {"lang": lang}})
            if r.status_code == 200:
                for hit in r.json()["hits"]:
                    if hit.get("metadata") is not None:
                        assert hit["metadata"].get("lang") == lang, hit

        @rule(doc_id=written)
        def get(self, doc_id):
            self.call("GET", self.doc_path(doc_id))

        @rule(doc_id=consumes(written))
        def delete(self, doc_id):
            r = self.call("DELETE", self.doc_path(doc_id))
            if r.status_code == 200:
                assert self.call("GET", self.doc_path(doc_id)).status_code == 404

        @rule(doc_id=text)
        def hostile_id(self, doc_id):
            self.call("GET", self.doc_path(doc_id))
            self.call("DELETE", self.doc_path(doc_id))

        @rule(inputs=st.lists(text, min_size=1, max_size=3))
        def embed(self, inputs):
            self.call("POST", "/embed", {"inputs": inputs})
            self.call("POST", "/v1/embeddings", {"input": inputs})

        @rule(query=text, docs=st.lists(text, min_size=1, max_size=3))
        def rerank(self, query, docs):
            self.call("POST", "/rerank", {"query": query, "texts": docs})
            self.call("POST", "/v1/rerank", {"query": query, "documents": docs})

    run_state_machine_as_test(
        Service,
        settings=settings(
            max_examples=examples,
            stateful_step_count=FUZZ_STEPS,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    print(f"stateful fuzz: {sum(seen.values())} requests, statuses {dict(sorted(seen.items()))}")
    return seen
