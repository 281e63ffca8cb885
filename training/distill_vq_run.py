"""`densekit train distill-index`: corpus embeddings -> start IVF-PQ -> Distill-VQ -> index folder.

Writes an ordinary densekit index folder (kind "distilled": a plain faiss IndexIVFPQ, inside
an IndexPreTransform when OPQ is used) plus, next to it inside the folder,
`resolved_config.yaml` and `distill_history.json`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from densekit.atomic import write_text_atomic
from densekit.errors import ConfigError
from densekit.training.distill_vq_config import DistillQueries, DistillVQConfig


@dataclass
class DistillResult:
    index_dir: Path
    n_docs: int
    n_queries: int
    query_source: str
    history: dict
    start_build_s: float


def training_queries(folder: Path, corpus: dict, cfg: DistillQueries, seed: int) -> list[str]:
    """Query texts for distillation. Labels are never used: only the texts of a split's
    queries, or pseudo-queries drawn from the corpus when there are no queries."""
    if cfg.source == "split":
        from densekit.data import load_beir

        texts = list(load_beir(folder, cfg.split, corpus=corpus).queries.values())
    elif cfg.source == "titles":
        texts = sorted({(d.get("title") or "").strip() for d in corpus.values()} - {""})
    else:
        texts = []
        for d in corpus.values():
            first = re.split(r"(?<=[.!?])\s+", (d.get("text") or "").strip(), maxsplit=1)[0]
            if len(first.split()) >= 3:
                texts.append(first[:300])
    if not texts:
        raise ConfigError("queries.source", f"no {cfg.source} queries found in {folder}")
    if cfg.max_queries and len(texts) > cfg.max_queries:
        rows = np.random.default_rng(seed).choice(len(texts), size=cfg.max_queries, replace=False)
        texts = [texts[i] for i in sorted(rows)]
    return texts


def start_build_params(cfg: DistillVQConfig) -> dict:
    ix = cfg.index
    p = {"pq_m": ix.pq_m, "pq_nbits": ix.pq_nbits, "seed": cfg.seed}
    if ix.nlist:
        p["nlist"] = ix.nlist
    if ix.train_size:
        p["train_size"] = ix.train_size
    if ix.start_kind == "opq-ivfpq":
        p["opq_niter"] = ix.opq_niter
    return p


def distill_faiss_index(
    doc_vecs: np.ndarray,
    query_vecs: np.ndarray,
    cfg: DistillVQConfig,
    device: str = "cpu",
    progress: bool = True,
):
    """(start faiss index, trained quantizer, empty exported faiss index, history) from vectors."""
    from densekit.index import faiss_kinds
    from densekit.training.distill_vq import IVFPQQuantizer
    from densekit.training.distill_vq_train import distill_quantizer

    params = start_build_params(cfg)
    start = faiss_kinds.make_index(cfg.index.start_kind, doc_vecs.shape[1], params, n_train=len(doc_vecs))
    faiss_kinds.train_index(start, doc_vecs, params)
    quantizer = IVFPQQuantizer.from_faiss(start, assign_temperature=cfg.train.assign_temperature)
    history = distill_quantizer(quantizer, doc_vecs, query_vecs, cfg.train, seed=cfg.seed, device=device, progress=progress)
    return start, quantizer, quantizer.export_faiss(), history


def run_distill(
    cfg: DistillVQConfig, resolve_data: Callable[[str], Path], device: str | None = None, progress: bool = True
) -> DistillResult:
    from densekit.data import load_corpus
    from densekit.devices import resolve_device
    from densekit.encoder import Encoder
    from densekit.index import faiss_kinds
    from densekit.index.dense_index import DenseIndex, encode_corpus
    from densekit.index.manifest import EncoderSpec
    from densekit.training.run_config import write_resolved_config

    dev = resolve_device(device or cfg.device)
    folder = resolve_data(cfg.data)
    corpus = load_corpus(folder)
    texts = training_queries(folder, corpus, cfg.queries, cfg.seed)  # fail on bad queries before encoding
    enc = Encoder.from_settings(model=cfg.model, device=dev)
    doc_ids = list(corpus.keys())
    doc_vecs = encode_corpus(enc, corpus, doc_ids, progress=progress)
    query_vecs = enc.encode_queries(texts, progress=progress)
    t0 = time.perf_counter()
    _, quantizer, exported, history = distill_faiss_index(doc_vecs, query_vecs, cfg, device=dev, progress=progress)
    total_s = time.perf_counter() - t0
    # The same spec as any index build, runtime included (an ONNX encoder's index says so).
    spec = EncoderSpec.of(enc)
    build_params = {
        **start_build_params(cfg),
        "nlist": quantizer.nlist,
        "opq": cfg.index.start_kind == "opq-ivfpq",
        "distill": {**cfg.train.model_dump(), "queries": cfg.queries.model_dump(), "n_queries": len(texts)},
    }
    search = {"nprobe": cfg.index.nprobe} if cfg.index.nprobe else None
    idx = DenseIndex.build(
        doc_vecs, corpus, doc_ids, spec, kind="distilled", build_params=build_params, search_params=search, trained_index=exported
    )
    # build time of a distilled index = start index + distillation + adding the corpus
    idx.manifest.build_time_s = round(total_s + (idx.manifest.build_time_s or 0.0), 3)
    idx.manifest.extra["source"] = str(folder)
    idx.manifest.extra["distill_history"] = history.as_dict()
    out = Path(cfg.out)
    with idx:
        idx.save(out)
    write_resolved_config(cfg, out, {"device": dev})
    write_text_atomic(out / "distill_history.json", json.dumps(history.as_dict(), indent=2) + "\n")
    assert faiss_kinds.describe(idx.faiss)
    return DistillResult(out, len(doc_ids), len(texts), cfg.queries.source, history.as_dict(), total_s)
