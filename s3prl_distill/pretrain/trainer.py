"""Our pretraining runner: S3PRL's expert interface, plus resume, DDP, autocast and safe checkpoints.

It drives an :class:`~s3prl_distill.pretrain.expert.UpstreamPretrainExpert` like S3PRL's
``pretrain/runner.py`` does (``forward`` -> loss, ``.model`` optimised, ``log_records``), and adds:

* **Resume** - every checkpoint holds the student, optimizer, scheduler, grad scaler, step, the RNG
  states of every process and the data position (epoch, batches consumed). Rerunning the same
  command after a kill (SIGKILL included) continues from the last complete checkpoint and ends
  with exactly the parameters of an uninterrupted run. Checkpoints are written atomically
  (:func:`s3prl_distill.io.atomic_save`); the last ``max_keep`` are kept.
* **Format** - each checkpoint is a student checkpoint (:mod:`s3prl_distill.checkpoint`) plus
  training state, so ``load_student(states-N.ckpt)`` gives the upstream (heads dropped).
* **DistributedDataParallel** under ``torchrun``: the global batch is split across ranks by the
  bucket sampler; each rank's loss is weighted by its share of valid frames so the averaged
  gradient equals the single-process gradient of the same global batch; only rank 0 writes.
* bf16 / fp16 autocast (fp16 with a grad scaler on CUDA; bf16 instead on CPU), gradient
  accumulation and clipping, TensorBoard scalars of every loss term per layer, a progress bar
  with ETA and audio seconds per second.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import math
import os
import random
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from s3prl_distill.checkpoint import student_checkpoint
from s3prl_distill.config import ConfigError
from s3prl_distill.io import atomic_save, safe_load
from s3prl_distill.pretrain.config import OptimizerConfig, PretrainConfig, SchedulerConfig

logger = logging.getLogger(__name__)

__all__ = [
    "DistContext",
    "Trainer",
    "init_distributed",
    "list_checkpoints",
    "latest_checkpoint",
    "build_optimizer",
    "param_groups",
    "build_scheduler",
    "capture_rng",
    "restore_rng",
]

CKPT_PATTERN = re.compile(r"^states-(\d+)\.ckpt$")


# ------------------------------------------------------------------------------------------------
# distributed context
# ------------------------------------------------------------------------------------------------
@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str) -> DistContext:
    """Join the process group that ``torchrun`` describes (RANK / WORLD_SIZE / LOCAL_RANK).

    gloo on CPU, nccl on CUDA. A single process (no WORLD_SIZE or 1) needs no process group.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        here = True
    return DistContext(rank, world, local_rank, here)


# ------------------------------------------------------------------------------------------------
# checkpoints on disk
# ------------------------------------------------------------------------------------------------
def list_checkpoints(expdir: str) -> List[Tuple[int, str]]:
    """``[(step, path)]`` of ``states-<step>.ckpt`` files in ``expdir``, oldest first."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(expdir), "states-*.ckpt")):
        match = CKPT_PATTERN.match(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(expdir: str) -> Optional[str]:
    """Path of the newest checkpoint in ``expdir`` that loads, or ``None``."""
    for step, path in reversed(list_checkpoints(expdir)):
        try:
            safe_load(path)
        except ValueError as err:
            logger.warning("ignoring unreadable checkpoint %s: %s", path, err)
            continue
        return path
    return None


# ------------------------------------------------------------------------------------------------
# optimizer / schedule
# ------------------------------------------------------------------------------------------------
def param_groups(cfg: OptimizerConfig, named_params) -> List[Dict[str, Any]]:
    """Optimizer groups: everything at ``cfg.lr``; with ``cfg.head_lr`` the prediction heads
    (parameters named ``heads.*``) in a second group at that rate.

    Args:
        named_params: ``(name, parameter)`` pairs of the trainable student parameters.
    """
    named = list(named_params)
    if cfg.head_lr is None:
        return [{"params": [p for _, p in named]}]
    heads = [p for n, p in named if n.startswith("heads.")]
    body = [p for n, p in named if not n.startswith("heads.")]
    if not heads:
        raise ConfigError("optimizer.head_lr is set but the student has no prediction heads")
    return [{"params": body}, {"params": heads, "lr": cfg.head_lr}]


def build_optimizer(cfg: OptimizerConfig, params) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD from the ``optimizer:`` section (``params``: tensors or groups)."""
    name = cfg.torch_class
    if name == "SGD":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    cls = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[name]
    return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


class _LinearWarmupDecay:
    """lr factor: linear 0 -> 1 over ``warmup`` updates, then linear 1 -> 0 at ``total``."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = int(warmup), int(total)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return float(step) / float(max(1, self.warmup))
        return max(0.0, float(self.total - step) / float(max(1, self.total - self.warmup)))


def build_scheduler(cfg: Optional[SchedulerConfig], optimizer, total_steps: int):
    """LambdaLR for ``linear_schedule_with_warmup`` (None: constant lr)."""
    if cfg is None or cfg.name == "constant":
        return None
    factor = _LinearWarmupDecay(cfg.warmup_steps(total_steps), total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _scheduler_state(scheduler) -> Optional[Dict[str, Any]]:
    if scheduler is None:
        return None
    state = scheduler.state_dict()
    state["lr_lambdas"] = [None] * len(state.get("lr_lambdas", []))  # rebuilt from the config
    return state


# ------------------------------------------------------------------------------------------------
# RNG states as plain data
# ------------------------------------------------------------------------------------------------
def capture_rng() -> Dict[str, Any]:
    """Python, NumPy, torch (CPU and CUDA) RNG states as tensors and plain data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------
# the trainer
# ------------------------------------------------------------------------------------------------
class Trainer:
    """Train one expert.

    Args:
        expert_cls: the ``UpstreamPretrainExpert`` class (ours: accepts seed / rank / world_size).
        config_data: the runner YAML data (``runner``, ``optimizer``, ``scheduler``, ``pretrain_expert``).
        model_config: model YAML path or its data (``-g``).
        expdir: experiment folder (checkpoints, TensorBoard logs).
        device: ``cpu``, ``cuda`` or ``cuda:N`` (with DDP on CUDA: ``cuda:LOCAL_RANK``).
        seed: seeds the model init, data order, crops and dropout.
        resume: a loaded checkpoint dict to continue from (None: start fresh).
        ctx: distributed context (single process by default).
        config_where: name of the runner config for error messages.
    """

    def __init__(self, expert_cls, config_data: Mapping[str, Any],
                 model_config: Union[str, Mapping[str, Any]], expdir: str, *, device: str = "cpu",
                 seed: int = 1337, resume: Optional[Mapping[str, Any]] = None,
                 ctx: Optional[DistContext] = None, config_where: str = "runner config",
                 args: Optional[Mapping[str, Any]] = None, tensorboard: bool = True):
        self.ctx = ctx or DistContext()
        self.expdir = expdir
        self.seed = int(seed)
        self.args = dict(args or {})
        self.config_data = dict(config_data)
        self.cfg: PretrainConfig = PretrainConfig.from_data(config_data, where=config_where)
        if device.startswith("cuda") and self.ctx.distributed and ":" not in device:
            device = f"cuda:{self.ctx.local_rank}"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"--device {device}: CUDA is not available here; use --device cpu")
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)

        seed_everything(self.seed)
        self.expert = expert_cls(self.config_data["pretrain_expert"]["datarc"], model_config,
                                 self.device, False, seed=self.seed, rank=self.ctx.rank,
                                 world_size=self.ctx.world_size, config_where=config_where)
        self.expert.to(self.device)
        self.model_data = dict(self.expert.upstream_config)
        self.student: nn.Module = self.expert.model
        self.params = [p for p in self.student.parameters() if p.requires_grad]

        run = self.cfg.runner
        self.accum = run.gradient_accumulate_steps
        batches = len(self.expert.sampler)
        if batches == 0:
            raise ValueError(f"{config_where}: the data gives no batch (too few utterances for "
                             f"train_batch_size={self.expert.datarc.train_batch_size} over "
                             f"{self.ctx.world_size} process(es))")
        if run.n_epochs > 0:
            if batches < self.accum:
                raise ValueError(f"{config_where}: an epoch has {batches} batches, fewer than "
                                 f"gradient_accumulate_steps={self.accum}")
            # micro-batches carry over epoch ends, so n epochs of data = n * batches / accum updates
            self.total_steps = (run.n_epochs * batches) // self.accum
            logger.info("training %d epochs = %d updates (%d batches per epoch)", run.n_epochs,
                        self.total_steps, batches)
        else:
            self.total_steps = run.total_steps
            logger.info("training %d updates (%.2f epochs of %d batches)", self.total_steps,
                        self.total_steps * self.accum / max(batches, 1), batches)

        self.optimizer = build_optimizer(self.cfg.optimizer, param_groups(
            self.cfg.optimizer, [(n, p) for n, p in self.student.named_parameters() if p.requires_grad]))
        self.scheduler = build_scheduler(self.cfg.scheduler, self.optimizer, self.total_steps)
        self.precision = run.amp_precision
        if self.precision == "fp16" and self.device.type != "cuda":
            logger.warning("fp16 autocast needs CUDA here; using bf16 on %s instead", self.device)
            self.precision = "bf16"
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None

        self.task_module: nn.Module = self.expert.task
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.task_module = DDP(
                self.expert.task,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
                find_unused_parameters=run.find_unused_parameters,
            )
            self.expert._forward_task = self.task_module

        self.step = 0
        self.epoch = 0
        self.batches_done = 0
        if resume is not None:
            self._load_state(resume)
        else:
            # each rank draws its own dropout masks (rank 0 = the single-process stream)
            seed_everything(self.seed + self.ctx.rank)
        self.writer = None
        if self.ctx.is_main and tensorboard:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(expdir)

    # -- state ------------------------------------------------------------------------------------
    def _load_state(self, ckpt: Mapping[str, Any]) -> None:
        self.expert.load_model(ckpt)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler"):
            state = dict(ckpt["scheduler"])
            state["lr_lambdas"] = [None] * len(self.scheduler.lr_lambdas)  # the factor comes from the config
            self.scheduler.load_state_dict(state)
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        data_state = ckpt["data_state"]
        self.epoch = int(data_state["epoch"])
        self.batches_done = int(data_state["batches_done"])
        if int(data_state.get("world_size", 1)) != self.ctx.world_size:
            logger.warning("resuming a run of %s process(es) with %d: the data order from here on "
                           "differs from the original run", data_state.get("world_size"),
                           self.ctx.world_size)
        rng = ckpt["rng"]
        restore_rng(rng[self.ctx.rank] if self.ctx.rank < len(rng) else rng[0])
        logger.info("resumed at update %d (epoch %d, batch %d)", self.step, self.epoch, self.batches_done)

    def _gather_rng(self) -> List[Dict[str, Any]]:
        state = capture_rng()
        if not self.ctx.distributed:
            return [state]
        gathered: List[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(gathered, state)
        return gathered

    def save(self) -> Optional[str]:
        """Write ``states-<step>.ckpt`` (rank 0) and prune to ``max_keep``; every rank calls it."""
        rng = self._gather_rng()
        if not self.ctx.is_main:
            return None
        teacher = self.expert.teacher
        training = {
            "step": self.step,
            "total_steps": self.total_steps,
            "loss": self.expert.distill_config.loss.type,
            "world_size": self.ctx.world_size,
            "global_batch_size": self.expert.datarc.train_batch_size * self.accum,
            "precision": self.precision,
        }
        extra = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": _scheduler_state(self.scheduler),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step,
            "rng": rng,
            "data_state": {"epoch": self.epoch, "batches_done": self.batches_done,
                           "seed": self.seed, "world_size": self.ctx.world_size,
                           "batches_per_epoch": len(self.expert.sampler)},
            "runner_config": self.config_data,
            "model_config": self.model_data,
            "args": {k: v for k, v in self.args.items() if isinstance(v, (str, int, float, bool, type(None)))},
        }
        ckpt = student_checkpoint(self.student, teacher.describe(), training, extra)
        path = os.path.join(self.expdir, f"states-{self.step}.ckpt")
        atomic_save(ckpt, path)
        logger.info("saved checkpoint %s", path)
        for step, old in list_checkpoints(self.expdir)[: -self.cfg.runner.max_keep]:
            os.remove(old)
        return path

    # -- the loop -----------------------------------------------------------------------------------
    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _all_min(self, value: int) -> int:
        if not self.ctx.distributed:
            return value
        t = torch.tensor([value], dtype=torch.long, device=self._comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    @property
    def _comm_device(self) -> torch.device:
        backend = dist.get_backend() if dist.is_initialized() else "gloo"
        return self.device if backend == "nccl" else torch.device("cpu")

    def _frame_weight(self, loss: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Scale this rank's mean loss so that DDP's gradient average equals the gradient of the
        mean over all ranks' valid frames (ranks may hold different numbers of frames)."""
        if not self.ctx.distributed:
            return loss
        total = frames.detach().to(self._comm_device, torch.float64).reshape(1).clone()
        dist.all_reduce(total)
        share = float(frames) * self.ctx.world_size / max(float(total.item()), 1.0)
        return loss * share

    def train(self) -> str:
        """Run until ``total_steps`` updates; returns the path of the final checkpoint."""
        from tqdm import tqdm

        run = self.cfg.runner
        expert, sampler, loader = self.expert, self.expert.sampler, self.expert.get_train_dataloader()
        self.task_module.train()
        prefix = "distiller/train-"
        sr = expert.datarc.sample_rate
        interactive = sys.stderr.isatty()
        pbar = tqdm(total=self.total_steps, initial=self.step, dynamic_ncols=True, desc="distil",
                    disable=not self.ctx.is_main, unit="update",
                    mininterval=0.5 if interactive else 30.0)  # keep redirected logs small
        records: Dict[str, list] = defaultdict(list)
        losses: List[float] = []
        audio_seconds, interval_start = 0.0, time.monotonic()
        micro = 0
        last_path = None
        grad_norm = float("nan")
        if self.step >= self.total_steps:
            logger.info("already at update %d of %d", self.step, self.total_steps)
            final = latest_checkpoint(self.expdir)
            return final or self.save()
        while self.step < self.total_steps:
            sampler.start(self.epoch, self.batches_done)
            set_epoch = getattr(expert.task.loss, "set_epoch", None)
            if callable(set_epoch):  # e.g. FitHuBERT's random hints of this epoch
                set_epoch(self.epoch)
            finished = False
            for batch in loader:
                self.batches_done += 1
                if batch["skipped"]:
                    logger.warning("update %d: %d bad file(s) dropped from the batch", self.step + 1,
                                   batch["skipped"])
                if self._all_min(int(batch["wavs"].shape[0])) == 0:
                    logger.warning("update %d: a batch has no usable audio on some process; skipped",
                                   self.step + 1)
                    continue
                micro += 1
                sync = micro % self.accum == 0
                no_sync = (self.task_module.no_sync() if self.ctx.distributed and not sync
                           else contextlib.nullcontext())
                with no_sync:
                    with self._autocast():
                        loss, terms = expert.compute(batch)
                    loss = loss.float()
                    scaled = self._frame_weight(loss, terms.get("frames", torch.tensor(1.0))) / self.accum
                    if self.scaler is not None:
                        self.scaler.scale(scaled).backward()
                    else:
                        scaled.backward()
                losses.append(float(loss.detach()))
                for name, value in terms.items():
                    records[name].append(float(value))
                audio_seconds += float(batch["wav_lengths"].sum()) / sr * self.ctx.world_size
                if not sync:
                    continue

                if self.scaler is not None:
                    self.scaler.unscale_(self.optimizer)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, run.gradient_clipping))
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                elif math.isfinite(grad_norm):
                    self.optimizer.step()
                else:
                    logger.warning("update %d: gradient norm is %s; update skipped", self.step + 1, grad_norm)
                expert.on_before_zero_grad()
                self.optimizer.zero_grad(set_to_none=True)
                if self.scheduler is not None:
                    self.scheduler.step()
                self.step += 1
                pbar.update(1)

                if self.step % run.log_step == 0 or self.step == self.total_steps:
                    elapsed = max(time.monotonic() - interval_start, 1e-9)
                    speed = audio_seconds / elapsed
                    mean_loss = sum(losses) / max(len(losses), 1)
                    lr = self.optimizer.param_groups[0]["lr"]
                    pbar.set_postfix(loss=f"{mean_loss:.4f}", audio_s_per_s=f"{speed:.1f}")
                    if self.writer is not None:
                        self.writer.add_scalar(f"{prefix}loss", mean_loss, self.step)
                        self.writer.add_scalar(f"{prefix}lr", lr, self.step)
                        self.writer.add_scalar(f"{prefix}gradient-norm", grad_norm, self.step)
                        self.writer.add_scalar(f"{prefix}audio-seconds-per-second", speed, self.step)
                        expert.log_records(records, self.writer, prefix, self.step)
                    logger.debug("update %d: loss %.4f lr %.3g grad-norm %.3g %.1f audio s/s",
                                 self.step, mean_loss, lr, grad_norm, speed)
                    records, losses = defaultdict(list), []
                    audio_seconds, interval_start = 0.0, time.monotonic()

                if self.step % run.save_step == 0 or self.step == self.total_steps:
                    last_path = self.save() or last_path
                if self.step >= self.total_steps:
                    finished = True
                    break
            if not finished:
                self.epoch += 1
                self.batches_done = 0
        pbar.close()
        if self.writer is not None:
            self.writer.flush()
        if self.ctx.distributed:
            self.check_replicas_equal()
            dist.barrier()
        return last_path or os.path.join(self.expdir, f"states-{self.step}.ckpt")

    def check_replicas_equal(self) -> None:
        """Raise if any process's student parameters differ from rank 0's (DDP desync)."""
        flat = torch.cat([p.detach().reshape(-1).float() for p in self.student.parameters()])
        flat = flat.to(self._comm_device)
        ref = flat.clone()
        dist.broadcast(ref, src=0)
        diff = (flat - ref).abs().max().reshape(1)
        dist.all_reduce(diff, op=dist.ReduceOp.MAX)
        if float(diff) > 0:
            raise RuntimeError(f"student parameters differ across processes (max abs difference "
                               f"{float(diff):.3g}): data-parallel replicas went out of sync")
        logger.info("student parameters identical across %d processes", self.ctx.world_size)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
