"""Valid lengths and padding: the one place for every rule about them.

Every batch in this package is a zero-padded tensor plus its valid lengths, passed explicitly:
``wavs [B, S]`` with ``wav_lengths [B]``, features ``[B, T, D]`` (or ``[B, C, T]``) with
``lengths [B]``. Teachers, students, the distillation task, the upstream expert and the benchmark
all take these rules from here:

* :func:`ceil_div` - ``ceil(a / b)`` for ints and integer tensors;
* :func:`conv_output_lengths` - exact output frames of a strided conv (with or without padding);
* :func:`valid_mask` - ``[B, T]`` bool, True on valid frames;
* :func:`zero_padding` - zero the frames past each length (``[B, T, D]``);
* :func:`masked_group_norm` - per-channel normalisation over each utterance's valid frames
  (HuBERT's first-layer ``GroupNorm(C, C)`` made padding-invariant);
* :func:`pad_waveforms` - a list of ``[S_i]`` waveforms to ``(wavs [B, S], lengths [B])``.

Lengths stay on the device of the tensors they describe; nothing here moves them to the host.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["ceil_div", "conv_output_lengths", "valid_mask", "zero_padding", "masked_group_norm",
           "pad_waveforms"]

IntOrTensor = Union[int, Tensor]


def ceil_div(a: IntOrTensor, b: int) -> IntOrTensor:
    """``ceil(a / b)`` for a non-negative int or int64 tensor ``a`` and a positive int ``b``."""
    if isinstance(a, Tensor):
        return torch.div(a + (b - 1), b, rounding_mode="floor")
    return -(-int(a) // int(b))


def conv_output_lengths(lengths: IntOrTensor, kernel: int, stride: int,
                        padding: int = 0) -> IntOrTensor:
    """Valid output frames of a conv: ``floor((L + 2 * padding - kernel) / stride) + 1``, >= 0.

    Without padding an output frame is valid when its whole window lies in the valid input
    (wav2vec 2.0 / HuBERT CNNs); with "same" padding ``kernel // 2`` and an odd kernel this is
    ``ceil(L / stride)`` (Whisper's and the log-mel students' convs).

    Args:
        lengths: [B] int64 valid input frames (or one int).
    Returns:
        [B] int64 valid output frames (or one int).
    """
    if isinstance(lengths, Tensor):
        out = torch.div(lengths + (2 * padding - kernel), stride, rounding_mode="floor") + 1
        return out.clamp(min=0)
    return max((int(lengths) + 2 * padding - kernel) // stride + 1, 0)


def valid_mask(lengths: Tensor, frames: int) -> Tensor:
    """[B] valid lengths -> [B, frames] bool, True on valid frames (on ``lengths``' device)."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def zero_padding(x: Tensor, lengths: Tensor) -> Tensor:
    """Zero the frames at or past each length: x [B, T, D], lengths [B] -> [B, T, D]."""
    return x * valid_mask(lengths, x.shape[1])[:, :, None].to(x.dtype)


def masked_group_norm(x: Tensor, lengths: Optional[Tensor], weight: Optional[Tensor],
                      bias: Optional[Tensor], eps: float) -> Tensor:
    """``GroupNorm(C, C)`` over time with statistics of each utterance's valid frames only.

    Args:
        x (Tensor): [B, C, T] conv output.
        lengths (Tensor): [B] valid frames (each >= 1), or None: every frame is valid.
        weight, bias (Tensor): [C] affine parameters, or None.
        eps: added to the variance.
    Returns:
        Tensor [B, C, T]; padded frames get their utterance's affine map (their values are
        never used downstream).
    """
    if lengths is None:
        var, mean = torch.var_mean(x, dim=-1, unbiased=False, keepdim=True)
    else:
        mask = valid_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)  # [B, 1, T]
        count = mask.sum(-1, keepdim=True).clamp(min=1.0)
        mean = (x * mask).sum(-1, keepdim=True) / count
        var = (((x - mean) * mask) ** 2).sum(-1, keepdim=True) / count
    scale = torch.rsqrt(var + eps)  # [B, C, 1]
    if weight is not None:
        scale = scale * weight[None, :, None]
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias[None, :, None]
    return torch.addcmul(shift, x, scale)


def pad_waveforms(wavs: Sequence[Tensor], *, pad_value: float = 0.0,
                  multiple_of: int = 1) -> Tuple[Tensor, Tensor]:
    """Stack 1-D waveforms of different lengths into one padded batch.

    Args:
        wavs: B tensors [S_i] (on one device, one dtype).
        pad_value: value of the padded samples.
        multiple_of: round the padded length up to a multiple of this (1: no rounding).
    Returns:
        (wavs [B, S_max] in the inputs' dtype and device, lengths [B] int64 on that device).
    Raises:
        ValueError: an empty list, a waveform that is not 1-D, or ``multiple_of < 1``.
    """
    if len(wavs) == 0:
        raise ValueError("pad_waveforms: expected at least one waveform, got an empty list")
    if multiple_of < 1:
        raise ValueError(f"pad_waveforms: multiple_of must be >= 1, got {multiple_of}")
    for i, wav in enumerate(wavs):
        if not isinstance(wav, Tensor) or wav.dim() != 1:
            shape = tuple(wav.shape) if isinstance(wav, Tensor) else type(wav).__name__
            raise ValueError(f"waveform {i} must be [S] (1-D, 16 kHz mono), got shape {shape}")
    sizes = [int(w.shape[0]) for w in wavs]
    total = ceil_div(max(sizes), multiple_of) * multiple_of
    out = wavs[0].new_full((len(wavs), total), pad_value)
    for i, wav in enumerate(wavs):
        out[i, : sizes[i]] = wav
    return out, torch.tensor(sizes, dtype=torch.long, device=wavs[0].device)
