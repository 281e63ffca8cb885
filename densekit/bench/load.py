"""Load test of an HTTP embedding/search server on loopback: N concurrent clients for a fixed
time, a weighted mix of requests, every response checked.

Checks: no 5xx, every 200 body valid for its route (hits sorted, rerank indices a
permutation, one vector of the model's dimension per input), every 429 the documented
`overloaded` error. Reports p50/p95/p99 latency per kind and overall, requests/s and, for
embed, sentences/s. Loops are bounded by the duration and a request budget, and only
loopback addresses are accepted as targets.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

from densekit.bench.servers import LOOPBACK, free_port, open_log, serve_command, stop, wait_ready
from densekit.errors import InvalidInputError
from densekit.settings import Settings

DEFAULT_MIX = "search=3,search_rerank=1,rerank=1,embed=3"
KINDS = ("search", "search_rerank", "rerank", "embed")
# For a server whose /info does not say (an older densekit, another TEI-style server).
SERVER_KEEPALIVE_DEFAULT_S = float(Settings.model_fields["keep_alive_timeout_s"].default)


@dataclass
class LoadOptions:
    """What to drive and how; field names match the `densekit bench load` flags."""

    url: str | None = None
    spawn: bool = False
    index: str | None = None
    model: str | None = None
    reranker: str | None = None
    read_only: bool = False
    max_queue: int | None = None
    max_batch_tokens: int | None = None
    max_wait_ms: float | None = None
    max_client_batch: int | None = None
    server_log: str | None = None
    clients: int = 32
    duration: float = 60.0
    warmup: float = 3.0
    max_requests: int = 1_000_000
    timeout: float = 60.0
    mix: str = DEFAULT_MIX
    top_k: int = 10
    rerank_top_n: int = 20
    rerank_docs: int = 8
    embed_batch: int = 4
    embed_style: str = "tei"
    embed_path: str | None = None
    model_name: str = "model"
    data_dir: str | None = None
    ready_path: str = "/ready"
    out: str | None = None


def parse_mix(mix: str) -> dict[str, str]:
    """`kind=weight,...` -> {kind: weight}; kinds are search, search_rerank, rerank, embed."""
    out: dict[str, str] = {}
    for part in mix.split(","):
        kind, sep, weight = part.partition("=")
        if not sep or kind not in KINDS:
            raise InvalidInputError(f"--mix: expected kind=weight with kind in {', '.join(KINDS)}, got {part!r}")
        try:
            float(weight)
        except ValueError:
            raise InvalidInputError(f"--mix: weight of {kind} is not a number: {weight!r}") from None
        out[kind] = weight
    return out


def sentences(data_dir: str | None, n: int = 2000, seed: int = 0) -> list[str]:
    """Real query-like and passage-like sentences from SciFact when available, else synthetic."""
    rng = random.Random(seed)
    out: list[str] = []
    if data_dir and (Path(data_dir) / "scifact" / "queries.jsonl").is_file():
        for name in ("queries.jsonl", "corpus.jsonl"):
            with open(Path(data_dir) / "scifact" / name, encoding="utf-8") as fh:
                for line in fh:
                    row = json.loads(line)
                    text = row.get("text") or ""
                    # One sentence of a passage: the short-text regime of search and embed traffic.
                    out.append(text.split(". ")[0][:400] if name == "corpus.jsonl" else text)
                    if len(out) >= n * (1 if name == "queries.jsonl" else 2):
                        break
    if not out:
        words = "dense retrieval vector index query document faiss embedding model search rank protein cell gene effect study".split()
        out = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 24))) for _ in range(n)]
    rng.shuffle(out)
    return [s for s in out if s.strip()]


class Stats:
    def __init__(self) -> None:
        self.lat: dict[str, list[float]] = {}
        self.status: dict[str, dict[int, int]] = {}
        self.invalid: list[str] = []
        self.sentences = 0
        self.errors: list[str] = []
        self.stage_ms: dict[str, list[float]] = {}

    def add(self, kind: str, status: int, seconds: float) -> None:
        self.status.setdefault(kind, {}).setdefault(status, 0)
        self.status[kind][status] += 1
        if status == 200:
            self.lat.setdefault(kind, []).append(seconds)


def latency_percentiles(xs: list[float]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds of latencies given in seconds, and their count ({} when none)."""
    if not xs:
        return {}
    a = np.array(xs) * 1000
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "n": len(xs),
    }


def check_body(kind: str, body, req: dict, dim: int | None, embed_style: str) -> str | None:
    """What is wrong with a 200 response body, or None when it is valid for its route."""
    if kind.startswith("search"):
        hits = body.get("hits")
        if (
            not isinstance(hits, list)
            or not hits
            or not all(isinstance(h.get("id"), str) and isinstance(h.get("score"), float) for h in hits)
        ):
            return "search: hits missing or malformed"
        scores = [h["score"] for h in hits]
        if scores != sorted(scores, reverse=True) or len(hits) > req["top_k"]:
            return "search: hits not sorted by score or too many"
        if kind == "search_rerank" and not all("dense_score" in h for h in hits):
            return "search_rerank: no dense_score"
    elif kind == "rerank":
        if not isinstance(body, list) or sorted(x["index"] for x in body) != list(range(len(req["texts"]))):
            return "rerank: indices are not a permutation of the texts"
        scores = [x["score"] for x in body]
        if scores != sorted(scores, reverse=True):
            return "rerank: not sorted"
    elif kind == "embed":
        n = len(req["inputs"] if "inputs" in req else req["input"])
        vecs = body if embed_style == "tei" else [d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])]
        if not isinstance(vecs, list) or len(vecs) != n:
            return f"embed: {len(vecs) if isinstance(vecs, list) else '?'} vectors for {n} inputs"
        if dim is not None and any(len(v) != dim for v in vecs):
            return "embed: wrong dimension"
        if any(not all(isinstance(x, float) for x in v) for v in vecs[:1]):
            return "embed: non-float values"
    return None


def make_request(kind: str, rng: random.Random, texts: list[str], args: LoadOptions) -> tuple[str, dict]:
    if kind == "search":
        return "/search", {"query": rng.choice(texts), "top_k": args.top_k}
    if kind == "search_rerank":
        return "/search", {"query": rng.choice(texts), "top_k": args.top_k, "rerank": True, "rerank_top_n": args.rerank_top_n}
    if kind == "rerank":
        return "/rerank", {"query": rng.choice(texts), "texts": rng.sample(texts, args.rerank_docs)}
    batch = [rng.choice(texts) for _ in range(args.embed_batch)]
    if args.embed_style == "tei":
        return args.embed_path or "/embed", {"inputs": batch}
    return args.embed_path or "/v1/embeddings", {"input": batch, "model": args.model_name}


async def _client_loop(
    cid: int, client: httpx.AsyncClient, kinds, weights, texts, args: LoadOptions, deadline: float, stats: Stats, budget: list[int], dim
):
    rng = random.Random(1000 + cid)
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        kind = rng.choices(kinds, weights)[0]
        path, req = make_request(kind, rng, texts, args)
        t0 = time.perf_counter()
        try:
            r = await client.post(path, json=req)
        except httpx.HTTPError as exc:
            stats.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            stats.add(kind, 0, 0.0)
            continue
        dt = time.perf_counter() - t0
        stats.add(kind, r.status_code, dt)
        if r.status_code == 200:
            problem = check_body(kind, r.json(), req, dim, args.embed_style)
            if problem:
                stats.invalid.append(problem)
            if kind == "embed":
                stats.sentences += args.embed_batch
            if kind == "search" and "x-encode-time" in r.headers:
                stats.stage_ms.setdefault("client_total", []).append(dt * 1000)
                for h in ("x-total-time", "x-encode-time", "x-search-time", "x-queue-time", "x-tokenize-time"):
                    if h in r.headers:
                        stats.stage_ms.setdefault(h, []).append(float(r.headers[h]))
        elif r.status_code == 429:
            body = r.json()
            if body.get("error_type") != "overloaded":
                stats.invalid.append(f"429 without error_type overloaded: {body}")
        elif r.status_code >= 500:
            stats.invalid.append(f"{kind}: {r.status_code} {r.text[:200]}")
        else:
            stats.invalid.append(f"{kind}: unexpected {r.status_code} {r.text[:200]}")


def spawn_server(opts: LoadOptions, port: int) -> subprocess.Popen:
    """`densekit serve` on 127.0.0.1:port with the server flags of `opts`."""
    extra: list[str] = []
    for flag in ("index", "model", "reranker", "max_queue", "max_batch_tokens", "max_wait_ms", "max_client_batch"):
        v = getattr(opts, flag)
        if v is not None:
            extra += [f"--{flag.replace('_', '-')}", str(v)]
    if opts.read_only:
        extra += ["--read-only"]
    # OpenAI-style requests name the model: serve it under the name the load sends.
    extra += ["--served-model-name", opts.model_name]
    return subprocess.Popen(serve_command(port, *extra), stdout=subprocess.DEVNULL, stderr=open_log(opts.server_log))


def client_keepalive_expiry(info: dict | None) -> float:
    """Seconds the load client keeps an idle connection: half the server's keep-alive timeout,
    and never more than half the default one.

    httpx's default (5 s) equals uvicorn's, so a connection idle for just under 5 s can be
    reused at the moment the server closes it; the request then fails with "Server
    disconnected" although the server did nothing wrong. Expiring first on the client side
    keeps such failures out of the count, so a transport error in the result is the server's.
    The cap: behind Ray Serve the proxy's own timeout applies, not the one /info reports, and
    a short expiry only costs the odd new connection.
    """
    server_s = ((info or {}).get("limits") or {}).get("keep_alive_timeout_s") or SERVER_KEEPALIVE_DEFAULT_S
    return max(0.5, min(float(server_s), SERVER_KEEPALIVE_DEFAULT_S) / 2)


async def _drive(args: LoadOptions, url: str) -> dict:
    texts = sentences(args.data_dir)
    mix = parse_mix(args.mix)
    kinds = list(mix)
    weights = [float(mix[k]) for k in kinds]
    dim = None
    try:
        info = httpx.get(url + "/info", timeout=5).json()
        dim = info.get("model_dim")
    except Exception:
        info = None
    stats = Stats()
    limits = httpx.Limits(
        max_connections=args.clients, max_keepalive_connections=args.clients, keepalive_expiry=client_keepalive_expiry(info)
    )
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as client:
        # Warm-up (not counted): first forward passes allocate.
        warm = Stats()
        await asyncio.gather(
            *(
                _client_loop(i, client, kinds, weights, texts, args, time.monotonic() + args.warmup, warm, [10**9], dim)
                for i in range(min(4, args.clients))
            )
        )
        t0 = time.monotonic()
        budget = [args.max_requests]
        await asyncio.gather(
            *(_client_loop(i, client, kinds, weights, texts, args, t0 + args.duration, stats, budget, dim) for i in range(args.clients))
        )
        elapsed = time.monotonic() - t0
    total_200 = sum(len(v) for v in stats.lat.values())
    all_lat = [x for v in stats.lat.values() for x in v]
    five_xx = sum(c for s in stats.status.values() for code, c in s.items() if code >= 500 or code == 0)
    n429 = sum(s.get(429, 0) for s in stats.status.values())
    result = {
        "url": url,
        "clients": args.clients,
        "duration_s": round(elapsed, 2),
        "mix": mix,
        "requests": sum(c for s in stats.status.values() for c in s.values()),
        "ok": total_200,
        "status": {k: {str(c): n for c, n in v.items()} for k, v in stats.status.items()},
        "http_429": n429,
        "http_5xx_or_failed": five_xx,
        "invalid": len(stats.invalid),
        "invalid_examples": stats.invalid[:5],
        "transport_errors": stats.errors[:5],
        "throughput_rps": round(total_200 / elapsed, 2),
        "latency_all": latency_percentiles(all_lat),
        "latency": {k: latency_percentiles(v) for k, v in stats.lat.items()},
        "embed_sentences_per_s": round(stats.sentences / elapsed, 2) if stats.sentences else None,
        "embed_batch": args.embed_batch,
    }
    if stats.stage_ms.get("client_total"):
        # Share of a /search request's client-side latency spent outside encoder + faiss
        # (HTTP, JSON, queueing, tokenising), at the median of per-request shares.
        ct = np.array(stats.stage_ms["client_total"])
        inside = np.array(stats.stage_ms["x-encode-time"]) + np.array(stats.stage_ms["x-search-time"])
        share = (ct - inside) / ct
        result["search_outside_share_median"] = round(float(np.median(share)), 4)
        result["search_stage_median_ms"] = {k: round(float(np.median(v)), 3) for k, v in stats.stage_ms.items()}
    if info:
        result["server_info"] = {k: info.get(k) for k in ("model", "backend", "device", "limits")}
    return result


def run_load(opts: LoadOptions) -> dict:
    """Drive `opts.url` (or a server spawned for the run) and return the result; written to `opts.out` too."""
    from densekit.atomic import write_text_atomic

    proc = None
    if opts.spawn:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = spawn_server(opts, port)
    elif opts.url:
        url = opts.url.rstrip("/")
        if urlparse(url).hostname not in LOOPBACK:
            raise InvalidInputError("only loopback targets are allowed")
    else:
        raise InvalidInputError("give --url or --spawn")
    parse_mix(opts.mix)
    try:
        wait_ready(url, proc, opts.ready_path, 300)
        result = asyncio.run(_drive(opts, url))
    finally:
        if proc is not None:
            stop(proc)
    if opts.out:
        Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(opts.out, json.dumps(result, indent=2) + "\n")
    return result


def failed(result: dict) -> bool:
    """True when the run saw a 5xx, a transport failure or an invalid response."""
    return bool(result["http_5xx_or_failed"] or result["invalid"])
