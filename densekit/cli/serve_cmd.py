"""`densekit serve`: run the HTTP service under uvicorn."""
from __future__ import annotations

import os
from pathlib import Path

import typer


def serve(
    index: Path = typer.Option(None, "--index", help="index folder to serve (env DENSEKIT_INDEX_DIR)"),
    model: str = typer.Option(None, "--model", help="bi-encoder for queries (default: the index's own encoder)"),
    reranker: str = typer.Option(None, "--reranker", help="reranker model, hub name or path (env DENSEKIT_RERANKER)"),
    host: str = typer.Option(None, "--host", help="bind address (env DENSEKIT_HOST, default 127.0.0.1)"),
    port: int = typer.Option(None, "--port", help="bind port (env DENSEKIT_PORT, default 8000)"),
    workers: int = typer.Option(1, "--workers", help="uvicorn worker processes (each loads the models)"),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda (env DENSEKIT_DEVICE)"),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
) -> None:
    """Serve /search and the other routes of the HTTP API over an index folder."""
    import uvicorn

    from densekit.settings import Settings

    # Flags travel to the app factory as environment, so every worker sees the same settings.
    for env, value in (
        ("DENSEKIT_INDEX_DIR", index),
        ("DENSEKIT_MODEL", model),
        ("DENSEKIT_RERANKER", reranker),
        ("DENSEKIT_DEVICE", device),
    ):
        if value is not None:
            os.environ[env] = str(value)
    s = Settings()
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=host or s.host,
        port=port or s.port,
        workers=workers,
        log_level=log_level,
        timeout_graceful_shutdown=30,
    )
