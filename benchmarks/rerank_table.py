"""The Rerankers table of BENCHMARKS.md, recomputed from the reranked run files.

Every system is scored by eval.rerank.score_stages against the same first stage (the
dense run cut to the same queries and top-n), so the numbers are comparable by construction:
  .venv/bin/python benchmarks/rerank_table.py --run runs/eval-scifact-base/run.trec --top-n 20 --max-queries 50 \
      "SmolLM2 zero-shot=runs/rerank/bench/smollm2-zeroshot" "SmolLM2 SFT=runs/rerank/bench/smollm2-sft" ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from densekit.data import load_beir
from densekit.eval.rerank import candidates, score_stages
from densekit.eval.trec import read_run
from densekit.fusion import fuse_rrf
from densekit.settings import Settings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Settings().data_dir / "scifact"), help="BEIR folder (default: scifact under DENSEKIT_DATA_DIR)")
    ap.add_argument("--run", required=True)
    ap.add_argument("--top-n", type=int, default=20)
    ap.add_argument("--max-queries", type=int, default=50)
    ap.add_argument(
        "--fuse", action="store_true", help="add a row per system: its run fused with the dense run by reciprocal rank fusion (k=60)"
    )
    ap.add_argument("--per-query-dir", help="write each row's per_query.csv under DIR/<row slug>/ (for densekit eval compare)")
    ap.add_argument("systems", nargs="+", help="NAME=FOLDER (a rerank report folder with run.trec and metrics.json)")
    args = ap.parse_args()
    ds = load_beir(args.data, "test")
    run = read_run(args.run)
    first, qrels = candidates(ds, run, args.top_n, args.max_queries)
    keys = ("ndcg@10", "mrr@10", "auc_global", "auc_per_query")
    lines = ["| system | nDCG@10 | MRR@10 | AUC global | AUC per query | pairs/s |", "|---|---|---|---|---|---|"]
    (m_first, pq_first), _ = score_stages(qrels, first, first, args.top_n)
    lines.append("| dense first stage (no reranking) | " + " | ".join(f"{m_first[k]:.4f}" for k in keys) + " | - |")
    _write_per_query(args.per_query_dir, "dense", pq_first)
    for spec in args.systems:
        name, folder = spec.split("=", 1)
        folder = Path(folder)
        if not (folder / "run.trec").is_file():
            lines.append(f"| {name} | not measured | | | | |")
            continue
        reranked = read_run(folder / "run.trec")
        # A run over more queries (e.g. all 300) is cut to this table's subset.
        reranked = {q: reranked[q] for q in first if q in reranked}
        if set(reranked) != set(first) or any(set(reranked[q]) != set(first[q]) for q in first):
            raise SystemExit(f"{folder}: not the same queries/candidates as the first stage")
        info = json.loads((folder / "metrics.json").read_text())["info"]
        _, (m, pq) = score_stages(qrels, first, reranked, args.top_n)
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in keys) + f" | {info['pairs_per_s']:.2f} |")
        _write_per_query(args.per_query_dir, name, pq)
        if args.fuse:
            _, (mf, pqf) = score_stages(qrels, first, fuse_rrf([first, reranked]), args.top_n)
            lines.append(f"| {name} + RRF with dense | " + " | ".join(f"{mf[k]:.4f}" for k in keys) + " | - |")
            _write_per_query(args.per_query_dir, name + " rrf", pqf)
    print("\n".join(lines))


def _write_per_query(root: str | None, name: str, per_query: dict) -> None:
    if not root:
        return
    from densekit.atomic import write_text_atomic
    from densekit.eval.report import per_query_csv

    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    out = Path(root) / slug
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "per_query.csv", per_query_csv(per_query))


if __name__ == "__main__":
    main()
