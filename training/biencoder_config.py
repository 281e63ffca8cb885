"""The `densekit train biencoder` run config (YAML -> pydantic).

Example (every field but `output_dir` and one data source has a default)::

    model: all-MiniLM-L6-v2
    output_dir: runs/ft-scifact-mw
    seed: 42
    data:
      beir: scifact            # folder, or a name under DENSEKIT_DATA_DIR
      beir_split: train
      pairs: []                # extra {query, pos, neg} JSONL files, mixed in
      num_negatives: 1         # hard-negative columns per row
    mining: {enabled: true, rank_start: 10, rank_end: 100, margin: 0.05, num_negatives: 4}
    loss: {name: mw, temperature: 0.01, reduction: sum}
    train: {batch_size: 32, max_steps: 200, learning_rate: 2.0e-5, warmup_ratio: 0.1}
    eval: {beir: scifact, split: test}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from densekit.errors import ConfigError
from densekit.settings import DEFAULT_MODEL
from densekit.training.run_config import StrictConfig, TrainingSourceConfig

_Strict = StrictConfig


class DataConfig(TrainingSourceConfig):
    num_negatives: int = Field(1, ge=0, le=64, description="hard-negative columns per training row (0: in-batch negatives only)")


class MiningConfig(_Strict):
    enabled: bool = Field(False, description="mine hard negatives for the BEIR pairs with the base model before training")
    rank_start: int = Field(10, ge=0, description="first rank (0-based) of the window negatives are drawn from")
    rank_end: int = Field(100, ge=1, description="end (exclusive) of the rank window")
    margin: float = Field(0.05, ge=0, description="skip candidates scoring above (best positive score - margin): likely unjudged positives")
    num_negatives: int = Field(4, ge=1, le=256, description="negatives kept per query in the mined file")
    sampling: Literal["random", "top"] = Field("random", description="draw from the window at random (seeded) or take its top")
    fill_short: Literal["random", "none"] = Field(
        "random",
        description="queries left with too few negatives get random corpus documents (none: they are dropped when data.num_negatives > 0)",
    )
    reuse: str | None = Field(None, description="load this mined JSONL instead of mining again")
    batch_size: PositiveInt | None = Field(None, description="encoding batch size (default: the batch_size setting, DENSEKIT_BATCH_SIZE)")

    @model_validator(mode="after")
    def _window(self):
        if self.rank_end <= self.rank_start:
            raise ValueError(f"rank_end ({self.rank_end}) must be greater than rank_start ({self.rank_start})")
        return self


class LossConfig(_Strict):
    name: Literal["infonce", "mw", "dcl"] = "infonce"
    temperature: float | None = Field(None, description="tau; default 0.05 for infonce/dcl, 0.01 for mw (the paper's)")
    symmetric: bool = Field(False, description="infonce/dcl: add the passage-to-query term")
    reduction: Literal["sum", "mean"] = Field("sum", description="mw: sum over negatives (paper) or mean")
    similarity: Literal["cosine", "dot"] = "cosine"
    gather_across_devices: bool = Field(
        False,
        description="under torchrun/accelerate (DDP): all-gather in-batch embeddings from every process, with gradients, "
        "so each query meets the whole global batch's passages as negatives",
    )

    @field_validator("temperature")
    @classmethod
    def _positive(cls, v):
        if v is not None and not v > 0:
            raise ValueError(f"must be > 0, got {v}")
        return v

    def resolved_temperature(self) -> float:
        if self.temperature is not None:
            return self.temperature
        return 0.01 if self.name == "mw" else 0.05


class TrainConfig(_Strict):
    batch_size: PositiveInt = 32
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="overrides epochs when set")
    learning_rate: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    lr_scheduler: str = "linear"
    max_seq_length: PositiveInt | None = Field(None, description="token limit while training (documents and queries); default: the model's")
    logging_steps: PositiveInt = 1
    save_checkpoints: bool = Field(False, description="keep trainer checkpoints (off: only the final model is written)")
    dataloader_workers: int = Field(0, ge=0)


class EvalConfig(_Strict):
    beir: str | None = Field(None, description="BEIR folder evaluated before and after training (None: skip)")
    split: str = "test"
    before: bool = True
    after: bool = True
    top_k: PositiveInt = 1000
    max_seq_length: PositiveInt | None = Field(None, description="encoding limit at evaluation; default: the model's own")


class BiEncoderRunConfig(_Strict):
    model: str = Field(DEFAULT_MODEL, description="base bi-encoder: hub name or local folder")
    output_dir: str
    seed: int = 42
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    data: DataConfig
    mining: MiningConfig = Field(default_factory=MiningConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _mining_needs_beir(self):
        if self.mining.enabled and not self.data.beir:
            raise ValueError("mining.enabled needs data.beir (negatives are mined from its corpus)")
        return self


def check_paths(cfg: BiEncoderRunConfig, resolve_data) -> dict[str, Path]:
    """Every input must exist before any work starts; returns the resolved folders.
    `resolve_data(name)` maps a dataset name or folder to a folder or raises."""
    from densekit.models import resolve_encoder_name

    out: dict[str, Path] = {}
    for field, value in (("data.beir", cfg.data.beir), ("eval.beir", cfg.eval.beir)):
        if value:
            try:
                out[field] = resolve_data(value)
            except Exception as exc:  # DatasetNotFoundError and friends
                raise ConfigError(field, str(exc)) from None
    if cfg.data.beir:
        split_file = out["data.beir"] / "qrels" / f"{cfg.data.beir_split}.tsv"
        if not split_file.is_file():
            raise ConfigError("data.beir_split", f"no qrels file {split_file}")
    if cfg.eval.beir and not (out["eval.beir"] / "qrels" / f"{cfg.eval.split}.tsv").is_file():
        raise ConfigError("eval.split", f"no qrels file for split '{cfg.eval.split}' in {out['eval.beir']}")
    for i, p in enumerate(cfg.data.pairs):
        if not Path(p).expanduser().is_file():
            raise ConfigError(f"data.pairs.{i}", f"file not found: {p}")
    if cfg.mining.reuse and not Path(cfg.mining.reuse).expanduser().is_file():
        raise ConfigError("mining.reuse", f"file not found: {cfg.mining.reuse}")
    resolved = resolve_encoder_name(cfg.model)
    looks_local = cfg.model.startswith((".", "/", "~")) or Path(cfg.model).expanduser().exists()
    if looks_local and not Path(resolved).exists():
        raise ConfigError("model", f"model folder not found: {cfg.model}")
    return out
