"""Faiss indexes with a SQLite document store beside them (see densekit.index.dense_index).

`densekit.index.load(folder)` opens any index folder densekit wrote, whatever its kind.
"""

from densekit.index.dense_index import DenseIndex, SearchHit, load_index

load = load_index

__all__ = ["DenseIndex", "SearchHit", "load", "load_index"]
