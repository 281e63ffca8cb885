"""`densekit eval`: retrieve for every query of a split and write run, metrics and report;
several datasets x configurations in one report; paired significance tests between runs;
MTEB's retrieval evaluator on a local BEIR folder."""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

import typer

from densekit.cli.common import console, resolve_data, settings

app = typer.Typer(
    help=(
        "Evaluate retrieval on BEIR data. One dataset and one model/index/endpoint: a single report "
        "(run.trec, metrics.json, per_query.csv, report.md). Several --data, several --model/--index/--endpoint, "
        "or --config suite.yaml: every configuration on every dataset, one report with a table per dataset, "
        "the average, paired tests, per-query CSV and plots (ROC, Recall@k, calibration). "
        "Sub-commands: compare (paired significance test of two runs), mteb (MTEB's evaluator on a local folder)."
    ),
    invoke_without_command=True,
)


@app.callback()
def evaluate(
    ctx: typer.Context,
    data: list[str] = typer.Option(None, "--data", help="BEIR folder or name under DENSEKIT_DATA_DIR (repeat for several datasets)"),
    split: str = typer.Option("test", "--split", help="qrels split to evaluate"),
    model: list[str] = typer.Option(
        None, "--model", help="bi-encoder (default: the index's encoder, else DENSEKIT_MODEL); repeat for several configurations"
    ),
    index: list[str] = typer.Option(
        None,
        "--index",
        help="reuse this index folder instead of encoding the corpus; with several datasets use a '{dataset}' placeholder; repeatable",
    ),
    endpoint: list[str] = typer.Option(
        None,
        "--endpoint",
        help="evaluate a running densekit server over its POST /search instead of an in-process index (URL; '{dataset}' placeholder allowed); repeatable",
    ),
    config: Path = typer.Option(
        None, "--config", help="YAML file with datasets and configurations (see eval/suite_config.py); flags then only set --out"
    ),
    out: Path = typer.Option(
        None,
        "--out",
        help="report folder: run.trec, metrics.json, per_query.csv, report.md (several runs: suite.json, report.md, per_query.csv, plots/, runs/)",
    ),
    top_k: int = typer.Option(1000, "--top-k", help="documents retrieved per query"),
    ignore_identical_ids: bool = typer.Option(
        False, "--ignore-identical-ids", help="drop a document whose id equals the query id (BEIR option)"
    ),
    auc_negatives: int = typer.Option(500, "--auc-negatives", help="top-N retrieved non-relevant documents used as AUC negatives"),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda"),
    rerank: str = typer.Option(
        None,
        "--rerank",
        help="rerank the first stage with this reranker (cross-encoder or LLM: hub name, folder, .gguf, 'smollm2'); writes OUT/rerank/ with both stages' metrics",
    ),
    rerank_top_n: int = typer.Option(100, "--rerank-top-n", min=1, help="first-stage hits reranked per query"),
    api_key: str = typer.Option(
        None, "--api-key", envvar="DENSEKIT_EVAL_API_KEY", help="API key sent to --endpoint (Authorization: Bearer)"
    ),
    endpoint_rerank: bool = typer.Option(
        False, "--endpoint-rerank", help="ask the --endpoint server to rerank with its own reranker (rerank: true)"
    ),
    endpoint_concurrency: int = typer.Option(4, "--endpoint-concurrency", min=1, help="parallel /search requests"),
    precision_target: float = typer.Option(
        0.9, "--precision-target", help="calibration: report the score threshold that keeps this precision"
    ),
    calibration_depth: int = typer.Option(
        1, "--calibration-depth", min=1, help="calibration: also over each query's top-N hits (1: is the top hit good?)"
    ),
    no_plots: bool = typer.Option(False, "--no-plots", help="multi-run report without PNG plots"),
) -> None:
    """Evaluate a model, index or server on one or several datasets; prints the headline metrics."""
    if ctx.invoked_subcommand:
        return
    data, model, index, endpoint = list(data or []), list(model or []), list(index or []), list(endpoint or [])
    n_configs = len(index) + len(endpoint) + (0 if index else len(model))
    if config is not None or len(data) > 1 or n_configs > 1 or endpoint:
        if rerank and config is not None:
            raise typer.BadParameter("with --config, give rerankers in the YAML (reranker, rerank_top_n)", param_hint="--rerank")
        _evaluate_suite(
            config,
            data,
            split,
            model,
            index,
            endpoint,
            out,
            top_k,
            ignore_identical_ids,
            auc_negatives,
            device,
            api_key,
            endpoint_rerank,
            endpoint_concurrency,
            precision_target,
            calibration_depth,
            no_plots,
            rerank=rerank,
            rerank_top_n=rerank_top_n,
        )
        return
    if not data or not out:
        raise typer.BadParameter("--data and --out are required", param_hint="--data/--out")
    data, model = data[0], (model[0] if model else None)
    index = Path(index[0]) if index else None
    from densekit.data import load_beir
    from densekit.encoder import Encoder
    from densekit.eval.evaluate import evaluate_index
    from densekit.eval.report import HEADLINE, write_report
    from densekit.index.dense_index import build_from_corpus, load_index

    s = settings()
    folder = resolve_data(data)
    t0 = time.perf_counter()
    ds = load_beir(folder, split)
    timings = {"load_data_s": time.perf_counter() - t0}
    if index is not None:
        idx = load_index(index)
        enc = Encoder(
            model or idx.manifest.encoder.path or idx.manifest.encoder.name,
            device=device or s.device,
            dtype=s.dtype,
            batch_size=s.batch_size,
        )
        if enc.dim != idx.dim:
            from densekit.errors import IndexMismatchError

            raise IndexMismatchError(f"model dim {enc.dim} != index dim {idx.dim}")
    else:
        enc = Encoder(model or s.model, device=device or s.device, dtype=s.dtype, batch_size=s.batch_size)
        t1 = time.perf_counter()
        idx = build_from_corpus(enc, ds.corpus)
        timings["encode_corpus_and_build_s"] = time.perf_counter() - t1
    idx.to_device(s.faiss_device, enc.device)  # searched on the GPU when faiss has GPU support
    outcome = evaluate_index(idx, enc, ds, top_k=top_k, ignore_identical_ids=ignore_identical_ids, auc_negatives=auc_negatives)
    timings.update(outcome.timings)
    info = {
        "dataset": folder.name,
        "split": split,
        "model": enc.name,
        "index": str(index) if index else None,
        "index_kind": idx.manifest.kind,
        "top_k": top_k,
        "counts": ds.counts,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_report(out, outcome.metrics, outcome.per_query, outcome.run, info)
    for k in HEADLINE:
        console.print(f"{k:>14}: {outcome.metrics[k]:.4f}")
    console.print(f"report: {out}")
    if rerank:
        _rerank_stage(rerank, rerank_top_n, ds, outcome.run, out, device or s.device)


def _suite_from_flags(
    data,
    split,
    model,
    index,
    endpoint,
    top_k,
    ignore_identical_ids,
    auc_negatives,
    api_key,
    endpoint_rerank,
    precision_target,
    calibration_depth,
    no_plots,
    rerank=None,
    rerank_top_n=100,
):
    from densekit.eval.suite_config import suite_from_dict

    if not data:
        raise typer.BadParameter("--data is required (or --config)", param_hint="--data")
    configs = [{"model": m} for m in model if not index] if not index else []
    for ix in index:
        configs.append({"index": ix, **({"model": model[0]} if len(model) == 1 else {})})
    if index and len(model) > 1:
        raise typer.BadParameter("with --index, give at most one --model (the query encoder)", param_hint="--model")
    for url in endpoint:
        configs.append({"endpoint": url, "api_key": api_key, **({"reranker": "server"} if endpoint_rerank else {})})
    if not configs:
        configs = [{}]  # the default model
    if rerank:
        # Each in-process first stage gets a reranked twin; they share one retrieval.
        twins = [{**c, "reranker": rerank, "rerank_top_n": rerank_top_n} for c in configs if "endpoint" not in c]
        if not twins:
            raise typer.BadParameter(
                "--rerank reranks in-process first stages; to use a server's reranker pass --endpoint-rerank", param_hint="--rerank"
            )
        configs += twins
    return suite_from_dict(
        {
            "datasets": [{"name": d, "split": split, "ignore_identical_ids": ignore_identical_ids} for d in data],
            "configurations": configs,
            "top_k": top_k,
            "auc_negatives": auc_negatives,
            "precision_target": precision_target,
            "calibration_depth": calibration_depth,
            "plots": not no_plots,
        }
    )


def _evaluate_suite(
    config,
    data,
    split,
    model,
    index,
    endpoint,
    out,
    top_k,
    ignore_identical_ids,
    auc_negatives,
    device,
    api_key,
    endpoint_rerank,
    endpoint_concurrency,
    precision_target,
    calibration_depth,
    no_plots,
    rerank=None,
    rerank_top_n=100,
) -> None:
    from densekit.eval.suite import run_suite
    from densekit.eval.suite_config import load_suite_config

    if config is not None:
        suite = load_suite_config(config)
        if data or model or index or endpoint:
            raise typer.BadParameter(
                "--config already names datasets and configurations; drop --data/--model/--index/--endpoint", param_hint="--config"
            )
    else:
        suite = _suite_from_flags(
            data,
            split,
            model,
            index,
            endpoint,
            top_k,
            ignore_identical_ids,
            auc_negatives,
            api_key,
            endpoint_rerank,
            precision_target,
            calibration_depth,
            no_plots,
            rerank,
            rerank_top_n,
        )
    out = out or (Path(suite.out) if suite.out else None)
    if out is None:
        raise typer.BadParameter("--out is required", param_hint="--out")
    single = config is None and len(suite.datasets) == 1 and len(suite.configurations) == 1
    if single:
        _evaluate_single_cell(suite, out, device, endpoint_concurrency)
        return
    result = run_suite(suite, out, settings(), device=device, endpoint_concurrency=endpoint_concurrency)
    names = [n for n, _ in suite.named_configurations(settings().model)]
    table = ["dataset".ljust(16) + "".join(n[:22].rjust(24) for n in names)]
    for dname, by_cfg in result.cells.items():
        table.append(
            dname[:16].ljust(16) + "".join((f"{by_cfg[n].metrics['ndcg@10']:.4f}" if n in by_cfg else "-").rjust(24) for n in names)
        )
    avg = result.summary["average"]
    table.append("average".ljust(16) + "".join((f"{avg[n]['metrics']['ndcg@10']:.4f}" if n in avg else "-").rjust(24) for n in names))
    console.print("nDCG@10\n" + "\n".join(table), highlight=False)
    console.print(f"report: {out / 'report.md'}")


def _evaluate_single_cell(suite, out: Path, device, endpoint_concurrency: int) -> None:
    """One dataset, one configuration (e.g. `--endpoint URL`): the single-run report layout."""
    from densekit.data import load_beir
    from densekit.eval.cell import calibration_dict
    from densekit.eval.report import HEADLINE, write_report
    from densekit.eval.suite import _Resources, evaluate_cell, validate_suite

    s = settings()
    ((spec, label, folder),) = validate_suite(suite, s)
    ((name, cfg),) = suite.named_configurations(s.model)
    t0 = time.perf_counter()
    ds = load_beir(folder, spec.split)
    load_s = time.perf_counter() - t0
    cell = evaluate_cell(_Resources(s, device, True), ds, label, name, cfg, suite, spec.ignore_identical_ids, endpoint_concurrency)
    info = {
        "dataset": label,
        "split": spec.split,
        **{k: v for k, v in cell.info.items() if k != "timings_s"},
        "top_k": suite.top_k,
        "counts": ds.counts,
        "calibration": calibration_dict(cell, suite.calibration_depth),
        "timings_s": {"load_data_s": round(load_s, 3), **{k: round(v, 3) for k, v in cell.timings.items()}},
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if cell.first_stage is not None:
        info["stages"] = {"first_stage": cell.first_stage}
    write_report(out, cell.metrics, cell.per_query, cell.run, info)
    for k in HEADLINE:
        console.print(f"{k:>14}: {cell.metrics[k]:.4f}")
    console.print(f"report: {out}")


@app.command("compare")
def compare(
    run_a: Path = typer.Argument(..., help="run A (the baseline): report folder, per-query CSV, or TREC run file (with --qrels)"),
    run_b: Path = typer.Argument(..., help="run B: same forms as run A"),
    metric: list[str] = typer.Option(
        ["ndcg@10"], "--metric", "-m", help="per-query metric to test (repeatable), e.g. ndcg@10, recall@100, mrr@10, auc"
    ),
    qrels: Path = typer.Option(
        None, "--qrels", help="qrels for TREC run files: a BEIR folder (with --split), a BEIR qrels TSV or TREC qrels"
    ),
    split: str = typer.Option("test", "--split", help="qrels split when --qrels is a BEIR folder"),
    permutations: int = typer.Option(
        10_000, "--permutations", min=100, help="random sign flips of the randomisation test (exact enumeration when 2^n is smaller)"
    ),
    seed: int = typer.Option(42, "--seed", help="random seed of the randomisation test"),
    alpha: float = typer.Option(0.05, "--alpha", help="significance level marked with * in the table"),
    out: Path = typer.Option(None, "--out", help="also write the result: FILE.json or FILE.md"),
) -> None:
    """Paired significance test of two runs on per-query metrics: Fisher randomisation test and
    paired t-test, with the mean difference, its 95% CI, Cohen's d and wins/ties/losses."""
    import json

    from densekit.atomic import write_text_atomic
    from densekit.eval.compare import compare_runs, load_per_query, markdown_comparison

    qrels_s = str(qrels) if qrels else None
    a = load_per_query(run_a, qrels_s, split)
    b = load_per_query(run_b, qrels_s, split)
    tests = compare_runs(a, b, metric, permutations, seed)
    md = markdown_comparison(tests, str(run_a), str(run_b), alpha)
    typer.echo(md)
    only_a, only_b = len(set(a) - set(b)), len(set(b) - set(a))
    if only_a or only_b:
        console.print(f"note: {only_a} queries only in A and {only_b} only in B were left out of the paired tests")
    if out is not None:
        if out.suffix.lower() == ".json":
            write_text_atomic(out, json.dumps({"run_a": str(run_a), "run_b": str(run_b), "tests": [t.to_dict() for t in tests]}, indent=2))
        else:
            write_text_atomic(out, md)


@app.command("mteb")
def mteb_cmd(
    data: str = typer.Option(..., "--data", help="BEIR folder or name under DENSEKIT_DATA_DIR"),
    split: str = typer.Option("test", "--split", help="qrels split"),
    model: str = typer.Option(None, "--model", help="bi-encoder (default: DENSEKIT_MODEL)"),
    search: bool = typer.Option(
        False, "--search", help="let MTEB call densekit's search (faiss index) instead of its own exhaustive search over the encoder"
    ),
    out: Path = typer.Option(None, "--out", help="write MTEB's scores as JSON into this folder"),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda"),
) -> None:
    """Run MTEB's retrieval evaluator (mteb 2.x) on a local BEIR folder with a densekit encoder,
    offline: the corpus goes through densekit's embedding cache."""
    import json

    from densekit.atomic import write_text_atomic
    from densekit.encoder import Encoder
    from densekit.eval.mteb_adapter import run_mteb_retrieval

    s = settings()
    folder = resolve_data(data)
    enc = Encoder(model or s.model, device=device or s.device, dtype=s.dtype, batch_size=s.batch_size)
    scores = run_mteb_retrieval(enc, folder, split, use_search=search)
    for k in ("ndcg_at_10", "recall_at_100", "mrr_at_10", "map_at_100"):
        if k in scores:
            console.print(f"{k:>14}: {scores[k]:.4f}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            out / "mteb_scores.json",
            json.dumps({"dataset": folder.name, "split": split, "model": enc.name, "scores": scores}, indent=2, default=str),
        )
        console.print(f"scores: {out / 'mteb_scores.json'}")


def _rerank_stage(name: str, top_n: int, ds, run, out: Path, device: str) -> None:
    """Second stage of `densekit eval --rerank`: rerank the top-n, report both stages."""
    from densekit.eval.rerank import evaluate_rerank, fused_outcome, write_rerank_report
    from densekit.rerankers import load_reranker

    reranker = load_reranker(name, device=device)
    outcome = evaluate_rerank(reranker, ds, run, top_n=top_n)
    write_rerank_report(out / "rerank", outcome)
    # The RRF fusion of both stages costs no model call, so it is always reported beside them.
    fused = fused_outcome(outcome, {q: ds.qrels[q] for q in outcome.run_first})
    write_rerank_report(out / "rerank-rrf", fused)
    console.print(f"reranked top-{top_n} with {name}: {outcome.info['pairs']} pairs, {outcome.info['pairs_per_s']} pairs/s")
    console.print(f"{'':>14}  first stage -> reranked | RRF(first, reranked)")
    for k in ("ndcg@10", "mrr@10", "auc_global", "auc_per_query"):
        console.print(f"{k:>14}: {outcome.first_stage[k]:.4f} -> {outcome.reranked[k]:.4f} | {fused.reranked[k]:.4f}")
    console.print(f"rerank reports: {out / 'rerank'}, {out / 'rerank-rrf'}")
