"""Cross-encoder reranker: a sentence-transformers `CrossEncoder` behind the `Reranker` interface.

Any hub or local sequence-classification model with one output (e.g. the ms-marco MiniLM
cross-encoders, or one densekit trained with `cross_trainer.py`) works. Scores are
sigmoid(logit) in [0, 1], what sentence-transformers' CrossEncoder serves for one label.
A folder written by `densekit export --cross-encoder` runs its ONNX / OpenVINO graph instead
of torch; `backend`/`precision` pick another runtime for a plain folder (exported first, cached).
"""

from __future__ import annotations

from pathlib import Path

from densekit.backends import Runtime, check_bf16_device, resolve_runtime
from densekit.devices import resolve_device, resolve_dtype
from densekit.errors import ConfigError, ModelLoadError

DEFAULT_MAX_LENGTH = 512


class CrossEncoderReranker:
    kind = "cross-encoder"

    def __init__(self, model, name: str, batch_size: int = 32, runtime: Runtime | None = None):
        self.model = model  # sentence_transformers.CrossEncoder
        self.name = name
        self.runtime = runtime or Runtime()
        self.batch_size = batch_size
        self.max_length = int(model.max_seq_length or DEFAULT_MAX_LENGTH)

    @classmethod
    def load(
        cls,
        name_or_path: str,
        device: str | None = "auto",
        dtype: str | None = "auto",
        max_length: int | None = None,
        backend: str | None = None,
        precision: str | None = None,
        threads: int = 0,
    ) -> CrossEncoderReranker:
        import torch
        from sentence_transformers import CrossEncoder

        path = Path(name_or_path).expanduser()
        src = str(path) if path.exists() else name_or_path
        runtime, meta = resolve_runtime(src, backend, precision)
        if meta is None and runtime.backend != "torch":
            from densekit.backends import read_export_metadata
            from densekit.export import export_model

            src = str(export_model(src, "cross-encoder", runtime.backend, runtime.precision))
            meta = read_export_metadata(src)
        if runtime.backend != "torch":
            if device not in (None, "auto", "cpu"):
                raise ConfigError("device", f"the {runtime.backend} backend runs on the CPU, not {device}")
            device, dtype = "cpu", "float32"
        dev = resolve_device(device)
        dt = resolve_dtype(dev, dtype, model=Path(src))  # fp16 for fp32 checkpoints on CUDA
        if runtime.precision == "bf16":
            check_bf16_device(dev)
            dt = "bfloat16"
        try:
            model = CrossEncoder(src, device=dev, max_length=max_length, model_kwargs={"dtype": getattr(torch, dt)})
        except Exception as exc:  # missing files, offline hub, wrong architecture
            raise ModelLoadError(f"cannot load cross-encoder '{name_or_path}': {exc}") from None
        if meta is not None:
            from densekit.exported_runtime import attach_graph

            attach_graph(model, src, meta, threads=threads)
        if model.num_labels != 1:
            raise ModelLoadError(f"cross-encoder '{name_or_path}' has {model.num_labels} labels; a reranker needs 1")
        if max_length is None and not model.max_seq_length:
            model.max_seq_length = DEFAULT_MAX_LENGTH
        model.eval()
        return cls(model, name=name_or_path, runtime=runtime)

    def score(self, query: str, documents: list[str], batch_size: int | None = None) -> list[float]:
        if not documents:
            return []
        scores = self.model.predict(
            [(query, d) for d in documents],
            batch_size=batch_size or self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return [float(s) for s in scores]

    def score_pairs(self, pairs: list[tuple[str, str]], batch_size: int | None = None) -> list[float]:
        """Scores of (query, document) pairs with different queries, batched together."""
        if not pairs:
            return []
        scores = self.model.predict(list(pairs), batch_size=batch_size or self.batch_size, show_progress_bar=False, convert_to_numpy=True)
        return [float(s) for s in scores]

    def count_tokens(self, query: str, documents: list[str]) -> list[int]:
        tok = self.model.tokenizer
        enc = tok([query] * len(documents), documents, truncation=True, max_length=self.max_length)
        return [len(ids) for ids in enc["input_ids"]]
