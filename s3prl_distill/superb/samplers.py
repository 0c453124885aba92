"""Samplers S3PRL's SUPERB tasks import from third-party packages that may not load here."""

from __future__ import annotations

from typing import Iterator, Optional

from torch.utils.data import Dataset, DistributedSampler, Sampler

__all__ = ["DistributedSamplerWrapper"]


class _IndexList(Dataset):
    """The indices one pass of a sampler yields, as a dataset (so DistributedSampler can split it)."""

    def __init__(self, sampler: Sampler):
        self.indices = list(iter(sampler))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> int:
        return self.indices[position]


class DistributedSamplerWrapper(DistributedSampler):
    """Run any sampler (e.g. a ``WeightedRandomSampler``) under distributed training.

    Each epoch draws one pass of ``sampler`` and gives this process (``rank`` of ``num_replicas``)
    its share of the drawn indices, as catalyst's class of the same name does.
    """

    def __init__(self, sampler: Sampler, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, shuffle: bool = True):
        super().__init__(_IndexList(sampler), num_replicas=num_replicas, rank=rank,
                         shuffle=shuffle)
        self.sampler = sampler

    def __iter__(self) -> Iterator[int]:
        drawn = _IndexList(self.sampler)
        self.dataset = drawn
        for position in super().__iter__():
            yield drawn[position]
