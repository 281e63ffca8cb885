"""Bi-encoder losses for sentence-transformers' trainer: InfoNCE, MW (global AUC) and DCL.

Each is a small `torch.nn.Module` with its equation and source in the docstring, following
the library's loss contract `forward(sentence_features, labels)` over dataset columns
anchor, positive, negative_1..negative_H.
"""

from __future__ import annotations

from densekit.training.losses.base import BiEncoderLoss
from densekit.training.losses.dcl import DCLLoss
from densekit.training.losses.false_negatives import JudgedRelevance, false_negative_mask
from densekit.training.losses.infonce import InfoNCELoss
from densekit.training.losses.mw import MWLoss

LOSSES: dict[str, type[BiEncoderLoss]] = {"infonce": InfoNCELoss, "mw": MWLoss, "dcl": DCLLoss}

__all__ = ["BiEncoderLoss", "InfoNCELoss", "MWLoss", "DCLLoss", "LOSSES", "JudgedRelevance", "false_negative_mask"]
