"""The pretraining dataset: checked, resampled, randomly cropped mono 16 kHz waveforms.

Files are screened once from the length index (headers only) and, per the config,

* unreadable / empty headers, files shorter than ``min_samples`` (the student's CNN receptive
  field, or ``min_seconds``), multi-channel files (``on_multichannel: error``) and files at
  another sample rate (``on_resample: error``) are *bad files*: ``bad_files: skip`` drops them
  with a count and examples in the log, ``bad_files: error`` stops with the list of paths;
* files longer than ``max_seconds`` (when set) are left out, with a count in the log.

Samples that turn out bad only when read (decode error, NaN/Inf) follow the same policy: the
item is dropped from its batch with a warning naming the file, or the run stops naming it.

Random crops are drawn from a generator seeded by ``(seed, epoch, index)``, so a resumed run and
any number of DataLoader workers crop exactly as an uninterrupted single-worker run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.utils.data import Dataset

from s3prl_distill.audio import AudioError, crop, read_audio
from s3prl_distill.lengths import pad_waveforms
from s3prl_distill.pretrain.data import DataError, IndexEntry, build_length_index, source_root

logger = logging.getLogger(__name__)

__all__ = ["DistillDataset", "collate_batch", "screen_entries"]

#: samples of HuBERT/wav2vec 2.0's 7-layer CNN receptive field (one output frame)
DEFAULT_MIN_SAMPLES = 400


def screen_entries(entries: Sequence[IndexEntry], datarc, min_samples: int
                   ) -> Tuple[List[IndexEntry], List[Tuple[str, str]], int]:
    """Split index entries into (usable, bad [(path, reason)], number left out as too long)."""
    sr = datarc.sample_rate
    min_len = max(int(min_samples), int(round(datarc.min_seconds * sr)), 1)
    max_len = int(round(datarc.max_seconds * sr)) if datarc.max_seconds > 0 else 0
    good, bad, too_long = [], [], 0
    for e in entries:
        reason = None
        if e.status != "ok":
            reason = e.status
        elif e.num_frames <= 0:
            reason = "holds no samples"
        elif e.channels != 1 and datarc.on_multichannel == "error":
            reason = f"{e.channels} channels, expected mono (on_multichannel: error)"
        elif e.sample_rate != sr and datarc.on_resample == "error":
            reason = f"sample rate {e.sample_rate} Hz, expected {sr} Hz (on_resample: error)"
        elif e.samples_at(sr) < min_len:
            reason = (f"{e.samples_at(sr)} samples at {sr} Hz, shorter than the minimum {min_len} "
                      "(model receptive field / min_seconds)")
        if reason is not None:
            bad.append((e.path, reason))
        elif max_len and e.samples_at(sr) > max_len:
            too_long += 1
        else:
            good.append(e)
    return good, bad, too_long


class DistillDataset(Dataset):
    """Utterances of a :class:`~s3prl_distill.pretrain.config.DataConfig` source.

    Args:
        datarc: the data config.
        min_samples: shortest usable input in samples (the student's CNN receptive field).
        seed: base seed of the random crops.
        index_path: length index file (default ``datarc.length_index`` or the cache).

    Attributes:
        lengths (List[int]): samples per item after resampling and cropping (for bucketing).
        full_lengths (List[int]): samples per item after resampling, before cropping.
        paths (List[str]): absolute paths.
        ids (List[str]): stable utterance ids: paths relative to the source root (the key of a
            teacher-feature cache).

    ``dataset[(index, epoch)]`` (or ``dataset[index]``, epoch 0) returns
    ``{"wav": Tensor [S] float32, "index": int, "id": str}``, or ``None`` for a file found bad on
    reading when ``bad_files: skip``.
    """

    def __init__(self, datarc, min_samples: int = DEFAULT_MIN_SAMPLES, seed: int = 0,
                 index_path: Optional[str] = None):
        self.datarc = datarc
        self.seed = int(seed)
        self.sample_rate = datarc.sample_rate
        self.crop_samples = int(round(datarc.crop_seconds * datarc.sample_rate))
        self.min_samples = max(int(min_samples), int(round(datarc.min_seconds * datarc.sample_rate)), 1)
        entries = build_length_index(datarc, index_path)
        good, bad, too_long = screen_entries(entries, datarc, self.min_samples)
        self.bad_files: List[Tuple[str, str]] = bad
        if bad:
            listing = "\n".join(f"  {path}: {reason}" for path, reason in bad[:10])
            more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
            if datarc.bad_files == "error":
                raise DataError(f"{len(bad)} bad audio file(s) (bad_files: error):\n{listing}{more}")
            logger.warning("skipping %d bad audio file(s) of %d (bad_files: skip):\n%s%s", len(bad),
                           len(entries), listing, more)
        if too_long:
            logger.info("left out %d file(s) longer than max_seconds=%s", too_long, datarc.max_seconds)
        if not good:
            raise DataError(f"no usable audio files in the {datarc.source_kind} source "
                            f"({len(entries)} listed, {len(bad)} bad, {too_long} too long)")
        self.entries = good
        self.paths = [e.path for e in good]
        root = source_root(datarc)
        self.ids = [os.path.relpath(path, root) for path in self.paths]
        self.full_lengths = [e.samples_at(self.sample_rate) for e in good]
        self.lengths = [min(n, self.crop_samples) if self.crop_samples else n for n in self.full_lengths]
        self.skipped_on_read = 0
        logger.info("pretraining data: %d utterances, %.2f hours (after crops)", len(good),
                    sum(self.lengths) / self.sample_rate / 3600)

    def __len__(self) -> int:
        return len(self.entries)

    def crop_generator(self, index: int, epoch: int) -> torch.Generator:
        """The generator of the random crop of item ``index`` in ``epoch``."""
        gen = torch.Generator()
        gen.manual_seed((self.seed * 1_000_003 + epoch * 7_919 + index * 104_729) % (2**63 - 1))
        return gen

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Optional[Dict[str, Any]]:
        index, epoch = (key, 0) if isinstance(key, int) else (int(key[0]), int(key[1]))
        path = self.paths[index]
        try:
            wav, _ = read_audio(
                path,
                self.sample_rate,
                on_multichannel="mix" if self.datarc.on_multichannel == "mix" else "error",
                on_resample="warn",
                min_samples=self.min_samples,
            )
        except AudioError as err:
            if self.datarc.bad_files == "error":
                raise DataError(f"{path}: bad audio file (bad_files: error): {err}") from err
            logger.warning("skipping bad audio file %s: %s", path, err)
            self.skipped_on_read += 1
            return None
        if self.crop_samples and wav.shape[0] > self.crop_samples:
            wav = crop(wav, self.crop_samples, mode="random", generator=self.crop_generator(index, epoch))
        return {"wav": wav, "index": index, "id": self.ids[index]}


def collate_batch(items: Sequence[Optional[Dict[str, Any]]]) -> Dict[str, Any]:
    """Pad a list of dataset items into a batch.

    Returns:
        ``{"wavs": Tensor [B, S], "wav_lengths": LongTensor [B], "indices": LongTensor [B],
        "ids": List[str] (B utterance ids), "skipped": int}``; ``B`` may be 0 when every item was
        bad (``wavs`` is then [0, 0]).
    """
    good = [item for item in items if item is not None]
    skipped = len(items) - len(good)
    if not good:
        return {"wavs": torch.zeros(0, 0), "wav_lengths": torch.zeros(0, dtype=torch.long),
                "indices": torch.zeros(0, dtype=torch.long), "ids": [], "skipped": skipped}
    wavs, lengths = pad_waveforms([item["wav"] for item in good])
    indices = torch.tensor([item["index"] for item in good], dtype=torch.long)
    ids = [str(item["id"]) for item in good]
    return {"wavs": wavs, "wav_lengths": lengths, "indices": indices, "ids": ids, "skipped": skipped}
