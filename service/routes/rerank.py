"""Reranking in the two shapes clients speak: TEI's `POST /rerank` and Cohere/Jina's
`POST /v1/rerank`. Both sort by score, best first."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from densekit.service.auth import require_api_key
from densekit.service.compat_schemas import CohereRerankRequest, CohereRerankResponse, RankOut, RerankRequest
from densekit.service.deps import Ready, check_text, check_texts, ready_state, settings_of, timings
from densekit.service.engines import RerankEngine
from densekit.service.errors import ApiError
from densekit.service.middleware import REQUEST_ID_KEY
from densekit.service.responses import FastJSON
from densekit.service.schemas import errors

router = APIRouter(tags=["rerank"], dependencies=[Depends(require_api_key)])


def _no_reranker() -> ApiError:
    # 503 (the API's code for "cannot serve this now"), with its own error_type: it is a
    # property of this deployment, not a passing state like loading.
    return ApiError(503, "no_reranker", "this server has no reranker loaded (start it with --reranker)")


def _scorer(request: Request, query: str, texts: list[str], what: str) -> tuple[Ready, RerankEngine]:
    """The loaded service and its reranker engine (503 without one), once the query and
    the texts pass the input limits."""
    state = ready_state(request)
    if state.rerank is None:
        raise _no_reranker()
    s = settings_of(request)
    check_text(query, s, "query")
    check_texts(texts, s, what)
    return state, state.rerank


@router.post(
    "/rerank",
    response_model=list[RankOut],
    summary="score texts against a query (text-embeddings-inference shape)",
    responses=errors(400, 401, 413, 422, 429, 503),
)
async def rerank(req: RerankRequest, request: Request):
    _, engine = _scorer(request, req.query, req.texts, "texts")
    result = await engine.score(req.query, req.texts, timings(request))
    scores = engine.raw(result.scores) if req.raw_scores else engine.probabilities(result.scores)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    if req.return_text:
        return FastJSON([{"index": i, "score": scores[i], "text": req.texts[i]} for i in order])
    return FastJSON([{"index": i, "score": scores[i]} for i in order])


@router.post(
    "/v1/rerank",
    response_model=CohereRerankResponse,
    summary="rerank documents for a query (Cohere / Jina shape)",
    responses=errors(400, 401, 413, 422, 429, 503),
)
async def rerank_v1(req: CohereRerankRequest, request: Request):
    texts = [d if isinstance(d, str) else d.text for d in req.documents]
    state, engine = _scorer(request, req.query, texts, "documents")
    result = await engine.score(req.query, texts, timings(request), count_tokens=True)
    scores = engine.probabilities(result.scores)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    if req.top_n is not None:
        order = order[: req.top_n]
    results: list[dict[str, object]] = []
    for i in order:
        item: dict[str, object] = {"index": i, "relevance_score": scores[i]}
        if req.return_documents:
            item["document"] = {"text": texts[i]}
        results.append(item)
    return FastJSON(
        {
            "id": request.scope.get(REQUEST_ID_KEY, ""),
            "model": getattr(state.reranker, "name", "reranker"),
            "results": results,
            "usage": {"total_tokens": int(result.tokens or 0)},
        }
    )
