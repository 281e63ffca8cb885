"""The learning curve of a reranker run: nDCG@10 on the dev queries every `eval.every_steps`.

`DevCurveCallback` is a transformers `TrainerCallback`, so the cross-encoder (sentence-
transformers' trainer) and the LLM reranker (a plain `Trainer`) share it: at step 0 (with
`eval.dev.at_start`), every N steps and after the last one, rank 0 wraps the model being
trained in the reranker the run will serve (`make_reranker`), reranks each dev set's dense
top-n with the evaluation protocol of `densekit.eval.rerank`, and rewrites
`learning_curve.json` and `learning_curve.png` (so a long run shows its curve while it
trains). Per point: nDCG@10 per dataset and pooled (the mean over every dev query of every
dataset), with each dataset's first-stage nDCG@10 as the line to beat.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from densekit.atomic import write_json_atomic
from densekit.training.rerank.dev_split import DevSet

CURVE_JSON = "learning_curve.json"
CURVE_PNG = "learning_curve.png"
METRIC = "ndcg@10"


class LearningCurve:
    """The dev sets, the points measured so far, and the files they are written to."""

    def __init__(self, dev: list[DevSet], top_n: int, batch_size: int, out_dir: Path, every_steps: int | None, title: str = ""):
        self.dev = dev
        self.top_n = top_n
        self.batch_size = batch_size
        self.out_dir = Path(out_dir)
        self.every_steps = every_steps
        self.title = title
        self.first_stage: dict[str, dict[str, Any]] = {}
        self.points: list[dict[str, Any]] = []

    def measure(self, reranker, step: int, elapsed_s: float | None = None) -> dict[str, Any]:
        """Rerank every dev set with `reranker`, record one point and rewrite the files."""
        from densekit.eval.rerank import evaluate_rerank

        t0 = time.perf_counter()
        values: dict[str, float] = {}
        total = weighted = first_weighted = 0.0
        for dev in self.dev:
            outcome = evaluate_rerank(reranker, dev.dataset, dev.first_stage, top_n=self.top_n, batch_size=self.batch_size, progress=False)
            n = int(outcome.info["queries"])
            values[dev.name] = round(float(outcome.reranked[METRIC]), 4)
            first = float(outcome.first_stage[METRIC])
            self.first_stage[dev.name] = {"queries": n, "from": dev.source, "first_stage": round(first, 4)}
            total += n
            weighted += n * float(outcome.reranked[METRIC])
            first_weighted += n * first
        point: dict[str, Any] = {"step": int(step), "pooled": round(weighted / total, 4) if total else None, "datasets": values}
        if elapsed_s is not None:
            point["elapsed_s"] = round(elapsed_s, 2)
        point["eval_s"] = round(time.perf_counter() - t0, 2)
        self.points = [p for p in self.points if p["step"] != step] + [point]
        self.first_stage_pooled = round(first_weighted / total, 4) if total else None
        self.write()
        return point

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": METRIC,
            "top_n": self.top_n,
            "every_steps": self.every_steps,
            "datasets": self.first_stage,
            "first_stage_pooled": getattr(self, "first_stage_pooled", None),
            "points": sorted(self.points, key=lambda p: p["step"]),
        }

    def write(self) -> None:
        from densekit.training.curves import plot_learning_curve

        data = self.as_dict()
        write_json_atomic(self.out_dir / CURVE_JSON, data)
        plot_learning_curve(data, self.out_dir / CURVE_PNG, title=self.title)

    def resume(self, step: int) -> None:
        """Keep the points a resumed run already measured, up to the checkpoint's `step`."""
        path = self.out_dir / CURVE_JSON
        if not path.is_file():
            return
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            return
        self.points = [p for p in old.get("points", []) if int(p.get("step", -1)) <= step]
        self.first_stage = old.get("datasets", {})
        self.first_stage_pooled = old.get("first_stage_pooled")


class DevCurveCallback(TrainerCallback):
    """Measures `curve` at step 0 (when `at_start`), every `every_steps` and at the last step."""

    def __init__(self, curve: LearningCurve, make_reranker: Callable[[Any], Any], at_start: bool, log: Callable[[str], None] = print):
        self.curve = curve
        self.make_reranker = make_reranker
        self.at_start = at_start
        self.log = log
        self.started = time.perf_counter()

    def _measure(self, model, step: int) -> None:
        was_training = model.training
        model.eval()  # no dropout (LoRA's included) while measuring
        try:
            point = self.curve.measure(self.make_reranker(model), step, time.perf_counter() - self.started)
        finally:
            model.train(was_training)
        self.log("dev " + json.dumps(point))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.started = time.perf_counter()
        if not state.is_world_process_zero or model is None:
            return control
        if state.global_step > 0:
            self.curve.resume(state.global_step)
        elif self.at_start:
            self._measure(model, 0)
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return control
        every = self.curve.every_steps
        step = state.global_step
        if (every and step % every == 0) or step >= state.max_steps:
            self._measure(model, step)
        return control
