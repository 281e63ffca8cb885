"""Run every configuration on every dataset and write one report.

Layout of the report folder:

    suite.json            every number: per dataset x configuration metrics, first-stage
                          metrics when reranked, calibration, timings, averages, paired tests
    report.md             a table per dataset, the average, paired tests, plots
    per_query.csv         dataset, config, qid, then one column per metric
    config.yaml           the resolved configuration
    plots/                roc_<dataset>.png, recall_<dataset>.png, calibration_<dataset>_<config>.png
    runs/<dataset>/<config>/   run.trec, metrics.json, per_query.csv, report.md (one `densekit eval` report each)

First stages are shared: two configurations with the same model (one with a reranker) on
the same dataset retrieve once.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from densekit.errors import ConfigError, DatasetNotFoundError, ModelLoadError
from densekit.eval.auc import collect_pairs
from densekit.eval.calibration import threshold_for_precision, top_k_pairs
from densekit.eval.cell import CellResult, calibration_dict, safe_name
from densekit.eval.curves import pooled_scores, recall_curve, roc_points
from densekit.eval.evaluate import exact_positive_scores, retrieve, score_run
from densekit.eval.metrics import drop_identical_ids
from densekit.eval.report import write_report
from densekit.eval.suite_config import DatasetSpec, RunConfig, SuiteConfig
from densekit.eval.trec import Run

log = logging.getLogger(__name__)


def resolve_dataset_folder(name: str, data_dir: Path) -> Path:
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    if (data_dir / name).is_dir():
        return data_dir / name
    raise DatasetNotFoundError(f"dataset '{name}' not found: not a folder, and not under DENSEKIT_DATA_DIR={data_dir}")


class _Resources:
    """Models and indexes loaded once per suite (an encoder serves every dataset)."""

    def __init__(self, settings, device: str | None, progress: bool):
        self.settings = settings
        self.device = device or settings.device
        self.progress = progress
        self.encoders: dict[str, Any] = {}
        self.rerankers: dict[str, Any] = {}
        self.first_stage: dict[tuple, tuple[Run, dict, dict]] = {}

    def encoder(self, name: str):
        if name not in self.encoders:
            from densekit.encoder import Encoder

            s = self.settings
            self.encoders[name] = Encoder(name, device=self.device, dtype=s.dtype, batch_size=s.batch_size)
        return self.encoders[name]

    def reranker(self, name: str):
        if name not in self.rerankers:
            from densekit.rerankers import load_reranker

            self.rerankers[name] = load_reranker(name, device=self.device, dtype=self.settings.dtype)
        return self.rerankers[name]


# ---- first stage ----------------------------------------------------------------------


def _in_process_first_stage(res: _Resources, ds, cfg: RunConfig, top_k: int, label: str) -> tuple[Run, dict, dict]:
    """(run, exact positive scores, info) from a model (flat index over the corpus) or an index folder."""
    from densekit.index.dense_index import build_from_corpus, load_index

    timings: dict[str, float] = {}
    index_dir = cfg.resolve("index", label)
    if index_dir is not None:
        t0 = time.perf_counter()
        idx = load_index(index_dir)
        timings["load_index_s"] = time.perf_counter() - t0
        enc = res.encoder(cfg.model or idx.manifest.encoder.path or idx.manifest.encoder.name)
        if enc.dim != idx.dim:
            from densekit.errors import IndexMismatchError

            raise IndexMismatchError(f"model dim {enc.dim} != index dim {idx.dim} ({index_dir})")
    else:
        enc = res.encoder(cfg.model or res.settings.model)
        t0 = time.perf_counter()
        idx = build_from_corpus(enc, ds.corpus, progress=res.progress)
        timings["encode_corpus_and_build_s"] = time.perf_counter() - t0
    # Searched from a GPU copy when faiss has GPU support (settings.faiss_device), as `densekit eval` does.
    idx.to_device(getattr(res.settings, "faiss_device", "auto"), enc.device)
    run, qvecs, t = retrieve(idx, enc, ds.queries, top_k, cfg.search_params)
    timings.update(t)
    pos = exact_positive_scores(idx, list(ds.queries), qvecs, ds.qrels)
    info = {"model": enc.name, "index": index_dir, "index_kind": idx.manifest.kind, "timings_s": timings}
    return run, pos, info


def _endpoint_first_stage(
    cfg: RunConfig, ds, top_k: int, label: str, rerank: bool, progress: bool, concurrency: int
) -> tuple[Run, dict, dict]:
    from densekit.eval.http_search import HttpSearcher

    url = cfg.resolve("endpoint", label)
    searcher = HttpSearcher(url, api_key=cfg.api_key, concurrency=concurrency)
    if rerank:
        # As in-process: the reranked run holds the reranked top_n (BEIR's convention).
        top_k = min(top_k, cfg.rerank_top_n)
    try:
        server = searcher.check(top_k, rerank)
        run, timings = searcher.retrieve(
            ds.queries,
            top_k,
            rerank=rerank,
            rerank_top_n=cfg.rerank_top_n if rerank else None,
            search_params=cfg.search_params,
            progress=progress,
        )
    finally:
        searcher.close()
    # Over HTTP only retrieved documents have scores: a relevant document outside the top_k
    # sits below the query's lowest score in the AUC (see eval/auc.py).
    info = {
        "endpoint": url,
        "model": server.get("model"),
        "index_kind": (server.get("index") or {}).get("kind"),
        "reranker": server.get("reranker") if rerank else None,
        "timings_s": timings,
    }
    return run, {}, info


# ---- reranking ------------------------------------------------------------------------


def rerank_with_positives(reranker, ds, run: Run, top_n: int, progress: bool = True) -> tuple[Run, dict[str, dict[str, float]], float]:
    """Rerank each query's first-stage top `top_n` with eval/rerank.py's `rerank_run` (the
    reranked run holds those `top_n` only, BEIR's convention). Every judged-relevant
    document outside the top_n is scored by the reranker too, so the AUC compares true
    reranker scores of all relevant documents (as the dense stage uses exact scores).
    Returns (reranked run, reranker scores of relevant documents, seconds)."""
    from densekit.data.beir import document_text
    from densekit.eval.rerank import rerank_run

    t0 = time.perf_counter()
    out = rerank_run(reranker, ds, run, top_n, progress=progress)
    pos_scores: dict[str, dict[str, float]] = {}
    for qid, query in ds.queries.items():
        judged = [d for d, g in ds.qrels.get(qid, {}).items() if g > 0]
        known = out.get(qid, {})
        missing = [d for d in judged if d not in known and d in ds.corpus]
        extra = reranker.score(query, [document_text(ds.corpus[d]) for d in missing]) if missing else []
        pos_scores[qid] = {**{d: known[d] for d in judged if d in known}, **{d: float(s) for d, s in zip(missing, extra)}}
    return out, pos_scores, time.perf_counter() - t0


# ---- one cell -------------------------------------------------------------------------


def evaluate_cell(
    res: _Resources,
    ds,
    label: str,
    name: str,
    cfg: RunConfig,
    suite: SuiteConfig,
    ignore_identical_ids: bool = False,
    endpoint_concurrency: int = 4,
) -> CellResult:
    t_start = time.perf_counter()
    stage = cfg.first_stage()
    server_rerank = stage == "endpoint" and cfg.reranker is not None
    key = (label, stage, cfg.model, cfg.resolve("index", label), cfg.resolve("endpoint", label), str(cfg.search_params), suite.top_k)
    if key not in res.first_stage:
        if stage == "endpoint":
            res.first_stage[key] = _endpoint_first_stage(cfg, ds, suite.top_k, label, False, res.progress, endpoint_concurrency)
        else:
            res.first_stage[key] = _in_process_first_stage(res, ds, cfg, suite.top_k, label)
    run, pos, info = res.first_stage[key]
    info = {**info, "timings_s": dict(info["timings_s"])}
    first_stage_metrics = None
    if cfg.reranker is not None:
        first_stage_metrics, _ = score_run(ds.qrels, run, pos, ignore_identical_ids=ignore_identical_ids, auc_negatives=suite.auc_negatives)
        if server_rerank:
            run, pos, rinfo = _endpoint_first_stage(cfg, ds, suite.top_k, label, True, res.progress, endpoint_concurrency)
            info["reranker"] = rinfo.get("reranker")
            info["timings_s"]["http_search_rerank_s"] = rinfo["timings_s"]["http_search_s"]
        else:
            rr = res.reranker(cfg.reranker)
            run, pos, secs = rerank_with_positives(rr, ds, run, cfg.rerank_top_n, res.progress)
            info["reranker"] = getattr(rr, "name", cfg.reranker)
            info["timings_s"]["rerank_s"] = secs
        info["rerank_top_n"] = cfg.rerank_top_n
    t0 = time.perf_counter()
    metrics, per_query = score_run(ds.qrels, run, pos, ignore_identical_ids=ignore_identical_ids, auc_negatives=suite.auc_negatives)
    scored_run = drop_identical_ids(run) if ignore_identical_ids else run
    pairs = collect_pairs(ds.qrels, scored_run, pos, suite.auc_negatives)
    p, n = pooled_scores(pairs)
    calib = threshold_for_precision(p, n, suite.precision_target)
    calib_top = threshold_for_precision(*top_k_pairs(ds.qrels, scored_run, suite.calibration_depth), suite.precision_target)
    curve = recall_curve(ds.qrels, scored_run, suite.top_k)
    roc = roc_points(p, n)
    info["timings_s"]["metrics_s"] = time.perf_counter() - t0
    info["timings_s"]["total_s"] = time.perf_counter() - t_start
    return CellResult(
        label, name, metrics, per_query, run, pairs, calib, info, first_stage_metrics, info["timings_s"], calib_top, curve, roc
    )


# ---- the suite ------------------------------------------------------------------------


@dataclass
class SuiteResult:
    out: Path
    cells: dict[str, dict[str, CellResult]]  # dataset -> config -> result
    summary: dict[str, Any]


def validate_suite(suite: SuiteConfig, settings) -> list[tuple[DatasetSpec, str, Path]]:
    """Fail before any work: every dataset and split exists, every index folder exists,
    every endpoint answers. Returns (spec, label, folder) per dataset."""
    from densekit.data import list_splits

    resolved = []
    labels = set()
    for i, spec in enumerate(suite.datasets):
        try:
            folder = resolve_dataset_folder(spec.name, Path(settings.data_dir))
        except DatasetNotFoundError as exc:
            raise ConfigError(f"datasets.{i}.name", str(exc)) from None
        if spec.split not in list_splits(folder):
            raise ConfigError(
                f"datasets.{i}.split", f"'{spec.split}' not in {folder}/qrels (available: {', '.join(list_splits(folder)) or 'none'})"
            )
        label = spec.label or folder.name
        if label in labels:
            raise ConfigError(f"datasets.{i}", f"dataset '{label}' is listed twice (give one a label)")
        labels.add(label)
        resolved.append((spec, label, folder))
    for j, cfg in enumerate(suite.configurations):
        for fld in ("index", "endpoint"):
            value = getattr(cfg, fld)
            if isinstance(value, str) and "{dataset}" not in value and len(resolved) > 1:
                # One index (one server) holds one corpus: the other datasets' queries would
                # be scored against the wrong documents.
                raise ConfigError(
                    f"configurations.{j}.{fld}",
                    f"one {fld} for {len(resolved)} datasets; use a '{{dataset}}' placeholder or a mapping {{dataset: {fld}}}",
                )
        for _, label, _ in resolved:
            ix = cfg.resolve("index", label)
            if ix is not None and not (Path(ix) / "manifest.json").is_file():
                raise ConfigError(f"configurations.{j}.index", f"no index at {ix} (for dataset {label})")
            url = cfg.resolve("endpoint", label)
            if url is not None:
                from densekit.eval.http_search import HttpSearcher

                s = HttpSearcher(url, api_key=cfg.api_key)
                try:
                    s.check(suite.top_k, cfg.reranker is not None)
                except ConfigError as exc:
                    raise ConfigError(f"configurations.{j}.{exc.field}", exc.message) from None
                except Exception as exc:
                    raise ConfigError(f"configurations.{j}.endpoint", str(exc)) from None
                finally:
                    s.close()
    return resolved


def run_suite(
    suite: SuiteConfig, out: str | Path, settings=None, device: str | None = None, progress: bool = True, endpoint_concurrency: int = 4
) -> SuiteResult:
    from densekit.data import load_beir
    from densekit.settings import Settings

    settings = settings or Settings()
    out = Path(out)
    datasets = validate_suite(suite, settings)
    named = suite.named_configurations(settings.model)
    res = _Resources(settings, device, progress)
    # Rerankers load before any dataset is touched: a bad name fails first, naming the field.
    for j, cfg in enumerate(suite.configurations):
        if cfg.reranker is not None and cfg.first_stage() != "endpoint":
            try:
                res.reranker(cfg.reranker)
            except (ModelLoadError, ConfigError) as exc:
                raise ConfigError(f"configurations.{j}.reranker", str(exc)) from None
    cells: dict[str, dict[str, CellResult]] = {}
    counts: dict[str, dict] = {}
    qrels_of: dict[str, dict] = {}
    t_suite = time.perf_counter()
    for spec, label, folder in datasets:
        ds = load_beir(folder, spec.split)
        counts[label] = {"split": spec.split, "folder": str(folder), **ds.counts}
        qrels_of[label] = ds.qrels
        cells[label] = {}
        for name, cfg in named:
            if cfg.first_stage() in ("index", "endpoint") and cfg.resolve(cfg.first_stage(), label) is None:
                log.info("configuration %s has no %s for dataset %s: skipped", name, cfg.first_stage(), label)
                continue
            log.info("evaluating %s on %s", name, label)
            cell = evaluate_cell(res, ds, label, name, cfg, suite, spec.ignore_identical_ids, endpoint_concurrency)
            cells[label][name] = cell
            _write_cell(out, cell, spec, suite)
        # Free the corpus's first-stage results once its configurations are done.
        res.first_stage = {k: v for k, v in res.first_stage.items() if k[0] != label}
    from densekit.eval.suite_report import write_suite_report

    summary = write_suite_report(out, suite, named, cells, counts, time.perf_counter() - t_suite, qrels_of)
    return SuiteResult(out, cells, summary)


def _write_cell(out: Path, cell: CellResult, spec: DatasetSpec, suite: SuiteConfig) -> None:
    info = {
        "dataset": cell.dataset,
        "split": spec.split,
        "config": cell.config,
        **{k: v for k, v in cell.info.items() if k != "timings_s"},
        "top_k": suite.top_k,
        "timings_s": {k: round(v, 3) for k, v in cell.timings.items()},
        "calibration": calibration_dict(cell, suite.calibration_depth),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if cell.first_stage is not None:
        info["stages"] = {"first_stage": cell.first_stage}
    write_report(out / "runs" / safe_name(cell.dataset) / safe_name(cell.config), cell.metrics, cell.per_query, cell.run, info)
