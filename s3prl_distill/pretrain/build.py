"""Build a distillation run from its parsed configs, and run one batch through it.

:func:`build_run` is the one construction path of everything a distillation step needs; our
trainer and the S3PRL pretrain expert (for S3PRL's own runner) both call it::

    DistillConfig (model YAML, parsed once)  -> teacher (frozen), student (+ teacher init), loss
                                             -> DistillationTask(student, teacher, loss)
    DataConfig (datarc, parsed once)         -> DistillDataset -> batch sampler -> DataLoader
                                             (+ the dev set's, for validation)
                                             -> teacher cache (built once, or reused)

:meth:`DistillationRun.step` is the one path of a batch from the loader to the loss: move it to
the device, take the targets from the teacher cache when there is one, call the task (or the
task wrapped for data parallelism).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from s3prl_distill.config import ConfigError
from s3prl_distill.distill.config import DistillConfig
from s3prl_distill.distill.task import DistillationTask
from s3prl_distill.pretrain.config import DataConfig
from s3prl_distill.pretrain.dataset import (DistillDataset, build_dev_dataset, build_dev_loader,
                                            build_train_loader)
from s3prl_distill.pretrain.teacher_cache import TeacherCache, dev_cache_folder, prepare_teacher_cache

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


def _teacher_cache(folder: str, data: DataConfig, task: DistillationTask, dataset: DistillDataset,
                   device: torch.device, rank: int) -> TeacherCache:
    """The teacher cache in ``folder`` for ``dataset`` (reused, or built by rank 0 while the other
    processes wait; :func:`~s3prl_distill.pretrain.teacher_cache.prepare_teacher_cache`)."""
    return prepare_teacher_cache(folder, task.teacher, dataset, task.target_layers,
                                 dtype=getattr(torch, data.teacher_cache_dtype), rank=rank,
                                 device=device, batch_size=data.train_batch_size,
                                 num_workers=data.num_workers)


@dataclass
class DistillationRun:
    """Everything a distillation step needs, built once by :func:`build_run`.

    Attributes:
        config: the parsed model config; data: the parsed ``datarc``.
        task: student + teacher + loss; ``student``/``teacher`` are its parts.
        dataset, sampler, loader: the training data (``loader`` yields collated batches;
            ``sampler`` is resumable: ``start(epoch, batches_done)``).
        cache: the teacher cache when ``datarc.teacher_cache`` is set, else None.
        device: where the task runs.
        dev_dataset, dev_loader, dev_cache: the dev set of ``datarc`` for validation (whole
            utterances, fixed order) and its teacher cache; None when ``datarc`` names no dev set.
    """

    config: DistillConfig
    data: DataConfig
    task: DistillationTask
    dataset: DistillDataset
    sampler: Any
    loader: DataLoader
    cache: Optional[TeacherCache]
    device: torch.device
    dev_dataset: Optional[DistillDataset] = None
    dev_loader: Optional[DataLoader] = None
    dev_cache: Optional[TeacherCache] = None

    @property
    def student(self) -> nn.Module:
        return self.task.student

    @property
    def teacher(self) -> nn.Module:
        return self.task.teacher

    def cached_targets(self, cache: TeacherCache, ids: List[str], wav_lengths: Tensor
                       ) -> Tuple[List[Tensor], Tensor]:
        """Targets of a batch from ``cache``: (J x [B, T, D] float32 on the device, [B]).

        Raises:
            TeacherCacheError: an utterance is not cached or is fed with other samples than cached.
        """
        for utt_id, samples in zip(ids, wav_lengths.tolist()):
            cache.check_utterance(utt_id, samples)
        targets, lengths = cache.batch_targets(ids, layers=self.task.target_layers)
        targets = [t.to(self.device, non_blocking=True) for t in targets]
        return targets, lengths.to(self.device, non_blocking=True)

    def step(self, task_module: nn.Module, batch: Mapping[str, Any],
             dev: bool = False) -> Tuple[Tensor, Dict[str, Tensor]]:
        """One collated batch -> (loss [], records {name: detached scalar}).

        Args:
            task_module: ``self.task``, or it wrapped for data parallelism (DDP, DataParallel).
            batch: ``{"wavs" [B, S], "wav_lengths" [B], "ids" [B], ...}`` from ``self.loader``
                (or from ``self.dev_loader`` with ``dev=True``: targets from the dev cache).
        """
        wavs = batch["wavs"].to(self.device, non_blocking=True)
        lengths = batch["wav_lengths"].to(self.device, non_blocking=True)
        if wavs.shape[0] == 0:  # every file of the batch was bad (bad_files: skip)
            zero = sum(p.sum() for p in self.student.parameters()) * 0.0
            return zero, {"frames": zero.detach()}
        targets = None
        cache = self.dev_cache if dev else self.cache
        if cache is not None:
            targets = self.cached_targets(cache, batch["ids"], batch["wav_lengths"])
        loss, records = task_module(wavs, lengths, targets=targets)
        if loss.dim() > 0:  # DataParallel gathers one value per replica
            loss = loss.mean()
            records = {k: v.mean() if k != "frames" else v.sum() for k, v in records.items()}
        return loss, records


def build_run(config: DistillConfig, data: DataConfig, *, device: torch.device, seed: int = 0,
              rank: int = 0, world_size: int = 1, where: str = "model config",
              data_where: str = "pretrain_expert.datarc") -> DistillationRun:
    """Build the task and the data of a run (see the module docstring).

    Args:
        config: the parsed model config (``-g``); data: the parsed ``pretrain_expert.datarc``.
        device: where the student and teacher run.
        seed: seeds the model init (the caller seeds the global generators), data order, crops.
        rank, world_size: data-parallel position; the global batch is split across ranks.
        where, data_where: how errors name the model config and the data section.
    """
    task = build_task(config, seed=seed, where=where).to(device)
    teacher = task.teacher
    min_samples = int(task.student.receptive_field)
    max_input = getattr(teacher, "max_input_samples", None)
    pin = device.type == "cuda"
    try:
        data.check_teacher_rate(int(getattr(teacher, "sample_rate", 16000)))
        # S3PRL's task.sequence_length (model config) overrides datarc.crop_seconds
        dataset = DistillDataset(data, min_samples=min_samples, seed=seed,
                                 crop_samples=config.crop_samples, max_input_samples=max_input)
        if data.teacher_cache:
            data.check_cache_crop(max(dataset.full_lengths), config.crop_samples)
    except ConfigError as err:
        raise ConfigError(f"{data_where}: {err}") from None
    cache = dev_cache = None
    if data.teacher_cache:
        cache = _teacher_cache(data.teacher_cache, data, task, dataset, device, rank)
    try:
        loader = build_train_loader(dataset, data, seed=seed, rank=rank, world_size=world_size,
                                    pin_memory=pin)
    except ValueError as err:  # batches that cannot be split across the processes
        raise ConfigError(f"{data_where}: {err}") from None
    dev_dataset = build_dev_dataset(data, min_samples=min_samples, max_input_samples=max_input)
    dev_loader = build_dev_loader(data, rank=rank, world_size=world_size, dataset=dev_dataset,
                                  pin_memory=pin)
    if dev_dataset is not None and data.teacher_cache:
        dev_cache = _teacher_cache(dev_cache_folder(data.teacher_cache), data, task, dev_dataset,
                                   device, rank)
    return DistillationRun(config=config, data=data, task=task, dataset=dataset,
                           sampler=loader.batch_sampler, loader=loader, cache=cache, device=device,
                           dev_dataset=dev_dataset, dev_loader=dev_loader, dev_cache=dev_cache)
