"""What every densekit bi-encoder loss shares: sentence-transformers' loss contract.

`SentenceTransformerTrainer` calls `loss(sentence_features, labels)` with one tokenised
feature dict per dataset column (anchor, positive, negative_1..negative_H) and no labels.
Subclasses only implement `loss_from_scores(scores)` on the (B, B*(1+H)) score matrix built
by `batch_scores` (see there for the layout); embedding the columns goes through the
library's own `embed_columns`, so merged forwards, prompts and routers behave exactly as in
its built-in losses.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

from densekit.training.losses.batch_scores import Similarity, batch_scores


class BiEncoderLoss(nn.Module):
    def __init__(self, model: nn.Module | None, similarity: Similarity = "cosine"):
        super().__init__()
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
        self.model = model
        self.similarity = similarity

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        if self.model is None:
            raise RuntimeError(f"{type(self).__name__} was built without a model; use compute_loss_from_embeddings")
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        return self.loss_from_scores(batch_scores(embeddings, self.similarity))

    def loss_from_scores(self, scores: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config_dict(self) -> dict[str, Any]:
        """What sentence-transformers writes into the model card."""
        return {"similarity": self.similarity}
