"""`densekit eval`: retrieve for every query of a split and write run, metrics and report;
several datasets x configurations in one report; paired significance tests between runs;
MTEB's retrieval evaluator on a local BEIR folder."""

from __future__ import annotations

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
    backend: str = typer.Option(None, "--backend", help="bi-encoder runtime: torch, onnx or openvino (default: DENSEKIT_BACKEND)"),
    precision: str = typer.Option(None, "--precision", help="bi-encoder precision: fp32, bf16 or int8 (default: DENSEKIT_PRECISION)"),
    mode: str = typer.Option(
        None,
        "--mode",
        help="first stage: dense, lexical (BM25; without --index the corpus is indexed in memory, no model needed) "
        "or hybrid (dense + BM25 fused); default: the index's mode, else dense",
    ),
    fusion: str = typer.Option(None, "--fusion", help="hybrid: rrf or convex (default: the index's, else rrf)"),
    alpha: float = typer.Option(
        None, "--alpha", help="hybrid, convex: weight of the dense scores in [0, 1] (default: the index's, else 0.5)"
    ),
) -> None:
    """Evaluate a model, index or server on one or several datasets; prints the headline metrics."""
    if ctx.invoked_subcommand:
        return
    from densekit.eval.request import EvalRequest, run_evaluation
    from densekit.eval.suite_config import load_suite_config

    data, model, index, endpoint = list(data or []), list(model or []), list(index or []), list(endpoint or [])
    if config is not None:
        if rerank:
            raise typer.BadParameter("with --config, give rerankers in the YAML (reranker, rerank_top_n)", param_hint="--rerank")
        if mode or fusion or alpha is not None:
            raise typer.BadParameter("with --config, give mode, fusion and alpha per configuration in the YAML", param_hint="--mode")
        if data or model or index or endpoint:
            raise typer.BadParameter(
                "--config already names datasets and configurations; drop --data/--model/--index/--endpoint", param_hint="--config"
            )
        suite = load_suite_config(config)
    else:
        suite = _suite_from_flags(
            data=data,
            split=split,
            model=model,
            index=index,
            endpoint=endpoint,
            api_key=api_key,
            endpoint_rerank=endpoint_rerank,
            rerank=rerank,
            rerank_top_n=rerank_top_n,
            options={
                "top_k": top_k,
                "auc_negatives": auc_negatives,
                "precision_target": precision_target,
                "calibration_depth": calibration_depth,
                "plots": not no_plots,
            },
            ignore_identical_ids=ignore_identical_ids,
            retrieval={k: v for k, v in {"mode": mode, "fusion": fusion, "alpha": alpha}.items() if v is not None},
        )
    if out is None and suite.out is None:
        raise typer.BadParameter("--out is required", param_hint="--out")
    out = out or Path(str(suite.out))
    # One dataset and one first stage (plus its reranked twin): the single-run report layout.
    n_first_stages = len(index) + len(endpoint) + (0 if index else len(model))
    single = config is None and len(data) == 1 and n_first_stages <= 1
    request = EvalRequest(suite, out, "single" if single else "suite", device=device, endpoint_concurrency=endpoint_concurrency)
    runtime = {k: v for k, v in {"backend": backend, "precision": precision}.items() if v is not None}
    result = run_evaluation(request, settings().model_copy(update=runtime))
    if single:
        _print_single(result)
    else:
        _print_suite(result, [n for n, _ in suite.named_configurations(settings().model)])


def _suite_from_flags(
    *,
    data: list[str],
    split: str,
    model: list[str],
    index: list[str],
    endpoint: list[str],
    api_key: str | None,
    endpoint_rerank: bool,
    rerank: str | None,
    rerank_top_n: int,
    options: dict,
    ignore_identical_ids: bool,
    retrieval: dict | None = None,
):
    """The SuiteConfig the flags describe: one configuration per --model, --index or
    --endpoint; --rerank / --endpoint-rerank add each first stage's reranked twin."""
    from densekit.eval.suite_config import suite_from_dict

    if not data:
        raise typer.BadParameter("--data is required (or --config)", param_hint="--data")
    if index and len(model) > 1:
        raise typer.BadParameter("with --index, give at most one --model (the query encoder)", param_hint="--model")
    configs: list[dict] = [{"model": m} for m in model] if not index else []
    for ix in index:
        configs.append({"index": ix, **({"model": model[0]} if len(model) == 1 else {})})
    for url in endpoint:
        configs.append({"endpoint": url, "api_key": api_key})
    if not configs:
        configs = [{}]  # the default model
    if retrieval:
        if endpoint:
            raise typer.BadParameter("an --endpoint searches in its server's own mode", param_hint="--mode")
        configs = [{**c, **retrieval} for c in configs]
    twins = []
    if rerank:
        # Each in-process first stage gets a reranked twin; they share one retrieval.
        twins = [{**c, "reranker": rerank, "rerank_top_n": rerank_top_n} for c in configs if "endpoint" not in c]
        if not twins:
            raise typer.BadParameter(
                "--rerank reranks in-process first stages; to use a server's reranker pass --endpoint-rerank", param_hint="--rerank"
            )
    if endpoint_rerank:
        twins += [{**c, "reranker": "server", "rerank_top_n": rerank_top_n} for c in configs if "endpoint" in c]
    return suite_from_dict(
        {
            "datasets": [{"name": d, "split": split, "ignore_identical_ids": ignore_identical_ids} for d in data],
            "configurations": configs + twins,
            **options,
        }
    )


def _print_single(result) -> None:
    """The headline metrics of the first stage and, when reranked, of both stages and their RRF."""
    from densekit.eval.report import HEADLINE

    ((label, by_cfg),) = result.cells.items()
    first, *reranked = by_cfg.values()
    for k in HEADLINE:
        console.print(f"{k:>14}: {first.metrics[k]:.4f}")
    console.print(f"report: {result.out}")
    for cell in reranked:
        outcome, fused = cell.rerank, cell.fused
        info = outcome.info
        console.print(f"reranked top-{info['top_n']} with {info.get('reranker')}: {info['pairs']} pairs, {info.get('pairs_per_s')} pairs/s")
        console.print(f"{'':>14}  first stage -> reranked | RRF(first, reranked)  (both stages on the same candidates)")
        for k in HEADLINE:
            if k in outcome.reranked:
                console.print(f"{k:>14}: {outcome.first_stage[k]:.4f} -> {outcome.reranked[k]:.4f} | {fused.reranked[k]:.4f}")
        console.print(f"rerank reports: {result.out / 'rerank'}, {result.out / 'rerank-rrf'}")


def _print_suite(result, names: list[str]) -> None:
    """nDCG@10 per dataset and configuration, and the average."""
    table = ["dataset".ljust(16) + "".join(n[:22].rjust(24) for n in names)]
    for dname, by_cfg in result.cells.items():
        table.append(
            dname[:16].ljust(16) + "".join((f"{by_cfg[n].metrics['ndcg@10']:.4f}" if n in by_cfg else "-").rjust(24) for n in names)
        )
    avg = result.summary["average"]
    table.append("average".ljust(16) + "".join((f"{avg[n]['metrics']['ndcg@10']:.4f}" if n in avg else "-").rjust(24) for n in names))
    console.print("nDCG@10\n" + "\n".join(table), highlight=False)
    console.print(f"report: {result.out / 'report.md'}")


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
    auc_bootstrap: int = typer.Option(
        0,
        "--auc-bootstrap",
        min=0,
        help="also test the global ROC-AUC difference by a paired bootstrap over queries with this many resamples "
        "(needs --qrels and run files or report folders with run.trec; uses --seed)",
    ),
    out: Path = typer.Option(None, "--out", help="also write the result: FILE.json or FILE.md"),
) -> None:
    """Paired significance test of two runs on per-query metrics: Fisher randomisation test and
    paired t-test, with the mean difference, its 95% CI, Cohen's d and wins/ties/losses; with
    --auc-bootstrap, the global AUC of both runs, their difference, its 95% CI and P(B - A <= 0)."""
    import json

    from densekit.atomic import write_text_atomic
    from densekit.eval.compare import compare_global_auc, compare_runs, load_per_query, markdown_auc_bootstrap, markdown_comparison

    qrels_s = str(qrels) if qrels else None
    a = load_per_query(run_a, qrels_s, split)
    b = load_per_query(run_b, qrels_s, split)
    tests = compare_runs(a, b, metric, permutations, seed)
    md = markdown_comparison(tests, str(run_a), str(run_b), alpha)
    result: dict = {"run_a": str(run_a), "run_b": str(run_b), "tests": [t.to_dict() for t in tests]}
    if auc_bootstrap:
        if qrels is None:
            raise typer.BadParameter("the global AUC needs the qrels: pass --qrels", param_hint="--auc-bootstrap")
        boot = compare_global_auc(run_a, run_b, qrels, split, auc_bootstrap, seed)
        md += "\n" + markdown_auc_bootstrap(boot)
        result["auc_bootstrap"] = boot.to_dict()
    typer.echo(md)
    only_a, only_b = len(set(a) - set(b)), len(set(b) - set(a))
    if only_a or only_b:
        console.print(f"note: {only_a} queries only in A and {only_b} only in B were left out of the paired tests")
    if out is not None:
        write_text_atomic(out, json.dumps(result, indent=2) if out.suffix.lower() == ".json" else md)


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
