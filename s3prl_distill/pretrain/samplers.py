"""Batch samplers: deterministic per epoch, resumable, split across processes.

A *global batch* holds the utterances of one micro-step over all processes. Per epoch (seeded by
``seed + epoch``):

* :class:`BucketBatchSampler` (``bucketing: true``): utterances are shuffled, stably sorted by
  length (so similar lengths share a batch and padding stays small), cut into global batches of
  ``batch_size``, and the batch order is shuffled; ``bucketing: false``: a random permutation cut
  into batches; ``shuffle: false``: the length-sorted (or listing) order, every epoch the same.
* :class:`S3PRLBatchSampler` (``bucketing: s3prl``): S3PRL's batches (``pretrain/bucket_dataset.py``),
  fixed for the whole run: its length table sorted by length, descending, exactly as pandas'
  ``sort_values(ascending=False)`` orders it (ties included; :func:`s3prl_sort_order`), cut into
  chunks of ``batch_size``; a full chunk whose longest utterance is over
  :data:`HALF_BATCHSIZE_TIME` samples is split into two halves when nothing is cropped; the last
  partial chunk is kept only if it holds more than one utterance. Only the batch order changes
  between epochs (S3PRL: a ``DataLoader(batch_size=1, shuffle=True)`` over the batches).
* :class:`FitHuBERTBatchSampler` (``bucketing: fithubert``): the official FitHuBERT code's batches
  (its ``utils/dataset.py`` ``LibriDataset``): the same sorted table cut into *per-process* buckets
  of ``batch_size / W``, never halved, a last bucket kept if it holds more than one utterance;
  each epoch the buckets are shuffled and dealt out as Lightning's ``DistributedSampler`` deals
  them (the shuffled list padded with its own first buckets to a multiple of ``W``; global batch
  ``i`` = buckets ``iW .. iW + W - 1``; rank ``r`` takes bucket ``r`` whole).

Rank ``r`` of ``W`` processes takes items ``r, r + W, ...`` of each global batch (balanced
lengths; ``bucketing: fithubert``: its own whole bucket). A batch with fewer than ``W`` items is dropped so that every rank steps together
(``keep_all=True``, for evaluation, keeps it: a rank may then get an empty share);
``drop_last`` drops any incomplete last batch.

Each yielded batch is a list of ``(index, epoch)`` pairs (the dataset seeds its random crop
with them). ``start(epoch, batches_done)`` makes the next iteration resume mid-epoch.
"""

from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["BucketBatchSampler", "S3PRLBatchSampler", "FitHuBERTBatchSampler", "s3prl_sort_order",
           "s3prl_batches", "HALF_BATCHSIZE_TIME"]

#: S3PRL's ``pretrain/bucket_dataset.py``: a bucket whose longest utterance has more samples is halved
HALF_BATCHSIZE_TIME = 99999


class _GlobalBatchSampler(Sampler):
    """Shared resume / rank-split logic; subclasses define :meth:`global_batches`."""

    def __init__(self, batch_size: int, *, drop_last: bool, num_replicas: int, rank: int,
                 keep_all: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        if batch_size < num_replicas and not keep_all:
            raise ValueError(f"global batch size {batch_size} is smaller than the {num_replicas} "
                             "processes: every process needs at least one utterance")
        self.batch_size = int(batch_size)
        self.drop_last = bool(drop_last)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.keep_all = bool(keep_all)
        self.epoch = 0
        self._skip = 0

    def start(self, epoch: int, batches_done: int = 0) -> None:
        """Next iteration yields epoch ``epoch`` from its batch ``batches_done`` on."""
        self.epoch = int(epoch)
        self._skip = int(batches_done)

    def set_epoch(self, epoch: int) -> None:
        self.start(epoch, 0)

    def global_batches(self, epoch: int) -> List[List[int]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _too_small(self, batch: Sequence[int]) -> bool:
        return not self.keep_all and len(batch) < self.num_replicas

    def __len__(self) -> int:
        return len(self.global_batches(self.epoch))

    def rank_batches(self, epoch: int) -> List[List[int]]:
        """This rank's share of each global batch of ``epoch``: items ``rank, rank + W, ...``."""
        return [batch[self.rank:: self.num_replicas] for batch in self.global_batches(epoch)]

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        epoch, skip = self.epoch, self._skip
        self._skip = 0
        for share in self.rank_batches(epoch)[skip:]:
            yield [(i, epoch) for i in share]


class BucketBatchSampler(_GlobalBatchSampler):
    """Length-bucketed (or random) batches of dataset indices (see the module docstring).

    Args:
        lengths: samples per item [N].
        batch_size: global batch size (all processes together); must be >= ``num_replicas``.
        shuffle, bucketing, drop_last, seed: see the module docstring.
        num_replicas, rank: data-parallel world size and this process's rank.
        keep_all: never drop a batch (evaluation).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool = True,
                 bucketing: bool = True, drop_last: bool = False, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, keep_all: bool = False):
        super().__init__(batch_size, drop_last=drop_last, num_replicas=num_replicas, rank=rank,
                         keep_all=keep_all)
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.shuffle = shuffle
        self.bucketing = bucketing
        self.seed = int(seed)

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
        if batches and (self._too_small(batches[-1])
                        or (self.drop_last and len(batches[-1]) < self.batch_size)):
            batches.pop()
        if self.shuffle and self.bucketing and batches:
            perm = torch.randperm(len(batches), generator=gen).tolist()
            batches = [batches[i] for i in perm]
        return batches

    def __len__(self) -> int:
        n = len(self.lengths)
        full, rest = divmod(n, self.batch_size)
        keep_rest = not self._too_small(range(rest)) and not (self.drop_last and rest > 0)
        return full + (1 if rest and keep_rest else 0)


def s3prl_sort_order(lengths: Sequence[int]) -> np.ndarray:
    """Row order of S3PRL's ``table.sort_values(by=["length"], ascending=False)``.

    pandas sorts descending with numpy's default (not stable) quicksort over the reversed
    column and reverses the result; equal lengths therefore come out in numpy's order, which
    this reproduces exactly (for the same numpy build; a stable sort would differ).

    Returns:
        int64 array [N]: row indices, longest first.
    """
    values = np.asarray(list(lengths), dtype=np.int64)
    rows = np.arange(len(values), dtype=np.int64)[::-1]
    return rows[values[::-1].argsort(kind="quicksort")][::-1]


def s3prl_batches(table_lengths: Sequence[int], batch_size: int, cropped: bool,
                  keep: Optional[Sequence[bool]] = None, halve: bool = True) -> List[List[int]]:
    """S3PRL's bucketing of a length table (``pretrain/bucket_dataset.py``), as rows of the table.

    Args:
        table_lengths: the ``length`` column of every row [N] (S3PRL's concatenated tables).
        batch_size: S3PRL's ``bucket_size`` (``datarc.train_batch_size``).
        cropped: whether a crop is on (S3PRL's ``task.sequence_length > 0``): then no halving.
        keep: rows that remain after filtering (S3PRL's ``max_timestep``, our screening); the
            table is sorted first and filtered after, as S3PRL does.
        halve: S3PRL's halving of long uncropped chunks (``False``: the official FitHuBERT
            ``LibriDataset``, which never halves).

    Returns:
        the batches, each a list of row indices.
    """
    lengths = list(table_lengths)
    order = [int(r) for r in s3prl_sort_order(lengths)]
    if keep is not None:
        order = [r for r in order if keep[r]]
    batches: List[List[int]] = []
    chunk: List[int] = []
    for row in order:
        chunk.append(row)
        if len(chunk) == batch_size:
            longest = max(lengths[r] for r in chunk)
            if halve and batch_size >= 2 and longest > HALF_BATCHSIZE_TIME and not cropped:
                batches.append(chunk[: batch_size // 2])
                batches.append(chunk[batch_size // 2:])
            else:
                batches.append(chunk)
            chunk = []
    if len(chunk) > 1:
        batches.append(chunk)
    return batches


class S3PRLBatchSampler(_GlobalBatchSampler):
    """S3PRL's fixed batches in a new order each epoch (see the module docstring).

    Args:
        table_lengths: the length of every row of the source's table [N] (S3PRL's length CSVs,
            or the listing with header frame counts).
        rows: the table row of each dataset item [M] (items are the rows that passed screening).
        batch_size: S3PRL's bucket size (the global batch).
        cropped: a crop is on (no halving of long batches).
        shuffle: a new batch order each epoch (S3PRL: always); seeded by ``seed + epoch``.
        drop_last: also drop an incomplete last batch (S3PRL keeps one of > 1 utterance).

    Raises:
        ValueError: when a batch (a halved one included) cannot give every process an utterance.
    """

    def __init__(self, table_lengths: Sequence[int], rows: Sequence[int], batch_size: int, *,
                 cropped: bool, shuffle: bool = True, drop_last: bool = False, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        super().__init__(batch_size, drop_last=drop_last, num_replicas=num_replicas, rank=rank)
        keep = [False] * len(table_lengths)
        item_of_row = {}
        for item, row in enumerate(rows):
            keep[int(row)] = True
            item_of_row[int(row)] = item
        batches = [[item_of_row[r] for r in b]
                   for b in s3prl_batches(table_lengths, self.batch_size, cropped, keep)]
        if batches and len(rows) % self.batch_size > 1 and drop_last:
            batches.pop()  # S3PRL's kept partial last batch
        last = len(rows) % self.batch_size > 1 and not drop_last
        body = batches[:-1] if last else batches
        if any(len(b) < self.num_replicas for b in body):
            raise ValueError(f"bucketing: s3prl halves batches of utterances over "
                             f"{HALF_BATCHSIZE_TIME} samples to {self.batch_size // 2}, fewer than the "
                             f"{self.num_replicas} processes: raise train_batch_size, crop, or use "
                             "fewer processes")
        self.batches = [b for b in batches if len(b) >= self.num_replicas]
        self.shuffle = shuffle
        self.seed = int(seed)

    def global_batches(self, epoch: int) -> List[List[int]]:
        if not self.shuffle:
            return [list(b) for b in self.batches]
        gen = torch.Generator()
        gen.manual_seed(self.seed + epoch)
        return [list(self.batches[i]) for i in torch.randperm(len(self.batches), generator=gen).tolist()]

    def __len__(self) -> int:
        return len(self.batches)


class FitHuBERTBatchSampler(_GlobalBatchSampler):
    """The official FitHuBERT batches, dealt out as Lightning deals them (module docstring).

    Args:
        table_lengths, rows: as :class:`S3PRLBatchSampler`.
        batch_size: the global batch (``datarc.train_batch_size``); each process's bucket holds
            ``batch_size / num_replicas`` utterances (the official ``batch_size``: 3 per GPU).
        shuffle: shuffle the buckets each epoch (seeded by ``seed + epoch``; Lightning's
            ``DistributedSampler`` with ``shuffle=True``); ``False``: the sorted order.
        drop_last: drop an incomplete last group of buckets instead of padding it with the first
            buckets of the epoch (``DistributedSampler``'s default pads).

    Raises:
        ValueError: ``batch_size`` not a multiple of ``num_replicas``.
    """

    def __init__(self, table_lengths: Sequence[int], rows: Sequence[int], batch_size: int, *,
                 shuffle: bool = True, drop_last: bool = False, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        super().__init__(batch_size, drop_last=drop_last, num_replicas=num_replicas, rank=rank)
        if self.batch_size % self.num_replicas:
            raise ValueError(f"bucketing: fithubert needs train_batch_size ({self.batch_size}) to be "
                             f"a multiple of the {self.num_replicas} processes (one bucket each: the "
                             "official batch_size per GPU times the GPUs)")
        self.bucket_size = self.batch_size // self.num_replicas
        keep = [False] * len(table_lengths)
        item_of_row = {}
        for item, row in enumerate(rows):
            keep[int(row)] = True
            item_of_row[int(row)] = item
        self.buckets = [[item_of_row[r] for r in b] for b in
                        s3prl_batches(table_lengths, self.bucket_size, cropped=True, keep=keep, halve=False)]
        self.shuffle = shuffle
        self.seed = int(seed)

    def _groups(self) -> int:
        n, w = len(self.buckets), self.num_replicas
        return n // w if self.drop_last else -(-n // w)

    def bucket_groups(self, epoch: int) -> List[List[List[int]]]:
        """The epoch's buckets dealt out: group ``i`` = buckets ``iW .. iW + W - 1`` of the
        shuffled order (padded with its first buckets to a multiple of ``W``)."""
        order = list(range(len(self.buckets)))
        if self.shuffle:
            gen = torch.Generator()
            gen.manual_seed(self.seed + epoch)
            order = torch.randperm(len(self.buckets), generator=gen).tolist()
        w, total = self.num_replicas, self._groups() * self.num_replicas
        order = (order + order[: max(0, total - len(order))])[:total]
        return [[list(self.buckets[b]) for b in order[i: i + w]] for i in range(0, total, w)]

    def global_batches(self, epoch: int) -> List[List[int]]:
        """Each group's buckets concatenated (rank ``r`` takes the ``r``-th bucket)."""
        return [[item for bucket in group for item in bucket] for group in self.bucket_groups(epoch)]

    def rank_batches(self, epoch: int) -> List[List[int]]:
        """This rank's whole bucket of each group, as ``DistributedSampler`` gives it."""
        return [group[self.rank] for group in self.bucket_groups(epoch)]

    def __len__(self) -> int:
        return self._groups()
