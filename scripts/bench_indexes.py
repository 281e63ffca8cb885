"""Index kinds benchmark: bytes/vector, nDCG@10, recall@10 vs flat, QPS, build time.

One command per data set (each well under 15 minutes on 2 cores), then one for the report:

    flock /tmp/densekit-cpu.lock .venv/bin/python scripts/bench_vectors.py scifact nfcorpus nq-utd wikiqa squad_subset
    flock /tmp/densekit-cpu.lock .venv/bin/python scripts/bench_indexes.py run scifact
    flock /tmp/densekit-cpu.lock .venv/bin/python scripts/bench_indexes.py run nfcorpus
    flock /tmp/densekit-cpu.lock .venv/bin/python scripts/bench_indexes.py run combined
    .venv/bin/python scripts/bench_indexes.py report      # table + docs/index_recall_qps.png

Vectors: the default bi-encoder (all-MiniLM-L6-v2, 384-d, cosine), corpus through the shared
embedding cache. Timings: faiss with one OpenMP thread, raw faiss search calls with the
same SearchParameters object densekit passes; QPS is the median of 5 repeats.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_vectors import corpus_vectors, data_dir, query_vectors  # noqa: E402

OUT = ROOT / "runs" / "bench-indexes"
PLOT = ROOT / "docs" / "index_recall_qps.png"
REPEATS = 5
NPROBES = (2, 4, 8, 16, 32)
EF_SEARCH = (8, 16, 32, 64, 128)
OPERATING = {"nprobe": 16, "ef_search": 64}  # the row reported in the main table

# Training queries for Distill-VQ: only the *texts* of each set's train-split queries
# (no labels used); test queries are never seen in training.
TRAIN_SPLITS = {"scifact": ["scifact"], "nfcorpus": ["nfcorpus"], "combined": ["scifact", "nfcorpus", "squad_subset"]}
COMBINED = ("scifact", "nfcorpus", "wikiqa", "nq-utd", "squad_subset")
MAX_TRAIN_QUERIES = 2000  # combined corpus only (keeps its job under ~15 min); the single sets use every train query
DISTILL = {
    "lr_codebooks": 1e-3,
    "lr_centroids": 1e-3,
    "temperature": 0.05,
    "ivf_loss_weight": 0.0,
}  # chosen on a dev split of SciFact train queries (runs/bench-indexes/tune*.log)


def split_qids(name: str, split: str) -> list[str]:
    from densekit.data import list_splits, load_qrels

    if split not in list_splits(data_dir() / name):
        return []
    return list(load_qrels(data_dir() / name, split))


def load_set(enc, name: str):
    """(doc ids, doc vectors, {split: (qids, qvecs)}, qrels_test)"""
    from densekit.data import load_qrels

    ids, docs, _ = corpus_vectors(enc, name)
    qids, qv = query_vectors(enc, name)
    pos = {q: i for i, q in enumerate(qids)}
    splits = {}
    for split in ("train", "test"):
        s = [q for q in split_qids(name, split) if q in pos]
        splits[split] = (s, qv[[pos[q] for q in s]] if s else np.zeros((0, docs.shape[1]), np.float32))
    qrels = load_qrels(data_dir() / name, "test") if splits["test"][0] else {}
    return ids, docs, splits, qrels


def dataset(enc, name: str):
    """Docs, eval queries (test split), training queries (train split texts) and qrels."""
    rng = np.random.default_rng(0)
    if name != "combined":
        ids, docs, splits, qrels = load_set(enc, name)
        train = splits["train"][1]
        test_q, test_v = splits["test"]
        nlist = 64
    else:
        all_ids, all_docs, tq, tv, trv, qrels = [], [], [], [], [], {}
        for part in COMBINED:
            ids, docs, splits, qr = load_set(enc, part)
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
    return ids, np.ascontiguousarray(docs), test_q, np.ascontiguousarray(test_v), train, qrels, nlist


def settings(nlist: int, sizes=(8, 16, 32)) -> list[tuple[str, str, dict]]:
    """(label, kind, build params)"""
    out = [("flat", "flat", {}), ("hnsw M32", "hnsw", {"hnsw_m": 32, "ef_construction": 80}), (f"ivf{nlist}", "ivf", {"nlist": nlist})]
    for m in sizes:
        out.append((f"ivfpq {m}B", "ivfpq", {"nlist": nlist, "pq_m": m, "pq_nbits": 8}))
        out.append((f"opq-ivfpq {m}B", "opq-ivfpq", {"nlist": nlist, "pq_m": m, "pq_nbits": 8}))
        out.append((f"distilled {m}B", "distilled", {"nlist": nlist, "pq_m": m, "pq_nbits": 8}))
    return out


def qps(index, queries: np.ndarray, k: int, sp) -> tuple[float, float]:
    def once_single():
        t = time.perf_counter()
        for i in range(len(queries)):
            index.search(queries[i : i + 1], k, params=sp)
        return len(queries) / (time.perf_counter() - t)

    def once_batch():
        t = time.perf_counter()
        index.search(queries, k, params=sp)
        return len(queries) / (time.perf_counter() - t)

    return float(np.median([once_single() for _ in range(REPEATS)])), float(np.median([once_batch() for _ in range(REPEATS)]))


def ndcg10(qrels, qids, doc_ids, rows, scores) -> float | None:
    if not qrels:
        return None
    from densekit.eval.metrics import trec_metrics

    run = {q: {doc_ids[r]: float(s) for r, s in zip(rr, ss) if r >= 0} for q, rr, ss in zip(qids, rows, scores)}
    return trec_metrics(qrels, run, k_values=(10,)).aggregate["ndcg@10"]


def run(name: str) -> None:
    from densekit.encoder import Encoder
    from densekit.index import faiss_kinds
    from densekit.index.dense_index import DenseIndex
    from densekit.index.manifest import EncoderSpec
    from densekit.training.distill_vq import IVFPQQuantizer
    from densekit.training.distill_vq_config import DistillTrain
    from densekit.training.distill_vq_train import distill_quantizer

    faiss.omp_set_num_threads(1)
    import torch

    torch.set_num_threads(2)
    cfg_train = DistillTrain(**DISTILL)
    enc = Encoder("default", device="cpu")
    ids, docs, test_q, test_v, train_v, qrels, nlist = dataset(enc, name)
    corpus = {d: {"title": "", "text": ""} for d in ids}  # texts are not needed to search
    spec = EncoderSpec(name="default", dim=docs.shape[1])
    print(
        f"{name}: {len(ids)} docs, {len(test_q)} eval queries, {len(train_v)} training queries, nlist={nlist}", file=sys.stderr, flush=True
    )
    flat = faiss.IndexFlatIP(docs.shape[1])
    flat.add(docs)
    _, truth = flat.search(test_v, 10)
    rows_out = []
    starts: dict[int, tuple] = {}  # pq_m -> (trained OPQ+IVF-PQ, its training seconds)
    # The combined corpus skips 8 bytes/vector to keep the job under ~15 minutes on 2 cores.
    for label, kind, bp in settings(nlist, (16, 32) if name == "combined" else (8, 16, 32)):
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
                hist = distill_quantizer(qz, docs, train_v, cfg_train, progress=False)
                idx = DenseIndex.build(docs, corpus, ids, spec, kind=kind, build_params=bp, trained_index=qz.export_faiss())
                extra = {"distill_steps": hist.steps, "distill_s": round(hist.seconds, 1), "epoch_loss": [round(x, 4) for x in hist.loss]}
            build_s = start_s + time.perf_counter() - t0
        else:
            idx = DenseIndex.build(docs, corpus, ids, spec, kind=kind, build_params=bp)
            build_s = time.perf_counter() - t0
        sweep = (
            [{}]
            if kind == "flat"
            else [{"ef_search": e} for e in EF_SEARCH]
            if kind == "hnsw"
            else [{"nprobe": p} for p in NPROBES if p <= nlist]
        )
        for sp_dict in sweep:
            sp = faiss_kinds.search_parameters(idx.faiss, faiss_kinds.parse_search_params(kind, sp_dict))
            scores, rows = idx.faiss.search(test_v, 10, params=sp)
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows.tolist(), truth.tolist())]))
            single, batched = qps(idx.faiss, test_v, 10, sp)
            row = {
                "dataset": name,
                "label": label,
                "kind": kind,
                "build_params": bp,
                "search_params": sp_dict,
                "bytes_per_vector": idx.manifest.bytes_per_vector,
                "index_bytes_per_vector": idx.manifest.extra.get("index_bytes_per_vector"),
                "ndcg@10": ndcg10(qrels, test_q, ids, rows, scores),
                "recall@10_vs_flat": recall,
                "qps_single": round(single, 1),
                "qps_batched": round(batched, 1),
                "build_s": round(build_s, 2),
                **extra,
            }
            rows_out.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {
        "dataset": name,
        "docs": len(ids),
        "eval_queries": len(test_q),
        "train_queries": len(train_v),
        "nlist": nlist,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "faiss": faiss.__version__,
        "threads": 1,
        "distill": cfg_train.model_dump(),
    }
    (OUT / f"results-{name}.json").write_text(json.dumps({"meta": meta, "rows": rows_out}, indent=1))


def _fmt(x, nd=3):
    return "-" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def report() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = sorted(OUT.glob("results-*.json"))
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
    (OUT / "report.md").write_text(text + "\n")
    print(text)

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
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=80)
    print(f"plot: {PLOT}", file=sys.stderr)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="benchmark one data set: scifact, nfcorpus or combined")
    r.add_argument("dataset", choices=["scifact", "nfcorpus", "combined"])
    r.add_argument("--distill", nargs="*", default=[], metavar="KEY=VALUE", help="DistillTrain overrides, e.g. lr_schedule=constant")
    sub.add_parser("report", help="markdown tables and the recall-vs-QPS plot from runs/bench-indexes/results-*.json")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        for kv in args.distill:
            k, v = kv.split("=", 1)
            DISTILL[k] = json.loads(v) if v[:1].isdigit() or v in ("true", "false") else v
        run(args.dataset)
    else:
        report()


if __name__ == "__main__":
    main()
