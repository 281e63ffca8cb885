"""TREC run files: `qid Q0 docid rank score tag`, one line per retrieved document, and their
positive-score sidecars.

A run holds scores of retrieved documents only. A dense first stage also knows the exact score
of every judged-relevant document it did not retrieve, which the global ROC-AUC needs (a
relevant document ranked below the cut-off is not the same as one scored below everything);
`write_positive_scores` keeps them beside the run (`run.trec` ->
`run.trec.positive_scores.tsv`: `qid<TAB>docid<TAB>score`) so a later `densekit eval compare`
on the run file computes the AUC the report did (up to the 6 decimals both files keep)."""

from __future__ import annotations

import math
from pathlib import Path

from densekit.atomic import write_text_atomic
from densekit.errors import DataFormatError, DatasetNotFoundError
from densekit.runs import Run, trec_order, truncate_run

__all__ = [
    "Run",
    "positive_scores_path",
    "read_positive_scores",
    "read_run",
    "trec_order",
    "truncate_run",
    "write_positive_scores",
    "write_run",
]

PositiveScores = dict[str, dict[str, float]]


def write_run(path: str | Path, run: Run, tag: str = "densekit") -> None:
    """Write `run` atomically; a positive-score sidecar of an earlier run at `path` is removed
    first (whoever has exact scores for this run writes them after), so a crash in between
    leaves a run without exact scores, never one with another run's."""
    positive_scores_path(path).unlink(missing_ok=True)
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


def positive_scores_path(run_path: str | Path) -> Path:
    """Where the exact positive scores of the run at `run_path` live (run.trec ->
    run.trec.positive_scores.tsv): named after the whole run file name, so no other run in the
    folder (a fused stage, run.k100 beside run.k1000) picks up scores that are not its own."""
    p = Path(run_path)
    return p.with_name(p.name + ".positive_scores.tsv")


def write_positive_scores(run_path: str | Path, scores: PositiveScores) -> Path:
    path = positive_scores_path(run_path)
    lines = [f"{qid}\t{did}\t{score:.6f}" for qid in sorted(scores) for did, score in sorted(scores[qid].items())]
    write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))
    return path


def read_positive_scores(run_path: str | Path) -> PositiveScores | None:
    """The exact positive scores written beside the run at `run_path`, or None when it has none."""
    path = positive_scores_path(run_path)
    if not path.is_file():
        return None
    scores: PositiveScores = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise DataFormatError(path, lineno, f"expected 3 tab-separated columns 'qid docid score', got {len(parts)}")
            qid, did, score = parts
            try:
                value = float(score)
            except ValueError:
                raise DataFormatError(path, lineno, f"score is not a number: {score!r}") from None
            if not math.isfinite(value):
                raise DataFormatError(path, lineno, f"score is not finite: {score!r}")
            if did in scores.get(qid, {}):
                raise DataFormatError(path, lineno, f"a second score for query {qid!r}, document {did!r}")
            scores.setdefault(qid, {})[did] = value
    return scores
