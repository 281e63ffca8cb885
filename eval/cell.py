"""One configuration evaluated on one dataset: what a suite cell holds, and how it is named on disk."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from densekit.eval.auc import AucPairs
from densekit.eval.calibration import Calibration
from densekit.runs import Run


@dataclass
class CellResult:
    """One configuration evaluated on one dataset."""

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


def safe_name(name: str) -> str:
    """A file-system friendly version of a label."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or "run"


def calibration_dict(cell: CellResult, depth: int) -> dict[str, Any]:
    return {"auc_pairs": cell.calibration.to_dict(), f"top{depth}": cell.calibration_top.to_dict() if cell.calibration_top else None}
