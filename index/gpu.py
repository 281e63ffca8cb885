"""Searching faiss indexes from GPU memory.

faiss indexes are searched from GPU memory when the installed faiss was built with GPU
support (faiss-gpu / faiss-cuda wheels) and the models run on CUDA; setting `faiss_device`
overrides the choice. A saved index is always a CPU index, so it loads anywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from densekit.devices import cuda_ordinal
from densekit.errors import ConfigError

log = logging.getLogger(__name__)

FAISS_DEVICES = ("auto", "cpu", "gpu")


def faiss_gpu_count() -> int:
    """GPUs faiss can use: 0 for a CPU-only faiss build, or with no GPU visible."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a dependency
        return 0
    get_n = getattr(faiss, "get_num_gpus", None)
    if get_n is None or not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(get_n())
    except RuntimeError:  # a GPU build on a host whose driver cannot be loaded
        return 0


def faiss_gpu_available() -> bool:
    return faiss_gpu_count() > 0


def resolve_faiss_device(requested: str | None, device: str) -> str:
    """'cpu' or 'gpu' for searching an index, given the models' resolved `device`.

    'auto' follows the models: GPU when they run on CUDA and faiss has GPU support, else
    CPU. 'gpu' insists and fails early, naming the setting, when faiss cannot use a GPU.
    """
    requested = (requested or "auto").lower()
    if requested == "cuda":
        requested = "gpu"
    if requested not in FAISS_DEVICES:
        raise ConfigError("faiss_device", f"unknown faiss device '{requested}' (use {', '.join(FAISS_DEVICES)})")
    if requested == "cpu":
        return "cpu"
    if requested == "gpu":
        if not faiss_gpu_available():
            raise ConfigError(
                "faiss_device",
                "'gpu' requested but the installed faiss has no GPU support or sees no GPU (install faiss-gpu-cu12 / faiss-cuda)",
            )
        return "gpu"
    return "gpu" if device.startswith("cuda") and faiss_gpu_available() else "cpu"


@dataclass
class GpuIndex:
    """A faiss index cloned into GPU memory, with the GPU resources it lives on.

    The resources are held here so they outlive the index (faiss frees them on garbage
    collection, which would leave the GPU index pointing at released memory).
    """

    index: Any
    gpus: list[int]
    resources: list[Any] = field(default_factory=list)
    sharded: bool = False

    @property
    def device(self) -> str:
        return "cuda:" + ",".join(str(g) for g in self.gpus)


def is_gpu_index(index: Any) -> bool:
    """Whether a faiss index (through IDMap / pre-transform / replica wrappers) searches on a GPU.

    faiss's cloner hands back a CPU copy, without an error, for types it has no GPU version
    of (HNSW keeps its graph on the CPU), so a clone alone does not prove a move.
    """
    import faiss

    idx = faiss.downcast_index(index) if hasattr(faiss, "downcast_index") else index
    if type(idx).__name__.startswith("Gpu"):
        return True
    if hasattr(idx, "count") and hasattr(idx, "at") and idx.count() > 0:  # IndexReplicas / IndexShards
        return is_gpu_index(idx.at(0))
    inner = getattr(idx, "index", None) or getattr(idx, "base_index", None)  # IDMap/PreTransform, Refine
    return inner is not None and inner is not index and is_gpu_index(inner)


def index_to_gpu(index: Any, device: str = "cuda", shard: bool = False, use_float16: bool = False) -> GpuIndex:
    """Clone a CPU faiss index onto the GPU(s) of `device`: 'cuda:N' -> that GPU; 'cuda' ->
    every GPU faiss sees (replicas, each answering part of a query batch; `shard` splits the
    vectors across them instead, for indexes larger than one GPU's memory).

    `use_float16` stores flat / IVF-flat vectors in half precision (half the memory, scores
    within ~1e-3); off by default so GPU results match CPU ones. Raises ConfigError when
    faiss has no GPU support, RuntimeError (faiss's) when the index type cannot move.
    """
    import faiss

    n = faiss_gpu_count()
    if n == 0:
        raise ConfigError("faiss_device", "the installed faiss has no GPU support or sees no GPU")
    ordinal = cuda_ordinal(device) if device.startswith("cuda") else None
    if ordinal is not None:
        if ordinal >= n:
            raise ConfigError("device", f"'{device}' requested but faiss sees {n} GPU(s)")
        co = faiss.GpuClonerOptions()
        co.useFloat16 = use_float16
        res = faiss.StandardGpuResources()
        gpu_index = faiss.index_cpu_to_gpu(res, ordinal, index, co)
        _require_gpu(gpu_index, index)
        return GpuIndex(gpu_index, [ordinal], [res])
    co = faiss.GpuMultipleClonerOptions()
    co.useFloat16 = use_float16
    co.shard = shard
    gpus = list(range(n))
    resources = [faiss.StandardGpuResources() for _ in gpus]
    vres, vdev = faiss.GpuResourcesVector(), faiss.Int32Vector()
    for g, r in zip(gpus, resources):
        vdev.push_back(g)
        vres.push_back(r)
    gpu_index = faiss.index_cpu_to_gpu_multiple(vres, vdev, index, co)
    _require_gpu(gpu_index, index)
    return GpuIndex(gpu_index, gpus, resources, sharded=shard and n > 1)


def _require_gpu(clone: Any, original: Any) -> None:
    if not is_gpu_index(clone):
        raise RuntimeError(f"faiss has no GPU version of {type(original).__name__} (its clone stays on the CPU)")


def place_index(index: Any, faiss_device: str | None, device: str, shard: bool = False) -> GpuIndex | None:
    """The GPU copy to search `index` with, or None to search it on the CPU.

    In 'auto' mode an index type faiss cannot clone to the GPU (HNSW, OPQ transforms, ...)
    or a GPU out of memory falls back to the CPU with a warning; 'gpu' raises instead.
    """
    where = resolve_faiss_device(faiss_device, device)
    if where == "cpu":
        return None
    target = device if device.startswith("cuda") else "cuda"
    try:
        placed = index_to_gpu(index, target, shard=shard)
    except RuntimeError as exc:
        if (faiss_device or "auto").lower() == "auto":
            log.warning("faiss index stays on the CPU: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return None
        raise ConfigError("faiss_device", f"cannot move the index to the GPU: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    log.info("faiss index searched on %s (%s)", placed.device, "sharded" if placed.sharded else "replicated")
    return placed
