"""Run every configuration on every dataset: the one evaluation path of `densekit eval`.

`evaluate_datasets` evaluates each configuration on each dataset (a cell) and hands every
cell to a writer; `run_suite` writes the multi-dataset report, eval/request.py the single
report of one dataset. A configuration with a reranker is scored under eval/rerank.py's
two-stage protocol, in-process and over HTTP alike.

Layout of the multi-dataset report folder:

    suite.json            every number: per dataset x configuration metrics, first-stage
                          metrics when reranked, calibration, timings, averages, paired tests
    report.md             a table per dataset, the average, paired tests, plots
    per_query.csv         dataset, config, qid, then one column per metric
    config.yaml           the resolved configuration
    plots/                roc_<dataset>.png, recall_<dataset>.png, calibration_<dataset>_<config>.png
    runs/<dataset>/<config>/   run.trec, metrics.json, per_query.csv, report.md (one `densekit eval` report
                          each); run.trec.positive_scores.tsv when the first stage knows exact
                          scores of judged-relevant documents (eval/trec.py); a reranked
                          configuration adds per_query_first_stage.csv, and run_rrf.trec and
                          per_query_rrf.csv for the RRF fusion of both stages

First stages are shared: two configurations with the same first stage (one with a reranker)
on the same dataset retrieve once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from densekit.atomic import write_text_atomic
from densekit.data.folders import resolve_dataset_folder
from densekit.errors import ConfigError, DatasetNotFoundError, ModelLoadError
from densekit.eval.auc import collect_pairs
from densekit.eval.calibration import threshold_for_precision, top_k_pairs
from densekit.eval.cell import CellResult, run_info, safe_name
from densekit.eval.curves import pooled_scores, recall_curve, roc_points
from densekit.eval.evaluate import exact_positive_scores, retrieve, score_run
from densekit.eval.metrics import drop_identical_ids
from densekit.eval.report import per_query_csv, write_report
from densekit.eval.rerank import RerankOutcome, candidates, evaluate_rerank, fused_outcome, reranked_pairs, two_stage_outcome
from densekit.eval.suite_config import DatasetSpec, RunConfig, SuiteConfig
from densekit.eval.trec import Run, write_run

log = logging.getLogger(__name__)

__all__ = ["DatasetRun", "SuiteResult", "evaluate_cell", "evaluate_datasets", "resolve_dataset_folder", "run_suite", "validate_suite"]


class _Resources:
    """Models and first stages loaded once per evaluation (an encoder serves every dataset)."""

    def __init__(self, settings, device: str | None, progress: bool):
        self.settings = settings
        self.device = device or settings.device
        self.progress = progress
        self.encoders: dict[str, Any] = {}
        self.rerankers: dict[str, Any] = {}
        self.first_stage: dict[tuple, tuple[Run, dict, dict]] = {}

    def encoder(self, name: str):
        if name not in self.encoders:
            from densekit.encoder import Encoder, explicit_runtime

            s = self.settings
            runtime = explicit_runtime(s)
            self.encoders[name] = Encoder(
                name,
                device=self.device,
                dtype=s.dtype,
                batch_size=s.batch_size,
                backend=runtime.get("backend"),
                precision=runtime.get("precision"),
            )
        return self.encoders[name]

    def reranker(self, name: str):
        if name not in self.rerankers:
            from densekit.rerankers import load_reranker

            s = self.settings
            # DENSEKIT_RERANKER_BACKEND / _PRECISION: a cross-encoder under ONNX Runtime or OpenVINO.
            self.rerankers[name] = load_reranker(
                name, device=self.device, dtype=s.dtype, backend=s.reranker_backend, precision=s.reranker_precision
            )
        return self.rerankers[name]


# ---- first stage ----------------------------------------------------------------------


def _corpus_lexical_first_stage(ds, top_k: int) -> tuple[Run, dict, dict]:
    """(run, exact positive scores, info) of BM25 over the dataset's corpus, indexed in memory."""
    from densekit.eval.hybrid import corpus_lexical_index, lexical_first_stage

    t0 = time.perf_counter()
    lexical, row_ids = corpus_lexical_index(ds.corpus)
    timings = {"lexical_build_s": time.perf_counter() - t0}
    run, pos, t = lexical_first_stage(lexical, row_ids, ds.queries, ds.qrels, top_k)
    return run, pos, {"model": "bm25", "index": None, "index_kind": "bm25", "mode": "lexical", "timings_s": {**timings, **t}}


def _in_process_first_stage(res: _Resources, ds, cfg: RunConfig, top_k: int, label: str) -> tuple[Run, dict, dict]:
    """(run, exact positive scores, info) from a model (flat index over the corpus, with its BM25
    part for hybrid) or an index folder, in the configuration's mode."""
    from densekit.index.dense_index import build_from_corpus
    from densekit.index.loading import open_index

    timings: dict[str, float] = {}
    index_dir = cfg.resolve("index", label)
    if index_dir is None and cfg.mode == "lexical":
        return _corpus_lexical_first_stage(ds, top_k)
    t0 = time.perf_counter()
    if index_dir is not None:
        idx = open_index(index_dir)
        timings["load_index_s"] = time.perf_counter() - t0
    else:
        enc = res.encoder(cfg.model or res.settings.model)
        idx = build_from_corpus(enc, ds.corpus, progress=res.progress, lexical=cfg.mode == "hybrid")
        timings["encode_corpus_and_build_s"] = time.perf_counter() - t0
    with idx:  # closed once searched: an in-memory index's temporary document store goes with it
        mode = cfg.mode or idx.manifest.search_mode
        if mode != "dense" and not idx.has_lexical:
            raise ConfigError("mode", f"{mode} search needs an index with a lexical part; {index_dir} has none (build it with --lexical)")
        if mode == "lexical":
            run, pos, t = _index_lexical_stage(idx, ds, top_k)
            timings.update(t)
            return run, pos, {"model": "bm25", "index": index_dir, "index_kind": idx.manifest.kind, "mode": mode, "timings_s": timings}
        lexical = _index_lexical_stage(idx, ds, top_k) if mode == "hybrid" else None
        if index_dir is not None:
            enc = res.encoder(cfg.model or idx.manifest.encoder.path or idx.manifest.encoder.name)
            if enc.dim != idx.dim:
                from densekit.errors import IndexMismatchError

                raise IndexMismatchError(f"model dim {enc.dim} != index dim {idx.dim} ({index_dir})")
        # Searched from a GPU copy when faiss has GPU support (settings.faiss_device).
        idx.to_device(getattr(res.settings, "faiss_device", "auto"), enc.device)
        run, qvecs, t = retrieve(idx, enc, ds.queries, top_k, cfg.search_params)
        timings.update(t)
        pos = exact_positive_scores(idx, list(ds.queries), qvecs, ds.qrels)
        info = {"model": enc.name, "index": index_dir, "index_kind": idx.manifest.kind, "mode": mode, "timings_s": timings}
        if lexical is not None:
            from densekit.eval.hybrid import hybrid_run

            overrides = {k: v for k, v in {"method": cfg.fusion, "alpha": cfg.alpha}.items() if v is not None}
            fusion = idx.manifest.fusion.model_copy(update=overrides)
            timings.update(lexical[2])
            # Fused scores exist only for retrieved documents: relevant ones outside the run sit
            # below the query's lowest score in the AUC (eval/auc.py).
            run, pos = hybrid_run(run, lexical[0], fusion, top_k), {}
            info["fusion"] = fusion.model_dump()
    return run, pos, info


def _index_lexical_stage(idx, ds, top_k: int) -> tuple[Run, dict, dict]:
    """The BM25 first stage of an index that has a lexical part."""
    from densekit.eval.hybrid import lexical_first_stage

    lexical = idx.lexical_index()
    return lexical_first_stage(lexical, idx.docstore.row_to_id(), ds.queries, ds.qrels, top_k)


def _endpoint_search(
    cfg: RunConfig, queries: dict[str, str], top_k: int, label: str, rerank_top_n: int | None, progress: bool, concurrency: int
) -> tuple[Run, dict, float]:
    """(run, the server's /info, seconds) of `queries` sent to the configuration's server;
    with `rerank_top_n` the server reranks its first `rerank_top_n` hits itself."""
    from densekit.eval.http_search import HttpSearcher

    url = cfg.resolve("endpoint", label)
    if url is None:
        raise ConfigError("endpoint", f"no endpoint for dataset {label}")
    searcher = HttpSearcher(url, api_key=cfg.api_key, concurrency=concurrency)
    rerank = rerank_top_n is not None
    try:
        server = searcher.check(top_k, rerank)
        run, timings = searcher.retrieve(
            queries, top_k, rerank=rerank, rerank_top_n=rerank_top_n, search_params=cfg.search_params, progress=progress
        )
    finally:
        searcher.close()
    return run, server, timings["http_search_s"]


def _endpoint_first_stage(cfg: RunConfig, ds, top_k: int, label: str, progress: bool, concurrency: int) -> tuple[Run, dict, dict]:
    run, server, seconds = _endpoint_search(cfg, ds.queries, top_k, label, None, progress, concurrency)
    # Over HTTP only retrieved documents have scores: a relevant document outside the top_k
    # sits below the query's lowest score in the AUC (see eval/auc.py).
    info = {
        "endpoint": cfg.resolve("endpoint", label),
        "model": server.get("model"),
        "index_kind": (server.get("index") or {}).get("kind"),
        "timings_s": {"http_search_s": seconds},
    }
    return run, {}, info


def _first_stage(res: _Resources, ds, label: str, cfg: RunConfig, suite: SuiteConfig, concurrency: int) -> tuple[Run, dict, dict]:
    """The configuration's first stage on this dataset, retrieved once for every configuration sharing it."""
    stage = cfg.first_stage()
    key = (
        label,
        stage,
        cfg.model,
        cfg.resolve("index", label),
        cfg.resolve("endpoint", label),
        str(cfg.search_params),
        suite.top_k,
        cfg.mode,
        cfg.fusion,
        cfg.alpha,
    )
    if key not in res.first_stage:
        if stage == "endpoint":
            res.first_stage[key] = _endpoint_first_stage(cfg, ds, suite.top_k, label, res.progress, concurrency)
        else:
            res.first_stage[key] = _in_process_first_stage(res, ds, cfg, suite.top_k, label)
    return res.first_stage[key]


# ---- second stage ---------------------------------------------------------------------


def _server_rerank(
    res: _Resources, ds, label: str, cfg: RunConfig, suite: SuiteConfig, first_stage: Run, concurrency: int, ignore_identical_ids: bool
) -> RerankOutcome:
    """The protocol's candidates reranked by the endpoint's own reranker."""
    first, qrels = candidates(ds, first_stage, cfg.rerank_top_n)
    # The server reranks its own dense top-n, the first stage's candidates (one more when the
    # query's own document, which the server does not drop, may be among them). Reranker
    # scores are per document, so keeping the candidates' scores loses nothing.
    n = min(cfg.rerank_top_n + (1 if ignore_identical_ids else 0), suite.top_k)
    answered, server, seconds = _endpoint_search(cfg, {q: ds.queries[q] for q in first}, n, label, n, res.progress, concurrency)
    reranked = {q: {d: s for d, s in answered.get(q, {}).items() if d in first[q]} for q in first}
    other = sorted(q for q in first if set(reranked[q]) != set(first[q]))
    if other:
        log.warning("%s: the server's reranked hits miss first-stage candidates for %d queries (e.g. %s)", label, len(other), other[0])
    pairs = sum(len(v) for v in reranked.values())
    info = {
        "reranker": server.get("reranker"),
        "rerank_s": round(seconds, 3),
        "pairs_per_s": round(pairs / seconds, 3) if seconds > 0 else None,
    }
    return two_stage_outcome(qrels, first, reranked, cfg.rerank_top_n, info)


def _rerank(
    res: _Resources, ds, label: str, cfg: RunConfig, suite: SuiteConfig, first_stage: Run, concurrency: int, ignore_identical_ids: bool
) -> RerankOutcome:
    """The two-stage outcome of a reranked configuration (eval/rerank.py's protocol)."""
    if cfg.first_stage() == "endpoint":
        return _server_rerank(res, ds, label, cfg, suite, first_stage, concurrency, ignore_identical_ids)
    if cfg.reranker is None:
        raise ConfigError("reranker", "no reranker configured")
    return evaluate_rerank(res.reranker(cfg.reranker), ds, first_stage, cfg.rerank_top_n, progress=res.progress)


# ---- one cell -------------------------------------------------------------------------


def _scored_cell(
    label: str,
    name: str,
    suite: SuiteConfig,
    qrels: dict[str, dict[str, int]],
    metrics: dict[str, float],
    per_query: dict[str, dict[str, float]],
    run: Run,
    pairs,
    info: dict[str, Any],
) -> CellResult:
    """A cell with its calibration, Recall@k curve and ROC points."""
    p, n = pooled_scores(pairs)
    return CellResult(
        label,
        name,
        metrics,
        per_query,
        run,
        pairs,
        threshold_for_precision(p, n, suite.precision_target),
        info,
        timings=info["timings_s"],
        calibration_top=threshold_for_precision(*top_k_pairs(qrels, run, suite.calibration_depth), suite.precision_target),
        recall_curve=recall_curve(qrels, run, suite.top_k),
        roc=roc_points(p, n),
    )


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
    """One configuration on one dataset: its first stage scored as a run of `top_k` documents
    (relevant documents outside it scored exactly when the index can), or with a reranker,
    both stages scored on the same candidates (eval/rerank.py)."""
    t_start = time.perf_counter()
    run, pos, info = _first_stage(res, ds, label, cfg, suite, endpoint_concurrency)
    info = {**info, "timings_s": dict(info["timings_s"])}
    if ignore_identical_ids:
        run = drop_identical_ids(run)
    if cfg.reranker is None:
        t0 = time.perf_counter()
        metrics, per_query = score_run(ds.qrels, run, pos, auc_negatives=suite.auc_negatives)
        pairs = collect_pairs(ds.qrels, run, pos, suite.auc_negatives)
        cell = _scored_cell(label, name, suite, ds.qrels, metrics, per_query, run, pairs, info)
        cell.positive_scores = pos or None
    else:
        outcome = _rerank(res, ds, label, cfg, suite, run, endpoint_concurrency, ignore_identical_ids)
        info.update(
            reranker=outcome.info.get("reranker"),
            rerank_top_n=cfg.rerank_top_n,
            rerank_queries=outcome.info["queries"],
            rerank_pairs=outcome.info["pairs"],
            pairs_per_s=outcome.info.get("pairs_per_s"),
        )
        info["timings_s"]["http_search_rerank_s" if cfg.first_stage() == "endpoint" else "rerank_s"] = outcome.info["rerank_s"]
        t0 = time.perf_counter()
        r = outcome
        cell = _scored_cell(label, name, suite, r.qrels, r.reranked, r.per_query_reranked, r.run_reranked, reranked_pairs(r), info)
        cell.first_stage, cell.rerank, cell.fused = r.first_stage, r, fused_outcome(r)
    info["timings_s"]["metrics_s"] = time.perf_counter() - t0
    info["timings_s"]["total_s"] = time.perf_counter() - t_start
    return cell


# ---- every dataset --------------------------------------------------------------------


@dataclass
class DatasetRun:
    """One dataset as the evaluation loaded it."""

    label: str
    spec: DatasetSpec
    folder: Path
    counts: dict[str, int]
    qrels: dict[str, dict[str, int]]
    load_s: float


@dataclass
class SuiteResult:
    out: Path
    cells: dict[str, dict[str, CellResult]]  # dataset -> config -> result
    summary: dict[str, Any]
    datasets: dict[str, DatasetRun] = field(default_factory=dict)


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


CellWriter = Callable[[CellResult, DatasetRun], None]


def evaluate_datasets(
    suite: SuiteConfig,
    settings=None,
    device: str | None = None,
    progress: bool = True,
    endpoint_concurrency: int = 4,
    on_cell: CellWriter | None = None,
) -> tuple[dict[str, dict[str, CellResult]], dict[str, DatasetRun], float]:
    """Every configuration on every dataset: (cells by dataset and configuration, the
    datasets, seconds). `on_cell` gets each cell as soon as it is done (to write it)."""
    from densekit.data import load_beir
    from densekit.settings import Settings

    settings = settings or Settings()
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
    loaded: dict[str, DatasetRun] = {}
    t_suite = time.perf_counter()
    for spec, label, folder in datasets:
        t0 = time.perf_counter()
        ds = load_beir(folder, spec.split)
        loaded[label] = DatasetRun(label, spec, folder, ds.counts, ds.qrels, time.perf_counter() - t0)
        cells[label] = {}
        for name, cfg in named:
            if cfg.first_stage() in ("index", "endpoint") and cfg.resolve(cfg.first_stage(), label) is None:
                log.info("configuration %s has no %s for dataset %s: skipped", name, cfg.first_stage(), label)
                continue
            log.info("evaluating %s on %s", name, label)
            cell = evaluate_cell(res, ds, label, name, cfg, suite, spec.ignore_identical_ids, endpoint_concurrency)
            cells[label][name] = cell
            if on_cell is not None:
                on_cell(cell, loaded[label])
        # Free the corpus's first-stage results once its configurations are done.
        res.first_stage = {k: v for k, v in res.first_stage.items() if k[0] != label}
    return cells, loaded, time.perf_counter() - t_suite


def write_cell(out_dir: Path, cell: CellResult, dataset: DatasetRun, suite: SuiteConfig) -> Path:
    """One run's report folder: run.trec, metrics.json, per_query.csv, report.md, and for a
    reranked configuration per_query_first_stage.csv (the first stage on the same candidates)
    and run_rrf.trec / per_query_rrf.csv (the RRF fusion of both stages), so either stage can be
    compared with any other run (`densekit eval compare`)."""
    info = run_info(cell, dataset.spec.split, suite.top_k, suite.calibration_depth, dataset.counts, {"load_data_s": dataset.load_s})
    write_report(out_dir, cell.metrics, cell.per_query, cell.run, info, cell.positive_scores)
    folder = Path(out_dir)
    # A configuration re-run under the same name without a reranker must not keep the files of
    # its reranked run: they would sit beside a run.trec they do not describe.
    if cell.rerank is not None:
        write_text_atomic(folder / "per_query_first_stage.csv", per_query_csv(cell.rerank.per_query_first))
    else:
        (folder / "per_query_first_stage.csv").unlink(missing_ok=True)
    if cell.fused is not None:
        write_run(folder / "run_rrf.trec", cell.fused.run_reranked, tag="densekit-rerank-rrf")
        write_text_atomic(folder / "per_query_rrf.csv", per_query_csv(cell.fused.per_query_reranked))
    else:
        for stale in ("run_rrf.trec", "per_query_rrf.csv"):
            (folder / stale).unlink(missing_ok=True)
    return Path(out_dir)


def run_suite(
    suite: SuiteConfig, out: str | Path, settings=None, device: str | None = None, progress: bool = True, endpoint_concurrency: int = 4
) -> SuiteResult:
    """Evaluate the suite and write the multi-dataset report (see the module doc)."""
    from densekit.eval.suite_report import write_suite_report
    from densekit.settings import Settings

    settings = settings or Settings()
    out = Path(out)

    def write(cell: CellResult, dataset: DatasetRun) -> None:
        write_cell(out / "runs" / safe_name(cell.dataset) / safe_name(cell.config), cell, dataset, suite)

    cells, loaded, total_s = evaluate_datasets(suite, settings, device, progress, endpoint_concurrency, on_cell=write)
    counts = {label: {"split": d.spec.split, "folder": str(d.folder), **d.counts} for label, d in loaded.items()}
    qrels_of = {label: d.qrels for label, d in loaded.items()}
    named = suite.named_configurations(settings.model)
    summary = write_suite_report(out, suite, named, cells, counts, total_s, qrels_of)
    return SuiteResult(out, cells, summary, loaded)
