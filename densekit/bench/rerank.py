"""Reranker benchmarks: throughput (pairs/s) on real pairs, and quality of one reranker over a
given first-stage run on a fixed, reduced protocol (the first `max_queries` judged queries,
each query's top `top_n` first-stage hits; both stages scored on those candidates by
densekit.eval.rerank)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ThroughputOptions:
    """Field names match the `densekit bench rerank throughput` flags."""

    data: Path
    llm: list[str] = field(default_factory=list)
    cross_encoder: list[str] = field(default_factory=list)
    pairs: int = 16
    repeats: int = 5
    batch_size: int = 8
    max_length: list[int] = field(default_factory=list)
    dtype: list[str] = field(default_factory=list)


def rerank_throughput(opts: ThroughputOptions) -> Iterator[dict]:
    """One row per system x max_length x dtype: median seconds of `repeats` timed passes over the
    same pairs (the first judged test query x the first `pairs` corpus documents), after one warm-up.
    An LLM reranker gets two rows, its query prefix computed once per query ("shared") and once per
    document ("per document"), timed in alternation so their ratio is measured side by side."""
    from densekit.data import load_beir
    from densekit.data.beir import document_text
    from densekit.rerankers import load_reranker
    from densekit.rerankers.llm import LLMReranker

    ds = load_beir(opts.data, "test")
    qid = next(iter(ds.qrels))
    query = ds.queries[qid]
    docs = [document_text(d) for d in list(ds.corpus.values())[: opts.pairs]]
    systems = [(n, "llm") for n in opts.llm] + [(n, "cross-encoder") for n in opts.cross_encoder]
    max_lengths: list[int | None] = [*opts.max_length] or [None]
    for name, kind in systems:
        for ml, dt in [(m, d) for m in max_lengths for d in (opts.dtype or ["float32"])]:
            rr = load_reranker(name, kind=kind, device="cpu", max_length=ml, dtype=dt)
            toks = rr.count_tokens(query, docs)
            rr.score(query, docs[: opts.batch_size], batch_size=opts.batch_size)  # warm-up
            prefixes = {"shared": True, "per document": False} if kind == "llm" else {"n/a": None}
            times: dict[str, list[float]] = {p: [] for p in prefixes}
            for _ in range(opts.repeats):
                for label, share in prefixes.items():
                    if isinstance(rr, LLMReranker) and share is not None:
                        rr.share_prefix = share
                    t = time.perf_counter()
                    rr.score(query, docs, batch_size=opts.batch_size)
                    times[label].append(time.perf_counter() - t)
            for label, ts in times.items():
                med = statistics.median(ts)
                yield {
                    "system": name,
                    "kind": kind,
                    "dtype": dt,
                    "max_length": rr.max_length,
                    "query_prefix": label,
                    "pairs": len(docs),
                    "mean_tokens": sum(toks) / len(toks),
                    "median_s": round(med, 3),
                    "pairs_per_s": round(len(docs) / med, 2),
                    "times_s": [round(x, 3) for x in ts],
                }


@dataclass
class RunRerankOptions:
    """Field names match the `densekit bench rerank evaluate` flags."""

    reranker: str
    data: Path
    run: Path
    out: Path
    kind: str = "auto"
    split: str = "test"
    top_n: int = 20
    max_queries: int | None = None
    max_length: int | None = None
    batch_size: int = 8
    dtype: str = "auto"


def rerank_first_stage_run(opts: RunRerankOptions) -> dict:
    """Rerank a first-stage TREC run on the reduced protocol; write the rerank report to `opts.out`
    and return both stages' headline metrics with the run's info."""
    from densekit.data import load_beir
    from densekit.eval.report import headline
    from densekit.eval.rerank import evaluate_rerank, write_rerank_report
    from densekit.eval.trec import read_run
    from densekit.rerankers import load_reranker

    ds = load_beir(opts.data, opts.split)
    rr = load_reranker(opts.reranker, kind=opts.kind, device="cpu", dtype=opts.dtype, max_length=opts.max_length)
    outcome = evaluate_rerank(rr, ds, read_run(opts.run), top_n=opts.top_n, max_queries=opts.max_queries, batch_size=opts.batch_size)
    extra = {"max_length": rr.max_length, "dtype": opts.dtype, "run": str(opts.run), "data": str(opts.data), "split": opts.split}
    write_rerank_report(opts.out, outcome, extra)
    return {"first_stage": headline(outcome.first_stage), "reranked": headline(outcome.reranked), **outcome.info, **extra}
