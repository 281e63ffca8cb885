"""Integer keys for training rows, and the judged-relevant pairs the false-negative mask reads.

Every distinct query text and every distinct document text gets one integer key (so equal
keys mean identical texts). A row's keys, ``[source, query, positive, negative_1..H]``, go into
the dataset's ``label`` column, which sentence-transformers hands to the loss as is; the
judged-relevant (query, document) pairs become a `JudgedRelevance` table held by the loss.
Keys follow the order rows and judgements are added, so every DDP process, building the
same rows from the same data and seed, gets the same keys.
"""

from __future__ import annotations

from collections.abc import Iterable

from densekit.training.losses.false_negatives import JudgedRelevance


class RowKeys:
    def __init__(self) -> None:
        self._docs: dict[str, int] = {}
        self._queries: dict[str, int] = {}
        self._judged: set[tuple[int, int]] = set()

    def doc(self, text: str) -> int:
        return self._docs.setdefault(text, len(self._docs))

    def query(self, text: str) -> int:
        return self._queries.setdefault(text, len(self._queries))

    def row(self, source: int, query: str, passages: Iterable[str]) -> list[int]:
        """The label of one row: its source, its query, then its positive and negatives."""
        return [source, self.query(query), *(self.doc(t) for t in passages)]

    def add_judged(self, query: str, relevant_texts: Iterable[str]) -> None:
        """Record documents judged relevant to `query` (qrels grade > 0, or a pairs file's positives)."""
        q = self.query(query)
        self._judged.update((q, self.doc(t)) for t in relevant_texts)

    @property
    def judged_pairs(self) -> int:
        return len(self._judged)

    def relevance(self) -> JudgedRelevance:
        """The lookup table; call it after every row and judgement was added."""
        return JudgedRelevance.from_pairs(self._judged, max(len(self._docs), 1))
