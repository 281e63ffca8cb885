"""The MW (Mann-Whitney) loss: a batch-global pairwise AUC surrogate."""

from __future__ import annotations

from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor

from densekit.training.losses.base import BiEncoderLoss
from densekit.training.losses.batch_scores import Similarity, check_temperature, own_positive_mask, positive_scores
from densekit.training.losses.false_negatives import JudgedRelevance

Reduction = Literal["sum", "mean"]


class MWLoss(BiEncoderLoss):
    r"""Every positive against every negative of the whole batch, across queries.

    With s_i+ = s(q_i, p_i) and S- the scores of *every* query against every batch passage
    other than that query's own positive (in-batch positives of other queries and all hard
    negatives), i.e. S- = { s(q_k, d) : k = 1..B, d in D, d != p_k }:

        L = -1/B sum_i sum_{s in S-} log sigmoid( (s_i+ - s) / tau )        (reduction="sum")

    With a false-negative mask, S- leaves out s(q_k, d) wherever d is judged relevant to q_k
    (or equal in text to p_k): a relevant pair is not a negative of anyone's positive.

    ``reduction="mean"`` divides by |S-| as well (a mean over all B*|S-| pairs), which keeps
    the loss's scale independent of the batch size.

    It is a smooth surrogate of the Mann-Whitney U statistic (the ROC-AUC) of the pooled
    batch: because a positive of query i is compared with the negatives of query k, scores
    must be comparable across queries, and the *global* AUC (one threshold for all queries)
    is what it optimises. Unlike InfoNCE it is not invariant to adding a per-query constant
    to one query's scores.

    Source: "MW loss", arXiv 2510.00137, eq. 3; the paper trains with tau = 0.01 and sums
    over negatives (the defaults here).

    Example::

        loss = MWLoss(model, temperature=0.01)
        trainer = SentenceTransformerTrainer(model=model, train_dataset=ds, loss=loss)
    """

    def __init__(
        self,
        model=None,
        temperature: float = 0.01,
        reduction: Reduction = "sum",
        similarity: Similarity = "cosine",
        gather_across_devices: bool = False,
        mask_false_negatives: bool = False,
        judged: JudgedRelevance | None = None,
    ):
        super().__init__(model, similarity, gather_across_devices, mask_false_negatives, judged)
        self.temperature = check_temperature(temperature)
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.reduction = reduction

    def loss_from_scores(self, scores: Tensor, mask: Tensor | None = None) -> Tensor:
        pos = positive_scores(scores)  # (B,)
        keep = ~own_positive_mask(scores)
        if mask is not None:
            keep = keep & ~mask
        negatives = scores[keep]  # S-, pooled over queries
        # (B, |S-|) margins; logsigmoid is the stable form of log(1/(1+exp(-x))).
        pair_loss = -F.logsigmoid((pos[:, None] - negatives[None, :]) / self.temperature)
        per_positive = pair_loss.sum(dim=1)
        if self.reduction == "mean":
            per_positive = per_positive / max(negatives.numel(), 1)
        return per_positive.mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "temperature": self.temperature, "reduction": self.reduction}
