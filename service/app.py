"""The app factory: builds the service's state once; routes stay thin."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from densekit import __version__
from densekit.settings import Settings
from service.errors import install_error_handlers
from service.routes import health, search
from service.state import ServiceState, load_state

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, state: ServiceState | None = None) -> FastAPI:
    """Build the FastAPI app. `state` lets tests hand in already loaded models."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if app.state.dk is None:
            from starlette.concurrency import run_in_threadpool

            app.state.dk = await run_in_threadpool(load_state, settings)
            log.info("densekit ready: %s", app.state.dk.encoder.name if app.state.dk.encoder else None)
        yield

    app = FastAPI(
        title="densekit",
        version=__version__,
        description="Dense retrieval and reranking service.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.dk = state
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(search.router)
    return app
