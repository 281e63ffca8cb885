"""The ingress's engines: the routes' EmbedEngine / RerankEngine / IndexEngine interface, each
call sent to a Ray Serve deployment instead of a model in this process.

A query goes to every shard at once and their top-k are merged by score (ties keep shard
order), as ShardedIndex merges in one process; a write goes to the shards that own its ids.
A shard that does not answer (its replica died, the call timed out, the deployment is
unavailable) fails the search with 503 `shard_unavailable`, or, with `allow_partial`, leaves
its documents out of an answer that says so (`PartialHits`). Never a 500: a dead replica is an
outage, not a bug.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ray.exceptions import RayError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from densekit.errors import ConfigError, DocumentNotFoundError
from densekit.index.filters import Filter
from densekit.index.live import Delete, Upsert, WriteResult
from densekit.index.sharded_index import combined_manifest
from densekit.index.sharded_manifest import ShardedManifest, shard_of
from densekit.service.batching import QueueFull
from densekit.service.distributed.wire import Answer, RemoteModel, TooLong
from densekit.service.engines import Hit, InputTooLong, PartialHits, RerankEngine, RerankResult, Timings
from densekit.service.errors import ApiError
from densekit.service.metrics import ServiceMetrics

# /ready asks every shard for its status; a shard slower than this counts as down.
HEALTH_TIMEOUT_S = 5.0


class Unavailable(Exception):
    """A deployment did not answer: its replica died, the call timed out, or it cannot take requests."""

    def __init__(self, what: str, reason: str):
        self.what, self.reason = what, reason
        super().__init__(f"{what} is unavailable ({reason})")


async def call(method: Any, *args: Any, timeout_s: float, what: str) -> Answer:
    """`handle.method.remote(*args)` awaited for at most `timeout_s`."""
    try:
        return await asyncio.wait_for(_awaited(method.remote(*args)), timeout_s)
    except BackPressureError:
        raise QueueFull(f"{what} has a full queue") from None
    except TimeoutError:
        raise Unavailable(what, f"no answer within {timeout_s:g} s") from None
    except RayTaskError:
        raise  # the replica's code failed: a bug, answered 500 and logged
    except (RayError, DeploymentUnavailableError) as exc:
        raise Unavailable(what, type(exc).__name__) from None


async def _awaited(response: Any) -> Any:
    return await response


def _outage(exc: Unavailable, kind: str) -> ApiError:
    return ApiError(503, kind, f"{exc}; retry shortly", headers={"Retry-After": "1"})


def _add_timings(timings: Timings, stages: dict[str, float]) -> None:
    for stage, ms in stages.items():
        timings.add(stage, ms)


class RemoteEmbedEngine:
    """EmbedEngine's interface over the encoder deployment."""

    def __init__(self, handle: DeploymentHandle, model: RemoteModel, timeout_s: float, metrics: ServiceMetrics):
        self.handle = handle
        self.max_length = model.max_length
        self.timeout_s = timeout_s
        self.metrics = metrics

    async def embed(self, texts: list[str], mode: str, timings: Timings, truncate: bool = True) -> tuple[np.ndarray, list[int]]:
        try:
            answer = await call(self.handle.embed, texts, mode, truncate, timeout_s=self.timeout_s, what="the encoder")
        except Unavailable as exc:
            raise _outage(exc, "model_unavailable") from None
        value = answer.unwrap()
        if isinstance(value, TooLong):
            raise InputTooLong(value.position, value.tokens, value.limit)
        _add_timings(timings, answer.timings)
        for stage in ("queue", "encode"):
            self.metrics.stage.labels(stage).observe(answer.timings.get(stage, 0.0) / 1000)
        return value.vectors, value.counts

    async def stop(self, drain_timeout_s: float) -> None:
        """Nothing queues here: requests wait in the encoder deployment, which drains itself."""


class RemoteRerankEngine(RerankEngine):
    """RerankEngine's interface (its score scales included) over the reranker deployment."""

    def __init__(self, handle: DeploymentHandle, model: RemoteModel, timeout_s: float, metrics: ServiceMetrics):
        # No local batcher: the deployment batches, across every ingress replica.
        self.reranker = model
        self.handle = handle
        self.metrics = metrics
        self.max_length = model.max_length
        self.scores_are_probabilities = model.score_mode != "yes_logit"
        self.timeout_s = timeout_s

    async def score(self, query: str, documents: list[str], timings: Timings, count_tokens: bool = False) -> RerankResult:
        try:
            answer = await call(self.handle.score, query, documents, count_tokens, timeout_s=self.timeout_s, what="the reranker")
        except Unavailable as exc:
            raise _outage(exc, "model_unavailable") from None
        result = answer.unwrap()
        _add_timings(timings, answer.timings)
        for stage in ("queue", "rerank"):
            self.metrics.stage.labels(stage).observe(answer.timings.get(stage, 0.0) / 1000)
        return result

    async def stop(self, drain_timeout_s: float) -> None:
        """Nothing queues here (see RemoteEmbedEngine.stop)."""


class RemoteIndexView:
    """What the routes read off the served index (`state.index`): its manifest as one index,
    its document count and search device, as the shards last reported them."""

    def __init__(self, sharded: ShardedManifest):
        self.sharded = sharded
        self.names = [e.name for e in sharded.shards]
        self.counts = [e.doc_count for e in sharded.shards]
        self.devices = ["?"] * len(self.names)
        self.live_infos: list[dict | None] = [None] * len(self.names)
        self.manifest = combined_manifest(sharded, sum(self.counts))

    def note(self, shard: int, answer: Answer) -> None:
        if answer.documents is not None:
            self.counts[shard] = answer.documents
            self.manifest.doc_count = sum(self.counts)

    def note_status(self, shard: int, answer: Answer) -> None:
        self.note(shard, answer)
        status = answer.value or {}
        self.devices[shard] = status.get("search_device", "?")
        self.live_infos[shard] = status.get("live")

    @property
    def dim(self) -> int:
        return self.manifest.encoder.dim

    def __len__(self) -> int:
        return sum(self.counts)

    @property
    def search_device(self) -> str:
        return ",".join(sorted(set(self.devices)))


class RemoteLiveView:
    """`state.live` of a distributed index with live updates: the shards own their logs; this
    reports them as ShardedLiveIndex.info does."""

    def __init__(self, view: RemoteIndexView):
        self.view = view

    @property
    def failed(self) -> str | None:
        return next((i["failed"] for i in self.view.live_infos if i and i.get("failed")), None)

    def info(self) -> dict:
        shards = [i for i in self.view.live_infos if i]
        return {
            "wal_dir": str(Path(shards[0]["wal_dir"]).parent) if shards else "",
            "accepts_removal": all(i["accepts_removal"] for i in shards),
            "log_seq": sum(i["log_seq"] for i in shards),
            "snapshot_seq": sum(i["snapshot_seq"] for i in shards),
            "records_since_snapshot": sum(i["records_since_snapshot"] for i in shards),
            "failed": self.failed,
        }

    def close(self, snapshot: bool = True) -> None:
        """The shard replicas snapshot and release their own logs when they stop."""


class RemoteShardsEngine:
    """IndexEngine's interface over one deployment per shard."""

    def __init__(
        self, shards: Sequence[DeploymentHandle], view: RemoteIndexView, allow_partial: bool, timeout_s: float, metrics: ServiceMetrics
    ):
        self.shards = list(shards)
        self.view = view
        self.allow_partial = allow_partial
        self.timeout_s = timeout_s
        self.metrics = metrics

    def _what(self, shard: int) -> str:
        return f"shard {self.view.names[shard]}"

    async def _on(
        self, shards: Sequence[int], method: str, args_of: Any, timeout_s: float | None = None
    ) -> dict[int, Answer | Unavailable]:
        """Call `method` on each shard concurrently (`args_of(shard)` -> its arguments)."""

        async def one(s: int) -> Answer | Unavailable:
            try:
                answer = await call(getattr(self.shards[s], method), *args_of(s), timeout_s=timeout_s or self.timeout_s, what=self._what(s))
            except Unavailable as exc:
                return exc
            self.view.note(s, answer)
            return answer

        return dict(zip(shards, await asyncio.gather(*(one(s) for s in shards))))

    def _refuse_down(self, down: dict[int, Unavailable], extra: str = "") -> None:
        if down:
            reasons = "; ".join(str(e) for e in down.values())
            raise ApiError(503, "shard_unavailable", f"{reasons}{extra}; retry shortly", headers={"Retry-After": "1"})

    async def search(
        self, vectors: np.ndarray, top_k: int, params: dict[str, int], timings: Timings, where: Filter | None = None
    ) -> list[list[Hit]]:
        everyone = range(len(self.shards))
        answers = await self._on(everyone, "search", lambda s: (vectors, top_k, params, where))
        down = {s: a for s, a in answers.items() if isinstance(a, Unavailable)}
        if down and (not self.allow_partial or len(down) == len(self.shards)):
            extra = (
                ""
                if self.allow_partial
                else ": the answer would miss its documents (the server answers without down shards only with --allow-partial)"
            )
            self._refuse_down(down, extra)
        got = {s: a for s, a in answers.items() if isinstance(a, Answer)}
        per_shard = {s: a.unwrap() for s, a in got.items()}  # a refusal (bad search_params) fails the request as in one process
        for stage in ("queue", "search"):
            timings.add(stage, max(a.timings.get(stage, 0.0) for a in got.values()))
        self.metrics.stage.labels("search").observe(timings.get("search", 0.0) / 1000)
        merged: list[list[Hit]] = []
        for q in range(vectors.shape[0]):
            hits = [h for s in sorted(per_shard) for h in per_shard[s][q]]
            hits.sort(key=lambda h: -h.score)  # stable: ties keep shard order
            merged.append(hits[:top_k])
        if down:
            return PartialHits(merged, [self.view.names[s] for s in sorted(down)])
        return merged

    async def lexical(self, texts: list[str], top_k: int, timings: Timings, where: Filter | None = None) -> list[list[Hit]]:
        raise ConfigError(
            "mode", "a sharded index has no lexical (BM25) part; lexical and hybrid search need an unsharded index built with --lexical"
        )

    async def get(self, doc_id: str, timings: Timings) -> dict | None:
        s = shard_of(doc_id, len(self.shards))
        answer = (await self._on([s], "get", lambda _: (doc_id,)))[s]
        if isinstance(answer, Unavailable):
            self._refuse_down({s: answer})
            raise AssertionError("unreachable")
        _add_timings(timings, answer.timings)
        return answer.unwrap()

    def _split(self, op: Upsert | Delete) -> dict[int, Upsert | Delete]:
        n = len(self.shards)
        if isinstance(op, Upsert):
            by_shard: dict[int, list[int]] = defaultdict(list)
            for i, d in enumerate(op.docs):
                by_shard[shard_of(d["id"], n)].append(i)
            vectors = np.asarray(op.vectors)
            return {s: Upsert([op.docs[i] for i in idxs], vectors[idxs]) for s, idxs in by_shard.items()}
        ids: dict[int, list[str]] = defaultdict(list)
        for doc_id in op.ids:
            ids[shard_of(doc_id, n)].append(doc_id)
        return {s: Delete(group) for s, group in ids.items()}

    async def write(self, op: Upsert | Delete, timings: Timings) -> WriteResult:
        """The write's parts on the shards that own them. A write that spans shards is checked
        on each first (a refusal refuses all of it), as ShardedLiveIndex does in one process."""
        parts = self._split(op)
        if len(parts) > 1:
            checks = await self._on(list(parts), "check", lambda s: (parts[s],))
            self._refuse_down({s: a for s, a in checks.items() if isinstance(a, Unavailable)}, ": nothing was written")
            held = {s: bool(a.unwrap()) for s, a in checks.items() if isinstance(a, Answer)}
            if isinstance(op, Delete):
                parts = {s: p for s, p in parts.items() if held[s]}
                if not parts:
                    raise DocumentNotFoundError(f"no document with id {', '.join(map(repr, op.ids[:5]))}")
        answers = await self._on(list(parts), "write", lambda s: (parts[s],))
        down = {s: a for s, a in answers.items() if isinstance(a, Unavailable)}
        if down:
            written = [self.view.names[s] for s in answers if s not in down]
            self._refuse_down(
                down, f": its part of the write may be lost, the parts on {', '.join(written)} were written" if written else ""
            )
        results = [a.unwrap() for a in answers.values() if isinstance(a, Answer)]
        for a in answers.values():
            if isinstance(a, Answer):
                _add_timings(timings, a.timings)
        self.metrics.documents.set(len(self.view))
        return WriteResult(max(r.seq for r in results), sum(r.count for r in results))

    async def health(self) -> str | None:
        everyone = range(len(self.shards))
        answers = await self._on(everyone, "status", lambda s: (), timeout_s=min(HEALTH_TIMEOUT_S, self.timeout_s))
        for s, a in answers.items():
            if isinstance(a, Answer):
                self.view.note_status(s, a)
        down = [str(a) for a in answers.values() if isinstance(a, Unavailable)]
        self.metrics.documents.set(len(self.view))
        return "; ".join(down) or None

    async def stop(self, drain_timeout_s: float) -> None:
        """Nothing queues here: each shard replica drains its own queue when it stops."""
