"""The quality guard of `densekit export`: an exported model against its source.

Two checks: the cosine between the source's and the export's embeddings on a held-aside
sample (texts the calibration did not see: queries and the corpus's last documents, since
calibration reads documents from the start), and nDCG@10 of both on a dataset. An export whose
nDCG@10 drops more than the allowed amount is refused (ExportQualityError) unless forced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from densekit.errors import ConfigError, ExportQualityError

DEFAULT_MAX_NDCG_DROP = 0.005
SAMPLE_SIZE = 64
# Used for the cosine check when no dataset is given.
FALLBACK_SAMPLE = [
    "what is the capital of France?",
    "Paris is the capital and largest city of France.",
    "dense retrieval encodes queries and documents into vectors",
    "Dogs were domesticated from wolves thousands of years ago.",
    "faiss is a library for efficient similarity search of dense vectors",
    "a",
    "The mitochondria is the powerhouse of the cell, producing ATP through oxidative phosphorylation.",
    "int8 quantisation trades a little accuracy for speed on CPUs",
]


@dataclass
class ExportQuality:
    sample_size: int
    cosine_mean: float | None
    cosine_min: float | None
    dataset: str | None = None
    ndcg_source: float | None = None
    ndcg_export: float | None = None
    ndcg_drop: float | None = None
    max_ndcg_drop: float = DEFAULT_MAX_NDCG_DROP
    forced: bool = False
    passed: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def held_aside_sample(dataset: Any | None, size: int = SAMPLE_SIZE) -> list[str]:
    if dataset is None:
        return list(FALLBACK_SAMPLE)
    from densekit.data.beir import document_text

    queries = list(dataset.queries.values())[: size // 2]
    docs = [document_text(d) for d in list(dataset.corpus.values())[-(size - len(queries)) :]]
    return queries + docs


def _rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


def _ndcg10(encoder: Any, dataset: Any) -> float:
    from densekit.eval.evaluate import evaluate_encoder

    return float(evaluate_encoder(encoder, dataset, top_k=100, progress=False).metrics["ndcg@10"])


def check_bi_encoder_export(
    source: str | Path,
    exported: str | Path,
    data: str | Path | None = None,
    max_ndcg_drop: float = DEFAULT_MAX_NDCG_DROP,
    force: bool = False,
) -> ExportQuality:
    """Compare the export at `exported` with the torch fp32 model at `source`. Raises
    ExportQualityError when nDCG@10 on `data` (a BEIR folder) drops more than `max_ndcg_drop`,
    unless `force`; the returned record says whether it passed and whether it was forced."""
    from densekit.data.beir import load_beir
    from densekit.encoder import Encoder

    if max_ndcg_drop < 0:
        raise ConfigError("max_ndcg_drop", f"must be at least 0, got {max_ndcg_drop}")
    dataset = load_beir(data) if data is not None else None
    src = Encoder(str(source), device="cpu", backend="torch", precision="fp32")
    exp = Encoder(str(exported), device="cpu")
    sample = held_aside_sample(dataset)
    cos = _rowwise_cosine(src.encode(sample), exp.encode(sample))
    quality = ExportQuality(
        sample_size=len(sample),
        cosine_mean=float(cos.mean()),
        cosine_min=float(cos.min()),
        max_ndcg_drop=max_ndcg_drop,
        forced=force,
    )
    if dataset is not None:
        quality.dataset = str(data)
        quality.ndcg_source = _ndcg10(src, dataset)
        quality.ndcg_export = _ndcg10(exp, dataset)
        quality.ndcg_drop = quality.ndcg_source - quality.ndcg_export
        quality.passed = quality.ndcg_drop <= max_ndcg_drop
    if not quality.passed and not force:
        raise ExportQualityError(
            f"the {exp.runtime} export loses {quality.ndcg_drop:.4f} nDCG@10 on {data} "
            f"({quality.ndcg_source:.4f} -> {quality.ndcg_export:.4f}; allowed: {max_ndcg_drop}); --force writes it anyway",
            ndcg_drop=float(quality.ndcg_drop or 0.0),
        )
    return quality


def check_cross_encoder_export(source: str | Path, exported: str | Path) -> ExportQuality:
    """Score agreement of an exported cross-encoder with its source on sample pairs (the
    cosine fields hold the cosine between the two score vectors, centred)."""
    from densekit.rerankers.cross_encoder import CrossEncoderReranker

    src = CrossEncoderReranker.load(str(source), device="cpu", dtype="float32", backend="torch", precision="fp32")
    exp = CrossEncoderReranker.load(str(exported), device="cpu")
    pairs = [(FALLBACK_SAMPLE[i], FALLBACK_SAMPLE[j]) for i in range(len(FALLBACK_SAMPLE)) for j in range(len(FALLBACK_SAMPLE))]
    a = np.asarray(src.score_pairs(pairs))
    b = np.asarray(exp.score_pairs(pairs))
    a, b = a - a.mean(), b - b.mean()
    cos = float((a * b).sum() / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
    return ExportQuality(sample_size=len(pairs), cosine_mean=cos, cosine_min=cos)
