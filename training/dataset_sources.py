"""Training data sources shared by the `densekit train` commands: one dataset, or a pooled list.

A run trains on a single source (`data.beir` and/or `data.pairs`) or on several datasets
(`data.datasets`, each a BEIR split with qrels and/or pairs files, with a weight), every
batch then drawn from one dataset (`training/dataset_sampling.py` for the sentence-transformers
trainers). The bi-encoder and the reranker runs read the same section, checked the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from densekit.data import list_splits
from densekit.errors import ConfigError
from densekit.training.run_config import TrainingSourceConfig


class DatasetSource(TrainingSourceConfig):
    """One dataset of a pooled run: its own qrels split and/or pairs files."""

    name: str | None = Field(None, description="label in logs and the summary (default: the BEIR name, else the first pairs file's stem)")
    weight: float = Field(1.0, gt=0, description="share of batches with data.sampling: weighted (relative to the other entries)")
    mined: str | None = Field(
        None, description="this dataset's mined pairs JSONL (as `densekit train mine` writes), used instead of mining its beir split"
    )

    def label(self) -> str:
        if self.name:
            return self.name
        if self.beir:
            return Path(self.beir).name or self.beir
        return Path(self.pairs[0]).stem


SAMPLING = ("proportional", "round_robin", "weighted")


class PooledDataConfig(TrainingSourceConfig):
    """`beir`/`pairs` (one source) or `datasets` (several, batches drawn from one at a time)."""

    datasets: list[DatasetSource] = Field(
        default_factory=list,
        description="pooled training: several sources, each batch drawn from one of them (instead of beir/pairs)",
    )
    sampling: Literal["proportional", "round_robin", "weighted"] = Field(
        "proportional",
        description="which dataset each batch comes from: proportional to its rows (every row once per epoch), round_robin "
        "(in turn, until the smallest runs out) or weighted (at random by `weight`, a dataset restarting when exhausted)",
    )

    @model_validator(mode="after")
    def _one_source(self):  # replaces TrainingSourceConfig's check: `datasets` is a source too
        if self.datasets:
            if self.beir or self.pairs:
                raise ValueError("give either data.beir/data.pairs or data.datasets, not both")
            if self.max_queries is not None:
                raise ValueError("with data.datasets, set max_queries on each entry")
            names = [d.label() for d in self.datasets]
            if dup := sorted({n for n in names if names.count(n) > 1}):
                raise ValueError(f"dataset names must be unique, {dup} repeats (set `name` on the entries)")
        elif not self.beir and not self.pairs:
            raise ValueError("give at least one of data.beir, data.pairs or data.datasets")
        return self

    def sources(self) -> list[tuple[str, DatasetSource]]:
        """(config field prefix, source) of every training dataset; one for a single-source run."""
        if self.datasets:
            return [(f"data.datasets.{i}", d) for i, d in enumerate(self.datasets)]
        single = DatasetSource(
            beir=self.beir, beir_split=self.beir_split, pairs=self.pairs, max_queries=self.max_queries, min_grade=self.min_grade
        )
        return [("data", single)]


def resolve_pairs_file(path: str, resolve_data: Callable[[str], Path]) -> Path | None:
    """A pairs file as given, else under the data folder (`wikiqa/train_pairs.jsonl`)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_absolute() or len(p.parts) < 2:
        return None
    try:
        candidate = Path(resolve_data(p.parts[0])).joinpath(*p.parts[1:])
    except Exception:  # not a dataset name either
        return None
    return candidate if candidate.is_file() else None


def check_source_paths(data: PooledDataConfig, resolve_data: Callable[[str], Path]) -> dict[str, Path]:
    """Every dataset folder, training split and pairs file the sources name exists; returns
    them resolved, keyed by config field (``data.beir``, ``data.datasets.2.beir``,
    ``data.datasets.3.pairs.0``). Raises ConfigError naming the field otherwise."""
    out: dict[str, Path] = {}
    for prefix, src in data.sources():
        if src.beir:
            try:
                folder = out[f"{prefix}.beir"] = resolve_data(src.beir)
            except Exception as exc:  # DatasetNotFoundError and friends
                raise ConfigError(f"{prefix}.beir", str(exc)) from None
            if not (folder / "qrels" / f"{src.beir_split}.tsv").is_file():
                hint = ""
                if (folder / f"{src.beir_split}_pairs.jsonl").is_file():
                    hint = f"; it has {src.beir_split}_pairs.jsonl: use pairs: [{src.beir}/{src.beir_split}_pairs.jsonl] instead of beir"
                raise ConfigError(
                    f"{prefix}.beir_split",
                    f"dataset '{src.beir}' has no '{src.beir_split}' split (no qrels/{src.beir_split}.tsv in {folder}; "
                    f"its splits: {', '.join(list_splits(folder)) or 'none'}){hint}",
                )
        for i, p in enumerate(src.pairs):
            found = resolve_pairs_file(p, resolve_data)
            if found is None:
                raise ConfigError(f"{prefix}.pairs.{i}", f"file not found: {p} (nor under the data folder)")
            out[f"{prefix}.pairs.{i}"] = found
        if src.mined and not Path(src.mined).expanduser().is_file():
            raise ConfigError(f"{prefix}.mined", f"file not found: {src.mined}")
    return out
