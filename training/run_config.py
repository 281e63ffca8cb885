"""YAML training configs -> pydantic models, and the resolved config every run writes.

Shared by every `densekit train` command: a config is a pydantic model with
`extra="forbid"`, so a typo is an error too; any validation problem becomes a
`ConfigError` naming the dotted field (e.g. `loss.temperature`) before any work starts.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from densekit.atomic import write_text_atomic
from densekit.errors import ConfigError
from densekit.yaml_file import read_yaml_mapping

M = TypeVar("M", bound=BaseModel)

RESOLVED_CONFIG = "resolved_config.yaml"


class StrictConfig(BaseModel):
    """A config section: unknown fields are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class TrainingSourceConfig(StrictConfig):
    """Where training queries and positives come from: a BEIR folder's qrels, pairs JSONL
    files ({query, pos, neg}), or both mixed. Shared by every `densekit train` command."""

    beir: str | None = Field(
        None, description="BEIR folder (or name under DENSEKIT_DATA_DIR) whose qrels give training queries and positives"
    )
    beir_split: str = Field("train", description="qrels split of `beir` to train on (never the split you evaluate on)")
    pairs: list[str] = Field(default_factory=list, description="{query, pos, neg} JSONL files, mixed with the BEIR pairs")
    max_queries: PositiveInt | None = Field(None, description="use a fixed random subset of this many BEIR training queries")
    min_grade: int = Field(1, ge=1, description="qrels grade at or above which a document is a positive")

    @model_validator(mode="after")
    def _one_source(self):
        if not self.beir and not self.pairs:
            raise ValueError("give at least one of data.beir or data.pairs")
        return self


def _field_name(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def validate_config(model_cls: type[M], data: Any, source: str | None = None) -> M:
    """Validate `data`; the first error becomes a ConfigError naming its field."""
    if not isinstance(data, dict):
        raise ConfigError("<root>", f"{source or 'config'} must be a mapping of fields, got {type(data).__name__}")
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        where = f" (in {source})" if source else ""
        raise ConfigError(_field_name(tuple(err.get("loc", ()))), f"{msg}{where}") from None


def load_yaml_config(model_cls: type[M], path: str | Path, overrides: dict[str, Any] | None = None) -> M:
    """Read YAML, apply dotted `overrides` ({"train.max_steps": 10}), validate."""
    path = Path(path)
    data = read_yaml_mapping(path)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(dotted, f"cannot override: '{p}' is not a mapping")
        node[leaf] = value
    return validate_config(model_cls, data, str(path))


def write_resolved_config(config: BaseModel, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write every field, defaults included, so the run can be repeated from this file alone."""
    folder = Path(folder)
    data = config.model_dump(mode="json")
    header = {"written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **(extra or {})}
    text = "# resolved config: " + ", ".join(f"{k}={v}" for k, v in header.items()) + "\n"
    text += yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    out = folder / RESOLVED_CONFIG
    write_text_atomic(out, text)
    return out
