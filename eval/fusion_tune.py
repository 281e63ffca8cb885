"""Choosing a hybrid index's fusion settings on a dev or train split (`densekit tune fusion`).

The dense and the lexical run of the split's queries are retrieved once (through the same
evaluation path as `densekit eval`); then RRF and the convex combination at every weight of
a grid are scored by nDCG@10, and the best wins (RRF on a tie: it has no weight to fit). A test
split is refused: a weight picked on the test queries would make their scores an
overestimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from densekit.errors import ConfigError
from densekit.eval.hybrid import hybrid_run
from densekit.eval.metrics import trec_metrics
from densekit.eval.trec import Run
from densekit.fusion import FusionSettings

ALPHAS: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(11))
METRIC = "ndcg@10"


def check_tuning_split(split: str) -> None:
    """ConfigError for a split that is (or contains) a test split."""
    if "test" in split.lower():
        raise ConfigError(
            "split",
            f"fusion settings are fitted on a dev or train split, never on '{split}' (its scores would no longer be an unbiased test)",
        )


@dataclass
class FusionTuning:
    dataset: str
    split: str
    queries: int
    dense: float  # METRIC of each list alone
    lexical: float
    grid: list[tuple[FusionSettings, float]] = field(default_factory=list)  # every candidate and its METRIC

    @property
    def best(self) -> tuple[FusionSettings, float]:
        # max keeps the first of equals: RRF, listed first, wins a tie.
        return max(self.grid, key=lambda item: item[1])

    def to_dict(self) -> dict:
        best, value = self.best
        return {
            "dataset": self.dataset,
            "split": self.split,
            "queries": self.queries,
            "metric": METRIC,
            "dense": self.dense,
            "lexical": self.lexical,
            "best": {**best.model_dump(), METRIC: value},
            "grid": [{**s.model_dump(), METRIC: v} for s, v in self.grid],
        }


def grid_scores(
    dense: Run, lexical: Run, qrels: dict[str, dict[str, int]], top_k: int, alphas=ALPHAS
) -> list[tuple[FusionSettings, float]]:
    """METRIC of RRF and of the convex combination at each alpha."""
    candidates = [FusionSettings(method="rrf")] + [FusionSettings(method="convex", alpha=a) for a in alphas]
    return [(c, trec_metrics(qrels, hybrid_run(dense, lexical, c, top_k)).aggregate[METRIC]) for c in candidates]


def tune_fusion(
    data: str,
    split: str,
    settings,
    model: str | None = None,
    index: str | None = None,
    top_k: int = 1000,
    device: str | None = None,
    progress: bool = True,
) -> FusionTuning:
    """Fit the fusion settings on `split` of dataset `data` with a model (BM25 over the corpus in
    memory) or an index folder (its own dense and lexical parts)."""
    from densekit.eval.suite import evaluate_datasets
    from densekit.eval.suite_config import suite_from_dict

    check_tuning_split(split)
    first_stage = {"index": index} if index else {}
    if model:
        first_stage["model"] = model
    suite = suite_from_dict(
        {
            "datasets": [{"name": data, "split": split}],
            "configurations": [{"name": "dense", "mode": "dense", **first_stage}, {"name": "lexical", "mode": "lexical", **first_stage}],
            "top_k": top_k,
            "plots": False,
        }
    )
    cells, loaded, _ = evaluate_datasets(suite, settings, device=device, progress=progress)
    ((label, by_config),) = cells.items()
    dense, lexical = by_config["dense"], by_config["lexical"]
    qrels = loaded[label].qrels
    return FusionTuning(
        label, split, len(qrels), dense.metrics[METRIC], lexical.metrics[METRIC], grid_scores(dense.run, lexical.run, qrels, top_k)
    )
