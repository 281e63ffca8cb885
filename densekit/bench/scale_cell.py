"""One cell of the index scale benchmark: build one index kind over the first n vectors and
measure it, in a process of its own (so its resident memory is this index's alone).

Run as `python -m densekit.bench.scale_cell OUT KIND N`; prints the result row as one JSON line.

Build: densekit's own constructors and training (densekit.index.faiss_kinds) with its defaults
(nlist = 4*sqrt(n), PQ 16 x 8 bits, OPQ 25 iterations, HNSW M=32 efConstruction=80); the
quantisers train on a seeded sample of TRAIN_POINTS_PER_LIST * nlist vectors; vectors are added
CHUNK rows at a time from disk. Build uses BUILD_THREADS faiss threads, searches one thread.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from densekit.bench.scale_data import CHUNK, data_dir, exact_topk, gather_rows, iter_chunks, npy_shape

BUILD_THREADS = 2
SEARCH_THREADS = 1
QPS_QUERIES = 256  # batch size of the batched figure; the 1-query figure runs over the same queries
TRAIN_POINTS_PER_LIST = 40  # faiss warns below 39 points per centroid
DISTILL_POOL = 200_000  # documents Distill-VQ draws its random negatives from (plus every teacher top-k row)
NPROBE_SWEEP = (16, 64)
EF_SWEEP = (128,)


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def rss_bytes() -> int:
    """Current resident set size (VmRSS) of this process."""
    return _status_bytes("VmRSS")


def reset_peak_rss() -> bool:
    """Restart the peak-RSS count (VmHWM) from the current RSS, so imports' transient memory
    is not charged to the build; false where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size since the last reset_peak_rss (process lifetime without one)."""
    return _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores, /proc/stat) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def build_params(kind: str, n: int) -> dict[str, Any]:
    from densekit.index import faiss_kinds

    if kind in faiss_kinds.IVF_KINDS:
        nlist = faiss_kinds.default_nlist(n)
        bp: dict[str, Any] = {"nlist": nlist, "train_size": min(n, TRAIN_POINTS_PER_LIST * nlist)}
        if kind in faiss_kinds.PQ_KINDS:
            bp.update(pq_m=16, pq_nbits=8)
        return bp
    return faiss_kinds.parse_build_params(kind, {}).model_dump(exclude_none=True)


def search_points(kind: str, bp: dict[str, Any], n: int) -> list[dict[str, int]]:
    """densekit's default search setting first (the reported operating point), then a small sweep."""
    from densekit.index import faiss_kinds

    default = faiss_kinds.default_search_params("distilled" if kind == "distilled" else kind, bp, n)
    if kind in faiss_kinds.IVF_KINDS:
        extra = [{"nprobe": p} for p in NPROBE_SWEEP if p < default["nprobe"]]
    elif kind == "hnsw":
        extra = [{"ef_search": e} for e in EF_SWEEP]
    else:
        extra = []
    return [default, *extra]


def _sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _trained_path(out: Path, n: int) -> Path:
    return Path(out) / "trained" / f"opq-ivfpq-{n}.faissindex"


def _train(kind: str, n: int, bp: dict, vectors: Path, out: Path) -> tuple[Any, dict]:
    """An empty trained index and its timings."""
    import faiss

    from densekit.atomic import write_text_atomic
    from densekit.index import faiss_kinds

    index = faiss_kinds.make_index(kind if kind != "distilled" else "opq-ivfpq", npy_shape(vectors)[0][1], bp, n_train=n)
    if kind == "flat" or kind == "hnsw":
        return index, {"train_s": 0.0}
    sample = gather_rows(vectors, _sample_rows(n, bp["train_size"], bp.get("seed", 1234)), n)
    t0 = time.perf_counter()
    faiss_kinds.train_index(index, sample, {k: v for k, v in bp.items() if k != "train_size"})
    train_s = time.perf_counter() - t0
    if kind == "opq-ivfpq":  # the distilled cell starts from this very index
        path = _trained_path(out, n)
        path.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").replace(path)
        write_text_atomic(Path(str(path) + ".json"), json.dumps({"train_s": train_s}))
    return index, {"train_s": round(train_s, 4)}


def _distill(n: int, bp: dict, vectors: Path, out: Path) -> tuple[Any, dict]:
    """Distill-VQ from the trained OPQ+IVF-PQ start (the opq-ivfpq cell's, when it ran first).
    Teacher: exact search over all n vectors; the student scores each step's candidates (teacher
    top-k of the batch plus random documents) drawn from the teacher's top-k rows of every
    training query plus a seeded sample of DISTILL_POOL documents."""
    import faiss

    from densekit.bench.index import DISTILL
    from densekit.training.distill_vq import IVFPQQuantizer
    from densekit.training.distill_vq_config import DistillTrain
    from densekit.training.distill_vq_train import distill_quantizer

    info: dict[str, Any] = {}
    path = _trained_path(out, n)
    if path.is_file():
        start = faiss.read_index(str(path))
        info["start_train_s"] = round(json.loads(Path(str(path) + ".json").read_text())["train_s"], 2)
        info["start"] = "the opq-ivfpq cell's trained index"
    else:
        start, t = _train("distilled", n, bp, vectors, out)
        info["start_train_s"] = t["train_s"]
        info["start"] = "trained here"
    cfg = DistillTrain(**DISTILL)
    train_q = np.load(data_dir(out) / "train_queries.npy")
    t0 = time.perf_counter()
    _, top = exact_topk(vectors, n, train_q, cfg.teacher_topk)
    pool = np.union1d(top.ravel(), _sample_rows(n, DISTILL_POOL, 1234))
    docs = gather_rows(vectors, pool, n)
    info["teacher_s"] = round(time.perf_counter() - t0, 2)
    qz = IVFPQQuantizer.from_faiss(start, assign_temperature=cfg.assign_temperature)
    hist = distill_quantizer(qz, docs, train_q, cfg, progress=False)
    index = qz.export_faiss()
    del docs, qz
    info.update(
        distill_s=round(hist.seconds, 2),
        distill_steps=hist.steps,
        distill_pool=len(pool),
        train_queries=len(train_q),
        epoch_loss=[round(x, 4) for x in hist.loss],
    )
    info["train_s"] = round(info["start_train_s"] + info["teacher_s"] + hist.seconds, 2)
    return index, info


def run_cell(out: Path, kind: str, n: int) -> dict:
    """Build `kind` over the first n vectors and measure it; the result row."""
    import faiss

    from densekit.bench.index import qps
    from densekit.index import faiss_kinds

    if kind == "distilled":  # import torch and the trainer before the memory baseline
        import densekit.training.distill_vq_train  # noqa: F401

    d = data_dir(out)
    vectors = d / "vectors.npy"
    (total, dim), _ = npy_shape(vectors)
    if total < n:
        raise ValueError(f"{vectors} has {total} rows, fewer than n={n}")
    queries = np.load(d / "queries.npy")
    truth = np.load(d / f"gt-{n}.npy")
    bp = build_params(kind, n)
    faiss.omp_set_num_threads(BUILD_THREADS)
    busy0, own0, wall0 = busy_cpu_s(), own_cpu_s(), time.perf_counter()
    peak_reset = reset_peak_rss()
    rss0 = rss_bytes()
    if kind == "distilled":
        index, info = _distill(n, bp, vectors, out)
    else:
        index, info = _train(kind, n, bp, vectors, out)
    add_s = 0.0
    for start, block in iter_chunks(vectors, n, CHUNK):
        t0 = time.perf_counter()
        index.add_with_ids(block, np.arange(start, start + len(block), dtype=np.int64))
        add_s += time.perf_counter() - t0
        del block
    peak = peak_rss_bytes() - rss0
    resident = rss_bytes() - rss0
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        f = Path(tmp) / "index.faissindex"
        faiss.write_index(index, str(f))
        size = f.stat().st_size
    row: dict[str, Any] = {
        "kind": kind,
        "n": n,
        "dim": dim,
        "build_params": bp,
        "faiss": faiss_kinds.describe(index),
        **info,
        "add_s": round(add_s, 4),
        "build_s": round(info["train_s"] + add_s, 4),
        "code_bytes_per_vector": faiss_kinds.bytes_per_vector(index, dim),
        "index_bytes_per_vector": round(size / n, 2),
        "peak_rss_build_mb": round(peak / 2**20, 1),
        "rss_after_build_mb": round(resident / 2**20, 1),
        "peak_since": "start of build" if peak_reset else "process start",
        "points": [],
    }
    q256 = np.ascontiguousarray(queries[:QPS_QUERIES])
    for sp_dict in search_points(kind, bp, n):
        sp = faiss_kinds.search_parameters(index, faiss_kinds.parse_search_params(kind, sp_dict))
        faiss.omp_set_num_threads(BUILD_THREADS)
        _, rows = index.search(queries, 10, params=sp)
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows.tolist(), truth.tolist())]))
        faiss.omp_set_num_threads(SEARCH_THREADS)
        t0 = time.perf_counter()
        single, batched = qps(index, q256, 10, sp, repeats=1)
        # Repeat (median of 3) when one pass is short enough for it to be cheap.
        if time.perf_counter() - t0 < 10:
            single, batched = qps(index, q256, 10, sp, repeats=3)
        row["points"].append(
            {"search_params": sp_dict, "recall@10": round(recall, 4), "qps_1": round(single, 1), "qps_256": round(batched, 1)}
        )
    # CPU time other processes took while this cell ran: near 0 when the machine was quiet.
    row["other_cpu_share"] = round(max(0.0, busy_cpu_s() - busy0 - (own_cpu_s() - own0)) / (time.perf_counter() - wall0), 2)
    row["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    row["faiss_version"] = faiss.__version__
    return row


def main(argv: list[str]) -> int:
    out, kind, n = Path(argv[0]), argv[1], int(argv[2])
    row = run_cell(out, kind, n)
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(main(sys.argv[1:]))
