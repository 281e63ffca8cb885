"""Plan and run a pipeline: which stages run and why, then run them in order.

A configured stage runs when it is forced (`from_stage` and the stages reading its outputs),
when one of its inputs runs, when it has no stamp, when its config hash or its inputs' stamp
ids differ from the stamp's, or when an output is missing; otherwise it is skipped and its
outputs are left untouched. A stage about to run loses its stamp and its folder first, so a
run that stops half way leaves no stamp and the next run starts that stage over.

With targets, the shared stages run first, then each target's stages in turn; a per-target
stage is one unit of the plan per target (its own stamp), so a change that concerns one
target re-runs that target's stages only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from densekit.errors import ConfigError
from densekit.pipeline.config import PER_TARGET, STAGES, PipelineConfig, load_pipeline_config
from densekit.pipeline.context import Context
from densekit.pipeline.search_stages import BuildIndex, Evaluate, TuneFusion
from densekit.pipeline.select_stage import SelectWeight
from densekit.pipeline.serve_stage import WriteServable
from densekit.pipeline.stage import Stage
from densekit.pipeline.stamps import Stamp, config_hash, now, read_stamp, stamp_path, write_stamp
from densekit.pipeline.train_stages import Mine, TrainBiencoder, TrainReranker
from densekit.settings import Settings

REGISTRY: dict[str, Stage] = {
    s.name: s for s in (Mine(), TrainBiencoder(), SelectWeight(), BuildIndex(), TuneFusion(), TrainReranker(), Evaluate(), WriteServable())
}
assert tuple(REGISTRY) == STAGES, "the registry lists the stages in their run order"

LOG_FILE = "pipeline_log.jsonl"
RESOLVED_FILE = "pipeline.resolved.yaml"

Action = Literal["run", "skip", "off"]


@dataclass
class StageDecision:
    stage: str
    action: Action
    reason: str
    deps: list[str] = field(default_factory=list)
    config_sha256: str | None = None
    seconds: float | None = None  # set once the stage has run
    target: str | None = None  # the target of a per-target stage (None: no targets, or a shared stage)

    @property
    def label(self) -> str:
        return f"{self.stage}[{self.target}]" if self.target is not None else self.stage

    def line(self) -> str:
        took = f" ({self.seconds:.1f} s)" if self.seconds is not None else ""
        return f"{self.action:<4} {self.label:<10} {self.reason}{took}"


def open_pipeline(
    config: str | Path, settings: Settings | None = None, progress: bool = True, log: Callable[[str], None] = print
) -> Context:
    """Load and check a pipeline config (every dataset, split and model folder it names) into
    the context its stages share; nothing is written."""
    from densekit.data.folders import resolve_dataset_folder

    settings = settings or Settings()

    def resolve_data(name: str) -> Path:
        return resolve_dataset_folder(name, settings.data_dir)

    cfg = load_pipeline_config(config, resolve_data)
    return Context(cfg, Path(cfg.out).expanduser().resolve(), settings, resolve_data, progress, log)


def check_from_stage(cfg: PipelineConfig, from_stage: str | None) -> None:
    if from_stage is None:
        return
    if from_stage not in STAGES:
        raise ConfigError("--from", f"unknown stage '{from_stage}' (stages: {', '.join(STAGES)})")
    if from_stage not in cfg.enabled():
        raise ConfigError("--from", f"stage '{from_stage}' is not in the config (configured: {', '.join(cfg.enabled())})")


def units(ctx: Context) -> list[tuple[str, str | None]]:
    """(stage, target) in run order: every stage once without targets; with targets the shared
    stages, then each target's stages."""
    if ctx.cfg.targets is None:
        return [(name, None) for name in STAGES]
    shared = [(name, None) for name in STAGES if name not in PER_TARGET]
    return shared + [(name, t) for t in ctx.targets() for name in STAGES if name in PER_TARGET]


def plan(ctx: Context, from_stage: str | None = None) -> list[StageDecision]:
    """What a run would do, stage by stage; reads stamps, writes nothing."""
    check_from_stage(ctx.cfg, from_stage)
    enabled = ctx.cfg.enabled()
    running: set[tuple[str, str | None]] = set()
    out: list[StageDecision] = []
    for name, target in units(ctx):
        if name not in enabled:
            if target is None or target == ctx.targets()[0]:
                out.append(StageDecision(name, "off", "not in the config"))
            continue
        tctx = ctx.for_target(target)
        stage = REGISTRY[name]
        deps = [d for d in stage.deps(tctx) if d in enabled]
        digest = config_hash(stage.identity(tctx), ctx.out)
        stamp = read_stamp(tctx.stage_dir(name))
        reason = _why_run(tctx, name, deps, digest, stamp, running, from_stage)
        if reason is not None:
            running.add((name, target))
        action: Action = "run" if reason else "skip"
        out.append(StageDecision(name, action, reason or "up to date (stamp matches config and inputs)", deps, digest, target=target))
    return out


def _dep_key(ctx: Context, dep: str) -> tuple[str, str | None]:
    return (dep, ctx.target if dep in PER_TARGET else None)


def _why_run(
    ctx: Context, name: str, deps: list[str], digest: str, stamp: Stamp | None, running: set[tuple[str, str | None]], from_stage: str | None
) -> str | None:
    if name == from_stage:
        return f"forced by --from {from_stage}"
    if ran := [d for d in deps if _dep_key(ctx, d) in running]:
        return f"input {', '.join(ran)} runs"
    if stamp is None:
        return "no stamp (never ran here, or its last run did not finish)"
    if stamp.config_sha256 != digest:
        return "its config changed"
    current = {d: s.stamp_id if (s := read_stamp(ctx.stage_dir(d))) else None for d in deps}
    if changed := sorted(d for d in set(current) | set(stamp.inputs) if current.get(d) != stamp.inputs.get(d)):
        return f"input {', '.join(changed)} changed since it ran"
    if missing := [p for p in REGISTRY[name].outputs(ctx) if not p.exists()]:
        return f"output missing: {missing[0].relative_to(ctx.out) if missing[0].is_relative_to(ctx.out) else missing[0]}"
    return None


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One pipeline run per output folder at a time."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError("out", f"another `densekit pipeline run` is writing {out}") from None
        yield


def _append_log(out: Path, record: dict[str, Any]) -> None:
    with open(out / LOG_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _clear(folder: Path) -> None:
    stamp_path(folder).unlink(missing_ok=True)  # first: a crash below must leave no stamp behind
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def _plain(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary as plain JSON values (numpy scalars from metrics become numbers)."""
    return json.loads(json.dumps(summary, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def run_pipeline(
    ctx: Context, from_stage: str | None = None, on_decision: Callable[[StageDecision], None] | None = None
) -> list[StageDecision]:
    """Run every stage the plan says runs, in order; each one's stamp is written last, after
    all its outputs. Returns the decisions, with the seconds of those that ran."""
    import yaml

    from densekit.atomic import write_text_atomic

    decisions = plan(ctx, from_stage)
    with _exclusive(ctx.out):
        write_text_atomic(ctx.out / RESOLVED_FILE, yaml.safe_dump(ctx.cfg.model_dump(mode="json"), sort_keys=False))
        for d in decisions:
            tctx = ctx.for_target(d.target)
            if d.action == "run":
                folder = tctx.stage_dir(d.stage)
                _clear(folder)
                started, t0 = now(), time.perf_counter()
                ctx.log(f"stage {d.label}: {d.reason}")
                summary = REGISTRY[d.stage].run(tctx, folder)
                d.seconds = round(time.perf_counter() - t0, 2)
                inputs = {dep: s.stamp_id for dep in d.deps if (s := read_stamp(tctx.stage_dir(dep))) is not None}
                outputs = [str(p.relative_to(ctx.out)) for p in REGISTRY[d.stage].outputs(tctx)]
                stamp = Stamp(
                    d.stage, d.config_sha256 or "", inputs, started_at=started, seconds=d.seconds, outputs=outputs, summary=_plain(summary)
                )
                write_stamp(folder, stamp)
            if d.action != "off":
                record = {"at": now(), "stage": d.stage, "action": d.action, "reason": d.reason, "seconds": d.seconds}
                _append_log(ctx.out, record if d.target is None else {**record, "target": d.target})
            if on_decision is not None:
                on_decision(d)
    return decisions
