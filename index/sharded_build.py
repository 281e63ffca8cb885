"""A sharded index from embedding shards, by faiss's recipe for indexes that outgrow one
machine: train the quantiser once on a sample, then fill a copy of the trained empty index
with each shard's documents (in this process one after another, or as parallel Ray tasks).

Shard s holds the documents whose `shard_of(id, S)` is s, so an update can be routed to its
owner later. Each shard is an ordinary index folder; `sharded_manifest.json` ties them.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from densekit.atomic import atomic_dir, write_json_atomic
from densekit.errors import ConfigError, DatasetNotFoundError
from densekit.index import faiss_kinds
from densekit.index.embeddings_store import EmbeddingsFolder
from densekit.index.manifest import EncoderSpec
from densekit.index.shard_fill import ShardJob, build_one_shard
from densekit.index.sharded_manifest import SHARDED_MANIFEST, Routing, ShardedManifest, ShardEntry, shard_dir_name
from densekit.index.trained_checksum import trained_checksum

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
# Without an explicit train_size, quantisers train on every vector up to this many, and on a
# uniform sample of this many beyond (faiss advises 39-256 points per centroid).
DEFAULT_MAX_TRAIN = 1_000_000


def training_sample(emb: EmbeddingsFolder, train_size: int | None, seed: int) -> np.ndarray:
    """All vectors (float32, corpus order) up to the training size, else a uniform sample of rows."""
    n = emb.rows
    size = train_size if train_size is not None else min(n, DEFAULT_MAX_TRAIN)
    if size >= n:
        return emb.load_all()[1]
    rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    parts, start = [], 0
    for record, _, vecs in emb.shards():
        local = rows[(rows >= start) & (rows < start + record.rows)] - start
        parts.append(np.asarray(vecs[local], dtype=np.float32))
        start += record.rows
    return np.concatenate(parts)


def train_empty_index(kind: str, spec: EncoderSpec, build_params: dict[str, Any], sample: np.ndarray) -> faiss.Index:
    metric = faiss_kinds.metric_of(spec.similarity)
    index = faiss_kinds.make_index(kind, spec.dim, build_params, metric)
    faiss_kinds.train_index(index, sample, {k: v for k, v in build_params.items() if k != "train_size"})
    return index


def build_sharded(
    embeddings: str | Path,
    out: str | Path,
    shards: int,
    kind: str = "flat",
    build_params: dict[str, Any] | None = None,
    search_params: dict[str, Any] | None = None,
    corpus: str | Path | None = None,
    engine: str = "local",
    address: str | None = None,
    connect_timeout_s: float = 15.0,
) -> ShardedManifest:
    """Write a sharded index folder at `out` (atomically) from the embeddings folder. The
    documents' texts come from `corpus`, by default the corpus the embeddings record."""
    if engine not in ENGINES:
        raise ConfigError("engine", f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    if shards < 1:
        raise ConfigError("shards", f"must be at least 1, got {shards}")
    if kind == "distilled":
        raise ConfigError("kind", "a distilled index cannot be built from embedding shards yet; use kind ivfpq or opq-ivfpq")
    parsed = faiss_kinds.parse_build_params(kind, build_params).model_dump(exclude_none=True)
    faiss_kinds.parse_search_params(kind, search_params)
    if engine == "ray":
        from densekit.index.ray_cluster import connect, require_ray

        require_ray()
        connect(address, connect_timeout_s)
    emb = EmbeddingsFolder(embeddings)
    corpus_path = Path(corpus) if corpus is not None else Path(emb.manifest.corpus) if emb.manifest.corpus else None
    if corpus_path is None or not corpus_path.exists():
        raise DatasetNotFoundError(f"the documents of {embeddings} are not at {corpus_path}; name their corpus with --data")
    spec = emb.manifest.encoder
    n = emb.rows
    if kind in faiss_kinds.IVF_KINDS:
        # One nlist for every shard, from the whole collection's size.
        parsed["nlist"] = faiss_kinds.resolved_nlist(build_params, n)
    resolved_search = {**faiss_kinds.default_search_params(kind, parsed, n), **faiss_kinds.parse_search_params(kind, search_params)}
    t0 = time.perf_counter()
    sample = training_sample(emb, parsed.get("train_size"), int(parsed.get("seed", 1234))) if kind in faiss_kinds.IVF_KINDS else None
    trained = train_empty_index(kind, spec, parsed, sample if sample is not None else np.zeros((0, spec.dim), dtype=np.float32))
    train_s = time.perf_counter() - t0
    trained_bytes = faiss.serialize_index(trained)
    # The checksum of the index as every shard reads it back (faiss may name classes differently after a round trip).
    trained_sha = trained_checksum(faiss.deserialize_index(trained_bytes))
    out = Path(out)
    with atomic_dir(out) as tmp:
        jobs = [
            ShardJob(
                embeddings=str(Path(embeddings).resolve()),
                corpus=str(corpus_path.resolve()),
                shard=s,
                shards=shards,
                kind=kind,
                encoder=spec.model_dump(mode="json"),
                build_params=parsed,
                search_params=resolved_search,
                trained_sha256=trained_sha,
                out=str(tmp / shard_dir_name(s)),
            )
            for s in range(shards)
        ]
        if engine == "ray":
            from densekit.index.ray_engine import build_shards_on_ray

            entries = build_shards_on_ray(jobs, trained_bytes)
        else:
            entries = [build_one_shard(job, trained_bytes) for job in jobs]
        manifest = ShardedManifest(
            kind=kind,
            encoder=spec,
            metric=faiss_kinds.metric_name(trained.metric_type),
            faiss_description=faiss_kinds.describe(trained),
            build_params=parsed,
            search_params=resolved_search,
            trained_sha256=trained_sha,
            routing=Routing(shards=shards),
            shards=[ShardEntry.model_validate(e) for e in entries],
            doc_count=sum(e["doc_count"] for e in entries),
            build_time_s=round(time.perf_counter() - t0, 3),
            created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            extra={"train_s": round(train_s, 3), "engine": engine, "embeddings": str(embeddings), "corpus": str(corpus_path)},
        )
        write_json_atomic(tmp / SHARDED_MANIFEST, manifest.model_dump(mode="json"))
    return manifest
