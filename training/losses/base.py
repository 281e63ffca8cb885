"""What every densekit bi-encoder loss shares: sentence-transformers' loss contract.

`SentenceTransformerTrainer` calls `loss(sentence_features, labels)` with one tokenised
feature dict per dataset column (anchor, positive, negative_1..negative_H) and no labels.
Subclasses only implement `loss_from_scores(scores)` on the (B, B*(1+H)) score matrix built
by `batch_scores` (see there for the layout); embedding the columns goes through the
library's own `embed_columns`, so merged forwards, prompts and routers behave exactly as in
its built-in losses.

Under DDP (torchrun / accelerate) each process sees only its share of the global batch.
With ``gather_across_devices=True`` every column is all-gathered from all processes, with
gradients, before the score matrix is built, so each process computes the loss of the whole
global batch (every query against every process's passages). DDP then averages the
parameter gradients, which equals the gradient of the single-process loss over the
concatenated batch: each process's embeddings receive the summed gradient of all W
identical copies of the loss, and the average over W processes divides it back.

With ``mask_false_negatives=True`` the loss reads the row keys of the ``label`` column
(`false_negatives.py` gives the layout) and leaves out of each query's negatives every batch
passage judged relevant to it (``judged``), with its positive's text, or from another
training dataset. Under ``gather_across_devices`` the keys are gathered with the embeddings,
so the mask covers the global batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

from densekit.training.losses.batch_scores import Similarity, batch_scores, check_temperature
from densekit.training.losses.false_negatives import JudgedRelevance, check_labels, false_negative_mask


class BiEncoderLoss(nn.Module):
    def __init__(
        self,
        model: nn.Module | None,
        similarity: Similarity = "cosine",
        gather_across_devices: bool = False,
        mask_false_negatives: bool = False,
        judged: JudgedRelevance | None = None,
    ):
        super().__init__()
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
        self.model = model
        self.similarity = similarity
        self.gather_across_devices = bool(gather_across_devices)
        self.mask_false_negatives = bool(mask_false_negatives)
        self.num_doc_keys = judged.num_doc_keys if judged is not None else 0
        # A buffer, so moving the loss to the model's device moves the lookup table with it.
        self.register_buffer("judged_codes", judged.codes if judged is not None else None, persistent=False)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        if self.model is None:
            raise RuntimeError(f"{type(self).__name__} was built without a model; use compute_loss_from_embeddings")
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        keys = None
        if self.mask_false_negatives:
            if labels is None:
                raise ValueError("mask_false_negatives needs the rows' keys in a 'label' column (densekit.training.row_keys)")
            keys = check_labels(labels, len(embeddings)).to(embeddings[0].device)
        if self.gather_across_devices:
            from sentence_transformers.util.distributed import all_gather, all_gather_with_grad

            # Rank r's rows land at r*B..(r+1)*B-1 of every column, so positive i stays at
            # row i of the positive column: the layout batch_scores expects.
            embeddings = [all_gather_with_grad(e) for e in embeddings]
            if keys is not None:
                keys = all_gather(keys)
        judged: Tensor | None = self.judged_codes  # type: ignore[assignment]  # a buffer (or None), not a submodule
        mask = None if keys is None else false_negative_mask(keys, judged, self.num_doc_keys)
        return self.loss_from_scores(batch_scores(embeddings, self.similarity), mask)

    def loss_from_scores(self, scores: Tensor, mask: Tensor | None = None) -> Tensor:  # pragma: no cover - abstract
        """`mask` (B, P) bool: True where a passage is not a negative of that row's query."""
        raise NotImplementedError

    def get_config_dict(self) -> dict[str, Any]:
        """What sentence-transformers writes into the model card."""
        return {
            "similarity": self.similarity,
            "gather_across_devices": self.gather_across_devices,
            "mask_false_negatives": self.mask_false_negatives,
        }


class SoftmaxContrastiveLoss(BiEncoderLoss):
    """What InfoNCE and DCL share: a softmax temperature and an optional passage-to-query
    term (``symmetric``); they differ only in ``loss_from_scores``."""

    def __init__(
        self,
        model=None,
        temperature: float = 0.05,
        symmetric: bool = False,
        similarity: Similarity = "cosine",
        gather_across_devices: bool = False,
        mask_false_negatives: bool = False,
        judged: JudgedRelevance | None = None,
    ):
        super().__init__(model, similarity, gather_across_devices, mask_false_negatives, judged)
        self.temperature = check_temperature(temperature)
        self.symmetric = bool(symmetric)

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "temperature": self.temperature, "symmetric": self.symmetric}
