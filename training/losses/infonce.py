"""InfoNCE with in-batch and hard negatives."""

from __future__ import annotations

import torch
from torch import Tensor

from densekit.training.losses.base import SoftmaxContrastiveLoss
from densekit.training.losses.batch_scores import positive_scores


class InfoNCELoss(SoftmaxContrastiveLoss):
    r"""Contrastive cross-entropy of each query's positive against every passage of the batch.

    With s(q, d) the similarity, tau the temperature, B queries and the batch's passages D
    (all B positives and all B*H hard negatives):

        L = -1/B sum_i log( exp(s(q_i, p_i)/tau) / sum_{d in D} exp(s(q_i, d)/tau) )

    With ``symmetric=True`` the passage-to-query term of each positive is added and the two
    are averaged (Radford et al. 2021, CLIP; Günther et al. 2023, jina-embeddings-v2):

        L_sym = 1/2 ( L - 1/B sum_i log( exp(s(q_i, p_i)/tau) / sum_j exp(s(q_j, p_i)/tau) ) )

    Source: van den Oord, Li, Vinyals, "Representation Learning with Contrastive Predictive
    Coding", arXiv 1807.03748 (2018); with hard negatives as in Karpukhin et al., "Dense
    Passage Retrieval for Open-Domain Question Answering", EMNLP 2020. Equals
    sentence-transformers' MultipleNegativesRankingLoss with scale = 1/tau.

    With a false-negative mask, D for query i leaves out the passages judged relevant to
    q_i (or equal in text to p_i); the symmetric term leaves out the queries to which p_i is
    relevant.

    Adding a constant c_i to all of query i's scores leaves L unchanged (softmax is
    shift-invariant per row): InfoNCE says nothing about how scores compare across queries.

    Example::

        loss = InfoNCELoss(model, temperature=0.05)
        trainer = SentenceTransformerTrainer(model=model, train_dataset=ds, loss=loss)
    """

    def loss_from_scores(self, scores: Tensor, mask: Tensor | None = None) -> Tensor:
        logits = scores / self.temperature
        pos = positive_scores(logits)
        # The own positive is never masked, so no row or column is left empty.
        kept = logits if mask is None else logits.masked_fill(mask, float("-inf"))
        loss = (torch.logsumexp(kept, dim=1) - pos).mean()
        if self.symmetric:
            b = logits.size(0)
            # Column i of the first B columns holds every query's score for positive p_i;
            # mask[j, i] leaves out a query q_j to which p_i is relevant.
            backward = (torch.logsumexp(kept[:, :b], dim=0) - pos).mean()
            loss = (loss + backward) / 2
        return loss

    @property
    def citation(self) -> str:
        return "@article{oord2018cpc, title={Representation Learning with Contrastive Predictive Coding}, author={van den Oord, Aaron and Li, Yazhe and Vinyals, Oriol}, journal={arXiv:1807.03748}, year={2018}}"
