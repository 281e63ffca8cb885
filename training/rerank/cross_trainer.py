"""Train a BERT-style cross-encoder with sentence-transformers' CrossEncoder trainer.

No cross-encoder weights ship offline, so densekit trains its own from the packaged
all-MiniLM-L6-v2 encoder (a fresh 1-logit head on top), on the same mined groups the LLM
rerankers use, each (query, document) a row labelled 1 or 0, with binary cross-entropy
(sentence-transformers' `BinaryCrossEntropyLoss`, its recommended loss for hard-negative
pointwise data).

The head reads the mean of the token vectors by default (`train.head: mean`), not BERT's
[CLS] pooler: all-MiniLM-L6-v2 was trained as a mean-pooling bi-encoder, so its mean vector
already carries meaning while its [CLS] pooler is untrained, and a linear head on the mean
starts learning at once where the [CLS] head sat at chance loss for a whole short run
(BENCHMARKS.md, "Rerankers"). `head: cls` builds the classic sequence-classification model.

A pooled run (`data.datasets`) hands the trainer one row set per dataset (a `DatasetDict`)
and the bi-encoder's multi-dataset batch sampler (`training/dataset_sampling.py`), so every
batch holds one dataset's rows. With a dev split, `learning_curve.DevCurveCallback` reranks
the dev queries with the model being trained every `eval.every_steps`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

from densekit.atomic import atomic_dir
from densekit.training.ddp import world_size
from densekit.training.rerank.checkpoints import checkpoints_dir
from densekit.training.rerank.config import RerankerRunConfig
from densekit.training.rerank.learning_curve import DevCurveCallback, LearningCurve
from densekit.training.rerank.train_data import RerankGroup


def _rows(groups: list[RerankGroup], num_neg: int, seed: int) -> dict[str, list]:
    rng = random.Random(seed)
    q, d, y = [], [], []
    for i, g in enumerate(groups):
        pos, negs = g.sample(i, num_neg, rng)
        for text, label in [(pos, 1.0)] + [(n, 0.0) for n in negs]:
            q.append(g.query)
            d.append(text)
            y.append(label)
    return {"query": q, "document": d, "label": y}


def _base_cross_encoder(path: str, head: str, max_length: int, device: str):
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.sentence_transformer.modules import Pooling

    if head == "cls":
        return CrossEncoder(path, num_labels=1, max_length=max_length, device=device)
    body = Transformer(path, transformer_task="feature-extraction", max_seq_length=max_length)
    dim = body.get_embedding_dimension()
    # A raw logit out ("scores"); CrossEncoder applies the sigmoid for one label.
    return CrossEncoder(
        modules=[body, Pooling(dim, "mean"), Dense(dim, 1, activation_function=None, module_output_name="scores")], device=device
    )


def train_cross_encoder(
    cfg: RerankerRunConfig,
    groups: list[RerankGroup],
    model_dir: Path,
    log: Callable[[str], None] = print,
    progress: bool = True,
    resume_from: Path | None = None,
    curve: LearningCurve | None = None,
) -> list[dict]:
    """Train (from scratch, or from the checkpoint `resume_from`) and save to `model_dir` on
    rank 0; checkpoints, when `train.save_steps` is set, go to `model_dir.parent / "checkpoints"`;
    with `curve`, the dev queries are measured as it trains."""
    trainer = build_cross_trainer(cfg, groups, model_dir, log=log, progress=progress, curve=curve)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if trainer.is_world_process_zero():
        with atomic_dir(model_dir) as tmp:
            trainer.model.save(str(tmp))
        log(f"model saved to {model_dir}")
    return list(trainer.state.log_history)


def build_cross_trainer(
    cfg: RerankerRunConfig,
    groups: list[RerankGroup],
    model_dir: Path,
    log: Callable[[str], None] = print,
    progress: bool = True,
    curve: LearningCurve | None = None,
):
    """The CrossEncoderTrainer of a run: model, rows (one set per dataset when pooled), loss, sampler."""
    import torch
    from datasets import Dataset, DatasetDict
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import TrainerCallback

    from densekit.devices import resolve_device
    from densekit.models import resolve_encoder_name

    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.train.device)
    model = _base_cross_encoder(resolve_encoder_name(cfg.base_model()), cfg.train.head, cfg.train.max_length, device)
    num_neg = cfg.negatives.hard + cfg.negatives.random
    sampler: dict = {}
    train_ds: Dataset | DatasetDict
    if cfg.data.datasets:
        from densekit.training.dataset_sampling import multi_dataset_sampler

        sources = [src for _, src in cfg.data.sources()]
        parts = {
            src.label(): Dataset.from_dict(_rows([g for g in groups if g.dataset == src.label()], num_neg, cfg.seed)) for src in sources
        }
        train_ds = DatasetDict(parts)
        sampler = {"multi_dataset_batch_sampler": multi_dataset_sampler(cfg.data.sampling, [src.weight for src in sources])}
        sizes = ", ".join(f"{name} {len(part)}" for name, part in parts.items())
        log(f"cross-encoder rows per dataset: {sizes}; {num_neg} negatives per positive; batches drawn {cfg.data.sampling}")
    else:
        rows = _rows(groups, num_neg, cfg.seed)
        train_ds = Dataset.from_dict(rows)
        log(f"cross-encoder rows: {len(train_ds)} ({sum(rows['label']):.0f} positive), {num_neg} negatives per positive")
    # Positives are 1 in 1 + num_neg rows: weigh them up so both classes pull equally.
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(num_neg)))
    args = CrossEncoderTrainingArguments(
        output_dir=str(checkpoints_dir(model_dir.parent)),
        max_steps=cfg.train.max_steps,
        per_device_train_batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.learning_rate,
        weight_decay=cfg.train.weight_decay,
        warmup_steps=math.ceil(cfg.train.warmup_ratio * cfg.train.max_steps),  # warmup_ratio is deprecated in transformers 5
        logging_steps=cfg.train.logging_steps,
        save_strategy="steps" if cfg.train.save_steps else "no",
        save_steps=cfg.train.save_steps or 500,
        save_total_limit=cfg.train.save_total_limit,
        report_to="none",
        seed=cfg.seed,
        disable_tqdm=not progress,
        use_cpu=device == "cpu",
        bf16=cfg.train.bf16,
        dataloader_num_workers=0,
        ddp_backend=("gloo" if device == "cpu" else None) if world_size() > 1 else None,
        **sampler,
    )
    callbacks: list[TrainerCallback] = []
    if curve is not None and cfg.eval.dev is not None:
        callbacks.append(DevCurveCallback(curve, _dev_reranker(cfg), cfg.eval.dev.at_start, log))
    return CrossEncoderTrainer(model=model, args=args, train_dataset=train_ds, loss=loss, callbacks=callbacks)


def _dev_reranker(cfg: RerankerRunConfig) -> Callable:
    """The model being trained as the reranker its folder will serve."""
    from densekit.rerankers.cross_encoder import CrossEncoderReranker

    batch_size = cfg.eval.dev.batch_size if cfg.eval.dev else 32
    return lambda model: CrossEncoderReranker(model, name="training", batch_size=batch_size)
