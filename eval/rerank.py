"""Two-stage evaluation: the one reranking protocol of densekit.

Every reranked number densekit reports follows this definition: `densekit eval --rerank`,
a suite configuration with a `reranker` (in-process, or an endpoint whose server reranks),
the reranker benchmarks and the evaluation after reranker training.

- **Queries**: the judged queries (at least one relevant document) the first stage answered.
- **Candidates**: each such query's first-stage top-n (n = `rerank_top_n`), in trec_eval's
  order (with BEIR's ignore_identical_ids, a document whose id is the query's is dropped
  before the cut).
- **Both stages are scored on the same candidates**: the first stage is the candidates
  ordered by their first-stage scores, the reranked stage the same candidates ordered by
  the reranker's scores, so every difference comes from the order the reranker gives.
- **nDCG@k, MRR@k, MAP@k, Recall@k**: trec_eval's, with the full qrels: a relevant document
  the first stage missed still counts in the ideal DCG and in the recall denominator
  (reranking cannot bring it back, and the numbers say so).
- **ROC-AUC** (eval/auc.py): positives are the judged-relevant candidates, negatives the
  other candidates. A relevant document the first stage missed has no reranker score, so
  neither stage counts it. A query with no relevant candidate has no AUC: it has no
  per-query value and adds no pair to the global AUC.
- **RRF** (`fused_outcome`): the same candidates ordered by the reciprocal rank fusion of
  both stages' rankings, scored the same way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from densekit.data.beir import BeirDataset, document_text
from densekit.eval.auc import AucPairs, collect_pairs
from densekit.eval.report import HEADLINE, headline, per_query_csv
from densekit.fusion import RRF_K, fuse_rrf
from densekit.runs import Run, trec_order, truncate_run

__all__ = [
    "HEADLINE",
    "RerankOutcome",
    "candidate_qrels",
    "candidates",
    "evaluate_rerank",
    "fuse_rrf",
    "fused_outcome",
    "headline",
    "rerank_run",
    "reranked_pairs",
    "score_stages",
    "select_queries",
    "two_stage_outcome",
    "write_rerank_report",
]

Qrels = dict[str, dict[str, int]]
PerQuery = dict[str, dict[str, float]]


@dataclass
class RerankOutcome:
    """Both stages of one two-stage evaluation, scored on the same candidates."""

    first_stage: dict[str, float]
    reranked: dict[str, float]
    per_query_first: PerQuery
    per_query_reranked: PerQuery
    run_first: Run  # the candidates with their first-stage scores
    run_reranked: Run  # the same candidates with the second stage's scores
    info: dict[str, Any] = field(default_factory=dict)
    qrels: Qrels = field(default_factory=dict)  # the evaluated queries' full judgements


def _texts(dataset: BeirDataset | Mapping[str, str], doc_ids) -> dict[str, str]:
    if isinstance(dataset, BeirDataset):
        return {d: document_text(dataset.corpus[d]) for d in doc_ids if d in dataset.corpus}
    return {d: dataset[d] for d in doc_ids if d in dataset}


def rerank_run(
    reranker,
    dataset: BeirDataset | Mapping[str, str],
    run: Run,
    top_n: int,
    queries: Mapping[str, str] | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> Run:
    """Rerank each query's top `top_n` hits of `run`.

    `dataset` is a BeirDataset (queries and document texts from it) or a mapping
    doc id -> text (then `queries` maps query id -> text). Queries without text, and hits
    whose document text is unknown, are left out.
    """
    if queries is None:
        if not isinstance(dataset, BeirDataset):
            raise ValueError("queries are required when dataset is a mapping of texts")
        queries = dataset.queries
    out: Run = {}
    qids = [q for q in run if q in queries]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(min(top_n, len(run[q])) for q in qids), desc="rerank pairs", unit="pair")
    for qid in qids:
        ids = [d for d, _ in trec_order(run[qid])[:top_n]]
        texts = _texts(dataset, ids)
        ids = [d for d in ids if d in texts]
        scores = reranker.score(queries[qid], [texts[d] for d in ids], batch_size=batch_size) if ids else []
        out[qid] = {d: float(s) for d, s in zip(ids, scores)}
        if bar is not None:
            bar.update(len(ids))
    if bar is not None:
        bar.close()
    return out


def select_queries(dataset: BeirDataset, run: Run, max_queries: int | None) -> list[str]:
    """Judged queries present in the run; the first `max_queries` by sorted id when capped
    (a fixed, reproducible subset)."""
    qids = sorted(q for q in dataset.qrels if q in run and q in dataset.queries and any(g > 0 for g in dataset.qrels[q].values()))
    return qids[:max_queries] if max_queries else qids


def candidates(dataset: BeirDataset, run: Run, top_n: int, max_queries: int | None = None) -> tuple[Run, Qrels]:
    """The protocol's inputs: the selected queries' first-stage top-n and their full qrels."""
    qids = select_queries(dataset, run, max_queries)
    return truncate_run({q: run[q] for q in qids}, top_n), {q: dataset.qrels[q] for q in qids}


def candidate_qrels(qrels: Qrels, first: Run) -> Qrels:
    """The judgements of the candidates only: the AUC's positives (see the module doc)."""
    pool = {q: set(docs) for q, docs in first.items()}
    return {q: {d: g for d, g in judged.items() if d in pool.get(q, ())} for q, judged in qrels.items()}


def score_stages(qrels: Qrels, first: Run, reranked: Run, top_n: int) -> tuple[tuple[dict, PerQuery], tuple[dict, PerQuery]]:
    """((metrics, per_query) of the first stage, (metrics, per_query) of the reranked stage),
    both over the candidates `first` holds (see the module doc)."""
    from densekit.eval.evaluate import score_run

    auc_qrels = candidate_qrels(qrels, first)
    out = []
    for run in (first, reranked):
        metrics, per_query = score_run(qrels, run, auc_negatives=top_n)
        auc_m, auc_pq = score_run(auc_qrels, run, auc_negatives=top_n)
        metrics["auc_global"], metrics["auc_per_query"] = auc_m["auc_global"], auc_m["auc_per_query"]
        for q, row in per_query.items():
            row.pop("auc", None)
            if "auc" in auc_pq.get(q, {}):
                row["auc"] = auc_pq[q]["auc"]
        out.append((metrics, per_query))
    return out[0], out[1]


def two_stage_outcome(qrels: Qrels, first: Run, reranked: Run, top_n: int, info: dict[str, Any] | None = None) -> RerankOutcome:
    """Score a first stage's candidates and their second-stage order (from any reranker,
    in-process or a server's) under the protocol."""
    (m_first, pq_first), (m_rr, pq_rr) = score_stages(qrels, first, reranked, top_n)
    info = {
        "top_n": top_n,
        "queries": len(first),
        "pairs": sum(len(v) for v in reranked.values()),
        **(info or {}),
    }
    return RerankOutcome(m_first, m_rr, pq_first, pq_rr, first, reranked, info, qrels)


def evaluate_rerank(
    reranker,
    dataset: BeirDataset,
    first_stage: Run,
    top_n: int = 100,
    max_queries: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> RerankOutcome:
    """Rerank `first_stage`'s candidates in-process and score both stages on them."""
    first, qrels = candidates(dataset, first_stage, top_n, max_queries)
    t0 = time.perf_counter()
    reranked = rerank_run(reranker, dataset, first, top_n, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    pairs = sum(len(v) for v in reranked.values())
    info = {
        "reranker": getattr(reranker, "name", str(reranker)),
        "reranker_kind": getattr(reranker, "kind", None),
        "rerank_s": round(seconds, 3),
        "pairs_per_s": round(pairs / seconds, 3) if seconds > 0 else None,
    }
    return two_stage_outcome(qrels, first, reranked, top_n, info)


def fused_outcome(outcome: RerankOutcome, qrels: Qrels | None = None, k: int = RRF_K) -> RerankOutcome:
    """The same two-stage outcome with the second stage replaced by RRF(first, reranked)."""
    qrels = outcome.qrels if qrels is None else qrels
    fused = fuse_rrf([outcome.run_first, outcome.run_reranked], k)
    info = {**outcome.info, "fusion": "rrf", "rrf_k": k}
    return two_stage_outcome(qrels, outcome.run_first, fused, outcome.info["top_n"], info)


def reranked_pairs(outcome: RerankOutcome) -> AucPairs:
    """The second stage's AUC pairs (what its auc_global pools), for calibration and ROC plots."""
    return collect_pairs(candidate_qrels(outcome.qrels, outcome.run_first), outcome.run_reranked, None, outcome.info["top_n"])


def write_rerank_report(out_dir: str | Path, outcome: RerankOutcome, extra: dict[str, Any] | None = None) -> Path:
    """metrics.json (both stages), run.trec (second stage), per_query.csv (second stage),
    per_query_first_stage.csv, report.md."""
    from densekit.atomic import write_json_atomic, write_text_atomic
    from densekit.eval.trec import write_run

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {**outcome.info, **(extra or {})}
    write_json_atomic(out / "metrics.json", {"first_stage": outcome.first_stage, "reranked": outcome.reranked, "info": info})
    write_run(out / "run.trec", outcome.run_reranked, tag="densekit-rerank")
    write_text_atomic(out / "per_query.csv", per_query_csv(outcome.per_query_reranked))
    write_text_atomic(out / "per_query_first_stage.csv", per_query_csv(outcome.per_query_first))
    lines = [
        f"# Reranking: {info.get('reranker')}",
        "",
        f"top-{info['top_n']} of the first stage, {info['queries']} queries, {info['pairs']} pairs, {info.get('pairs_per_s')} pairs/s",
        "",
        "| metric | first stage | reranked |",
        "|---|---|---|",
    ]
    for k in HEADLINE:
        if k in outcome.first_stage:
            lines.append(f"| {k} | {outcome.first_stage[k]:.4f} | {outcome.reranked[k]:.4f} |")
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    return out
