"""In-batch false negatives: which batch passages must not count as negatives of a query.

In-batch negatives are other queries' positives and hard negatives. Some of them are in fact
relevant to the anchor's query: judged so in the qrels (NFCorpus judges ~40 documents per
training query, and many documents for several queries), or the very same text as the
anchor's positive. Counting them as negatives teaches the model to push relevant documents
away. The mask marks them so every loss leaves them out of the anchor's negatives.

The mask is computed from integer keys that travel with each training row in its ``label``
column (sentence-transformers hands a ``label`` column to the loss untouched)::

    label = [source, query, positive, negative_1, ..., negative_H]

- ``source``: which training dataset the row came from. Candidates of another source are
  masked too, so even when a DDP run gathers passages from processes that drew batches from
  different datasets, no query meets another dataset's passages as negatives.
- ``query``: the query's key (one per distinct query text).
- ``positive``, ``negative_h``: document keys, one per distinct *text*, so equal keys mean
  identical texts.

Judged relevance is a sorted tensor of codes ``query_key * num_doc_keys + doc_key`` (built by
`densekit.training.row_keys.RowKeys`); the mask looks codes up with `torch.isin`, so its cost
does not depend on how many documents a query has judged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SOURCE, QUERY, POSITIVE = 0, 1, 2  # label columns; the hard negatives' keys follow POSITIVE


@dataclass(frozen=True)
class JudgedRelevance:
    """The judged-relevant (query key, document key) pairs of the training data, as sorted
    codes ``query_key * num_doc_keys + doc_key``."""

    codes: Tensor
    num_doc_keys: int

    @classmethod
    def from_pairs(cls, pairs, num_doc_keys: int) -> JudgedRelevance:
        """`pairs`: iterable of (query key, document key), document keys < `num_doc_keys`."""
        codes = sorted({q * num_doc_keys + d for q, d in pairs})
        return cls(torch.tensor(codes, dtype=torch.long), int(num_doc_keys))


def check_labels(labels: Tensor, num_columns: int) -> Tensor:
    """`labels` must be (B, 2 + num_columns - 1) integer keys for `num_columns` embedded columns."""
    want = num_columns + 1  # source, query, then one key per passage column
    if labels.ndim != 2 or labels.size(1) != want:
        raise ValueError(
            f"false-negative masking needs a label column [source, query, positive, negative_1..] of {want} integer keys "
            f"per row for {num_columns} text columns, got labels of shape {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"false-negative label keys must be integers, got {labels.dtype}")
    return labels.long()


def false_negative_mask(labels: Tensor, relevant_codes: Tensor | None = None, num_doc_keys: int = 0) -> Tensor:
    """(B, 2+1+H) row keys -> (B, B*(1+H)) bool, True where a batch passage must not be a
    negative of that row's query: judged relevant to it, the same text as its positive, or
    from another source. Never True at a query's own positive (the losses treat that one
    apart). Columns follow `batch_scores`' layout: positives, then each negative column."""
    b = labels.size(0)
    source, query, docs = labels[:, SOURCE], labels[:, QUERY], labels[:, POSITIVE:]
    n_cols = docs.size(1)
    candidates = docs.T.reshape(-1)  # column-major, as batch_scores stacks the passages
    candidate_source = source.repeat(n_cols)
    mask = candidates[None, :] == docs[:, :1]
    mask |= candidate_source[None, :] != source[:, None]
    if relevant_codes is not None and relevant_codes.numel() and num_doc_keys > 0:
        codes = query[:, None] * num_doc_keys + candidates[None, :]
        mask |= torch.isin(codes, relevant_codes.to(codes.device))
    idx = torch.arange(b, device=labels.device)
    mask[idx, idx] = False
    return mask
