"""Settings shared by every stage: environment variables (DENSEKIT_*) and CLI flags.

One pydantic-settings model so that the CLI, the service, docker/compose and `/info`
agree on names. CLI flags override the environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DENSEKIT_", extra="ignore")

    # Where BEIR folders live; `densekit data fetch` writes here, `--data NAME` reads here.
    data_dir: Path = Field(default=Path("data"), description="root folder of BEIR datasets")
    cache_dir: Path = Field(default=Path.home() / ".cache" / "densekit", description="converted models and other caches")

    model: str = Field(default=DEFAULT_MODEL, description="bi-encoder: hub name or local path")
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    dtype: str = Field(default="auto", description="auto (fp32 on CPU, bf16/fp16 on CUDA), float32, float16, bfloat16")
    batch_size: int = Field(
        default=32,
        ge=1,
        description="encoder mini-batch (index builds, evaluation, and inside each dynamic batch of the server); 32 gave 1.17-1.22x the /embed throughput of 64 at 8 sentences per request on 2 CPU cores (BENCHMARKS.md); raise it on a GPU",
    )
    faiss_device: str = Field(
        default="auto", description="where faiss searches: auto (GPU when the models run on CUDA and faiss has GPU support), cpu or gpu"
    )

    # Service
    index_dir: Path | None = Field(default=None, description="index folder the server loads")
    reranker: str | None = Field(default=None, description="reranker model (cross-encoder or LLM), hub name or path")
    reranker_kind: str = Field(default="auto", description="auto, cross-encoder or llm")
    host: str = Field(default="127.0.0.1", description="bind address")
    port: int = Field(default=8000, ge=1, le=65535, description="bind port")
    api_keys: list[str] = Field(default_factory=list, description="accepted API keys (Bearer); empty = no auth")
    cors_origins: list[str] = Field(default_factory=list, description="CORS allowed origins; empty = CORS off")
    max_top_k: int = Field(default=1000, ge=1, description="largest top_k a search may ask for")
    max_client_batch: int = Field(default=256, ge=1, description="most texts/queries in one request (413 past it)")
    max_text_chars: int = Field(default=20000, ge=1, description="longest single text accepted (413 past it)")
    max_payload_bytes: int = Field(default=4_000_000, ge=1024, description="largest request body (413 past it)")
    max_batch_tokens: int = Field(default=16384, ge=1, description="token budget of one dynamic batch")
    max_wait_ms: float = Field(default=2.0, ge=0, description="how long a batch waits for company")
    max_queue: int = Field(default=512, ge=1, description="queued requests before 429")
    rerank_top_n: int = Field(default=100, ge=1, description="default number of first-stage hits to rerank")

    # Service limits and batching: every setting below is reported by GET /info.
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes; each loads the models (live updates need 1)")
    max_search_batch: int = Field(
        default=512, ge=1, description="most queries in one faiss search call (queries of concurrent requests are merged)"
    )
    reranker_max_length: int | None = Field(default=None, ge=16, description="reranker input length in tokens (default: the model's own)")
    allow_updates: bool = Field(
        default=True, description="accept POST /documents and DELETE /documents/{id} (live index updates, persisted)"
    )
    wal_dir: Path | None = Field(
        default=None, description="write-ahead log folder of live updates (default: <index_dir>.wal beside the index)"
    )
    snapshot_every: int = Field(default=1000, ge=1, description="write-ahead log records between index snapshots")
    snapshot_interval_s: float = Field(default=300.0, gt=0, description="seconds after which pending log records are snapshotted")
    graceful_shutdown_s: float = Field(default=30.0, ge=0, description="how long in-flight requests may run after SIGTERM")
    log_json: bool = Field(default=True, description="structured JSON log lines (false: plain text)")
    load_in_background: bool = Field(
        default=False, description="open the port before models are loaded (/ready answers 503 until they are)"
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        description="CPU threads of a model forward pass; 0 = torch default (all cores); 1 suits machines whose cores other processes share",
    )
    # Input integrity: what a document may carry and how large an answer may grow.
    max_metadata_bytes: int = Field(
        default=65_536, ge=2, description="largest metadata of one document, as compact JSON in bytes (422 past it)"
    )
    max_metadata_depth: int = Field(
        default=32, ge=1, le=200, description="deepest nesting of objects/arrays in one document's metadata (422 past it)"
    )
    max_response_bytes: int = Field(
        default=8_000_000,
        ge=1024,
        description="largest /search answer in bytes; past it the request gets 413 and should lower top_k or set include_text/include_metadata to false",
    )
    # Slow clients: how long a connection may take to send a request (a client trickling bytes
    # would otherwise hold a connection, and a worker's memory, for as long as it likes).
    request_header_timeout_s: float = Field(
        default=10.0, gt=0, description="seconds a client has to send a request's line and headers (408, then the connection is closed)"
    )
    request_read_timeout_s: float = Field(
        default=30.0, gt=0, description="seconds a client has to send a request's body once its headers arrived (408, connection closed)"
    )
    keep_alive_timeout_s: int = Field(default=5, ge=1, description="seconds an idle keep-alive connection stays open between requests")
    max_header_bytes: int = Field(
        default=16_384, ge=1024, description="largest request line plus headers in bytes (431, connection closed)"
    )
    # What the API shows about itself.
    public_docs: bool = Field(default=False, description="serve /docs, /redoc and /openapi.json without an API key when keys are set")
    served_model_name: str | None = Field(
        default=None, description="the bi-encoder's name in /info and /v1/embeddings (default: its folder's name or hub id)"
    )
    served_reranker_name: str | None = Field(
        default=None, description="the reranker's name in /info and /v1/rerank, /v2/rerank (default: its folder's name or hub id)"
    )
    allow_any_model: bool = Field(
        default=False,
        description="accept any `model` on /v1/* and /v2/* (false: a name other than the served one gets 404 model_not_found)",
    )
    backend: str = Field(
        default="torch",
        description="inference runtime of the bi-encoder: torch, onnx or openvino (a model exported by `densekit export` brings its own)",
    )
    precision: str = Field(
        default="fp32",
        description="inference precision: fp32, bf16 (torch, on CPUs with avx512_bf16/AMX or on CUDA) or int8 (onnx/openvino)",
    )
    reranker_backend: str | None = Field(
        default=None,
        description="inference runtime of a cross-encoder reranker: torch, onnx or openvino (default: torch, or an exported folder's own)",
    )
    reranker_precision: str | None = Field(
        default=None, description="reranker precision: fp32, bf16 (torch) or int8 (onnx/openvino); default fp32 or an exported folder's own"
    )
