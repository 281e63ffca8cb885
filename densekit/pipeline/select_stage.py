"""The select stage: which blend of the base and the fine-tuned bi-encoder the later stages use.

WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): the weights
(1 - w) * base + w * fine-tuned keep part of what fine-tuning gained while losing less of what
the base model knew. The right w differs per corpus (pooled fine-tuning helps SciFact and
costs NFCorpus), so the stage scores every w of its grid by dense nDCG@10 on the tuning split
(a dev split, or one held out of training: `densekit data hold-out`) and keeps the best; ties go
to the smaller w. The grid always holds 0, the base model, so on the tuning split the choice
never scores below it. Without a tuning split it takes `default_weight`.

    OUT/[targets/NAME/]select/choice.json           weight, scores per weight, split
    OUT/[targets/NAME/]select/candidates/w<W>/      the chosen blend (0 and 1 are the base and
                                                    the biencoder stage's model, not copied)
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from densekit.atomic import write_json_atomic
from densekit.errors import InvalidInputError
from densekit.pipeline.context import Context
from densekit.pipeline.stage import Stage

METRIC = "ndcg@10"


def best_weight(scores: dict[float, float]) -> float:
    """The weight of the highest score; the smallest such weight on a tie."""
    top = max(scores.values())
    return min(w for w, v in scores.items() if v == top)


class SelectWeight(Stage):
    name = "select"

    def deps(self, ctx: Context) -> list[str]:
        return ["biencoder"]

    def identity(self, ctx: Context) -> dict[str, Any]:
        sc = ctx.stages.select
        tuning = ctx.tuning_split("select")
        # Only what this target's choice depends on: a grid change leaves an untuned target alone.
        chosen_by = {"weights": sc.weights, "top_k": sc.top_k} if tuning else {"default_weight": sc.default_weight}
        return {"base": ctx.base_model(), "tune": tuning, **chosen_by}

    def outputs(self, ctx: Context) -> list[Path]:
        # The chosen blend too, once the choice is known: a deleted blend makes the stage re-run.
        out = [ctx.choice_file()]
        try:
            weight = ctx.chosen_weight()
        except InvalidInputError:  # no (readable) choice yet: the choice file's absence decides
            return out
        return out + [Path(ctx.interpolated_model(weight))] if 0.0 < weight < 1.0 else out

    def _write_blends(self, ctx: Context, weights: list[float]) -> None:
        from densekit.training.weight_interpolation import load_for_interpolation, write_interpolated

        blends = [(w, Path(ctx.interpolated_model(w))) for w in weights if 0.0 < w < 1.0]
        if blends:
            write_interpolated(
                load_for_interpolation(ctx.base_model(), "base model"),
                load_for_interpolation(ctx.biencoder_model(), "fine-tuned model"),
                blends,
            )

    def run(self, ctx: Context, folder: Path) -> dict[str, Any]:
        sc = ctx.stages.select
        tuning = ctx.tuning_split("select")
        if tuning is None:
            self._write_blends(ctx, [sc.default_weight])
            choice: dict[str, Any] = {"weight": sc.default_weight, "tuned": False}
            write_json_atomic(ctx.choice_file(), choice)
            ctx.log(f"{ctx.label('select')}: no tuning split, default w = {sc.default_weight:g}")
            return choice
        data, split = tuning
        self._write_blends(ctx, sc.weights)
        scores = self._scores(ctx, data, split)
        weight = best_weight(scores)
        for w in sc.weights:
            if w != weight and 0.0 < w < 1.0:
                shutil.rmtree(ctx.interpolated_model(w), ignore_errors=True)  # only the chosen blend is used later
        choice = {
            "weight": weight,
            "tuned": True,
            "data": data,
            "split": split,
            "metric": METRIC,
            "scores": {f"{w:g}": v for w, v in scores.items()},
        }
        write_json_atomic(ctx.choice_file(), choice)
        ctx.log(
            f"{ctx.label('select')}: w = {weight:g} on {data} {split} (" + ", ".join(f"w {w:g}: {v:.4f}" for w, v in scores.items()) + ")"
        )
        return choice

    def _scores(self, ctx: Context, data: str, split: str) -> dict[float, float]:
        from densekit.eval.suite import evaluate_datasets
        from densekit.eval.suite_config import suite_from_dict

        sc = ctx.stages.select
        suite = suite_from_dict(
            {
                "datasets": [{"name": str(ctx.resolve_data(data)), "split": split}],
                "configurations": [{"name": f"w{w:g}", "mode": "dense", "model": ctx.interpolated_model(w)} for w in sc.weights],
                "top_k": sc.top_k,
                "plots": False,
            }
        )
        cells, _, _ = evaluate_datasets(suite, ctx.settings, device=ctx.device, progress=ctx.progress)
        ((_, by_config),) = cells.items()
        return {w: float(by_config[f"w{w:g}"].metrics[METRIC]) for w in sc.weights}
