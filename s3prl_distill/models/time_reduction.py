"""FitHuBERT's time-reduction layer: a temporal conv with kernel = stride = k before the transformer.

[B, T, D] -> [B, ceil(T / k), D]. The sequence is zero-padded to a multiple of k first, and the
caller zeroes padded frames, so an utterance's last, partial group of frames sees zeros whether it
is alone or padded in a batch: valid outputs are exactly ``ceil(L / k)`` and padding-invariant.
Self-attention cost drops by k^2, every other layer's by k.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_distill.lengths import ceil_div

__all__ = ["TimeReduction", "reduced_lengths"]


def reduced_lengths(lengths: Tensor, stride: int) -> Tensor:
    """[B] valid frames -> [B] valid frames after reduction by ``stride``: ``ceil(L / k)``."""
    return ceil_div(lengths, stride)


class TimeReduction(nn.Module):
    """Conv1d(D, D, kernel=k, stride=k) over time (parameters ``time_reduction.conv.*``)."""

    def __init__(self, dim: int, stride: int):
        super().__init__()
        if stride < 2:
            raise ValueError(f"TimeReduction needs stride >= 2, got {stride}")
        self.stride = stride
        self.conv = nn.Conv1d(dim, dim, kernel_size=stride, stride=stride)

    def forward(self, x: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """x (Tensor): [B, T, D] (padded frames zero), lengths: [B] -> ([B, ceil(T/k), D], [B])."""
        extra = (-x.shape[1]) % self.stride
        y = x.transpose(1, 2)
        if extra:
            y = F.pad(y, (0, extra))
        return self.conv(y).transpose(1, 2), reduced_lengths(lengths, self.stride)
