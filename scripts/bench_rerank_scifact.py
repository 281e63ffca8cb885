"""Rerank a first-stage SciFact run with one reranker on a fixed, reduced protocol.

The same protocol for every system: the first `--max-queries` judged test queries (sorted
by id), each query's top `--top-n` first-stage hits; both stages scored on those candidates
(eval/rerank.py). One reranker per call, so each call stays a short job under the CPU lock:
  flock /tmp/densekit-cpu.lock .venv/bin/python scripts/bench_rerank_scifact.py \
      --reranker smollm2 --run runs/eval-scifact-base/run.trec --top-n 20 --max-queries 50 \
      --out runs/rerank/bench/smollm2-zeroshot
"""

from __future__ import annotations

import argparse
import json
import os

from densekit.data import load_beir
from densekit.eval.rerank import evaluate_rerank, headline, write_rerank_report
from densekit.eval.trec import read_run
from densekit.rerankers import load_reranker


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reranker", required=True)
    ap.add_argument("--kind", default="auto")
    ap.add_argument("--data", default=os.path.join(os.environ.get("DENSEKIT_DATA_DIR", "../shared/data"), "scifact"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--run", required=True, help="first-stage TREC run")
    ap.add_argument("--top-n", type=int, default=20)
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--max-length", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    ds = load_beir(args.data, args.split)
    rr = load_reranker(args.reranker, kind=args.kind, device="cpu", dtype=args.dtype, max_length=args.max_length)
    outcome = evaluate_rerank(rr, ds, read_run(args.run), top_n=args.top_n, max_queries=args.max_queries, batch_size=args.batch_size)
    extra = {"max_length": rr.max_length, "dtype": args.dtype, "run": args.run, "data": args.data, "split": args.split}
    write_rerank_report(args.out, outcome, extra)
    print(json.dumps({"first_stage": headline(outcome.first_stage), "reranked": headline(outcome.reranked), **outcome.info, **extra}))


if __name__ == "__main__":
    main()
