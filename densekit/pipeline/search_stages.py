"""The search stages: build the index, tune its hybrid fusion, evaluate. Each calls the library
code of `densekit index build`, `densekit tune fusion` and `densekit eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from densekit.atomic import write_json_atomic
from densekit.pipeline.context import Context
from densekit.pipeline.stage import Stage

# What a stage's identity holds in place of a value another stage writes at run time.
FROM_FUSION_STAGE = "<from the fusion stage>"


def same_corpus_file(a: Path, b: Path) -> bool:
    """The two BEIR folders hold the same corpus.jsonl (the same folder, or a byte-for-byte copy
    such as `densekit data hold-out` writes)."""
    import filecmp

    fa, fb = a / "corpus.jsonl", b / "corpus.jsonl"
    return a.resolve() == b.resolve() or (fa.is_file() and fb.is_file() and filecmp.cmp(fa, fb, shallow=False))


class BuildIndex(Stage):
    """The served corpus: faiss index (+ BM25 part), with the default mode and fusion stored."""

    name = "index"

    def _model(self, ctx: Context) -> str:
        return ctx.stages.index.model or ctx.retriever_model()

    def deps(self, ctx: Context) -> list[str]:
        return ctx.retriever_stage() if ctx.stages.index.model is None else []

    def identity(self, ctx: Context) -> dict[str, Any]:
        ix = ctx.stages.index
        return {
            **ix.model_dump(mode="json", exclude={"model", "batch_size", "mode"}),
            "data": ctx.index_data(),
            "model": ix.model or ctx.retriever_identity(),
            "mode": ix.resolved_mode(),
        }

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.index_folder() / "manifest.json"]

    def run(self, ctx: Context, folder: Path) -> dict[str, Any]:
        import time

        from densekit.data import load_corpus
        from densekit.encoder import Encoder
        from densekit.index.dense_index import build_from_corpus
        from densekit.models import resolve_encoder_name

        ix = ctx.stages.index
        source = ctx.resolve_data(ctx.index_data())
        corpus = load_corpus(source)
        enc = Encoder.from_settings(ctx.settings, model=resolve_encoder_name(self._model(ctx)), device=ctx.device, batch_size=ix.batch_size)
        t0 = time.perf_counter()
        with build_from_corpus(
            enc,
            corpus,
            kind=ix.kind,
            build_params=ix.build_params,
            search_params=ix.search_params,
            progress=ctx.progress,
            lexical=ix.lexical,
        ) as idx:
            idx.manifest.search_mode = ix.resolved_mode()
            idx.manifest.fusion = ix.fusion
            idx.manifest.extra["source"] = str(source)
            idx.manifest.extra["total_build_s"] = round(time.perf_counter() - t0, 3)
            idx.save(ctx.index_folder())
            n_docs = len(idx)
        ctx.log(f"{ctx.label('index')}: {n_docs} documents, kind {ix.kind}, mode {ix.resolved_mode()} -> {ctx.index_folder()}")
        return {"documents": n_docs, "kind": ix.kind, "mode": ix.resolved_mode(), "seconds": round(time.perf_counter() - t0, 1)}


class TuneFusion(Stage):
    """RRF or the convex weight, chosen on the index dataset's dev or train split (with
    targets: on the target's tuning split; a target without one keeps the index stage's fusion)."""

    name = "fusion"

    def deps(self, ctx: Context) -> list[str]:
        return ["index"]

    def identity(self, ctx: Context) -> dict[str, Any]:
        out = {**ctx.stages.fusion.model_dump(mode="json"), "data": ctx.index_data()}
        if ctx.target is not None:
            out["tune"] = ctx.tuning_split("fusion")
            out["default"] = ctx.stages.index.fusion.model_dump(mode="json")
        return out

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.fusion_file()]

    def run(self, ctx: Context, folder: Path) -> dict[str, Any]:
        from densekit.eval.fusion_tune import METRIC, tune_fusion

        fc = ctx.stages.fusion
        tuning = ctx.tuning_split("fusion")
        if tuning is None:
            default = ctx.stages.index.fusion
            write_json_atomic(ctx.fusion_file(), {"best": default.model_dump(), "tuned": False})
            ctx.log(f"{ctx.label('fusion')}: no tuning split, keeps the index stage's {default.method}")
            return {"best": default.model_dump(), "tuned": False}
        data, split = tuning
        # The index's own corpus: tune on its dense and BM25 parts; another corpus (a held-out
        # split made from pairs): its model and an in-memory BM25 over that corpus.
        same_corpus = same_corpus_file(ctx.resolve_data(data), ctx.resolve_data(ctx.index_data()))
        result = tune_fusion(
            str(ctx.resolve_data(data)),
            split,
            ctx.settings,
            index=str(ctx.index_folder()) if same_corpus else None,
            model=None if same_corpus else (ctx.stages.index.model or ctx.retriever_model()),
            top_k=fc.top_k,
            device=ctx.device,
            progress=ctx.progress,
        )
        write_json_atomic(ctx.fusion_file(), {**result.to_dict(), "tuned": True})
        best, value = result.best
        ctx.log(
            f"{ctx.label('fusion')}: best on {split}: {best.method}{f' alpha={best.alpha}' if best.method == 'convex' else ''} ({METRIC} {value:.4f})"
        )
        return {"best": best.model_dump(), METRIC: value, "dense": result.dense, "lexical": result.lexical, "queries": result.queries}


class Evaluate(Stage):
    """The first stage (the pipeline's bi-encoder in the index's mode, with the tuned fusion)
    and, with a reranker stage, the same first stage reranked, on every dataset listed.
    Each dataset's corpus is encoded into a flat index (the embedding cache makes the index
    dataset's one free), so one table covers every dataset."""

    name = "eval"

    def _mode(self, ctx: Context) -> str:
        ev = ctx.stages.eval
        return ev.mode or (ctx.stages.index.resolved_mode() if ctx.has("index") else "dense")

    def _reranked(self, ctx: Context) -> bool:
        return ctx.stages.eval.rerank and ctx.has("reranker")

    def deps(self, ctx: Context) -> list[str]:
        out = []
        if ctx.stages.eval.model is None and self._mode(ctx) != "lexical":
            out += ctx.retriever_stage()
        if self._mode(ctx) == "hybrid" and ctx.has("fusion"):
            out.append("fusion")
        if self._reranked(ctx):
            out.append("reranker")
        return out

    def _datasets(self, ctx: Context) -> list[dict[str, Any]]:
        ev, spec = ctx.stages.eval, ctx.target_spec()
        if spec is not None:
            return [{"name": spec.data, "split": spec.eval_split, "label": ctx.target}]
        return [d.model_dump(mode="json") for d in ev.datasets or []]

    def suite_dict(self, ctx: Context, fusion=None, resolved: bool = False) -> dict[str, Any]:
        """The `densekit eval --config` suite; `fusion` None: a placeholder for the tuned one;
        `resolved` False: a placeholder for the model the select stage picks."""
        ev = ctx.stages.eval
        mode = self._mode(ctx)
        first: dict[str, Any] = {"name": mode, "mode": mode}
        model = ev.model or (ctx.retriever_model() if resolved else ctx.retriever_identity())
        if mode != "lexical":
            first["model"] = model
        if mode == "hybrid":
            if fusion is None and ctx.has("fusion"):
                first["fusion"] = FROM_FUSION_STAGE
            else:
                settings = fusion or ctx.fusion_settings()
                first.update(fusion=settings.method, alpha=settings.alpha)
        configs = [first]
        if ev.compare_stages:
            # The base model first: the suite's paired tests compare every row against it.
            base = [{"name": "base-dense", "mode": "dense", "model": ctx.base_model()}]
            if mode == "hybrid":
                base.append({"name": "dense", "mode": "dense", "model": model})
            configs = base + configs
        if self._reranked(ctx):
            configs.append({**first, "name": f"{mode}+reranker", "reranker": str(ctx.reranker_model()), "rerank_top_n": ev.rerank_top_n})
        return {
            "datasets": self._datasets(ctx),
            "configurations": configs,
            "top_k": ev.top_k,
            "auc_negatives": ev.auc_negatives,
            "plots": ev.plots,
        }

    def identity(self, ctx: Context) -> dict[str, Any]:
        return self.suite_dict(ctx)

    def outputs(self, ctx: Context) -> list[Path]:
        return [ctx.stage_dir(self.name) / "suite.json"]

    def run(self, ctx: Context, folder: Path) -> dict[str, Any]:
        from densekit.eval.suite import run_suite
        from densekit.eval.suite_config import suite_from_dict

        suite = suite_from_dict(self.suite_dict(ctx, fusion=ctx.fusion_settings() if ctx.has("fusion") else None, resolved=True))
        result = run_suite(suite, folder, ctx.settings, ctx.device, ctx.progress)
        summary: dict[str, Any] = {}
        for dataset, by_config in result.cells.items():
            row: dict[str, Any] = {}
            for name, cell in by_config.items():
                row[name] = {k: cell.metrics[k] for k in ("ndcg@10", "recall@100") if k in cell.metrics}
                if cell.fused is not None:
                    row[f"{name}+rrf"] = {k: cell.fused.reranked[k] for k in ("ndcg@10", "recall@100") if k in cell.fused.reranked}
            summary[dataset] = row
            ctx.log(
                f"{ctx.label('eval')}: {dataset}: " + "  ".join(f"{n} nDCG@10={m.get('ndcg@10', float('nan')):.4f}" for n, m in row.items())
            )
        return summary
