"""The Ray engine: corpus encoding on Ray Data and shard builds as Ray tasks.

The only module that imports Ray at its top; callers reach it after
`densekit.index.ray_cluster.require_ray()` and `connect()`. Shards are written by this
driver process (encoding) or by the tasks into the output folder (builds), so on a
cluster of several machines the output folder must be on storage they all mount.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from ray.data import ActorPoolStrategy, DataContext

from densekit.index.embeddings_store import ShardPlan, ShardRecord, write_shard
from densekit.index.manifest import EncoderSpec
from densekit.index.shard_fill import ShardJob, build_one_shard

# Rows handed to an actor per call; the encoder batches them again by its own batch size.
ROWS_PER_CALL = 256


class DocumentEncoder:
    """One encoder per actor, loaded once; a batch of {row, text} becomes {row, vector}."""

    def __init__(self, encoder_args: dict[str, Any]):
        from densekit.encoder import Encoder

        self.encoder = Encoder(**encoder_args)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.encoder.encode_documents([str(t) for t in batch["text"]])
        return {"row": np.asarray(batch["row"], dtype=np.int64), "vector": vectors}


@ray.remote
def _encoder_spec(encoder_args: dict[str, Any]) -> dict[str, Any]:
    from densekit.encoder import Encoder

    return EncoderSpec.of(Encoder(**encoder_args)).model_dump(mode="json")


def remote_encoder_spec(encoder_args: dict[str, Any], gpus_per_actor: float = 0.0) -> EncoderSpec:
    """The spec of the encoder the actors will run, read where they run (the driver may lack the model's device)."""
    ref = _encoder_spec.options(num_gpus=gpus_per_actor or None).remote(encoder_args)
    return EncoderSpec.model_validate(ray.get(ref))


def encode_on_ray(
    out: Path,
    pending: Sequence[ShardPlan],
    ids: Sequence[str],
    texts: Sequence[str],
    encoder_args: dict[str, Any],
    actors: int,
    gpus_per_actor: float,
    progress: bool = True,
    cpus_per_actor: float = 1.0,
) -> Iterator[ShardRecord]:
    """Encode the rows of the pending shards on an actor pool of `actors` encoders and yield
    each shard's record as soon as its last row came back and its files are written.

    An actor reserves `cpus_per_actor` CPUs, and Ray sets its OMP_NUM_THREADS (so torch's
    intra-op threads) to that number: 1 actor on a 2-core machine encodes with 1 thread unless
    it reserves 2."""
    ctx = DataContext.get_current()
    # In order: shards complete one after another, so the driver holds about one shard of vectors.
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = progress
    # Blocks of one call's rows, not one per shard: Ray Data hands a block to one actor, so a
    # shard-sized block would leave the other actors idle.
    blocks = [
        pa.table(
            {
                "row": np.arange(start, min(start + ROWS_PER_CALL, p.first_row + p.rows), dtype=np.int64),
                "text": pa.array(texts[start : min(start + ROWS_PER_CALL, p.first_row + p.rows)], type=pa.string()),
            }
        )
        for p in pending
        for start in range(p.first_row, p.first_row + p.rows, ROWS_PER_CALL)
    ]
    ds = ray.data.from_arrow(blocks).map_batches(
        DocumentEncoder,
        fn_constructor_kwargs={"encoder_args": encoder_args},
        compute=ActorPoolStrategy(size=actors),
        batch_size=ROWS_PER_CALL,
        batch_format="numpy",
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor or None,
    )
    starts = np.array([p.first_row for p in pending], dtype=np.int64)
    buffers: dict[int, np.ndarray] = {}
    filled: dict[int, int] = {}
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        rows, vectors = np.asarray(batch["row"], dtype=np.int64), np.asarray(batch["vector"], dtype=np.float32)
        owner = np.searchsorted(starts, rows, side="right") - 1
        for i in np.unique(owner).tolist():
            plan, sel = pending[i], owner == i
            if i not in buffers:
                buffers[i], filled[i] = np.empty((plan.rows, vectors.shape[1]), dtype=np.float32), 0
            buffers[i][rows[sel] - plan.first_row] = vectors[sel]
            filled[i] += int(sel.sum())
            if filled[i] == plan.rows:
                yield write_shard(out, plan, ids[plan.first_row : plan.first_row + plan.rows], buffers.pop(i))


@ray.remote
def _build_shard(job: ShardJob, trained: np.ndarray) -> dict[str, Any]:
    return build_one_shard(job, trained)


def build_shards_on_ray(jobs: Sequence[ShardJob], trained: np.ndarray) -> list[dict[str, Any]]:
    """Every shard's build as a Ray task, in parallel; the trained index goes to the object store once."""
    trained_ref = ray.put(trained)
    return ray.get([_build_shard.remote(job, trained_ref) for job in jobs])
