"""What an LLM reranker run feeds its Trainer: the drawn groups, then their prompts.

`GroupSchedule` is the whole sequence of training groups a run draws, item i being draw i:
an epoch is one pass over every group in a seeded shuffled order, and each draw picks its
positive (cycling by epoch) and negatives with a generator seeded from (seed, i). An item
depends on nothing but the seed, the groups and its index, so

- the SFT and the CL run of one seed see the same groups with the same negatives in the
  same order (they differ only in the loss);
- read sequentially, the schedule needs no sampler state: a run resumed from a checkpoint
  skips the draws already trained on and continues exactly where it stopped;
- under DDP the launcher's sharding hands each process every W-th batch of it.

`YesNoCollator` turns a batch of drawn groups into the exact prompts inference scores
(`densekit.rerankers.prompt`), left-padded, one row per (query, document), each group's
positive first.
"""

from __future__ import annotations

import random
from typing import Any

from torch.utils.data import Dataset

from densekit.rerankers.llm import pad_left
from densekit.rerankers.prompt import YesNoPrompt
from densekit.training.rerank.train_data import RerankGroup


class GroupSchedule(Dataset):
    """`length` draws from `groups`; item i is {"query", "documents": [positive, *negatives]}."""

    def __init__(self, groups: list[RerankGroup], num_negatives: int, seed: int, length: int):
        if not groups:
            raise ValueError("no training groups")
        self.groups = groups
        self.num_negatives = num_negatives
        self.seed = seed
        self.length = length
        self._order: tuple[int, list[int]] | None = None  # the current epoch's order (read sequentially)

    def __len__(self) -> int:
        return self.length

    def epoch_order(self, epoch: int) -> list[int]:
        """Group indices of one epoch, a seeded shuffle."""
        if self._order is None or self._order[0] != epoch:
            order = list(range(len(self.groups)))
            random.Random(f"{self.seed}:order:{epoch}").shuffle(order)
            self._order = (epoch, order)
        return self._order[1]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        epoch, position = divmod(i, len(self.groups))
        group = self.groups[self.epoch_order(epoch)[position]]
        positive, negatives = group.sample(epoch, self.num_negatives, random.Random(f"{self.seed}:draw:{i}"))
        return {"query": group.query, "documents": [positive, *negatives]}


class YesNoCollator:
    """Drawn groups -> left-padded input_ids, attention_mask, position_ids ((B * G) rows)."""

    def __init__(self, prompt: YesNoPrompt, pad_id: int):
        self.prompt = prompt
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        seqs = [ids for item in items for ids in self.prompt.encode_many(item["query"], item["documents"])]
        input_ids, attention_mask, position_ids = pad_left(seqs, self.pad_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
