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

The Trainer reads it in order (a sequential sampler): consecutive items make a batch.
`PooledSchedule` interleaves one such stream per dataset of a pooled run, batch by batch,
so every batch holds one dataset's groups; which dataset each batch comes from is a
seeded draw by `data.sampling` (weighted by the entries' weights, proportional to their
group counts, or in turn). `PackedStream` (with `train.pack_window`) reorders each window of
a stream's draws by prompt length, then shuffles the window's batches: the same draws with
less padding. All of it depends only on the seed, the groups and the tokenizer.

`YesNoCollator` turns a batch of drawn groups into the exact prompts inference scores
(`densekit.rerankers.prompt`), left-padded, one row per (query, document), each group's
positive first.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from torch.utils.data import Dataset

from densekit.rerankers.llm import pad_left
from densekit.rerankers.prompt import YesNoPrompt
from densekit.training.rerank.train_data import RerankGroup


class GroupSchedule(Dataset):
    """`length` draws from `groups`; item i is {"query", "documents": [positive, *negatives]}."""

    def __init__(self, groups: list[RerankGroup], num_negatives: int, seed: int | str, length: int):
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
        return {"query": group.query, "documents": [positive, *negatives], "dataset": group.dataset}


class PackedStream(Dataset):
    """`stream` with each window of `window_batches` x `batch_size` draws sorted by
    `length_of(item)` into batches, the window's batches then shuffled (seeded)."""

    def __init__(self, stream, batch_size: int, window_batches: int, seed: int | str, length_of: Callable[[dict[str, Any]], int]):
        self.stream = stream
        self.window = batch_size * window_batches
        self.batch_size = batch_size
        self.seed = seed
        self.length_of = length_of
        self._perm: tuple[int, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.stream)

    def window_order(self, w: int) -> list[int]:
        if self._perm is None or self._perm[0] != w:
            idx = list(range(w * self.window, min((w + 1) * self.window, len(self.stream))))
            ranked = sorted(idx, key=lambda n: (self.length_of(self.stream[n]), n))
            batches = [ranked[s : s + self.batch_size] for s in range(0, len(ranked), self.batch_size)]
            random.Random(f"{self.seed}:pack:{w}").shuffle(batches)
            self._perm = (w, [n for b in batches for n in b])
        return self._perm[1]

    def __getitem__(self, n: int) -> dict[str, Any]:
        if not 0 <= n < len(self.stream):
            raise IndexError(n)
        w, k = divmod(n, self.window)
        return self.stream[self.window_order(w)[k]]


def batch_datasets(n_batches: int, sampling: str, weights: Sequence[float], sizes: Sequence[int], seed: int | str) -> list[int]:
    """Which dataset each of `n_batches` batches comes from."""
    d = len(sizes)
    if sampling == "round_robin":
        return [b % d for b in range(n_batches)]
    w = list(sizes) if sampling == "proportional" else list(weights)
    return random.Random(f"{seed}:datasets").choices(range(d), weights=w, k=n_batches)


class PooledSchedule(Dataset):
    """`length` draws in batches of `batch_size`, each batch from one of `streams` (item n of a
    stream is that dataset's n-th draw); `choice[b]` is batch b's dataset."""

    def __init__(self, streams: list, batch_size: int, choice: list[int], length: int):
        self.streams = streams
        self.batch_size = batch_size
        self.choice = choice
        self.length = length
        self.before: list[int] = []  # batches of the same dataset before batch b
        seen = [0] * len(streams)
        for c in choice:
            self.before.append(seen[c])
            seen[c] += 1

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        b, k = divmod(i, self.batch_size)
        return self.streams[self.choice[b]][self.before[b] * self.batch_size + k]


def build_schedule(
    groups: list[RerankGroup],
    num_negatives: int,
    seed: int,
    length: int,
    batch_size: int,
    datasets: Sequence[tuple[str, float]] = (),
    sampling: str = "weighted",
    pack_window: int | None = None,
    length_of: Callable[[dict[str, Any]], int] | None = None,
) -> Dataset:
    """The run's draws: one `GroupSchedule` for a single dataset; with several `datasets`
    ((label, weight) pairs, in config order) a `PooledSchedule` of one stream per dataset;
    each stream packed by length when `pack_window` is set."""

    def packed(stream, stream_seed):
        if pack_window is None or length_of is None:
            return stream
        return PackedStream(stream, batch_size, pack_window, stream_seed, length_of)

    if len(datasets) <= 1:
        return packed(GroupSchedule(groups, num_negatives, seed, length), seed)
    by_name = {name: [g for g in groups if g.dataset == name] for name, _ in datasets}
    if empty := [name for name, gs in by_name.items() if not gs]:
        raise ValueError(f"no training groups for dataset(s) {empty}")
    n_batches = math.ceil(length / batch_size)
    choice = batch_datasets(n_batches, sampling, [w for _, w in datasets], [len(by_name[n]) for n, _ in datasets], seed)
    streams = []
    for d, (name, _) in enumerate(datasets):
        draws = max(1, choice.count(d)) * batch_size
        streams.append(packed(GroupSchedule(by_name[name], num_negatives, f"{seed}:{name}", draws), f"{seed}:{name}"))
    return PooledSchedule(streams, batch_size, choice, length)


class YesNoCollator:
    """Drawn groups -> left-padded input_ids, attention_mask, position_ids ((B * G) rows)."""

    def __init__(self, prompt: YesNoPrompt, pad_id: int):
        self.prompt = prompt
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        seqs = [ids for item in items for ids in self.prompt.encode_many(item["query"], item["documents"])]
        input_ids, attention_mask, position_ids = pad_left(seqs, self.pad_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
