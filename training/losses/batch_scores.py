"""The score matrix every bi-encoder loss starts from.

sentence-transformers hands a loss one embedding tensor per dataset column: anchors
(queries), positives, then hard negatives negative_1..negative_H, each of B rows. Stacking
the candidate columns column-major gives B*(1+H) passages in which passage i (i < B) is the
positive of query i and passage B*(h+1)+i is query i's h-th hard negative. Every loss in
this package is a function of the (B, B*(1+H)) matrix of query-passage similarities in that
layout, so the reference tests can check the maths on plain tensors.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Similarity = Literal["cosine", "dot"]


def similarity_matrix(queries: Tensor, passages: Tensor, similarity: Similarity = "cosine") -> Tensor:
    """(Q, d) x (P, d) -> (Q, P) cosine or dot-product scores."""
    if similarity == "cosine":
        queries = torch.nn.functional.normalize(queries, p=2, dim=-1)
        passages = torch.nn.functional.normalize(passages, p=2, dim=-1)
    elif similarity != "dot":
        raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
    return queries @ passages.T


def batch_scores(embeddings: list[Tensor], similarity: Similarity = "cosine") -> Tensor:
    """[queries (B,d), positives (B,d), negatives_1 (B,d), ...] -> (B, B*(1+H)) scores."""
    if len(embeddings) < 2:
        raise ValueError(f"need at least anchor and positive columns, got {len(embeddings)} column(s)")
    queries = embeddings[0]
    passages = torch.cat(list(embeddings[1:]), dim=0)
    return similarity_matrix(queries, passages, similarity)


def positive_scores(scores: Tensor) -> Tensor:
    """s(q_i, p_i): the diagonal of the first B columns."""
    b = scores.size(0)
    idx = torch.arange(b, device=scores.device)
    return scores[idx, idx]


def own_positive_mask(scores: Tensor) -> Tensor:
    """Boolean (B, P) mask, True exactly at each query's own positive."""
    b, p = scores.shape
    mask = torch.zeros(b, p, dtype=torch.bool, device=scores.device)
    idx = torch.arange(b, device=scores.device)
    mask[idx, idx] = True
    return mask


def check_temperature(tau: float) -> float:
    if not (isinstance(tau, (int, float)) and tau > 0):
        raise ValueError(f"temperature must be > 0, got {tau!r}")
    return float(tau)


def masked_logsumexp(x: Tensor, drop: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """logsumexp of `x` along `dim` over the entries `drop` leaves in, and a bool tensor
    marking the slices where nothing is left. Such a slice gets a finite placeholder value
    (its logsumexp over every entry) instead of -inf, so a caller that replaces it with 0 via
    `torch.where` gets zero gradients there, not NaN."""
    empty = drop.all(dim=dim)
    drop = drop & ~empty.unsqueeze(dim)
    return torch.logsumexp(x.masked_fill(drop, float("-inf")), dim=dim), empty
