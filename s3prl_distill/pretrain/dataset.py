"""The pretraining dataset: checked, resampled, randomly cropped mono 16 kHz waveforms.

Files are screened once from the length index (headers only) and, per the config,

* unreadable / empty headers, files shorter than ``min_samples`` (the student's CNN receptive
  field, or ``min_seconds``), multi-channel files (``on_multichannel: error``), files at another
  sample rate (``on_resample: error``), files whose S3PRL length table disagrees with their header
  (a stale table), and files whose fed length (after the crop) exceeds the teacher's input limit
  (``max_input_samples``, e.g. Whisper's 30 s) or ``max_input_seconds`` (a memory guard: 60 s by
  default when nothing is cropped) are *bad files*: ``bad_files: skip`` drops them with a count
  and examples in the log, ``bad_files: error`` stops with the list of paths and reasons;
* files longer than ``max_seconds`` (when set) or outside S3PRL's ``max_timestep`` are left
  out deliberately, with a count in the log.

Samples that turn out bad only when read (decode error, NaN/Inf) follow the same policy: the
item is dropped from its batch with a warning naming the file, or the run stops naming it.

Random crops are drawn from a generator seeded by ``(seed, epoch, index)``, so a resumed run and
any number of DataLoader workers crop exactly as an uninterrupted single-worker run.

Loaders: :func:`build_train_loader` (the sampler the config asks for, split across processes)
and :func:`build_dev_loader` (the dev set: whole utterances, deterministic order, the same
collate and screening).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset

from s3prl_distill.audio import AudioError, crop, read_audio
from s3prl_distill.config import ConfigError
from s3prl_distill.lengths import pad_waveforms
from s3prl_distill.pretrain.data import (DataError, IndexEntry, build_length_index, list_source,
                                         read_length_tables, source_root)
from s3prl_distill.pretrain.samplers import BucketBatchSampler, FitHuBERTBatchSampler, S3PRLBatchSampler

logger = logging.getLogger(__name__)

__all__ = ["DistillDataset", "collate_batch", "screen_entries", "Screening", "build_train_loader",
           "build_dev_dataset", "build_dev_loader", "DEFAULT_MIN_SAMPLES"]

#: samples of HuBERT/wav2vec 2.0's 7-layer CNN receptive field (one output frame)
DEFAULT_MIN_SAMPLES = 400


@dataclass
class Screening:
    """Outcome of :func:`screen_entries`: usable entries, bad files and deliberately left-out ones."""

    good: List[IndexEntry] = field(default_factory=list)
    bad: List[Tuple[str, str]] = field(default_factory=list)       #: (path, reason)
    left_out: Dict[str, int] = field(default_factory=dict)         #: rule -> count


def _seconds(samples: int, sr: int) -> str:
    return f"{samples / sr:.2f} s"


def input_limit(datarc, crop_samples: int, max_input_samples: Optional[int] = None
                ) -> Tuple[Optional[int], str]:
    """The longest input (samples) a file may be fed with, and what sets it.

    The smaller of the teacher's limit (``max_input_samples``) and ``max_input_seconds`` (null:
    :attr:`~s3prl_distill.pretrain.config.DataConfig.AUTO_MAX_INPUT_SECONDS` when nothing is
    cropped, none otherwise; 0: none). Returns (None, "") when nothing limits it.
    """
    sr = datarc.sample_rate
    seconds = datarc.max_input_seconds
    if seconds is None:
        seconds = 0.0 if crop_samples else datarc.AUTO_MAX_INPUT_SECONDS
        what = (f"max_input_seconds (default {seconds:g} s when nothing is cropped: self-attention "
                "memory grows with the square of the length)")
    else:
        what = f"max_input_seconds={seconds:g}"
    memory = int(round(seconds * sr)) if seconds > 0 else None
    teacher = int(max_input_samples) if max_input_samples else None
    if teacher is not None and (memory is None or teacher <= memory):
        return teacher, f"the teacher's input limit ({_seconds(teacher, sr)})"
    if memory is not None:
        return memory, what
    return None, ""


def screen_entries(entries: Sequence[IndexEntry], datarc, min_samples: int, *,
                   crop_samples: Optional[int] = None, max_input_samples: Optional[int] = None,
                   table_lengths: Optional[Sequence[int]] = None) -> Screening:
    """Split index entries into usable ones, bad files (with reasons) and left-out counts.

    Args:
        entries: the length index of the source.
        min_samples: shortest usable input (samples at ``datarc.sample_rate``).
        crop_samples: the crop in samples (default ``datarc.crop_seconds``; 0: none).
        max_input_samples: the teacher's input limit (None: none).
        table_lengths: per entry, its length in S3PRL's length table (``max_timestep`` compares
            these; a table disagreeing with the header is a bad file); default: the header's frames.
    """
    sr = datarc.sample_rate
    crop_len = datarc.crop_samples if crop_samples is None else int(crop_samples)
    min_len = max(int(min_samples), int(round(datarc.min_seconds * sr)), 1)
    max_len = int(round(datarc.max_seconds * sr)) if datarc.max_seconds > 0 else 0
    limit, limit_what = input_limit(datarc, crop_len, max_input_samples)
    step = datarc.max_timestep
    out = Screening()
    for i, e in enumerate(entries):
        table = int(table_lengths[i]) if table_lengths is not None else e.num_frames
        samples = e.samples_at(sr)
        fed = min(samples, crop_len) if crop_len else samples
        reason, rule = None, None
        if e.status != "ok":
            reason = e.status
        elif e.num_frames <= 0:
            reason = "holds no samples"
        elif e.channels != 1 and datarc.on_multichannel == "error":
            reason = f"{e.channels} channels, expected mono (on_multichannel: error)"
        elif e.sample_rate != sr and datarc.on_resample == "error":
            reason = f"sample rate {e.sample_rate} Hz, expected {sr} Hz (on_resample: error)"
        elif table != e.num_frames:
            reason = (f"the length table says {table} samples, the file has {e.num_frames}: the "
                      "table is stale (regenerate it with S3PRL's preprocess/generate_len_for_bucket.py)")
        elif samples < min_len:
            reason = (f"{samples} samples at {sr} Hz, shorter than the minimum {min_len} "
                      "(model receptive field / min_seconds)")
        elif max_len and samples > max_len:
            rule = f"longer than max_seconds={datarc.max_seconds:g}"
        elif (step > 0 and not table < step) or (step < 0 and not table > -step):
            rule = f"outside max_timestep={step}"
        elif limit is not None and fed > limit:
            reason = (f"{_seconds(fed, sr)} fed whole, longer than {limit_what}; split the file, "
                      "crop (crop_seconds), leave long files out (max_seconds)"
                      + (", or raise max_input_seconds (0: no limit)" if "max_input" in limit_what else ""))
        if reason is not None:
            out.bad.append((e.path, reason))
        elif rule is not None:
            out.left_out[rule] = out.left_out.get(rule, 0) + 1
        else:
            out.good.append(e)
    return out


class DistillDataset(Dataset):
    """Utterances of a :class:`~s3prl_distill.pretrain.config.DataConfig` source.

    Args:
        datarc: the data config.
        min_samples: shortest usable input in samples (the student's CNN receptive field).
        seed: base seed of the random crops.
        index_path: length index file (default ``datarc.length_index`` or the cache).
        crop_samples: random crop in samples, overriding ``datarc.crop_seconds`` (S3PRL's
            ``task.sequence_length``); 0: whole utterances; None: ``crop_seconds``.
        max_input_samples: the teacher's input limit (``teacher.max_input_samples``; None: none).

    Attributes:
        lengths (List[int]): samples per item after resampling and cropping (for bucketing).
        full_lengths (List[int]): samples per item after resampling, before cropping.
        paths (List[str]): absolute paths.
        ids (List[str]): stable utterance ids: paths relative to the source root (the key of a
            teacher-feature cache).
        fingerprints (List[str]): ``"<size>:<mtime_ns>"`` of each file (the teacher cache
            rebuilds an utterance whose file changed).
        crop_samples (int): the crop in force (0: none).
        table_lengths (List[int]): the length of every row of the source's table (S3PRL's length
            CSVs, or the listed files' header frames), screened-out rows included.
        rows (List[int]): the table row of each item (``bucketing: s3prl`` sorts the table).

    Raises:
        ConfigError: a crop longer than the teacher's input limit.
        DataError: a missing source; with ``bad_files: error``, any bad file (all listed).

    ``dataset[(index, epoch)]`` (or ``dataset[index]``, epoch 0) returns
    ``{"wav": Tensor [S] float32, "index": int, "id": str}``, or ``None`` for a file found bad on
    reading when ``bad_files: skip``.
    """

    def __init__(self, datarc, min_samples: int = DEFAULT_MIN_SAMPLES, seed: int = 0,
                 index_path: Optional[str] = None, *, crop_samples: Optional[int] = None,
                 max_input_samples: Optional[int] = None):
        self.datarc = datarc
        self.seed = int(seed)
        self.sample_rate = sr = datarc.sample_rate
        self.crop_samples = datarc.crop_samples if crop_samples is None else int(crop_samples)
        if self.crop_samples < 0:
            raise ConfigError(f"crop_samples: expected >= 0 (0: no crop), got {self.crop_samples}")
        if max_input_samples and self.crop_samples > int(max_input_samples):
            what = (f"crop_seconds: {datarc.crop_seconds:g}" if crop_samples is None
                    else f"a crop of {self.crop_samples} samples (task.sequence_length)")
            raise ConfigError(f"{what} is longer than the teacher's input limit of "
                              f"{int(max_input_samples)} samples ({_seconds(int(max_input_samples), sr)}); "
                              "crop to at most that")
        self.min_samples = max(int(min_samples), int(round(datarc.min_seconds * sr)), 1)
        listing = list_source(datarc)
        entries = build_length_index(datarc, index_path, listing)
        if datarc.source_kind == "s3prl_csv":
            table = read_length_tables(datarc)
            first_row: Dict[str, int] = {}
            for row, (path, _) in enumerate(table):
                first_row.setdefault(path, row)
            self.table_lengths = [length for _, length in table]
            entry_rows = [first_row[os.path.normpath(e.path)] for e in entries]
            entry_table = [self.table_lengths[r] for r in entry_rows]
        else:
            self.table_lengths = [e.num_frames for e in entries]
            entry_rows = list(range(len(entries)))
            entry_table = None
        screened = screen_entries(entries, datarc, self.min_samples, crop_samples=self.crop_samples,
                                  max_input_samples=max_input_samples, table_lengths=entry_table)
        bad = screened.bad
        self.bad_files: List[Tuple[str, str]] = bad
        if bad:
            listing_text = "\n".join(f"  {path}: {reason}" for path, reason in bad[:10])
            more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
            if datarc.bad_files == "error":
                raise DataError(f"{len(bad)} bad audio file(s) (bad_files: error):\n{listing_text}{more}")
            logger.warning("skipping %d bad audio file(s) of %d (bad_files: skip):\n%s%s", len(bad),
                           len(entries), listing_text, more)
        for rule, count in screened.left_out.items():
            logger.info("left out %d file(s) %s", count, rule)
        good = screened.good
        if not good:
            raise DataError(f"no usable audio files in the {datarc.source_kind} source "
                            f"({len(entries)} listed, {len(bad)} bad, "
                            f"{sum(screened.left_out.values())} left out)")
        row_of = {id(e): r for e, r in zip(entries, entry_rows)}
        self.rows = [row_of[id(e)] for e in good]
        self.entries = good
        self.paths = [e.path for e in good]
        root = source_root(datarc)
        self.ids = [os.path.relpath(path, root) for path in self.paths]
        self.fingerprints = [e.fingerprint for e in good]
        self.full_lengths = [e.samples_at(sr) for e in good]
        self.lengths = [min(n, self.crop_samples) if self.crop_samples else n for n in self.full_lengths]
        self.skipped_on_read = 0
        logger.info("pretraining data: %d utterances, %.2f hours (after crops)", len(good),
                    sum(self.lengths) / sr / 3600)

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


def build_train_loader(dataset: DistillDataset, datarc, *, seed: int, rank: int = 0,
                       world_size: int = 1, pin_memory: bool = False) -> DataLoader:
    """The training loader of ``dataset``: batches as ``datarc.batching`` says (true: length
    buckets; false: random; ``s3prl``: S3PRL's batches; ``fithubert``: the official FitHuBERT
    buckets), this rank's share of each global batch.

    ``loader.batch_sampler`` is the resumable sampler (``start(epoch, batches_done)``,
    ``len()`` = batches per epoch); batches are :func:`collate_batch` dicts.
    """
    if datarc.batching == "s3prl":
        sampler = S3PRLBatchSampler(dataset.table_lengths, dataset.rows, datarc.train_batch_size,
                                    cropped=dataset.crop_samples > 0, shuffle=datarc.shuffle,
                                    drop_last=datarc.drop_last, seed=seed, num_replicas=world_size,
                                    rank=rank)
    elif datarc.batching == "fithubert":
        sampler = FitHuBERTBatchSampler(dataset.table_lengths, dataset.rows, datarc.train_batch_size,
                                        shuffle=datarc.shuffle, drop_last=datarc.drop_last, seed=seed,
                                        num_replicas=world_size, rank=rank)
    else:
        sampler = BucketBatchSampler(dataset.lengths, datarc.train_batch_size, shuffle=datarc.shuffle,
                                     bucketing=bool(datarc.batching), drop_last=datarc.drop_last,
                                     seed=seed, num_replicas=world_size, rank=rank)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=datarc.num_workers,
                      collate_fn=collate_batch, pin_memory=pin_memory, generator=generator,
                      persistent_workers=False)


def build_dev_dataset(datarc, *, min_samples: int = DEFAULT_MIN_SAMPLES,
                      max_input_samples: Optional[int] = None) -> Optional[DistillDataset]:
    """The dev set of ``datarc`` (``dev_sets`` / ``dev_audio_dir`` / ``dev_file_list``) as whole
    utterances with the training screening, or None when no dev set is configured."""
    dev = datarc.dev_config()
    if dev is None:
        return None
    logger.info("dev set: %s", dev.sets if dev.libri_root else (dev.audio_dir or dev.file_list))
    return DistillDataset(dev, min_samples=min_samples, seed=0, crop_samples=0,
                          max_input_samples=max_input_samples)


def build_dev_loader(datarc, *, min_samples: int = DEFAULT_MIN_SAMPLES, rank: int = 0,
                     world_size: int = 1, max_input_samples: Optional[int] = None,
                     pin_memory: bool = False, dataset: Optional[DistillDataset] = None
                     ) -> Optional[DataLoader]:
    """The dev loader the trainer evaluates on, or None when ``datarc`` names no dev set.

    Whole utterances (no crop), every utterance once per pass in a fixed order (longest first,
    chunks of ``dev_batch_size``, default ``train_batch_size``; rank ``r`` takes items
    ``r, r + W, ...`` of each chunk, so a rank may get an empty batch, ``wavs`` [0, 0], at the
    end: weight losses by frames), the training collate and screening (bad files, the teacher's
    and the memory input limits). ``loader.dataset`` is the dev :class:`DistillDataset` (its
    ``ids`` key the dev teacher cache, ``<teacher_cache>/dev``).

    Args:
        datarc: the training data config.
        min_samples: the student's receptive field (as for training).
        rank, world_size: this process and the number of processes.
        max_input_samples: the teacher's input limit.
        dataset: a dev dataset already built (:func:`build_dev_dataset`).
    """
    if dataset is None:
        dataset = build_dev_dataset(datarc, min_samples=min_samples,
                                    max_input_samples=max_input_samples)
    if dataset is None:
        return None
    dev = dataset.datarc
    sampler = BucketBatchSampler(dataset.lengths, dev.train_batch_size, shuffle=False, bucketing=True,
                                 drop_last=False, num_replicas=world_size, rank=rank, keep_all=True)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=dev.num_workers,
                      collate_fn=collate_batch, pin_memory=pin_memory, persistent_workers=False)


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
