"""A settings file: the `Settings` of a server written down as YAML (`densekit serve --config FILE`).

A servable folder (written by `densekit pipeline run`) holds its index, its models and such
a file, so the folder alone says how it is served. Keys are `Settings` field names; relative
paths are read from the file's own folder, so the folder can be moved or copied whole:

    index_dir: index          # -> <folder>/index
    model: model              # a local folder when <folder>/model exists, else a hub name
    reranker: reranker
    reranker_kind: cross-encoder
    rerank_top_n: 20
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from densekit.errors import ConfigError
from densekit.settings import Settings
from densekit.yaml_file import read_yaml_mapping

# Always paths: a relative one is read from the file's folder.
PATH_FIELDS = ("index_dir", "wal_dir", "data_dir", "cache_dir")
# A hub name or a path: read from the file's folder only when that folder has it.
MODEL_FIELDS = ("model", "reranker")


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """The settings a file sets (field -> value, relative paths resolved against the file's
    folder), validated as `Settings` values; ConfigError naming the file and the key otherwise."""
    path = Path(path)
    data = read_yaml_mapping(path, what="settings file")
    base = path.resolve().parent
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in Settings.model_fields:
            raise ConfigError(str(key), f"unknown setting in {path} (the names of `densekit serve --help`, with _ for -)")
        if value is not None and key in PATH_FIELDS:
            value = str(base / Path(str(value)).expanduser())
        elif value is not None and key in MODEL_FIELDS and (base / str(value)).exists():
            value = str(base / str(value))
        values[key] = value
    try:
        Settings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err.get("loc") else "?"
        raise ConfigError(key, f"{err.get('msg')} (in {path})") from None
    return values


def settings_from_file(path: str | Path, **overrides: Any) -> Settings:
    """`Settings` with the file's values (and `overrides` on top); fields it leaves out come
    from the environment or their defaults."""
    return Settings(**{**read_settings_file(path), **overrides})
