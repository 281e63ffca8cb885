"""`densekit eval`: retrieve for every query of a split and write run, metrics and report."""
from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

import typer

from densekit.cli.common import console, resolve_data, settings

app = typer.Typer(help="Evaluate retrieval on BEIR data (and compare runs).", invoke_without_command=True)


@app.callback()
def evaluate(
    ctx: typer.Context,
    data: str = typer.Option(None, "--data", help="BEIR folder or name under DENSEKIT_DATA_DIR"),
    split: str = typer.Option("test", "--split", help="qrels split to evaluate"),
    model: str = typer.Option(None, "--model", help="bi-encoder (default: the index's encoder, else DENSEKIT_MODEL)"),
    index: Path = typer.Option(None, "--index", help="reuse this index folder instead of encoding the corpus"),
    out: Path = typer.Option(None, "--out", help="report folder: run.trec, metrics.json, per_query.csv, report.md"),
    top_k: int = typer.Option(1000, "--top-k", help="documents retrieved per query"),
    ignore_identical_ids: bool = typer.Option(False, "--ignore-identical-ids", help="drop a document whose id equals the query id (BEIR option)"),
    auc_negatives: int = typer.Option(500, "--auc-negatives", help="top-N retrieved non-relevant documents used as AUC negatives"),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda"),
) -> None:
    """Evaluate a model or index on one split; prints the headline metrics."""
    if ctx.invoked_subcommand:
        return
    if not data or not out:
        raise typer.BadParameter("--data and --out are required", param_hint="--data/--out")
    from densekit.data import load_beir
    from densekit.encoder import Encoder
    from eval.evaluate import evaluate_index
    from eval.report import HEADLINE, write_report
    from index.dense_index import build_from_corpus, load_index

    s = settings()
    folder = resolve_data(data)
    t0 = time.perf_counter()
    ds = load_beir(folder, split)
    timings = {"load_data_s": time.perf_counter() - t0}
    if index is not None:
        idx = load_index(index)
        enc = Encoder(model or idx.manifest.encoder.path or idx.manifest.encoder.name, device=device or s.device, dtype=s.dtype, batch_size=s.batch_size)
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
