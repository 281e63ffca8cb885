"""Dynamic batching: concurrent requests share one model call.

Each model (bi-encoder, reranker, index) has one `DynamicBatcher`: a bounded queue of jobs,
each with a cost (tokens for models, queries for the index), and one worker coroutine that
takes jobs in arrival order until the batch's cost budget (`max_batch_tokens`) is used,
then runs the whole batch on the model's own thread, off the event loop.

When the queue holds `max_queue` jobs, `submit` raises `QueueFull` at once (the HTTP layer
answers 429), so an overloaded server sheds load instead of letting latency grow without
bound.

The small wait (`max_wait_ms`) is spent only when company is likely: while other requests
are already being prepared (tokenised) for this batcher, or when the previous batch held
several jobs (the server is under concurrent load, and clients whose answers just went out
are sending their next request). A lone request on an idle server never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The batcher's queue is at its bound; the caller should answer 429."""


class BatcherStopped(Exception):
    """The batcher is shutting down and takes no new jobs."""


@dataclass
class Job:
    payload: Any
    cost: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0
    finished: float = 0.0
    batch_jobs: int = 0
    batch_cost: int = 0

    @property
    def queue_ms(self) -> float:
        return (self.started - self.enqueued) * 1000

    @property
    def run_ms(self) -> float:
        return (self.finished - self.started) * 1000


# run_batch gets the payloads of one batch and returns one result per payload; a result
# that is an Exception instance fails only its own job.
RunBatch = Callable[[list[Any]], Sequence[Any]]


class DynamicBatcher:
    def __init__(
        self,
        name: str,
        run_batch: RunBatch,
        max_batch_cost: int,
        max_wait_ms: float,
        max_queue: int,
        on_batch: Callable[[str, int, int, float], None] | None = None,
        on_depth: Callable[[str, int], None] | None = None,
    ):
        self.name = name
        self.run_batch = run_batch
        self.max_batch_cost = max(1, int(max_batch_cost))
        self.max_wait_s = max(0.0, float(max_wait_ms)) / 1000.0
        self.max_queue = max(1, int(max_queue))
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._pending: deque[Job] = deque()
        self._arriving = 0
        self._last_batch_jobs = 0
        self._running = 0  # jobs inside the model call now
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"densekit-{name}")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False

    # ---- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Finish queued jobs (graceful shutdown), then stop the worker and its thread."""
        self._stopping = True
        deadline = time.monotonic() + drain_timeout_s
        while (self._pending or self._running) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(BatcherStopped(f"{self.name} is shutting down"))
        self._pending.clear()
        self._executor.shutdown(wait=True)

    async def run_in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn` on this batcher's model thread (serialised with its batches)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ---- submission -----------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._pending)

    def full(self) -> bool:
        return len(self._pending) >= self.max_queue

    def check_capacity(self) -> None:
        if self._stopping:
            raise BatcherStopped(f"{self.name} is shutting down")
        if self.full():
            raise QueueFull(f"the {self.name} queue is full ({self.max_queue} requests waiting); retry later")

    @contextlib.contextmanager
    def arriving(self):
        """Mark a request as on its way (being tokenised) so a forming batch may wait for it."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    async def submit(self, payload: Any, cost: int) -> tuple[Any, Job]:
        """Queue one job and wait for its result. Raises QueueFull at once when full."""
        self.check_capacity()
        if self._task is None:
            self.start()
        job = Job(payload, max(1, int(cost)), asyncio.get_running_loop().create_future())
        self._pending.append(job)
        if self._on_depth:
            self._on_depth(self.name, len(self._pending))
        assert self._wake is not None
        self._wake.set()
        result = await job.future
        return result, job

    # ---- the worker -------------------------------------------------------------------
    def _take(self, batch: list[Job], cost: int) -> int:
        while self._pending:
            nxt = self._pending[0]
            if nxt.future.done():  # the client went away while queued
                self._pending.popleft()
                continue
            if batch and cost + nxt.cost > self.max_batch_cost:
                break
            batch.append(self._pending.popleft())
            cost += nxt.cost
        return cost

    def _should_wait(self, batch: list[Job], cost: int) -> bool:
        if cost >= self.max_batch_cost or self.max_wait_s <= 0:
            return False
        if self._pending:  # the next job does not fit: this batch is as full as it gets
            return False
        return self._arriving > 0 or self._last_batch_jobs > 1

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            batch: list[Job] = []
            cost = self._take(batch, 0)
            deadline = loop.time() + self.max_wait_s
            while batch and self._should_wait(batch, cost):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), remaining)
                cost = self._take(batch, cost)
            if self._on_depth:
                self._on_depth(self.name, len(self._pending))
            if not batch:
                continue
            await self._run(loop, batch, cost)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[Job], cost: int) -> None:
        started = time.perf_counter()
        for job in batch:
            job.started = started
            job.batch_jobs = len(batch)
            job.batch_cost = cost
        self._running = len(batch)
        self._last_batch_jobs = len(batch)
        try:
            results = await loop.run_in_executor(self._executor, self.run_batch, [j.payload for j in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} jobs")
        except BaseException as exc:  # one failure answers every job of the batch
            finished = time.perf_counter()
            for job in batch:
                job.finished = finished
                if not job.future.done():
                    job.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.exception("%s batch of %d jobs failed", self.name, len(batch))
        else:
            finished = time.perf_counter()
            for job, res in zip(batch, results):
                job.finished = finished
                if job.future.done():
                    continue
                if isinstance(res, Exception):
                    job.future.set_exception(res)
                else:
                    job.future.set_result(res)
        finally:
            self._running = 0
        if self._on_batch:
            self._on_batch(self.name, len(batch), cost, finished - started)
