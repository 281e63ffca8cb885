"""Scatter-gather serving: `/search` on Ray Serve (one deployment per shard, the ingress fanning
each query out and merging the top-k) against the single-process server, same index, same
queries, same client load.

One server configuration ("cell") per call, each on a quiet machine:

1. the answers are checked first: for the first `check` queries the served top-k must equal
   the top-k of the reference index searched in this process with the same encoder (ids
   exactly, scores within `atol`); a mismatch stops the cell (BenchmarkStepError);
2. latency: one client, the queries one after another (after `warmup` untimed ones): p50,
   p95, p99, and the server's own stage times (x-encode-time, x-search-time headers);
3. throughput: `clients` concurrent clients for `duration` seconds: requests/s and latency.

Query encoding is part of every request (it is what a user of /search waits for); the API
takes no precomputed vectors, so `latency_minus_encode_p50_ms` (client latency less the
server's encode stage, per request) stands in for the vector-only path.
`summarise_fanout` sets every cell against the single-process one: the fan-out cost per query
is the difference of the p50 latencies.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from densekit.bench.load import check_body, latency_percentiles
from densekit.bench.servers import free_port, open_log, serve_command, stop, wait_ready
from densekit.bench.service import machine_description
from densekit.errors import BenchmarkStepError, InvalidInputError

SERVERS = ("single", "ray")
STAGE_HEADERS = ("x-total-time", "x-encode-time", "x-search-time", "x-queue-time")


@dataclass
class FanoutCellOptions:
    """Field names match the `densekit bench ray fanout` flags."""

    index: str  # the folder served: a sharded folder (both servers) or a plain index (single only)
    reference: str  # a plain index over the same documents, searched in this process for the check
    data: str  # BEIR folder whose test queries are sent
    out: str
    server: str = "single"
    queries: int = 300
    warmup: int = 20
    check: int = 5
    clients: int = 8
    duration: float = 20.0
    top_k: int = 10
    torch_threads: int = 2
    replica_cpus: float = 0.25
    atol: float = 1e-4
    server_log: str | None = None
    ready_timeout: float = 600.0


def queries_of_test_split(data: str | Path, n: int) -> list[str]:
    """The texts of the first `n` queries of the test split, in queries.jsonl order."""
    from densekit.data.beir import load_qrels, load_queries

    qrels = load_qrels(data, "test")
    texts = [t for q, t in load_queries(data).items() if q in qrels]
    if n < 1 or not texts:
        raise InvalidInputError(f"no test queries to send (asked for {n}; {data} has {len(texts)})")
    return texts[:n]


def shard_count(index: str | Path) -> int:
    from densekit.index.sharded_manifest import is_sharded, read_sharded_manifest

    return len(read_sharded_manifest(index).shards) if is_sharded(index) else 1


def reference_hits(reference: str | Path, queries: list[str], top_k: int) -> list[list[tuple[str, float]]]:
    """(id, score) top-k of each query on `reference`, searched in this process with the index's
    own encoder, one query per forward pass (as a sequential client's queries are encoded)."""
    import numpy as np

    from densekit.encoder import Encoder
    from densekit.index.loading import open_index

    with open_index(reference) as idx:
        spec = idx.manifest.encoder
        enc = Encoder(spec.path or spec.name, device="cpu")
        vectors = np.concatenate([enc.encode_queries([q]) for q in queries])
        return [[(h.id, float(h.score)) for h in hits] for hits in idx.search(vectors, top_k)]


def compare_hits(expected: list[list[tuple[str, float]]], got: list[list[tuple[str, float]]], atol: float) -> list[str]:
    """What differs between two answers to the same queries (ids in order, scores within `atol`); [] when equal."""
    problems = []
    if len(expected) != len(got):
        return [f"{len(got)} answers for {len(expected)} queries"]
    for i, (want, have) in enumerate(zip(expected, got)):
        if [d for d, _ in want] != [d for d, _ in have]:
            problems.append(f"query {i}: ids {[d for d, _ in have]} != {[d for d, _ in want]}")
            continue
        worst = max((abs(a - b) for (_, a), (_, b) in zip(want, have)), default=0.0)
        if worst > atol:
            problems.append(f"query {i}: scores differ by {worst:.2e} (> {atol:g})")
    return problems


def server_command(opts: FanoutCellOptions, port: int) -> list[str]:
    cmd = serve_command(port, "--index", str(opts.index), "--read-only")
    if opts.server == "ray":
        cmd += ["--engine", "ray", "--replica-cpus", f"{opts.replica_cpus:g}"]
    return cmd


def _stage_medians(stages: dict[str, list[float]]) -> dict[str, float]:
    return {k: round(statistics.median(v), 3) for k, v in stages.items() if v}


def sequential(url: str, queries: list[str], top_k: int, warmup: int) -> dict:
    """One client, one query after another; latency percentiles and the server's stage medians."""
    import httpx

    lat: list[float] = []
    minus_encode: list[float] = []
    stages: dict[str, list[float]] = {h: [] for h in STAGE_HEADERS}
    invalid: list[str] = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(warmup):
            client.post("/search", json={"query": queries[i % len(queries)], "top_k": top_k}).raise_for_status()
        for q in queries:
            req = {"query": q, "top_k": top_k}
            t0 = time.perf_counter()
            r = client.post("/search", json=req)
            dt = time.perf_counter() - t0
            if r.status_code != 200 or check_body("search", r.json(), req, None, "tei"):
                invalid.append(f"{r.status_code}: {r.text[:200]}")
                continue
            lat.append(dt)
            for h in STAGE_HEADERS:
                if h in r.headers:
                    stages[h].append(float(r.headers[h]))
            if "x-encode-time" in r.headers:
                minus_encode.append(dt - float(r.headers["x-encode-time"]) / 1000)
    out = {"latency": latency_percentiles(lat), "server_stage_median_ms": _stage_medians(stages), "invalid": len(invalid)}
    out["invalid_examples"] = invalid[:3]
    if minus_encode:
        out["latency_minus_encode_p50_ms"] = round(statistics.median(minus_encode) * 1000, 2)
    return out


async def _concurrent(url: str, queries: list[str], top_k: int, clients: int, duration: float) -> dict:
    import httpx

    lat: list[float] = []
    bad: list[str] = []

    async def client_loop(cid: int, client: httpx.AsyncClient, deadline: float) -> None:
        i = cid * len(queries) // clients
        while time.monotonic() < deadline:
            req = {"query": queries[i % len(queries)], "top_k": top_k}
            i += 1
            t0 = time.perf_counter()
            try:
                r = await client.post("/search", json=req)
            except httpx.HTTPError as exc:
                bad.append(f"{type(exc).__name__}: {exc}")
                continue
            dt = time.perf_counter() - t0
            if r.status_code != 200 or check_body("search", r.json(), req, None, "tei"):
                bad.append(f"{r.status_code}: {r.text[:200]}")
                continue
            lat.append(dt)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        t0 = time.monotonic()
        await asyncio.gather(*(client_loop(c, client, t0 + duration) for c in range(clients)))
        elapsed = time.monotonic() - t0
    return {
        "clients": clients,
        "duration_s": round(elapsed, 2),
        "ok": len(lat),
        "failed": len(bad),
        "failed_examples": bad[:3],
        "throughput_rps": round(len(lat) / elapsed, 2),
        "latency": latency_percentiles(lat),
    }


def served_hits(url: str, queries: list[str], top_k: int) -> list[list[tuple[str, float]]]:
    import httpx

    out = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for q in queries:
            r = client.post("/search", json={"query": q, "top_k": top_k, "include_text": False, "include_metadata": False})
            r.raise_for_status()
            out.append([(h["id"], float(h["score"])) for h in r.json()["hits"]])
    return out


def run_fanout_cell(opts: FanoutCellOptions) -> dict:
    """Check, then time one server configuration; the result is written to `opts.out` and returned."""
    from densekit.atomic import write_text_atomic

    if opts.server not in SERVERS:
        raise InvalidInputError(f"--server: expected single or ray, got {opts.server!r}")
    shards = shard_count(opts.index)
    if opts.server == "ray" and not Path(opts.index, "sharded_manifest.json").is_file():
        raise InvalidInputError("--server ray serves a sharded index folder")
    queries = queries_of_test_split(opts.data, opts.queries)
    expected = reference_hits(opts.reference, queries[: opts.check], opts.top_k)
    result: dict[str, Any] = {
        "server": opts.server,
        "shards": shards,
        "index": str(opts.index),
        "queries": len(queries),
        "top_k": opts.top_k,
        "torch_threads": opts.torch_threads,
        "replica_cpus": opts.replica_cpus if opts.server == "ray" else None,
        "machine": machine_description(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DENSEKIT_TORCH_THREADS": str(opts.torch_threads)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(server_command(opts, port), stdout=subprocess.DEVNULL, stderr=open_log(opts.server_log), env=env)
    try:
        wait_ready(url, proc, "/ready", opts.ready_timeout)
        result["ready_s"] = round(time.perf_counter() - t0, 1)
        problems = compare_hits(expected, served_hits(url, queries[: opts.check], opts.top_k), opts.atol)
        result["check"] = {"queries": opts.check, "equal": not problems, "problems": problems}
        if problems:
            raise BenchmarkStepError(f"{opts.server} server on {opts.index} answers differently from the reference: {problems[0]}")
        result["sequential"] = sequential(url, queries, opts.top_k, opts.warmup)
        result["concurrent"] = asyncio.run(_concurrent(url, queries, opts.top_k, opts.clients, opts.duration))
    finally:
        stop(proc)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(opts.out, json.dumps(result, indent=2) + "\n")
    return result


def cell_label(cell: dict) -> str:
    where = "Ray Serve" if cell["server"] == "ray" else "single process"
    return f"{where}, {cell['shards']} shard{'s' if cell['shards'] != 1 else ''}"


def summarise_fanout(cells: list[dict], baseline: str = "single process, 1 shard") -> dict:
    """Per configuration, medians over its cells of: sequential p50/p99, p50 less the encode
    stage, concurrent throughput and p50/p99; and the fan-out cost per query, the sequential
    p50 less the baseline's."""
    groups: dict[str, list[dict]] = {}
    for c in cells:
        groups.setdefault(cell_label(c), []).append(c)
    if baseline not in groups:
        raise InvalidInputError(f"no {baseline!r} cell to compare against")

    def med(cs: list[dict], *path: str) -> float | None:
        vals = []
        for c in cs:
            v: Any = c
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None
            if v is not None:
                vals.append(float(v))
        return round(statistics.median(vals), 2) if vals else None

    rows: dict[str, dict] = {}
    for label, cs in groups.items():
        rows[label] = {
            "runs": len(cs),
            "seq_p50_ms": med(cs, "sequential", "latency", "p50_ms"),
            "seq_p99_ms": med(cs, "sequential", "latency", "p99_ms"),
            "seq_minus_encode_p50_ms": med(cs, "sequential", "latency_minus_encode_p50_ms"),
            "encode_stage_ms": med(cs, "sequential", "server_stage_median_ms", "x-encode-time"),
            "search_stage_ms": med(cs, "sequential", "server_stage_median_ms", "x-search-time"),
            "throughput_rps": med(cs, "concurrent", "throughput_rps"),
            "conc_p50_ms": med(cs, "concurrent", "latency", "p50_ms"),
            "conc_p99_ms": med(cs, "concurrent", "latency", "p99_ms"),
            "clients": cs[0].get("concurrent", {}).get("clients"),
            "checked_equal": all(c.get("check", {}).get("equal") for c in cs),
        }
    base = rows[baseline]["seq_p50_ms"]
    for row in rows.values():
        row["fanout_cost_p50_ms"] = round(row["seq_p50_ms"] - base, 2) if row["seq_p50_ms"] is not None and base is not None else None
    return {"baseline": baseline, "configs": rows}


def markdown_table(summary: dict) -> str:
    """The summary as a BENCHMARKS.md table."""

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    lines = [
        "| server | runs | top-10 = reference | 1 client p50 ms | p99 ms | p50 less encode ms | fan-out cost p50 ms "
        "| clients | req/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in summary["configs"].items():
        cost = "-" if label == summary["baseline"] else f"{r['fanout_cost_p50_ms']:+.1f}"
        lines.append(
            f"| {label} | {r['runs']} | {'yes' if r['checked_equal'] else 'NO'} | {f(r['seq_p50_ms'])} | {f(r['seq_p99_ms'])} "
            f"| {f(r['seq_minus_encode_p50_ms'])} | {cost} | {r['clients']} | {f(r['throughput_rps'])} | {f(r['conc_p50_ms'])} "
            f"| {f(r['conc_p99_ms'])} |"
        )
    return "\n".join(lines) + "\n"


def load_cells(paths: list[Path]) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in paths]
