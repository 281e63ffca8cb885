"""GPU host check: what densekit picks (device, dtype, where faiss searches), corpus-encoding
throughput, GPU/CPU nDCG@10 agreement, and a short HTTP load on /embed and /search.

The steps (probe, encode, compare, load) are functions returning one JSON-able dict each;
`run_gpu_check` runs them all in order with an index build, two evaluations and a server,
as subprocesses of the `densekit` CLI, and writes everything under one folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from densekit.errors import BenchmarkStepError
from densekit.settings import DEFAULT_MODEL

NO_CUDA_HINT = (
    "no CUDA device visible to torch: install a CUDA build of torch (PyPI's default Linux wheel,\n"
    "e.g. `make install TORCH_SPEC=torch==2.13.0`) and a GPU faiss (`pip uninstall -y faiss-cpu &&\n"
    "pip install faiss-cuda==1.14.1.post4`), or pass --allow-cpu to run this check on the CPU."
)
# Exit codes of the check, kept from the shell script it replaces.
EXIT_NO_CUDA, EXIT_NDCG_MISMATCH, EXIT_LOAD_ERRORS = 3, 4, 5


def emit_line(name: str, payload: dict) -> str:
    """The `name {json}` line each step prints, which the summary is collected from."""
    return f"{name} {json.dumps(payload, sort_keys=True)}"


def probe(model: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto", faiss_device: str = "auto") -> dict:
    """Versions, visible GPUs and the device/dtype/faiss placement densekit resolves."""
    import faiss
    import torch

    from densekit import devices
    from densekit.index import gpu
    from densekit.models import resolve_encoder_name

    chosen = devices.resolve_device(device)
    return {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "faiss": getattr(faiss, "__version__", "?"),
        "faiss_gpus": gpu.faiss_gpu_count(),
        "device": chosen,
        "dtype": devices.resolve_dtype(chosen, dtype, model=resolve_encoder_name(model)),
        "faiss_device": gpu.resolve_faiss_device(faiss_device, chosen),
    }


def encode(data: Path, model: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto", batch_size: int = 256) -> dict:
    """Documents/s encoding the whole corpus of `data`, after a one-batch warm-up."""
    import torch

    from densekit.data.beir import document_text, load_corpus
    from densekit.encoder import Encoder

    corpus = load_corpus(Path(data))
    texts = [document_text(d) for d in corpus.values()]
    enc = Encoder(model, device=device, dtype=dtype, batch_size=batch_size)
    enc.encode_documents(texts[:batch_size])  # warm-up: kernels, allocator
    if enc.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    vecs = enc.encode_documents(texts)
    if enc.device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {
        "docs": len(texts),
        "seconds": round(dt, 3),
        "docs_per_s": round(len(texts) / dt, 1),
        "device": enc.device,
        "dtype": str(next(enc.model.parameters()).dtype).removeprefix("torch."),
        "batch_size": batch_size,
        "dim": int(vecs.shape[1]),
    }


def compare(gpu_metrics: Path, cpu_metrics: Path, tol: float = 0.002) -> dict:
    """nDCG@10 of two `densekit eval` metrics.json files and whether they agree within `tol`."""
    gpu = json.loads(Path(gpu_metrics).read_text())["metrics"]
    cpu = json.loads(Path(cpu_metrics).read_text())["metrics"]
    delta = abs(gpu["ndcg@10"] - cpu["ndcg@10"])
    return {
        "ndcg@10_gpu": round(gpu["ndcg@10"], 4),
        "ndcg@10_cpu": round(cpu["ndcg@10"], 4),
        "abs_delta": round(delta, 5),
        "tol": tol,
        "ok": delta <= tol,
    }


@dataclass
class RouteLoad:
    """One load step: `route` is embed or search."""

    url: str
    route: str
    data: Path
    seconds: float = 20
    concurrency: int = 32
    batch: int = 32  # sentences per /embed request
    top_k: int = 10


def load(opts: RouteLoad) -> dict:
    """Throughput and p50/p95/p99 latency of one route under `concurrency` clients."""
    return asyncio.run(_load(opts))


def load_failed(result: dict) -> bool:
    """True when a request did not get a 2xx, or no request was made at all."""
    return any(not k.startswith("2") for k in result["status"]) or result["requests"] == 0


async def _load(args: RouteLoad) -> dict:
    import httpx

    from densekit.data.beir import load_queries

    queries = [q for q in load_queries(Path(args.data)).values() if q.strip()]
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


@dataclass
class GpuCheckOptions:
    """Field names match the `densekit bench gpu check` flags."""

    data: Path
    out: Path = Path("runs/gpu-check")
    port: int = 8765
    load_seconds: float = 20
    concurrency: int = 32
    cpu_ndcg10: float | None = None  # a recorded CPU figure instead of a CPU evaluation
    allow_cpu: bool = False
    tol: float = 0.002


class _Log:
    """Prints to stdout and appends to OUT/check.log, like `tee -a`."""

    def __init__(self, path: Path):
        self.path = path
        self.start = time.monotonic()

    def line(self, text: str) -> None:
        print(text, flush=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")

    def step(self, title: str) -> None:
        self.line(f"\n== {title} ({int(time.monotonic() - self.start)}s)")

    def run(self, cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> None:
        """Run `cmd`, teeing its output; BenchmarkStepError on a non-zero exit or after `timeout` seconds."""
        import threading

        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for text in proc.stdout:
                self.line(text.rstrip("\n"))
            rc = proc.wait()
        finally:
            timed_out = not timer.is_alive() and proc.returncode is not None and proc.returncode < 0
            timer.cancel()
        what = " ".join(cmd[3:5])
        if timed_out:
            raise BenchmarkStepError(f"densekit {what} ran past {timeout:g}s", 124)
        if rc:
            raise BenchmarkStepError(f"densekit {what} exited with {rc}", rc)


def run_gpu_check(opts: GpuCheckOptions) -> tuple[dict, int]:
    """Every step in order; returns (summary, exit code). The summary is also OUT/summary.json.

    Exit code 0, or 4 when GPU and CPU nDCG@10 disagree by more than `tol`; a failing step
    raises BenchmarkStepError (3: no CUDA and not `allow_cpu`).
    """
    from densekit.atomic import write_json_atomic
    from densekit.bench.servers import serve_command, stop, wait_ready
    from densekit.errors import ServerStartError

    # Measure real encoding, never vectors cached by an earlier run (the cache ignores dtype).
    os.environ["DENSEKIT_NO_EMBED_CACHE"] = "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    data, out = Path(opts.data), Path(opts.out)
    if not (data / "corpus.jsonl").is_file():
        raise BenchmarkStepError(f"no BEIR corpus at {data}", 2)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log = _Log(out / "check.log")
    dk = [sys.executable, "-m", "densekit.cli.main"]
    rows: dict[str, dict] = {}

    def record(name: str, payload: dict) -> dict:
        rows[name] = payload
        log.line(emit_line(name.split("_")[0] if name.startswith("load_") else name, payload))
        return payload

    log.step("device")
    p = record("probe", _in_subprocess(probe))
    if not p["cuda_available"] and not opts.allow_cpu:
        raise BenchmarkStepError(NO_CUDA_HINT, EXIT_NO_CUDA)
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], capture_output=True, text=True
        )
        log.line(smi.stdout.strip())

    log.step(f"encode throughput ({data.name} corpus)")
    record("encode", _in_subprocess(encode, data))

    log.step("index build")
    t0 = time.perf_counter()
    log.run([*dk, "index", "build", "--data", str(data), "--out", str(out / "index")], timeout=300)
    record("index_build", {"seconds": round(time.perf_counter() - t0, 3)})

    log.step("eval on the GPU (index above)")
    log.run(
        [*dk, "eval", "--data", str(data), "--split", "test", "--index", str(out / "index"), "--out", str(out / "eval-gpu")], timeout=300
    )
    if opts.cpu_ndcg10 is not None:
        log.step(f"CPU reference nDCG@10 = {opts.cpu_ndcg10}")
        write_json_atomic(out / "eval-cpu" / "metrics.json", {"metrics": {"ndcg@10": opts.cpu_ndcg10}})
    else:
        log.step("eval on the CPU (encode + flat search, for the comparison)")
        cpu_env = {**os.environ, "DENSEKIT_DEVICE": "cpu", "DENSEKIT_FAISS_DEVICE": "cpu"}
        log.run([*dk, "eval", "--data", str(data), "--split", "test", "--out", str(out / "eval-cpu")], timeout=600, env=cpu_env)
    c = record("compare", compare(out / "eval-gpu" / "metrics.json", out / "eval-cpu" / "metrics.json", opts.tol))

    log.step(f"serve on 127.0.0.1:{opts.port}")
    url = f"http://127.0.0.1:{opts.port}"
    # Read-only serving: the live-update log would otherwise be written beside the index.
    env = {**os.environ, "DENSEKIT_ALLOW_UPDATES": "false"}
    with open(out / "server.log", "ab") as server_log:
        server = subprocess.Popen(serve_command(opts.port, "--index", str(out / "index")), stdout=server_log, stderr=server_log, env=env)
    try:
        try:
            wait_ready(url, server, "/ready", timeout=180)
        except ServerStartError as exc:
            tail = (out / "server.log").read_text(errors="replace").splitlines()[-30:]
            raise BenchmarkStepError(f"{exc}\n" + "\n".join(tail)) from exc
        import httpx

        log.line("info " + httpx.get(url + "/info", timeout=10).text)
        for route in ("embed", "search"):
            what = f"{opts.concurrency} clients x 32 sentences" if route == "embed" else f"top_k=10, {opts.concurrency} clients"
            log.step(f"load: /{route}, {what}, {opts.load_seconds:g}s")
            record(f"load_{route}", load(RouteLoad(url, route, data, opts.load_seconds, opts.concurrency)))
    finally:
        stop(server)

    log.step("summary")
    write_json_atomic(out / "summary.json", rows)
    for text in summary_lines(rows):
        log.line(text)
    log.line(f"total: {int(time.monotonic() - log.start)}s; details in {out}")
    return rows, 0 if c["ok"] else EXIT_NDCG_MISMATCH


def _in_subprocess(fn: Callable[..., dict], *args) -> dict:
    """Run a measuring step in a child process so its model and GPU memory are gone before the server starts."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def summary_lines(rows: dict[str, dict]) -> list[str]:
    """The human summary printed at the end of the check."""
    p, e, c = rows.get("probe", {}), rows.get("encode", {}), rows.get("compare", {})
    le, ls = rows.get("load_embed", {}), rows.get("load_search", {})
    gpus = ", ".join(p.get("gpus") or ["no GPU"])
    return [
        f"device        : {p.get('device')} ({gpus}), dtype {p.get('dtype')}, faiss on {p.get('faiss_device')} (faiss GPUs: {p.get('faiss_gpus')})",
        f"encode        : {e.get('docs_per_s')} docs/s ({e.get('docs')} docs, batch {e.get('batch_size')})",
        f"index build   : {rows.get('index_build', {}).get('seconds')} s (model load + encode + flat index)",
        f"nDCG@10       : GPU {c.get('ndcg@10_gpu')}  CPU {c.get('ndcg@10_cpu')}  |delta| {c.get('abs_delta')}  "
        f"({'OK' if c.get('ok') else 'FAIL'} at {c.get('tol')})",
        f"/embed        : {le.get('sentences_per_s')} sentences/s, p50 {le.get('p50_ms')} ms, p95 {le.get('p95_ms')} ms, "
        f"p99 {le.get('p99_ms')} ms, status {le.get('status')}",
        f"server        : models on {le.get('server_device')}, faiss search on {ls.get('server_search_device')}",
        f"/search       : {ls.get('queries_per_s')} queries/s, p50 {ls.get('p50_ms')} ms, p95 {ls.get('p95_ms')} ms, "
        f"p99 {ls.get('p99_ms')} ms, status {ls.get('status')}",
    ]
