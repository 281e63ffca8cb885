"""Reranking throughput (pairs/s) of the LLM and cross-encoder rerankers on real SciFact pairs.

Each system scores the same pairs (first test queries x their first dense hits, or corpus
documents in file order when no run is given); median of `--repeats` timed passes after one
warm-up. Usage:
  flock /tmp/densekit-cpu.lock .venv/bin/python scripts/bench_rerank_throughput.py \
      --llm smollm2 --cross-encoder runs/rerank/cross-encoder --pairs 16 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from densekit.data import load_beir
from densekit.data.beir import document_text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(os.environ.get("DENSEKIT_DATA_DIR", "../shared/data"), "scifact"))
    ap.add_argument("--llm", action="append", default=[], help="LLM reranker(s)")
    ap.add_argument("--cross-encoder", action="append", default=[], help="cross-encoder(s)")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, action="append", default=[])
    ap.add_argument("--dtype", action="append", default=[], help="float32 (default) and/or bfloat16 (CPUs with avx512_bf16)")
    args = ap.parse_args()

    from densekit.rerankers import load_reranker

    ds = load_beir(args.data, "test")
    qid = next(iter(ds.qrels))
    query = ds.queries[qid]
    docs = [document_text(d) for d in list(ds.corpus.values())[: args.pairs]]
    results = []
    systems = [(n, "llm") for n in args.llm] + [(n, "cross-encoder") for n in args.cross_encoder]
    for name, kind in systems:
        for ml, dt in [(m, d) for m in (args.max_length or [None]) for d in (args.dtype or ["float32"])]:
            rr = load_reranker(name, kind=kind, device="cpu", max_length=ml, dtype=dt)
            toks = rr.count_tokens(query, docs)
            rr.score(query, docs[: args.batch_size], batch_size=args.batch_size)  # warm-up
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                rr.score(query, docs, batch_size=args.batch_size)
                times.append(time.perf_counter() - t)
            med = statistics.median(times)
            row = {
                "system": name,
                "kind": kind,
                "dtype": dt,
                "max_length": rr.max_length,
                "pairs": len(docs),
                "mean_tokens": sum(toks) / len(toks),
                "median_s": round(med, 3),
                "pairs_per_s": round(len(docs) / med, 2),
                "times_s": [round(x, 3) for x in times],
            }
            print(json.dumps(row), flush=True)
            results.append(row)


if __name__ == "__main__":
    main()
