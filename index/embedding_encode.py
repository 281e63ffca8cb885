"""`densekit encode`: a corpus into embedding shards (densekit.index.embeddings_store), by
the local engine (this process) or the Ray engine (Ray Data, densekit.index.ray_engine).
Both write the same files, so either can resume what the other started."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from densekit.data.beir import document_text
from densekit.errors import ConfigError
from densekit.fingerprint import model_fingerprint
from densekit.index import embeddings_store as store
from densekit.index.corpus_source import read_corpus
from densekit.index.manifest import EncoderSpec

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


@dataclass
class EncodeOptions:
    """Arguments of densekit.encoder.Encoder, passed as they are to every encoder the engine
    builds (one in this process, or one per Ray actor)."""

    model: str | None = None
    device: str | None = None
    batch_size: int | None = None
    dtype: str | None = None
    backend: str | None = None
    precision: str | None = None
    max_seq_length: int | None = None

    def encoder_args(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class RayOptions:
    address: str | None = None  # None: a local cluster in this process
    actors: int = 1
    gpus_per_actor: float = 0.0
    connect_timeout_s: float = 15.0
    cpus_per_actor: float = 1.0  # also each actor's torch threads (Ray sets OMP_NUM_THREADS to it)


@dataclass
class EncodeResult:
    manifest: store.EmbeddingsManifest
    encoded_shards: list[str] = field(default_factory=list)
    skipped_shards: list[str] = field(default_factory=list)
    encoded_rows: int = 0
    encode_s: float = 0.0


def encoder_key(spec: EncoderSpec) -> str:
    """The encoder's identity: its files by content plus every setting that changes vectors."""
    h = hashlib.sha256(model_fingerprint(spec.path or spec.name).encode())
    h.update(spec.model_dump_json(exclude={"name", "path"}).encode())
    return h.hexdigest()[:32]


def encode_corpus_to_shards(
    corpus_path: str | Path,
    out: str | Path,
    options: EncodeOptions | None = None,
    engine: str = "local",
    shard_size: int = 10_000,
    dtype: str = "float32",
    ray: RayOptions | None = None,
    progress: bool = True,
) -> EncodeResult:
    """Encode every document (BEIR's `title + " " + text`) into shards of `shard_size` rows
    under `out`, skipping shards already complete for the same plan, then write the manifest."""
    if engine not in ENGINES:
        raise ConfigError("engine", f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    store.check_dtype(dtype)
    if shard_size < 1:
        raise ConfigError("shard_size", f"must be at least 1, got {shard_size}")
    if ray is not None and ray.cpus_per_actor <= 0:
        raise ConfigError("cpus_per_actor", f"must be positive, got {ray.cpus_per_actor}")
    options = options or EncodeOptions()
    out = Path(out)
    if engine == "ray":
        from densekit.index.ray_cluster import connect, require_ray

        require_ray()  # before reading the corpus: a missing extra fails at once
        ray_opts = ray or RayOptions()
        connect(ray_opts.address, ray_opts.connect_timeout_s)
    corpus = read_corpus(corpus_path)
    ids = list(corpus)
    texts = [document_text(corpus[d]) for d in ids]
    encoder = None
    if engine == "local":
        from densekit.encoder import Encoder

        encoder = Encoder(**options.encoder_args())
        spec = EncoderSpec.of(encoder)
    else:
        from densekit.index.ray_engine import remote_encoder_spec

        spec = remote_encoder_spec(options.encoder_args(), ray_opts.gpus_per_actor)
    key = encoder_key(spec)
    plans = store.plan_shards(ids, texts, shard_size, key, dtype)
    out.mkdir(parents=True, exist_ok=True)
    done = {p.name: r for p in plans if (r := store.complete_shard(out, p)) is not None}
    pending = [p for p in plans if p.name not in done]
    if done:
        log.info("%d of %d shards already complete in %s; encoding %d", len(done), len(plans), out, len(pending))
    t0 = time.perf_counter()
    if pending and encoder is not None:
        for plan in pending:
            rows = slice(plan.first_row, plan.first_row + plan.rows)
            vectors = encoder.encode_documents(texts[rows], progress=progress)
            done[plan.name] = store.write_shard(out, plan, ids[rows], vectors)
    elif pending:
        from densekit.index.ray_engine import encode_on_ray

        for record in encode_on_ray(
            out, pending, ids, texts, options.encoder_args(), ray_opts.actors, ray_opts.gpus_per_actor, progress, ray_opts.cpus_per_actor
        ):
            done[record.name] = record
    encode_s = time.perf_counter() - t0
    records = [done[p.name] for p in plans]
    manifest = store.write_manifest(out, spec, key, dtype, shard_size, records, str(Path(corpus_path).resolve()))
    return EncodeResult(
        manifest,
        encoded_shards=[p.name for p in pending],
        skipped_shards=[p.name for p in plans if p not in pending],
        encoded_rows=sum(p.rows for p in pending),
        encode_s=encode_s,
    )
