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
from typing import Any, Callable, Dict, Mapping, MutableMapping, Optional, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from s3prl_distill.checkpoint import student_checkpoint
from s3prl_distill.config import ConfigError, from_dict, load_yaml
from s3prl_distill.distill.config import DistillConfig
from s3prl_distill.distill.losses import build_loss
from s3prl_distill.distill.task import DistillationTask
from s3prl_distill.pretrain.config import DataConfig
from s3prl_distill.pretrain.dataset import DistillDataset, collate_batch
from s3prl_distill.pretrain.samplers import BucketBatchSampler
from s3prl_distill.pretrain.teacher_cache import TeacherCache, cache_dataset, cache_mismatch, teacher_info

logger = logging.getLogger(__name__)

__all__ = ["UpstreamPretrainExpert"]

def _wait_until(ready: Callable[[], bool], what: str, poll_s: float = 1.0,
                log_every_s: float = 300.0) -> None:
    """Poll ``ready()`` until it is true, logging that this process waits for ``what``.

    (A long cache build would outlast a collective barrier's timeout; polling the file system has
    none. If rank 0 dies, ``torchrun`` ends this process.)
    """
    import time

    start = last = time.monotonic()
    while not ready():
        if time.monotonic() - last >= log_every_s:
            last = time.monotonic()
            logger.info("waiting for %s (%.0f s)", what, last - start)
        time.sleep(poll_s)


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
    """

    def __init__(self, datarc, upstream_config, device: Union[str, torch.device] = "cuda",
                 multi_gpu: bool = False, *, seed: int = 1337, rank: int = 0, world_size: int = 1,
                 config_where: str = "runner config", **kwargs):
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

        self.dataset = DistillDataset(self.datarc, min_samples=int(student.receptive_field), seed=seed)
        self.teacher_cache: Optional[TeacherCache] = None
        if self.datarc.teacher_cache:
            try:
                self.datarc.check_cache_crop(max(self.dataset.full_lengths))
            except ConfigError as err:
                raise ConfigError(f"{config_where}: pretrain_expert.datarc: {err}") from None
            self.teacher_cache = self._prepare_teacher_cache(rank)
        self.sampler = BucketBatchSampler(
            self.dataset.lengths, self.datarc.train_batch_size, shuffle=self.datarc.shuffle,
            bucketing=self.datarc.bucketing, drop_last=self.datarc.drop_last, seed=seed,
            num_replicas=world_size, rank=rank,
        )
        self.loader_generator = torch.Generator()
        self.loader_generator.manual_seed(seed)
        self.dataloader = DataLoader(
            self.dataset, batch_sampler=self.sampler, num_workers=self.datarc.num_workers,
            collate_fn=collate_batch, pin_memory=self.device.type == "cuda",
            generator=self.loader_generator, persistent_workers=False,
        )
        self._forward_task: nn.Module = self.task
        if self.multi_gpu and torch.cuda.device_count() > 1:
            self._forward_task = nn.DataParallel(self.task)
            logger.info("multi_gpu: DataParallel over %d GPUs", torch.cuda.device_count())

    def _prepare_teacher_cache(self, rank: int) -> TeacherCache:
        """Reuse ``datarc.teacher_cache`` if it holds this teacher's targets for these layers and
        utterances, else build it (rank 0; the other processes wait for it). Returns the cache."""
        folder = self.datarc.teacher_cache
        dtype = getattr(torch, self.datarc.teacher_cache_dtype)
        layers = self.task.target_layers
        info = teacher_info(self.teacher)
        wanted = dict(zip(self.dataset.ids, self.dataset.full_lengths))

        def mismatch() -> Optional[str]:
            return cache_mismatch(folder, info, layers, wanted, dtype)

        if rank == 0:
            reason = mismatch()
            if reason is None:
                logger.info("teacher cache %s: reused (it holds layers %s of this teacher for all "
                            "%d utterances)", folder, layers, len(wanted))
            else:
                logger.info("teacher cache %s: building it (%s)", folder, reason)
                self.teacher.to(self.device)
                cache_dataset(folder, self.teacher, self.dataset, layers, dtype=dtype,
                              batch_size=self.datarc.train_batch_size,
                              num_workers=self.datarc.num_workers, device=self.device)
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

    def cached_targets(self, ids, wav_lengths: Tensor):
        """Targets of a batch from the teacher cache: (J x [B, T, D] float32 on the device, [B]).

        Raises:
            TeacherCacheError: an utterance is not cached or is fed with other samples than cached.
        """
        for utt_id, samples in zip(ids, wav_lengths.tolist()):
            self.teacher_cache.check_utterance(utt_id, samples)
        targets, lengths = self.teacher_cache.batch_targets(ids, layers=self.task.target_layers)
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

    def compute(self, data: Mapping[str, Any]):
        """(loss [], terms {name: detached scalar}) for one collated batch."""
        wavs = data["wavs"].to(self.device, non_blocking=True)
        lengths = data["wav_lengths"].to(self.device, non_blocking=True)
        if wavs.shape[0] == 0:  # every file of the batch was bad (bad_files: skip)
            zero = sum(p.sum() for p in self.model.parameters()) * 0.0
            return zero, {}
        if self.teacher_cache is not None:
            targets = self.cached_targets(data["ids"], data["wav_lengths"])
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
