"""One `densekit train reranker` run: config -> mined groups -> eval before -> train -> eval after.

Writes into `output_dir`: resolved_config.yaml, mined.jsonl (the training groups, so
another objective can reuse the same negatives; mined-NAME.jsonl per dataset in a pooled
run), learning_curve.json and .png (with `eval.dev`: dev nDCG@10 per dataset vs steps), train.log, training_log.jsonl,
loss_curve.png, model/ (what `load_reranker` reads), eval_before/ and eval_after/
(both stages' metrics, reranked run), summary.json, and checkpoints/ when
`train.save_steps` is set (`resume=True` continues from the latest one).

Under torchrun / accelerate every process mines the same groups (same seed) and trains on
its share of each step; only rank 0 evaluates and writes files.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from densekit.atomic import write_json_atomic
from densekit.errors import ConfigError
from densekit.training.ddp import is_main_process, world_size
from densekit.training.rerank.config import RerankerRunConfig


def _eval_first_stage(cfg: RerankerRunConfig, ds, progress: bool):
    """The run to rerank: the configured TREC file, else dense retrieval with the retriever."""
    if cfg.eval.run:
        from densekit.eval.trec import read_run

        return read_run(cfg.eval.run)
    from densekit.encoder import Encoder
    from densekit.eval.evaluate import retrieve
    from densekit.index.dense_index import build_from_corpus
    from densekit.models import resolve_encoder_name

    enc = Encoder.from_settings(model=resolve_encoder_name(cfg.negatives.retriever), device=cfg.train.device)
    with build_from_corpus(enc, ds.corpus, progress=progress) as idx:
        run, _, _ = retrieve(idx, enc, {q: ds.queries[q] for q in ds.qrels if q in ds.queries}, top_k=max(cfg.eval.top_n, 100))
    return run


def check_paths(cfg: RerankerRunConfig, resolve_data: Callable[[str], Path]) -> None:
    """Fail before any work when a path the config names does not exist."""
    from densekit.training.dataset_sources import check_source_paths

    check_source_paths(cfg.data, resolve_data)
    if cfg.negatives.reuse and not Path(cfg.negatives.reuse).is_file():
        raise ConfigError("negatives.reuse", f"file not found: {cfg.negatives.reuse}")
    if cfg.eval.beir:
        try:
            resolve_data(cfg.eval.beir)
        except Exception as exc:
            raise ConfigError("eval.beir", str(exc)) from None
    if cfg.eval.run and not Path(cfg.eval.run).is_file():
        raise ConfigError("eval.run", f"file not found: {cfg.eval.run}")
    for _, src in cfg.data.sources():
        if src.beir and cfg.eval.beir and src.beir == cfg.eval.beir and src.beir_split == cfg.eval.split:
            raise ConfigError("eval.split", f"evaluating on the training split '{cfg.eval.split}' of {cfg.eval.beir}")


def _reuse_own_groups(cfg: RerankerRunConfig, out: Path) -> RerankerRunConfig:
    """A resumed run trains on the groups its checkpoint was trained on, not a second mining run."""
    from densekit.eval.cell import safe_name

    if not cfg.data.datasets:
        if (out / "mined.jsonl").is_file() and not cfg.negatives.reuse:
            return cfg.model_copy(update={"negatives": cfg.negatives.model_copy(update={"reuse": str(out / "mined.jsonl")})})
        return cfg
    entries = []
    for src in cfg.data.datasets:
        own = out / f"mined-{safe_name(src.label())}.jsonl"
        entries.append(src.model_copy(update={"mined": str(own)}) if src.beir and not src.mined and own.is_file() else src)
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"datasets": entries})})


def run_eval(cfg: RerankerRunConfig, reranker, ds, first_stage, out: Path, progress: bool) -> dict[str, Any]:
    from densekit.eval.rerank import evaluate_rerank, headline, write_rerank_report

    outcome = evaluate_rerank(
        reranker, ds, first_stage, top_n=cfg.eval.top_n, max_queries=cfg.eval.max_queries, batch_size=cfg.eval.batch_size, progress=progress
    )
    write_rerank_report(out, outcome)
    return {"first_stage": headline(outcome.first_stage), "reranked": headline(outcome.reranked), **outcome.info}


def train_reranker(
    cfg: RerankerRunConfig,
    resolve_data: Callable[[str], Path],
    log: Callable[[str], None] = print,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """The whole run; `resume` continues training from the latest checkpoint in
    `output_dir/checkpoints` (ConfigError when there is none), reusing the run's mined groups."""
    from densekit.rerankers import load_reranker
    from densekit.training.curves import plot_loss_curve, write_training_log
    from densekit.training.rerank.checkpoints import latest_checkpoint
    from densekit.training.rerank.learning_curve import CURVE_JSON, LearningCurve
    from densekit.training.rerank.train_data import load_training_data
    from densekit.training.run_config import write_resolved_config

    check_paths(cfg, resolve_data)
    if cfg.kind == "llm" and cfg.train.bf16:
        from densekit.backends import check_bf16_device
        from densekit.devices import resolve_device

        check_bf16_device(resolve_device(cfg.train.device).split(":")[0])  # before any mining or writing
    out = Path(cfg.output_dir)
    checkpoint = latest_checkpoint(out) if resume else None
    if checkpoint is not None:
        cfg = _reuse_own_groups(cfg, out)
    main = is_main_process()  # under torchrun every process trains; only rank 0 evaluates and writes
    logfile = None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_resolved_config(cfg, out, {"command": "densekit train reranker", "world_size": world_size()})
        logfile = (out / "train.log").open("a", encoding="utf-8")

    def _log(msg: str) -> None:
        if logfile is None:
            return
        logfile.write(f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} {msg}\n")
        logfile.flush()
        log(msg)

    if checkpoint is not None:
        _log(f"resuming from {checkpoint}")
    summary: dict[str, Any] = {"kind": cfg.kind, "objective": cfg.objective, "base_model": cfg.base_model(), "world_size": world_size()}
    t0 = time.perf_counter()
    data = load_training_data(cfg, out, resolve_data, progress=progress and main, write=main)
    groups = data.groups
    if not groups:
        raise ConfigError("data", "no training group has both a positive and a negative")
    summary["training_queries"] = len(groups)
    if cfg.data.datasets or data.dev:
        summary["datasets"] = data.notes
    summary["mine_s"] = round(time.perf_counter() - t0, 2)
    mined = ", ".join(str(p) for p in data.mined.values())
    _log(f"{len(groups)} training groups ({'mined to ' + mined if mined else 'given'})")
    for label, notes in data.notes.items():
        if len(data.notes) > 1 or "dev" in notes:
            _log(f"  {label}: {json.dumps(notes)}")
    curve = None
    if data.dev and main and cfg.eval.dev is not None:
        curve = LearningCurve(
            data.dev, cfg.eval.dev.top_n, cfg.eval.dev.batch_size, out, cfg.eval.every_steps, f"{cfg.kind} reranker ({cfg.objective}), dev"
        )

    ds = first = None
    if cfg.eval.beir and main:
        from densekit.data import load_beir

        ds = load_beir(resolve_data(cfg.eval.beir), cfg.eval.split)
        first = _eval_first_stage(cfg, ds, progress)
        if cfg.eval.before:
            base = load_reranker(
                cfg.base_model(), kind=cfg.kind, device=cfg.train.device, dtype=cfg.eval.dtype, max_length=cfg.train.max_length
            )
            summary["eval_before"] = run_eval(cfg, base, ds, first, out / "eval_before", progress)
            _log("eval before: " + json.dumps(summary["eval_before"]))
            del base

    model_dir = out / "model"
    t1 = time.perf_counter()
    if cfg.kind == "llm":
        from densekit.training.rerank.llm_trainer import train_llm_reranker

        history = train_llm_reranker(cfg, groups, model_dir, log=_log, progress=progress and main, resume_from=checkpoint, curve=curve)
    else:
        from densekit.training.rerank.cross_trainer import train_cross_encoder

        history = train_cross_encoder(cfg, groups, model_dir, log=_log, progress=progress and main, resume_from=checkpoint, curve=curve)
    summary["train_s"] = round(time.perf_counter() - t1, 2)
    summary["steps"] = cfg.train.max_steps
    summary["model_dir"] = str(model_dir)
    if curve is not None and curve.points:
        summary["learning_curve"] = {"file": str(out / CURVE_JSON), "last": curve.as_dict()["points"][-1]}
    if not main:
        return summary
    write_training_log(history, out / "training_log.jsonl")
    plot_loss_curve(history, out / "loss_curve.png", title=f"{cfg.kind} reranker, {cfg.objective} loss")
    _log(f"trained in {summary['train_s']} s -> {model_dir}")

    if ds is not None:
        trained = load_reranker(str(model_dir), kind=cfg.kind, device=cfg.train.device, dtype=cfg.eval.dtype)
        summary["eval_after"] = run_eval(cfg, trained, ds, first, out / "eval_after", progress)
        _log("eval after: " + json.dumps(summary["eval_after"]))
    summary["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(out / "summary.json", summary)
    if logfile is not None:
        logfile.close()
    return summary
