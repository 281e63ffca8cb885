"""POST /search: dense retrieval over the loaded index."""
from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from service.errors import ApiError, empty_input, not_ready
from service.schemas import SearchHitOut, SearchRequest, SearchResponse

router = APIRouter(tags=["search"])


def _search_sync(state, req: SearchRequest) -> list[SearchHitOut]:
    vec = state.encoder.encode_queries([req.query])
    hits = state.index.search(vec, req.top_k, req.search_params)[0]
    docs = state.index.documents([h.row for h in hits])
    return [
        SearchHitOut(id=h.id, score=h.score, title=docs.get(h.row, {}).get("title", ""), text=docs.get(h.row, {}).get("text", ""), metadata=docs.get(h.row, {}).get("metadata", {}))
        for h in hits
    ]


@router.post(
    "/search",
    response_model=SearchResponse,
    summary="dense search over the index",
    responses={400: {"description": "empty query"}, 422: {"description": "invalid request"}, 503: {"description": "not ready"}},
)
async def search(req: SearchRequest, request: Request) -> SearchResponse:
    t0 = time.perf_counter()
    state = request.app.state.dk
    s = request.app.state.settings
    if state is None or not state.ready or state.index is None:
        raise not_ready("no index loaded" if state and state.ready else "models are still loading")
    if not req.query.strip():
        raise empty_input("query is empty")
    if req.top_k > s.max_top_k:
        raise ApiError(422, "validation", f"top_k: must be at most {s.max_top_k}")
    if len(req.query) > s.max_text_chars:
        raise ApiError(413, "payload_too_large", f"query is {len(req.query)} characters, the limit is {s.max_text_chars}")
    if req.rerank and state.reranker is None:
        raise ApiError(422, "validation", "rerank: this server has no reranker loaded")
    hits = await run_in_threadpool(_search_sync, state, req)
    return SearchResponse(query=req.query, hits=hits, took_ms=(time.perf_counter() - t0) * 1000)
