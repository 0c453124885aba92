"""Sinusoidal positions (Whisper's encoder: ``sin`` then ``cos`` halves, timescales 1..10^4)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["sinusoids"]


def sinusoids(frames: int, dim: int, max_timescale: float = 10000.0,
              device: torch.device = None) -> Tensor:
    """Whisper's sinusoidal position table, for any length.

    Args:
        frames: positions ``T``; dim: width ``D`` (even).
    Returns:
        Tensor ``[T, D]`` float32: ``[sin(t * w_i), cos(t * w_i)]`` with
        ``w_i = max_timescale ** (-i / (D / 2 - 1))``, ``i < D / 2``.
    """
    if dim % 2 or dim < 4:
        raise ValueError(f"sinusoids: dim must be even and >= 4, got {dim}")
    increment = math.log(max_timescale) / (dim // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(dim // 2, device=device, dtype=torch.float32))
    scaled = torch.arange(frames, device=device, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)
