"""Liveness, readiness and info."""
from __future__ import annotations

from fastapi import APIRouter, Request

from densekit import __version__
from service.errors import error_body
from service.schemas import HealthResponse, InfoResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse, summary="liveness: the process answers")
async def health() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get("/ready", response_model=ReadyResponse, summary="readiness: models and index are loaded", responses={503: {"description": "not ready"}})
async def ready(request: Request):
    state = request.app.state.dk
    if state is None or not state.ready:
        return error_body(503, "not_ready", "models are still loading")
    return ReadyResponse(ready=True)


@router.get("/info", response_model=InfoResponse, summary="model, index and limits")
async def info(request: Request) -> InfoResponse:
    state = request.app.state.dk
    s = request.app.state.settings
    limits = {
        k: getattr(s, k)
        for k in ("max_top_k", "max_client_batch", "max_text_chars", "max_payload_bytes", "max_batch_tokens", "max_wait_ms", "max_queue", "rerank_top_n")
    }
    enc = state.encoder if state else None
    idx = state.index if state else None
    return InfoResponse(
        version=__version__,
        model=enc.name if enc else None,
        model_dim=enc.dim if enc else None,
        device=enc.device if enc else None,
        index=(
            {"kind": idx.manifest.kind, "documents": len(idx), "dim": idx.dim, "search_params": idx.manifest.search_params, "faiss": idx.manifest.faiss_description}
            if idx
            else None
        ),
        reranker=getattr(state.reranker, "name", None) if state and state.reranker else None,
        limits={**limits, "auth": bool(s.api_keys)},
    )
