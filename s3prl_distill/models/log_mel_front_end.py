"""Log-mel front end of a student (Whisper's): waveform -> log-mel -> convs -> [B, T, C].

::

    wavs [B, S], wav_lengths [B]
      batch_log_mel (per utterance, valid samples only) -> mel [B, n_mels, F], F_b = S_b // 160
      for each conv (kernel k odd, stride s, padding k // 2):
          zero frames past each length, conv, GELU          -> [B, C_i, ceil(F_i / s)]
      transpose                                             -> [B, T, C_last], lengths [B]

Padded frames are zeroed before every conv, so they read like the conv's own zero padding and a
batch gives each utterance exactly what it gets alone. Parameter names: ``convs.{i}.weight`` /
``convs.{i}.bias``; layer 0 and 1 of a Whisper-shaped front end take Whisper's ``conv1`` and
``conv2`` unchanged (:meth:`WhisperTeacher.student_init_state`).
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_distill.lengths import conv_output_lengths, valid_mask
from s3prl_distill.models.cnn import _GradMultiply
from s3prl_distill.models.config import LogMelFrontEndConfig
from s3prl_distill.models.log_mel import batch_log_mel, mel_frames

__all__ = ["LogMelFrontEnd"]


class LogMelFrontEnd(nn.Module):
    """wavs [B, S] -> features [B, T, C_last] with valid lengths [B] (see the module docstring).

    Args:
        cfg: mel bins and conv layers.
        grad_mult: gradient scale applied to the output (as the waveform CNN's).
    """

    def __init__(self, cfg: LogMelFrontEndConfig, grad_mult: float = 1.0):
        super().__init__()
        self.n_mels = cfg.n_mels
        self.grad_mult = grad_mult
        convs, in_ch = [], cfg.n_mels
        for spec in cfg.layers:
            convs.append(nn.Conv1d(in_ch, spec.channels, spec.kernel, spec.stride, padding=spec.kernel // 2))
            in_ch = spec.channels
        self.convs = nn.ModuleList(convs)
        self.out_channels = in_ch
        self.stride = cfg.stride
        self.receptive_field = cfg.receptive_field

    def output_lengths(self, wav_lengths: Tensor) -> Tensor:
        """[B] samples -> [B] valid frames of the output."""
        lengths = mel_frames(wav_lengths)
        for conv in self.convs:
            lengths = conv_output_lengths(lengths, conv.kernel_size[0], conv.stride[0], conv.padding[0])
        return lengths

    def forward(self, wavs: Tensor, wav_lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """wavs (Tensor): [B, S] float 16 kHz; wav_lengths (Tensor): [B] int64 -> ([B, T, C], [B])."""
        x, lengths = batch_log_mel(wavs, wav_lengths, self.n_mels, who="student log-mel front end")
        frozen = self.training and self.grad_mult == 0.0
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            for conv in self.convs:
                valid = valid_mask(lengths, x.shape[-1])
                x = F.gelu(conv(x * valid[:, None, :].to(x.dtype)))
                lengths = conv_output_lengths(lengths, conv.kernel_size[0], conv.stride[0], conv.padding[0])
        if self.training and self.grad_mult not in (0.0, 1.0):
            x = _GradMultiply.apply(x, self.grad_mult)
        return x.transpose(1, 2), lengths
