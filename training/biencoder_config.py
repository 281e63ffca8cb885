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

Pooled training over several datasets replaces `beir`/`pairs` by a list; every batch then
comes from one dataset (no cross-dataset in-batch negatives)::

    data:
      datasets:
        - {beir: scifact}                            # train qrels, negatives mined
        - {beir: nfcorpus, weight: 0.5}
        - {name: wikiqa, pairs: [wikiqa/train_pairs.jsonl]}   # no train qrels: its pairs file
      sampling: proportional   # | round_robin | weighted (by each entry's weight)
      num_negatives: 1

A relative `pairs` path that is not a file from the working directory is looked up under
DENSEKIT_DATA_DIR, as dataset names are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator, model_validator

from densekit.errors import ConfigError
from densekit.settings import DEFAULT_MODEL
from densekit.training.dataset_sources import SAMPLING, DatasetSource, PooledDataConfig, check_source_paths  # noqa: F401  (re-exported)
from densekit.training.mining import MiningParams
from densekit.training.run_config import StrictConfig

_Strict = StrictConfig


class DataConfig(PooledDataConfig):
    num_negatives: int = Field(1, ge=0, le=64, description="hard-negative columns per training row (0: in-batch negatives only)")


class MiningConfig(_Strict):
    enabled: bool = Field(False, description="mine hard negatives for the BEIR pairs with the base model before training")
    rank_start: int = Field(10, ge=0, description="first rank (0-based) of the window negatives are drawn from")
    # validate_default: a rank_start past the default end must fail even when rank_end is left out
    rank_end: int = Field(100, ge=1, validate_default=True, description="end (exclusive) of the rank window")
    margin: float | None = Field(
        0.05,
        ge=0,
        description="absolute margin (sentence-transformers' absolute_margin): skip candidates scoring above "
        "(positive score - margin), likely unjudged positives; null: off",
    )
    relative_margin: float | None = Field(
        None,
        ge=0,
        le=1,
        description="skip candidates scoring above (positive score - |positive score| x relative_margin), i.e. above "
        "(1 - relative_margin) x a non-negative positive score (sentence-transformers' relative_margin; 0.05 is "
        "NV-Retriever's best); null: off",
    )
    max_score: float | None = Field(None, description="skip candidates scoring above this, whatever the positive scores; null: off")
    positive_reference: Literal["best", "weakest"] = Field(
        "best",
        description="which judged positive's score the margins are taken from: the best (default) or the weakest "
        "(sentence-transformers' choice; with many graded positives, as NFCorpus has, it empties most windows)",
    )
    num_negatives: int = Field(4, ge=1, le=256, description="negatives kept per query in the mined file")
    sampling: Literal["random", "top"] = Field("random", description="draw from the window at random (seeded) or take its top")
    fill_short: Literal["random", "none"] = Field(
        "random",
        description="queries left with too few negatives get random corpus documents (none: they are dropped when data.num_negatives > 0)",
    )
    reuse: str | None = Field(None, description="load this mined JSONL instead of mining again")
    batch_size: PositiveInt | None = Field(None, description="encoding batch size (default: the batch_size setting, DENSEKIT_BATCH_SIZE)")

    def params(self, seed: int) -> MiningParams:
        """The miner's parameters for this section; `seed` is the run's, so a re-run mines the same negatives."""
        return MiningParams(
            self.rank_start,
            self.rank_end,
            self.margin,
            self.num_negatives,
            self.sampling,
            seed,
            self.fill_short,
            relative_margin=self.relative_margin,
            max_score=self.max_score,
            positive_reference=self.positive_reference,
        )

    @field_validator("rank_end")
    @classmethod
    def _window(cls, rank_end: int, info: ValidationInfo) -> int:
        # a field validator, so the error names rank_end (the YAML key, or --rank-end on the command line)
        rank_start = info.data.get("rank_start")
        if rank_start is not None and rank_end <= rank_start:
            raise ValueError(f"rank_end ({rank_end}) must be greater than rank_start ({rank_start})")
        return rank_end


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
    mask_false_negatives: bool | None = Field(
        None,
        description="leave out of each query's negatives the batch passages judged relevant to it, with its positive's "
        "text, or from another dataset; null: on when a source has qrels (data.beir / a datasets entry with beir)",
    )

    def mask_enabled(self, data: DataConfig) -> bool:
        """The resolved mask setting. Auto: on with qrels, where in-batch passages judged relevant
        to another row's query are common (NFCorpus judges ~40 documents per query); with
        pairs files alone the only judgements are each row's own positives, which no-duplicates
        batches already keep apart, so the mask could not change the loss."""
        if self.mask_false_negatives is not None:
            return self.mask_false_negatives
        return any(src.beir for _, src in data.sources())

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
    interpolate: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="WiSE-FT: save (1 - w) * base + w * fine-tuned as model/ (the fine-tuned weights in model-tuned/); "
        "null: the fine-tuned model itself. Choose w on a dev split (densekit train interpolate)",
    )

    @model_validator(mode="after")
    def _mining_needs_beir(self):
        if self.mining.enabled and not any(src.beir for _, src in self.data.sources()):
            raise ValueError("mining.enabled needs data.beir or a datasets entry with beir (negatives are mined from its corpus)")
        if self.mining.reuse and self.data.datasets:
            raise ValueError("mining.reuse holds one dataset's negatives; pooled runs (data.datasets) mine each dataset")
        return self


def check_paths(cfg: BiEncoderRunConfig, resolve_data) -> dict[str, Path]:
    """Every input must exist before any work starts; returns the resolved folders and files,
    keyed by config field (``data.beir``, ``data.datasets.2.beir``, ``data.pairs.0``, ``eval.beir``).
    `resolve_data(name)` maps a dataset name or folder to a folder or raises."""
    from densekit.models import resolve_encoder_name

    out = check_source_paths(cfg.data, resolve_data)
    if cfg.eval.beir:
        try:
            out["eval.beir"] = resolve_data(cfg.eval.beir)
        except Exception as exc:
            raise ConfigError("eval.beir", str(exc)) from None
        if not (out["eval.beir"] / "qrels" / f"{cfg.eval.split}.tsv").is_file():
            raise ConfigError("eval.split", f"no qrels file for split '{cfg.eval.split}' in {out['eval.beir']}")
    if cfg.mining.reuse and not Path(cfg.mining.reuse).expanduser().is_file():
        raise ConfigError("mining.reuse", f"file not found: {cfg.mining.reuse}")
    resolved = resolve_encoder_name(cfg.model)
    looks_local = cfg.model.startswith((".", "/", "~")) or Path(cfg.model).expanduser().exists()
    if looks_local and not Path(resolved).exists():
        raise ConfigError("model", f"model folder not found: {cfg.model}")
    return out
