"""`densekit serve`: run the HTTP service under uvicorn."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from densekit.errors import ConfigError


def serve(
    index: Path = typer.Option(None, "--index", help="index folder to serve (env DENSEKIT_INDEX_DIR)"),
    model: str = typer.Option(None, "--model", help="bi-encoder for queries (default: the index's own encoder)"),
    reranker: str = typer.Option(None, "--reranker", help="reranker model, hub name or path (env DENSEKIT_RERANKER)"),
    reranker_kind: str = typer.Option(None, "--reranker-kind", help="auto, cross-encoder or llm (env DENSEKIT_RERANKER_KIND)"),
    host: str = typer.Option(None, "--host", help="bind address (env DENSEKIT_HOST, default 127.0.0.1)"),
    port: int = typer.Option(None, "--port", help="bind port (env DENSEKIT_PORT, default 8000)"),
    workers: int = typer.Option(
        None,
        "--workers",
        help="uvicorn worker processes, each loading the models (env DENSEKIT_WORKERS, default 1; more than 1 needs --read-only)",
    ),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda (env DENSEKIT_DEVICE)"),
    dtype: str = typer.Option(None, "--dtype", help="auto, float32, float16, bfloat16 (env DENSEKIT_DTYPE)"),
    torch_threads: int = typer.Option(
        None, "--torch-threads", help="CPU threads of a forward pass; 0 = all cores (env DENSEKIT_TORCH_THREADS)"
    ),
    batch_size: int = typer.Option(None, "--batch-size", help="encoder mini-batch inside one forward call (env DENSEKIT_BATCH_SIZE)"),
    max_top_k: int = typer.Option(None, "--max-top-k", help="largest top_k or rerank_top_n a request may ask for (422 past it)"),
    max_client_batch: int = typer.Option(None, "--max-client-batch", help="most texts or queries in one request (413 past it)"),
    max_text_chars: int = typer.Option(None, "--max-text-chars", help="longest single text in characters (413 past it)"),
    max_payload_bytes: int = typer.Option(None, "--max-payload-bytes", help="largest request body in bytes (413 past it)"),
    max_batch_tokens: int = typer.Option(None, "--max-batch-tokens", help="token budget of one dynamic batch (model forward call)"),
    max_search_batch: int = typer.Option(None, "--max-search-batch", help="most queries merged into one faiss search call"),
    max_wait_ms: float = typer.Option(None, "--max-wait-ms", help="longest a forming batch waits for more requests"),
    max_queue: int = typer.Option(None, "--max-queue", help="requests waiting per model before new ones get 429"),
    rerank_top_n: int = typer.Option(None, "--rerank-top-n", help="default first-stage hits the reranker rescores"),
    api_key: list[str] = typer.Option(
        None, "--api-key", help="accepted API key (repeatable); prefer env DENSEKIT_API_KEYS='[\"k1\"]', which ps does not show"
    ),
    cors_origin: list[str] = typer.Option(None, "--cors-origin", help="allowed CORS origin (repeatable); none = CORS off"),
    read_only: bool = typer.Option(False, "--read-only", help="refuse POST/DELETE /documents; the index folder is never written"),
    wal_dir: Path = typer.Option(None, "--wal-dir", help="write-ahead log folder of live updates (default <index>.wal)"),
    snapshot_every: int = typer.Option(None, "--snapshot-every", help="write-ahead log records between index snapshots"),
    graceful_shutdown_s: float = typer.Option(None, "--graceful-shutdown-s", help="seconds in-flight requests may run after SIGTERM"),
    load_in_background: bool = typer.Option(
        False, "--load-in-background", help="open the port before models load (/ready answers 503 until then)"
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error"),
    log_text: bool = typer.Option(False, "--log-text", help="plain text log lines instead of JSON (env DENSEKIT_LOG_JSON=false)"),
) -> None:
    """Serve /search, /embed, /rerank, /v1/* and /documents over an index folder.

    Every flag is also an environment variable DENSEKIT_<NAME>; flags win. GET /info shows the
    limits in force."""
    import uvicorn

    from densekit.service.logging_setup import configure_logging
    from densekit.settings import Settings

    # Flags travel to the app factory as environment, so every worker sees the same settings.
    values = {
        "INDEX_DIR": index,
        "MODEL": model,
        "RERANKER": reranker,
        "RERANKER_KIND": reranker_kind,
        "HOST": host,
        "PORT": port,
        "WORKERS": workers,
        "DEVICE": device,
        "DTYPE": dtype,
        "BATCH_SIZE": batch_size,
        "TORCH_THREADS": torch_threads,
        "MAX_TOP_K": max_top_k,
        "MAX_CLIENT_BATCH": max_client_batch,
        "MAX_TEXT_CHARS": max_text_chars,
        "MAX_PAYLOAD_BYTES": max_payload_bytes,
        "MAX_BATCH_TOKENS": max_batch_tokens,
        "MAX_SEARCH_BATCH": max_search_batch,
        "MAX_WAIT_MS": max_wait_ms,
        "MAX_QUEUE": max_queue,
        "RERANK_TOP_N": rerank_top_n,
        "API_KEYS": json.dumps(api_key) if api_key else None,
        "CORS_ORIGINS": json.dumps(cors_origin) if cors_origin else None,
        "ALLOW_UPDATES": "false" if read_only else None,
        "WAL_DIR": wal_dir,
        "SNAPSHOT_EVERY": snapshot_every,
        "GRACEFUL_SHUTDOWN_S": graceful_shutdown_s,
        "LOAD_IN_BACKGROUND": "true" if load_in_background else None,
        "LOG_JSON": "false" if log_text else None,
    }
    for name, value in values.items():
        if value is not None:
            os.environ[f"DENSEKIT_{name}"] = str(value)
    s = Settings()  # validates every value before anything loads
    # Tokenisers' thread pool would compete with the forward pass's threads for the same
    # cores (and spin while idle); requests are tokenised one batch at a time anyway.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if s.workers > 1 and s.allow_updates and s.index_dir is not None:
        raise ConfigError("workers", "live document updates need one process (--workers 1); with several workers pass --read-only")
    configure_logging(log_level, json_lines=s.log_json)
    # Worker processes (--workers N) start fresh interpreters: they configure logging from this.
    os.environ["DENSEKIT_SERVE_LOG_LEVEL"] = log_level
    uvicorn.run(
        "densekit.service.app:create_app",
        factory=True,
        host=s.host,
        port=s.port,
        workers=s.workers,
        log_level=log_level,
        log_config=None,  # keep the structured logging configured above
        access_log=False,  # densekit logs one line per request itself, with timings
        timeout_graceful_shutdown=int(s.graceful_shutdown_s) or None,
    )
