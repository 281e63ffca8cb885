"""Which training dataset each batch comes from, in pooled (multi-dataset) runs.

Training runs through sentence-transformers' trainer, which, given a `DatasetDict`, builds one
batch sampler per dataset (no-duplicates batches) and a *multi-dataset* sampler that picks
which dataset the next batch comes from; every batch is therefore drawn from one dataset,
so a query never meets another dataset's documents as in-batch negatives. The library's
`proportional` (every row once per epoch, larger datasets more often) and `round_robin`
(datasets in turn until the smallest runs out) samplers are used as they are; `weighted`
is densekit's addition, for when row counts are a poor guide (NFCorpus has ~43 training rows
per query, SciFact ~1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import accumulate

import torch
from sentence_transformers.base.sampler import MultiDatasetBatchSamplers, MultiDatasetDefaultBatchSampler


class WeightedBatchSampler(MultiDatasetDefaultBatchSampler):
    """Each batch from dataset i with probability weights[i] / sum(weights), drawn with a
    generator seeded by (seed, epoch); a dataset that runs out starts again on a new shuffle.
    An epoch has as many batches as all datasets together (as `proportional`), so the
    learning-rate schedule of an epochs-based run does not depend on the weights."""

    def __init__(self, dataset, batch_samplers, generator=None, seed: int = 0, weights: Sequence[float] = ()):
        super().__init__(dataset, batch_samplers, generator=generator, seed=seed)
        if len(weights) != len(batch_samplers) or not all(w > 0 for w in weights):
            raise ValueError(f"need one positive weight per dataset ({len(batch_samplers)}), got {list(weights)}")
        self.weights = torch.tensor([float(w) for w in weights], dtype=torch.float64)

    def __iter__(self) -> Iterator[list[int]]:
        draw = torch.Generator().manual_seed(int(self.seed or 0) + self.epoch)
        offsets = [0, *accumulate(len(d) for d in self.dataset.datasets)]  # type: ignore[arg-type]  # map-style datasets: sized
        iterators = [iter(s) for s in self.batch_samplers]
        restarts = [0] * len(iterators)
        for _ in range(len(self)):
            i = int(torch.multinomial(self.weights, 1, generator=draw))
            batch = next(iterators[i], None)
            if batch is None:
                restarts[i] += 1
                sampler = self.batch_samplers[i]
                if hasattr(sampler, "set_epoch"):  # its shuffle is seeded by seed + epoch: a new one
                    sampler.set_epoch(self.epoch + 100_003 * restarts[i])
                iterators[i] = iter(sampler)
                batch = next(iterators[i], None)
                if batch is None:  # an empty dataset
                    continue
            yield [idx + offsets[i] for idx in batch]

    def __len__(self) -> int:
        return sum(len(s) for s in self.batch_samplers)


def multi_dataset_sampler(sampling: str, weights: Sequence[float]) -> MultiDatasetBatchSamplers | Callable:
    """The trainer's `multi_dataset_batch_sampler` argument for a `data.sampling` name."""
    if sampling == "weighted":
        # A partial of the class, not a closure: the trainer pickles its arguments into every checkpoint.
        return partial(WeightedBatchSampler, weights=list(weights))
    return MultiDatasetBatchSamplers(sampling)
