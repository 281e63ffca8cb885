"""Distill-VQ: IVF centroids and PQ codebooks learned by distilling dense scores.

Xiao et al., "Distill-VQ: Learning Retrieval Oriented Vector Quantization by Distilling
Knowledge from Dense Embeddings" (SIGIR 2022). Instead of minimising reconstruction error
(k-means), the quantiser is trained so that its scores rank documents the way the dense
(teacher) scores do:

    coarse score   q . c_{a(d)}                      (which lists a query probes)
    full score     q . (c_{a(d)} + pq(d - c_{a(d)})) (what IVF-PQ returns)

Assignments are the ones faiss makes (argmax q.c for inner-product lists, nearest codeword
per PQ sub-space), computed afresh each step; gradients reach the centroids and codebooks
through a straight-through estimator: the one-hot assignment is used forward, the softmax over
(negative) distances backward. Documents are frozen; an optional OPQ rotation from the start
index is kept fixed. `export_faiss` writes a plain faiss IndexIVFPQ (inside an
IndexPreTransform when OPQ is used) whose assignments and codes faiss recomputes on `add`, so
serving needs nothing but faiss.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import torch
from torch import Tensor, nn

from densekit.errors import ConfigError
from densekit.index.faiss_kinds import core_index


def straight_through_onehot(logits: Tensor, temperature: float | Tensor) -> tuple[Tensor, Tensor]:
    """(one-hot argmax forward / softmax backward, argmax index) over the last dimension."""
    soft = torch.softmax(logits / temperature, dim=-1)
    idx = logits.argmax(dim=-1)
    hard = torch.nn.functional.one_hot(idx, logits.shape[-1]).to(soft.dtype)
    return hard + soft - soft.detach(), idx


@dataclass
class Quantised:
    coarse: Tensor  # (N, d) centroid of each document's list
    full: Tensor  # (N, d) centroid + PQ-decoded residual
    lists: Tensor  # (N,) list index
    codes: Tensor  # (N, M) PQ codes


class IVFPQQuantizer(nn.Module):
    """Inner-product IVF-PQ (residual PQ) as a differentiable torch module.

    Parameters: `centroids` (nlist, d) and `codebooks` (M, ksub, d/M). Buffer: `rotation`
    (d, d) OPQ matrix applied to documents and queries (identity without OPQ)."""

    def __init__(self, centroids: Tensor, codebooks: Tensor, rotation: Tensor | None = None, assign_temperature: float = 1.0):
        super().__init__()
        nlist, d = centroids.shape
        m, ksub, dsub = codebooks.shape
        if m * dsub != d:
            raise ConfigError("pq_m", f"codebooks of shape {tuple(codebooks.shape)} do not cover dimension {d}")
        self.centroids = nn.Parameter(centroids.clone().float())
        self.codebooks = nn.Parameter(codebooks.clone().float())
        self.rotation: Tensor  # a buffer: saved with the module, never trained
        self.register_buffer("rotation", (rotation if rotation is not None else torch.eye(d)).clone().float())
        self.has_opq = rotation is not None
        self.assign_temperature = assign_temperature
        self.nbits = int(round(np.log2(ksub)))

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def nlist(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def pq_m(self) -> int:
        return int(self.codebooks.shape[0])

    # ---- faiss <-> torch ------------------------------------------------------------
    @classmethod
    def from_faiss(cls, index: faiss.Index, assign_temperature: float = 1.0) -> IVFPQQuantizer:
        """Read centroids, codebooks and the OPQ matrix out of a trained inner-product
        IndexIVFPQ or IndexPreTransform(OPQMatrix, IndexIVFPQ)."""
        outer = faiss.downcast_index(index)
        rotation = None
        if isinstance(outer, faiss.IndexPreTransform):
            if outer.chain.size() != 1:
                raise ConfigError("start_index", "only a single OPQ transform before IVF-PQ is supported")
            vt = faiss.downcast_VectorTransform(outer.chain.at(0))
            if not isinstance(vt, faiss.LinearTransform) or vt.d_in != vt.d_out or vt.have_bias:
                raise ConfigError("start_index", f"unsupported pre-transform {type(vt).__name__} (expected an OPQ rotation)")
            rotation = torch.from_numpy(faiss.vector_to_array(vt.A).reshape(vt.d_out, vt.d_in).copy())
        outer = core_index(index)
        if not isinstance(outer, faiss.IndexIVFPQ):
            raise ConfigError("start_index", f"Distill-VQ starts from an IVF-PQ index, got {type(outer).__name__}")
        if outer.metric_type != faiss.METRIC_INNER_PRODUCT or not outer.by_residual:
            raise ConfigError("start_index", "Distill-VQ needs an inner-product IVF-PQ index with residual encoding")
        if not outer.is_trained:
            raise ConfigError("start_index", "the start index is not trained")
        centroids = torch.from_numpy(outer.quantizer.reconstruct_n(0, outer.nlist).copy())
        pq = outer.pq
        codebooks = torch.from_numpy(faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub).copy())
        return cls(centroids, codebooks, rotation, assign_temperature)

    def export_faiss(self) -> faiss.Index:
        """An empty, trained faiss index with these centroids and codebooks (OPQ kept)."""
        from densekit.index.faiss_kinds import make_ivfpq

        c = self.centroids.detach().cpu().float().numpy()
        cb = self.codebooks.detach().cpu().float().numpy()
        quantizer = faiss.IndexFlatIP(self.dim)
        quantizer.add(np.ascontiguousarray(c))
        ivf = make_ivfpq(self.dim, self.nlist, self.pq_m, self.nbits, faiss.METRIC_INNER_PRODUCT, quantizer=quantizer)
        faiss.copy_array_to_vector(np.ascontiguousarray(cb).ravel(), ivf.pq.centroids)
        ivf.is_trained = True
        if not self.has_opq:
            return ivf
        opq = faiss.OPQMatrix(self.dim, self.pq_m)
        faiss.copy_array_to_vector(np.ascontiguousarray(self.rotation.cpu().numpy()).ravel(), opq.A)
        opq.is_trained = True
        index = faiss.IndexPreTransform(opq, ivf)
        index.own_fields = True
        opq.this.disown()
        ivf.this.disown()
        return index

    # ---- quantisation ---------------------------------------------------------------
    def rotate(self, x: Tensor) -> Tensor:
        return x @ self.rotation.T if self.has_opq else x

    def forward(self, docs: Tensor) -> Quantised:
        """Quantise (already rotated) document vectors; hard forward, straight-through backward."""
        n, d = docs.shape
        coarse_logits = docs @ self.centroids.T  # faiss assigns lists by max inner product
        a_ste, lists = straight_through_onehot(coarse_logits, self.assign_temperature * _scale(coarse_logits))
        coarse = a_ste @ self.centroids
        residual = (docs - coarse).view(n, self.pq_m, -1)  # (N, M, dsub)
        # squared L2 distance to every codeword, per sub-space: faiss encodes residuals by L2
        dist = (
            (residual * residual).sum(-1, keepdim=True)
            - 2 * torch.einsum("nmd,mkd->nmk", residual, self.codebooks)
            + (self.codebooks * self.codebooks).sum(-1).unsqueeze(0)
        )
        c_ste, codes = straight_through_onehot(-dist, self.assign_temperature * _scale(dist))
        decoded = torch.einsum("nmk,mkd->nmd", c_ste, self.codebooks).reshape(n, d)
        return Quantised(coarse=coarse, full=coarse + decoded, lists=lists, codes=codes)

    @torch.no_grad()
    def scores(self, queries: Tensor, docs: Tensor) -> tuple[Tensor, Tensor]:
        """(coarse, full) quantised scores of raw (unrotated) queries against raw documents."""
        q = self.rotate(queries)
        out = self.forward(self.rotate(docs))
        return q @ out.coarse.T, q @ out.full.T


def _scale(logits: Tensor) -> Tensor:
    # Softmax temperatures relative to each row's spread, so the same assign_temperature works
    # for centroid inner products (~1) and residual distances (~1e-3).
    return logits.detach().std(dim=-1, keepdim=True).clamp_min(1e-8)
