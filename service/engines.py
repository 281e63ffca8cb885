"""The model side of the service: the bi-encoder, the reranker and the index, each behind a
`DynamicBatcher` that merges concurrent requests into one call on the model's own thread.

Routes call `await engine.method(...)` and get results plus per-stage timings in the
request's `Timings`; nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from densekit.index.filters import Filter
from densekit.index.live import Delete, Upsert, WriteResult
from densekit.index.loading import AnyLiveIndex
from densekit.service.batching import DynamicBatcher
from densekit.service.metrics import ServiceMetrics
from densekit.service.token_count import TokenCounter, estimate_tokens
from densekit.settings import Settings

# Token counting runs on the event loop for small requests (tens of microseconds) and on a
# worker thread for large ones, so a 4 MB payload never stalls other requests.
_INLINE_TOKENIZE_CHARS = 4096


class Timings(dict):
    """Milliseconds per stage for one request; the middleware turns them into headers."""

    def add(self, stage: str, ms: float) -> None:
        self[stage] = self.get(stage, 0.0) + ms


class InputTooLong(Exception):
    def __init__(self, position: int, tokens: int, limit: int):
        self.position, self.tokens, self.limit = position, tokens, limit
        super().__init__(f"input {position} has {tokens} tokens, the model takes at most {limit} (send truncate=true to cut it)")


# ---- bi-encoder ------------------------------------------------------------------------
@dataclass
class EncodeJob:
    texts: list[str]
    mode: str  # "query", "document" or "plain" (no prompt)


class EmbedEngine:
    def __init__(self, encoder, settings: Settings, metrics: ServiceMetrics):
        self.encoder = encoder
        self.metrics = metrics
        self.max_length = int(getattr(encoder.model, "max_seq_length", None) or 512)
        self.counter = TokenCounter(encoder.model.tokenizer, self.max_length)
        self.batch_size = settings.batch_size
        self.batcher = DynamicBatcher(
            "encoder", self._run, settings.max_batch_tokens, settings.max_wait_ms, settings.max_queue, metrics.on_batch, metrics.on_depth
        )

    async def count(self, texts: Sequence[str]) -> list[int]:
        if sum(len(t) for t in texts) <= _INLINE_TOKENIZE_CHARS:
            return self.counter.count(texts)
        return await asyncio.get_running_loop().run_in_executor(None, self.counter.count, list(texts))

    async def embed(self, texts: list[str], mode: str, timings: Timings, truncate: bool = True) -> tuple[np.ndarray, list[int]]:
        """Vectors (float32, one row per text) and each text's token count as encoded."""
        self.batcher.check_capacity()
        with self.batcher.arriving():
            t0 = time.perf_counter()
            counts = await self.count(texts)
            timings.add("tokenize", (time.perf_counter() - t0) * 1000)
        if not truncate:
            for i, c in enumerate(counts):
                if c > self.max_length:
                    raise InputTooLong(i, c, self.max_length)
        counts = self.counter.clip(counts)
        vectors, job = await self.batcher.submit(EncodeJob(texts, mode), sum(counts))
        timings.add("queue", job.queue_ms)
        timings.add("encode", job.run_ms)
        self.metrics.stage.labels("queue").observe(job.queue_ms / 1000)
        self.metrics.stage.labels("encode").observe(job.run_ms / 1000)
        return vectors, counts

    def _run(self, jobs: list[EncodeJob]) -> list[np.ndarray]:
        return encode_jobs(self.encoder, self.batch_size, jobs)

    async def stop(self, drain_timeout_s: float) -> None:
        await self.batcher.stop(drain_timeout_s=drain_timeout_s)


def _encode(encoder, batch_size: int, texts: list[str], mode: str) -> np.ndarray:
    if mode == "query":
        return encoder.encode_queries(texts, batch_size=batch_size)
    if mode == "document":
        return encoder.encode_documents(texts, batch_size=batch_size)
    out = encoder.model.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True, normalize_embeddings=False)
    return np.ascontiguousarray(out, dtype=np.float32)


def encode_jobs(encoder, batch_size: int, jobs: list[EncodeJob]) -> list[np.ndarray]:
    """One batch of encode jobs: one encoder call per mode (queries and documents may carry
    different prompts), each job's rows handed back in order."""
    by_mode: dict[str, list[int]] = defaultdict(list)
    for i, job in enumerate(jobs):
        by_mode[job.mode].append(i)
    out: list[Any] = [None] * len(jobs)
    for mode, idxs in by_mode.items():
        texts = [t for i in idxs for t in jobs[i].texts]
        vecs = _encode(encoder, batch_size, texts, mode)
        pos = 0
        for i in idxs:
            n = len(jobs[i].texts)
            out[i] = vecs[pos : pos + n]
            pos += n
    return out


# ---- reranker --------------------------------------------------------------------------
@dataclass
class RerankJob:
    query: str
    documents: list[str]
    count_tokens: bool = False


@dataclass
class RerankResult:
    scores: list[float]
    tokens: int | None


class RerankEngine:
    def __init__(self, reranker, settings: Settings, metrics: ServiceMetrics):
        self.reranker = reranker
        self.metrics = metrics
        self.max_length = int(getattr(reranker, "max_length", None) or 512)
        # Scores are probabilities unless the reranker serves a raw logit already.
        self.scores_are_probabilities = getattr(reranker, "score_mode", "yes_no") != "yes_logit"
        self.batcher = DynamicBatcher(
            "reranker", self._run, settings.max_batch_tokens, settings.max_wait_ms, settings.max_queue, metrics.on_batch, metrics.on_depth
        )

    def cost(self, query: str, documents: Sequence[str]) -> int:
        # An estimate: the reranker's own tokenizer belongs to its model thread.
        q = estimate_tokens(query)
        return sum(min(self.max_length, q + estimate_tokens(d)) for d in documents)

    async def score(self, query: str, documents: list[str], timings: Timings, count_tokens: bool = False) -> RerankResult:
        self.batcher.check_capacity()
        result, job = await self.batcher.submit(RerankJob(query, documents, count_tokens), self.cost(query, documents))
        timings.add("queue", job.queue_ms)
        timings.add("rerank", job.run_ms)
        self.metrics.stage.labels("queue").observe(job.queue_ms / 1000)
        self.metrics.stage.labels("rerank").observe(job.run_ms / 1000)
        return result

    def raw(self, scores: list[float]) -> list[float]:
        """Logits from probabilities (TEI's raw_scores)."""
        if not self.scores_are_probabilities:
            return scores
        out = []
        for p in scores:
            p = min(max(float(p), 1e-7), 1 - 1e-7)
            out.append(math.log(p / (1 - p)))
        return out

    def probabilities(self, scores: list[float]) -> list[float]:
        if self.scores_are_probabilities:
            return scores
        return [1.0 / (1.0 + math.exp(-max(min(s, 60.0), -60.0))) for s in scores]

    def _run(self, jobs: list[RerankJob]) -> list[RerankResult | Exception]:
        return rerank_jobs(self.reranker, jobs)

    async def stop(self, drain_timeout_s: float) -> None:
        await self.batcher.stop(drain_timeout_s=drain_timeout_s)


def rerank_jobs(reranker, jobs: list[RerankJob]) -> list[RerankResult | Exception]:
    """Scores of one batch of rerank jobs: one forward pass over every job's pairs when the
    reranker offers `score_pairs`, else one call per job."""
    rr = reranker
    pairs_fn = getattr(rr, "score_pairs", None)
    out: list[RerankResult | Exception] = []
    if pairs_fn is not None and len(jobs) > 1:
        flat = [(j.query, d) for j in jobs for d in j.documents]
        scores = list(pairs_fn(flat))
        pos = 0
        for j in jobs:
            n = len(j.documents)
            tokens = sum(rr.count_tokens(j.query, j.documents)) if j.count_tokens else None
            out.append(RerankResult([float(s) for s in scores[pos : pos + n]], tokens))
            pos += n
        return out
    for j in jobs:
        scores = [float(s) for s in rr.score(j.query, j.documents)]
        tokens = sum(rr.count_tokens(j.query, j.documents)) if j.count_tokens else None
        out.append(RerankResult(scores, tokens))
    return out


# ---- index -----------------------------------------------------------------------------
@dataclass
class SearchJob:
    vectors: np.ndarray
    top_k: int
    params: dict[str, int]
    where: Filter | None = None  # metadata filter (hashable: jobs with equal filters search together)


@dataclass
class LexicalJob:
    """BM25 search of query texts (on the index thread: the lexical part changes with writes)."""

    texts: list[str]
    top_k: int
    where: Filter | None = None


@dataclass
class GetJob:
    doc_id: str


@dataclass
class Hit:
    id: str
    score: float
    title: str
    text: str
    metadata: dict


class PartialHits(list):
    """Per-query hits that lack the documents of some shards: a distributed index served with
    `allow_partial` while `missing_shards` were down. The search route says so in its answer."""

    def __init__(self, hits: list[list[Hit]], missing_shards: list[str]):
        super().__init__(hits)
        self.missing_shards = missing_shards


class IndexEngine:
    """Searches, document reads and writes on one thread: faiss and SQLite are then never
    used concurrently, writes of one batch share one fsync, and concurrent requests' queries
    go to faiss as one matrix."""

    def __init__(self, index, live: AnyLiveIndex | None, settings: Settings, metrics: ServiceMetrics):
        self.index = index
        self.live = live
        self.metrics = metrics
        self.batcher = DynamicBatcher(
            "index", self._run, settings.max_search_batch, settings.max_wait_ms, settings.max_queue, metrics.on_batch, metrics.on_depth
        )

    async def search(
        self, vectors: np.ndarray, top_k: int, params: dict[str, int], timings: Timings, where: Filter | None = None
    ) -> list[list[Hit]]:
        hits, job = await self.batcher.submit(SearchJob(vectors, top_k, params, where), vectors.shape[0])
        timings.add("queue", job.queue_ms)
        timings.add("search", job.run_ms)
        self.metrics.stage.labels("search").observe(job.run_ms / 1000)
        return hits

    async def lexical(self, texts: list[str], top_k: int, timings: Timings, where: Filter | None = None) -> list[list[Hit]]:
        """BM25 hits of each query text (ConfigError when the index has no lexical part)."""
        hits, job = await self.batcher.submit(LexicalJob(texts, top_k, where), len(texts))
        timings.add("queue", job.queue_ms)
        timings.add("lexical", job.run_ms)
        self.metrics.stage.labels("lexical").observe(job.run_ms / 1000)
        return hits

    async def write(self, op: Upsert | Delete, timings: Timings) -> WriteResult:
        result, job = await self.batcher.submit(op, len(op.docs) if isinstance(op, Upsert) else 1)
        timings.add("queue", job.queue_ms)
        timings.add("write", job.run_ms)
        self.metrics.stage.labels("write").observe(job.run_ms / 1000)
        self.metrics.documents.set(len(self.index))
        return result

    async def get(self, doc_id: str, timings: Timings) -> dict | None:
        doc, job = await self.batcher.submit(GetJob(doc_id), 1)
        timings.add("search", job.run_ms)
        return doc

    async def health(self) -> str | None:
        """Why the index cannot answer every query now, or None. An index in this process
        always can; a distributed one checks its shards."""
        return None

    async def stop(self, drain_timeout_s: float) -> None:
        await self.batcher.stop(drain_timeout_s=drain_timeout_s)

    def _run(self, jobs: list[Any]) -> list[Any]:
        out: list[Any] = [None] * len(jobs)
        writes = [i for i, j in enumerate(jobs) if isinstance(j, (Upsert, Delete))]
        if writes:
            if self.live is None:
                raise RuntimeError("index is read-only")  # routes refuse before this
            for i, res in zip(writes, self.live.write([jobs[i] for i in writes])):
                out[i] = res
        self._searches(jobs, out)
        self._lexical_searches(jobs, out)
        for i, j in enumerate(jobs):
            if isinstance(j, GetJob):
                rows = self.index.docstore.rows_of([j.doc_id])
                docs = self.index.documents(list(rows.values()))
                out[i] = next(iter(docs.values()), None)
        if self.live is not None and self.live.snapshot_due():
            # Copies the index here (memory speed); the files are written on another thread.
            self.live.snapshot_in_background()
        return out

    def _searches(self, jobs: list[Any], out: list[Any]) -> None:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, j in enumerate(jobs):
            if isinstance(j, SearchJob):
                groups[(tuple(sorted(j.params.items())), j.where)].append(i)
        if not groups:
            return
        all_hits: dict[int, list] = {}
        for (params, where), idxs in groups.items():
            k = max(jobs[i].top_k for i in idxs)
            mat = np.vstack([jobs[i].vectors for i in idxs]) if len(idxs) > 1 else jobs[idxs[0]].vectors
            try:
                res = self.index.search(mat, k, dict(params), where=where)
            except Exception as exc:  # bad parameters for this kind: fail this group only
                for i in idxs:
                    out[i] = exc
                continue
            pos = 0
            for i in idxs:
                n = jobs[i].vectors.shape[0]
                all_hits[i] = [hits[: jobs[i].top_k] for hits in res[pos : pos + n]]
                pos += n
        self._with_documents(all_hits, out)

    def _lexical_searches(self, jobs: list[Any], out: list[Any]) -> None:
        all_hits: dict[int, list] = {}
        for i, j in enumerate(jobs):
            if isinstance(j, LexicalJob):
                try:
                    all_hits[i] = self.index.lexical_search(j.texts, j.top_k, where=j.where)
                except Exception as exc:  # no lexical part: fail this job only
                    out[i] = exc
        self._with_documents(all_hits, out)

    def _with_documents(self, all_hits: dict[int, list], out: list[Any]) -> None:
        """out[i]: job i's hits as `Hit`s, with their stored documents."""
        rows = sorted({h.row for per_job in all_hits.values() for hits in per_job for h in hits})
        docs = self.index.documents(rows)
        for i, per_job in all_hits.items():
            out[i] = [
                [
                    Hit(
                        h.id,
                        h.score,
                        docs.get(h.row, {}).get("title", ""),
                        docs.get(h.row, {}).get("text", ""),
                        docs.get(h.row, {}).get("metadata", {}),
                    )
                    for h in hits
                ]
                for hits in per_job
            ]
