"""One configuration evaluated on one dataset: what a suite cell holds, how it is named on
disk, and what its metrics.json says about the run."""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from densekit.eval.auc import AucPairs
from densekit.eval.calibration import Calibration
from densekit.eval.rerank import RerankOutcome
from densekit.runs import Run


@dataclass
class CellResult:
    """One configuration evaluated on one dataset. For a reranked configuration `metrics`,
    `per_query` and `run` are the second stage's, `first_stage` the first stage scored on the
    same candidates, and `rerank` / `fused` the whole two-stage outcomes (eval/rerank.py)."""

    dataset: str
    config: str
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    run: Run
    pairs: AucPairs
    calibration: Calibration
    info: dict[str, Any]
    first_stage: dict[str, float] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    calibration_top: Calibration | None = None  # over each query's top calibration_depth hits
    recall_curve: tuple[np.ndarray, np.ndarray] | None = None  # (k, mean Recall@k)
    roc: tuple[np.ndarray, np.ndarray] | None = None  # (fpr, tpr) of the pooled pairs
    rerank: RerankOutcome | None = None
    fused: RerankOutcome | None = None  # RRF(first stage, reranked) on the same candidates
    positive_scores: dict[str, dict[str, float]] | None = None  # exact scores of judged-relevant documents, when known


def safe_name(name: str) -> str:
    """A file-system friendly version of a label."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or "run"


def calibration_dict(cell: CellResult, depth: int) -> dict[str, Any]:
    return {"auc_pairs": cell.calibration.to_dict(), f"top{depth}": cell.calibration_top.to_dict() if cell.calibration_top else None}


def run_info(
    cell: CellResult,
    split: str,
    top_k: int,
    calibration_depth: int,
    counts: dict[str, int] | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """What a run's metrics.json says besides its metrics: dataset, configuration, first
    stage and reranker, counts, timings (`timings` first, then the cell's), calibration,
    the two-stage metrics of a reranked configuration."""
    info: dict[str, Any] = {
        "dataset": cell.dataset,
        "split": split,
        "config": cell.config,
        **{k: v for k, v in cell.info.items() if k != "timings_s"},
        "top_k": top_k,
    }
    if counts is not None:
        info["counts"] = counts
    info["timings_s"] = {k: round(v, 3) for k, v in {**(timings or {}), **cell.timings}.items()}
    info["calibration"] = calibration_dict(cell, calibration_depth)
    if cell.first_stage is not None:
        info["stages"] = {"first_stage": cell.first_stage, **({"rrf": cell.fused.reranked} if cell.fused else {})}
    info["created_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return info
