"""`densekit tune`: fit settings on a dev or train split (never on test)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from densekit.cli.common import console, settings

app = typer.Typer(help="Fit settings on a dev or train split (never on a test split).", no_args_is_help=True)


@app.command("fusion")
def fusion(
    data: str = typer.Option(..., "--data", help="BEIR folder or name under DENSEKIT_DATA_DIR"),
    split: str = typer.Option(..., "--split", help="qrels split to fit on: dev or train (a test split is refused)"),
    model: str = typer.Option(None, "--model", help="bi-encoder (default: the index's encoder, else DENSEKIT_MODEL)"),
    index: Path = typer.Option(None, "--index", help="index folder with a lexical part (default: the model's flat index + BM25 in memory)"),
    write: bool = typer.Option(False, "--write", help="store the chosen fusion (and mode hybrid) in --index's manifest"),
    top_k: int = typer.Option(1000, "--top-k", min=1, help="documents retrieved per list before fusion"),
    out: Path = typer.Option(None, "--out", help="also write every candidate's score as JSON"),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda"),
) -> None:
    """Pick hybrid fusion on a dev or train split: RRF, or the convex combination
    alpha * dense + (1 - alpha) * BM25 (min-max normalised) with alpha in 0, 0.1, ..., 1,
    whichever has the best nDCG@10."""
    from densekit.atomic import write_text_atomic
    from densekit.eval.fusion_tune import METRIC, check_tuning_split, tune_fusion

    check_tuning_split(split)  # before anything loads
    if write and index is None:
        raise typer.BadParameter("--write stores the settings in an index folder: give --index", param_hint="--write")
    result = tune_fusion(data, split, settings(), model=model, index=str(index) if index else None, top_k=top_k, device=device)
    console.print(f"{result.dataset} {split} ({result.queries} queries), {METRIC}: dense {result.dense:.4f}, BM25 {result.lexical:.4f}")
    for s, value in result.grid:
        console.print(f"  {s.method:<6} {'' if s.method == 'rrf' else f'alpha={s.alpha:.1f}':<10} {value:.4f}")
    best, value = result.best
    label = "rrf" if best.method == "rrf" else f"convex alpha={best.alpha:.1f}"
    console.print(f"best: {label} ({METRIC} {value:.4f})")
    if out is not None:
        write_text_atomic(out, json.dumps(result.to_dict(), indent=2))
    if write:
        from densekit.index.manifest import update_search_defaults

        update_search_defaults(index, search_mode="hybrid", fusion=best)
        console.print(f"written into {index / 'manifest.json'}: mode hybrid, fusion {label}")
