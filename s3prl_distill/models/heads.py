"""Prediction heads: map one student layer [B, T_s, D] to one teacher layer [B, T_teacher, D_t].

* ``MLPHead`` (DistilHuBERT): Linear(D, inner) -> GELU -> Linear(inner, D_t), per frame.
* ``LinearHead``: Linear(D, D_t).
* ``DeconvLinearHead`` (FitHuBERT): ConvTranspose1d(D, D, k, stride k) restores the teacher's
  frame rate after time reduction, then Linear(D, D_t). Output frame ``t`` depends on reduced frame
  ``t // k`` only, so padding never leaks into valid frames. ``T'`` reduced frames give ``k T'``
  frames: ``k ceil(T/k) >= T`` with ``time_reduction_tail: pad`` (trimmed to the teacher's T),
  ``k floor(T/k)`` with ``drop`` (the official FitHuBERT length; the missing tail frames are
  zero-padded and outside ``prediction_lengths``, see ``time_reduction.restored_lengths``).
* ``IdentityHead``: the student layer itself (DistilHuBERT's "predict w/ hidden" baseline).

Every head takes ``target_frames`` (the teacher's frame count, given explicitly) and trims or
zero-pads its output to it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_distill.models.config import HeadConfig

__all__ = ["MLPHead", "LinearHead", "DeconvLinearHead", "IdentityHead", "build_head", "fit_frames"]


def fit_frames(x: Tensor, frames: int) -> Tensor:
    """Trim or zero-pad [B, T, D] along time to [B, frames, D]."""
    t = x.shape[1]
    if t > frames:
        return x[:, :frames]
    if t < frames:
        return F.pad(x, (0, 0, 0, frames - t))
    return x


class MLPHead(nn.Module):
    def __init__(self, dim: int, inner_dim: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, inner_dim)
        self.fc2 = nn.Linear(inner_dim, out_dim)

    def forward(self, x: Tensor, target_frames: int) -> Tensor:
        """x (Tensor): [B, T, D] -> [B, target_frames, D_t]."""
        return fit_frames(self.fc2(F.gelu(self.fc1(x))), target_frames)


class LinearHead(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, x: Tensor, target_frames: int) -> Tensor:
        """x (Tensor): [B, T, D] -> [B, target_frames, D_t]."""
        return fit_frames(self.proj(x), target_frames)


class DeconvLinearHead(nn.Module):
    """ConvTranspose1d(D, D, k, stride k) (absent for k == 1) -> Linear(D, D_t)."""

    def __init__(self, dim: int, out_dim: int, stride: int):
        super().__init__()
        self.upsample = nn.ConvTranspose1d(dim, dim, stride, stride=stride) if stride > 1 else None
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, x: Tensor, target_frames: int) -> Tensor:
        """x (Tensor): [B, T_s, D] at the reduced rate -> [B, target_frames, D_t]."""
        if self.upsample is not None:
            x = self.upsample(x.transpose(1, 2)).transpose(1, 2)
        if x.shape[1] > target_frames:
            x = x[:, :target_frames]
        return fit_frames(self.proj(x), target_frames)  # frames added here are zeros


class IdentityHead(nn.Module):
    def forward(self, x: Tensor, target_frames: int) -> Tensor:
        return fit_frames(x, target_frames)


def build_head(cfg: HeadConfig, dim: int, teacher_dim: int, time_reduction: int) -> nn.Module:
    """One head for ``cfg`` on an encoder of width ``dim`` (see :class:`HeadConfig`)."""
    if cfg.type == "mlp":
        return MLPHead(dim, cfg.inner_dim or dim, teacher_dim)
    if cfg.type == "linear":
        return LinearHead(dim, teacher_dim)
    if cfg.type == "deconv_linear":
        return DeconvLinearHead(dim, teacher_dim, time_reduction)
    if cfg.type == "identity":
        return IdentityHead()
    raise ValueError(f"unknown head type {cfg.type!r}")
