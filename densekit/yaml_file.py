"""Reading a YAML file a user wrote (training, pipeline, evaluation and settings files).

Every command that takes `--config FILE` reads it here, so a missing file or a YAML syntax
error reads the same everywhere: a `ConfigError` naming the file and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from densekit.errors import ConfigError


def read_yaml_file(path: str | Path, what: str = "config file", field: str = "--config") -> Any:
    """The parsed document of `path` (None for an empty file); ConfigError(`field`) when the
    file is missing or not valid YAML, naming `what` it should have been and the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(field, f"{what} not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(field, f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(field, f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_yaml_mapping(path: str | Path, what: str = "config file", field: str = "--config") -> dict[str, Any]:
    """Like `read_yaml_file`, for files whose top level must be a mapping (an empty file is {})."""
    data = read_yaml_file(path, what, field)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(field, f"{path} must hold a mapping at the top level, got {type(data).__name__}")
    return data
