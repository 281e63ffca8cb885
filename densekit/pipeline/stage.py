"""The shape of a pipeline stage: what it reads, what identifies its config, what it writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from densekit.pipeline.context import Context


class Stage:
    """One stage. `identity` is the resolved config the stamp hashes: every value that changes
    the stage's outputs (paths of other stages' outputs included, as placeholders of OUT), and
    nothing that does not (the device, progress bars)."""

    name: str = ""

    def deps(self, ctx: Context) -> list[str]:
        """The configured stages whose outputs this stage reads."""
        return []

    def identity(self, ctx: Context) -> dict[str, Any]:
        raise NotImplementedError

    def outputs(self, ctx: Context) -> list[Path]:
        """Paths that must exist for the stage to count as done."""
        return []

    def run(self, ctx: Context, folder: Path) -> dict[str, Any]:
        """Write the outputs into `folder` (empty); returns the summary kept in the stamp."""
        raise NotImplementedError
