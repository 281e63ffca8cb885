"""Index kinds benchmark: bytes/vector, nDCG@10, recall@10 against exact search, QPS, build time.

Vectors: the default bi-encoder (all-MiniLM-L6-v2, 384-d, cosine), corpus through the shared
embedding cache. Timings: faiss with one OpenMP thread, raw faiss search calls with the same
SearchParameters object densekit passes; QPS is the median of `repeats` passes, one query per
call and the whole batch in one call.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from densekit.bench.vectors import DEFAULT_VECTORS_DIR, corpus_vectors, query_vectors
from densekit.errors import InvalidInputError

if TYPE_CHECKING:
    from densekit.index.dense_index import DenseIndex

DEFAULT_OUT = Path("runs/bench-indexes")
DEFAULT_PLOT = Path("docs/index_recall_qps.png")
DATASETS = ("scifact", "nfcorpus", "combined")
REPEATS = 5
NPROBES = (2, 4, 8, 16, 32)
EF_SEARCH = (8, 16, 32, 64, 128)
OPERATING = {"nprobe": 16, "ef_search": 64}  # the row reported in the main table

# Training queries for Distill-VQ: only the *texts* of each set's train-split queries
# (no labels used); test queries are never seen in training.
TRAIN_SPLITS = {"scifact": ["scifact"], "nfcorpus": ["nfcorpus"], "combined": ["scifact", "nfcorpus", "squad_subset"]}
COMBINED = ("scifact", "nfcorpus", "wikiqa", "nq-utd", "squad_subset")
MAX_TRAIN_QUERIES = 2000  # combined corpus only (keeps its job under ~15 min); the single sets use every train query
DISTILL: dict[str, Any] = {
    "lr_codebooks": 1e-3,
    "lr_centroids": 1e-3,
    "temperature": 0.05,
    "ivf_loss_weight": 0.0,
}  # chosen on a dev split of SciFact train queries


@dataclass
class BenchSet:
    """Vectors of one benchmark data set: documents, test queries (with qrels) and training query texts' vectors."""

    name: str
    doc_ids: list[str]
    docs: np.ndarray
    test_qids: list[str]
    test_vectors: np.ndarray
    train_vectors: np.ndarray
    qrels: dict[str, dict[str, int]]
    nlist: int


@dataclass(frozen=True)
class IndexSetting:
    label: str
    kind: str
    build_params: dict


def _split_qids(folder: Path, split: str) -> list[str]:
    from densekit.data import list_splits, load_qrels

    if split not in list_splits(folder):
        return []
    return list(load_qrels(folder, split))


def _load_part(enc, folder: Path, vectors_dir: Path):
    """(doc ids, doc vectors, {split: (qids, qvecs)}, qrels_test)"""
    from densekit.data import load_qrels

    ids, docs, _ = corpus_vectors(enc, folder)
    qids, qv = query_vectors(enc, folder, vectors_dir)
    pos = {q: i for i, q in enumerate(qids)}
    splits = {}
    for split in ("train", "test"):
        s = [q for q in _split_qids(folder, split) if q in pos]
        splits[split] = (s, qv[[pos[q] for q in s]] if s else np.zeros((0, docs.shape[1]), np.float32))
    qrels = load_qrels(folder, "test") if splits["test"][0] else {}
    return ids, docs, splits, qrels


def load_bench_set(enc, name: str, data_dir: Path, vectors_dir: Path = DEFAULT_VECTORS_DIR) -> BenchSet:
    """Docs, eval queries (test split), training queries (train split texts) and qrels of a data set
    under `data_dir`; `combined` joins five sets with ids prefixed by their set's name."""
    rng = np.random.default_rng(0)
    if name != "combined":
        ids, docs, splits, qrels = _load_part(enc, data_dir / name, vectors_dir)
        train = splits["train"][1]
        test_q, test_v = splits["test"]
        nlist = 64
    else:
        all_ids, all_docs, tq, tv, trv, qrels = [], [], [], [], [], {}
        for part in COMBINED:
            ids, docs, splits, qr = _load_part(enc, data_dir / part, vectors_dir)
            all_ids += [f"{part}/{d}" for d in ids]
            all_docs.append(docs)
            q, v = splits["test"]
            tq += [f"{part}/{x}" for x in q]
            tv.append(v)
            qrels.update({f"{part}/{x}": {f"{part}/{d}": g for d, g in qr[x].items()} for x in q})
            if part in TRAIN_SPLITS["combined"]:
                trv.append(splits["train"][1])
        ids, docs, test_q, test_v, train = all_ids, np.vstack(all_docs), tq, np.vstack(tv), np.vstack(trv)
        nlist = 128
    if name == "combined" and len(train) > MAX_TRAIN_QUERIES:
        train = train[np.sort(rng.choice(len(train), MAX_TRAIN_QUERIES, replace=False))]
    return BenchSet(name, ids, np.ascontiguousarray(docs), test_q, np.ascontiguousarray(test_v), train, qrels, nlist)


def index_settings(nlist: int, sizes=(8, 16, 32)) -> list[IndexSetting]:
    """Every index benchmarked: flat, HNSW, IVF, and IVF-PQ / OPQ-IVF-PQ / Distill-VQ at each code size in bytes."""
    out = [IndexSetting("flat", "flat", {}), IndexSetting("hnsw M32", "hnsw", {"hnsw_m": 32, "ef_construction": 80})]
    out.append(IndexSetting(f"ivf{nlist}", "ivf", {"nlist": nlist}))
    for m in sizes:
        bp = {"nlist": nlist, "pq_m": m, "pq_nbits": 8}
        out += [IndexSetting(f"ivfpq {m}B", "ivfpq", bp), IndexSetting(f"opq-ivfpq {m}B", "opq-ivfpq", bp)]
        out.append(IndexSetting(f"distilled {m}B", "distilled", bp))
    return out


def qps(index, queries: np.ndarray, k: int, sp, repeats: int = REPEATS) -> tuple[float, float]:
    """Median queries/s over `repeats` passes: one query per call, then the whole batch in one call."""

    def once_single():
        t = time.perf_counter()
        for i in range(len(queries)):
            index.search(queries[i : i + 1], k, params=sp)
        return len(queries) / (time.perf_counter() - t)

    def once_batch():
        t = time.perf_counter()
        index.search(queries, k, params=sp)
        return len(queries) / (time.perf_counter() - t)

    return float(np.median([once_single() for _ in range(repeats)])), float(np.median([once_batch() for _ in range(repeats)]))


def _ndcg10(qrels, qids, doc_ids, rows, scores) -> float | None:
    if not qrels:
        return None
    from densekit.eval.metrics import trec_metrics

    run = {q: {doc_ids[r]: float(s) for r, s in zip(rr, ss) if r >= 0} for q, rr, ss in zip(qids, rows, scores)}
    return trec_metrics(qrels, run, k_values=(10,)).aggregate["ndcg@10"]


def _sweep(kind: str, nlist: int) -> list[dict]:
    if kind == "flat":
        return [{}]
    if kind == "hnsw":
        return [{"ef_search": e} for e in EF_SEARCH]
    return [{"nprobe": p} for p in NPROBES if p <= nlist]


def _measure(idx: DenseIndex, data: BenchSet, setting: IndexSetting, sp_dict: dict, truth: np.ndarray, repeats: int) -> dict:
    """One result row: nDCG@10, recall@10 against exact search and both QPS figures of `idx` at search parameters `sp_dict`."""
    from densekit.index import faiss_kinds

    sp = faiss_kinds.search_parameters(idx.faiss, faiss_kinds.parse_search_params(setting.kind, sp_dict))
    scores, rows = idx.faiss.search(data.test_vectors, 10, params=sp)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows.tolist(), truth.tolist())]))
    single, batched = qps(idx.faiss, data.test_vectors, 10, sp, repeats)
    return {
        "dataset": data.name,
        "label": setting.label,
        "kind": setting.kind,
        "build_params": setting.build_params,
        "search_params": sp_dict,
        "bytes_per_vector": idx.manifest.bytes_per_vector,
        "index_bytes_per_vector": idx.manifest.extra.get("index_bytes_per_vector"),
        "ndcg@10": _ndcg10(data.qrels, data.test_qids, data.doc_ids, rows, scores),
        "recall@10_vs_flat": recall,
        "qps_single": round(single, 1),
        "qps_batched": round(batched, 1),
    }


def benchmark_indexes(data: BenchSet, settings: list[IndexSetting], distill: dict | None = None, repeats: int = REPEATS) -> list[dict]:
    """Build every setting on `data` and measure it over its search-parameter sweep; one row per
    (setting, search parameters) with recall@10 against exact search and both QPS figures."""
    import faiss

    from densekit.index import faiss_kinds
    from densekit.index.dense_index import DenseIndex
    from densekit.index.manifest import EncoderSpec
    from densekit.training.distill_vq import IVFPQQuantizer
    from densekit.training.distill_vq_config import DistillTrain
    from densekit.training.distill_vq_train import distill_quantizer

    cfg_train = DistillTrain(**(DISTILL if distill is None else distill))
    docs, ids, test_v, nlist = data.docs, data.doc_ids, data.test_vectors, data.nlist
    corpus = {d: {"title": "", "text": ""} for d in ids}  # texts are not needed to search
    spec = EncoderSpec(name="default", dim=docs.shape[1])
    flat = faiss.IndexFlatIP(docs.shape[1])
    flat.add(docs)
    _, truth = flat.search(test_v, 10)
    rows_out = []
    starts: dict[int, tuple] = {}  # pq_m -> (trained OPQ+IVF-PQ, its training seconds)
    for setting in settings:
        kind, bp = setting.kind, setting.build_params
        t0 = time.perf_counter()
        extra = {}
        if kind in ("opq-ivfpq", "distilled"):
            # One trained OPQ+IVF-PQ per size serves both rows: the distilled index starts from
            # exactly the index it is compared with.
            if bp["pq_m"] not in starts:
                start = faiss_kinds.make_index("opq-ivfpq", docs.shape[1], bp, n_train=len(docs))
                faiss_kinds.train_index(start, docs, bp)
                starts[bp["pq_m"]] = (start, time.perf_counter() - t0)
            start, start_s = starts[bp["pq_m"]]
            t0 = time.perf_counter()
            if kind == "opq-ivfpq":
                idx = DenseIndex.build(docs, corpus, ids, spec, kind=kind, build_params=bp, trained_index=faiss.clone_index(start))
            else:
                qz = IVFPQQuantizer.from_faiss(start, assign_temperature=cfg_train.assign_temperature)
                hist = distill_quantizer(qz, docs, data.train_vectors, cfg_train, progress=False)
                idx = DenseIndex.build(docs, corpus, ids, spec, kind=kind, build_params=bp, trained_index=qz.export_faiss())
                extra = {"distill_steps": hist.steps, "distill_s": round(hist.seconds, 1), "epoch_loss": [round(x, 4) for x in hist.loss]}
            build_s = start_s + time.perf_counter() - t0
        else:
            idx = DenseIndex.build(docs, corpus, ids, spec, kind=kind, build_params=bp)
            build_s = time.perf_counter() - t0
        # Each index holds a document store in a temporary folder: release it before the next build.
        with idx:
            for sp_dict in _sweep(kind, nlist):
                row = _measure(idx, data, setting, sp_dict, truth, repeats)
                row.update(build_s=round(build_s, 2), **extra)
                rows_out.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return rows_out


def parse_distill_overrides(pairs: list[str]) -> dict:
    """KEY=VALUE overrides of the Distill-VQ training settings (numbers and booleans as JSON)."""
    out: dict[str, Any] = dict(DISTILL)
    for kv in pairs:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise InvalidInputError(f"--distill: expected KEY=VALUE, got {kv!r}")
        out[k] = json.loads(v) if v[:1].isdigit() or v in ("true", "false") else v
    return out


def run_dataset(
    name: str, data_dir: Path, out_dir: Path = DEFAULT_OUT, vectors_dir: Path = DEFAULT_VECTORS_DIR, distill: dict | None = None
) -> Path:
    """Benchmark every index kind on one data set (scifact, nfcorpus or combined); writes and returns out_dir/results-<name>.json."""
    import faiss
    import torch

    from densekit.atomic import write_text_atomic
    from densekit.encoder import Encoder
    from densekit.training.distill_vq_config import DistillTrain

    if name not in DATASETS:
        raise InvalidInputError(f"unknown data set {name!r}: choose from {', '.join(DATASETS)}")
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(2)
    distill = DISTILL if distill is None else distill
    enc = Encoder("default", device="cpu")
    data = load_bench_set(enc, name, Path(data_dir), Path(vectors_dir))
    print(
        f"{name}: {len(data.doc_ids)} docs, {len(data.test_qids)} eval queries, {len(data.train_vectors)} training queries, nlist={data.nlist}",
        file=sys.stderr,
        flush=True,
    )
    # The combined corpus skips 8 bytes/vector to keep the job under ~15 minutes on 2 cores.
    rows = benchmark_indexes(data, index_settings(data.nlist, (16, 32) if name == "combined" else (8, 16, 32)), distill)
    meta = {
        "dataset": name,
        "docs": len(data.doc_ids),
        "eval_queries": len(data.test_qids),
        "train_queries": len(data.train_vectors),
        "nlist": data.nlist,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "faiss": faiss.__version__,
        "threads": 1,
        "distill": DistillTrain(**distill).model_dump(),
    }
    path = Path(out_dir) / f"results-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"meta": meta, "rows": rows}, indent=1))
    return path


def encode_vectors(names: list[str], data_dir: Path, vectors_dir: Path = DEFAULT_VECTORS_DIR, queries: bool = True) -> None:
    """Encode (and cache) the corpus, and the queries unless `queries` is false, of each named data set."""
    from densekit.encoder import Encoder

    enc = Encoder("default", device="cpu")
    for name in names:
        t0 = time.perf_counter()
        ids, _, _ = corpus_vectors(enc, Path(data_dir) / name)
        if queries:
            query_vectors(enc, Path(data_dir) / name, Path(vectors_dir))
        print(f"{name}: {len(ids)} docs, {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)


def _fmt(x, nd=3):
    return "-" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def report(out_dir: Path = DEFAULT_OUT, plot: Path | None = DEFAULT_PLOT) -> str:
    """Markdown tables (returned, and written to out_dir/report.md) and the recall-vs-QPS plot from out_dir/results-*.json."""
    from densekit.atomic import write_text_atomic

    files = sorted(Path(out_dir).glob("results-*.json"))
    order = {"scifact": 0, "nfcorpus": 1, "combined": 2}
    results = sorted((json.loads(f.read_text()) for f in files), key=lambda r: order.get(r["meta"]["dataset"], 9))
    lines = []
    for res in results:
        m = res["meta"]
        lines.append(
            f"\n**{m['dataset']}** ({m['docs']} docs, {m['eval_queries']} test queries, nlist={m['nlist']}, "
            f"Distill-VQ trained on {m['train_queries']} train-split query texts, "
            f"lr {m['distill']['lr_codebooks']:g} {m['distill'].get('lr_schedule', 'constant')}, {m['distill']['epochs']} epochs; {m['date']})\n"
        )
        lines.append("| index | bytes/vec (codes / whole) | search | nDCG@10 | recall@10 vs flat | QPS 1-query | QPS batch | build s |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for r in res["rows"]:
            sp = r["search_params"]
            if (
                sp
                and sp.get("nprobe", OPERATING["nprobe"]) != OPERATING["nprobe"]
                and sp.get("ef_search", OPERATING["ef_search"]) != OPERATING["ef_search"]
            ):
                continue
            if sp and not (sp.get("nprobe") == OPERATING["nprobe"] or sp.get("ef_search") == OPERATING["ef_search"]):
                continue
            lines.append(
                f"| {r['label']} | {r['bytes_per_vector']:g} / {r['index_bytes_per_vector']:g} | {', '.join(f'{k}={v}' for k, v in sp.items()) or 'exact'} "
                f"| {_fmt(r['ndcg@10'])} | {_fmt(r['recall@10_vs_flat'])} | {r['qps_single']:.0f} | {r['qps_batched']:.0f} | {r['build_s']:.1f} |"
            )
        lines.append("")
        lines.append("Distilled vs OPQ+IVF-PQ at equal bytes/vector (same nlist, OPQ start, nprobe sweep):\n")
        lines.append("| bytes | nprobe | nDCG@10 OPQ -> distilled (delta) | recall@10 vs flat OPQ -> distilled (delta) |")
        lines.append("|---|---|---|---|")
        for b in (8, 16, 32):
            for p in NPROBES:
                a = [r for r in res["rows"] if r["label"] == f"opq-ivfpq {b}B" and r["search_params"].get("nprobe") == p]
                d = [r for r in res["rows"] if r["label"] == f"distilled {b}B" and r["search_params"].get("nprobe") == p]
                if not a or not d:
                    continue
                a, d = a[0], d[0]
                nd = "-" if a["ndcg@10"] is None else f"{a['ndcg@10']:.3f} -> {d['ndcg@10']:.3f} ({d['ndcg@10'] - a['ndcg@10']:+.3f})"
                lines.append(
                    f"| {b} | {p} | {nd} | {a['recall@10_vs_flat']:.3f} -> {d['recall@10_vs_flat']:.3f} ({d['recall@10_vs_flat'] - a['recall@10_vs_flat']:+.3f}) |"
                )
    text = "\n".join(lines)
    write_text_atomic(Path(out_dir) / "report.md", text + "\n")
    if plot is None or not results:
        return text
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.2), squeeze=False)
    for ax, res in zip(axes[0], results):
        by_label: dict[str, list] = {}
        for r in res["rows"]:
            by_label.setdefault(r["label"], []).append(r)
        for label, rs in by_label.items():
            if label.endswith(" 8B"):
                continue
            xs = [r["recall@10_vs_flat"] for r in rs]
            ys = [r["qps_single"] for r in rs]
            style = "-o" if label.startswith("distilled") else "--s" if label.startswith("opq") else ":^"
            ax.plot(xs, ys, style, label=label, markersize=4)
        ax.set_yscale("log")
        ax.set_xlabel("recall@10 vs flat")
        ax.set_ylabel("queries/s (1 query per call, 1 thread)")
        ax.set_title(f"{res['meta']['dataset']} ({res['meta']['docs']} docs)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("densekit index kinds, all-MiniLM-L6-v2 384-d, CPU-2c (sweep: nprobe 2-32 / efSearch 8-128)", fontsize=9)
    fig.tight_layout()
    Path(plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=80)
    plt.close(fig)
    print(f"plot: {plot}", file=sys.stderr)
    return text
