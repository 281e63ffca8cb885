"""MTEB (2.x) adapter: let `mteb` evaluate any densekit encoder, or densekit's own search,
and run MTEB's retrieval evaluator on a local BEIR folder with no hub access.

    import mteb
    from densekit.encoder import Encoder
    from densekit.eval.mteb_adapter import DensekitMTEBEncoder, local_beir_task

    model = DensekitMTEBEncoder(Encoder.from_settings())
    task = local_beir_task("/data/scifact", split="test")
    result = mteb.evaluate(model, task, cache=None)          # or any hub task where online

- `DensekitMTEBEncoder` implements MTEB's EncoderProtocol: queries go through
  `Encoder.encode_queries`, documents through densekit's on-disk embedding cache
  (`index/embedding_cache.py`), so MTEB reuses vectors that `densekit eval` already computed
  (MTEB builds the document text as BEIR does, title + " " + text, which is densekit's
  `document_text`). Similarity follows the encoder: dot product over normalised vectors
  (= cosine), as densekit's flat inner-product index scores.
- `DensekitMTEBSearch` implements MTEB's SearchProtocol: MTEB hands it the corpus to index
  (a densekit flat faiss index, or any kind) and the queries to search.
- `local_beir_task(folder, split)` is an `AbsTaskRetrieval` whose data come from a BEIR
  folder on disk instead of the hub; MTEB's own evaluator (pytrec_eval based) scores it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from densekit.index.dense_index import DenseIndex

try:  # mteb is an optional extra (`pip install densekit[mteb]`)
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta, ScoringFunction
    from mteb.types import PromptType
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the MTEB adapter needs mteb 2.x: pip install 'densekit[mteb]'") from _exc


def _model_meta(encoder, name: str | None = None) -> ModelMeta:
    n = name or encoder.name
    if "/" not in n:  # MTEB names are "organisation/model"
        n = f"densekit/{Path(n).name or 'model'}"
    return ModelMeta.create_empty(
        overwrites=dict(
            name=n,
            revision="local",
            embed_dim=encoder.dim,
            max_tokens=getattr(encoder.model, "max_seq_length", None),
            # densekit scores inner products; over unit vectors that is the cosine.
            similarity_fn_name=ScoringFunction.DOT_PRODUCT,
            framework=["Sentence Transformers", "PyTorch"],
            open_weights=True,
        )
    )


def _texts(inputs) -> list[str]:
    return [t for batch in inputs for t in batch["text"]]


def _document_texts(inputs) -> list[str]:
    """Documents as densekit encodes them. MTEB joins `title + " " + text` without stripping
    the title, densekit strips it (a trailing space in 15 SciFact titles): the same tokens,
    but a different cache key. Rebuilding densekit's text from MTEB's `title` and `body`
    fields lets the embedding cache hit."""
    from densekit.data.beir import document_text

    out: list[str] = []
    for batch in inputs:
        if "body" not in batch:
            out.extend(batch["text"])
            continue
        titles = batch.get("title") or [""] * len(batch["body"])
        out.extend(document_text({"title": t, "text": b}) for t, b in zip(titles, batch["body"]))
    return out


class DensekitMTEBEncoder(AbsEncoder):
    """A densekit `Encoder` behind MTEB's EncoderProtocol."""

    def __init__(self, encoder, name: str | None = None, use_cache: bool = True, progress: bool = True):
        self.encoder = encoder
        self.model = encoder.model
        self.mteb_model_meta = _model_meta(encoder, name)
        self.use_cache = use_cache
        self.progress = progress

    def encode(
        self, inputs, *, task_metadata=None, hf_split: str = "", hf_subset: str = "", prompt_type: PromptType | None = None, **kwargs: Any
    ) -> np.ndarray:
        batch_size = kwargs.get("batch_size")
        if prompt_type == PromptType.query:
            return self.encoder.encode_queries(_texts(inputs), batch_size=batch_size)
        if prompt_type == PromptType.document:
            texts = _document_texts(inputs)
            if self.use_cache:
                from densekit.index.embedding_cache import cached_document_vectors

                return cached_document_vectors(self.encoder, texts, progress=self.progress)
            return self.encoder.encode_documents(texts, progress=self.progress, batch_size=batch_size)
        return self.encoder.encode(_texts(inputs), batch_size=batch_size)


class DensekitMTEBSearch:
    """densekit's index (faiss + docstore) behind MTEB's SearchProtocol."""

    def __init__(
        self,
        encoder,
        kind: str = "flat",
        build_params: dict | None = None,
        search_params: dict | None = None,
        name: str | None = None,
        progress: bool = True,
    ):
        self.encoder = encoder
        self.kind = kind
        self.build_params = build_params
        self.search_params = search_params
        self.mteb_model_meta = _model_meta(encoder, name)
        self.progress = progress
        self.index_: DenseIndex | None = None

    def index(
        self, corpus, *, task_metadata=None, hf_split: str = "", hf_subset: str = "", encode_kwargs=None, num_proc=None, **kwargs: Any
    ) -> None:
        from densekit.index.dense_index import build_from_corpus

        docs = {row["id"]: {"title": row.get("title") or "", "text": row.get("text") or ""} for row in corpus}
        if self.index_ is not None:  # the previous task's index and its temporary document store
            self.index_.close()
        self.index_ = build_from_corpus(
            self.encoder, docs, kind=self.kind, build_params=self.build_params, search_params=self.search_params, progress=self.progress
        )

    def search(
        self,
        queries,
        *,
        task_metadata=None,
        hf_split: str = "",
        hf_subset: str = "",
        top_k: int = 1000,
        encode_kwargs=None,
        top_ranked=None,
        num_proc=None,
        **kwargs: Any,
    ) -> dict[str, dict[str, float]]:
        if self.index_ is None:
            raise RuntimeError("search() before index()")
        qids = list(queries["id"])
        qvecs = self.encoder.encode_queries(list(queries["text"]))
        out: dict[str, dict[str, float]] = {}
        for start in range(0, len(qids), 256):
            hits = self.index_.search(qvecs[start : start + 256], top_k)
            for qid, row in zip(qids[start : start + 256], hits):
                allowed = set(top_ranked[qid]) if top_ranked and qid in top_ranked else None
                out[qid] = {h.id: h.score for h in row if allowed is None or h.id in allowed}
        return out


_GENERAL = dict(
    description="A local BEIR-layout folder evaluated offline by densekit.",
    reference=None,
    category="t2t",
    eval_langs=["eng-Latn"],
    date=None,
    dialect=[],
    domains=[],
    task_subtypes=[],
    license="not specified",
    annotations_creators="derived",
    modalities=["text"],
    sample_creation="found",
    bibtex_citation="",
)


def local_beir_task(folder: str | Path, split: str = "test", name: str | None = None) -> AbsTaskRetrieval:
    """An MTEB retrieval task over a BEIR folder on disk (read with densekit's loader)."""
    folder = Path(folder)
    task_name = name or f"Local{''.join(p.capitalize() for p in folder.name.replace('_', '-').split('-'))}"

    class LocalBeirRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            type="Retrieval",
            name=task_name,
            main_score="ndcg_at_10",
            dataset={"path": str(folder), "revision": "local"},
            eval_splits=[split],
            **_GENERAL,
        )

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            if self.data_loaded:
                return
            from datasets import Dataset

            from densekit.data import load_beir

            ds = load_beir(folder, split)
            corpus = Dataset.from_list(
                [{"id": d, "title": v.get("title") or "", "text": v.get("text") or ""} for d, v in ds.corpus.items()]
            )
            queries = Dataset.from_list([{"id": q, "text": t} for q, t in ds.queries.items()])
            self.dataset = {"default": {split: {"corpus": corpus, "queries": queries, "relevant_docs": ds.qrels, "top_ranked": None}}}
            self.data_loaded = True

    return LocalBeirRetrieval()


def run_mteb_retrieval(encoder, folder: str | Path, split: str = "test", use_search: bool = False, progress: bool = True) -> dict[str, Any]:
    """MTEB's scores (ndcg_at_10, recall_at_100, ...) of a densekit encoder on a local BEIR
    folder. No result cache and no hub: the task evaluates in-process."""
    task = local_beir_task(folder, split)
    # Duck-typed to MTEB's EncoderProtocol / SearchProtocol, which the classes do not subclass.
    model: Any = DensekitMTEBSearch(encoder, progress=progress) if use_search else DensekitMTEBEncoder(encoder, progress=progress)
    encode_kwargs: Any = {"batch_size": encoder.batch_size, "show_progress_bar": progress}  # MTEB fills in the rest
    scores = task.evaluate(model, split, encode_kwargs=encode_kwargs)
    return dict(scores["default"])
