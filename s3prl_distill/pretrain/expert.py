"""S3PRL pretrain expert for layer-wise distillation (``run_pretrain -u distiller``).

S3PRL's ``pretrain/runner.py`` (and our :mod:`s3prl_distill.pretrain.trainer`) drive an
``UpstreamPretrainExpert(datarc, upstream_config, device, multi_gpu)`` through:

* ``forward(data, records, global_step, log_step) -> (loss, records)``
* ``load_model(init_ckpt)``, ``add_state_to_save(all_states)``, ``on_before_zero_grad()``
* ``get_train_dataloader()``, ``log_records(records, logger, prefix, global_step)``
* ``.model``: the parameters the runner optimises (the student, heads included).

Everything is built from typed configs: ``datarc`` -> :class:`~.config.DataConfig`,
``upstream_config`` (model YAML path, or its parsed data from a previous experiment) ->
:class:`~s3prl_distill.distill.config.DistillConfig`. The training step itself is
:class:`~s3prl_distill.distill.task.DistillationTask`; this class only adapts it to S3PRL.

With ``datarc.teacher_cache`` set, the teacher's targets are built into (or reused from) that
folder at construction (rank 0 builds, other ranks wait) and read from it every step instead of
running the teacher (:mod:`s3prl_distill.pretrain.teacher_cache`, ``docs/PRETRAINING.md``).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from typing import Any, Dict, Mapping, MutableMapping, Optional, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from s3prl_distill.checkpoint import student_checkpoint
from s3prl_distill.config import ConfigError, from_dict, load_yaml
from s3prl_distill.distill.config import DistillConfig
from s3prl_distill.distill.losses import build_loss
from s3prl_distill.distill.task import DistillationTask
from s3prl_distill.pretrain.config import DataConfig
from s3prl_distill.pretrain.dataset import (DistillDataset, build_dev_dataset, build_dev_loader,
                                            build_train_loader)
from s3prl_distill.pretrain.teacher_cache import TeacherCache, dev_cache_folder, prepare_teacher_cache

logger = logging.getLogger(__name__)

__all__ = ["UpstreamPretrainExpert"]

def _model_data(upstream_config: Union[str, os.PathLike, Mapping[str, Any]]) -> tuple:
    if isinstance(upstream_config, Mapping):
        return dict(upstream_config), "upstream_config (from the previous experiment)"
    if isinstance(upstream_config, (str, os.PathLike)):
        return load_yaml(upstream_config), os.fspath(upstream_config)
    raise ConfigError(f"upstream_config: expected a model YAML path or its parsed data, got "
                      f"{type(upstream_config).__name__}")


class UpstreamPretrainExpert(nn.Module):
    """Distil a teacher into a student (configs: see the module docstring).

    Args:
        datarc: ``pretrain_expert.datarc`` of the runner config (dict or DataConfig).
        upstream_config: model YAML path (``-g``) or its parsed data.
        device: where the student and teacher run.
        multi_gpu: S3PRL's DataParallel switch (our trainer uses DDP instead).
        seed: seed of the data order and random crops.
        rank, world_size: data-parallel position (our trainer); the global batch
            ``train_batch_size`` is split across ranks.
        crop_samples: random crop in samples (S3PRL's ``task.sequence_length``), overriding
            ``datarc.crop_seconds``; 0: whole utterances; None: ``crop_seconds``.

    Data attributes: ``dataset``, ``sampler`` (resumable), ``dataloader``; ``teacher_cache``;
    ``dev_dataset`` / ``dev_loader`` / ``dev_teacher_cache`` (None without a dev set in
    ``datarc``); ``compute(batch, dev=True)`` evaluates a dev batch.
    """

    def __init__(self, datarc, upstream_config, device: Union[str, torch.device] = "cuda",
                 multi_gpu: bool = False, *, seed: int = 1337, rank: int = 0, world_size: int = 1,
                 config_where: str = "runner config", crop_samples: Optional[int] = None, **kwargs):
        super().__init__()
        from s3prl_distill.models import build_student
        from s3prl_distill.teachers import build_teacher

        self.device = torch.device(device)
        self.multi_gpu = bool(multi_gpu)
        self.datarc: DataConfig = from_dict(DataConfig, datarc, where=f"{config_where}: pretrain_expert.datarc")
        data, where = _model_data(upstream_config)
        self.upstream_config: Dict[str, Any] = data
        self.distill_config = DistillConfig.from_data(data, where=where)
        cfg = self.distill_config

        teacher = build_teacher(cfg.require_teacher())
        student = build_student(cfg.student)
        if teacher.dim != cfg.student.teacher_dim:
            raise ConfigError(
                f"{where}: student.teacher_dim is {cfg.student.teacher_dim} but the teacher's hidden "
                f"states have {teacher.dim} dims"
            )
        if cfg.init.from_teacher:
            self._init_from_teacher(student, teacher, cfg.init)
        loss = build_loss(cfg.loss, student.target_layers, seed=seed)
        self.task = DistillationTask(student, teacher, loss)
        self.model = student
        self.teacher = teacher
        logger.info("student: %.2fM parameters (heads included); teacher %s: %d layers x %d",
                    sum(p.numel() for p in student.parameters()) / 1e6, teacher.arch,
                    teacher.num_layers, teacher.dim)

        where_data = f"{config_where}: pretrain_expert.datarc"
        try:
            self.datarc.check_teacher_rate(int(getattr(teacher, "sample_rate", 16000)))
        except ConfigError as err:
            raise ConfigError(f"{where_data}: {err}") from None
        max_input = getattr(teacher, "max_input_samples", None)
        try:  # crop_samples: S3PRL's task.sequence_length, overrides datarc.crop_seconds
            self.dataset = DistillDataset(self.datarc, min_samples=int(student.receptive_field),
                                          seed=seed, crop_samples=crop_samples,
                                          max_input_samples=max_input)
        except ConfigError as err:
            raise ConfigError(f"{where_data}: {err}") from None
        self.teacher_cache: Optional[TeacherCache] = None
        if self.datarc.teacher_cache:
            try:
                self.datarc.check_cache_crop(max(self.dataset.full_lengths), crop_samples)
            except ConfigError as err:
                raise ConfigError(f"{where_data}: {err}") from None
            self.teacher_cache = self._prepare_teacher_cache(self.datarc.teacher_cache, self.dataset, rank)
        self.dataloader = build_train_loader(self.dataset, self.datarc, seed=seed, rank=rank,
                                             world_size=world_size,
                                             pin_memory=self.device.type == "cuda")
        self.sampler = self.dataloader.batch_sampler
        # validation (issue 12): the dev set of datarc, None when it names none
        self.dev_dataset = build_dev_dataset(self.datarc, min_samples=int(student.receptive_field),
                                             max_input_samples=max_input)
        self.dev_loader: Optional[DataLoader] = build_dev_loader(
            self.datarc, rank=rank, world_size=world_size, dataset=self.dev_dataset,
            pin_memory=self.device.type == "cuda")
        self.dev_teacher_cache: Optional[TeacherCache] = None
        if self.dev_dataset is not None and self.datarc.teacher_cache:
            self.dev_teacher_cache = self._prepare_teacher_cache(
                dev_cache_folder(self.datarc.teacher_cache), self.dev_dataset, rank)
        self._forward_task: nn.Module = self.task
        if self.multi_gpu and torch.cuda.device_count() > 1:
            self._forward_task = nn.DataParallel(self.task)
            logger.info("multi_gpu: DataParallel over %d GPUs", torch.cuda.device_count())

    def _prepare_teacher_cache(self, folder: str, dataset: DistillDataset, rank: int) -> TeacherCache:
        """Reuse ``folder`` if it holds this teacher's targets for these layers and the utterances
        of ``dataset``, else build it (rank 0; the other processes wait for it). Returns the cache."""
        return prepare_teacher_cache(folder, self.teacher, dataset, self.task.target_layers,
                                     dtype=getattr(torch, self.datarc.teacher_cache_dtype), rank=rank,
                                     device=self.device, batch_size=self.datarc.train_batch_size,
                                     num_workers=self.datarc.num_workers)

    def cached_targets(self, ids, wav_lengths: Tensor, cache: Optional[TeacherCache] = None):
        """Targets of a batch from the teacher cache (default: the training one): (J x [B, T, D]
        float32 on the device, [B]).

        Raises:
            TeacherCacheError: an utterance is not cached or is fed with other samples than cached.
        """
        cache = cache if cache is not None else self.teacher_cache
        for utt_id, samples in zip(ids, wav_lengths.tolist()):
            cache.check_utterance(utt_id, samples)
        targets, lengths = cache.batch_targets(ids, layers=self.task.target_layers)
        targets = [t.to(self.device, non_blocking=True) for t in targets]
        return targets, lengths.to(self.device, non_blocking=True)

    @staticmethod
    def _init_from_teacher(student, teacher, init_cfg) -> None:
        from s3prl_distill.distill.init import init_student_from_teacher

        init_student_from_teacher(student, teacher, init_cfg)

    # -- S3PRL interface ----------------------------------------------------------------------
    def get_train_dataloader(self) -> DataLoader:
        return self.dataloader

    def load_model(self, init_ckpt: Mapping[str, Any]) -> None:
        """Load the student weights of a checkpoint (our format: ``state_dict``)."""
        if "state_dict" not in init_ckpt:
            raise KeyError("checkpoint has no 'state_dict' (expected an s3prl_distill pretraining "
                           f"checkpoint; keys: {sorted(init_ckpt)[:10]})")
        self.model.load_state_dict(init_ckpt["state_dict"], strict=True)

    def add_state_to_save(self, all_states: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """Add the student checkpoint keys (and S3PRL's ``Upstream_Config``) to ``all_states``."""
        step = all_states.get("Step", all_states.get("step", 0))
        all_states.update(student_checkpoint(self.model, self.teacher.describe(), {"step": int(step)}))
        all_states["Upstream_Config"] = self.upstream_config
        all_states["model_config"] = self.upstream_config
        return all_states

    def on_before_zero_grad(self) -> None:
        pass

    def forward(self, data: Mapping[str, Any], records: Optional[MutableMapping[str, list]] = None,
                global_step: int = 0, log_step: int = 1000, **kwargs):
        """One step: data = collated batch (``wavs`` [B, S], ``wav_lengths`` [B], ``ids``) -> (loss, records).

        ``records[name]`` gets each loss term of this batch appended (floats).
        """
        if records is None:
            records = defaultdict(list)
        loss, terms = self.compute(data)
        for name, value in terms.items():
            records[name].append(float(value))
        return loss, records

    def compute(self, data: Mapping[str, Any], dev: bool = False):
        """(loss [], terms {name: detached scalar}) for one collated batch (``dev``: a batch of
        ``dev_loader``, whose targets come from the dev teacher cache when there is one)."""
        wavs = data["wavs"].to(self.device, non_blocking=True)
        lengths = data["wav_lengths"].to(self.device, non_blocking=True)
        if wavs.shape[0] == 0:  # every file of the batch was bad (bad_files: skip)
            zero = sum(p.sum() for p in self.model.parameters()) * 0.0
            return zero, {}
        cache = self.dev_teacher_cache if dev else self.teacher_cache
        if cache is not None:
            targets = self.cached_targets(data["ids"], data["wav_lengths"], cache)
            loss, terms = self._forward_task(wavs, lengths, targets=targets)
        else:
            loss, terms = self._forward_task(wavs, lengths)
        if loss.dim() > 0:  # DataParallel gathers one loss per replica
            loss = loss.mean()
            terms = {k: v.mean() for k, v in terms.items()}
        return loss, terms

    def log_records(self, records: Mapping[str, list], logger, prefix: str, global_step: int,
                    **kwargs) -> None:
        """Write the mean of every recorded term to TensorBoard as ``{prefix}{name}``."""
        for name, values in records.items():
            if values:
                logger.add_scalar(f"{prefix}{name}", sum(values) / len(values), global_step=global_step)
