"""`densekit train`: bi-encoders, rerankers and distilled indexes from YAML configs."""

from __future__ import annotations

import typer

app = typer.Typer(help="Train bi-encoders, rerankers and distilled indexes.", no_args_is_help=True)


@app.command("biencoder")
def biencoder(
    config: str = typer.Option(..., "--config", "-c", help="run YAML (see training/biencoder_config.py and the README)"),
    device: str = typer.Option(None, "--device", help="override the config's device: auto, cpu, cuda, cuda:N"),
    output_dir: str = typer.Option(None, "--output-dir", help="override output_dir"),
    max_steps: int = typer.Option(None, "--max-steps", help="override train.max_steps"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars"),
) -> None:
    """Fine-tune a bi-encoder (InfoNCE, MW or DCL) and evaluate it before and after."""
    from densekit.cli.common import console, resolve_data
    from densekit.training.biencoder import run_biencoder
    from densekit.training.biencoder_config import BiEncoderRunConfig
    from densekit.training.run_config import load_yaml_config

    cfg = load_yaml_config(BiEncoderRunConfig, config, {"output_dir": output_dir, "train.max_steps": max_steps, "device": device})
    result = run_biencoder(cfg, resolve_data, device=device, progress=not no_progress)
    t = result.train
    console.print(f"trained {t['steps']} steps in {t['seconds']:.0f} s ({t['seconds_per_step']:.2f} s/step); model: {result.model_dir}")
    for stage, m in (("before", result.before), ("after", result.after)):
        if m:
            console.print(
                f"{stage:>6}: "
                + "  ".join(f"{k}={m[k]:.4f}" for k in ("ndcg@10", "recall@100", "mrr@10", "auc_global", "auc_per_query") if k in m)
            )


@app.command("mine")
def mine(
    data: str = typer.Option(..., "--data", help="BEIR folder or name under DENSEKIT_DATA_DIR"),
    out: str = typer.Option(..., "--out", help="mined pairs JSONL to write ({query, pos, neg, qid, pos_ids, neg_ids})"),
    split: str = typer.Option("train", "--split", help="qrels split whose queries get negatives"),
    model: str = typer.Option(None, "--model", help="bi-encoder that retrieves the candidates (default: DENSEKIT_MODEL)"),
    rank_start: int = typer.Option(10, "--rank-start", help="first rank (0-based) of the candidate window"),
    rank_end: int = typer.Option(100, "--rank-end", help="end (exclusive) of the candidate window"),
    margin: str = typer.Option(
        "0.05", "--margin", help="absolute margin: skip candidates scoring above positive score minus this; 'none': off"
    ),
    relative_margin: float = typer.Option(
        None, "--relative-margin", help="skip candidates scoring above positive score - |positive score| x this (e.g. 0.05)"
    ),
    max_score: float = typer.Option(None, "--max-score", help="skip candidates scoring above this"),
    positive_reference: str = typer.Option("best", "--positive-reference", help="margins from the best or the weakest judged positive"),
    num_negatives: int = typer.Option(4, "--num-negatives", help="negatives kept per query"),
    sampling: str = typer.Option("random", "--sampling", help="random (seeded) or top"),
    seed: int = typer.Option(42, "--seed"),
    fill_short: str = typer.Option(
        "random", "--fill-short", help="random: top up queries left short with random corpus documents; none: leave them short"
    ),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda"),
) -> None:
    """Mine hard negatives for a BEIR split with a bi-encoder and faiss; never a judged positive."""
    from densekit.cli.common import console, resolve_data
    from densekit.data import load_beir
    from densekit.encoder import Encoder
    from densekit.errors import ConfigError
    from densekit.training.biencoder_config import MiningConfig
    from densekit.training.mining import mine_hard_negatives, write_mined
    from densekit.training.pairs_data import pairs_from_beir
    from densekit.training.run_config import validate_config

    try:
        absolute = None if margin.strip().lower() in ("none", "off") else float(margin)
    except ValueError:
        raise ConfigError("--margin", f"a number or 'none', got {margin!r}") from None
    flags = {
        "rank_start": rank_start,
        "rank_end": rank_end,
        "margin": absolute,
        "relative_margin": relative_margin,
        "max_score": max_score,
        "positive_reference": positive_reference,
        "num_negatives": num_negatives,
        "sampling": sampling,
        "fill_short": fill_short,
    }
    try:
        params = validate_config(MiningConfig, flags).params(seed)
    except ConfigError as exc:
        # the config names its fields as YAML keys; on the command line they are flags
        raise ConfigError("--" + exc.field.replace("_", "-"), exc.message) from None
    ds = load_beir(resolve_data(data), split)
    enc = Encoder.from_settings(model=model, device=device)
    pairs, stats = mine_hard_negatives(enc, ds, pairs_from_beir(ds, seed=seed), params)
    write_mined(pairs, out)
    console.print(f"mined {stats.negatives} negatives for {stats.queries} queries -> {out} ({stats.as_dict()})")


@app.command("interpolate")
def interpolate(
    base: str = typer.Option(..., "--base", help="the model fine-tuning started from: hub name or local folder"),
    tuned: str = typer.Option(
        ...,
        "--tuned",
        help="the fine-tuned model folder: OUTPUT_DIR/model of `train biencoder`, or OUTPUT_DIR/model-tuned when the run used interpolate",
    ),
    weight: list[float] = typer.Option(
        ..., "--weight", "-w", help="share of the fine-tuned model in [0, 1] (repeat for several: one folder each)"
    ),
    out: str = typer.Option(..., "--out", help="folder that receives one model folder per weight, w<WEIGHT>/"),
) -> None:
    """WiSE-FT: models on the straight line between a base bi-encoder and its fine-tuned copy.

    Each is (1 - w) * base + w * tuned, weight by weight; pick the weight on a dev split
    (`densekit eval`), never on test."""
    from densekit.cli.common import console
    from densekit.training.weight_interpolation import interpolate_models

    for folder in interpolate_models(base, tuned, weight, out):
        console.print(f"written: {folder}")


@app.command("distill-index")
def distill_index(
    config: str = typer.Option(..., "--config", "-c", help="run YAML (see training/distill_vq_config.py and the README)"),
    device: str = typer.Option(None, "--device", help="override the config's device: auto, cpu, cuda, cuda:N"),
    out: str = typer.Option(None, "--out", help="override out (the index folder to write)"),
    epochs: int = typer.Option(None, "--epochs", help="override train.epochs"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars"),
) -> None:
    """Distill-VQ: learn IVF centroids and PQ codebooks from dense scores, write a faiss index folder."""
    from densekit.cli.common import console, resolve_data
    from densekit.training.distill_vq_config import DistillVQConfig
    from densekit.training.distill_vq_run import run_distill
    from densekit.training.run_config import load_yaml_config

    cfg = load_yaml_config(DistillVQConfig, config, {"out": out, "train.epochs": epochs, "device": device})
    res = run_distill(cfg, resolve_data, device=device, progress=not no_progress)
    console.print(
        f"distilled index written: {res.index_dir} ({res.n_docs} documents; {res.n_queries} {res.query_source} queries; "
        f"{res.history['steps']} steps in {res.history['seconds']:.0f} s; epoch loss {res.history['epoch_loss']})"
    )


@app.command("reranker")
def reranker(
    config: str = typer.Option(..., "--config", "-c", help="run YAML (see training/rerank/config.py and the README section Rerankers)"),
    device: str = typer.Option(None, "--device", help="override train.device: auto, cpu, cuda, cuda:N"),
    output_dir: str = typer.Option(None, "--output-dir", help="override output_dir"),
    max_steps: int = typer.Option(None, "--max-steps", help="override train.max_steps"),
    objective: str = typer.Option(None, "--objective", help="override objective: sft or cl (llm), bce (cross-encoder)"),
    resume: bool = typer.Option(
        False, "--resume", help="continue from the latest checkpoint in OUTPUT_DIR/checkpoints (written when train.save_steps is set)"
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars"),
) -> None:
    """Train a reranker (LLM yes/no with SFT or CL, or a cross-encoder); eval before and after.

    Runs unchanged under `torchrun --nproc_per_node N` or `accelerate launch` (DDP)."""
    from densekit.cli.common import console, resolve_data
    from densekit.training.rerank.config import RerankerRunConfig
    from densekit.training.rerank.run import train_reranker
    from densekit.training.run_config import load_yaml_config

    cfg = load_yaml_config(
        RerankerRunConfig, config, {"output_dir": output_dir, "train.max_steps": max_steps, "train.device": device, "objective": objective}
    )
    summary = train_reranker(
        cfg, resolve_data, log=lambda m: console.print(m, markup=False, highlight=False), progress=not no_progress, resume=resume
    )
    console.print(f"trained {summary['steps']} steps in {summary['train_s']:.0f} s; model: {summary['model_dir']}")
    for stage in ("eval_before", "eval_after"):
        if stage in summary:
            e = summary[stage]
            console.print(
                f"{stage}: first stage "
                + "  ".join(f"{k}={v:.4f}" for k, v in e["first_stage"].items())
                + " | reranked "
                + "  ".join(f"{k}={v:.4f}" for k, v in e["reranked"].items())
                + f" ({e['pairs_per_s']} pairs/s)"
            )
