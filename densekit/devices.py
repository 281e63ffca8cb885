"""Where models run: torch device and precision.

CPU is the default wherever no GPU exists; nothing here assumes one. On CUDA, models run in
half precision. Every choice is automatic and overridable through settings: `device` and
`dtype`. Where faiss indexes are searched (CPU or GPU) is decided in `densekit.index.gpu`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from densekit.errors import ConfigError

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")

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
        ordinal = cuda_ordinal(requested)
        if ordinal is not None and ordinal >= cuda_device_count():
            raise ConfigError("device", f"'{requested}' requested but only {cuda_device_count()} CUDA device(s) are visible")
        return requested
    if requested not in ("cpu", "mps"):
        raise ConfigError("device", f"unknown device '{requested}' (use auto, cpu, cuda, cuda:N)")
    return requested


def cuda_ordinal(device: str) -> int | None:
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
