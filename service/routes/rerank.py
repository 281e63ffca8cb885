"""Reranking in the shapes clients speak: TEI's `POST /rerank`, Cohere/Jina's `POST /v1/rerank`
and Cohere's v2 `POST /v2/rerank`. All sort by score, best first. Without a reranker they
answer 422 `no_reranker` (a missing capability: retrying cannot help)."""

from __future__ import annotations

import asyncio
from functools import lru_cache

from fastapi import APIRouter, Depends, Request

from densekit.service.auth import require_api_key
from densekit.service.compat_schemas import (
    CohereRerankRequest,
    CohereRerankResponse,
    CohereV2RerankRequest,
    CohereV2RerankResponse,
    RankOut,
    RerankRequest,
    compat_errors,
)
from densekit.service.deps import Ready, check_text, check_texts, ready_state, settings_of, timings
from densekit.service.engines import RerankEngine
from densekit.service.errors import no_reranker
from densekit.service.middleware import REQUEST_ID_KEY
from densekit.service.responses import FastJSON
from densekit.service.served_names import check_model, reranker_name
from densekit.service.token_count import TokenCounter

router = APIRouter(tags=["rerank"], dependencies=[Depends(require_api_key)])

# Above this many characters, cutting documents to max_tokens_per_doc runs off the event loop.
_INLINE_TRUNCATE_CHARS = 4096


def _scorer(request: Request, query: str, texts: list[str], what: str, model: str | None = None) -> tuple[Ready, RerankEngine]:
    """The loaded service and its reranker engine (422 no_reranker without one), once the
    model name, the query and the texts pass the checks."""
    state = ready_state(request)
    if state.rerank is None:
        raise no_reranker()
    s = settings_of(request)
    check_model(model, reranker_name(state, s) or "reranker", s)
    check_text(query, s, "query")
    check_texts(texts, s, what)
    return state, state.rerank


def _ranked(scores: list[float], top_n: int | None) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return order if top_n is None else order[:top_n]


@lru_cache(maxsize=4)
def _truncator(reranker: object) -> TokenCounter:
    """A private copy of the reranker's tokenizer (the model thread uses the model's own)."""
    hf = getattr(reranker, "tokenizer", None) or getattr(getattr(reranker, "model", None), "tokenizer", None)
    return TokenCounter(hf, None)


async def _cut(reranker: object, texts: list[str], max_tokens: int | None) -> list[str]:
    if max_tokens is None:
        return texts
    counter = _truncator(reranker)
    if sum(len(t) for t in texts) <= _INLINE_TRUNCATE_CHARS:
        return counter.truncate(texts, max_tokens)
    return await asyncio.get_running_loop().run_in_executor(None, counter.truncate, texts, max_tokens)


@router.post(
    "/rerank",
    response_model=list[RankOut],
    summary="score texts against a query (text-embeddings-inference shape)",
    responses=compat_errors(400, 401, 413, 422, 429, 503),
)
async def rerank(req: RerankRequest, request: Request):
    _, engine = _scorer(request, req.query, req.texts, "texts")
    result = await engine.score(req.query, req.texts, timings(request))
    scores = engine.raw(result.scores) if req.raw_scores else engine.probabilities(result.scores)
    order = _ranked(scores, None)
    if req.return_text:
        return FastJSON([{"index": i, "score": scores[i], "text": req.texts[i]} for i in order])
    return FastJSON([{"index": i, "score": scores[i]} for i in order])


@router.post(
    "/v1/rerank",
    response_model=CohereRerankResponse,
    summary="rerank documents for a query (Cohere v1 / Jina shape)",
    responses=compat_errors(400, 401, 404, 413, 422, 429, 503, openai=True),
)
async def rerank_v1(req: CohereRerankRequest, request: Request):
    texts = [d if isinstance(d, str) else d.text for d in req.documents]
    state, engine = _scorer(request, req.query, texts, "documents", req.model)
    result = await engine.score(req.query, texts, timings(request), count_tokens=True)
    scores = engine.probabilities(result.scores)
    results: list[dict[str, object]] = []
    for i in _ranked(scores, req.top_n):
        item: dict[str, object] = {"index": i, "relevance_score": scores[i]}
        if req.return_documents:
            item["document"] = {"text": texts[i]}
        results.append(item)
    return FastJSON(
        {
            "id": request.scope.get(REQUEST_ID_KEY, ""),
            "model": reranker_name(state, settings_of(request)),
            "results": results,
            "usage": {"total_tokens": int(result.tokens or 0)},
        }
    )


@router.post(
    "/v2/rerank",
    response_model=CohereV2RerankResponse,
    summary="rerank documents for a query (Cohere v2 shape; works with cohere.ClientV2)",
    responses=compat_errors(400, 401, 404, 413, 422, 429, 503),
)
async def rerank_v2(req: CohereV2RerankRequest, request: Request):
    state, engine = _scorer(request, req.query, req.documents, "documents", req.model)
    scored = await _cut(state.reranker, req.documents, req.max_tokens_per_doc)
    result = await engine.score(req.query, scored, timings(request))
    scores = engine.probabilities(result.scores)
    results: list[dict[str, object]] = []
    for i in _ranked(scores, req.top_n):
        item: dict[str, object] = {"index": i, "relevance_score": scores[i]}
        if req.return_documents:
            item["document"] = {"text": req.documents[i]}
        results.append(item)
    return FastJSON(
        {
            "id": request.scope.get(REQUEST_ID_KEY, ""),
            "results": results,
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
        }
    )
