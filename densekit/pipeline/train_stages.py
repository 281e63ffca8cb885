"""The training stages: mine hard negatives, train the bi-encoder, train the reranker. Each
calls the library code `densekit train ...` runs (training/), with the pipeline's paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from densekit.pipeline.context import Context
from densekit.pipeline.stage import Stage


def _beir_sources(ctx: Context):
    """(label, source) of every biencoder source that has BEIR qrels (those are mined)."""
    return [(src.label(), src) for _, src in ctx.stages.biencoder.data.sources() if src.beir]


class Mine(Stage):
    """Hard negatives for each BEIR source of the biencoder stage, with its base model, its
    seed and its query selection (so the pairs are the ones its own mining would build)."""

    name = "mine"

    def _model(self, ctx: Context) -> str:
        return ctx.stages.mine.model or ctx.stages.biencoder.model

    def identity(self, ctx: Context) -> dict[str, Any]:
        bi = ctx.stages.biencoder
        return {
            "model": self._model(ctx),
            "seed": bi.seed,
            "max_seq_length": bi.eval.max_seq_length,
            "params": ctx.stages.mine.model_dump(mode="json", exclude={"model", "enabled", "reuse", "batch_size"}),
            "sources": [
                {"label": label, "beir": src.beir, "split": src.beir_split, "min_grade": src.min_grade, "max_queries": src.max_queries}
                for label, src in _beir_sources(ctx)
            ],
        }

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.mined_file(label) for label, _ in _beir_sources(ctx)]

    def run(self, ctx: Context, folder: Path) -> dict[str, Any]:
        from densekit.data import load_beir
        from densekit.encoder import Encoder
        from densekit.models import resolve_encoder_name
        from densekit.training.mining import mine_hard_negatives, write_mined
        from densekit.training.pairs_data import pairs_from_beir

        mc, bi = ctx.stages.mine, ctx.stages.biencoder
        params = mc.params(bi.seed)
        encoder = Encoder.from_settings(
            ctx.settings,
            model=resolve_encoder_name(self._model(ctx)),
            device=ctx.device,
            batch_size=mc.batch_size,
            max_seq_length=bi.eval.max_seq_length,
        )
        summary: dict[str, Any] = {}
        for label, src in _beir_sources(ctx):
            ds = load_beir(ctx.resolve_data(src.beir), src.beir_split)
            pairs = pairs_from_beir(ds, src.min_grade, src.max_queries, bi.seed)
            mined, stats = mine_hard_negatives(encoder, ds, pairs, params, progress=ctx.progress)
            write_mined(mined, ctx.mined_file(label))
            summary[label] = stats.as_dict()
            ctx.log(f"mine: {label}: {stats.negatives} negatives for {stats.queries} queries")
        return summary


class TrainBiencoder(Stage):
    name = "biencoder"

    def deps(self, ctx: Context) -> list[str]:
        return ["mine"] if ctx.has("mine") else []

    def run_config(self, ctx: Context, folder: Path):
        """The `densekit train biencoder` config this stage runs: output in `folder`, and the
        mine stage's files in place of mining."""
        section = ctx.stages.biencoder
        cfg = section.model_copy(update={"output_dir": str(folder)})
        if "device" not in section.model_fields_set:
            cfg = cfg.model_copy(update={"device": ctx.device})
        if ctx.has("mine"):
            if cfg.data.datasets:
                entries = [d.model_copy(update={"mined": str(ctx.mined_file(d.label()))}) if d.beir else d for d in cfg.data.datasets]
                cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"datasets": entries})})
            else:
                label = _beir_sources(ctx)[0][0]
                cfg = cfg.model_copy(update={"mining": cfg.mining.model_copy(update={"reuse": str(ctx.mined_file(label))})})
        return cfg

    def identity(self, ctx: Context) -> dict[str, Any]:
        return self.run_config(ctx, ctx.stage_dir(self.name)).model_dump(mode="json", exclude={"output_dir", "device"})

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.stage_dir(self.name) / "model"]

    def run(self, ctx: Context, folder: Path) -> dict[str, Any]:
        from densekit.training.biencoder import run_biencoder

        cfg = self.run_config(ctx, folder)
        result = run_biencoder(cfg, ctx.resolve_data, progress=ctx.progress)
        t = result.train
        ctx.log(f"biencoder: {t.get('steps')} steps in {t.get('seconds', 0):.0f} s -> {result.model_dir}")
        return {
            "train": {k: t.get(k) for k in ("steps", "seconds", "first_loss", "last_loss")},
            "before": result.before,
            "after": result.after,
        }


class TrainReranker(Stage):
    name = "reranker"

    def _retriever_from_pipeline(self, ctx: Context) -> bool:
        return "retriever" not in ctx.stages.reranker.negatives.model_fields_set

    def deps(self, ctx: Context) -> list[str]:
        return ["biencoder"] if ctx.has("biencoder") and self._retriever_from_pipeline(ctx) else []

    def run_config(self, ctx: Context, folder: Path):
        """The `densekit train reranker` config: output in `folder`; negatives mined with the
        pipeline's bi-encoder unless the section names a retriever."""
        section = ctx.stages.reranker
        cfg = section.model_copy(update={"output_dir": str(folder)})
        if self._retriever_from_pipeline(ctx):
            cfg = cfg.model_copy(update={"negatives": cfg.negatives.model_copy(update={"retriever": ctx.biencoder_model()})})
        if "device" not in section.train.model_fields_set:
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"device": ctx.device})})
        return cfg

    def identity(self, ctx: Context) -> dict[str, Any]:
        data = self.run_config(ctx, ctx.stage_dir(self.name)).model_dump(mode="json", exclude={"output_dir"})
        data["train"].pop("device", None)
        return data

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.reranker_model()]

    def run(self, ctx: Context, folder: Path) -> dict[str, Any]:
        from densekit.training.rerank.run import train_reranker

        cfg = self.run_config(ctx, folder)
        summary = train_reranker(cfg, ctx.resolve_data, log=lambda m: ctx.log(f"reranker: {m}"), progress=ctx.progress)
        return {
            k: summary[k]
            for k in ("kind", "objective", "steps", "train_s", "training_queries", "eval_before", "eval_after")
            if k in summary
        }
