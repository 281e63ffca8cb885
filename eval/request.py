"""One evaluation request: what to evaluate, where the report goes and how it is laid out.

`densekit eval` parses its flags (or a suite YAML) into an `EvalRequest` and calls
`run_evaluation`; every layout runs through eval/suite.py's `evaluate_datasets`, so one
dataset evaluated alone and the same dataset inside a suite give the same numbers.

Layouts:

- `suite`: the multi-dataset report of eval/suite.py (suite.json, report.md, per_query.csv,
  config.yaml, plots/, runs/<dataset>/<config>/).
- `single`: one dataset and one first stage, optionally with its reranked twin (the same
  first stage plus a reranker):

      OUT/              run.trec, metrics.json, per_query.csv, report.md of the first stage
      OUT/rerank/       both stages on the same candidates (eval/rerank.py): metrics.json with
                        first_stage and reranked, run.trec and per_query.csv of the reranked
                        stage, per_query_first_stage.csv, report.md
      OUT/rerank-rrf/   the same, with RRF(first stage, reranked) as the second stage
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from densekit.errors import ConfigError
from densekit.eval.cell import CellResult, run_info
from densekit.eval.rerank import write_rerank_report
from densekit.eval.suite import DatasetRun, SuiteResult, evaluate_datasets, run_suite, write_cell
from densekit.eval.suite_config import SuiteConfig

Layout = Literal["single", "suite"]


@dataclass
class EvalRequest:
    """Everything one evaluation needs besides the settings."""

    suite: SuiteConfig
    out: Path
    layout: Layout = "suite"
    device: str | None = None
    endpoint_concurrency: int = 4
    progress: bool = True


def single_report_names(suite: SuiteConfig, default_model: str) -> tuple[str, str | None]:
    """(first-stage configuration, its reranked twin or None) of a single-layout request;
    ConfigError when the suite does not have that shape."""
    named = suite.named_configurations(default_model)
    if len(suite.datasets) != 1:
        raise ConfigError("datasets", f"a single report holds one dataset, got {len(suite.datasets)}")
    (first_name, first), *rest = named
    if first.reranker is None and not rest:
        return first_name, None
    twin_fields = {"name", "reranker", "rerank_top_n"}
    if (
        len(rest) == 1
        and first.reranker is None
        and rest[0][1].reranker is not None
        and first.model_dump(exclude=twin_fields) == rest[0][1].model_dump(exclude=twin_fields)
    ):
        return first_name, rest[0][0]
    raise ConfigError("configurations", "a single report holds one first stage and, optionally, the same first stage with a reranker")


def run_evaluation(request: EvalRequest, settings=None) -> SuiteResult:
    """Evaluate the request and write its report in the requested layout."""
    from densekit.settings import Settings

    settings = settings or Settings()
    if request.layout == "suite":
        return run_suite(request.suite, request.out, settings, request.device, request.progress, request.endpoint_concurrency)
    suite, out = request.suite, Path(request.out)
    first_name, reranked_name = single_report_names(suite, settings.model)

    def write(cell: CellResult, dataset: DatasetRun) -> None:
        if cell.config == first_name:
            write_cell(out, cell, dataset, suite)
            return
        if cell.rerank is None or cell.fused is None:
            raise ConfigError("configurations", f"{cell.config} has no reranker")  # not the twin single_report_names accepted
        info = run_info(cell, dataset.spec.split, suite.top_k, suite.calibration_depth, dataset.counts, {"load_data_s": dataset.load_s})
        info.pop("stages", None)  # the two-stage report holds them as its metrics
        write_rerank_report(out / "rerank", cell.rerank, info)
        write_rerank_report(out / "rerank-rrf", cell.fused, info)

    cells, loaded, _ = evaluate_datasets(suite, settings, request.device, request.progress, request.endpoint_concurrency, on_cell=write)
    return SuiteResult(out, cells, {}, loaded)
