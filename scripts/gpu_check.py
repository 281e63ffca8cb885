"""Measurements for scripts/gpu_check.sh: the device densekit picks, corpus-encoding
throughput, CPU/GPU nDCG agreement, and a short HTTP load on /embed and /search.

    python scripts/gpu_check.py probe   [--model M]            # exit 3 without CUDA (unless --allow-cpu)
    python scripts/gpu_check.py encode  --data DIR [--model M]  # docs/s over the whole corpus
    python scripts/gpu_check.py compare GPU_METRICS CPU_METRICS [--tol 0.002]
    python scripts/gpu_check.py load    --url URL --route embed|search --data DIR [--seconds 20] [--concurrency 32]

Each prints one JSON line (prefixed by its name) that the shell script collects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path


def _emit(name: str, payload: dict) -> None:
    print(f"{name} {json.dumps(payload, sort_keys=True)}", flush=True)


def probe(args) -> int:
    import faiss
    import torch

    from densekit import devices
    from densekit.index import gpu
    from densekit.models import resolve_encoder_name

    device = devices.resolve_device(args.device)
    dtype = devices.resolve_dtype(device, args.dtype, model=resolve_encoder_name(args.model))
    info = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "faiss": getattr(faiss, "__version__", "?"),
        "faiss_gpus": gpu.faiss_gpu_count(),
        "device": device,
        "dtype": dtype,
        "faiss_device": gpu.resolve_faiss_device(args.faiss_device, device),
    }
    _emit("probe", info)
    if not info["cuda_available"] and not args.allow_cpu:
        print(
            "no CUDA device visible to torch: install a CUDA build of torch (PyPI's default Linux wheel,\n"
            "e.g. `make install TORCH_SPEC=torch==2.13.0`) and a GPU faiss (`pip uninstall -y faiss-cpu &&\n"
            "pip install faiss-cuda==1.14.1.post4`), or set ALLOW_CPU=1 to run this check on the CPU.",
            file=sys.stderr,
        )
        return 3
    return 0


def encode(args) -> int:
    import torch

    from densekit.data.beir import document_text, load_corpus
    from densekit.encoder import Encoder

    corpus = load_corpus(Path(args.data))
    texts = [document_text(d) for d in corpus.values()]
    enc = Encoder(args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    enc.encode_documents(texts[: args.batch_size])  # warm-up: kernels, allocator
    if enc.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    vecs = enc.encode_documents(texts)
    if enc.device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    _emit(
        "encode",
        {
            "docs": len(texts),
            "seconds": round(dt, 3),
            "docs_per_s": round(len(texts) / dt, 1),
            "device": enc.device,
            "dtype": str(next(enc.model.parameters()).dtype).removeprefix("torch."),
            "batch_size": args.batch_size,
            "dim": int(vecs.shape[1]),
        },
    )
    return 0


def compare(args) -> int:
    gpu = json.loads(Path(args.gpu).read_text())["metrics"]
    cpu = json.loads(Path(args.cpu).read_text())["metrics"]
    delta = abs(gpu["ndcg@10"] - cpu["ndcg@10"])
    ok = delta <= args.tol
    _emit(
        "compare",
        {
            "ndcg@10_gpu": round(gpu["ndcg@10"], 4),
            "ndcg@10_cpu": round(cpu["ndcg@10"], 4),
            "abs_delta": round(delta, 5),
            "tol": args.tol,
            "ok": ok,
        },
    )
    return 0 if ok else 4


def _queries(data: Path) -> list[str]:
    from densekit.data.beir import load_queries

    return [q for q in load_queries(data).values() if q.strip()]


async def _load(args) -> dict:
    import httpx

    queries = _queries(Path(args.data))
    lat: list[float] = []
    status: dict[int, int] = {}
    items = 0
    deadline = time.perf_counter() + args.seconds

    async def client(worker: int, http: httpx.AsyncClient) -> None:
        nonlocal items
        i = worker * 7919
        while time.perf_counter() < deadline:
            if args.route == "embed":
                batch = [queries[(i + j) % len(queries)] for j in range(args.batch)]
                req = http.post("/embed", json={"inputs": batch, "normalize": True, "truncate": True})
                n = len(batch)
            else:
                req = http.post("/search", json={"query": queries[i % len(queries)], "top_k": args.top_k})
                n = 1
            i += args.batch
            t0 = time.perf_counter()
            r = await req
            lat.append(time.perf_counter() - t0)
            status[r.status_code] = status.get(r.status_code, 0) + 1
            if r.status_code == 200:
                items += n

    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=args.url, timeout=60, limits=limits) as http:
        info = (await http.get("/info")).json()
        t0 = time.perf_counter()
        await asyncio.gather(*(client(w, http) for w in range(args.concurrency)))
        wall = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [lat[0]] * 99
    return {
        "route": args.route,
        "concurrency": args.concurrency,
        "batch": args.batch if args.route == "embed" else 1,
        "requests": len(lat),
        "status": {str(k): v for k, v in sorted(status.items())},
        "seconds": round(wall, 2),
        ("sentences_per_s" if args.route == "embed" else "queries_per_s"): round(items / wall, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p95_ms": round(q[94] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "server_device": info.get("device"),
        "server_search_device": (info.get("index") or {}).get("search_device"),
        "server_model": info.get("model"),
    }


def load(args) -> int:
    out = asyncio.run(_load(args))
    _emit("load", out)
    bad = {k: v for k, v in out["status"].items() if not k.startswith("2")}
    return 5 if bad or out["requests"] == 0 else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    common.add_argument("--device", default="auto")
    common.add_argument("--dtype", default="auto")
    s = sub.add_parser("probe", parents=[common])
    s.add_argument("--faiss-device", default="auto")
    s.add_argument("--allow-cpu", action="store_true")
    s = sub.add_parser("encode", parents=[common])
    s.add_argument("--data", required=True)
    s.add_argument("--batch-size", type=int, default=256)
    s = sub.add_parser("compare")
    s.add_argument("gpu")
    s.add_argument("cpu")
    s.add_argument("--tol", type=float, default=0.002)
    s = sub.add_parser("load")
    s.add_argument("--url", required=True)
    s.add_argument("--route", choices=("embed", "search"), required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--seconds", type=float, default=20)
    s.add_argument("--concurrency", type=int, default=32)
    s.add_argument("--batch", type=int, default=32, help="sentences per /embed request")
    s.add_argument("--top-k", type=int, default=10)
    args = p.parse_args(argv)
    return {"probe": probe, "encode": encode, "compare": compare, "load": load}[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
