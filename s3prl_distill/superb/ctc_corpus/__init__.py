"""Corpus readers for S3PRL's ``ctc`` downstream task that the PyPI wheel of S3PRL 0.4.18 lacks.

S3PRL's ``s3prl/downstream/ctc/data.py`` imports ``.corpus.libriphone.LibriPhoneDataset`` (PR,
``libriphone.yaml``) and ``.corpus.snips.SnipsDataset`` (SF, ``snips.yaml``).
:func:`s3prl_distill.superb.install` registers this package as ``s3prl.downstream.ctc.corpus``
(and each reader under its S3PRL name) only where the installed S3PRL lacks them: S3PRL's git
checkout ships its own readers, which are then used. Signatures and config keys are S3PRL's.

Both readers return what S3PRL's ``collect_audio_batch`` expects: ``dataset[i]`` is
``(audio_path, token_ids)`` for ``bucket_size == 1`` and a list of ``bucket_size`` such pairs
otherwise (items sorted by token length, so a bucket holds similar lengths).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

from torch.utils.data import Dataset

__all__ = ["BucketedTextDataset"]


class BucketedTextDataset(Dataset):
    """Pairs of (audio path, token ids), sorted by token count, served one-by-one or in buckets.

    Args:
        items: ``(audio_path, token_ids)`` pairs.
        bucket_size: 1 for single items, > 1 for buckets of consecutive (length-sorted) items.
        ascending: sort shortest-first instead of longest-first (S3PRL's default).
    """

    def __init__(self, items: Sequence[Tuple[str, List[int]]], bucket_size: int,
                 ascending: bool = False):
        if bucket_size < 1:
            raise ValueError(f"bucket_size must be >= 1, got {bucket_size}")
        ordered = sorted(items, key=lambda item: len(item[1]), reverse=not ascending)
        self.file_list = [path for path, _ in ordered]
        self.text = [tokens for _, tokens in ordered]
        self.bucket_size = bucket_size

    def __len__(self) -> int:
        return len(self.file_list)

    def __getitem__(self, index: int):
        if self.bucket_size == 1:
            return self.file_list[index], self.text[index]
        # A bucket starting at `index`, shifted left so that it never runs past the end.
        start = max(0, min(index, len(self.file_list) - self.bucket_size))
        stop = start + self.bucket_size
        return list(zip(self.file_list[start:stop], self.text[start:stop]))
