"""`densekit train distill-index` run config (YAML -> pydantic).

Example (runs/distill-scifact.yaml):

    data: scifact              # BEIR folder or name under DENSEKIT_DATA_DIR
    out: runs/scifact-distilled-16B
    model: default             # the bi-encoder whose corpus embeddings are indexed (frozen)
    queries: {source: split, split: train}   # or source: titles | sentences (pseudo-queries)
    index: {start_kind: opq-ivfpq, nlist: 64, pq_m: 16, pq_nbits: 8, nprobe: 8}
    train: {epochs: 8, batch_size: 32, teacher_topk: 32, random_negatives: 128}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DistillQueries(_Strict):
    source: Literal["split", "titles", "sentences"] = Field(
        "split",
        description="split: the queries of a qrels split (labels unused, only the texts); titles / sentences: "
        "pseudo-queries sampled from the corpus (document titles, or each document's first sentence) for corpora without queries",
    )
    split: str = Field("train", description="qrels split whose queries are used when source=split")
    max_queries: int | None = Field(None, ge=1, description="sample at most this many queries (seeded)")


class DistillIndex(_Strict):
    start_kind: Literal["opq-ivfpq", "ivfpq"] = "opq-ivfpq"
    nlist: int | None = Field(None, ge=1, description="inverted lists (default ~4*sqrt(n))")
    pq_m: int = Field(16, ge=1, description="PQ sub-quantisers: bytes per vector with 8-bit codes")
    pq_nbits: int = Field(8, ge=1, le=16)
    opq_niter: int = Field(25, ge=1)
    train_size: int | None = Field(None, ge=1, description="vectors sampled to train the start index")
    nprobe: int | None = Field(None, ge=1, description="default nprobe stored in the manifest")


class DistillTrain(_Strict):
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1, description="queries per step")
    teacher_topk: int = Field(32, ge=1, description="teacher's top-k documents of every query join the candidates")
    random_negatives: int = Field(128, ge=0, description="random corpus documents added to each step's candidates")
    # Defaults chosen on a dev split of SciFact train queries (BENCHMARKS.md, "Compressed indexes").
    lr_codebooks: float = Field(1e-3, gt=0)
    lr_centroids: float = Field(1e-3, gt=0)
    lr_schedule: Literal["constant", "linear"] = Field("linear", description="linear: decay both learning rates to 0 over the run")
    temperature: float = Field(0.05, gt=0, description="ListNet softmax temperature (cosine scores)")
    assign_temperature: float = Field(1.0, gt=0, description="straight-through softmax temperature, relative to each row's spread")
    ivf_loss_weight: float = Field(
        0.0,
        ge=0,
        description="weight of the coarse (list-selection) ListNet term on q.c; 0 = centroids learn only through the full score "
        "(on SciFact dev, weight 1 lowered recall@10 by 0.03-0.09 against weight 0)",
    )


class DistillVQConfig(_Strict):
    data: str
    out: str
    model: str = "default"
    device: str = "auto"
    seed: int = 1234
    queries: DistillQueries = Field(default_factory=DistillQueries)
    index: DistillIndex = Field(default_factory=DistillIndex)
    train: DistillTrain = Field(default_factory=DistillTrain)
