"""The Ray Serve deployments behind the ingress: the bi-encoder, the reranker, and one per
index shard. Each replica loads its model or shard once; densekit errors come back as
`RemoteFailure` records (wire.py), so a refused request is told apart from a replica that died.

The encoder and the reranker batch concurrent requests with `@serve.batch` (across every
ingress replica); a shard replica keeps the single-process server's `IndexEngine`, so a
shard's searches, reads and writes share one thread and its writes keep the write-ahead log's
guarantees (index/live.py).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from ray import serve

from densekit.devices import resolve_device
from densekit.encoder import Encoder
from densekit.errors import ConfigError, DensekitError, InvalidInputError
from densekit.index.dense_index import DenseIndex
from densekit.index.live import Delete, LiveIndex, Upsert
from densekit.index.sharded_index import check_shard_files, check_shard_index, shard_folder
from densekit.index.sharded_manifest import read_sharded_manifest
from densekit.service.batching import BatcherStopped, QueueFull
from densekit.service.distributed.wire import Answer, Embedded, RemoteFailure, RemoteModel, TooLong
from densekit.service.engines import EncodeJob, IndexEngine, RerankJob, Timings, encode_jobs, rerank_jobs
from densekit.service.metrics import ServiceMetrics
from densekit.service.routes.health import backend_line
from densekit.service.state import cpu_threads
from densekit.service.token_count import TokenCounter
from densekit.settings import Settings

# Token counting of small requests runs on the replica's event loop (as in EmbedEngine).
_INLINE_TOKENIZE_CHARS = 4096
_REFUSALS = (DensekitError, QueueFull, BatcherStopped)


def _set_threads(settings: Settings) -> None:
    if resolve_device(settings.device) == "cpu" and cpu_threads(settings):
        import torch

        torch.set_num_threads(cpu_threads(settings) or 1)


def _size_batches(batched: Any, max_items: int, max_wait_ms: float) -> None:
    """A `@serve.batch` method's limits from the settings (the decorator's are placeholders)."""
    batched.set_max_batch_size(max_items)
    batched.set_batch_wait_timeout_s(max_wait_ms / 1000)


def _texts_in(jobs: list[EncodeJob]) -> int:
    return sum(len(j.texts) for j in jobs)


def _documents_in(jobs: list[RerankJob]) -> int:
    return sum(len(j.documents) for j in jobs)


@serve.deployment
class EncoderReplica:
    """The bi-encoder. A batch holds at most `max_client_batch` texts (one request's worth)."""

    def __init__(self, settings: Settings, model: str):
        _set_threads(settings)
        self.encoder = Encoder.from_settings(settings, model=model)
        self.max_length = int(getattr(self.encoder.model, "max_seq_length", None) or 512)
        self.counter = TokenCounter(self.encoder.model.tokenizer, self.max_length)
        self.batch_size = settings.batch_size
        _size_batches(self._encode_batch, settings.max_client_batch, settings.max_wait_ms)

    def describe(self) -> RemoteModel:
        enc = self.encoder
        return RemoteModel(
            name=str(enc.name),
            runtime=enc.runtime,
            device=enc.device,
            summary=backend_line(enc) + " (Ray Serve replica)",
            max_length=self.max_length,
            dim=enc.dim,
            normalize=enc.normalize,
            drift=enc.drift,
        )

    async def embed(self, texts: list[str], mode: str, truncate: bool) -> Answer:
        t0 = time.perf_counter()
        if sum(len(t) for t in texts) <= _INLINE_TOKENIZE_CHARS:
            counts = self.counter.count(texts)
        else:
            counts = await asyncio.to_thread(self.counter.count, list(texts))
        tokenize_ms = (time.perf_counter() - t0) * 1000
        if not truncate:
            for i, c in enumerate(counts):
                if c > self.max_length:
                    return Answer(TooLong(i, c, self.max_length))
        counts = self.counter.clip(counts)
        t1 = time.perf_counter()
        vectors, run_ms = await self._encode_batch(EncodeJob(texts, mode))
        waited_ms = (time.perf_counter() - t1) * 1000 - run_ms
        return Answer(Embedded(vectors, counts), timings={"tokenize": tokenize_ms, "queue": max(0.0, waited_ms), "encode": run_ms})

    @serve.batch(max_batch_size=256, batch_wait_timeout_s=0.002, batch_size_fn=_texts_in)
    async def _encode_batch(self, jobs: list[EncodeJob]) -> list[tuple[Any, float]]:
        t0 = time.perf_counter()
        out = await asyncio.to_thread(encode_jobs, self.encoder, self.batch_size, jobs)
        ms = (time.perf_counter() - t0) * 1000
        return [(v, ms) for v in out]


@serve.deployment
class RerankerReplica:
    """The reranker (cross-encoder or LLM). A batch holds at most one request's documents."""

    def __init__(self, settings: Settings):
        from densekit.rerankers import load_reranker_from_settings

        if not settings.reranker:
            raise ConfigError("reranker", "the reranker deployment needs a reranker")
        _set_threads(settings)
        self.reranker = load_reranker_from_settings(settings)
        _size_batches(self._score_batch, max(settings.max_client_batch, settings.max_top_k), settings.max_wait_ms)

    def describe(self) -> RemoteModel:
        rr = self.reranker
        tokenizer = getattr(rr, "tokenizer", None) or getattr(getattr(rr, "model", None), "tokenizer", None)
        runtime = getattr(rr, "runtime", None)
        return RemoteModel(
            name=str(getattr(rr, "name", "reranker")),
            runtime=runtime,
            device=str(getattr(rr, "device", "")),
            summary=f"{runtime} (Ray Serve replica)",
            max_length=int(getattr(rr, "max_length", None) or 512),
            score_mode=getattr(rr, "score_mode", "yes_no"),
            tokenizer=tokenizer,
        )

    async def score(self, query: str, documents: list[str], count_tokens: bool) -> Answer:
        t0 = time.perf_counter()
        result, run_ms = await self._score_batch(RerankJob(query, documents, count_tokens))
        if isinstance(result, Exception):
            return Answer(failure=RemoteFailure.of(result))
        waited_ms = (time.perf_counter() - t0) * 1000 - run_ms
        return Answer(result, timings={"queue": max(0.0, waited_ms), "rerank": run_ms})

    @serve.batch(max_batch_size=256, batch_wait_timeout_s=0.002, batch_size_fn=_documents_in)
    async def _score_batch(self, jobs: list[RerankJob]) -> list[tuple[Any, float]]:
        t0 = time.perf_counter()
        out = await asyncio.to_thread(rerank_jobs, self.reranker, jobs)
        ms = (time.perf_counter() - t0) * 1000
        return [(r, ms) for r in out]


@serve.deployment
class ShardReplica:
    """Shard `shard` of the sharded index folder `settings.index_dir`, checked as the
    single-process loader checks it (files, kind, dimension, trained quantiser). With live
    updates it owns the shard's write-ahead log (one writer: the deployment has one replica)."""

    async def __init__(self, settings: Settings, shard: int):  # type: ignore[misc]  # Ray Serve awaits an async constructor
        folder = Path(settings.index_dir or "")
        sharded = read_sharded_manifest(folder)
        entry = sharded.shards[shard]
        sub = shard_folder(folder, entry)
        check_shard_files(sub, entry)
        self.name = entry.name
        self.live: LiveIndex | None = None
        if settings.allow_updates:
            wal = Path(settings.wal_dir) / entry.name if settings.wal_dir else None
            self.live = LiveIndex.open(sub, wal, settings.snapshot_every, settings.snapshot_interval_s)
            index = self.live.index
        else:
            index = DenseIndex.load(sub)
        check_shard_index(sub, index, sharded)
        index.to_device(settings.faiss_device, resolve_device(settings.device))
        self.index = index
        self.engine = IndexEngine(index, self.live, settings, ServiceMetrics())
        self.engine.batcher.start()
        self.stop_timeout_s = settings.graceful_shutdown_s

    def _answer(self, value: Any = None, timings: dict[str, float] | None = None) -> Answer:
        return Answer(value, timings=dict(timings or {}), documents=len(self.index))

    def status(self) -> Answer:
        live = self.live.info() if self.live is not None else None
        return self._answer({"name": self.name, "search_device": self.index.search_device, "live": live})

    async def search(self, vectors: Any, top_k: int, params: dict[str, int], where: Any) -> Answer:
        tm = Timings()
        try:
            hits = await self.engine.search(vectors, top_k, params, tm, where=where)
        except _REFUSALS as exc:
            return Answer(failure=RemoteFailure.of(exc))
        return self._answer(hits, tm)

    async def get(self, doc_id: str) -> Answer:
        tm = Timings()
        try:
            doc = await self.engine.get(doc_id, tm)
        except _REFUSALS as exc:
            return Answer(failure=RemoteFailure.of(exc))
        return self._answer(doc, tm)

    async def check(self, op: Upsert | Delete) -> Answer:
        """Would this shard accept its part of a write that spans shards? For a delete, the
        value says whether the shard holds any of the ids (absent parts are not sent). Runs
        on the shard's model thread: SQLite and faiss are never used from two threads."""
        return await self.engine.batcher.run_in_thread(self._check, op)

    def _check(self, op: Upsert | Delete) -> Answer:
        try:
            if isinstance(op, Delete) and not self.index.docstore.rows_of(op.ids):
                return self._answer(False)
            if self.live is None:
                raise InvalidInputError("this shard is served read-only")
            self.live._check(op)
        except _REFUSALS as exc:
            return Answer(failure=RemoteFailure.of(exc))
        return self._answer(True)

    async def write(self, op: Upsert | Delete) -> Answer:
        tm = Timings()
        try:
            result = await self.engine.write(op, tm)
        except _REFUSALS as exc:
            return Answer(failure=RemoteFailure.of(exc), documents=len(self.index))
        return self._answer(result, tm)

    async def __del__(self) -> None:
        # A graceful stop (redeploy, scale-down, shutdown): finish the queue, snapshot, release the log.
        await self.engine.stop(drain_timeout_s=self.stop_timeout_s)
        if self.live is not None:
            await asyncio.to_thread(self.live.close, True)
            self.live = None
