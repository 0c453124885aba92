"""Validation during distillation: the dev-set distillation loss and early stopping.

:func:`evaluate` runs the distillation task over a dev loader (student in eval mode, no
gradients) and returns the frame-weighted mean of the loss and of every loss term, summed over
all data-parallel processes, so it equals a single process's evaluation of the whole dev set.

:class:`EarlyStopping` keeps the best dev loss, the update it was reached at and how many
evaluations passed without a new best, and the ranking of the ``keep_best`` lowest evaluations
(whose students the trainer keeps, as Lightning's ``ModelCheckpoint(save_top_k=K)``); its state is
plain data saved in every checkpoint, so a resumed run continues counting where it stopped.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch.utils.data import DataLoader

from s3prl_distill.pretrain.distributed import DistContext

logger = logging.getLogger(__name__)

__all__ = ["EarlyStopping", "evaluate"]


@dataclass
class EarlyStopping:
    """Best dev loss so far and the patience counter.

    Attributes:
        patience: evaluations without a new best before stopping (0: never stop).
        min_delta: a new best must be lower than the old one by more than this.
        best: lowest dev loss so far (None before the first evaluation).
        best_step: update of ``best``; bad_evals: evaluations since ``best``.
        keep_best: how many of the lowest evaluations :meth:`rank` keeps.
        top: the kept evaluations, ``[value, step]`` lowest first (ties: the earlier first).
    """

    patience: int = 0
    min_delta: float = 0.0
    best: Optional[float] = None
    best_step: int = -1
    bad_evals: int = 0
    keep_best: int = 1
    top: List[List[float]] = field(default_factory=list)

    def update(self, value: float, step: int) -> bool:
        """Record an evaluation; returns True when it is a new best."""
        if not math.isfinite(value):
            self.bad_evals += 1
            return False
        if self.best is None or value < self.best - self.min_delta:
            self.best, self.best_step, self.bad_evals = float(value), int(step), 0
            return True
        self.bad_evals += 1
        return False

    def rank(self, value: float, step: int) -> Tuple[bool, List[int]]:
        """Enter an evaluation into the ranking of the ``keep_best`` lowest (strictly lower than
        the worst kept one, as ``ModelCheckpoint`` compares; no ``min_delta``).

        Returns:
            (kept, dropped): whether ``step`` entered the ranking, and the steps that left it.
        """
        if not math.isfinite(value):
            return False, []
        if len(self.top) >= self.keep_best and not value < self.top[-1][0]:
            return False, []
        self.top.append([float(value), int(step)])
        self.top.sort(key=lambda entry: (entry[0], entry[1]))
        dropped = [int(s) for _, s in self.top[self.keep_best:]]
        del self.top[self.keep_best:]
        return True, dropped

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evals >= self.patience

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals,
                "top": [[float(v), int(s)] for v, s in self.top]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = None if state.get("best") is None else float(state["best"])
        self.best_step = int(state.get("best_step", -1))
        self.bad_evals = int(state.get("bad_evals", 0))
        self.top = [[float(v), int(s)] for v, s in state.get("top", [])][: self.keep_best]


@torch.no_grad()
def evaluate(run, loader: DataLoader, ctx: Optional[DistContext] = None) -> Dict[str, float]:
    """Frame-weighted dev loss of ``run`` over ``loader`` (all processes together).

    Args:
        run: a :class:`~s3prl_distill.pretrain.build.DistillationRun`.
        loader: dev batches as the training loader yields them (this process's share).
    Returns:
        ``{"loss": mean, <term>: mean, ..., "frames": total valid frames}``.
    """
    ctx = ctx or DistContext()
    task = run.task
    was_training = task.training
    task.eval()
    names: Optional[list] = None
    sums: Optional[torch.Tensor] = None
    try:
        for batch in loader:
            loss, records = run.step(task, batch, dev=True)
            frames = records.get("frames", torch.zeros(()))
            if float(frames) == 0:
                continue
            terms = {k: v for k, v in records.items() if k != "frames"}
            if names is None:
                names = sorted(terms)
            values = torch.stack([loss.detach().float()] + [terms[k].float() for k in names])
            weighted = torch.cat([values * frames, frames.reshape(1)]).double().cpu()
            sums = weighted if sums is None else sums + weighted
    finally:
        task.train(was_training)
    # every process takes part in the sum, also one whose share held no valid frame
    names_all = [n for n in ctx.gather_objects(names) if n is not None]
    names = names_all[0] if names_all else []
    if sums is None:
        sums = torch.zeros(len(names) + 2, dtype=torch.float64)
    total = ctx.all_sum(sums)
    frames = float(total[-1])
    if frames == 0:
        return {"loss": float("nan"), "frames": 0.0}
    out = {"loss": float(total[0]) / frames, "frames": frames}
    for i, name in enumerate(names):
        out[name] = float(total[i + 1]) / frames
    return out
