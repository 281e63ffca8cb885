"""A model folder's identity by content, shared by the embedding cache and the export cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Weight files of every runtime densekit loads: torch, ONNX (plus its external data) and
# OpenVINO IR (.xml graph, .bin weights).
WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".onnx", ".onnx_data", ".data"})
GRAPH_SUFFIXES = frozenset({".json", ".xml"})


def model_fingerprint(path: str | Path) -> str:
    """Identify model weights by content, not location, so a reinstall or a copy of the same
    model hits a cache: config files in full, weight files by size plus their first and last
    MiB (hashing whole multi-GB files would cost seconds per load). A name that is not a local
    folder (a hub name) is its own fingerprint: its revision is the best we know."""
    p = Path(path)
    if not p.exists():
        return str(path)
    h = hashlib.sha256()
    for f in sorted(p.rglob("*")):
        if not f.is_file() or f.name.startswith("."):
            continue
        rel = str(f.relative_to(p))
        if f.suffix in GRAPH_SUFFIXES:
            h.update(rel.encode() + f.read_bytes())
        elif f.suffix in WEIGHT_SUFFIXES:
            size = f.stat().st_size
            h.update(f"{rel}:{size}".encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
                fh.seek(max(0, size - (1 << 20)))
                h.update(fh.read(1 << 20))
    return h.hexdigest()
