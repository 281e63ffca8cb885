"""Construct faiss indexes of each kind with explicit constructors and apply search params.

Kinds are built with faiss constructors rather than index_factory strings, so that nothing
switches on behind the user's back (index_factory's PQ enables polysemous training, which
made training 4-20x slower here).

| kind        | faiss structure                                   | build params                                      | search params |
|-------------|---------------------------------------------------|---------------------------------------------------|---------------|
| flat        | IndexIDMap2(IndexFlat)                            | -                                                 | -             |
| ivf         | IndexIVFFlat(IndexFlat quantizer)                 | nlist, train_size, seed                           | nprobe        |
| ivfpq       | IndexIVFPQ (residual PQ)                          | nlist, pq_m, pq_nbits, train_size, seed           | nprobe        |
| opq-ivfpq   | IndexPreTransform(OPQMatrix, IndexIVFPQ)          | + opq_niter                                       | nprobe        |
| hnsw        | IndexIDMap2(IndexHNSWFlat)                        | hnsw_m, ef_construction                           | ef_search     |
| distilled   | IndexIVFPQ or IndexPreTransform(OPQ, IndexIVFPQ)  | made by densekit.training.distill_vq (Distill-VQ) | nprobe        |

Ids stored in faiss are densekit row numbers (the document store maps them to doc ids).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from densekit.errors import ConfigError, IndexMismatchError, InvalidInputError
from densekit.index.faiss_blas import tune_blas_threshold

log = logging.getLogger(__name__)

# Every densekit index module imports this one, so the opt-in BLAS threshold reaches every search.
tune_blas_threshold()

KINDS = ("flat", "ivf", "ivfpq", "opq-ivfpq", "hnsw", "distilled")
IVF_KINDS = ("ivf", "ivfpq", "opq-ivfpq", "distilled")
PQ_KINDS = ("ivfpq", "opq-ivfpq", "distilled")


# ---- parameters -----------------------------------------------------------------------
class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FlatParams(_Params):
    pass


class IVFParams(_Params):
    nlist: int | None = Field(None, ge=1, description="inverted lists; default ~4*sqrt(n), at most n/39")
    train_size: int | None = Field(None, ge=1, description="vectors sampled to train the quantisers (default: all)")
    seed: int = 1234


class IVFPQParams(IVFParams):
    pq_m: int = Field(16, ge=1, description="PQ sub-quantisers (bytes per vector when pq_nbits=8)")
    pq_nbits: int = Field(8, ge=1, le=16, description="bits per sub-quantiser code")


class OPQIVFPQParams(IVFPQParams):
    opq_niter: int = Field(25, ge=1, description="OPQ alternating-optimisation iterations")


class HNSWParams(_Params):
    hnsw_m: int = Field(32, ge=2, description="HNSW graph degree M")
    ef_construction: int = Field(80, ge=1, description="HNSW efConstruction")


class DistilledParams(OPQIVFPQParams):
    # A distilled index is built by densekit.training.distill_vq; these record how its start index was made.
    opq: bool = True
    distill: dict[str, Any] = Field(default_factory=dict)


PARAMS: dict[str, type[_Params]] = {
    "flat": FlatParams,
    "ivf": IVFParams,
    "ivfpq": IVFPQParams,
    "opq-ivfpq": OPQIVFPQParams,
    "hnsw": HNSWParams,
    "distilled": DistilledParams,
}


class SearchParams(_Params):
    nprobe: int | None = Field(None, ge=1)
    ef_search: int | None = Field(None, ge=1)


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError("kind", f"unknown index kind '{kind}' (known: {', '.join(KINDS)})")


def _validation_error(prefix: str, exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err.get("loc", ())) or "?"
    return ConfigError(f"{prefix}.{field}", err.get("msg", str(exc)))


def parse_build_params(kind: str, params: dict[str, Any] | None) -> _Params:
    check_kind(kind)
    try:
        return PARAMS[kind].model_validate(dict(params or {}))
    except ValidationError as exc:
        raise _validation_error("build_params", exc) from None


def parse_search_params(kind: str, params: dict[str, Any] | None) -> dict[str, int]:
    """Validated search params for `kind`; faiss's spelling efSearch is accepted for ef_search.
    A parameter that does not apply to the kind is an error rather than silently ignored."""
    raw = dict(params or {})
    if "efSearch" in raw:
        raw["ef_search"] = raw.pop("efSearch")
    try:
        sp = SearchParams.model_validate(raw)
    except ValidationError as exc:
        raise _validation_error("search_params", exc) from None
    out = sp.model_dump(exclude_none=True)
    applicable = {"nprobe"} if kind in IVF_KINDS else {"ef_search"} if kind == "hnsw" else set()
    for name in out:
        if name not in applicable:
            raise ConfigError(
                f"search_params.{name}", f"does not apply to a '{kind}' index (it takes: {', '.join(sorted(applicable)) or 'none'})"
            )
    return out


def default_nlist(n: int) -> int:
    # faiss wants >= 39 training points per centroid; 4*sqrt(n) is the usual rule of thumb.
    return max(1, min(int(4 * math.sqrt(max(n, 1))), n // 39 if n >= 39 else 1))


def default_search_params(kind: str, build_params: dict[str, Any] | None, n: int) -> dict[str, int]:
    if kind in IVF_KINDS:
        nlist = resolved_nlist(build_params, n)
        return {"nprobe": max(1, min(nlist, max(8, nlist // 8)))}
    if kind == "hnsw":
        return {"ef_search": 64}
    return {}


def resolved_nlist(build_params: dict[str, Any] | None, n: int) -> int:
    nlist = (build_params or {}).get("nlist")
    return int(nlist) if nlist else default_nlist(n)


# ---- construction ---------------------------------------------------------------------
# Encoder similarities densekit serves; cosine is inner product over unit-normalised vectors.
# Distance metrics (L2) are refused rather than served: every consumer of scores (hits,
# fusion, reranking candidates, AUC, mining margins) reads them as higher-is-better.
SIMILARITIES = ("cosine", "dot", "inner_product")
METRIC = "inner_product"


def metric_of(similarity: str) -> int:
    """The faiss metric of an encoder similarity; IndexMismatchError for one densekit does not serve."""
    if similarity not in SIMILARITIES:
        raise IndexMismatchError(
            f"similarity '{similarity}' is not supported: densekit ranks by inner product ({', '.join(SIMILARITIES)}); "
            "serve a distance-trained model normalised, as cosine"
        )
    return faiss.METRIC_INNER_PRODUCT


def metric_name(metric: int) -> str:
    """The manifest's name of a faiss metric."""
    if metric != faiss.METRIC_INNER_PRODUCT:
        raise IndexMismatchError(f"faiss metric {metric} is not supported: densekit indexes use inner product")
    return METRIC


def check_metric(index: faiss.Index, manifest_metric: str, similarity: str, where: str) -> None:
    """Refuse, at load time, an index whose scores would be distances (metric L2)."""
    metric_of(similarity)
    if manifest_metric != METRIC or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise IndexMismatchError(f"{where}: metric '{manifest_metric}' is not supported: densekit indexes use inner product")


def _coarse_quantizer(dim: int, metric: int) -> faiss.Index:
    # faiss adds the coarse term q.c from the quantiser's own distances, so it must share the metric.
    return faiss.IndexFlatIP(dim) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(dim)


def make_ivfpq(dim: int, nlist: int, pq_m: int, pq_nbits: int, metric: int, quantizer: faiss.Index | None = None) -> faiss.IndexIVFPQ:
    if dim % pq_m:
        raise ConfigError("build_params.pq_m", f"the dimension {dim} must be a multiple of pq_m={pq_m}")
    quantizer = quantizer if quantizer is not None else _coarse_quantizer(dim, metric)
    ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, pq_nbits, metric)
    ivf.own_fields = True
    quantizer.this.disown()
    ivf.do_polysemous_training = False
    ivf.by_residual = True
    return ivf


def make_index(
    kind: str, dim: int, params: dict[str, Any] | None = None, metric: int = faiss.METRIC_INNER_PRODUCT, n_train: int | None = None
) -> faiss.Index:
    """An empty (untrained where training applies) index whose ids are densekit row numbers.
    `n_train` (the corpus size) sets the default number of lists."""
    p = parse_build_params(kind, params)
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlat(dim, metric))
    if kind == "hnsw":
        assert isinstance(p, HNSWParams)
        hnsw = faiss.IndexHNSWFlat(dim, p.hnsw_m, metric)
        hnsw.hnsw.efConstruction = p.ef_construction
        return faiss.IndexIDMap2(hnsw)
    nlist = p.nlist or default_nlist(n_train or 0)  # type: ignore[attr-defined]
    if kind == "ivf":
        quantizer = _coarse_quantizer(dim, metric)
        ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)
        ivf.own_fields = True
        quantizer.this.disown()
        return ivf
    if kind == "ivfpq":
        assert isinstance(p, IVFPQParams)
        return make_ivfpq(dim, nlist, p.pq_m, p.pq_nbits, metric)
    if kind == "opq-ivfpq":
        assert isinstance(p, OPQIVFPQParams)
        return _with_opq(make_ivfpq(dim, nlist, p.pq_m, p.pq_nbits, metric), dim, p.pq_m, p.opq_niter)
    raise ConfigError(
        "kind",
        "a distilled index is learned from queries: build it with `densekit train distill-index --config run.yaml` "
        "or `densekit index build --kind distilled`",
    )


def _with_opq(ivf: faiss.Index, dim: int, pq_m: int, niter: int) -> faiss.IndexPreTransform:
    opq = faiss.OPQMatrix(dim, pq_m)
    opq.niter = niter
    index = faiss.IndexPreTransform(opq, ivf)
    index.own_fields = True
    opq.this.disown()
    ivf.this.disown()
    return index


def _sample(vectors: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    if size is None or size >= len(vectors):
        return vectors
    rows = np.random.default_rng(seed).choice(len(vectors), size=size, replace=False)
    return np.ascontiguousarray(vectors[np.sort(rows)])


def core_index(index: faiss.Index) -> faiss.Index:
    """The index that holds the vectors, under any IDMap / pre-transform / refine wrappers,
    downcast to its own type (IndexIVFPQ, IndexHNSWFlat, IndexFlat...). The one place that
    unwraps faiss indexes."""
    inner = faiss.downcast_index(index)
    while True:
        if isinstance(inner, (faiss.IndexIDMap, faiss.IndexPreTransform)):
            inner = faiss.downcast_index(inner.index)
        elif isinstance(inner, faiss.IndexRefine):
            inner = faiss.downcast_index(inner.base_index)
        else:
            return inner


def ivf_of(index: faiss.Index) -> faiss.IndexIVF | None:
    """The IndexIVF inside an index (through its wrappers), or None."""
    inner = core_index(index)
    return inner if isinstance(inner, faiss.IndexIVF) else None


def train_index(index: faiss.Index, vectors: np.ndarray, params: dict[str, Any] | None = None, kind: str | None = None) -> None:
    """Train the quantisers on a sample of `vectors` (the whole set unless train_size is set).
    With GPU faiss the coarse k-means runs on the GPU; the index itself stays a CPU index so
    it saves, updates and loads the same everywhere."""
    if index.is_trained:
        return
    raw = dict(params or {})
    seed = int(raw.get("seed", 1234))
    sample = _sample(vectors, raw.get("train_size"), seed)
    ivf = ivf_of(index)
    if ivf is not None:
        need = ivf.nlist
        if len(sample) < need:
            raise ConfigError("build_params.nlist", f"nlist={need} needs at least {need} training vectors, got {len(sample)}")
        pq = getattr(ivf, "pq", None)
        if pq is not None and len(sample) < pq.ksub:
            raise ConfigError(
                "build_params.pq_nbits",
                f"pq_nbits={pq.nbits} needs at least {pq.ksub} training vectors, got {len(sample)}; use fewer bits or kind=flat",
            )
        ivf.cp.seed = seed
        _quiet_small_sample(ivf.cp, len(sample), need)
        if pq is not None:
            pq.cp.seed = seed
            _quiet_small_sample(pq.cp, len(sample), pq.ksub)
        _maybe_gpu_clustering(ivf)
    opq = _opq_of(index)
    if opq is not None:
        if len(sample) <= opq.d_in:
            # faiss's OPQ aborts the process (not an exception) on fewer points than dimensions
            raise ConfigError(
                "kind",
                f"OPQ needs more training vectors than dimensions ({opq.d_in}), got {len(sample)}; use kind=ivfpq (for kind=distilled: opq=false)",
            )
        # OPQ trains its own PQ each iteration; hand it one whose k-means we can seed and quiet.
        nbits = ivf.pq.nbits if ivf is not None and hasattr(ivf, "pq") else 8
        tmp_pq = faiss.ProductQuantizer(opq.d_out, opq.M, nbits)
        tmp_pq.cp.seed = seed
        _quiet_small_sample(tmp_pq.cp, len(sample), tmp_pq.ksub)
        opq.pq = tmp_pq
        try:
            index.train(sample)
        finally:
            opq.pq = None
        return
    index.train(sample)


def _quiet_small_sample(cp: faiss.ClusteringParameters, n: int, k: int) -> None:
    # faiss prints a warning per k-means call when n < 39k (hundreds of lines with OPQ);
    # small corpora are a legitimate use, so warn once here instead.
    if n < k * cp.min_points_per_centroid:
        log.info("training %d centroids on %d vectors (faiss advises >= %d)", k, n, k * cp.min_points_per_centroid)
        cp.min_points_per_centroid = max(1, n // max(k, 1))


def _opq_of(index: faiss.Index) -> faiss.OPQMatrix | None:
    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexPreTransform) and outer.chain.size() > 0:
        vt = faiss.downcast_VectorTransform(outer.chain.at(0))
        if isinstance(vt, faiss.OPQMatrix):
            return vt
    return None


def _maybe_gpu_clustering(ivf: faiss.IndexIVF) -> None:
    from densekit.index.gpu import faiss_gpu_available

    if faiss_gpu_available():  # pragma: no cover - no GPU on the CI machine
        ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(ivf.d))


def apply_defaults(index: faiss.Index, search_params: dict[str, Any]) -> None:
    """Store the default search params in the faiss object too, so index.faiss read alone by
    plain faiss searches the way the manifest says."""
    if "nprobe" in search_params and (ivf := ivf_of(index)) is not None:
        ivf.nprobe = int(search_params["nprobe"])
    if "ef_search" in search_params and isinstance(inner := core_index(index), faiss.IndexHNSW):
        inner.hnsw.efSearch = int(search_params["ef_search"])


def require_removable(index: faiss.Index, kind: str) -> None:
    """HNSW graphs cannot drop vectors; say so before faiss fails deep inside with a RuntimeError."""
    if isinstance(core_index(index), faiss.IndexHNSW):
        raise InvalidInputError(f"a '{kind}' index cannot remove or replace documents; rebuild it, or use kind flat/ivf/ivfpq")


# ---- search ---------------------------------------------------------------------------
def search_parameters(
    index: faiss.Index, params: dict[str, Any] | None, allowed_rows: np.ndarray | None = None
) -> faiss.SearchParameters | None:
    """Per-query search parameters (nprobe, efSearch) as a faiss SearchParameters object, so a
    query never mutates the shared index (safe under concurrent searches). With
    `allowed_rows`, faiss only returns those ids (an IDSelector applied inside the search, so
    top_k is filled from them); raise `check_filterable` first for a clear error."""
    params = params or {}
    if not params and allowed_rows is None:
        return None
    inner = core_index(index)
    sp: faiss.SearchParameters | None = None
    if isinstance(inner, faiss.IndexIVF) and ("nprobe" in params or allowed_rows is not None):
        sp = faiss.SearchParametersIVF()
        sp.nprobe = int(params.get("nprobe", inner.nprobe))
    elif isinstance(inner, faiss.IndexHNSW) and ("ef_search" in params or allowed_rows is not None):
        sp = faiss.SearchParametersHNSW()
        sp.efSearch = int(params.get("ef_search", inner.hnsw.efSearch))
    elif allowed_rows is not None:
        sp = faiss.SearchParameters()
    if sp is None:
        return None
    if allowed_rows is not None:
        selector, bitmap = _row_selector(allowed_rows)
        sp.sel = selector
        sp.referenced_objects = [selector, bitmap]  # faiss only points at them
    if isinstance(faiss.downcast_index(index), faiss.IndexPreTransform):
        outer_sp = faiss.SearchParametersPreTransform()
        outer_sp.index_params = sp
        outer_sp.referenced_objects = [sp]  # keep the inner object alive as long as the outer one
        return outer_sp
    return sp


def _row_selector(rows: np.ndarray) -> tuple[faiss.IDSelector, np.ndarray]:
    """A bitmap IDSelector of faiss ids: constant-time membership, (max row)/8 bytes."""
    rows = np.asarray(rows, dtype=np.int64)
    mask = np.zeros(int(rows.max()) + 1 if rows.size else 1, dtype=bool)
    mask[rows] = True
    bitmap = np.packbits(mask, bitorder="little")  # faiss tests bit (id & 7) of byte id >> 3
    return faiss.IDSelectorBitmap(bitmap), bitmap


def check_filterable(index: faiss.Index, kind: str) -> None:
    """ConfigError (naming the kind) unless faiss can apply an IDSelector inside this index's
    search: IDMap and pre-transform (OPQ) wrappers around a flat, IVF or HNSW index."""
    outer = faiss.downcast_index(index)
    while isinstance(outer, (faiss.IndexIDMap, faiss.IndexPreTransform)):
        outer = faiss.downcast_index(outer.index)
    if not isinstance(outer, (faiss.IndexFlat, faiss.IndexIVF, faiss.IndexHNSW)):
        raise ConfigError(
            "filter",
            f"a '{kind}' index ({describe(index)}) cannot filter inside faiss; filters work on kinds {', '.join(KINDS)} as densekit builds them",
        )


# ---- description ----------------------------------------------------------------------
def describe(index: faiss.Index) -> str:
    """A readable faiss structure, e.g. 'IndexPreTransform(OPQMatrix, IndexIVFPQ(nlist=64, M=16, nbits=8))'."""
    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexIDMap):
        return f"{type(outer).__name__}({describe(outer.index)})"
    if isinstance(outer, faiss.IndexPreTransform):
        chain = ", ".join(type(faiss.downcast_VectorTransform(outer.chain.at(i))).__name__ for i in range(outer.chain.size()))
        return f"IndexPreTransform({chain}, {describe(outer.index)})"
    if isinstance(outer, faiss.IndexIVFPQ):
        return f"IndexIVFPQ(nlist={outer.nlist}, M={outer.pq.M}, nbits={outer.pq.nbits})"
    if isinstance(outer, faiss.IndexIVF):
        return f"{type(outer).__name__}(nlist={outer.nlist})"
    if isinstance(outer, faiss.IndexHNSW):
        return f"{type(outer).__name__}(M={outer.hnsw.nb_neighbors(1)})"
    return type(outer).__name__


def bytes_per_vector(index: faiss.Index, dim: int) -> float:
    """Bytes of the stored code of one vector (the compression figure: 16 for PQ16x8). Ids,
    centroids and graph links are counted by index_bytes_per_vector."""
    outer = core_index(index)
    if isinstance(outer, faiss.IndexIVF):
        return float(outer.code_size)
    if isinstance(outer, faiss.IndexHNSW):
        return float(faiss.downcast_index(outer.storage).code_size)
    return float(dim * 4)


def index_bytes_per_vector(index: faiss.Index) -> float | None:
    """Whole serialised index (codes, ids, centroids, codebooks, graph) divided by its size."""
    if index.ntotal == 0:
        return None
    return round(len(faiss.serialize_index(index)) / index.ntotal, 2)
