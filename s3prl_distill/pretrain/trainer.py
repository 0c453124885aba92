"""The training loop of a distillation run.

:class:`Trainer` owns the optimisation of one :class:`~s3prl_distill.pretrain.build.DistillationRun`:
it wraps the run's :class:`~s3prl_distill.distill.task.DistillationTask` in
DistributedDataParallel when several processes train, and for every batch of the run's loader
calls ``run.step(task_module, batch)`` (the one batch-to-loss path, shared with S3PRL's runner)
under autocast, then backward, clipping, the optimizer and schedule
(:mod:`~s3prl_distill.pretrain.optim`), logging, validation
(:mod:`~s3prl_distill.pretrain.validation`) and checkpoints
(:mod:`~s3prl_distill.pretrain.checkpoints`).

* **Resume** - every checkpoint holds the student, optimizer, scheduler, grad scaler, step, the
  RNG states of every process, the data position (epoch, batches consumed) and the validation
  state. Rerunning the same command after a kill (SIGKILL included) continues from the last
  complete checkpoint and ends with exactly the parameters of an uninterrupted run.
* **Format** - each checkpoint is a student checkpoint (:mod:`s3prl_distill.checkpoint`) plus
  training state, so ``load_student(states-N.ckpt)`` gives the upstream (heads dropped).
* **Data parallelism** under ``torchrun``: the global batch is split across ranks by the bucket
  sampler; each rank's loss is weighted by its share of valid frames so the averaged gradient
  equals the single-process gradient of the same global batch; only rank 0 writes.
* bf16 / fp16 autocast of the student (fp16 with a grad scaler on CUDA; bf16 instead on CPU),
  gradient accumulation and clipping (or none), TensorBoard scalars of every loss term per layer,
  a progress bar with ETA, audio seconds per second and the last dev loss.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections import defaultdict
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import Tensor, nn

from s3prl_distill.checkpoint import student_checkpoint
from s3prl_distill.config import ConfigError
from s3prl_distill.io import atomic_save
from s3prl_distill.pretrain.build import DistillationRun
from s3prl_distill.pretrain.checkpoints import (BEST_NAME, list_checkpoints, remove_ranked_student,
                                                write_checkpoint, write_ranked_student)
from s3prl_distill.pretrain.config import PretrainConfig
from s3prl_distill.pretrain.distributed import DistContext
from s3prl_distill.pretrain.optim import (build_optimizer, build_scheduler, check_optimizer_state,
                                          current_lr, scheduler_state)
from s3prl_distill.pretrain.rng import capture_rng, restore_rng, seed_everything
from s3prl_distill.pretrain.validation import EarlyStopping, evaluate
from s3prl_distill.state_dict import describe_mismatch

logger = logging.getLogger(__name__)

__all__ = ["Trainer"]

PREFIX = "distiller/train-"
DEV_PREFIX = "distiller/dev-"


class Trainer:
    """Train one distillation run.

    Args:
        run: the built run (task, data, cache).
        cfg: the parsed runner config (``-c``).
        expdir: experiment folder (checkpoints, TensorBoard logs); locked by the caller.
        ctx: distributed context (single process by default).
        seed: the run's seed (saved; each rank draws its dropout masks from ``seed + rank``).
        runner_data, model_data: the configs as plain data, saved in every checkpoint.
        args: command-line arguments to save (plain values only).
        tensorboard: write TensorBoard scalars (rank 0).
    """

    def __init__(self, run: DistillationRun, cfg: PretrainConfig, expdir: str, *,
                 ctx: Optional[DistContext] = None, seed: int = 1337,
                 runner_data: Optional[Mapping[str, Any]] = None,
                 model_data: Optional[Mapping[str, Any]] = None,
                 args: Optional[Mapping[str, Any]] = None, tensorboard: bool = True):
        self.run = run
        self.cfg = cfg
        self.expdir = expdir
        self.ctx = ctx or DistContext()
        self.seed = int(seed)
        self.runner_data = dict(runner_data or {})
        self.model_data = dict(model_data or {})
        self.args = {k: v for k, v in dict(args or {}).items()
                     if isinstance(v, (str, int, float, bool, type(None)))}
        self.device = run.device
        self.student: nn.Module = run.student
        self.params = [p for p in self.student.parameters() if p.requires_grad]

        runner = cfg.runner
        self.accum = runner.gradient_accumulate_steps
        self.batches_per_epoch = len(run.sampler)
        if self.batches_per_epoch == 0:
            raise ConfigError(f"pretrain_expert.datarc: the data gives no batch (too few utterances "
                              f"for train_batch_size={run.data.train_batch_size} over "
                              f"{self.ctx.world_size} process(es))")
        if runner.n_epochs > 0:
            if self.batches_per_epoch < self.accum:
                raise ConfigError(f"runner.gradient_accumulate_steps: an epoch has "
                                  f"{self.batches_per_epoch} batches, fewer than {self.accum}")
            # micro-batches carry over epoch ends, so n epochs of data = n * batches / accum updates
            self.total_steps = (runner.n_epochs * self.batches_per_epoch) // self.accum
            logger.info("training %d epochs = %d updates (%d batches per epoch)", runner.n_epochs,
                        self.total_steps, self.batches_per_epoch)
        else:
            self.total_steps = runner.total_steps
            logger.info("training %d updates (%.2f epochs of %d batches)", self.total_steps,
                        self.total_steps * self.accum / self.batches_per_epoch, self.batches_per_epoch)
        if runner.evaluates and run.dev_loader is None:
            raise ConfigError("runner.eval_step / eval_each_epoch: no dev set to evaluate; name one "
                              "in pretrain_expert.datarc")

        trainable = [(n, p) for n, p in self.student.named_parameters() if p.requires_grad]
        self.optimizer = build_optimizer(cfg.optimizer, trainable, self.total_steps)
        self.scheduler = build_scheduler(cfg.scheduler, self.optimizer, self.total_steps)
        self.precision = runner.amp_precision
        if self.precision == "fp16" and self.device.type != "cuda":
            logger.warning("fp16 autocast needs CUDA; using bf16 on %s instead", self.device)
            self.precision = "bf16"
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None

        self.task_module: nn.Module = run.task
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.task_module = DDP(
                run.task,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
                find_unused_parameters=runner.find_unused_parameters,
            )
        self.early = EarlyStopping(runner.early_stopping_patience, runner.early_stopping_min_delta,
                                   keep_best=runner.keep_best)
        self.step = 0
        self.epoch = 0
        self.batches_done = 0
        self.stopped_early = False
        self.last_dev: Optional[float] = None
        # each rank draws its own dropout masks (rank 0 = the single-process stream)
        seed_everything(self.seed + self.ctx.rank)
        self.writer = None
        if self.ctx.is_main and tensorboard:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(expdir)

    # -- resume ------------------------------------------------------------------------------------
    def resume_problem(self, ckpt: Mapping[str, Any]) -> Optional[str]:
        """Why ``ckpt`` cannot resume this run (shapes of the student or optimizer), or None."""
        problem = describe_mismatch(self.student.state_dict(), ckpt.get("state_dict") or {})
        if problem:
            return f"its student does not fit this run's model: {problem}"
        problem = check_optimizer_state(self.optimizer, ckpt["optimizer"])
        if problem:
            return f"its optimizer state does not fit this run's student: {problem}"
        return None

    def load_state(self, ckpt: Mapping[str, Any], where: str = "checkpoint") -> None:
        """Continue from a checkpoint that passed :meth:`resume_problem`."""
        self.student.load_state_dict(ckpt["state_dict"], strict=True)
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
        saved_batches = data_state.get("batches_per_epoch")
        if saved_batches is not None and int(saved_batches) != self.batches_per_epoch:
            logger.warning("%s: an epoch had %s batches when it was saved and has %d now (audio "
                           "files were added or removed?): the data order from here on differs "
                           "from the original run", where, saved_batches, self.batches_per_epoch)
        self.early.load_state_dict(ckpt.get("validation") or {})
        self.last_dev = (ckpt.get("validation") or {}).get("last")
        self.stopped_early = bool((ckpt.get("validation") or {}).get("stopped", False))
        rng = ckpt["rng"]
        restore_rng(rng[self.ctx.rank] if self.ctx.rank < len(rng) else rng[0])
        logger.info("resumed at update %d (epoch %d, batch %d) from %s", self.step, self.epoch,
                    self.batches_done, where)

    # -- checkpoints -------------------------------------------------------------------------------
    def _checkpoint(self, rng: List[Dict[str, Any]]) -> Dict[str, Any]:
        run = self.run
        training = {
            "step": self.step,
            "total_steps": self.total_steps,
            "loss": run.config.loss.type,
            "world_size": self.ctx.world_size,
            "global_batch_size": run.data.train_batch_size * self.accum,
            "precision": self.precision,
            "seed": self.seed,
        }
        extra = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": scheduler_state(self.scheduler),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step,
            "rng": rng,
            "data_state": {"epoch": self.epoch, "batches_done": self.batches_done,
                           "seed": self.seed, "world_size": self.ctx.world_size,
                           "batches_per_epoch": self.batches_per_epoch},
            "validation": {**self.early.state_dict(), "last": self.last_dev,
                           "stopped": self.stopped_early},
            "runner_config": self.runner_data,
            "model_config": self.model_data,
            "args": self.args,
        }
        return student_checkpoint(self.student, run.teacher.describe(), training, extra)

    def save(self) -> Optional[str]:
        """Write ``states-<step>.ckpt`` (rank 0) and prune to ``max_keep``; every rank calls it."""
        rng = self.ctx.gather_objects(capture_rng())
        if not self.ctx.is_main:
            return None
        path = write_checkpoint(self._checkpoint(rng), self.expdir, self.step, self.cfg.runner.max_keep)
        logger.info("saved checkpoint %s", path)
        return path

    def _save_best(self, dev: Mapping[str, float], best: bool, ranked: bool, dropped: List[int]) -> None:
        """Rank 0: write ``best.ckpt`` (the student at the lowest dev loss so far) when ``best``,
        ``best-<step>.ckpt`` when this evaluation entered the ``keep_best`` ranking (K > 1), and
        remove the ranked files of the evaluations that left it."""
        if not self.ctx.is_main or not (best or ranked or dropped):
            return
        metric = self.cfg.runner.early_stopping_metric
        ckpt = student_checkpoint(self.student, self.run.teacher.describe(),
                                  {"step": self.step, "dev": {k: float(v) for k, v in dev.items()},
                                   "dev_metric": metric, "loss": self.run.config.loss.type,
                                   "seed": self.seed})
        if best:
            atomic_save(ckpt, os.path.join(self.expdir, BEST_NAME))
            logger.info("update %d: new best dev %s %.5f -> %s", self.step, metric, dev[metric],
                        os.path.join(self.expdir, BEST_NAME))
        if ranked:
            path = write_ranked_student(ckpt, self.expdir, self.step)
            logger.info("update %d: among the %d best dev evaluations -> %s", self.step,
                        self.early.keep_best, path)
        for step in dropped:
            remove_ranked_student(self.expdir, step)

    # -- one update --------------------------------------------------------------------------------
    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _backward(self, batch: Mapping[str, Any], sync: bool) -> Dict[str, Tensor]:
        """Forward + backward of one micro-batch; returns its records (detached tensors)."""
        no_sync = (self.task_module.no_sync() if self.ctx.distributed and not sync
                   else contextlib.nullcontext())
        with no_sync:
            with self._autocast():
                loss, records = self.run.step(self.task_module, batch)
            loss = loss.float()
            frames = records.get("frames", torch.ones((), device=loss.device))
            scaled = self.ctx.frame_weight(loss, frames, self.device) / self.accum
            if self.scaler is not None:
                self.scaler.scale(scaled).backward()
            else:
                scaled.backward()
        return {"loss": loss.detach(), **records}

    def _optimizer_step(self) -> Tensor:
        """Clip (if configured), step, zero the gradients, advance the schedule; returns the norm."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        clip = self.cfg.runner.gradient_clipping
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.params, clip if clip is not None else float("inf"))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif bool(torch.isfinite(grad_norm)):
            self.optimizer.step()
        else:
            logger.warning("update %d: gradient norm is %s; update skipped", self.step + 1,
                           float(grad_norm))
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        return grad_norm.detach()

    # -- logging and validation --------------------------------------------------------------------
    def _log(self, records: Mapping[str, List[Tensor]], grad_norm: Tensor, speed: float, pbar) -> None:
        means = {name: float(torch.stack(values).float().mean()) for name, values in records.items()
                 if values and name != "frames"}
        lr = current_lr(self.optimizer)
        postfix = {"loss": f"{means.get('loss', float('nan')):.4f}", "audio_s_per_s": f"{speed:.1f}"}
        if self.last_dev is not None:
            postfix["dev"] = f"{self.last_dev:.4f}"
        pbar.set_postfix(postfix)
        if self.writer is not None:
            self.writer.add_scalar(f"{PREFIX}lr", lr, self.step)
            self.writer.add_scalar(f"{PREFIX}gradient-norm", float(grad_norm), self.step)
            self.writer.add_scalar(f"{PREFIX}audio-seconds-per-second", speed, self.step)
            for name, value in means.items():
                self.writer.add_scalar(f"{PREFIX}{name}", value, self.step)
        logger.debug("update %d: loss %.4f lr %.3g grad-norm %.3g %.1f audio s/s", self.step,
                     means.get("loss", float("nan")), lr, float(grad_norm), speed)

    def validate(self) -> Optional[Dict[str, float]]:
        """Evaluate the dev set (every process), log it, keep the best student, count patience."""
        if self.run.dev_loader is None:
            return None
        dev = evaluate(self.run, self.run.dev_loader, self.ctx)
        metric = self.cfg.runner.early_stopping_metric
        if metric not in dev:
            raise ConfigError(f"runner.early_stopping_metric: '{metric}' is not a dev figure of this "
                              f"loss; choose one of {sorted(k for k in dev if k != 'frames')}")
        self.last_dev = dev[metric]
        improved = self.early.update(dev[metric], self.step)
        ranked, dropped = (self.early.rank(dev[metric], self.step) if self.early.keep_best > 1
                           else (False, []))
        if self.writer is not None:
            for name, value in dev.items():
                if name != "frames":
                    self.writer.add_scalar(f"{DEV_PREFIX}{name}", value, self.step)
        logger.info("update %d: dev %s %.5f (best %.5f at update %d%s)", self.step, metric, dev[metric],
                    self.early.best if self.early.best is not None else float("nan"),
                    self.early.best_step,
                    f", {self.early.bad_evals} evaluation(s) without improvement" if not improved else "")
        self._save_best(dev, improved, ranked, dropped)
        if self.early.should_stop:
            self.stopped_early = True
            logger.info("early stopping at update %d: no new best dev loss in %d evaluations "
                        "(best %.5f at update %d)", self.step, self.early.patience,
                        self.early.best, self.early.best_step)
        return dev

    def log_plan(self) -> None:
        """Log the run's cost estimate (:func:`s3prl_distill.benchmark.plan.plan_summary`: a few
        updates timed on copies of the student and optimizer; this run's state is unchanged)."""
        from s3prl_distill.benchmark.plan import plan_summary

        try:
            est = plan_summary(self.run, self.cfg, self.device, updates=2, warmup=1,
                               probe_seconds=(1.0, 2.0), world_size=self.ctx.world_size)
        except Exception as err:  # noqa: BLE001 - an estimate must never stop the run itself
            logger.warning("no cost estimate at start (%s: %s); training goes on",
                           type(err).__name__, err)
            return
        for line in ["plan (s3prl-distill plan; runner.plan_at_start):"] + est.lines():
            logger.info(line)

    # -- the loop ----------------------------------------------------------------------------------
    def train(self) -> str:
        """Run until ``total_steps`` updates (or early stopping); returns the final checkpoint."""
        from tqdm import tqdm

        runner = self.cfg.runner
        run = self.run
        if self.step >= self.total_steps or self.stopped_early:
            logger.info("already finished at update %d of %d%s", self.step, self.total_steps,
                        " (stopped early)" if self.stopped_early else "")
            found = list_checkpoints(self.expdir)
            return found[-1][1] if found else (self.save() or "")
        if self.step == 0 and runner.plan_at_start and self.ctx.is_main:
            self.log_plan()
        self.task_module.train()
        interactive = sys.stderr.isatty()
        pbar = tqdm(total=self.total_steps, initial=self.step, dynamic_ncols=True, desc="distil",
                    disable=not self.ctx.is_main, unit="update",
                    mininterval=0.5 if interactive else 30.0)  # keep redirected logs small
        sample_rate = run.data.sample_rate
        records: Dict[str, List[Tensor]] = defaultdict(list)
        audio_samples = torch.zeros((), dtype=torch.float64)
        interval_start = time.monotonic()
        micro = 0
        last_path = None
        grad_norm = torch.tensor(float("nan"))
        while self.step < self.total_steps and not self.stopped_early:
            run.sampler.start(self.epoch, self.batches_done)
            run.task.set_epoch(self.epoch)
            for batch in run.loader:
                self.batches_done += 1
                epoch_end = self.batches_done >= self.batches_per_epoch
                sync = False
                if batch["skipped"]:
                    logger.warning("update %d: %d bad file(s) dropped from the batch", self.step + 1,
                                   batch["skipped"])
                if self.ctx.all_min(int(batch["wavs"].shape[0]), self.device) == 0:
                    logger.warning("update %d: a batch has no usable audio on some process; skipped",
                                   self.step + 1)
                else:
                    micro += 1
                    sync = micro % self.accum == 0
                    for name, value in self._backward(batch, sync).items():
                        records[name].append(value)
                    audio_samples += batch["wav_lengths"].sum() * self.ctx.world_size
                if sync:
                    grad_norm = self._optimizer_step()
                    self.step += 1
                    pbar.update(1)
                    if self.step % runner.log_step == 0 or self.step == self.total_steps:
                        elapsed = max(time.monotonic() - interval_start, 1e-9)
                        self._log(records, grad_norm, float(audio_samples) / sample_rate / elapsed, pbar)
                        records = defaultdict(list)
                        audio_samples.zero_()
                        interval_start = time.monotonic()
                # validation before the checkpoint of the same moment, so a resumed run never
                # evaluates (and counts) the same parameters twice
                if ((sync and runner.eval_step and self.step % runner.eval_step == 0)
                        or (runner.eval_each_epoch and epoch_end)):
                    self.validate()
                finished = self.step >= self.total_steps or self.stopped_early
                if self.stopped_early or (sync and (self.step % runner.save_step == 0 or finished)):
                    last_path = self.save() or last_path
                if finished:
                    break
            if self.batches_done >= self.batches_per_epoch:
                self.epoch += 1
                self.batches_done = 0
        pbar.close()
        if self.writer is not None:
            self.writer.flush()
        if self.ctx.distributed:
            self.ctx.check_replicas_equal(self.student, self.device)
            self.ctx.barrier()
        return last_path or os.path.join(self.expdir, f"states-{self.step}.ckpt")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
