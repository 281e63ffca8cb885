"""Decoupled contrastive loss (DCL)."""

from __future__ import annotations

import torch
from torch import Tensor

from densekit.training.losses.base import SoftmaxContrastiveLoss
from densekit.training.losses.batch_scores import masked_logsumexp, own_positive_mask, positive_scores


class DCLLoss(SoftmaxContrastiveLoss):
    r"""InfoNCE without the positive in the denominator.

        L = -1/B sum_i log( exp(s(q_i, p_i)/tau) / sum_{d in D, d != p_i} exp(s(q_i, d)/tau) )
          = 1/B sum_i ( -s(q_i, p_i)/tau + logsumexp_{d != p_i} s(q_i, d)/tau )

    Removing the positive from the normaliser removes the "negative-positive coupling" that
    shrinks InfoNCE's gradient once the positive dominates, which makes small batches learn
    better. With ``symmetric=True`` the passage-to-query term (over the other queries) is
    averaged in, as for InfoNCE.

    With a false-negative mask, D also leaves out the passages judged relevant to q_i (or
    equal in text to p_i). A query left with no negative at all has no denominator: its term
    is 0 (it still counts in the mean over B), as it is for InfoNCE, whose term is then
    log 1 = 0.

    Source: Yeh, Hong, Hsu, Liu, Chen, LeCun, "Decoupled Contrastive Learning", ECCV 2022
    (arXiv 2110.06848), eq. 6.

    Example::

        loss = DCLLoss(model, temperature=0.05)
    """

    def loss_from_scores(self, scores: Tensor, mask: Tensor | None = None) -> Tensor:
        logits = scores / self.temperature
        pos = positive_scores(logits)
        drop = own_positive_mask(logits)
        if mask is not None:
            drop = drop | mask
        lse, empty = masked_logsumexp(logits, drop, dim=1)
        zero = torch.zeros_like(pos)
        loss = torch.where(empty, zero, lse - pos).mean()
        if self.symmetric:
            b = logits.size(0)
            lse, empty = masked_logsumexp(logits[:, :b], drop[:, :b], dim=0)
            loss = (loss + torch.where(empty, zero, lse - pos).mean()) / 2
        return loss

    @property
    def citation(self) -> str:
        return "@inproceedings{yeh2022dcl, title={Decoupled Contrastive Learning}, author={Yeh, Chun-Hsiao and Hong, Cheng-Yao and Hsu, Yen-Chi and Liu, Tyng-Luh and Chen, Yubei and LeCun, Yann}, booktitle={ECCV}, year={2022}}"
