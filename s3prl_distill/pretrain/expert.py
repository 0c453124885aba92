"""S3PRL pretrain expert for layer-wise distillation: S3PRL's adapter around our one distillation run.

S3PRL's own ``pretrain/runner.py`` (``run_pretrain.py -u distiller`` in a git checkout of S3PRL)
constructs ``UpstreamPretrainExpert(datarc, upstream_config, device, multi_gpu)`` and drives it
through:

* ``forward(data, records, global_step, log_step) -> (loss, records)``
* ``load_model(init_ckpt)``, ``add_state_to_save(all_states)``, ``on_before_zero_grad()``
* ``get_train_dataloader()``, ``log_records(records, logger, prefix, global_step)``
* ``.model``: the parameters the runner optimises (the student, heads included).

Everything here is :func:`~s3prl_distill.pretrain.build.build_run` and
:meth:`~s3prl_distill.pretrain.build.DistillationRun.step` - the same construction and the same
batch-to-loss path as our own trainer (:mod:`s3prl_distill.pretrain.trainer`); this class only
speaks S3PRL's interface. Our trainer does not use it.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from typing import Any, Dict, Mapping, MutableMapping, Optional, Tuple, Union

import torch
from torch import nn

from s3prl_distill.checkpoint import CheckpointError, student_checkpoint
from s3prl_distill.config import ConfigError, from_dict, load_yaml
from s3prl_distill.distill.config import DistillConfig
from s3prl_distill.pretrain.build import build_run
from s3prl_distill.pretrain.config import DataConfig

logger = logging.getLogger(__name__)

__all__ = ["UpstreamPretrainExpert", "read_model_config", "EpochLoader"]


class _Batches:
    """What S3PRL's runner reads as ``len(dataloader.dataset)``: the batches of one epoch (its own
    distiller dataset holds one bucket per item)."""

    def __init__(self, count: int):
        self.count = int(count)

    def __len__(self) -> int:
        return self.count


class EpochLoader:
    """The run's loader for S3PRL's runner, which iterates it once per epoch without telling it
    the epoch: each new pass starts the next epoch (new batch order, crops and epoch-seeded loss
    randomness, as S3PRL's own distiller reshuffles every epoch).

    A resumed run continues the data where the checkpoint left it (:meth:`resume_at`), which
    S3PRL's own distiller does not (its runner restarts its loader).

    Attributes:
        dataset: sized as the batches of an epoch (S3PRL's ``len(dataloader.dataset)``).
        epoch: the epoch the next pass yields.
    """

    def __init__(self, run):
        self.run = run
        self.epoch = 0
        self._skip = 0
        self.dataset = _Batches(len(run.sampler))

    def __len__(self) -> int:
        return len(self.run.sampler)

    def resume_at(self, batches_done: int) -> None:
        """Continue after ``batches_done`` batches of the run (all epochs together)."""
        self.epoch, self._skip = divmod(int(batches_done), len(self.run.sampler))

    def __iter__(self):
        self.run.sampler.start(self.epoch, self._skip)
        self.run.task.set_epoch(self.epoch)
        self.epoch += 1
        self._skip = 0
        return iter(self.run.loader)


def read_model_config(upstream_config: Union[str, os.PathLike, Mapping[str, Any]]
                      ) -> Tuple[Dict[str, Any], DistillConfig, str]:
    """The model config (``-g`` path, or its data from a previous experiment), parsed once.

    Returns:
        (plain data, DistillConfig, where) - ``where`` names it in error messages.
    """
    if isinstance(upstream_config, Mapping):
        data, where = dict(upstream_config), "upstream_config (from the previous experiment)"
    elif isinstance(upstream_config, (str, os.PathLike)):
        data, where = load_yaml(upstream_config), os.fspath(upstream_config)
    else:
        raise ConfigError(f"upstream_config: expected a model YAML path or its parsed data, got "
                          f"{type(upstream_config).__name__}")
    return data, DistillConfig.from_data(data, where=where), where


class UpstreamPretrainExpert(nn.Module):
    """Distil a teacher into a student under S3PRL's pretraining runner.

    Args:
        datarc: ``pretrain_expert.datarc`` of the runner config (dict or DataConfig).
        upstream_config: model YAML path (``-g``) or its parsed data.
        device: where the student and teacher run.
        multi_gpu: S3PRL's DataParallel switch.
        seed: seed of the data order and random crops (S3PRL's runner seeds the generators).
    """

    def __init__(self, datarc, upstream_config, device: Union[str, torch.device] = "cuda",
                 multi_gpu: bool = False, *, seed: int = 1337, **kwargs):
        super().__init__()
        self.device = torch.device(device)
        self.multi_gpu = bool(multi_gpu)
        data = datarc if isinstance(datarc, DataConfig) else from_dict(
            DataConfig, datarc, where="runner config: pretrain_expert.datarc")
        self.upstream_config, config, where = read_model_config(upstream_config)
        self.run = build_run(config, data, device=self.device, seed=seed, where=where)
        self.model = self.run.student
        self._loader = EpochLoader(self.run)
        self._task_module: nn.Module = self.run.task
        if self.multi_gpu and torch.cuda.device_count() > 1:
            self._task_module = nn.DataParallel(self.run.task)
            logger.info("multi_gpu: DataParallel over %d GPUs", torch.cuda.device_count())

    @property
    def task(self):
        return self.run.task

    @property
    def teacher(self):
        return self.run.teacher

    # -- S3PRL interface ----------------------------------------------------------------------
    def get_train_dataloader(self) -> EpochLoader:
        return self._loader

    def load_model(self, init_ckpt: Mapping[str, Any]) -> None:
        """Load the student of a checkpoint S3PRL's runner resumes from (``state_dict`` key) and
        continue the data after the batches it had consumed."""
        if "state_dict" not in init_ckpt:
            raise CheckpointError("the checkpoint has no 'state_dict' (expected one written by "
                                  f"this expert; keys: {sorted(init_ckpt)[:10]})")
        self.model.load_state_dict(init_ckpt["state_dict"], strict=True)
        if "Step" in init_ckpt:  # S3PRL's: updates done - 1
            runner = (init_ckpt.get("Config") or {}).get("runner") or {}
            accum = int(runner.get("gradient_accumulate_steps", 1) or 1)
            self._loader.resume_at((int(init_ckpt["Step"]) + 1) * accum)

    def add_state_to_save(self, all_states: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """Add the student checkpoint keys (and S3PRL's ``Upstream_Config``) to ``all_states``."""
        # S3PRL's runner saves ``Step`` before it counts the update just made
        step = int(all_states["Step"]) + 1 if "Step" in all_states else int(all_states.get("step", 0))
        all_states.update(student_checkpoint(self.model, self.teacher.describe(), {"step": step}))
        all_states["Upstream_Config"] = self.upstream_config
        all_states["model_config"] = self.upstream_config
        return all_states

    def on_before_zero_grad(self) -> None:
        pass

    def forward(self, data: Mapping[str, Any], records: Optional[MutableMapping[str, list]] = None,
                global_step: int = 0, log_step: int = 1000, **kwargs):
        """One collated batch (``wavs`` [B, S], ``wav_lengths`` [B], ``ids``) -> (loss, records).

        ``records[name]`` gets each loss term of this batch appended (floats).
        """
        if records is None:
            records = defaultdict(list)
        loss, terms = self.run.step(self._task_module, data)
        for name, value in terms.items():
            records[name].append(float(value))
        return loss, records

    def log_records(self, records: Mapping[str, list], logger, prefix: str, global_step: int,
                    **kwargs) -> None:
        """Write the mean of every recorded term to TensorBoard as ``{prefix}{name}``."""
        for name, values in records.items():
            if values:
                logger.add_scalar(f"{prefix}{name}", sum(values) / len(values), global_step=global_step)
