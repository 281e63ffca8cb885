"""Reports: metrics.json for machines, report.md for people, run.trec for other tools."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from densekit.atomic import write_json_atomic, write_text_atomic
from densekit.eval.trec import Run, write_positive_scores, write_run

# The metrics every report, table and console summary leads with (the one list of them).
HEADLINE = ("ndcg@10", "ndcg@100", "recall@10", "recall@100", "mrr@10", "map@100", "auc_global", "auc_per_query")


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The HEADLINE metrics `metrics` has, in HEADLINE's order."""
    return {k: metrics[k] for k in HEADLINE if k in metrics}


def write_report(
    out_dir: str | Path,
    metrics: dict[str, Any],
    per_query: dict[str, dict[str, float]],
    run: Run | None,
    info: dict[str, Any],
    positive_scores: dict[str, dict[str, float]] | None = None,
) -> Path:
    """The report folder; `positive_scores` (exact scores of judged-relevant documents, which
    the AUC metrics used) go beside run.trec so the run file alone reproduces them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if run is not None:
        write_run(out / "run.trec", run)  # removes an earlier run's sidecar first
        if positive_scores:
            write_positive_scores(out / "run.trec", positive_scores)
    write_json_atomic(out / "metrics.json", {**info, "metrics": metrics})
    write_text_atomic(out / "per_query.csv", per_query_csv(per_query))
    write_text_atomic(out / "report.md", markdown_report(metrics, info))
    return out


def per_query_csv(per_query: dict[str, dict[str, float]]) -> str:
    cols = sorted({k for row in per_query.values() for k in row})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["qid", *cols])
    for qid in sorted(per_query):
        w.writerow([qid, *(f"{per_query[qid].get(c, float('nan')):.6f}" for c in cols)])
    return buf.getvalue()


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def markdown_report(metrics: dict[str, Any], info: dict[str, Any]) -> str:
    lines = [f"# densekit evaluation: {info.get('dataset', '?')} ({info.get('split', '?')})", ""]
    for key in ("model", "index", "reranker", "counts", "created_at"):
        if key in info and info[key] is not None:
            lines.append(f"- **{key}**: {info[key]}")
    lines += ["", "| metric | value |", "|---|---|"]
    for k in HEADLINE:
        if k in metrics:
            lines.append(f"| {k} | {_fmt(metrics[k])} |")
    others = sorted(k for k in metrics if k not in HEADLINE and not isinstance(metrics[k], dict))
    if others:
        lines += ["", "<details><summary>all metrics</summary>", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(metrics[k])} |" for k in others]
        lines += ["", "</details>"]
    timings = info.get("timings_s") or {}
    if timings:
        lines += ["", "| stage | seconds |", "|---|---|"] + [f"| {k} | {v:.2f} |" for k, v in timings.items()]
    for stage, m in (info.get("stages") or {}).items():
        lines += ["", f"## stage: {stage}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(m[k])} |" for k in HEADLINE if k in m]
    return "\n".join(lines) + "\n"
