"""TREC run files: `qid Q0 docid rank score tag`, one line per retrieved document."""

from __future__ import annotations

from pathlib import Path

from densekit.atomic import write_text_atomic
from densekit.errors import DataFormatError, DatasetNotFoundError
from densekit.runs import Run, trec_order, truncate_run

__all__ = ["Run", "read_run", "trec_order", "truncate_run", "write_run"]


def write_run(path: str | Path, run: Run, tag: str = "densekit") -> None:
    lines = []
    for qid in run:
        for rank, (did, score) in enumerate(trec_order(run[qid]), start=1):
            lines.append(f"{qid} Q0 {did} {rank} {score:.6f} {tag}")
    write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))


def read_run(path: str | Path) -> Run:
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"run file not found: {path}")
    run: Run = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise DataFormatError(path, lineno, f"expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}")
            qid, _, did, _, score, _ = parts
            try:
                run.setdefault(qid, {})[did] = float(score)
            except ValueError:
                raise DataFormatError(path, lineno, f"score is not a number: {score!r}") from None
    return run
