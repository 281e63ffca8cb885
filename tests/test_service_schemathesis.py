"""Schemathesis (property-based) against the app's own OpenAPI schema, over real HTTP
(uvicorn on 127.0.0.1 in a thread): for every generated request, no 5xx, a documented status
code and content type, and a body that matches the documented response schema.

Bounded: a fixed number of examples per operation (DENSEKIT_SCHEMATHESIS_EXAMPLES, default
15), derandomised so a CI failure reproduces."""

from __future__ import annotations

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
