"""Service benchmarks of BENCHMARKS.md "Service (issue 6)", in one run (all servers on
127.0.0.1, CPU; run it under `flock /tmp/densekit-cpu.lock`):

1. load: 32 clients, 60 s, mixed search / search+rerank / rerank / embed on the SciFact
   index with all-MiniLM-L6-v2 and a MiniLM-L6 cross-encoder stand-in (scripts/load_test.py).
2. /search overhead: share of client-side latency outside encoder + faiss at the median
   (from the x-encode-time / x-search-time headers), 1 and 8 clients.
3. /embed vs infinity-emb: same model folder, same sentences, same clients, alternating
   rounds (median of --rounds), single-sentence and 8-sentence requests.

    python scripts/bench_service.py --index runs/service/scifact-index \
        --infinity /tmp/infinity-venv/bin/infinity_emb --out runs/service/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.load_test import main as load_main  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url: str, proc: subprocess.Popen, path: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server {proc.args[:3]} exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} not ready")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads (to see what an idle server burns)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(args_list: list[str], out: Path) -> dict:
    load_main([*args_list, "--out", str(out)])
    return json.loads(out.read_text())


def densekit_server(args, port: int, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "densekit.cli.main",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--read-only",
        *extra,
    ]
    env = {**os.environ, **dict(kv.split("=", 1) for kv in args.densekit_env)}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(args.outdir / "densekit-server.log", "ab"), env=env)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True)
    p.add_argument("--reranker", default="runs/service/minilm-ce")
    p.add_argument("--infinity", help="infinity_emb executable (its own virtualenv); skip the comparison when absent")
    p.add_argument("--data-dir", default=os.environ.get("DENSEKIT_DATA_DIR", "../shared/data"))
    p.add_argument("--load-duration", type=float, default=60)
    p.add_argument("--embed-duration", type=float, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument(
        "--embed-targets",
        default="densekit_embed,infinity_embeddings",
        help="comma list of densekit_embed, densekit_v1_embeddings, infinity_embeddings",
    )
    p.add_argument(
        "--densekit-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment of the densekit server only (e.g. DENSEKIT_TORCH_THREADS=1); repeatable",
    )
    p.add_argument("--skip", default="", help="comma list of parts to skip: load,overhead,embed")
    p.add_argument("--out", default="runs/service/bench.json")
    args = p.parse_args(argv)
    args.outdir = Path(args.out).parent
    args.outdir.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    from densekit.models import packaged_minilm_path

    minilm = packaged_minilm_path()
    common = ["--data-dir", args.data_dir]
    results: dict = {
        "machine": "CPU-2c: 2 cores, 24 GiB, no GPU",
        "model": minilm,
        "densekit_env": args.densekit_env,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }

    if "load" not in skip:
        # 1. mixed load, 32 clients, 60 s. Reranker inputs capped at 256 tokens.
        os.environ["DENSEKIT_RERANKER_MAX_LENGTH"] = "256"
        results["load"] = load(
            [
                "--spawn",
                "--index",
                args.index,
                "--reranker",
                args.reranker,
                "--read-only",
                "--clients",
                str(args.clients),
                "--duration",
                str(args.load_duration),
                "--warmup",
                "3",
                "--mix",
                "search=3,search_rerank=1,rerank=1,embed=3",
                "--rerank-top-n",
                "10",
                "--rerank-docs",
                "8",
                "--embed-batch",
                "4",
                "--server-log",
                str(args.outdir / "densekit-server.log"),
                *common,
            ],
            args.outdir / "load-60s.json",
        )
        os.environ.pop("DENSEKIT_RERANKER_MAX_LENGTH")

    if "overhead" not in skip:
        # 2. /search overhead outside encoder + faiss.
        port = free_port()
        proc = densekit_server(args, port, "--index", args.index)
        try:
            url = f"http://127.0.0.1:{port}"
            wait(url, proc, "/ready")
            results["search_overhead"] = {}
            for clients in (1, 8):
                r = load(
                    ["--url", url, "--mix", "search=1", "--clients", str(clients), "--duration", "12", "--warmup", "2", *common],
                    args.outdir / f"search-c{clients}.json",
                )
                results["search_overhead"][f"clients_{clients}"] = {
                    "outside_share_median": r.get("search_outside_share_median"),
                    "stage_median_ms": r.get("search_stage_median_ms"),
                    "latency": r["latency_all"],
                    "throughput_rps": r["throughput_rps"],
                }
        finally:
            stop(proc)

    if "embed" not in skip and args.infinity:
        # 3. densekit /embed (and /v1/embeddings) vs infinity-emb /embeddings, same model folder.
        dk_port, inf_port = free_port(), free_port()
        dk = densekit_server(args, dk_port, "--model", minilm)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
        inf = subprocess.Popen(
            [
                args.infinity,
                "v2",
                "--model-id",
                minilm,
                "--served-model-name",
                "minilm",
                "--engine",
                "torch",
                "--device",
                "cpu",
                "--host",
                "127.0.0.1",
                "--port",
                str(inf_port),
                "--log-level",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(args.outdir / "infinity-server.log", "ab"),
            env=env,
        )
        try:
            dk_url, inf_url = f"http://127.0.0.1:{dk_port}", f"http://127.0.0.1:{inf_port}"
            wait(dk_url, dk, "/ready")
            wait(inf_url, inf, "/health")
            targets = {
                "densekit_embed": ["--url", dk_url, "--embed-style", "tei", "--embed-path", "/embed"],
                "densekit_v1_embeddings": [
                    "--url",
                    dk_url,
                    "--embed-style",
                    "openai",
                    "--embed-path",
                    "/v1/embeddings",
                    "--model-name",
                    "minilm",
                ],
                "infinity_embeddings": [
                    "--url",
                    inf_url,
                    "--embed-style",
                    "openai",
                    "--embed-path",
                    "/embeddings",
                    "--model-name",
                    "minilm",
                    "--ready-path",
                    "/health",
                ],
            }
            targets = {k: v for k, v in targets.items() if k in args.embed_targets.split(",")}
            pids = {"densekit_embed": dk.pid, "densekit_v1_embeddings": dk.pid, "infinity_embeddings": inf.pid}
            runs: dict = {}
            for batch in (1, 8):
                for rnd in range(args.rounds):
                    order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
                    for name in order:
                        other = inf.pid if pids[name] == dk.pid else dk.pid
                        idle0 = cpu_seconds(other)
                        r = load(
                            [
                                *targets[name],
                                "--mix",
                                "embed=1",
                                "--embed-batch",
                                str(batch),
                                "--clients",
                                str(args.clients),
                                "--duration",
                                str(args.embed_duration),
                                "--warmup",
                                "2",
                                *common,
                            ],
                            args.outdir / f"embed-{name}-b{batch}-r{rnd}.json",
                        )
                        runs.setdefault(f"batch_{batch}", {}).setdefault(name, []).append(
                            {
                                "sentences_per_s": r["embed_sentences_per_s"],
                                "p50_ms": r["latency_all"].get("p50_ms"),
                                "p99_ms": r["latency_all"].get("p99_ms"),
                                "5xx": r["http_5xx_or_failed"],
                                "invalid": r["invalid"],
                                "idle_other_cpu_s": round(cpu_seconds(other) - idle0, 2),
                            }
                        )
            summary: dict = {}
            for cfg, by_name in runs.items():
                summary[cfg] = {}
                for name, rs in by_name.items():
                    summary[cfg][name] = {
                        k: statistics.median(x[k] for x in rs) for k in ("sentences_per_s", "p50_ms", "p99_ms", "idle_other_cpu_s")
                    }
                    summary[cfg][name]["errors"] = sum(x["5xx"] + x["invalid"] for x in rs)
                base = summary[cfg]["infinity_embeddings"]["sentences_per_s"]
                for name in by_name:
                    summary[cfg][name]["throughput_vs_infinity"] = round(summary[cfg][name]["sentences_per_s"] / base, 3) if base else None
            results["embed_vs_infinity"] = {
                "runs": runs,
                "median": summary,
                "rounds": args.rounds,
                "duration_s": args.embed_duration,
                "clients": args.clients,
                "densekit_info": httpx.get(dk_url + "/info").json(),
                "infinity_models": httpx.get(inf_url + "/models").json(),
            }
        finally:
            stop(dk)
            stop(inf)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(
        json.dumps(
            {k: v for k, v in results.items() if k != "embed_vs_infinity"}
            | {"embed_vs_infinity": results.get("embed_vs_infinity", {}).get("median")},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
