"""Inference runtimes and precisions, and the metadata an exported model folder carries.

A model runs under one backend (torch, onnx, openvino) at one precision (fp32, bf16, int8).
torch runs fp32 everywhere and bf16 where the hardware has it; onnx and openvino run a graph
that `densekit export` wrote, in fp32 or int8. An exported folder names its own backend and
precision in `densekit_export.json`, so loading it needs no flags.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from densekit.atomic import write_text_atomic
from densekit.errors import BackendUnavailableError, ConfigError, ModelLoadError

BACKENDS = ("torch", "onnx", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
PRECISIONS_OF = {"torch": ("fp32", "bf16"), "onnx": ("fp32", "int8"), "openvino": ("fp32", "int8")}
# The packages a backend imports, and the densekit extra that installs them.
BACKEND_PACKAGES = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx", "onnxruntime")}

EXPORT_METADATA = "densekit_export.json"
EXPORT_FORMAT_VERSION = 1
KINDS = ("bi-encoder", "cross-encoder")


@dataclass(frozen=True)
class Runtime:
    backend: str = "torch"
    precision: str = "fp32"

    @property
    def is_default(self) -> bool:
        return self.backend == "torch" and self.precision == "fp32"

    def __str__(self) -> str:
        return f"{self.backend}/{self.precision}"


def check_runtime(backend: str, precision: str) -> Runtime:
    """A valid (backend, precision) pair, or ConfigError naming the field at fault."""
    if backend not in BACKENDS:
        raise ConfigError("backend", f"unknown backend '{backend}' (use {', '.join(BACKENDS)})")
    if precision not in PRECISIONS:
        raise ConfigError("precision", f"unknown precision '{precision}' (use {', '.join(PRECISIONS)})")
    if precision not in PRECISIONS_OF[backend]:
        raise ConfigError(
            "precision", f"backend '{backend}' runs {' or '.join(PRECISIONS_OF[backend])}, not {precision}" + _hint(backend, precision)
        )
    return Runtime(backend, precision)


def _hint(backend: str, precision: str) -> str:
    if backend == "torch" and precision == "int8":
        return " (int8 runs under onnx or openvino: `densekit export --backend onnx --precision int8`)"
    if precision == "bf16":
        return " (bf16 runs under torch)"
    return ""


def require_backend(backend: str) -> None:
    """BackendUnavailableError naming the extra to install when `backend`'s packages are missing."""
    missing = [p for p in BACKEND_PACKAGES.get(backend, ()) if not _installed(p)]
    if missing:
        raise BackendUnavailableError(
            f"the {backend} backend needs {', '.join(missing)}: install the '{backend}' extra (pip install 'densekit[{backend}]')"
        )


def _installed(package: str) -> bool:
    if package in sys.modules:  # None there marks a package that failed (or was barred) to import
        return sys.modules[package] is not None
    return importlib.util.find_spec(package) is not None


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_bf16(flags: set[str] | None = None) -> bool:
    """Native bf16 matrix instructions (avx512_bf16 or AMX); without them torch emulates bf16
    on a CPU, slower than fp32."""
    f = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & f)


def check_bf16_device(device: str) -> None:
    if device == "cpu" and not cpu_has_bf16():
        raise ConfigError("precision", "bf16 needs a CPU with avx512_bf16 or AMX (this one has neither: bf16 would run slower than fp32)")


class ExportMetadata(BaseModel):
    """What `densekit_export.json` records: where a model came from and how it runs."""

    format_version: int = EXPORT_FORMAT_VERSION
    kind: str = "bi-encoder"
    source: str
    source_fingerprint: str
    backend: str
    precision: str
    file_name: str = Field(description="the graph file, relative to the folder")
    quantization: str | None = Field(default=None, description="dynamic or static (int8 only)")
    calibration: dict[str, Any] | None = Field(default=None, description="where the static quantization's calibration texts came from")
    quality: dict[str, Any] | None = Field(default=None, description="the quality check against the source model")
    created_at: str | None = None

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.backend, self.precision)


def read_export_metadata(folder: str | Path) -> ExportMetadata | None:
    """The metadata of an exported model folder; None for any other folder or name."""
    path = Path(folder).expanduser() / EXPORT_METADATA
    if not path.is_file():
        return None
    try:
        meta = ExportMetadata.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as exc:
        raise ModelLoadError(f"{path} is not valid export metadata: {exc}") from None
    check_runtime(meta.backend, meta.precision)
    if not (Path(folder).expanduser() / meta.file_name).is_file():
        raise ModelLoadError(f"{path} names {meta.file_name}, which the folder does not hold")
    return meta


def write_export_metadata(folder: str | Path, meta: ExportMetadata) -> None:
    write_text_atomic(Path(folder) / EXPORT_METADATA, meta.model_dump_json(indent=2) + "\n")


def resolve_runtime(path: str, backend: str | None, precision: str | None) -> tuple[Runtime, ExportMetadata | None]:
    """The runtime a model at `path` loads with: an exported folder's own, else the requested
    one (None: torch fp32). Asking an exported folder for another runtime is a ConfigError."""
    meta = read_export_metadata(path) if Path(path).expanduser().is_dir() else None
    if meta is not None:
        if backend not in (None, meta.backend) or precision not in (None, meta.precision):
            raise ConfigError(
                "backend",
                f"{path} is a {meta.backend}/{meta.precision} export; it cannot run as {backend or meta.backend}/{precision or meta.precision}",
            )
        return meta.runtime, meta
    return check_runtime(backend or "torch", precision or "fp32"), None
