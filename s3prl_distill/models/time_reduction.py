"""FitHuBERT's time-reduction layer: a temporal conv with kernel = stride = k before the transformer.

[B, T, D] -> [B, T', D] with ``T'`` set by ``tail``, what happens to the last ``T mod k`` frames
(a partial group):

* ``pad`` (our default): the sequence is zero-padded to a multiple of k, so the partial group
  becomes one more output frame: ``T' = ceil(T / k)``, valid ``ceil(L / k)``. Every CNN frame
  reaches the transformer, and the heads restore all ``L`` teacher frames.
* ``drop`` (the official FitHuBERT code): a plain ``Conv1d(k, stride=k)`` that ignores the
  partial group: ``T' = floor(T / k)``, valid ``floor(L / k)`` (the official padding mask marks a
  reduced frame padded when any of its k frames is). The heads restore ``k * floor(L / k)``
  frames and the official loss trims the teacher to that length.

The caller zeroes padded frames, so in both modes an utterance's valid outputs are the same
whether it runs alone or padded in a batch. Self-attention cost drops by k^2, every other
layer's by k.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_distill.lengths import ceil_div

__all__ = ["TAILS", "TimeReduction", "reduced_lengths", "restored_lengths"]

#: values of ``StudentConfig.time_reduction_tail``
TAILS = ("pad", "drop")


def _check_tail(tail: str) -> None:
    if tail not in TAILS:
        raise ValueError(f"time-reduction tail must be one of {list(TAILS)}, got {tail!r}")


def reduced_lengths(lengths: Tensor, stride: int, tail: str = "pad") -> Tensor:
    """[B] valid frames -> [B] valid frames after reduction by ``stride``.

    ``pad``: ``ceil(L / k)``; ``drop``: ``floor(L / k)``.
    """
    _check_tail(tail)
    if tail == "drop":
        return torch.div(lengths, stride, rounding_mode="floor")
    return ceil_div(lengths, stride)


def restored_lengths(lengths: Tensor, stride: int, tail: str = "pad") -> Tensor:
    """[B] valid CNN frames -> [B] valid frames a head restores (upsampling by ``stride``).

    ``pad``: all ``L`` (the restored sequence is trimmed to the teacher's frames);
    ``drop``: ``k * floor(L / k)``, the frames the official heads produce.
    """
    _check_tail(tail)
    if tail == "drop":
        return reduced_lengths(lengths, stride, "drop") * stride
    return lengths


class TimeReduction(nn.Module):
    """Conv1d(D, D, kernel=k, stride=k) over time (parameters ``time_reduction.conv.*``).

    Args:
        dim: D; stride: k (>= 2); tail: ``pad`` | ``drop`` (see the module docstring).
    """

    def __init__(self, dim: int, stride: int, tail: str = "pad"):
        super().__init__()
        if stride < 2:
            raise ValueError(f"TimeReduction needs stride >= 2, got {stride}")
        _check_tail(tail)
        self.stride = stride
        self.tail = tail
        self.conv = nn.Conv1d(dim, dim, kernel_size=stride, stride=stride)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """[B] valid input frames -> [B] valid output frames."""
        return reduced_lengths(lengths, self.stride, self.tail)

    def restored_lengths(self, lengths: Tensor) -> Tensor:
        """[B] valid input frames -> [B] valid frames after a head's upsampling by k."""
        return restored_lengths(lengths, self.stride, self.tail)

    def forward(self, x: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """x (Tensor): [B, T, D] (padded frames zero), lengths: [B] -> ([B, T', D], [B]).

        Raises:
            ValueError: ``drop`` with an utterance shorter than k frames (it would have none).
        """
        y = x.transpose(1, 2)
        if self.tail == "drop":
            if bool((lengths < self.stride).any()):
                raise ValueError(
                    f"time_reduction_tail 'drop' needs at least {self.stride} CNN frames per "
                    f"utterance (k = {self.stride}), got valid lengths {lengths.tolist()}: use "
                    "longer audio or time_reduction_tail 'pad'"
                )
        else:
            # always k - 1 zero frames: the conv then yields exactly ceil(T / k) frames for every T
            # and the zeros past a multiple of k are never read, so no branch depends on T (an
            # exported graph is right for every length); the values are those of padding to the
            # next multiple of k
            y = F.pad(y, (0, self.stride - 1))
        return self.conv(y).transpose(1, 2), self.output_lengths(lengths)
