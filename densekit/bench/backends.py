"""CPU runtimes side by side: how fast each backend/precision runs the bi-encoder and the
cross-encoder, and how close that is to what the hardware can do.

Parts (`densekit bench backends`):

- ceiling: this CPU's theoretical peak per precision (cores x clock x operations per cycle of
  its widest vector instructions) and a practical ceiling measured with one large matrix
  product (torch for fp32 and bf16, ONNX Runtime's MatMulInteger for int8, which is what the
  int8 graphs run).
- encode: corpus encoding in this process, documents that fill the 256-token window, every
  runtime loaded once and run in alternating rounds; documents/s, tokens/s and the share of
  the ceiling that the model's FLOPs per token imply.
- cross: the same for cross-encoder (query, passage) pairs cut to 256 tokens.
- http: /embed over HTTP at 1 and 8 sentences per request, one densekit server per runtime
  plus infinity-emb's torch engine on the same model folder and its optimum (ONNX Runtime)
  engine on that folder with an `onnx/model.onnx` added (infinity-emb's optimum engine
  only reads a graph the folder ships; it then optimises it with ONNX Runtime's transformer
  fusions), alternating rounds (`densekit.bench.service.embed_rounds`).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from densekit.backends import Runtime, check_runtime, cpu_flags, cpu_has_bf16
from densekit.errors import InvalidInputError

PARTS = ("ceiling", "encode", "cross", "http")
DEFAULT_RUNTIMES = ("torch/fp32", "onnx/fp32", "onnx/int8", "openvino/fp32", "openvino/int8")
SEQ_LEN = 256


@dataclass
class BackendBenchOptions:
    """Field names match the `densekit bench backends` flags."""

    runtimes: list[str] = field(default_factory=lambda: list(DEFAULT_RUNTIMES))
    cross_encoder: str | None = None
    infinity: str | None = None
    infinity_optimum: str | None = None
    infinity_onnx_model: str | None = None
    data_dir: str | None = None
    documents: int = 128
    pairs: int = 128
    rounds: int = 3
    http_rounds: int = 3
    http_duration: float = 8.0
    clients: int = 32
    skip: list[str] = field(default_factory=list)
    out: str = "runs/bench-backends/result.json"


def parse_runtimes(specs: list[str]) -> dict[str, Runtime]:
    """'onnx/int8' -> Runtime('onnx', 'int8'), keyed by the spec; ConfigError for a bad pair."""
    out = {}
    for spec in specs:
        backend, sep, precision = spec.partition("/")
        if not sep:
            raise InvalidInputError(f"runtime '{spec}': expected BACKEND/PRECISION, e.g. onnx/int8")
        out[spec] = check_runtime(backend, precision)
    return out


# -- the hardware ------------------------------------------------------------------------


def cpu_description() -> dict[str, Any]:
    """Model name, cores the process may use, clock (GHz) and the vector features that set the peak."""
    model, mhz = "unknown", 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("cpu MHz") and not mhz:
                mhz = float(line.split(":", 1)[1])
    except OSError:
        pass
    max_khz = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_khz.is_file():
        mhz = max(mhz, int(max_khz.read_text()) / 1000)
    flags = cpu_flags()
    interesting = sorted(
        f for f in flags if f in {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}
    )
    return {"model": model, "cores": len(os.sched_getaffinity(0)), "ghz": round(mhz / 1000, 3), "flags": interesting}


def peak_ops_per_cycle(flags: set[str]) -> dict[str, float]:
    """Operations per cycle per core (a multiply-add counts 2), assuming two vector FMA pipes.

    fp32: 2 pipes x (vector bits / 32) lanes x 2. bf16 needs avx512_bf16 (2x fp32) or AMX;
    without either torch emulates it, so no bf16 peak is claimed. int8 with VNNI: 4x fp32
    (one instruction does 4 multiply-adds per 32-bit lane); plain AVX2 needs vpmaddubsw +
    vpmaddwd for the same work, taken here as 2x fp32."""
    width = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
    fp32 = 2 * (width / 32) * 2
    vnni = bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)
    return {"fp32": fp32, "bf16": 2 * fp32 if {"avx512_bf16", "amx_bf16"} & flags else 0.0, "int8": (4 if vnni else 2) * fp32}


def theoretical_peak(cpu: dict[str, Any], flags: set[str]) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of all cores at the reported clock."""
    return {k: round(v * cpu["cores"] * cpu["ghz"], 1) for k, v in peak_ops_per_cycle(flags).items()}


def _best_time(fn, repeats: int) -> float:
    fn()  # warm-up: thread pools, first-touch memory
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def torch_matmul_gflops(n: int = 2048, dtype: str = "float32", repeats: int = 5) -> float:
    """Measured GFLOP/s of one n x n x n matrix product in torch (2 n^3 operations)."""
    import torch

    a = torch.randn(n, n).to(getattr(torch, dtype))
    b = torch.randn(n, n).to(getattr(torch, dtype))
    return 2 * n**3 / _best_time(lambda: torch.mm(a, b), repeats) / 1e9


def ort_int8_matmul_gops(n: int = 2048, repeats: int = 5) -> float:
    """Measured GOP/s of one uint8 x int8 -> int32 product in ONNX Runtime (MatMulInteger),
    the operator dynamically quantised graphs run."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    weight = helper.make_tensor("B", TensorProto.INT8, [n, n], rng.integers(-127, 127, (n, n), dtype=np.int8).tobytes(), raw=True)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "int8_matmul",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = rng.integers(0, 255, (n, n), dtype=np.uint8)
    return 2 * n**3 / _best_time(lambda: session.run(None, {"A": a}), repeats) / 1e9


def ceiling() -> dict[str, Any]:
    cpu = cpu_description()
    flags = cpu_flags()
    measured: dict[str, float | None] = {"fp32": round(torch_matmul_gflops(), 1)}
    # bf16 is measured even where it is emulated: the figure shows why densekit refuses it there.
    # (smaller and once where emulated: at ~0.2 GFLOP/s a 2048^3 product takes over a minute)
    measured["bf16"] = round(
        torch_matmul_gflops(n=2048 if cpu_has_bf16(flags) else 1024, dtype="bfloat16", repeats=2 if cpu_has_bf16(flags) else 1), 1
    )
    try:
        measured["int8"] = round(ort_int8_matmul_gops(), 1)
    except ImportError:
        measured["int8"] = None
    return {"cpu": cpu, "theoretical_gflops": theoretical_peak(cpu, flags), "measured_matmul_gflops": measured, "matmul_n": 2048}


def flops_per_token(config: Any, seq_len: int = SEQ_LEN) -> float:
    """Forward-pass FLOPs per token of a BERT-style encoder (a multiply-add counts 2):
    per layer the four d x d projections (8 d^2), the feed-forward pair (4 d d_ff) and the
    attention products Q K^T and A V (4 d seq_len). Embeddings, norms and softmax are left
    out (under 1% here)."""
    d, d_ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return float(layers * (8 * d * d + 4 * d * d_ff + 4 * d * seq_len))


# -- the texts ---------------------------------------------------------------------------


def long_documents(data_dir: str, tokenizer: Any, n: int, tokens: int = SEQ_LEN) -> list[str]:
    """The first `n` SciFact documents (title + abstract) of at least `tokens` tokens: each one
    fills the model's window, so documents/s x `tokens` is the token rate."""
    from densekit.data import load_corpus
    from densekit.data.beir import document_text

    corpus = load_corpus(Path(data_dir) / "scifact")
    out = []
    for doc in corpus.values():
        text = document_text(doc)
        if len(tokenizer(text, add_special_tokens=True)["input_ids"]) >= tokens:
            out.append(text)
            if len(out) == n:
                return out
    raise InvalidInputError(f"SciFact has only {len(out)} documents of {tokens}+ tokens, {n} asked")


def query_passage_pairs(data_dir: str, documents: list[str], n: int) -> list[tuple[str, str]]:
    from densekit.data import load_queries

    queries = list(load_queries(Path(data_dir) / "scifact").values())
    return [(queries[i % len(queries)], documents[i % len(documents)]) for i in range(n)]


# -- in-process throughput -----------------------------------------------------------------


def _alternating(runners: dict[str, Any], rounds: int) -> dict[str, list[float]]:
    """Seconds per round of each runner, the order reversed every other round."""
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for rnd in range(rounds):
        order = list(runners) if rnd % 2 == 0 else list(reversed(runners))
        for name in order:
            t0 = time.perf_counter()
            runners[name]()
            seconds[name].append(time.perf_counter() - t0)
    return seconds


def _rates(seconds: dict[str, list[float]], items: int, flops_item: float, peaks: dict[str, float], runtimes: dict[str, Runtime]) -> dict:
    out = {}
    base = items / statistics.median(seconds[next(iter(seconds))])
    for name, secs in seconds.items():
        rate = items / statistics.median(secs)
        gflops = rate * flops_item / 1e9
        peak = peaks.get(runtimes[name].precision)
        out[name] = {
            "items_per_s": round(rate, 2),
            "per_round_items_per_s": [round(items / s, 2) for s in secs],
            "vs_first": round(rate / base, 3),
            "achieved_gflops": round(gflops, 1),
            "share_of_measured_ceiling": round(gflops / peak, 3) if peak else None,
        }
    return out


def encode_part(source: str, runtimes: dict[str, Runtime], texts: list[str], rounds: int, peaks: dict[str, float]) -> dict:
    from transformers import AutoConfig

    from densekit.encoder import Encoder

    encoders = {name: Encoder(source, device="cpu", backend=rt.backend, precision=rt.precision) for name, rt in runtimes.items()}
    for enc in encoders.values():
        enc.model.max_seq_length = SEQ_LEN
        enc.encode_documents(texts[:16])
    per_doc = flops_per_token(AutoConfig.from_pretrained(source))
    seconds = _alternating({n: (lambda e=e: e.encode_documents(texts)) for n, e in encoders.items()}, rounds)
    return {"documents": len(texts), "tokens_per_document": SEQ_LEN, "flops_per_token": per_doc, "rounds": rounds} | {
        "runtimes": _rates(seconds, len(texts), per_doc * SEQ_LEN, peaks, runtimes)
    }


def cross_part(model: str, runtimes: dict[str, Runtime], pairs: list[tuple[str, str]], rounds: int, peaks: dict[str, float]) -> dict:
    from transformers import AutoConfig

    from densekit.rerankers.cross_encoder import CrossEncoderReranker

    rerankers = {
        name: CrossEncoderReranker.load(
            model, device="cpu", dtype="float32", max_length=SEQ_LEN, backend=rt.backend, precision=rt.precision
        )
        for name, rt in runtimes.items()
    }
    for r in rerankers.values():
        r.score_pairs(pairs[:16])
    per_pair = flops_per_token(AutoConfig.from_pretrained(model)) * SEQ_LEN
    seconds = _alternating({n: (lambda r=r: r.score_pairs(pairs)) for n, r in rerankers.items()}, rounds)
    return {"pairs": len(pairs), "tokens_per_pair": SEQ_LEN, "rounds": rounds} | {
        "runtimes": _rates(seconds, len(pairs), per_pair, peaks, runtimes)
    }


# -- over HTTP -------------------------------------------------------------------------------


def http_part(source: str, runtimes: dict[str, Runtime], opts: BackendBenchOptions, outdir: Path) -> dict:
    import httpx

    from densekit.bench.servers import free_port, serve_command, stop, wait_ready
    from densekit.bench.service import _median_summary, embed_rounds, infinity_server
    from densekit.export import export_model

    procs: dict[str, Any] = {}
    targets: dict[str, dict] = {}
    try:
        for name, rt in runtimes.items():
            folder = source if rt.is_default else str(export_model(source, "bi-encoder", rt.backend, rt.precision))
            port = free_port()
            cmd = serve_command(port, "--model", folder, "--served-model-name", "minilm")
            procs[f"densekit {name}"] = proc = _popen(cmd, outdir / f"server-{name.replace('/', '-')}.log")
            wait_ready(f"http://127.0.0.1:{port}", proc, "/ready")
            targets[f"densekit {name}"] = dict(url=f"http://127.0.0.1:{port}", embed_style="tei", embed_path="/embed")
        engines = {"torch": (opts.infinity, source), "optimum": (opts.infinity_optimum, opts.infinity_onnx_model)}
        for engine, (executable, model_dir) in engines.items():
            if executable and model_dir:
                port = free_port()
                proc = infinity_server(executable, model_dir, port, outdir / f"infinity-{engine}.log", engine=engine)
                procs[f"infinity {engine}"] = proc
                wait_ready(f"http://127.0.0.1:{port}", proc, "/health")
                targets[f"infinity {engine}"] = dict(
                    url=f"http://127.0.0.1:{port}",
                    embed_style="openai",
                    embed_path="/embeddings",
                    model_name="minilm",
                    ready_path="/health",
                )
        pids = {name: p.pid for name, p in procs.items()}
        runs = embed_rounds(targets, pids, opts.http_rounds, opts.clients, opts.http_duration, opts.data_dir, outdir)
        baseline = "infinity torch" if opts.infinity else f"densekit {next(iter(runtimes))}"
        infos = {n: httpx.get(t["url"] + "/info").json().get("runtime") for n, t in targets.items() if n.startswith("densekit")}
    finally:
        for p in procs.values():
            stop(p)
    return {"runs": runs, "median": _median_summary(runs, baseline=baseline), "baseline": baseline, "densekit_runtime": infos}


def _popen(cmd: list[str], log: Path):
    import subprocess

    from densekit.bench.servers import open_log

    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open_log(log))


# -- all of it ------------------------------------------------------------------------------


def run_backend_bench(opts: BackendBenchOptions) -> dict:
    """Run the parts not in `opts.skip`; write the result JSON to `opts.out` and return it."""
    from transformers import AutoTokenizer

    from densekit.atomic import write_text_atomic
    from densekit.bench.service import _packaged_minilm

    unknown = set(opts.skip) - set(PARTS)
    if unknown:
        raise InvalidInputError(f"unknown part: {', '.join(sorted(unknown))} (parts: {', '.join(PARTS)})")
    if not opts.data_dir or not (Path(opts.data_dir) / "scifact").is_dir():
        raise InvalidInputError("the backend benchmark reads SciFact texts: pass --data-dir with a scifact/ folder")
    runtimes = parse_runtimes(opts.runtimes)
    outdir = Path(opts.out).parent
    outdir.mkdir(parents=True, exist_ok=True)
    source = _packaged_minilm()
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "model": source}
    hw = ceiling() if "ceiling" not in opts.skip else None
    if hw is not None:
        result["ceiling"] = hw
    peaks = {k: v for k, v in (hw["measured_matmul_gflops"] if hw else {}).items() if v}
    texts = long_documents(opts.data_dir, AutoTokenizer.from_pretrained(source), opts.documents)
    if "encode" not in opts.skip:
        result["encode"] = encode_part(source, runtimes, texts, opts.rounds, peaks)
    if "cross" not in opts.skip:
        if not opts.cross_encoder:
            raise InvalidInputError("the cross part needs --cross-encoder (or --skip cross)")
        pairs = query_passage_pairs(opts.data_dir, texts, opts.pairs)
        result["cross"] = {"model": opts.cross_encoder} | cross_part(opts.cross_encoder, runtimes, pairs, opts.rounds, peaks)
    if "http" not in opts.skip:
        result["http"] = http_part(source, runtimes, opts, outdir)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    write_text_atomic(opts.out, json.dumps(result, indent=2) + "\n")
    return result
