"""Getting BEIR datasets: beir's download helper with network, or a local copy."""

from __future__ import annotations

import shutil
from pathlib import Path

from densekit.atomic import atomic_dir
from densekit.errors import DatasetNotFoundError, DensekitError

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"


def fetch_dataset(name: str, root: str | Path, from_dir: str | Path | None = None, force: bool = False) -> Path:
    root = Path(root)
    dest = root / name
    if dest.exists() and not force:
        return dest
    if from_dir is not None:
        src = Path(from_dir)
        if not (src / "corpus.jsonl").is_file():
            raise DatasetNotFoundError(f"{src} is not a BEIR folder (no corpus.jsonl)")
        with atomic_dir(dest) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        return dest
    try:
        from beir import util
    except ImportError as exc:  # pragma: no cover - beir is a dependency
        raise DensekitError("beir is not installed") from exc
    root.mkdir(parents=True, exist_ok=True)
    try:
        util.download_and_unzip(BEIR_URL.format(name=name), str(root))
    except Exception as exc:  # network failures surface as many exception types
        raise DensekitError(f"cannot download BEIR dataset '{name}': {exc}. Use --from DIR to copy a local folder.") from exc
    if not (dest / "corpus.jsonl").is_file():
        raise DatasetNotFoundError(f"download of '{name}' did not produce {dest}/corpus.jsonl")
    return dest
