"""The serve stage: a folder `densekit serve --config FOLDER/serve.yaml` serves as it is.

    FOLDER/index/       a copy of the index stage's folder, with the tuned fusion in its manifest
    FOLDER/model/       the trained (or interpolated) bi-encoder, when the index's encoder is one the
                        pipeline wrote (not when the select stage kept the base model)
    FOLDER/reranker/    the trained reranker (with a reranker stage)
    FOLDER/serve.yaml   the settings, paths relative to FOLDER

Copies, not links: the server's live updates rewrite the index folder, and the stage
outputs they came from must keep matching their stamps.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from densekit.atomic import write_text_atomic
from densekit.pipeline.context import FROM_SELECT_STAGE, Context
from densekit.pipeline.search_stages import FROM_FUSION_STAGE
from densekit.pipeline.stage import Stage

SERVE_FILE = "serve.yaml"


class WriteServable(Stage):
    name = "serve"

    def _trained_encoder(self, ctx: Context) -> bool:
        """The index's encoder comes from a stage (trained, or chosen by select)."""
        return ctx.has("biencoder") and ctx.stages.index.model is None

    def _copies_model(self, ctx: Context) -> bool:
        """At run time: the encoder is one the pipeline wrote (select may keep the base model)."""
        return self._trained_encoder(ctx) and ctx.retriever_model() != ctx.base_model()

    @staticmethod
    def _named(model: str) -> str:
        """The base model as serve.yaml names it: a local folder by its absolute path (the file's
        relative paths are read from its own folder), a hub name as it is."""
        local = Path(model).expanduser()
        return str(local.resolve()) if local.exists() else model

    def _rerank_top_n(self, ctx: Context) -> int | None:
        sv = ctx.stages.serve
        if sv.rerank_top_n is not None:
            return sv.rerank_top_n
        return ctx.stages.eval.rerank_top_n if ctx.has("eval") and ctx.has("reranker") else None

    def deps(self, ctx: Context) -> list[str]:
        out = ["index"]
        if ctx.has("fusion"):
            out.append("fusion")
        if self._trained_encoder(ctx):
            out += ctx.retriever_stage()
        if ctx.has("reranker"):
            out.append("reranker")
        return out

    def settings(self, ctx: Context, resolved: bool = True) -> dict[str, Any]:
        """serve.yaml's content (paths relative to the folder); `resolved` False: a placeholder
        for the model the select stage picks (a stage identity, known before it runs)."""
        values: dict[str, Any] = {"index_dir": "index"}
        if self._trained_encoder(ctx):
            if not resolved and ctx.has("select"):
                values["model"] = FROM_SELECT_STAGE
            else:
                values["model"] = "model" if self._copies_model(ctx) else self._named(ctx.retriever_model())
        if ctx.has("reranker"):
            values.update(reranker="reranker", reranker_kind=ctx.stages.reranker.kind)
        if (n := self._rerank_top_n(ctx)) is not None:
            values["rerank_top_n"] = n
        return {**values, **ctx.stages.serve.settings}

    def identity(self, ctx: Context) -> dict[str, Any]:
        return {"settings": self.settings(ctx, resolved=False), "fusion": FROM_FUSION_STAGE if ctx.has("fusion") else None}

    def outputs(self, ctx: Context) -> list[Path]:
        folder = ctx.stage_dir(self.name)
        return [folder / SERVE_FILE, folder / "index" / "manifest.json"]

    def run(self, ctx: Context, folder: Path) -> dict[str, Any]:
        from densekit.index.manifest import update_search_defaults

        shutil.copytree(ctx.index_folder(), folder / "index")
        if ctx.has("fusion"):
            update_search_defaults(folder / "index", search_mode="hybrid", fusion=ctx.fusion_settings())
        if self._copies_model(ctx):
            shutil.copytree(ctx.retriever_model(), folder / "model")
        if ctx.has("reranker"):
            shutil.copytree(ctx.reranker_model(), folder / "reranker")
        values = self.settings(ctx)
        header = (
            "# Written by `densekit pipeline run` (stage serve). Serve this folder with\n"
            f"#   densekit serve --config {folder / SERVE_FILE}\n"
            "# Paths are relative to this file's folder; flags and DENSEKIT_* variables win over these values.\n"
        )
        write_text_atomic(folder / SERVE_FILE, header + yaml.safe_dump(values, sort_keys=False))
        ctx.log(f"{ctx.label('serve')}: {folder} (densekit serve --config {folder / SERVE_FILE})")
        return {"folder": str(folder), "settings": values}
