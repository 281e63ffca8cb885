"""Corpus and query vectors for the index benchmarks, encoded once and cached.

Corpus vectors go through densekit.index.dense_index.encode_corpus (the shared embedding
cache); query vectors are cached in a folder of their own, since that cache holds documents only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEFAULT_VECTORS_DIR = Path("runs/bench-indexes/vectors")


def corpus_vectors(encoder, folder: Path) -> tuple[list[str], np.ndarray, dict]:
    """(doc ids in file order, their vectors, the corpus) of the BEIR folder."""
    from densekit.data import load_corpus
    from densekit.index.dense_index import encode_corpus

    corpus = load_corpus(folder)
    ids = list(corpus.keys())
    return ids, encode_corpus(encoder, corpus, ids, progress=True), corpus


def query_vectors(encoder, folder: Path, cache_dir: Path = DEFAULT_VECTORS_DIR) -> tuple[list[str], np.ndarray]:
    """All queries of the data set (every split), in file order; cached as cache_dir/<name>.queries.npz."""
    from densekit.data import load_queries

    queries = load_queries(folder)
    qids = list(queries.keys())
    path = Path(cache_dir) / f"{Path(folder).name}.queries.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        if list(z["ids"]) == qids:
            return qids, z["vectors"]
    vecs = encoder.encode_queries([queries[q] for q in qids], progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=np.array(qids), vectors=vecs)
    tmp.replace(path)
    return qids, vecs
