"""Prometheus metrics of one app instance (its own registry, so several apps can live in one
process, as in tests). With `--workers N` each worker process exposes its own numbers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets from 1 ms to 30 s: CPU forward passes sit in the tens of ms, GPU in ms.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# The routes of the HTTP API, each documented in the OpenAPI schema.
API_ROUTES = (
    "/search",
    "/rerank",
    "/v1/rerank",
    "/v2/rerank",
    "/embed",
    "/v1/embeddings",
    "/documents",
    "/documents/{doc_id}",
    "/health",
    "/ready",
    "/info",
    "/metrics",
)
# Routes we label by name; anything else (404s, scanners) is "other" so labels stay bounded.
KNOWN_ROUTES = frozenset((*API_ROUTES, "/openapi.json", "/docs", "/redoc"))


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("densekit_requests", "HTTP requests by route, method and status", ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "densekit_request_seconds", "end-to-end request latency in the server", ["route"], buckets=_SECONDS, registry=r
        )
        self.stage = Histogram(
            "densekit_stage_seconds",
            "time per request spent in each stage (queue, tokenize, encode, search, rerank, write)",
            ["stage"],
            buckets=_SECONDS,
            registry=r,
        )
        self.batch_jobs = Histogram("densekit_batch_requests", "requests merged into one model call", ["model"], buckets=_BATCH, registry=r)
        self.batch_cost = Histogram(
            "densekit_batch_cost",
            "tokens (models) or queries (index) in one model call",
            ["model"],
            buckets=(16, 64, 256, 1024, 4096, 16384, 65536),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "densekit_batch_seconds", "duration of one batched model call", ["model"], buckets=_SECONDS, registry=r
        )
        self.queue_depth = Gauge("densekit_queue_depth", "requests waiting for a model", ["model"], registry=r)
        self.rejected = Counter("densekit_rejected", "requests refused before any model work, by reason", ["reason"], registry=r)
        self.documents = Gauge("densekit_index_documents", "documents in the served index", registry=r)
        self.in_flight = Gauge("densekit_requests_in_flight", "requests being handled now", registry=r)
        self.runtime = Gauge(
            "densekit_model_runtime", "1 for the runtime each loaded model runs under", ["model", "backend", "precision"], registry=r
        )

    def on_batch(self, model: str, jobs: int, cost: int, seconds: float) -> None:
        self.batch_jobs.labels(model).observe(jobs)
        self.batch_cost.labels(model).observe(cost)
        self.batch_seconds.labels(model).observe(seconds)

    def on_depth(self, model: str, depth: int) -> None:
        self.queue_depth.labels(model).set(depth)
