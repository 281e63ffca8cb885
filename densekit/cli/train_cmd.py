"""`densekit train`: bi-encoders, rerankers and distilled indexes from YAML configs."""
from __future__ import annotations

import typer

app = typer.Typer(help="Train bi-encoders, rerankers and distilled indexes.", no_args_is_help=True)


@app.command("reranker")
def reranker(
    config: str = typer.Option(..., "--config", "-c", help="run YAML (see training/rerank/config.py and the README section Rerankers)"),
    device: str = typer.Option(None, "--device", help="override train.device: auto, cpu, cuda, cuda:N"),
    output_dir: str = typer.Option(None, "--output-dir", help="override output_dir"),
    max_steps: int = typer.Option(None, "--max-steps", help="override train.max_steps"),
    objective: str = typer.Option(None, "--objective", help="override objective: sft or cl (llm), bce (cross-encoder)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars"),
) -> None:
    """Train a reranker (LLM yes/no with SFT or CL, or a cross-encoder); eval before and after."""
    from densekit.cli.common import console, resolve_data
    from training.rerank.config import RerankerRunConfig
    from training.rerank.run import train_reranker
    from training.run_config import load_yaml_config

    cfg = load_yaml_config(RerankerRunConfig, config, {"output_dir": output_dir, "train.max_steps": max_steps, "train.device": device, "objective": objective})
    summary = train_reranker(cfg, resolve_data, log=lambda m: console.print(m, markup=False, highlight=False), progress=not no_progress)
    console.print(f"trained {summary['steps']} steps in {summary['train_s']:.0f} s; model: {summary['model_dir']}")
    for stage in ("eval_before", "eval_after"):
        if stage in summary:
            e = summary[stage]
            console.print(f"{stage}: first stage " + "  ".join(f"{k}={v:.4f}" for k, v in e["first_stage"].items()) + " | reranked " + "  ".join(f"{k}={v:.4f}" for k, v in e["reranked"].items()) + f" ({e['pairs_per_s']} pairs/s)")
