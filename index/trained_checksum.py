"""A checksum of what training put into a faiss index (coarse centroids, PQ codebooks, OPQ
rotation), not of the vectors added to it: the shards of one sharded index must share it."""

from __future__ import annotations

import hashlib

import faiss
import numpy as np


def trained_checksum(index: faiss.Index) -> str:
    """SHA-256 over the structure and trained parameters of `index`; adding or removing
    vectors leaves it unchanged."""
    h = hashlib.sha256()
    _walk(faiss.downcast_index(index), h)
    return h.hexdigest()


def _array(vector) -> bytes:
    return np.ascontiguousarray(faiss.vector_to_array(vector)).tobytes()


def _walk(ix: faiss.Index, h) -> None:
    h.update(f"{type(ix).__name__}|d={ix.d}|metric={ix.metric_type}|trained={ix.is_trained}|".encode())
    if isinstance(ix, faiss.IndexIDMap):
        _walk(faiss.downcast_index(ix.index), h)
    elif isinstance(ix, faiss.IndexPreTransform):
        for i in range(ix.chain.size()):
            vt = faiss.downcast_VectorTransform(ix.chain.at(i))
            h.update(f"{type(vt).__name__}|{vt.d_in}->{vt.d_out}|".encode())
            if isinstance(vt, faiss.LinearTransform):
                h.update(_array(vt.A) + _array(vt.b))
        _walk(faiss.downcast_index(ix.index), h)
    elif isinstance(ix, faiss.IndexRefine):
        _walk(faiss.downcast_index(ix.base_index), h)
    elif isinstance(ix, faiss.IndexIVF):
        h.update(f"nlist={ix.nlist}|code_size={ix.code_size}|by_residual={ix.by_residual}|".encode())
        # The coarse quantiser holds exactly the nlist centroids; adds never change it.
        h.update(faiss.serialize_index(ix.quantizer).tobytes())
        if isinstance(ix, faiss.IndexIVFPQ):
            h.update(f"M={ix.pq.M}|nbits={ix.pq.nbits}|".encode() + _array(ix.pq.centroids))
    elif isinstance(ix, faiss.IndexHNSW):
        h.update(f"M={ix.hnsw.nb_neighbors(1)}|".encode())
