"""Optimizer and learning-rate schedule of a pretraining run, from the runner YAML's sections.

Two families, both driven by :class:`~s3prl_distill.pretrain.config.OptimizerConfig`:

* ``name: AdamW_with_schedule`` - S3PRL's pretraining optimizer, the one its DistilHuBERT recipe
  (``pretrain/distiller/config_runner.yaml``) and the official FitHuBERT trainer use, with
  S3PRL's semantics reproduced exactly (:class:`WarmupLinearAdamW`, checked step by step
  against S3PRL's installed ``optimizers.py`` in the tests):

  - S3PRL builds it as its ``Lamb`` with ``adam=True`` (trust ratio 1) and
    ``correct_bias=True`` over two parameter groups (``get_grouped_parameters``): weight decay
    0.01 for every parameter whose name contains none of ``bias``, ``LayerNorm.bias``,
    ``LayerNorm.weight``, and 0 for the others. Group values override the config's
    ``weight_decay`` (so S3PRL's ``weight_decay: 1.e-6`` has no effect), and the module names
    of both S3PRL's and our models spell layer norms ``layer_norm``, so every layer-norm weight
    is decayed and only biases are not. ``weight_decay_groups: uniform`` applies the config's
    ``weight_decay`` to every parameter instead (what the papers' tables state).
  - update at a parameter's t-th step (t counts from 1)::

        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t) * f(t / total_steps)
        p   -= lr_t * (m / (sqrt(v) + eps) + wd * p)

    with S3PRL's ``WarmupLinearSchedule``: ``f(x) = x / w`` for ``x < w``, else
    ``max((x - 1) / (w - 1), 0)`` (``w = warmup_proportion``). Note: the first update already
    has a non-zero rate, ``eps`` is added to the uncorrected ``sqrt(v)``, and the decay is
    scaled by the bias correction too - all as in S3PRL.

* ``name: TorchOptim`` (+ ``torch_optim_name``), ``Adam``, ``AdamW`` - torch's optimizers with
  the optional ``scheduler:`` section (linear warm-up then linear decay, per update).

``head_lr`` (ours, default off) puts the prediction heads (``heads.*``) in groups of their own
at that peak rate, with the same schedule.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from s3prl_distill.config import ConfigError
from s3prl_distill.pretrain.config import OptimizerConfig, SchedulerConfig

logger = logging.getLogger(__name__)

__all__ = ["S3PRL_NO_DECAY", "WarmupLinearAdamW", "warmup_linear", "param_groups",
           "build_optimizer", "build_scheduler", "scheduler_state", "current_lr"]

#: name fragments S3PRL's get_grouped_parameters exempts from weight decay (substring match)
S3PRL_NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")
#: weight decay S3PRL's get_grouped_parameters gives every other parameter
S3PRL_GROUP_DECAY = 0.01


def warmup_linear(step: int, total_steps: int, warmup: float) -> float:
    """S3PRL's ``WarmupLinearSchedule`` factor at update ``step`` (1-based) of ``total_steps``."""
    if total_steps < 0:
        return 1.0
    progress = float(step) / float(total_steps)
    if progress < warmup:
        return progress / warmup
    return max((progress - 1.0) / (warmup - 1.0), 0.0)


class WarmupLinearAdamW(torch.optim.Optimizer):
    """S3PRL's ``AdamW_with_schedule`` update (see the module docstring), written for this package.

    Args:
        params: parameters or groups (groups may set ``lr`` and ``weight_decay``).
        lr: peak learning rate.
        total_steps: updates the linear decay reaches 0 at (S3PRL's ``t_total``).
        warmup: warm-up fraction of ``total_steps`` in [0, 1).
        betas, eps, weight_decay: as in the update formula.
    """

    def __init__(self, params, lr: float, total_steps: int, warmup: float = 0.07,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup must lie in [0, 1), got {warmup}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        total_steps=int(total_steps), warmup=float(warmup))
        super().__init__(params, defaults)

    def scheduled_lr(self, group: Dict[str, Any], step: int) -> float:
        """The effective rate of ``group`` at a parameter's update ``step`` (schedule only)."""
        return group["lr"] * warmup_linear(step, group["total_steps"], group["warmup"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = int(state["step"].item())
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(p.grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                rate = (self.scheduled_lr(group, t) * math.sqrt(1.0 - beta2 ** t)
                        / (1.0 - beta1 ** t))
                update = exp_avg / exp_avg_sq.sqrt().add_(group["eps"])
                if group["weight_decay"] != 0:
                    update.add_(p, alpha=group["weight_decay"])
                p.add_(update, alpha=-rate)
        return loss

    def current_lr(self) -> float:
        """The scheduled rate of the first group at its next update (for logging)."""
        group = self.param_groups[0]
        steps = [int(self.state[p]["step"].item()) for p in group["params"] if p in self.state]
        return self.scheduled_lr(group, (max(steps) if steps else 0) + 1)


def _is_head(name: str) -> bool:
    return name.startswith("heads.")


def param_groups(cfg: OptimizerConfig, named_params: Iterable[Tuple[str, Tensor]]
                 ) -> List[Dict[str, Any]]:
    """Parameter groups for ``cfg`` from ``(name, parameter)`` pairs of the trainable parameters.

    S3PRL's grouped decay (``AdamW_with_schedule`` with ``weight_decay_groups: s3prl``) splits by
    name as S3PRL does; ``head_lr`` splits the heads off at their own peak rate. Empty groups
    are left out.
    """
    named = list(named_params)
    if cfg.head_lr is not None and not any(_is_head(n) for n, _ in named):
        raise ConfigError("optimizer.head_lr is set but the student has no prediction heads")

    def decay_of(name: str) -> Optional[float]:
        if cfg.name != "AdamW_with_schedule":
            return None  # torch optimizers: the optimizer's own weight_decay
        if cfg.weight_decay_groups == "s3prl":
            return 0.0 if any(part in name for part in S3PRL_NO_DECAY) else S3PRL_GROUP_DECAY
        return cfg.weight_decay

    groups: Dict[Tuple[bool, Optional[float]], List[Tensor]] = {}
    for name, param in named:
        key = (cfg.head_lr is not None and _is_head(name), decay_of(name))
        groups.setdefault(key, []).append(param)
    out = []
    # the body first, then the heads (their order in the optimizer state is part of a checkpoint)
    for (head, decay), params in sorted(groups.items(), key=lambda item: item[0][0]):
        group: Dict[str, Any] = {"params": params}
        if head:
            group["lr"] = cfg.head_lr
        if decay is not None:
            group["weight_decay"] = decay
        out.append(group)
    return out


def build_optimizer(cfg: OptimizerConfig, named_params: Iterable[Tuple[str, Tensor]],
                    total_steps: int) -> torch.optim.Optimizer:
    """The optimizer of the ``optimizer:`` section over ``named_params`` (trainable only)."""
    groups = param_groups(cfg, named_params)
    if cfg.name == "AdamW_with_schedule":
        return WarmupLinearAdamW(groups, lr=cfg.lr, total_steps=total_steps,
                                 warmup=cfg.warmup_proportion, betas=tuple(cfg.betas), eps=cfg.eps,
                                 weight_decay=cfg.weight_decay)
    name = cfg.torch_class
    if name == "SGD":
        return torch.optim.SGD(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    cls = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[name]
    return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


class _LinearWarmupDecay:
    """lr factor: linear 0 -> 1 over ``warmup`` updates, then linear 1 -> 0 at ``total``."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = int(warmup), int(total)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return float(step) / float(max(1, self.warmup))
        return max(0.0, float(self.total - step) / float(max(1, self.total - self.warmup)))


def build_scheduler(cfg: Optional[SchedulerConfig], optimizer: torch.optim.Optimizer,
                    total_steps: int):
    """LambdaLR for ``scheduler: linear_schedule_with_warmup`` (None: constant rate, or the
    optimizer schedules itself)."""
    if cfg is None or cfg.name == "constant":
        return None
    if isinstance(optimizer, WarmupLinearAdamW):
        raise ConfigError("scheduler: AdamW_with_schedule has its own warm-up/decay schedule "
                          "(warmup_proportion); remove the scheduler section")
    factor = _LinearWarmupDecay(cfg.warmup_steps(total_steps), total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def scheduler_state(scheduler) -> Optional[Dict[str, Any]]:
    """The scheduler's state as plain data (its factor is rebuilt from the config)."""
    if scheduler is None:
        return None
    state = scheduler.state_dict()
    state["lr_lambdas"] = [None] * len(state.get("lr_lambdas", []))
    return state


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate the next update of the first group uses (for logging)."""
    if isinstance(optimizer, WarmupLinearAdamW):
        return optimizer.current_lr()
    return float(optimizer.param_groups[0]["lr"])


def check_optimizer_state(optimizer: torch.optim.Optimizer, state: Dict[str, Any]) -> Optional[str]:
    """Why ``state`` (an optimizer ``state_dict``) cannot resume ``optimizer``, or None.

    Checks the groups' sizes and every saved tensor's shape against its parameter, so a state of
    another model is refused before it is loaded (torch accepts it and fails at the first update).
    """
    groups = state.get("param_groups")
    saved = state.get("state", {})
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups):
        return (f"{len(groups) if isinstance(groups, list) else 'no'} parameter groups saved, "
                f"{len(optimizer.param_groups)} expected")
    index = 0
    for g_saved, g_now in zip(groups, optimizer.param_groups):
        if len(g_saved.get("params", [])) != len(g_now["params"]):
            return (f"a parameter group holds {len(g_saved.get('params', []))} parameters, "
                    f"{len(g_now['params'])} expected")
        for param_id, param in zip(g_saved["params"], g_now["params"]):
            for key, value in saved.get(param_id, {}).items():
                if isinstance(value, Tensor) and value.dim() > 0 and value.shape != param.shape:
                    return (f"state '{key}' of parameter {index} has shape {tuple(value.shape)}, "
                            f"the parameter {tuple(param.shape)}")
            index += 1
    return None
