"""Stage stamps: what a finished stage ran with, so the next run can skip it.

A stamp (OUT/<stage>/stamp.json, written atomically after every output) holds the hash of
the stage's resolved config section, the stamp ids of the stages it read from, and its own
id: a hash of both plus a fresh run id. A stage is up to date when its stamp exists, its
config hash equals the current one and its inputs' ids equal their current stamps' ids;
since every run of a stage gets a new id, a stage that re-ran (even with the same config,
say with `--from`) makes every stage that reads its outputs re-run too.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from densekit.atomic import write_json_atomic

STAMP = "stamp.json"


def config_hash(identity: Any, out_dir: Path) -> str:
    """sha256 of a stage's resolved config as canonical JSON; the output folder's own path is
    replaced by a placeholder so that moving OUT keeps every stamp valid."""
    text = json.dumps(identity, sort_keys=True, ensure_ascii=False, default=str)
    text = text.replace(str(Path(out_dir).resolve()), "<out>")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Stamp:
    stage: str
    config_sha256: str
    inputs: dict[str, str]  # stage it read from -> that stage's stamp id
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: str = ""
    finished_at: str = ""
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)  # paths under OUT
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def stamp_id(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.stage, self.config_sha256, sorted(self.inputs.items()), self.run_id]).encode())
        return h.hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "stamp_id": self.stamp_id}


def stamp_path(stage_dir: Path) -> Path:
    return Path(stage_dir) / STAMP


def read_stamp(stage_dir: Path) -> Stamp | None:
    """The stage's stamp, or None when there is none or it cannot be read (a stage without a
    readable stamp runs again)."""
    path = stamp_path(stage_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("stamp_id", None)
        return Stamp(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_stamp(stage_dir: Path, stamp: Stamp) -> None:
    stamp.finished_at = now()
    write_json_atomic(stamp_path(stage_dir), stamp.to_json())


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
