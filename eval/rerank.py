"""Two-stage evaluation: rerank a first-stage run's top-n and score both stages alike.

`rerank_run` rescores each query's top-n first-stage hits with a `Reranker` and returns a
run holding those n documents with the reranker's scores. `evaluate_rerank` scores the
first stage and the reranked stage on the *same* candidates (each query's top-n), so every
difference comes from the order the reranker gives them: nDCG@10 and MRR@10 as trec_eval
defines them (relevant documents the first stage missed still count in the ideal DCG),
and ROC-AUC with the query's relevant documents among its top-n as positives and its other
top-n documents as negatives (a missed relevant document cannot be reranked, so both
stages leave it out of the AUC; queries with no relevant document in their top-n have no
AUC).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from densekit.data.beir import BeirDataset, document_text
from densekit.fusion import RRF_K, fuse_rrf
from densekit.runs import Run, trec_order


@dataclass
class RerankOutcome:
    first_stage: dict[str, float]
    reranked: dict[str, float]
    per_query_first: dict[str, dict[str, float]]
    per_query_reranked: dict[str, dict[str, float]]
    run_first: Run
    run_reranked: Run
    info: dict[str, Any] = field(default_factory=dict)


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


def candidates(dataset: BeirDataset, run: Run, top_n: int, max_queries: int | None = None) -> tuple[Run, dict[str, dict[str, int]]]:
    """The two-stage protocol's inputs: the selected queries' first-stage top-n and their qrels."""
    from densekit.eval.trec import truncate_run

    qids = select_queries(dataset, run, max_queries)
    return truncate_run({q: run[q] for q in qids}, top_n), {q: dataset.qrels[q] for q in qids}


def score_stages(qrels: dict[str, dict[str, int]], first: Run, reranked: Run, top_n: int):
    """(metrics, per_query) of each stage over the same candidates (see the module doc)."""
    from densekit.eval.evaluate import score_run

    candidates = {q: set(docs) for q, docs in first.items()}
    auc_qrels = {q: {d: g for d, g in judged.items() if d in candidates.get(q, ())} for q, judged in qrels.items()}
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


def evaluate_rerank(
    reranker,
    dataset: BeirDataset,
    first_stage: Run,
    top_n: int = 100,
    max_queries: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> RerankOutcome:
    """Rerank `first_stage` and score both stages on the same top-n candidates."""
    first, qrels = candidates(dataset, first_stage, top_n, max_queries)
    t0 = time.perf_counter()
    reranked = rerank_run(reranker, dataset, first, top_n, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    pairs = sum(len(v) for v in reranked.values())
    (m_first, pq_first), (m_rr, pq_rr) = score_stages(qrels, first, reranked, top_n)
    info = {
        "reranker": getattr(reranker, "name", str(reranker)),
        "reranker_kind": getattr(reranker, "kind", None),
        "top_n": top_n,
        "queries": len(first),
        "pairs": pairs,
        "rerank_s": round(seconds, 3),
        "pairs_per_s": round(pairs / seconds, 3) if seconds > 0 else None,
    }
    return RerankOutcome(m_first, m_rr, pq_first, pq_rr, first, reranked, info)


def fused_outcome(outcome: RerankOutcome, qrels: dict[str, dict[str, int]], k: int = RRF_K) -> RerankOutcome:
    """The same two-stage outcome with the second stage replaced by RRF(first, reranked)."""
    top_n = outcome.info["top_n"]
    fused = fuse_rrf([outcome.run_first, outcome.run_reranked], k)
    (m_first, pq_first), (m_fused, pq_fused) = score_stages(qrels, outcome.run_first, fused, top_n)
    info = {**outcome.info, "fusion": "rrf", "rrf_k": k}
    return RerankOutcome(m_first, m_fused, pq_first, pq_fused, outcome.run_first, fused, info)


HEADLINE = ("ndcg@10", "mrr@10", "auc_global", "auc_per_query")


def headline(metrics: dict[str, float]) -> dict[str, float]:
    return {k: metrics[k] for k in HEADLINE if k in metrics}


def write_rerank_report(out_dir, outcome: RerankOutcome, extra: dict[str, Any] | None = None):
    """rerank/metrics.json (both stages), run.trec (reranked), per_query.csv, report.md."""
    from pathlib import Path

    from densekit.atomic import write_json_atomic, write_text_atomic
    from densekit.eval.report import per_query_csv
    from densekit.eval.trec import write_run

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {**outcome.info, **(extra or {})}
    write_json_atomic(out / "metrics.json", {"first_stage": outcome.first_stage, "reranked": outcome.reranked, "info": info})
    write_run(out / "run.trec", outcome.run_reranked, tag="densekit-rerank")
    write_text_atomic(out / "per_query.csv", per_query_csv(outcome.per_query_reranked))
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
