"""Load test of an HTTP embedding/search server on loopback: N concurrent clients for a fixed
time, a weighted mix of requests, every response checked.

    # spawn densekit (127.0.0.1) and drive it:
    python scripts/load_test.py --spawn --index runs/service/scifact-index --reranker PATH \
        --clients 32 --duration 60 --mix search=3,search_rerank=1,rerank=1,embed=3 --out runs/service/load.json
    # an already running server (densekit or any TEI/OpenAI-shaped embedder):
    python scripts/load_test.py --url http://127.0.0.1:7997 --mix embed=1 --embed-style openai --embed-path /embeddings

Checks: no 5xx, every 200 body valid for its route (hits sorted, rerank indices a
permutation, one vector of the model's dimension per input), every 429 the documented
`overloaded` error. Reports p50/p95/p99 latency per kind and overall, requests/s and, for
embed, sentences/s. Exit code 1 when a check fails. Loops are bounded by --duration and
--max-requests, and only loopback addresses are accepted as targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

LOOPBACK = ("127.0.0.1", "localhost", "::1")


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


def _pct(xs: list[float]) -> dict[str, float]:
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


def make_request(kind: str, rng: random.Random, texts: list[str], args) -> tuple[str, dict]:
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


async def client_loop(
    cid: int, client: httpx.AsyncClient, kinds, weights, texts, args, deadline: float, stats: Stats, budget: list[int], dim
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


def spawn(args, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "densekit.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    if args.index:
        cmd += ["--index", args.index]
    if args.model:
        cmd += ["--model", args.model]
    if args.reranker:
        cmd += ["--reranker", args.reranker]
    for flag in ("max_queue", "max_batch_tokens", "max_wait_ms", "max_client_batch"):
        v = getattr(args, flag)
        if v is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(v)]
    if args.read_only:
        cmd += ["--read-only"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(args.server_log, "ab") if args.server_log else subprocess.DEVNULL)


def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float, path: str = "/ready") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout}s")


async def run(args, url: str) -> dict:
    texts = sentences(args.data_dir)
    mix = dict(part.split("=") for part in args.mix.split(","))
    kinds = list(mix)
    weights = [float(mix[k]) for k in kinds]
    dim = None
    try:
        info = httpx.get(url + "/info", timeout=5).json()
        dim = info.get("model_dim")
    except Exception:
        info = None
    stats = Stats()
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as client:
        # Warm-up (not counted): first forward passes allocate.
        warm = Stats()
        await asyncio.gather(
            *(
                client_loop(i, client, kinds, weights, texts, args, time.monotonic() + args.warmup, warm, [10**9], dim)
                for i in range(min(4, args.clients))
            )
        )
        t0 = time.monotonic()
        budget = [args.max_requests]
        await asyncio.gather(
            *(client_loop(i, client, kinds, weights, texts, args, t0 + args.duration, stats, budget, dim) for i in range(args.clients))
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
        "latency_all": _pct(all_lat),
        "latency": {k: _pct(v) for k, v in stats.lat.items()},
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="server to drive (loopback only)")
    p.add_argument("--spawn", action="store_true", help="start `densekit serve` on 127.0.0.1 and stop it afterwards")
    p.add_argument("--index", help="--spawn: index folder")
    p.add_argument("--model", help="--spawn: bi-encoder")
    p.add_argument("--reranker", help="--spawn: reranker")
    p.add_argument("--read-only", action="store_true", help="--spawn: no live updates")
    p.add_argument("--max-queue", type=int)
    p.add_argument("--max-batch-tokens", type=int)
    p.add_argument("--max-wait-ms", type=float)
    p.add_argument("--max-client-batch", type=int)
    p.add_argument("--server-log", help="--spawn: append the server's stderr here")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of measured load")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--max-requests", type=int, default=1_000_000, help="stop after this many requests whatever the time")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument(
        "--mix", default="search=3,search_rerank=1,rerank=1,embed=3", help="kind=weight,...: search, search_rerank, rerank, embed"
    )
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--rerank-top-n", type=int, default=20)
    p.add_argument("--rerank-docs", type=int, default=8)
    p.add_argument("--embed-batch", type=int, default=4, help="sentences per embed request")
    p.add_argument("--embed-style", choices=("tei", "openai"), default="tei")
    p.add_argument("--embed-path", help="default /embed (tei) or /v1/embeddings (openai)")
    p.add_argument("--model-name", default="model", help="openai style: the `model` field")
    p.add_argument("--data-dir", default=os.environ.get("DENSEKIT_DATA_DIR"))
    p.add_argument("--ready-path", default="/ready")
    p.add_argument("--out", help="write the JSON result here")
    args = p.parse_args(argv)
    proc = None
    if args.spawn:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        proc = spawn(args, port)
    elif args.url:
        url = args.url.rstrip("/")
        if urlparse(url).hostname not in LOOPBACK:
            raise SystemExit("only loopback targets are allowed")
    else:
        raise SystemExit("give --url or --spawn")
    try:
        wait_ready(url, proc, 300, args.ready_path)
        result = asyncio.run(run(args, url))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 1 if result["http_5xx_or_failed"] or result["invalid"] else 0


if __name__ == "__main__":
    sys.exit(main())
