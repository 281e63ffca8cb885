"""`densekit train biencoder`: one reproducible fine-tuning run of a bi-encoder.

The run: validate the config and every input (fail before any work), build the training
pairs (BEIR train qrels and/or pairs JSONL; hard negatives mined with the base model or
reused from a mined file), evaluate the base model, train with sentence-transformers'
`SentenceTransformerTrainer` and one of our losses, save the model in
sentence-transformers layout, and evaluate again. Output folder::

    resolved_config.yaml   every field, defaults included
    hard_negatives.jsonl   the mined pairs (when mining ran)
    model/                 SentenceTransformer(path) loads it
    train_log.jsonl        trainer log history (loss, lr, grad norm per step)
    loss_curve.png
    eval_before/ eval_after/   run.trec, metrics.json, per_query.csv, report.md
    summary.json           before/after headline metrics, data and timing figures
"""

from __future__ import annotations

import datetime as _dt
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from densekit.atomic import atomic_dir, write_json_atomic
from densekit.data.pairs import TrainingPair
from densekit.errors import ConfigError, ModelLoadError
from densekit.eval.report import headline
from densekit.training.biencoder_config import BiEncoderRunConfig, check_paths
from densekit.training.curves import plot_loss_curve, write_training_log
from densekit.training.ddp import is_main_process, world_size
from densekit.training.run_config import write_resolved_config

log = logging.getLogger(__name__)


@dataclass
class BiEncoderRunResult:
    output_dir: Path
    model_dir: Path
    before: dict[str, float] | None = None
    after: dict[str, float] | None = None
    train: dict[str, Any] = field(default_factory=dict)


def build_loss(cfg: BiEncoderRunConfig, model):
    from densekit.training.losses import DCLLoss, InfoNCELoss, MWLoss

    lc = cfg.loss
    tau = lc.resolved_temperature()
    if lc.name == "mw":
        return MWLoss(
            model, temperature=tau, reduction=lc.reduction, similarity=lc.similarity, gather_across_devices=lc.gather_across_devices
        )
    cls = InfoNCELoss if lc.name == "infonce" else DCLLoss
    return cls(model, temperature=tau, symmetric=lc.symmetric, similarity=lc.similarity, gather_across_devices=lc.gather_across_devices)


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _evaluate(model_path: str, dataset, cfg: BiEncoderRunConfig, device: str, out: Path, label: str, progress: bool) -> dict[str, float]:
    """Evaluate a saved model folder (so the embedding cache applies) and write a report."""
    from densekit.encoder import Encoder
    from densekit.eval.evaluate import evaluate_encoder
    from densekit.eval.report import write_report

    enc = Encoder.from_settings(model=model_path, device=device, max_seq_length=cfg.eval.max_seq_length)
    outcome = evaluate_encoder(enc, dataset, top_k=cfg.eval.top_k, progress=progress)
    info = {
        "dataset": dataset.name,
        "split": dataset.split,
        "model": model_path,
        "stage": label,
        "counts": dataset.counts,
        "timings_s": {k: round(v, 3) for k, v in outcome.timings.items()},
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_report(out, outcome.metrics, outcome.per_query, outcome.run, info)
    return {k: float(outcome.metrics[k]) for k in outcome.metrics if isinstance(outcome.metrics[k], (int, float))}


def collect_pairs(
    cfg: BiEncoderRunConfig,
    folders: dict[str, Path],
    base_model_path: str,
    device: str,
    out_dir: Path,
    progress: bool,
    notes: dict[str, Any],
):
    """BEIR pairs (mined or reused negatives) + pairs files, in that order."""
    from densekit.data import load_beir
    from densekit.training.mining import MiningParams, mine_hard_negatives, read_mined, write_mined
    from densekit.training.pairs_data import load_pair_files, pairs_from_beir

    pairs: list[TrainingPair] = []
    if cfg.data.beir:
        if cfg.mining.reuse:
            mined = read_mined(cfg.mining.reuse)
            notes["beir_pairs"] = {"source": "mining.reuse", "file": cfg.mining.reuse, "queries": len(mined)}
            pairs.extend(mined)
        else:
            ds = load_beir(folders["data.beir"], cfg.data.beir_split)
            beir_pairs = pairs_from_beir(ds, cfg.data.min_grade, cfg.data.max_queries, cfg.seed)
            notes["beir_pairs"] = {"source": str(folders["data.beir"]), "split": cfg.data.beir_split, "queries": len(beir_pairs)}
            if cfg.mining.enabled:
                from densekit.encoder import Encoder

                t0 = time.perf_counter()
                enc = Encoder.from_settings(
                    model=base_model_path, device=device, batch_size=cfg.mining.batch_size, max_seq_length=cfg.eval.max_seq_length
                )
                mc = cfg.mining
                params = MiningParams(mc.rank_start, mc.rank_end, mc.margin, mc.num_negatives, mc.sampling, cfg.seed, mc.fill_short)
                beir_pairs, stats = mine_hard_negatives(enc, ds, beir_pairs, params, progress=progress)
                # Every process mines the same negatives (same model, same seed); one writes them.
                path = out_dir / "hard_negatives.jsonl"
                if is_main_process():
                    write_mined(beir_pairs, path)
                notes["mining"] = {**stats.as_dict(), "file": str(path), "seconds": round(time.perf_counter() - t0, 1)}
                del enc
            pairs.extend(beir_pairs)
    if cfg.data.pairs:
        extra = load_pair_files(cfg.data.pairs)
        notes["pairs_files"] = {"files": cfg.data.pairs, "queries": len(extra)}
        pairs.extend(extra)
    return pairs


def run_biencoder(
    cfg: BiEncoderRunConfig,
    resolve_data: Callable[[str], Path],
    device: str | None = None,
    progress: bool = True,
) -> BiEncoderRunResult:
    from densekit.devices import resolve_device
    from densekit.models import resolve_encoder_name

    folders = check_paths(cfg, resolve_data)
    if device:
        cfg = cfg.model_copy(update={"device": device})
    dev = resolve_device(cfg.device)
    out_dir = Path(cfg.output_dir).expanduser()
    main = is_main_process()  # under torchrun every process trains; only rank 0 evaluates and writes
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_resolved_config(cfg, out_dir, {"device_resolved": dev, "world_size": world_size()})
    _seed_everything(cfg.seed)
    base_path = resolve_encoder_name(cfg.model)
    notes: dict[str, Any] = {}

    eval_ds = None
    before = None
    if cfg.eval.beir:
        from densekit.data import load_beir

        eval_ds = load_beir(folders["eval.beir"], cfg.eval.split)
        if cfg.eval.before and main:
            before = _evaluate(base_path, eval_ds, cfg, dev, out_dir / "eval_before", "before", progress)

    pairs = collect_pairs(cfg, folders, base_path, dev, out_dir, progress, notes)
    from densekit.training.pairs_data import build_rows, to_dataset

    cols, stats = build_rows(pairs, cfg.data.num_negatives, cfg.seed)
    notes["examples"] = asdict(stats)
    if stats.rows == 0:
        raise ConfigError("data", "no training rows: every query lacked positives or (with data.num_negatives > 0) negatives")
    train_ds = to_dataset(cols)

    model, train_info = train_model(cfg, base_path, dev, train_ds, out_dir, progress and main)
    model_dir = out_dir / "model"
    if not main:
        return BiEncoderRunResult(out_dir, model_dir, None, None, train_info)
    with atomic_dir(model_dir) as tmp:
        model.save(str(tmp))
    log.info("model saved to %s", model_dir)
    train_info["examples"] = notes.get("examples")
    train_info["world_size"] = world_size()
    del model

    after = None
    if eval_ds is not None and cfg.eval.after:
        after = _evaluate(str(model_dir), eval_ds, cfg, dev, out_dir / "eval_after", "after", progress)

    summary = {
        "config": cfg.model_dump(mode="json"),
        "device": dev,
        "data": notes,
        "train": train_info,
        "before": headline(before) if before else None,
        "after": headline(after) if after else None,
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(out_dir / "summary.json", summary)
    return BiEncoderRunResult(out_dir, model_dir, before, after, train_info)


def train_model(cfg: BiEncoderRunConfig, base_path: str, device: str, train_ds, out_dir: Path, progress: bool):
    """Fine-tune with SentenceTransformerTrainer; returns (model, timing/loss figures)."""
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    try:
        model = SentenceTransformer(base_path, device=device)
    except Exception as exc:
        raise ModelLoadError(f"cannot load base model '{cfg.model}': {exc}") from exc
    # A shorter limit while training saves compute; the saved model keeps its own limit.
    original_max_len = model.max_seq_length
    if cfg.train.max_seq_length:
        model.max_seq_length = cfg.train.max_seq_length
    tc = cfg.train
    on_cuda = device.startswith("cuda")
    bf16 = False
    fp16 = False
    if on_cuda:
        import torch

        bf16 = torch.cuda.is_bf16_supported()
        fp16 = not bf16
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        per_device_train_batch_size=tc.batch_size,
        num_train_epochs=tc.epochs,
        max_steps=tc.max_steps if tc.max_steps else -1,
        learning_rate=tc.learning_rate,
        warmup_steps=tc.warmup_ratio,  # transformers 5: a float < 1 is a ratio of all steps
        weight_decay=tc.weight_decay,
        lr_scheduler_type=tc.lr_scheduler,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=tc.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if tc.save_checkpoints else "no",
        report_to="none",
        # Duplicate texts in a batch would be "negatives" of themselves.
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        use_cpu=not on_cuda,
        bf16=bf16,
        fp16=fp16,
        dataloader_num_workers=tc.dataloader_workers,
        disable_tqdm=not progress,
    )
    loss = build_loss(cfg, model)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_ds, loss=loss)
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    history = list(trainer.state.log_history)
    steps = int(trainer.state.global_step)
    if is_main_process():
        write_training_log(history, out_dir / "train_log.jsonl")
        plot_loss_curve(
            history, out_dir / "loss_curve.png", title=f"{cfg.loss.name} on {cfg.data.beir or 'pairs'}", smooth=max(1, min(20, steps // 10))
        )
    losses = [r["loss"] for r in history if "loss" in r]
    info = {
        "steps": steps,
        "epochs": round(float(trainer.state.epoch or 0), 3),
        "rows": len(train_ds),
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(steps, 1), 3),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_loss": float(result.training_loss),
    }
    model.max_seq_length = original_max_len
    return model, info
