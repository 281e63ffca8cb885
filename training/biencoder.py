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
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densekit.atomic import atomic_dir, write_json_atomic
from densekit.data.pairs import TrainingPair
from densekit.errors import ConfigError, ModelLoadError
from densekit.eval.report import headline
from densekit.training.biencoder_config import BiEncoderRunConfig, DatasetSource, check_paths
from densekit.training.curves import plot_loss_curve, write_training_log
from densekit.training.ddp import end_process_group, is_main_process, world_size
from densekit.training.run_config import write_resolved_config

if TYPE_CHECKING:
    from densekit.training.losses.false_negatives import JudgedRelevance

log = logging.getLogger(__name__)


@dataclass
class BiEncoderRunResult:
    output_dir: Path
    model_dir: Path
    before: dict[str, float] | None = None
    after: dict[str, float] | None = None
    train: dict[str, Any] = field(default_factory=dict)


def build_loss(cfg: BiEncoderRunConfig, model, judged: JudgedRelevance | None = None):
    """The configured loss; `judged` is the relevance table of the training rows' keys, given
    when the false-negative mask is on."""
    from densekit.training.losses import DCLLoss, InfoNCELoss, MWLoss

    lc = cfg.loss
    shared: dict[str, Any] = dict(
        temperature=lc.resolved_temperature(),
        similarity=lc.similarity,
        gather_across_devices=lc.gather_across_devices,
        mask_false_negatives=lc.mask_enabled(cfg.data),
        judged=judged,
    )
    if lc.name == "mw":
        return MWLoss(model, reduction=lc.reduction, **shared)
    cls = InfoNCELoss if lc.name == "infonce" else DCLLoss
    return cls(model, symmetric=lc.symmetric, **shared)


@dataclass
class SourceData:
    """One training dataset's pairs, and what its judgements say is relevant to each query."""

    name: str
    pairs: list[TrainingPair]
    judged: dict[str, set[str]] = field(default_factory=dict)  # query text -> relevant document texts


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
    write_report(out, outcome.metrics, outcome.per_query, outcome.run, info, outcome.positive_scores)
    return {k: float(outcome.metrics[k]) for k in outcome.metrics if isinstance(outcome.metrics[k], (int, float))}


def _judged_texts(dataset, pairs: Sequence[TrainingPair]) -> dict[str, set[str]]:
    """Query text -> texts of every document the qrels judge relevant (grade > 0) to it,
    whatever `min_grade` chose as training positives."""
    from densekit.data.beir import document_text

    out: dict[str, set[str]] = {}
    for pair in pairs:
        judged = dataset.qrels.get(pair.qid or "", {})
        texts = {document_text(dataset.corpus[d]) for d, g in judged.items() if g > 0 and d in dataset.corpus}
        if texts:
            out.setdefault(pair.query, set()).update(texts)
    return out


class _MiningEncoder:
    """The base model, loaded on first use and shared by every dataset that is mined."""

    def __init__(self, cfg: BiEncoderRunConfig, base_model_path: str, device: str):
        self.cfg, self.path, self.device = cfg, base_model_path, device
        self.encoder: Any = None

    def get(self):
        if self.encoder is None:
            from densekit.encoder import Encoder

            self.encoder = Encoder.from_settings(
                model=self.path, device=self.device, batch_size=self.cfg.mining.batch_size, max_seq_length=self.cfg.eval.max_seq_length
            )
        return self.encoder


def collect_source(
    cfg: BiEncoderRunConfig,
    prefix: str,
    src: DatasetSource,
    folders: dict[str, Path],
    miner: _MiningEncoder,
    mined_path: Path,
    progress: bool,
    notes: dict[str, Any],
) -> SourceData:
    """One dataset's BEIR pairs (mined or reused negatives) + pairs files, in that order."""
    from densekit.data import load_beir
    from densekit.training.mining import mine_hard_negatives, read_mined, write_mined
    from densekit.training.pairs_data import load_pair_files, pairs_from_beir

    data = SourceData(src.label(), [])
    mask = cfg.loss.mask_enabled(cfg.data)
    if src.beir:
        folder = folders[f"{prefix}.beir"]
        ds = None
        reuse = src.mined or cfg.mining.reuse
        if reuse:
            beir_pairs = read_mined(reuse)
            notes["beir_pairs"] = {"source": "mined" if src.mined else "mining.reuse", "file": reuse, "queries": len(beir_pairs)}
        else:
            ds = load_beir(folder, src.beir_split)
            beir_pairs = pairs_from_beir(ds, src.min_grade, src.max_queries, cfg.seed)
            notes["beir_pairs"] = {"source": str(folder), "split": src.beir_split, "queries": len(beir_pairs)}
            if cfg.mining.enabled:
                t0 = time.perf_counter()
                mc = cfg.mining
                params = mc.params(cfg.seed)
                beir_pairs, stats = mine_hard_negatives(miner.get(), ds, beir_pairs, params, progress=progress)
                # Every process mines the same negatives (same model, same seed); one writes them.
                if is_main_process():
                    write_mined(beir_pairs, mined_path)
                notes["mining"] = {**stats.as_dict(), "file": str(mined_path), "seconds": round(time.perf_counter() - t0, 1)}
        if mask:
            ds = ds if ds is not None else load_beir(folder, src.beir_split)
            data.judged = _judged_texts(ds, beir_pairs)
        data.pairs.extend(beir_pairs)
    if src.pairs:
        files = [folders[f"{prefix}.pairs.{i}"] for i in range(len(src.pairs))]
        extra = load_pair_files(files)
        notes["pairs_files"] = {"files": [str(f) for f in files], "queries": len(extra)}
        data.pairs.extend(extra)
    for pair in data.pairs:  # a pair's own positives are judged relevant to its query too
        data.judged.setdefault(pair.query, set()).update(pair.pos)
    return data


def collect_sources(
    cfg: BiEncoderRunConfig,
    folders: dict[str, Path],
    base_model_path: str,
    device: str,
    out_dir: Path,
    progress: bool,
    notes: dict[str, Any],
) -> list[SourceData]:
    """Every training dataset's pairs; a pooled run's notes are kept per dataset."""
    from densekit.eval.cell import safe_name

    miner = _MiningEncoder(cfg, base_model_path, device)
    pooled = bool(cfg.data.datasets)
    out = []
    for prefix, src in cfg.data.sources():
        mined = out_dir / (f"hard_negatives-{safe_name(src.label())}.jsonl" if pooled else "hard_negatives.jsonl")
        src_notes: dict[str, Any] = {}
        out.append(collect_source(cfg, prefix, src, folders, miner, mined, progress, src_notes))
        if pooled:
            notes.setdefault("datasets", {})[src.label()] = src_notes
        else:
            notes.update(src_notes)
    return out


def build_training_data(cfg: BiEncoderRunConfig, sources: list[SourceData], notes: dict[str, Any]):
    """(train dataset, relevance table or None): one `Dataset`, or a `DatasetDict` with one
    entry per source (the trainer then draws every batch from one of them)."""
    from datasets import DatasetDict

    from densekit.training.pairs_data import ExampleStats, build_rows, to_dataset
    from densekit.training.row_keys import RowKeys

    keys = RowKeys() if cfg.loss.mask_enabled(cfg.data) else None
    parts = {}
    total = ExampleStats()
    for i, source in enumerate(sources):
        cols, stats = build_rows(source.pairs, cfg.data.num_negatives, cfg.seed, keys, source=i)
        if len(sources) > 1:
            notes.setdefault("datasets", {}).setdefault(source.name, {})["examples"] = asdict(stats)
        for k in ("queries", "rows", "rows_with_reused_negatives", "queries_skipped_no_negatives"):
            setattr(total, k, getattr(total, k) + getattr(stats, k))
        if stats.rows:
            parts[source.name] = to_dataset(cols)
        elif len(sources) > 1:
            raise ConfigError("data.datasets", f"dataset '{source.name}' gives no training rows (no positives, or no negatives)")
    notes["examples"] = asdict(total)
    if total.rows == 0:
        raise ConfigError("data", "no training rows: every query lacked positives or (with data.num_negatives > 0) negatives")
    judged = None
    if keys is not None:
        for source in sources:
            for query, texts in source.judged.items():
                keys.add_judged(query, texts)
        judged = keys.relevance()
    notes["false_negative_mask"] = {"enabled": keys is not None, "judged_pairs": keys.judged_pairs if keys is not None else 0}
    train_ds = DatasetDict(parts) if len(sources) > 1 else next(iter(parts.values()))
    return train_ds, judged


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

    sources = collect_sources(cfg, folders, base_path, dev, out_dir, progress, notes)
    train_ds, judged = build_training_data(cfg, sources, notes)

    model, train_info = train_model(cfg, base_path, dev, train_ds, out_dir, progress and main, judged)
    model_dir = out_dir / "model"
    if not main:
        return BiEncoderRunResult(out_dir, model_dir, None, None, train_info)
    if cfg.interpolate is None:
        with atomic_dir(model_dir) as tmp:
            model.save(str(tmp))
        shutil.rmtree(out_dir / "model-tuned", ignore_errors=True)  # an earlier interpolated run's
    else:
        _save_interpolated(model, base_path, cfg.interpolate, out_dir / "model-tuned", model_dir)
        train_info["interpolate"] = cfg.interpolate
    log.info("model saved to %s", model_dir)
    train_info["examples"] = notes.get("examples")
    train_info["false_negative_mask"] = notes.get("false_negative_mask")
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


def _save_interpolated(model, base_path: str, weight: float, tuned_dir: Path, model_dir: Path) -> None:
    """The fine-tuned weights to `tuned_dir`, then (1 - weight) * base + weight * tuned to `model_dir`."""
    from densekit.training.weight_interpolation import load_for_interpolation, write_interpolated

    base = load_for_interpolation(base_path, "base model")  # before writing anything: a bad base fails first
    with atomic_dir(tuned_dir) as tmp:
        model.save(str(tmp))
    write_interpolated(base, model, [(weight, model_dir)])


def training_arguments(cfg: BiEncoderRunConfig, device: str, out_dir: Path, progress: bool = False):
    """SentenceTransformerTrainingArguments of a run: no-duplicates batches within each
    dataset, and `data.sampling` choosing the dataset of each batch in pooled runs."""
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    from densekit.training.dataset_sampling import multi_dataset_sampler

    tc = cfg.train
    on_cuda = device.startswith("cuda")
    bf16 = False
    fp16 = False
    if on_cuda:
        import torch

        bf16 = torch.cuda.is_bf16_supported()
        fp16 = not bf16
    return SentenceTransformerTrainingArguments(
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
        multi_dataset_batch_sampler=multi_dataset_sampler(cfg.data.sampling, [d.weight for d in cfg.data.datasets]),
        use_cpu=not on_cuda,
        bf16=bf16,
        fp16=fp16,
        dataloader_num_workers=tc.dataloader_workers,
        disable_tqdm=not progress,
    )


def train_model(
    cfg: BiEncoderRunConfig, base_path: str, device: str, train_ds, out_dir: Path, progress: bool, judged: JudgedRelevance | None = None
):
    """Fine-tune with SentenceTransformerTrainer; returns (model, timing/loss figures).
    `train_ds` is a `Dataset`, or a `DatasetDict` for pooled runs (one dataset per batch)."""
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

    try:
        model = SentenceTransformer(base_path, device=device)
    except Exception as exc:
        raise ModelLoadError(f"cannot load base model '{cfg.model}': {exc}") from exc
    # A shorter limit while training saves compute; the saved model keeps its own limit.
    original_max_len = model.max_seq_length
    if cfg.train.max_seq_length:
        model.max_seq_length = cfg.train.max_seq_length
    args = training_arguments(cfg, device, out_dir, progress)
    loss = build_loss(cfg, model, judged)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_ds, loss=loss)
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    end_process_group()  # training was the only distributed work of the run
    history = list(trainer.state.log_history)
    steps = int(trainer.state.global_step)
    if is_main_process():
        write_training_log(history, out_dir / "train_log.jsonl")
        plot_loss_curve(
            history, out_dir / "loss_curve.png", title=f"{cfg.loss.name} on {_data_label(cfg)}", smooth=max(1, min(20, steps // 10))
        )
    losses = [r["loss"] for r in history if "loss" in r]
    info = {
        "steps": steps,
        "epochs": round(float(trainer.state.epoch or 0), 3),
        "rows": sum(len(d) for d in train_ds.values()) if isinstance(train_ds, dict) else len(train_ds),
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(steps, 1), 3),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_loss": float(result.training_loss),
    }
    model.max_seq_length = original_max_len
    return model, info


def _data_label(cfg: BiEncoderRunConfig) -> str:
    return " + ".join(src.label() for _, src in cfg.data.sources()) if cfg.data.datasets else (cfg.data.beir or "pairs")
