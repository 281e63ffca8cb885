"""The official `openai` and `cohere` Python clients against a real server (uvicorn on
127.0.0.1, real sockets): embeddings as floats and base64, Cohere rerank v1 and v2, and the
error paths, where the SDK must raise with the server's own message."""

from __future__ import annotations

import base64
import shutil

import numpy as np
import pytest
from service_support import build_index, make_state, serve_in_thread

openai = pytest.importorskip("openai")
cohere = pytest.importorskip("cohere")

KEY = "client-key"
MODEL = "tiny-embedder"
RERANKER = "tiny-reranker"
QUERY = "capital city of Italy"
DOCS = ["dogs are loyal", "Rome is the capital city of Italy", "Paris is in France"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_st_model_dir, tiny_ce_dir):
    from densekit.encoder import Encoder
    from densekit.rerankers import load_reranker
    from densekit.service.app import create_app
    from densekit.settings import Settings

    base = tmp_path_factory.mktemp("clients")
    index_dir = build_index(tiny_st_model_dir, base / "index")
    settings = Settings(
        index_dir=index_dir,
        device="cpu",
        api_keys=[KEY],
        served_model_name=MODEL,
        served_reranker_name=RERANKER,
        max_client_batch=8,
    )
    encoder = Encoder(str(tiny_st_model_dir), device="cpu")
    state = make_state(settings, encoder, load_reranker(str(tiny_ce_dir), device="cpu"))
    with serve_in_thread(create_app(settings, state), start_timeout=30) as url:
        yield url, encoder
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key=KEY, max_retries=0, timeout=30)


# ---- openai --------------------------------------------------------------------------------------
def test_openai_embeddings_float_and_base64(server, oai):
    encoder = server[1]
    texts = ["hello world", "cats purr"]
    as_float = oai.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert as_float.model == MODEL and [d.index for d in as_float.data] == [0, 1]
    vectors = np.array([d.embedding for d in as_float.data], dtype=np.float32)
    expected = encoder.model.encode(texts, normalize_embeddings=True)
    assert np.allclose(vectors, expected, atol=1e-5)
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens > 0
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    default = oai.embeddings.create(model=MODEL, input=texts)
    assert np.allclose(np.array([d.embedding for d in default.data], dtype=np.float32), vectors, atol=1e-6)
    # Asked for explicitly, base64 comes back as the string the server sent: little-endian float32.
    one = oai.embeddings.create(model=MODEL, input=texts[0], encoding_format="base64")
    assert len(one.data) == 1 and isinstance(one.data[0].embedding, str)
    assert np.allclose(np.frombuffer(base64.b64decode(one.data[0].embedding), dtype="<f4"), vectors[0], atol=1e-6)


def test_openai_errors_carry_the_servers_message(server, oai):
    with pytest.raises(openai.NotFoundError) as e:
        oai.embeddings.create(model="text-embedding-3-small", input="x")
    assert e.value.status_code == 404 and e.value.code == "model_not_found" and e.value.param == "model"
    assert f"this server serves `{MODEL}`" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        oai.embeddings.create(model=MODEL, input=[])
    assert e.value.code == "empty_input" and "no input given" in str(e.value)
    with pytest.raises(openai.UnprocessableEntityError) as e:
        oai.embeddings.create(model=MODEL, input="x", dimensions=7)
    assert e.value.param == "dimensions" and "32-dimensional" in str(e.value)
    with pytest.raises(openai.AuthenticationError) as e:
        openai.OpenAI(base_url=f"{server[0]}/v1", api_key="wrong", max_retries=0).embeddings.create(model=MODEL, input="x")
    assert "wrong API key" in str(e.value)


# ---- cohere --------------------------------------------------------------------------------------
def test_cohere_v2_client_rerank(server):
    co = cohere.ClientV2(base_url=server[0], api_key=KEY, timeout=30)
    res = co.rerank(model=RERANKER, query=QUERY, documents=DOCS, top_n=2)
    assert len(res.results) == 2 and res.id
    scores = [r.relevance_score for r in res.results]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert res.meta.api_version.version == "2" and res.meta.billed_units.search_units == 1
    full = co.rerank(model=RERANKER, query=QUERY, documents=DOCS)
    assert sorted(r.index for r in full.results) == [0, 1, 2]
    assert {r.index: r.relevance_score for r in full.results}[res.results[0].index] == pytest.approx(scores[0])
    # Cut to one token each, the documents score differently from the whole texts.
    cut = co.rerank(model=RERANKER, query=QUERY, documents=DOCS, max_tokens_per_doc=1)
    assert {r.index: r.relevance_score for r in cut.results} != {r.index: r.relevance_score for r in full.results}


def test_cohere_v1_client_rerank(server):
    co = cohere.Client(base_url=server[0], api_key=KEY, timeout=30)
    res = co.rerank(model=RERANKER, query=QUERY, documents=DOCS, top_n=2, return_documents=True)
    assert len(res.results) == 2
    assert res.results[0].document.text == DOCS[res.results[0].index]
    assert res.results[0].relevance_score >= res.results[1].relevance_score


def test_cohere_errors_carry_the_servers_message(server):
    co = cohere.ClientV2(base_url=server[0], api_key=KEY, timeout=30)
    with pytest.raises(cohere.errors.NotFoundError) as e:
        co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert e.value.status_code == 404 and e.value.body["error_type"] == "model_not_found"
    assert f"this server serves `{RERANKER}`" in str(e.value)
    with pytest.raises(cohere.errors.BadRequestError) as e:
        co.rerank(model=RERANKER, query=QUERY, documents=[])
    assert "no input given" in str(e.value)
    with pytest.raises(cohere.errors.UnauthorizedError) as e:
        cohere.ClientV2(base_url=server[0], api_key="wrong").rerank(model=RERANKER, query=QUERY, documents=DOCS)
    assert "wrong API key" in str(e.value)
    v1 = cohere.Client(base_url=server[0], api_key=KEY, timeout=30)
    with pytest.raises(cohere.errors.NotFoundError) as e:
        v1.rerank(model="rerank-english-v3.0", query=QUERY, documents=DOCS)
    assert e.value.body["error"]["code"] == "model_not_found"  # /v1/: OpenAI's error object
