"""Where work runs: device and precision for models, and CPU or GPU for faiss indexes.

CPU is the default wherever no GPU exists; nothing here assumes one. On CUDA, models run in
half precision and faiss indexes are searched from GPU memory when the installed faiss was
built with GPU support (faiss-gpu / faiss-cuda wheels). Every choice is automatic and
overridable through settings: `device`, `dtype` and `faiss_device`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from densekit.errors import ConfigError

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")
FAISS_DEVICES = ("auto", "cpu", "gpu")

# Architectures whose activations overflow float16 (T5's feed-forward blocks reach 1e5+,
# giving inf/NaN embeddings); they get bfloat16 where the GPU has it, else float32.
FP16_OVERFLOW_PRONE = frozenset({"t5", "mt5", "umt5", "longt5", "switch_transformers"})


# ---- torch devices -----------------------------------------------------------------------
def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def cuda_device_count() -> int:
    if not cuda_available():
        return 0
    import torch

    return int(torch.cuda.device_count())


def resolve_device(requested: str | None = None) -> str:
    """'auto'/None -> 'cuda' when available else 'cpu'; an explicit choice is checked."""
    if requested in (None, "", "auto"):
        return "cuda" if cuda_available() else "cpu"
    if requested.startswith("cuda"):
        if not cuda_available():
            raise ConfigError("device", f"'{requested}' requested but CUDA is not available")
        ordinal = _cuda_ordinal(requested)
        if ordinal is not None and ordinal >= cuda_device_count():
            raise ConfigError("device", f"'{requested}' requested but only {cuda_device_count()} CUDA device(s) are visible")
        return requested
    if requested not in ("cpu", "mps"):
        raise ConfigError("device", f"unknown device '{requested}' (use auto, cpu, cuda, cuda:N)")
    return requested


def _cuda_ordinal(device: str) -> int | None:
    """'cuda' -> None (every visible GPU), 'cuda:N' -> N."""
    if device == "cuda":
        return None
    head, _, tail = device.partition(":")
    if head != "cuda" or not tail.isdigit():
        raise ConfigError("device", f"unknown device '{device}' (use auto, cpu, cuda, cuda:N)")
    return int(tail)


# ---- precision ---------------------------------------------------------------------------
def model_precision_hints(model: Any) -> tuple[str | None, str | None]:
    """(checkpoint dtype, model_type) of a loaded model or a model folder, when they can be read.

    Accepts a SentenceTransformer / CrossEncoder / transformers model (the first submodule
    with a transformers config wins) or a path to a folder with a config.json.
    """
    config = None
    if isinstance(model, (str, Path)):
        for cand in (Path(model) / "config.json", *sorted(Path(model).glob("*/config.json"))):
            if cand.is_file():
                try:
                    raw = json.loads(cand.read_text())
                except (OSError, json.JSONDecodeError):
                    continue
                if "model_type" in raw:
                    dtype = raw.get("dtype") or raw.get("torch_dtype")
                    return (str(dtype) if dtype else None), raw.get("model_type")
        return None, None
    modules = model.modules() if hasattr(model, "modules") else [model]
    for m in modules:
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "model_type"):
            config = cfg
            break
    if config is None:
        return None, None
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if dtype is not None:
        dtype = str(dtype).removeprefix("torch.")
    return dtype, getattr(config, "model_type", None)


def bf16_supported() -> bool:
    if not cuda_available():
        return False
    import torch

    return bool(torch.cuda.is_bf16_supported())


def resolve_dtype(device: str, requested: str | None = None, model: Any = None) -> str:
    """The compute dtype for a model on `device`.

    An explicit float32/float16/bfloat16 always wins. 'auto': float32 off CUDA; on CUDA, for
    a `model` whose config can be read (a loaded model or a local folder), the rule vLLM and
    text-embeddings-inference follow: keep a checkpoint's bfloat16, run float32 and float16
    checkpoints (BERT/MiniLM/E5 encoders, cross-encoders) in float16, whose 10-bit mantissa
    keeps scores closer to float32 than bfloat16's 7 bits; architectures that overflow
    float16 (T5) get bfloat16, or float32 on GPUs without it. With nothing known about the
    model, bfloat16 where the GPU has it (it cannot overflow), else float16.
    """
    if requested not in (None, "", "auto"):
        if requested not in DTYPES:
            raise ConfigError("dtype", f"unknown dtype '{requested}' (use auto, {', '.join(DTYPES)})")
        return requested
    if not device.startswith("cuda"):
        return "float32"
    ckpt_dtype, model_type = model_precision_hints(model) if model is not None else (None, None)
    if model_type in FP16_OVERFLOW_PRONE:
        return "bfloat16" if bf16_supported() else "float32"
    if model_type is None or ckpt_dtype == "bfloat16":
        return "bfloat16" if bf16_supported() else "float16"
    return "float16"


def torch_dtype(name: str):
    """'float16' -> torch.float16 (and so on), for `model.to(...)` / `from_pretrained(dtype=...)`."""
    import torch

    if name not in DTYPES:
        raise ConfigError("dtype", f"unknown dtype '{name}' (use {', '.join(DTYPES)})")
    return getattr(torch, name)


# ---- faiss on GPUs -----------------------------------------------------------------------
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
            raise ConfigError("faiss_device", "'gpu' requested but the installed faiss has no GPU support or sees no GPU (install faiss-gpu-cu12 / faiss-cuda)")
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
    ordinal = _cuda_ordinal(device) if device.startswith("cuda") else None
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
