"""Training objectives of LLM yes/no rerankers: SFT (pointwise yes/no) and CL (group softmax).

Both read the same inputs: `logits` of shape (B, G, 2) holding [z_yes, z_no], the
next-token logits of "yes" and "no" at the last prompt position, for B queries with a group
of G = 1 + N documents each, the positive first (index 0) and N negatives after it.

Source: Dai et al., "Supervised Fine-Tuning or Contrastive Learning? Towards Better
Multimodal LLM Reranking", arXiv 2510.14824 (2025). The paper splits each objective's
gradient into a *direction* and a per-document *weight*, and finds SFT's weighting the
stronger one: SFT keeps pushing every negative whose p_yes is high, independently of the
other documents, while CL's weight on a negative is its share of the group softmax, which
vanishes once the positive dominates the group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _check(logits: torch.Tensor) -> None:
    if logits.dim() != 3 or logits.shape[-1] != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must be (queries, 1 + negatives, 2) [z_yes, z_no], got {tuple(logits.shape)}")


class YesNoSFTLoss(nn.Module):
    """SFT: each document is a yes/no classification (arXiv 2510.14824, the SFT objective).

    With p = softmax([z_no, z_yes]), i.e. p_yes = sigmoid(z_yes - z_no):

        L = 1/B sum_i [ -log p_yes(q_i, d_i+) - sum_j log p_no(q_i, d_ij-) ]

    Served as the score s(q, d) = p_yes = sigmoid(z_yes - z_no), comparable across queries.
    `reduction="mean_docs"` divides each query's term by G instead (every document weighs
    1/G), for groups of different sizes.

    Example: for one query with z = [[3, 0], [0, 2]] (positive, one negative), the loss is
    -log sigmoid(3) - log sigmoid(2) = 0.0486 + 0.1269 = 0.1755.
    """

    def __init__(self, reduction: str = "sum_docs"):
        super().__init__()
        if reduction not in ("sum_docs", "mean_docs"):
            raise ValueError(f"reduction must be 'sum_docs' or 'mean_docs', got {reduction!r}")
        self.reduction = reduction

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        _check(logits)
        margin = logits[..., 0] - logits[..., 1]  # z_yes - z_no, (B, G)
        target = torch.zeros_like(margin)
        target[:, 0] = 1.0
        # binary CE on the margin == 2-way softmax CE on [z_no, z_yes], numerically stable
        per_doc = F.binary_cross_entropy_with_logits(margin.float(), target.float(), reduction="none")
        per_query = per_doc.sum(dim=1)
        if self.reduction == "mean_docs":
            per_query = per_query / logits.shape[1]
        return per_query.mean()


class GroupSoftmaxCLLoss(nn.Module):
    """CL: group softmax cross-entropy over z_yes (arXiv 2510.14824, the CL objective).

    For query i with positive d_i+ and negatives d_i1-..d_iN-:

        L = -1/B sum_i log( exp(z_yes(q_i, d_i+)/tau) / sum_{d in {d_i+, d_i1-..d_iN-}} exp(z_yes(q_i, d)/tau) )

    z_no is unused; served as the score s(q, d) = z_yes, which only orders documents within
    a query. tau defaults to 1 (the logits are already on the LM's scale).

    Example: z_yes = [2, 0, 0] (positive, two negatives), tau = 1:
    L = -log(e^2 / (e^2 + 2)) = 0.2395.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        _check(logits)
        z_yes = logits[..., 0].float() / self.temperature
        target = torch.zeros(z_yes.shape[0], dtype=torch.long, device=z_yes.device)
        return F.cross_entropy(z_yes, target)


OBJECTIVES = {"sft": YesNoSFTLoss, "cl": GroupSoftmaxCLLoss}
# How each objective's model is served (see llm.py): SFT's p_yes, CL's z_yes.
SERVE_SCORE = {"sft": "yes_no", "cl": "yes_logit"}
