"""Liveness, readiness, info and Prometheus metrics. /health and /metrics are public; /ready
and /info need the API key when keys are set. Each answers HEAD too (the middleware's).
Models are named by their served names, never by path."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from densekit import __version__
from densekit.service.auth import require_api_key
from densekit.service.distributed.wire import RemoteModel
from densekit.service.errors import error_body
from densekit.service.schemas import HealthResponse, InfoResponse, ReadyResponse, errors
from densekit.service.served_names import encoder_name, reranker_name

public = APIRouter(tags=["health"])
router = APIRouter(tags=["health"], dependencies=[Depends(require_api_key)])

# Every limit a client may run into, as /info reports them.
LIMIT_FIELDS = (
    "max_top_k",
    "max_client_batch",
    "max_text_chars",
    "max_payload_bytes",
    "max_batch_tokens",
    "batch_size",
    "max_search_batch",
    "max_wait_ms",
    "max_queue",
    "rerank_top_n",
    "workers",
    "allow_updates",
    "snapshot_every",
    "snapshot_interval_s",
    "graceful_shutdown_s",
    "torch_threads",
    "max_metadata_bytes",
    "max_metadata_depth",
    "max_response_bytes",
    "keep_alive_timeout_s",
)


@public.get(
    "/health",
    response_model=HealthResponse,
    summary="liveness: the process answers (public)",
    responses={503: {"description": "loading failed; see /ready for why"}},
)
async def health(request: Request):
    state = request.app.state.dk
    if state is not None and state.errors:
        # Public: what failed, not where (the message names files); /ready has the detail.
        kinds = ", ".join(sorted({e.split(":", 1)[0] for e in state.errors}))
        return error_body(503, "failed", f"loading failed ({kinds}); /ready and the server log say why")
    return HealthResponse(status="ok")


@public.get(
    "/metrics", summary="Prometheus metrics (public)", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}}
)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/ready", response_model=ReadyResponse, summary="readiness: models and index are loaded", responses=errors(401, 503))
async def ready(request: Request):
    state = request.app.state.dk
    if state is None or not state.ready:
        detail = "; ".join(state.errors) if state is not None and state.errors else "models are still loading"
        return error_body(503, "not_ready", detail)
    problem = await state.search.health() if state.search is not None else None
    if problem is not None:  # a shard of a distributed index is down
        return error_body(503, "not_ready", problem)
    return ReadyResponse(ready=True)


@router.get("/info", response_model=InfoResponse, summary="model, index, reranker and every limit", responses=errors(401))
async def info(request: Request) -> InfoResponse:
    state = request.app.state.dk
    s = request.app.state.settings
    limits = {k: getattr(s, k) for k in LIMIT_FIELDS}
    enc = state.encoder if state else None
    idx = state.index if state else None
    index_info = None
    if idx is not None:
        index_info = {
            "kind": idx.manifest.kind,
            "documents": len(idx),
            "dim": idx.dim,
            "search_params": idx.manifest.search_params,
            "faiss": idx.manifest.faiss_description,
            "search_device": idx.search_device,
            "live_updates": state.live is not None,
            "lexical": idx.manifest.lexical is not None,
            "search_mode": idx.manifest.search_mode,
            "fusion": idx.manifest.fusion.model_dump(),
        }
        if state.live is not None:
            live = state.live.info()
            live["wal_dir"] = Path(live["wal_dir"]).name  # its name, not where it lives
            index_info.update(live)
    backend = ""
    if isinstance(enc, RemoteModel):
        backend = enc.summary
    elif enc is not None:
        backend = backend_line(enc)
    return InfoResponse(
        version=__version__,
        model=encoder_name(state, s) if state else None,
        model_dim=enc.dim if enc else None,
        max_input_tokens=state.embed.max_length if state and state.embed else None,
        device=enc.device if enc else None,
        backend=backend,
        runtime=_runtimes(state),
        index=index_info,
        reranker=reranker_name(state, s) if state else None,
        limits={**limits, "auth": bool(s.api_keys), "cors": bool(s.cors_origins)},
    )


def backend_line(enc) -> str:
    """/info's `backend`: the encoder's runtime, library versions, device, weights and threads."""
    import torch

    # An exported model's network runs in ONNX Runtime / OpenVINO: no torch parameters left.
    param = next(enc.model.parameters(), None)
    weights = str(param.dtype) if param is not None else enc.runtime.precision
    return f"{enc.runtime} (sentence-transformers {type(enc.model).__name__}, torch {torch.__version__}), {enc.device}, {weights}, {torch.get_num_threads()} threads"


def _runtimes(state) -> dict[str, dict[str, str]]:
    out = {}
    for role, model in (("encoder", state.encoder if state else None), ("reranker", state.reranker if state else None)):
        runtime = getattr(model, "runtime", None)
        if runtime is not None:
            out[role] = {"backend": runtime.backend, "precision": runtime.precision}
    return out
