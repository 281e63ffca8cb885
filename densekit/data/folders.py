"""Where a dataset named on the command line or in a configuration lives."""

from __future__ import annotations

from pathlib import Path

from densekit.errors import DatasetNotFoundError, InvalidInputError


def resolve_dataset_folder(name: str, data_dir: str | Path) -> Path:
    """`name` is a BEIR folder, or the name of one under `data_dir` (DENSEKIT_DATA_DIR)."""
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    candidate = Path(data_dir) / name
    if candidate.is_dir():
        return candidate
    raise DatasetNotFoundError(f"dataset '{name}' not found: not a folder, and not under DENSEKIT_DATA_DIR={data_dir}")


def check_split_name(name: str, what: str = "split") -> None:
    """A split is a file `qrels/<name>.tsv`: InvalidInputError for a name that is not a plain one."""
    if not name or "/" in name or name.startswith(".") or name.endswith(".tsv"):
        raise InvalidInputError(f"{what} must be a plain split name such as train or dev, got {name!r}")
