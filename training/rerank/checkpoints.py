"""Where reranker runs keep their Trainer checkpoints, and which one `--resume` continues from."""

from __future__ import annotations

import re
from pathlib import Path

from densekit.errors import ConfigError

CHECKPOINTS_DIR = "checkpoints"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def latest_checkpoint(output_dir: str | Path) -> Path:
    """The checkpoint with the most steps under `output_dir/checkpoints`.

    Only complete checkpoints count (the Trainer writes trainer_state.json last), so a run
    killed while saving resumes from the one before. Raises ConfigError when there is none.
    """
    folder = checkpoints_dir(output_dir)
    found = []
    if folder.is_dir():
        for sub in folder.iterdir():
            m = _CHECKPOINT.match(sub.name)
            if m and (sub / "trainer_state.json").is_file():
                found.append((int(m.group(1)), sub))
    if not found:
        raise ConfigError("--resume", f"no checkpoint to resume from in {folder} (runs write checkpoints when train.save_steps is set)")
    return max(found)[1]
