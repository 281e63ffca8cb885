"""Sequential single-client latency of densekit `/embed` against infinity-emb `/embeddings`,
requests interleaved (one to each server in turn), same model folder and sentences. A quick
side-by-side check; `bench_service.py` measures throughput under concurrency.

    python scripts/embed_latency_ab.py /tmp/infinity-venv/bin/infinity_emb [ENV=VALUE ...]

ENV=VALUE pairs go to the densekit server's environment (e.g. DENSEKIT_TORCH_THREADS=2).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.bench_service import free_port, stop, wait  # noqa: E402
from scripts.load_test import sentences  # noqa: E402


def main(infinity: str, *env_pairs: str) -> None:
    from densekit.models import packaged_minilm_path

    m = packaged_minilm_path()
    texts = sentences(os.environ.get("DENSEKIT_DATA_DIR", "../shared/data"))[:200]
    dp, ip = free_port(), free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **dict(kv.split("=", 1) for kv in env_pairs)}
    dk = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "densekit.cli.main",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(dp),
            "--model",
            m,
            "--log-level",
            "warning",
            "--read-only",
        ],
        stderr=subprocess.DEVNULL,
        env=env,
    )
    inf = subprocess.Popen(
        [
            infinity,
            "v2",
            "--model-id",
            m,
            "--served-model-name",
            "minilm",
            "--engine",
            "torch",
            "--device",
            "cpu",
            "--host",
            "127.0.0.1",
            "--port",
            str(ip),
            "--log-level",
            "warning",
        ],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        wait(f"http://127.0.0.1:{dp}", dk, "/ready")
        wait(f"http://127.0.0.1:{ip}", inf, "/health")
        with httpx.Client(timeout=60) as c:
            for bs in (1, 8):
                res: dict[str, list[float]] = {"densekit_ms": [], "infinity_ms": []}
                for i in range(12):
                    batch = texts[i * bs : (i + 1) * bs]
                    t0 = time.perf_counter()
                    c.post(f"http://127.0.0.1:{dp}/embed", json={"inputs": batch}).raise_for_status()
                    res["densekit_ms"].append((time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    c.post(f"http://127.0.0.1:{ip}/embeddings", json={"input": batch, "model": "minilm"}).raise_for_status()
                    res["infinity_ms"].append((time.perf_counter() - t0) * 1000)
                # The first two requests of each warm the models up.
                print(f"{bs} sentence(s)/request, median of 10:", {k: round(statistics.median(v[2:]), 1) for k, v in res.items()})
    finally:
        stop(dk)
        stop(inf)


if __name__ == "__main__":
    main(*sys.argv[1:])
