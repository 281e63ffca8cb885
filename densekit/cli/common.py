"""Helpers shared by the CLI sub-commands: dataset resolution, console, settings."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from densekit.errors import DatasetNotFoundError
from densekit.settings import Settings

console = Console(stderr=True)


def settings() -> Settings:
    return Settings()


def resolve_data(data: str) -> Path:
    """`--data` takes a folder, or a dataset name under DENSEKIT_DATA_DIR."""
    p = Path(data).expanduser()
    if p.is_dir():
        return p
    root = settings().data_dir
    candidate = root / data
    if candidate.is_dir():
        return candidate
    raise DatasetNotFoundError(f"dataset '{data}' not found: not a folder, and not under DENSEKIT_DATA_DIR={root}")
