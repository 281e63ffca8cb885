"""Faiss indexes with a SQLite document store beside them (see index.dense_index)."""
from index.dense_index import DenseIndex, SearchHit, load_index

__all__ = ["DenseIndex", "SearchHit", "load_index"]
