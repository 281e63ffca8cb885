"""Helpers shared by the CLI sub-commands: dataset resolution, console, settings."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from densekit.data.folders import resolve_dataset_folder
from densekit.settings import Settings

console = Console(stderr=True)


def settings() -> Settings:
    return Settings()


def resolve_data(data: str) -> Path:
    """`--data` takes a folder, or a dataset name under DENSEKIT_DATA_DIR."""
    return resolve_dataset_folder(data, settings().data_dir)
