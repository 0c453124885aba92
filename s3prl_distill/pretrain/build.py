"""Build a distillation run from its parsed configs, and run one batch through it.

:func:`build_run` is the one construction path of everything a distillation step needs; our
trainer and the S3PRL pretrain expert (for S3PRL's own runner) both call it::

    DistillConfig (model YAML, parsed once)  -> teacher (frozen), student (+ teacher init), loss
                                             -> DistillationTask(student, teacher, loss)
    DataConfig (datarc, parsed once)         -> DistillDataset -> BucketBatchSampler -> DataLoader
                                             -> teacher cache (built once, or reused)

:meth:`DistillationRun.step` is the one path of a batch from the loader to the loss: move it to
the device, take the targets from the teacher cache when there is one, call the task (or the
task wrapped for data parallelism).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from s3prl_distill.config import ConfigError
from s3prl_distill.distill.config import DistillConfig
from s3prl_distill.distill.task import DistillationTask
from s3prl_distill.pretrain.config import DataConfig
from s3prl_distill.pretrain.dataset import DistillDataset, collate_batch
from s3prl_distill.pretrain.samplers import BucketBatchSampler
from s3prl_distill.pretrain.teacher_cache import TeacherCache, cache_dataset, cache_mismatch, teacher_info

logger = logging.getLogger(__name__)

__all__ = ["DistillationRun", "build_run", "build_task"]


def build_task(cfg: DistillConfig, *, seed: int = 0, where: str = "model config") -> DistillationTask:
    """Teacher, student (initialised from the teacher when ``init.from_teacher``), loss -> task."""
    from s3prl_distill.distill.init import init_student_from_teacher
    from s3prl_distill.distill.losses import build_loss
    from s3prl_distill.models import build_student
    from s3prl_distill.teachers import build_teacher

    teacher = build_teacher(cfg.require_teacher())
    student = build_student(cfg.student)
    if teacher.dim != cfg.student.teacher_dim:
        raise ConfigError(f"{where}: student.teacher_dim is {cfg.student.teacher_dim} but the "
                          f"teacher's hidden states have {teacher.dim} dims")
    if cfg.init.from_teacher:
        init_student_from_teacher(student, teacher, cfg.init)
    loss = build_loss(cfg.loss, student.target_layers, seed=seed)
    task = DistillationTask(student, teacher, loss)
    logger.info("student: %.2fM parameters (heads included); teacher %s: %d layers x %d",
                sum(p.numel() for p in student.parameters()) / 1e6, teacher.arch,
                teacher.num_layers, teacher.dim)
    return task


def _wait_until(ready: Callable[[], bool], what: str, poll_s: float = 1.0,
                log_every_s: float = 300.0) -> None:
    """Poll ``ready()`` until it is true, logging that this process waits for ``what``.

    (A long cache build would outlast a collective barrier's timeout; polling the file system
    has none. If rank 0 dies, ``torchrun`` ends this process.)
    """
    start = last = time.monotonic()
    while not ready():
        if time.monotonic() - last >= log_every_s:
            last = time.monotonic()
            logger.info("waiting for %s (%.0f s)", what, last - start)
        time.sleep(poll_s)


def _prepare_teacher_cache(datarc: DataConfig, task: DistillationTask, dataset: DistillDataset,
                           device: torch.device, rank: int) -> TeacherCache:
    """Reuse ``datarc.teacher_cache`` if it holds this teacher's targets for these layers and
    utterances, else build it (rank 0; the other processes wait for it)."""
    folder = datarc.teacher_cache
    dtype = getattr(torch, datarc.teacher_cache_dtype)
    layers = task.target_layers
    info = teacher_info(task.teacher)
    wanted = dict(zip(dataset.ids, dataset.full_lengths))

    def mismatch() -> Optional[str]:
        return cache_mismatch(folder, info, layers, wanted, dtype)

    if rank == 0:
        reason = mismatch()
        if reason is None:
            logger.info("teacher cache %s: reused (it holds layers %s of this teacher for all "
                        "%d utterances)", folder, layers, len(wanted))
        else:
            logger.info("teacher cache %s: building it (%s)", folder, reason)
            cache_dataset(folder, task.teacher, dataset, layers, dtype=dtype,
                          batch_size=datarc.train_batch_size, num_workers=datarc.num_workers,
                          device=device)
    else:
        _wait_until(lambda: mismatch() is None, f"rank 0 to build the teacher cache {folder}")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    cache = TeacherCache(folder)
    described = cache.describe()
    logger.info("teacher cache %s: %d utterances, %.1f MiB (%.2f GiB per hour of audio, "
                "%s x %d layers x %d dims)", folder, described["utterances"],
                described["bytes"] / 2**20, described["bytes_per_audio_hour"] / 2**30,
                described["dtype"], described["layers"], described["dim"])
    return cache


@dataclass
class DistillationRun:
    """Everything a distillation step needs, built once by :func:`build_run`.

    Attributes:
        config: the parsed model config; data: the parsed ``datarc``.
        task: student + teacher + loss; ``student``/``teacher`` are its parts.
        dataset, sampler, loader: the training data (``loader`` yields collated batches).
        cache: the teacher cache when ``datarc.teacher_cache`` is set, else None.
        device: where the task runs.
    """

    config: DistillConfig
    data: DataConfig
    task: DistillationTask
    dataset: DistillDataset
    sampler: BucketBatchSampler
    loader: DataLoader
    cache: Optional[TeacherCache]
    device: torch.device
    dev_loader: Optional[DataLoader] = None

    @property
    def student(self) -> nn.Module:
        return self.task.student

    @property
    def teacher(self) -> nn.Module:
        return self.task.teacher

    def cached_targets(self, ids: List[str], wav_lengths: Tensor) -> Tuple[List[Tensor], Tensor]:
        """Targets of a batch from the teacher cache: (J x [B, T, D] float32 on the device, [B]).

        Raises:
            TeacherCacheError: an utterance is not cached or is fed with other samples than cached.
        """
        for utt_id, samples in zip(ids, wav_lengths.tolist()):
            self.cache.check_utterance(utt_id, samples)
        targets, lengths = self.cache.batch_targets(ids, layers=self.task.target_layers)
        targets = [t.to(self.device, non_blocking=True) for t in targets]
        return targets, lengths.to(self.device, non_blocking=True)

    def step(self, task_module: nn.Module, batch: Mapping[str, Any]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """One collated batch -> (loss [], records {name: detached scalar}).

        Args:
            task_module: ``self.task``, or it wrapped for data parallelism (DDP, DataParallel).
            batch: ``{"wavs" [B, S], "wav_lengths" [B], "ids" [B], ...}`` from ``self.loader``.
        """
        wavs = batch["wavs"].to(self.device, non_blocking=True)
        lengths = batch["wav_lengths"].to(self.device, non_blocking=True)
        if wavs.shape[0] == 0:  # every file of the batch was bad (bad_files: skip)
            zero = sum(p.sum() for p in self.student.parameters()) * 0.0
            return zero, {"frames": zero.detach()}
        targets = None
        if self.cache is not None:
            targets = self.cached_targets(batch["ids"], batch["wav_lengths"])
        loss, records = task_module(wavs, lengths, targets=targets)
        if loss.dim() > 0:  # DataParallel gathers one value per replica
            loss = loss.mean()
            records = {k: v.mean() if k != "frames" else v.sum() for k, v in records.items()}
        return loss, records


def build_run(config: DistillConfig, data: DataConfig, *, device: torch.device, seed: int = 0,
              rank: int = 0, world_size: int = 1, where: str = "model config") -> DistillationRun:
    """Build the task and the data of a run (see the module docstring).

    Args:
        config: the parsed model config (``-g``); data: the parsed ``pretrain_expert.datarc``.
        device: where the student and teacher run.
        seed: seeds the model init (the caller seeds the global generators), data order, crops.
        rank, world_size: data-parallel position; the global batch is split across ranks.
    """
    task = build_task(config, seed=seed, where=where).to(device)
    dataset = DistillDataset(data, min_samples=int(task.student.receptive_field), seed=seed)
    cache = None
    if data.teacher_cache:
        try:
            data.check_cache_crop(max(dataset.full_lengths))
        except ConfigError as err:
            raise ConfigError(f"pretrain_expert.datarc: {err}") from None
        cache = _prepare_teacher_cache(data, task, dataset, device, rank)
    sampler = BucketBatchSampler(
        dataset.lengths, data.train_batch_size, shuffle=data.shuffle, bucketing=data.bucketing,
        drop_last=data.drop_last, seed=seed, num_replicas=world_size, rank=rank,
    )
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = DataLoader(
        dataset, batch_sampler=sampler, num_workers=data.num_workers, collate_fn=collate_batch,
        pin_memory=device.type == "cuda", generator=generator, persistent_workers=False,
    )
    return DistillationRun(config=config, data=data, task=task, dataset=dataset, sampler=sampler,
                           loader=loader, cache=cache, device=device)
