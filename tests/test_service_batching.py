"""DynamicBatcher: token budget, bounded queue (429 at once), the wait for company,
per-job errors, graceful drain; plus the structured log format."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pytest

from densekit.service.batching import BatcherStopped, DynamicBatcher, QueueFull


class Recorder:
    def __init__(self, gate: threading.Event | None = None):
        self.batches: list[list] = []
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, payloads):
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(list(payloads))
        return [ValueError(f"bad {p}") if isinstance(p, str) and p.startswith("bad") else p * 10 for p in payloads]


def run(coro):
    return asyncio.run(coro)


def test_jobs_share_a_batch_up_to_the_token_budget():
    rec = Recorder()

    async def main():
        b = DynamicBatcher("t", rec, max_batch_cost=6, max_wait_ms=0, max_queue=100)
        b.start()
        results = await asyncio.gather(*(b.submit(i, cost=3) for i in (1, 2, 3)))
        await b.stop()
        return [r for r, _ in results], [job for _, job in results]

    results, jobs = run(main())
    assert results == [10, 20, 30]
    assert rec.batches == [[1, 2], [3]]
    assert [j.batch_jobs for j in jobs] == [2, 2, 1] and jobs[0].batch_cost == 6


def test_a_job_over_the_budget_runs_alone():
    rec = Recorder()

    async def main():
        b = DynamicBatcher("t", rec, max_batch_cost=4, max_wait_ms=0, max_queue=100)
        await asyncio.gather(b.submit(1, cost=10), b.submit(2, cost=1), b.submit(3, cost=1))
        await b.stop()

    run(main())
    assert rec.batches == [[1], [2, 3]]


def test_queue_bound_refuses_at_once():
    gate = threading.Event()
    rec = Recorder(gate)

    async def main():
        b = DynamicBatcher("t", rec, max_batch_cost=1, max_wait_ms=0, max_queue=2)
        first = asyncio.ensure_future(b.submit(1, cost=1))
        while not rec.entered.is_set():  # job 1 is inside the model call
            await asyncio.sleep(0.001)
        waiting = [asyncio.ensure_future(b.submit(i, cost=1)) for i in (2, 3)]
        await asyncio.sleep(0)
        assert b.depth == 2 and b.full()
        with pytest.raises(QueueFull):
            await b.submit(4, cost=1)
        gate.set()
        out = [r for r, _ in await asyncio.gather(first, *waiting)]
        await b.stop()
        return out

    assert run(main()) == [10, 20, 30]


def test_an_error_fails_only_its_own_job():
    rec = Recorder()

    async def main():
        b = DynamicBatcher("t", rec, max_batch_cost=100, max_wait_ms=0, max_queue=10)
        res = await asyncio.gather(b.submit(1, 1), b.submit("bad-x", 1), b.submit(2, 1), return_exceptions=True)
        await b.stop()
        return res

    ok1, bad, ok2 = run(main())
    assert ok1[0] == 10 and ok2[0] == 20 and isinstance(bad, ValueError)
    assert len(rec.batches) == 1


def test_a_forming_batch_waits_for_announced_requests_only():
    rec = Recorder()

    async def main(announce: bool):
        b = DynamicBatcher("t", rec, max_batch_cost=100, max_wait_ms=2000, max_queue=10)
        b.start()

        async def late():
            if announce:
                with b.arriving():
                    await asyncio.sleep(0.05)  # e.g. tokenising
                    return await b.submit(2, 1)
            await asyncio.sleep(0.05)
            return await b.submit(2, 1)

        await asyncio.gather(b.submit(1, 1), late())
        await b.stop()

    run(main(announce=True))
    assert rec.batches == [[1, 2]]
    rec.batches.clear()
    run(main(announce=False))
    assert rec.batches == [[1], [2]]  # a lone request on an idle batcher does not wait


def test_stop_drains_queued_jobs_then_refuses():
    gate = threading.Event()
    rec = Recorder(gate)

    async def main():
        b = DynamicBatcher("t", rec, max_batch_cost=1, max_wait_ms=0, max_queue=10)
        futs = [asyncio.ensure_future(b.submit(i, 1)) for i in range(4)]
        await asyncio.sleep(0.01)
        stopper = asyncio.ensure_future(b.stop(drain_timeout_s=10))
        await asyncio.sleep(0.01)
        with pytest.raises(BatcherStopped):
            await b.submit(99, 1)
        gate.set()
        await stopper
        return [f.result()[0] for f in futs]

    assert run(main()) == [0, 10, 20, 30]


def test_cancelled_jobs_are_skipped():
    gate = threading.Event()
    rec = Recorder(gate)

    async def main():
        b = DynamicBatcher("t", rec, max_batch_cost=10, max_wait_ms=0, max_queue=10)
        first = asyncio.ensure_future(b.submit(1, 1))
        while not rec.entered.is_set():
            await asyncio.sleep(0.001)
        gone = asyncio.ensure_future(b.submit(2, 1))
        kept = asyncio.ensure_future(b.submit(3, 1))
        await asyncio.sleep(0)
        gone.cancel()  # the client disconnected while queued
        gate.set()
        await first
        await kept
        await b.stop()

    run(main())
    assert rec.batches == [[1], [3]]


def test_json_log_lines_carry_the_request_id():
    from densekit.service.logging_setup import JsonFormatter, request_id_var

    rec = logging.LogRecord("densekit.access", logging.INFO, __file__, 1, "POST /search %d", (200,), None)
    rec.status = 200
    token = request_id_var.set("rid-1")
    try:
        line = json.loads(JsonFormatter().format(rec))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "rid-1" and line["msg"] == "POST /search 200" and line["status"] == 200 and line["level"] == "info"
