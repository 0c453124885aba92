"""Length-bucketing batch samplers, deterministic per epoch, resumable, split across processes.

A *global batch* holds ``batch_size`` utterances over all processes. Per epoch (seeded by
``seed + epoch``):

* ``bucketing: true``: utterances are shuffled, stably sorted by length (so similar lengths
  share a batch and padding stays small), cut into global batches, and the batch order is
  shuffled; ``false``: a random permutation cut into batches.
* Rank ``r`` of ``W`` processes takes items ``r, r + W, ...`` of each global batch (balanced
  lengths). A last batch with fewer than ``W`` items is dropped so that every rank steps
  together; ``drop_last`` drops any incomplete last batch.

Each yielded batch is a list of ``(index, epoch)`` pairs (the dataset seeds its random crop
with them). ``start(epoch, batches_done)`` makes the next iteration resume mid-epoch.
"""

from __future__ import annotations

from typing import Iterator, List, Sequence, Tuple

import torch
from torch.utils.data import Sampler

__all__ = ["BucketBatchSampler"]


class BucketBatchSampler(Sampler):
    """Batches of dataset indices (see the module docstring).

    Args:
        lengths: samples per item [N].
        batch_size: global batch size (all processes together); must be >= ``num_replicas``.
        shuffle, bucketing, drop_last, seed: see the module docstring.
        num_replicas, rank: data-parallel world size and this process's rank.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool = True,
                 bucketing: bool = True, drop_last: bool = False, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        if batch_size < num_replicas:
            raise ValueError(f"global batch size {batch_size} is smaller than the {num_replicas} "
                             "processes: every process needs at least one utterance")
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.bucketing = bucketing
        self.drop_last = drop_last
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self._skip = 0

    def start(self, epoch: int, batches_done: int = 0) -> None:
        """Next iteration yields epoch ``epoch`` from its batch ``batches_done`` on."""
        self.epoch = int(epoch)
        self._skip = int(batches_done)

    def set_epoch(self, epoch: int) -> None:
        self.start(epoch, 0)

    def global_batches(self, epoch: int) -> List[List[int]]:
        """All global batches of ``epoch`` (lists of dataset indices)."""
        n = len(self.lengths)
        gen = torch.Generator()
        gen.manual_seed(self.seed + epoch)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        if self.bucketing:
            _, by_len = torch.sort(self.lengths[order], descending=True, stable=True)
            order = order[by_len]
        batches = [order[i: i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        if batches and (len(batches[-1]) < self.num_replicas
                        or (self.drop_last and len(batches[-1]) < self.batch_size)):
            batches.pop()
        if self.shuffle and self.bucketing and batches:
            perm = torch.randperm(len(batches), generator=gen).tolist()
            batches = [batches[i] for i in perm]
        return batches

    def __len__(self) -> int:
        n = len(self.lengths)
        full, rest = divmod(n, self.batch_size)
        keep_rest = rest >= self.num_replicas and not (self.drop_last and rest > 0)
        return full + (1 if rest and keep_rest else 0)

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        epoch, skip = self.epoch, self._skip
        self._skip = 0
        for batch in self.global_batches(epoch)[skip:]:
            yield [(i, epoch) for i in batch[self.rank:: self.num_replicas]]
