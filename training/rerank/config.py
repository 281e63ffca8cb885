"""The `densekit train reranker` run config (YAML -> pydantic).

Example (an SFT-trained SmolLM2 with LoRA)::

    kind: llm                  # llm or cross-encoder
    model: smollm2             # base: hub name, folder, .gguf, or "smollm2"
    output_dir: runs/rerank/smollm2-sft
    seed: 0
    objective: sft             # llm: sft (yes/no CE) or cl (group softmax); cross-encoder: bce
    data:
      beir: scifact            # training queries and positives from its qrels ...
      beir_split: train        # ... of this split (never the split you evaluate on)
      pairs: []                # and/or {query, pos, neg} JSONL files
      max_queries: null
    negatives:                 # per query: dense top-k minus judged positives, plus random ones
      retriever: default       # bi-encoder used to mine
      top_k: 30
      hard: 3
      random: 1
    lora: {enabled: true, r: 16, alpha: 32, dropout: 0.05, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}
    train: {max_steps: 60, queries_per_batch: 2, learning_rate: 2.0e-4, warmup_ratio: 0.1, max_length: 256, save_steps: 20}
    eval: {beir: scifact, split: test, run: runs/eval-scifact-base/run.trec, top_n: 20, max_queries: 50}

Pooled training replaces `beir`/`pairs` by the bi-encoder's `datasets` list: negatives are
mined per dataset and every batch holds one dataset's groups. A dev split held out of each
dataset's training queries (or its own `dev` qrels) gives the learning curve::

    data:
      datasets:
        - {beir: scifact, weight: 2}
        - {beir: nfcorpus}                                    # has qrels/dev.tsv: its dev queries come from there
        - {name: wikiqa, pairs: [wikiqa/train_pairs.jsonl]}   # dev: held-out pairs, their own candidates
      sampling: weighted
    eval: {dev: {queries: 50, top_n: 20}, every_steps: 100}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator, model_validator

from densekit.settings import DEFAULT_MODEL
from densekit.training.dataset_sources import PooledDataConfig
from densekit.training.run_config import StrictConfig

_Strict = StrictConfig


class RerankDataConfig(PooledDataConfig):
    """Training queries and positives, from one source or a pooled `datasets` list; negatives
    of pairs files are used as given, a BEIR split's are mined (per dataset)."""


class NegativesConfig(_Strict):
    retriever: str = Field("default", description="bi-encoder that mines hard negatives (its top_k minus judged positives)")
    top_k: PositiveInt = Field(30, description="dense ranks hard negatives are drawn from")
    hard: int = Field(3, ge=0, le=64, description="hard negatives per query (random draw from the dense top_k)")
    random: int = Field(1, ge=0, le=64, description="random corpus negatives per query, mixed in as the paper does")
    reuse: str | None = Field(
        None, description="load this mined JSONL instead of mining again (pooled runs: `mined` on each datasets entry)"
    )

    @model_validator(mode="after")
    def _some(self):
        if self.hard + self.random == 0:
            raise ValueError("need at least one negative per query (hard + random > 0)")
        return self


class LoraConfig(_Strict):
    enabled: bool = Field(True, description="train LoRA adapters (peft); false = full fine-tuning")
    r: PositiveInt = 16
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


class RerankTrainConfig(_Strict):
    max_steps: PositiveInt = Field(60, description="optimizer steps")
    queries_per_batch: PositiveInt = Field(2, description="queries per step; each brings 1 positive + all its negatives")
    grad_accum: PositiveInt = Field(1, description="micro-batches per optimizer step")
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(256, ge=32, le=8192, description="tokens per (prompt, document); the document is what gets cut")
    temperature: float = Field(1.0, gt=0, description="cl: softmax temperature over z_yes")
    sft_reduction: Literal["sum_docs", "mean_docs"] = Field(
        "sum_docs", description="sft: sum (as in the paper) or mean over a query's documents"
    )
    batch_size: PositiveInt = Field(16, description="cross-encoder: (query, document) pairs per batch")
    head: Literal["mean", "cls"] = Field(
        "mean",
        description="cross-encoder: score from the mean of the token vectors (mean) or from BERT's [CLS] pooler with a classification head (cls)",
    )
    logging_steps: PositiveInt = 5
    save_steps: PositiveInt | None = Field(
        None,
        description="write a resumable checkpoint (weights, optimizer, scheduler, data position) to output_dir/checkpoints "
        "every N steps and at the end; `densekit train reranker --resume` continues from the latest (None: no checkpoints)",
    )
    save_total_limit: PositiveInt | None = Field(2, description="checkpoints kept, the oldest deleted first (None: keep all)")
    device: str = Field("auto", description="auto, cpu, cuda")
    bf16: bool = Field(
        False,
        description="llm: bfloat16 autocast (weights and optimizer stay float32); ~2x faster on CPUs with avx512_bf16 and on recent GPUs",
    )
    max_doc_tokens: PositiveInt | None = Field(
        None,
        description="llm: cut each document to this many tokens (within max_length), in training and at inference (the model "
        "folder records it); shorter prompts train faster where the start of a document carries its meaning",
    )
    pack_window: PositiveInt | None = Field(
        None,
        description="llm: sort each window of this many batches (of one dataset) by prompt length, then shuffle the batches "
        "(seeded): less padding per batch, the same draws; None: batches in draw order",
    )


class DevConfig(_Strict):
    """Dev queries for the learning curve, never trained on."""

    queries: PositiveInt | None = Field(50, description="dev queries per dataset, a seeded draw held out of its training queries")
    fraction: float | None = Field(None, gt=0, lt=1, description="instead of `queries`: this fraction of each dataset's training queries")
    split: str | None = Field(
        "dev",
        description="a BEIR dataset with qrels for this split (NFCorpus) draws its dev queries there and keeps all its training "
        "queries (None: always hold out training queries)",
    )
    top_n: PositiveInt = Field(20, description="first-stage (dense) hits reranked per dev query")
    at_start: bool = Field(True, description="also evaluate before the first step (the curve's starting point)")
    batch_size: PositiveInt = Field(32, description="pairs per forward pass while evaluating")

    @model_validator(mode="after")
    def _one_size(self):
        if self.fraction is not None and "queries" in self.model_fields_set and self.queries is not None:
            raise ValueError("give eval.dev.queries or eval.dev.fraction, not both")
        if self.fraction is None and self.queries is None:
            raise ValueError("give eval.dev.queries or eval.dev.fraction")
        return self

    def size(self, available: int) -> int:
        """Dev queries drawn out of `available` candidates (at least 1 when any)."""
        if self.fraction is not None:
            return min(available, max(1, round(self.fraction * available)))
        return min(available, self.queries or 0)


class RerankEvalConfig(_Strict):
    beir: str | None = Field(None, description="BEIR folder or name to evaluate reranking on (None: no eval)")
    split: str = "test"
    run: str | None = Field(None, description="first-stage TREC run to rerank (default: dense retrieval with negatives.retriever)")
    top_n: PositiveInt = Field(20, description="first-stage hits reranked per query")
    max_queries: PositiveInt | None = Field(None, description="fixed subset of evaluation queries (the first N by sorted id)")
    before: bool = Field(True, description="also evaluate the base model before training")
    batch_size: PositiveInt = 8
    dtype: str = Field("auto", description="reranker dtype at eval: auto (float32 on CPU), float32, bfloat16, float16")
    dev: DevConfig | None = Field(None, description="held-out dev queries per training dataset, for the learning curve (None: no curve)")
    every_steps: PositiveInt | None = Field(
        None, description="rerank the dev queries every N steps (and after the last): learning_curve.json and .png in output_dir"
    )

    @model_validator(mode="after")
    def _curve_needs_dev(self):
        if self.every_steps is not None and self.dev is None:
            raise ValueError("eval.every_steps needs eval.dev (the queries the curve is measured on)")
        return self


class RerankerRunConfig(_Strict):
    kind: Literal["llm", "cross-encoder"] = "llm"
    model: str | None = Field(
        None,
        description="base model: hub name, folder or .gguf file; default 'smollm2' (llm) or the default bi-encoder's weights (cross-encoder)",
    )
    output_dir: str
    seed: int = 0
    objective: Literal["sft", "cl", "bce"] | None = Field(
        None, validate_default=True, description="llm: sft (default) or cl; cross-encoder: bce (default)"
    )
    instruction: str | None = Field(None, description="llm: task instruction in the prompt (default: a generic relevance one)")
    data: RerankDataConfig
    negatives: NegativesConfig = Field(default_factory=NegativesConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train: RerankTrainConfig = Field(default_factory=RerankTrainConfig)
    eval: RerankEvalConfig = Field(default_factory=RerankEvalConfig)

    def base_model(self) -> str:
        return self.model or ("smollm2" if self.kind == "llm" else DEFAULT_MODEL)

    @model_validator(mode="after")
    def _pooled_reuse(self):
        if self.negatives.reuse and self.data.datasets:
            raise ValueError("negatives.reuse holds one dataset's groups; in a pooled run set `mined` on each data.datasets entry")
        return self

    @field_validator("objective")
    @classmethod
    def _objective_fits_kind(cls, v, info: ValidationInfo):
        kind = info.data.get("kind", "llm")
        if v is None:
            return "sft" if kind == "llm" else "bce"
        if kind == "llm" and v not in ("sft", "cl"):
            raise ValueError(f"'{v}' is for cross-encoders; an llm reranker trains with sft or cl")
        if kind == "cross-encoder" and v != "bce":
            raise ValueError(f"'{v}' is for llm rerankers; a cross-encoder trains with bce")
        return v
