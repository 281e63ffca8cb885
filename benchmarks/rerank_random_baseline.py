"""Expected metrics of a random reranker on the reduced protocol (chance level for the table).

.venv/bin/python benchmarks/rerank_random_baseline.py --run runs/eval-scifact-base/run.trec --top-n 20 --max-queries 50 --shuffles 200
"""

from __future__ import annotations

import argparse
import json
import random
import statistics

from densekit.data import load_beir
from densekit.eval.rerank import candidates, score_stages
from densekit.eval.trec import read_run
from densekit.settings import Settings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Settings().data_dir / "scifact"), help="BEIR folder (default: scifact under DENSEKIT_DATA_DIR)")
    ap.add_argument("--run", required=True)
    ap.add_argument("--top-n", type=int, default=20)
    ap.add_argument("--max-queries", type=int, default=50)
    ap.add_argument("--shuffles", type=int, default=200)
    args = ap.parse_args()
    ds = load_beir(args.data, "test")
    run = read_run(args.run)
    first, qrels = candidates(ds, run, args.top_n, args.max_queries)
    rng = random.Random(0)
    acc: dict[str, list[float]] = {}
    for _ in range(args.shuffles):
        shuffled = {q: {d: rng.random() for d in docs} for q, docs in first.items()}
        _, (m, _) = score_stages(qrels, first, shuffled, args.top_n)
        for k in ("ndcg@10", "mrr@10", "auc_global", "auc_per_query"):
            acc.setdefault(k, []).append(m[k])
    print(json.dumps({k: round(statistics.mean(v), 4) for k, v in acc.items()} | {"shuffles": args.shuffles}))


if __name__ == "__main__":
    main()
