"""Device choice: CUDA when present, else CPU; never assume a GPU."""
from __future__ import annotations

from densekit.errors import ConfigError


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def resolve_device(requested: str | None = None) -> str:
    """'auto'/None -> 'cuda' when available else 'cpu'; an explicit choice is checked."""
    if requested in (None, "", "auto"):
        return "cuda" if cuda_available() else "cpu"
    if requested.startswith("cuda") and not cuda_available():
        raise ConfigError("device", f"'{requested}' requested but CUDA is not available")
    if requested not in ("cpu", "mps") and not requested.startswith("cuda"):
        raise ConfigError("device", f"unknown device '{requested}' (use auto, cpu, cuda, cuda:N)")
    return requested


def resolve_dtype(device: str, requested: str | None = None) -> str:
    """Half precision on CUDA (bf16 where supported), float32 on CPU, unless overridden."""
    if requested not in (None, "", "auto"):
        if requested not in ("float32", "float16", "bfloat16"):
            raise ConfigError("dtype", f"unknown dtype '{requested}' (use auto, float32, float16, bfloat16)")
        return requested
    if not device.startswith("cuda"):
        return "float32"
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def faiss_gpu_available() -> bool:
    try:
        import faiss
    except ImportError:  # pragma: no cover
        return False
    get_n = getattr(faiss, "get_num_gpus", None)
    return bool(get_n and get_n() > 0)
