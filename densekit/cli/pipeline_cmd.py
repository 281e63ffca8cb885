"""`densekit pipeline`: run every stage of a pipeline YAML, skipping the ones already done."""

from __future__ import annotations

from pathlib import Path

import typer

from densekit.cli.common import console, settings

app = typer.Typer(
    help="One command for the stages chained by hand otherwise: mine, train the bi-encoder, build the index, "
    "tune fusion, train the reranker, evaluate, write a servable folder (see docs/pipelines.md).",
    no_args_is_help=True,
)


@app.command("run")
def run(
    config: Path = typer.Option(..., "--config", "-c", help="pipeline YAML (e.g. configs/pipelines/scifact-best.yaml)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print which stages would run or be skipped, and why; run nothing"),
    from_stage: str = typer.Option(
        None, "--from", help="re-run this stage even if its stamp matches (and, through their inputs, the stages that read its outputs)"
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars"),
) -> None:
    """Run the pipeline's stages in order; a stage whose stamp matches its config and inputs is
    skipped, so changing one stage's section re-runs it and the stages after it that read it."""
    from densekit.pipeline.runner import open_pipeline, plan, run_pipeline

    def log(message: str) -> None:
        console.print(message, markup=False, highlight=False)

    ctx = open_pipeline(config, settings(), progress=not no_progress, log=log)
    if dry_run:
        for decision in plan(ctx, from_stage):
            typer.echo(decision.line())
        return
    decisions = run_pipeline(ctx, from_stage, on_decision=lambda d: log(d.line()))
    ran = [d.label for d in decisions if d.action == "run"]
    log(f"pipeline done: {len(ran)} stage(s) ran ({', '.join(ran) or 'none'}); outputs in {ctx.out}")
