"""The app factory: builds the service's state once; routes stay thin.

Start-up loads the models before the port opens (as text-embeddings-inference does), or,
with `load_in_background`, after it: `/health` then answers at once and `/ready` says 503
until everything is loaded, which suits orchestrators' readiness probes. Shutdown (SIGTERM under
uvicorn) first lets in-flight requests finish, then drains the batch queues, snapshots a
live index and releases its write-ahead log.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from densekit import __version__
from densekit.service.engines import EmbedEngine, IndexEngine, InputTooLong, RerankEngine
from densekit.service.errors import error_answer, install_error_handlers, without_paths
from densekit.service.logging_setup import configure_logging
from densekit.service.metrics import ServiceMetrics
from densekit.service.middleware import STAGES, JSONErrorCORSMiddleware, ServiceMiddleware
from densekit.service.routes import documents, embed, health, rerank, search
from densekit.service.routes.docs import docs_router
from densekit.service.state import ServiceState, close_state, load_state
from densekit.settings import Settings

log = logging.getLogger(__name__)

# Builds the ready state with its engines in place of loading the models in this process
# (the Ray Serve ingress: its engines call the encoder, reranker and shard deployments).
StateLoader = Callable[[Settings, ServiceMetrics], Awaitable[ServiceState]]


def attach_engines(state: ServiceState, settings: Settings, metrics: ServiceMetrics) -> None:
    """Put the batching engines in front of the loaded models (needs the running loop)."""
    state.embed = EmbedEngine(state.encoder, settings, metrics)
    state.embed.batcher.start()
    for role, model in (("encoder", state.encoder), ("reranker", state.reranker)):
        runtime = getattr(model, "runtime", None)
        if runtime is not None:
            metrics.runtime.labels(role, runtime.backend, runtime.precision).set(1)
    if state.reranker is not None:
        state.rerank = RerankEngine(state.reranker, settings, metrics)
        state.rerank.batcher.start()
    if state.index is not None:
        state.search = IndexEngine(state.index, state.live, settings, metrics)
        state.search.batcher.start()
        metrics.documents.set(len(state.index))


async def _stop_engines(state: ServiceState, settings: Settings) -> None:
    engines = [e for e in (state.embed, state.rerank, state.search) if e is not None]
    # The index last: a request may still go encoder -> index while the others drain.
    for engine in engines:
        await engine.stop(drain_timeout_s=settings.graceful_shutdown_s)


async def _load_here(settings: Settings, metrics: ServiceMetrics) -> ServiceState:
    loaded = await asyncio.to_thread(load_state, settings)
    attach_engines(loaded, settings, metrics)
    return loaded


def create_app(settings: Settings | None = None, state: ServiceState | None = None, loader: StateLoader | None = None) -> FastAPI:
    """Build the FastAPI app. `state` lets tests hand in already loaded models; `loader`
    replaces loading them in this process (it returns the state with its engines attached)."""
    settings = settings or Settings()
    metrics = ServiceMetrics()
    level = os.environ.get("DENSEKIT_SERVE_LOG_LEVEL")
    if level and not logging.getLogger().handlers:  # a worker process of `densekit serve --workers N`
        configure_logging(level, json_lines=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader: asyncio.Task | None = None
        if app.state.dk is None:
            loader = asyncio.create_task(_load(app))
            if not settings.load_in_background:
                await loader
        else:
            attach_engines(app.state.dk, settings, metrics)
        try:
            yield
        finally:
            if loader is not None and not loader.done():
                loader.cancel()
            st: ServiceState | None = app.state.dk
            if st is not None:
                await _stop_engines(st, settings)
                await asyncio.to_thread(close_state, st)
                log.info("densekit stopped")

    async def _load(app: FastAPI) -> None:
        pending = ServiceState(settings)
        app.state.dk = pending
        try:
            loaded = await (loader or _load_here)(settings, metrics)
        except Exception as exc:
            log.exception("loading models failed")
            if not settings.load_in_background:
                raise  # uvicorn's start-up fails and the process exits with the message
            # In the background the process stays up to say why: /health and /ready answer 503.
            # Answered over HTTP: files are named, not located (the log has the whole message).
            pending.errors.append(f"{type(exc).__name__}: {without_paths(str(exc))}")
            return
        app.state.dk = loaded
        log.info(
            "densekit ready",
            extra={
                "model": loaded.encoder.name if loaded.encoder is not None else None,
                "documents": len(loaded.index) if loaded.index is not None else None,
                "reranker": getattr(loaded.reranker, "name", None),
                "live_updates": loaded.live is not None,
            },
        )

    app = FastAPI(
        title="densekit",
        version=__version__,
        description=(
            "Dense retrieval and reranking service. densekit's own `/search` and `/documents`, "
            "text-embeddings-inference's `/embed` and `/rerank`, OpenAI's `/v1/embeddings` and "
            "Cohere/Jina's `/v1/rerank` and Cohere's `/v2/rerank`. Errors are `{error, error_type}` JSON "
            "(under `/v1/`: OpenAI's `{error: {message, type, param, code}}`). Every response "
            "carries `x-request-id` and timing headers in milliseconds (`x-total-time` and, where "
            f"they apply, {', '.join(f'`x-{s}-time`' for s in STAGES)}), also as `server-timing`."
        ),
        lifespan=lifespan,
        # Served by docs_router: behind the API key unless public_docs.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.dk = state
    app.state.metrics = metrics
    install_error_handlers(app)

    @app.exception_handler(InputTooLong)
    async def _too_long(request: Request, exc: InputTooLong):
        return error_answer(request.scope, 413, "payload_too_large", str(exc))

    app.include_router(health.public)
    app.include_router(health.router)
    app.include_router(search.router)
    app.include_router(embed.router)
    app.include_router(rerank.router)
    app.include_router(documents.router)
    app.include_router(docs_router(public=settings.public_docs))
    # Added last = outermost: CORS answers preflights before anything else runs.
    app.add_middleware(
        ServiceMiddleware, max_payload_bytes=settings.max_payload_bytes, metrics=metrics, read_timeout_s=settings.request_read_timeout_s
    )
    if settings.cors_origins:
        app.add_middleware(
            JSONErrorCORSMiddleware,
            metrics=metrics,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Total-Time", "Server-Timing", *(f"X-{s.title()}-Time" for s in STAGES)],
        )
    return app
