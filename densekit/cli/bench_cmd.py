"""`densekit bench`: the benchmarks behind BENCHMARKS.md (index kinds, the HTTP service, load
tests, rerankers, a GPU host check). Flags only; the work is in densekit.bench."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from densekit.cli.common import resolve_data, settings
from densekit.settings import DEFAULT_MODEL

app = typer.Typer(
    help=(
        "Benchmarks: index (index kinds: recall, QPS, bytes/vector), service (the HTTP server under load, and against "
        "infinity-emb), load (a load test of any loopback server), rerank (reranker throughput and quality on a first-stage "
        "run), backends (CPU runtimes: torch/ONNX/OpenVINO, fp32/int8, against the hardware's ceiling and infinity-emb), "
        "gpu (GPU host check), ray (Ray encoding overhead, cluster start, /search fanned out over shards). Run heavy ones "
        "one at a time: they measure the whole machine."
    ),
    no_args_is_help=True,
)
index_app = typer.Typer(help="Index kinds: nDCG@10, recall@10 vs flat, QPS, bytes/vector, build time.", no_args_is_help=True)
service_app = typer.Typer(
    help="The densekit HTTP service: mixed load, /search overhead, /embed against infinity-emb.", no_args_is_help=True
)
rerank_app = typer.Typer(help="Rerankers: throughput (pairs/s) and quality on a first-stage run.", no_args_is_help=True)
gpu_app = typer.Typer(help="GPU host check: device choice, encoding throughput, GPU/CPU agreement, HTTP load.", no_args_is_help=True)
app.add_typer(index_app, name="index")
app.add_typer(service_app, name="service")
app.add_typer(rerank_app, name="rerank")
app.add_typer(gpu_app, name="gpu")
ray_app = typer.Typer(
    help="Ray: the encoding engine's overhead against the local one, cluster start, and /search fanned out over shards on Ray Serve.",
    no_args_is_help=True,
)
app.add_typer(ray_app, name="ray")
scale_app = typer.Typer(
    help="Index scale curve: every index kind at growing corpus sizes (real vectors topped up with synthetic ones).", no_args_is_help=True
)
app.add_typer(scale_app, name="scale")

DATA_DIR_HELP = "root of the BEIR data sets (default: DENSEKIT_DATA_DIR)"


def _data_dir(value: Path | None) -> Path:
    return value if value is not None else settings().data_dir


def _print_json(obj: dict, indent: int | None = None) -> None:
    typer.echo(json.dumps(obj, indent=indent))


# --- index -------------------------------------------------------------------------------------


@index_app.command("vectors")
def index_vectors(
    names: list[str] = typer.Argument(..., help="data set names under the data dir, e.g. scifact nfcorpus nq-utd wikiqa squad_subset"),
    data_dir: Path = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    vectors_dir: Path = typer.Option(Path("runs/bench-indexes/vectors"), "--vectors-dir", help="cache of query vectors"),
    no_queries: bool = typer.Option(False, "--no-queries", help="encode the corpora only"),
) -> None:
    """Encode each data set's corpus (through the shared embedding cache) and queries once, ahead of `run`."""
    from densekit.bench.index import encode_vectors

    encode_vectors(names, _data_dir(data_dir), vectors_dir, queries=not no_queries)


@index_app.command("run")
def index_run(
    dataset: str = typer.Argument(..., help="scifact, nfcorpus or combined (five sets in one corpus)"),
    data_dir: Path = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    out: Path = typer.Option(Path("runs/bench-indexes"), "--out", help="folder of results-<dataset>.json"),
    vectors_dir: Path = typer.Option(Path("runs/bench-indexes/vectors"), "--vectors-dir", help="cache of query vectors"),
    distill: list[str] = typer.Option(
        None, "--distill", metavar="KEY=VALUE", help="Distill-VQ training override, e.g. lr_schedule=constant; repeatable"
    ),
) -> None:
    """Build every index kind on one data set and measure it over its nprobe / efSearch sweep (rows as JSON lines on stderr)."""
    from densekit.bench.index import parse_distill_overrides, run_dataset

    path = run_dataset(dataset, _data_dir(data_dir), out, vectors_dir, parse_distill_overrides(distill or []))
    typer.echo(f"results: {path}")


@index_app.command("report")
def index_report(
    out: Path = typer.Option(Path("runs/bench-indexes"), "--out", help="folder of results-*.json; report.md is written there"),
    plot: Path = typer.Option(Path("docs/index_recall_qps.png"), "--plot", help="recall-vs-QPS plot to write"),
    no_plot: bool = typer.Option(False, "--no-plot", help="tables only"),
) -> None:
    """Markdown tables and the recall-vs-QPS plot from the results of `run`."""
    from densekit.bench.index import report

    typer.echo(report(out, None if no_plot else plot))


# --- service -----------------------------------------------------------------------------------


@service_app.command("run")
def service_run(
    index: str = typer.Option(..., "--index", help="index folder to serve"),
    reranker: str = typer.Option("runs/service/minilm-ce", "--reranker", help="reranker of the mixed-load part"),
    infinity: str = typer.Option(
        None, "--infinity", help="infinity_emb executable (its own virtualenv); the /embed comparison is skipped without it"
    ),
    data_dir: Path = typer.Option(None, "--data-dir", help=DATA_DIR_HELP + "; request texts come from its scifact/, else synthetic"),
    load_duration: float = typer.Option(60, "--load-duration", help="seconds of the mixed load"),
    embed_duration: float = typer.Option(10, "--embed-duration", help="seconds of each /embed round"),
    rounds: int = typer.Option(5, "--rounds", help="alternating /embed rounds per target (the median is reported)"),
    clients: int = typer.Option(32, "--clients", help="concurrent clients of the mixed load and /embed rounds"),
    embed_targets: str = typer.Option(
        "densekit_embed,infinity_embeddings",
        "--embed-targets",
        help="comma list of densekit_embed, densekit_v1_embeddings, infinity_embeddings",
    ),
    densekit_env: list[str] = typer.Option(
        None,
        "--densekit-env",
        metavar="KEY=VALUE",
        help="environment of the densekit server only (e.g. DENSEKIT_TORCH_THREADS=1); repeatable",
    ),
    skip: str = typer.Option("", "--skip", help="comma list of parts to skip: load,overhead,embed"),
    out: Path = typer.Option(Path("runs/service/bench.json"), "--out", help="result JSON; each part's own JSON is written beside it"),
) -> None:
    """Mixed load, /search overhead and /embed against infinity-emb, all on 127.0.0.1."""
    from densekit.bench.service import ServiceBenchOptions, printable_summary, run_service_bench

    opts = ServiceBenchOptions(
        index=index,
        reranker=reranker,
        infinity=infinity,
        data_dir=str(_data_dir(data_dir)),
        load_duration=load_duration,
        embed_duration=embed_duration,
        rounds=rounds,
        clients=clients,
        embed_targets=[t for t in embed_targets.split(",") if t],
        densekit_env=densekit_env or [],
        skip=[s for s in skip.split(",") if s],
        out=str(out),
    )
    _print_json(printable_summary(run_service_bench(opts)), indent=2)


@service_app.command("embed-latency")
def service_embed_latency(
    infinity: str = typer.Argument(..., help="infinity_emb executable"),
    densekit_env: list[str] = typer.Argument(
        None, metavar="[KEY=VALUE]...", help="environment of the densekit server (e.g. DENSEKIT_TORCH_THREADS=2)"
    ),
    data_dir: Path = typer.Option(None, "--data-dir", help=DATA_DIR_HELP + "; request texts come from its scifact/, else synthetic"),
) -> None:
    """Sequential single-client latency of densekit /embed against infinity-emb /embeddings, requests interleaved."""
    from densekit.bench.service import embed_latency_ab

    for key, medians in embed_latency_ab(infinity, densekit_env or [], str(_data_dir(data_dir))).items():
        typer.echo(f"{key.removeprefix('batch_')} sentence(s)/request, median of 10: {medians}")


# --- load --------------------------------------------------------------------------------------


@app.command("load")
def load(
    url: str = typer.Option(None, "--url", help="server to drive (loopback only)"),
    spawn: bool = typer.Option(False, "--spawn", help="start `densekit serve` on 127.0.0.1 and stop it afterwards"),
    index: str = typer.Option(None, "--index", help="--spawn: index folder"),
    model: str = typer.Option(None, "--model", help="--spawn: bi-encoder"),
    reranker: str = typer.Option(None, "--reranker", help="--spawn: reranker"),
    read_only: bool = typer.Option(False, "--read-only", help="--spawn: no live updates"),
    max_queue: int = typer.Option(None, "--max-queue", help="--spawn: the server's --max-queue"),
    max_batch_tokens: int = typer.Option(None, "--max-batch-tokens", help="--spawn: the server's --max-batch-tokens"),
    max_wait_ms: float = typer.Option(None, "--max-wait-ms", help="--spawn: the server's --max-wait-ms"),
    max_client_batch: int = typer.Option(None, "--max-client-batch", help="--spawn: the server's --max-client-batch"),
    server_log: str = typer.Option(None, "--server-log", help="--spawn: append the server's stderr here"),
    clients: int = typer.Option(32, "--clients", help="concurrent clients, one request in flight each"),
    duration: float = typer.Option(60.0, "--duration", help="seconds of measured load"),
    warmup: float = typer.Option(3.0, "--warmup", help="seconds of unmeasured load first (up to 4 clients)"),
    max_requests: int = typer.Option(1_000_000, "--max-requests", help="stop after this many requests whatever the time"),
    timeout: float = typer.Option(60.0, "--timeout", help="per-request timeout in seconds"),
    mix: str = typer.Option(
        "search=3,search_rerank=1,rerank=1,embed=3", "--mix", help="kind=weight,...: search, search_rerank, rerank, embed"
    ),
    top_k: int = typer.Option(10, "--top-k", help="search: hits per query"),
    rerank_top_n: int = typer.Option(20, "--rerank-top-n", help="search_rerank: hits reranked"),
    rerank_docs: int = typer.Option(8, "--rerank-docs", help="rerank: texts per request"),
    embed_batch: int = typer.Option(4, "--embed-batch", help="sentences per embed request"),
    embed_style: str = typer.Option("tei", "--embed-style", help="embed request shape: tei or openai"),
    embed_path: str = typer.Option(None, "--embed-path", help="default /embed (tei) or /v1/embeddings (openai)"),
    model_name: str = typer.Option(
        "model",
        "--model-name",
        help="openai style: the `model` field (the server's served name, see /info; a spawned server serves under it)",
    ),
    data_dir: str = typer.Option(
        None, "--data-dir", help=DATA_DIR_HELP + "; request texts come from its scifact/, else synthetic ('' for synthetic texts)"
    ),
    ready_path: str = typer.Option("/ready", "--ready-path", help="path that answers 200 once the server is ready"),
    out: str = typer.Option(None, "--out", help="write the JSON result here"),
) -> None:
    """Load test of a loopback server: concurrent clients for a fixed time, a weighted request mix, every
    response checked (no 5xx, valid bodies, 429 only as `overloaded`). Exit code 1 when a check fails."""
    from densekit.bench.load import LoadOptions, failed, run_load

    if embed_style not in ("tei", "openai"):
        raise typer.BadParameter("tei or openai", param_hint="--embed-style")
    opts = LoadOptions(
        url=url,
        spawn=spawn,
        index=index,
        model=model,
        reranker=reranker,
        read_only=read_only,
        max_queue=max_queue,
        max_batch_tokens=max_batch_tokens,
        max_wait_ms=max_wait_ms,
        max_client_batch=max_client_batch,
        server_log=server_log,
        clients=clients,
        duration=duration,
        warmup=warmup,
        max_requests=max_requests,
        timeout=timeout,
        mix=mix,
        top_k=top_k,
        rerank_top_n=rerank_top_n,
        rerank_docs=rerank_docs,
        embed_batch=embed_batch,
        embed_style=embed_style,
        embed_path=embed_path,
        model_name=model_name,
        data_dir=str(settings().data_dir) if data_dir is None else data_dir or None,
        ready_path=ready_path,
        out=out,
    )
    result = run_load(opts)
    _print_json(result, indent=2)
    if failed(result):
        raise typer.Exit(1)


# --- ray ---------------------------------------------------------------------------------------


@ray_app.command("encode")
def ray_encode_cell(
    data: str = typer.Option("scifact", "--data", help="BEIR folder or name under the data dir, a corpus .jsonl or .parquet"),
    docs: int = typer.Option(2000, "--docs", min=1, help="encode the corpus's first DOCS documents"),
    engine: str = typer.Option("local", "--engine", help="local or ray"),
    actors: int = typer.Option(1, "--actors", min=1, help="--engine ray: encoder actors"),
    cpus_per_actor: float = typer.Option(1.0, "--cpus-per-actor", min=0.01, help="--engine ray: CPUs (= torch threads) per actor"),
    address: str = typer.Option(None, "--address", help="--engine ray: a running cluster (default: a local one, started before timing)"),
    batch_size: int = typer.Option(None, "--batch-size", help="encoder batch size (default: DENSEKIT_BATCH_SIZE)"),
    work_dir: Path = typer.Option(Path("runs/bench-ray/encode-work"), "--work-dir", help="corpus slice and the (removed) outputs"),
    out: Path = typer.Option(..., "--out", help="the run's result JSON"),
) -> None:
    """One timed encoding run into a new, empty embeddings folder, by the local or the Ray engine
    (alternate them over several calls; summarise with `densekit bench ray report`)."""
    from densekit.bench.ray_encode import EncodeCellOptions, run_encode_cell

    folder = Path(data).expanduser()
    corpus = str(folder if folder.exists() else resolve_data(data))
    opts = EncodeCellOptions(
        data=corpus,
        out=str(out),
        docs=docs,
        engine=engine,
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        address=address,
        batch_size=batch_size,
        work_dir=str(work_dir),
    )
    _print_json(run_encode_cell(opts))


@ray_app.command("cluster-start")
def ray_cluster_start(
    out: Path = typer.Option(..., "--out", help="the run's result JSON"),
    docs: int = typer.Option(32, "--docs", min=1, help="texts in the first actor-pool batch"),
) -> None:
    """Seconds from ray.init of a fresh local cluster until it answers, and until a one-actor
    encoder pool returns its first batch (actor start and model load)."""
    from densekit.bench.ray_encode import run_cluster_start

    _print_json(run_cluster_start(str(out), docs))


@ray_app.command("fanout")
def ray_fanout_cell(
    index: Path = typer.Option(..., "--index", help="folder to serve: a sharded index (both servers) or a plain one (--server single)"),
    reference: Path = typer.Option(..., "--reference", help="plain index over the same documents: the served top-k must equal its own"),
    server: str = typer.Option("single", "--server", help="single (`densekit serve`) or ray (`densekit serve --engine ray`)"),
    data: str = typer.Option("scifact", "--data", help="BEIR folder or name whose test queries are sent"),
    queries: int = typer.Option(300, "--queries", min=1, help="test queries sent one after another (latency)"),
    check: int = typer.Option(5, "--check", min=1, help="queries whose served top-k is compared with the reference's first"),
    clients: int = typer.Option(8, "--clients", min=1, help="concurrent clients of the throughput part"),
    duration: float = typer.Option(20.0, "--duration", min=1.0, help="seconds of the throughput part"),
    torch_threads: int = typer.Option(2, "--torch-threads", min=1, help="the query encoder's threads, in either server"),
    replica_cpus: float = typer.Option(0.25, "--replica-cpus", help="--server ray: CPUs each shard and encoder replica reserves"),
    server_log: Path = typer.Option(None, "--server-log", help="append the server's stderr here"),
    out: Path = typer.Option(..., "--out", help="the run's result JSON"),
) -> None:
    """One server configuration: check its /search answers against the reference, then 1-client
    latency and N-client throughput over the data set's test queries."""
    from densekit.bench.fanout import FanoutCellOptions, run_fanout_cell

    opts = FanoutCellOptions(
        index=str(index),
        reference=str(reference),
        data=str(resolve_data(data)),
        out=str(out),
        server=server,
        queries=queries,
        check=check,
        clients=clients,
        duration=duration,
        torch_threads=torch_threads,
        replica_cpus=replica_cpus,
        server_log=str(server_log) if server_log else None,
    )
    _print_json(run_fanout_cell(opts))


@ray_app.command("report")
def ray_report(
    folder: Path = typer.Argument(..., help="folder of the encode, cluster-start and fanout result files"),
    json_out: bool = typer.Option(False, "--json", help="the summaries as JSON instead of Markdown tables"),
) -> None:
    """Markdown tables: docs/s and the Ray overhead against the local engine, cluster start, and
    /search latency/throughput with the fan-out cost per query."""
    from densekit.bench.ray_report import report

    res = report(folder)
    if json_out:
        _print_json({k: v for k, v in res.items() if k != "markdown"}, indent=2)
    else:
        typer.echo(res["markdown"])


# --- rerank ------------------------------------------------------------------------------------


@app.command("backends")
def backends(
    runtimes: str = typer.Option(
        "torch/fp32,onnx/fp32,onnx/int8,openvino/fp32,openvino/int8", "--runtimes", help="comma list of BACKEND/PRECISION"
    ),
    cross_encoder: str = typer.Option(None, "--cross-encoder", help="cross-encoder of the pairs/s part (skipped without it)"),
    infinity: str = typer.Option(None, "--infinity", help="infinity_emb executable: adds its torch engine to the HTTP part"),
    infinity_optimum: str = typer.Option(
        None, "--infinity-optimum", help="infinity_emb executable (a virtualenv with optimum) for its optimum engine"
    ),
    infinity_onnx_model: str = typer.Option(
        None, "--infinity-onnx-model", help="the same model folder with onnx/model.onnx, for infinity-emb's optimum engine"
    ),
    data_dir: Path = typer.Option(None, "--data-dir", help=DATA_DIR_HELP + "; texts come from its scifact/"),
    documents: int = typer.Option(128, "--documents", help="documents of 256+ tokens encoded per round"),
    pairs: int = typer.Option(128, "--pairs", help="cross-encoder pairs scored per round"),
    rounds: int = typer.Option(3, "--rounds", help="alternating in-process rounds (the median is reported)"),
    http_rounds: int = typer.Option(3, "--http-rounds", help="alternating /embed rounds per server and request size"),
    http_duration: float = typer.Option(8.0, "--http-duration", help="seconds of each /embed round"),
    clients: int = typer.Option(32, "--clients", help="concurrent /embed clients"),
    skip: str = typer.Option("", "--skip", help="comma list of parts to skip: ceiling,encode,cross,http"),
    out: Path = typer.Option(Path("runs/bench-backends/result.json"), "--out", help="result JSON (server logs beside it)"),
) -> None:
    """CPU runtimes side by side: documents/s, pairs/s, share of the hardware ceiling, /embed vs infinity-emb."""
    from densekit.bench.backends import BackendBenchOptions, run_backend_bench

    skipped = [s for s in skip.split(",") if s]
    if cross_encoder is None and "cross" not in skipped:
        skipped.append("cross")
    opts = BackendBenchOptions(
        runtimes=[r for r in runtimes.split(",") if r],
        cross_encoder=cross_encoder,
        infinity=infinity,
        infinity_optimum=infinity_optimum,
        infinity_onnx_model=infinity_onnx_model,
        data_dir=str(_data_dir(data_dir)),
        documents=documents,
        pairs=pairs,
        rounds=rounds,
        http_rounds=http_rounds,
        http_duration=http_duration,
        clients=clients,
        skip=skipped,
        out=str(out),
    )
    result = run_backend_bench(opts)
    _print_json({k: v for k, v in result.items() if k != "http"} | {"http": result.get("http", {}).get("median")}, indent=2)


@rerank_app.command("throughput")
def rerank_throughput(
    data: str = typer.Option("scifact", "--data", help="BEIR folder or name under DENSEKIT_DATA_DIR (its first judged test query is used)"),
    llm: list[str] = typer.Option(None, "--llm", help="LLM reranker; repeatable"),
    cross_encoder: list[str] = typer.Option(None, "--cross-encoder", help="cross-encoder; repeatable"),
    pairs: int = typer.Option(16, "--pairs", help="query-document pairs scored per pass"),
    repeats: int = typer.Option(5, "--repeats", help="timed passes (the median is reported)"),
    batch_size: int = typer.Option(8, "--batch-size", help="pairs per forward pass"),
    max_length: list[int] = typer.Option(None, "--max-length", help="input token limit; repeatable (one row each)"),
    dtype: list[str] = typer.Option(None, "--dtype", help="float32 (default) and/or bfloat16 (CPUs with avx512_bf16); repeatable"),
) -> None:
    """Pairs/s of each reranker on the same real pairs, one JSON line per system x max length x dtype
    (an LLM gets two: its query prefix shared by the documents, and recomputed per document)."""
    from densekit.bench.rerank import ThroughputOptions
    from densekit.bench.rerank import rerank_throughput as measure

    opts = ThroughputOptions(resolve_data(data), llm or [], cross_encoder or [], pairs, repeats, batch_size, max_length or [], dtype or [])
    for row in measure(opts):
        _print_json(row)


@rerank_app.command("evaluate")
def rerank_evaluate(
    reranker: str = typer.Option(..., "--reranker", help="hub name, local folder, .gguf file or smollm2"),
    run: Path = typer.Option(..., "--run", help="first-stage TREC run to rerank"),
    out: Path = typer.Option(..., "--out", help="rerank report folder: metrics.json, run.trec, per_query.csv, report.md"),
    data: str = typer.Option("scifact", "--data", help="BEIR folder or name under DENSEKIT_DATA_DIR"),
    kind: str = typer.Option("auto", "--kind", help="auto, cross-encoder or llm"),
    split: str = typer.Option("test", "--split", help="qrels split"),
    top_n: int = typer.Option(20, "--top-n", help="first-stage hits reranked per query"),
    max_queries: int = typer.Option(None, "--max-queries", help="the first N judged queries (sorted by id); default all"),
    max_length: int = typer.Option(None, "--max-length", help="input token limit"),
    batch_size: int = typer.Option(8, "--batch-size", help="pairs per forward pass"),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16, float16"),
) -> None:
    """Rerank a first-stage run on the reduced protocol and score both stages on the same candidates (on the CPU)."""
    from densekit.bench.rerank import RunRerankOptions, rerank_first_stage_run

    opts = RunRerankOptions(reranker, resolve_data(data), run, out, kind, split, top_n, max_queries, max_length, batch_size, dtype)
    _print_json(rerank_first_stage_run(opts))


# --- gpu ---------------------------------------------------------------------------------------

MODEL_HELP = "bi-encoder, hub name or path"


@gpu_app.command("check")
def gpu_check(
    data: str = typer.Option("scifact", "--data", help="BEIR folder or name under DENSEKIT_DATA_DIR"),
    out: Path = typer.Option(
        Path("runs/gpu-check"), "--out", help="folder for check.log, summary.json, the eval reports and server.log (replaced)"
    ),
    port: int = typer.Option(8765, "--port", help="port of the server on 127.0.0.1"),
    load_seconds: float = typer.Option(20, "--load-seconds", help="seconds of load on each of /embed and /search"),
    concurrency: int = typer.Option(32, "--concurrency", help="concurrent clients of the load steps"),
    cpu_ndcg10: float = typer.Option(
        None, "--cpu-ndcg10", help="compare with this recorded CPU nDCG@10 instead of running the CPU evaluation"
    ),
    allow_cpu: bool = typer.Option(False, "--allow-cpu", help="run the whole check without a GPU (to test it)"),
    tol: float = typer.Option(0.002, "--tol", help="largest accepted |nDCG@10 GPU - CPU|"),
) -> None:
    """The whole check in order: device, encoding throughput, index build, GPU and CPU evaluation with
    their nDCG@10 compared, then /embed and /search under load; prints a summary. Exit 3 without CUDA,
    4 when nDCG@10 disagrees."""
    from densekit.bench.gpu import GpuCheckOptions, run_gpu_check
    from densekit.errors import BenchmarkStepError

    try:
        _, code = run_gpu_check(GpuCheckOptions(resolve_data(data), out, port, load_seconds, concurrency, cpu_ndcg10, allow_cpu, tol))
    except BenchmarkStepError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exc.exit_code) from exc
    raise typer.Exit(code)


@gpu_app.command("probe")
def gpu_probe(
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N"),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, float16, bfloat16"),
    faiss_device: str = typer.Option("auto", "--faiss-device", help="auto, cpu, gpu"),
    allow_cpu: bool = typer.Option(False, "--allow-cpu", help="exit 0 even without CUDA"),
) -> None:
    """Print what densekit picks: device, dtype, where faiss searches (`probe {json}`). Exit 3 without CUDA."""
    from densekit.bench.gpu import EXIT_NO_CUDA, NO_CUDA_HINT, emit_line, probe

    info = probe(model, device, dtype, faiss_device)
    typer.echo(emit_line("probe", info))
    if not info["cuda_available"] and not allow_cpu:
        typer.echo(NO_CUDA_HINT, err=True)
        raise typer.Exit(EXIT_NO_CUDA)


@gpu_app.command("encode")
def gpu_encode(
    data: str = typer.Option(..., "--data", help="BEIR folder or name under DENSEKIT_DATA_DIR whose whole corpus is encoded"),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N"),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, float16, bfloat16"),
    batch_size: int = typer.Option(256, "--batch-size", help="documents per forward pass"),
) -> None:
    """Corpus-encoding throughput in docs/s (`encode {json}`)."""
    from densekit.bench.gpu import emit_line, encode

    typer.echo(emit_line("encode", encode(resolve_data(data), model, device, dtype, batch_size)))


@gpu_app.command("compare")
def gpu_compare(
    gpu: Path = typer.Argument(..., help="metrics.json of the GPU evaluation"),
    cpu: Path = typer.Argument(..., help="metrics.json of the CPU evaluation"),
    tol: float = typer.Option(0.002, "--tol", help="largest accepted |nDCG@10 difference|"),
) -> None:
    """Check that two evaluations agree on nDCG@10 (`compare {json}`); exit 4 when they do not."""
    from densekit.bench.gpu import EXIT_NDCG_MISMATCH, compare, emit_line

    result = compare(gpu, cpu, tol)
    typer.echo(emit_line("compare", result))
    if not result["ok"]:
        raise typer.Exit(EXIT_NDCG_MISMATCH)


@gpu_app.command("load")
def gpu_load(
    url: str = typer.Option(..., "--url", help="server to drive"),
    route: str = typer.Option(..., "--route", help="embed or search"),
    data: str = typer.Option(..., "--data", help="BEIR folder or name under DENSEKIT_DATA_DIR whose queries are sent"),
    seconds: float = typer.Option(20, "--seconds", help="seconds of load"),
    concurrency: int = typer.Option(32, "--concurrency", help="concurrent clients"),
    batch: int = typer.Option(32, "--batch", help="sentences per /embed request"),
    top_k: int = typer.Option(10, "--top-k", help="hits per /search request"),
) -> None:
    """Throughput and p50/p95/p99 latency of /embed or /search (`load {json}`); exit 5 on any non-2xx."""
    from densekit.bench.gpu import EXIT_LOAD_ERRORS, RouteLoad, emit_line, load_failed
    from densekit.bench.gpu import load as drive

    if route not in ("embed", "search"):
        raise typer.BadParameter("embed or search", param_hint="--route")
    result = drive(RouteLoad(url, route, resolve_data(data), seconds, concurrency, batch, top_k))
    typer.echo(emit_line("load", result))
    if load_failed(result):
        raise typer.Exit(EXIT_LOAD_ERRORS)


# --- scale -------------------------------------------------------------------------------------


@scale_app.command("run")
def scale_run(
    n: list[int] = typer.Option(..., "--n", help="corpus size (vectors); repeatable, smallest first"),
    kinds: str = typer.Option("flat,ivf,ivfpq,opq-ivfpq,hnsw,distilled", "--kinds", help="comma list of index kinds, run in this order"),
    out: Path = typer.Option(Path("runs/bench-scale"), "--out", help="folder of data/, results.jsonl and report.md"),
    data_dir: Path = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    vectors_dir: Path = typer.Option(Path("runs/bench-indexes/vectors"), "--vectors-dir", help="cache of query vectors"),
    lock: str = typer.Option(
        None, "--lock", help="file to flock for each cell (each preparation step too); default: DENSEKIT_CPU_LOCK, else no lock"
    ),
    until: str = typer.Option(None, "--until", metavar="HH:MM", help="start no cell after this UTC time (today)"),
    cell_timeout: float = typer.Option(None, "--cell-timeout", help="seconds before a cell is stopped and recorded as failed"),
) -> None:
    """Measure every (kind, n) cell not yet in OUT/results.jsonl, each in a fresh process; resumes an interrupted run."""
    import datetime as dt

    from densekit.bench.scale import default_lock, run

    deadline = None
    if until:
        hh, _, mm = until.partition(":")
        now = dt.datetime.now(dt.timezone.utc)
        deadline = now.replace(hour=int(hh), minute=int(mm or 0), second=0, microsecond=0)
    rows = run(out, n, [k for k in kinds.split(",") if k], _data_dir(data_dir), vectors_dir, lock or default_lock(), deadline, cell_timeout)
    typer.echo(f"{len(rows)} cells measured; results: {out / 'results.jsonl'}")


@scale_app.command("report")
def scale_report(
    out: Path = typer.Option(Path("runs/bench-scale"), "--out", help="folder of results.jsonl; report.md is written there"),
) -> None:
    """Markdown tables per corpus size, the search sweep and the fitted scaling exponents."""
    from densekit.bench.scale import report

    typer.echo(report(out))
