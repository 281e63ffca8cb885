"""One shard of a sharded index: a copy of the trained empty index filled with the documents
the shard owns. Plain data in, a folder out, so it runs in this process or as a Ray task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from densekit.index.corpus_source import read_corpus
from densekit.index.dense_index import DenseIndex
from densekit.index.embeddings_store import EmbeddingsFolder
from densekit.index.manifest import EncoderSpec
from densekit.index.sharded_manifest import ShardEntry, shard_of


@dataclass
class ShardJob:
    """Everything one shard's build needs; plain data, so it can travel to a Ray task."""

    embeddings: str
    corpus: str
    shard: int
    shards: int
    kind: str
    encoder: dict[str, Any]
    build_params: dict[str, Any]
    search_params: dict[str, Any]
    trained_sha256: str
    out: str


def shard_rows(emb: EmbeddingsFolder, shard: int, shards: int) -> tuple[list[str], np.ndarray]:
    """The ids and float32 vectors of the documents shard `shard` owns, in corpus order."""
    ids: list[str] = []
    parts = []
    for _, shard_ids, vecs in emb.shards():
        mask = np.fromiter((shard_of(d, shards) == shard for d in shard_ids), dtype=bool, count=len(shard_ids))
        ids.extend(d for d, keep in zip(shard_ids, mask) if keep)
        parts.append(np.asarray(vecs[mask], dtype=np.float32))
    vectors = np.concatenate(parts) if parts else np.zeros((0, emb.manifest.dim), dtype=np.float32)
    return ids, vectors


def build_one_shard(job: ShardJob, trained: bytes | np.ndarray) -> dict[str, Any]:
    """Fill a copy of the trained empty index with one shard's documents and write its folder.
    Returns its ShardEntry as a dict."""
    emb = EmbeddingsFolder(job.embeddings, verify=False)  # the caller verified every shard
    ids, vectors = shard_rows(emb, job.shard, job.shards)
    corpus = read_corpus(job.corpus)
    index = faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8) if isinstance(trained, bytes) else trained)
    spec = EncoderSpec.model_validate(job.encoder)
    with DenseIndex.build(
        vectors, corpus, ids, spec, kind=job.kind, build_params=job.build_params, search_params=job.search_params, trained_index=index
    ) as idx:
        idx.manifest.extra.update(
            {"shard": job.shard, "shards": job.shards, "trained_sha256": job.trained_sha256, "embeddings": job.embeddings}
        )
        idx.save(job.out)
        return ShardEntry(name=Path(job.out).name, doc_count=len(idx), checksums=idx.manifest.checksums).model_dump()
