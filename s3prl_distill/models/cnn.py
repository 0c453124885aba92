"""Convolutional front end on raw 16 kHz audio and the feature projection to the encoder width.

Parameter names follow torchaudio's ``Wav2Vec2Model`` (``feature_extractor.conv_layers.{i}.conv``,
``.layer_norm``; ``encoder.feature_projection.(layer_norm|projection)``) so a HuBERT/wav2vec 2.0
teacher initialises a student by key.

Valid lengths are computed exactly from the conv arithmetic: ``L_out = floor((L - K) / S) + 1``.
Frame ``t < L_out`` of every layer depends on valid input only, and the first layer's group norm
uses statistics of valid frames only, so the valid frames of a padded utterance equal those of the
same utterance alone.

Inference fast path (no autograd, CPU; switch: every block's ``fast_path``): each utterance runs
alone on its valid samples with activations [T, C] (channels last) from the waveform to the
projection, the first group norm folded into the first conv's GEMM, GELU in place
(:meth:`FeatureExtractor._run_channels_last`). Training runs the nn.Conv1d path.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_distill.lengths import conv_output_lengths, masked_group_norm
from s3prl_distill.models.config import CNNConfig
# the inference kernels live in models/fast.py (shared with the teachers); re-exported here
from s3prl_distill.models.fast import (SMALL_WINDOW, conv1d_channels_last,  # noqa: F401
                                       conv_block_channels_last, conv_stack_channels_last,
                                       exporting, fold_group_norm, group_norm_channels_last,
                                       inference_fast_path_ok)

__all__ = ["exporting", "inference_fast_path_ok", "conv1d_channels_last", "MaskedGroupNorm",
           "ChannelLayerNorm", "ConvLayerBlock", "FeatureExtractor", "FeatureProjection"]


class MaskedGroupNorm(nn.GroupNorm):
    """``GroupNorm(C, C)`` (per-channel normalisation over time) using valid frames only.

    Same parameters as ``nn.GroupNorm(num_channels, num_channels, affine=True)`` (HuBERT's first
    conv layer); with ``lengths`` the mean and variance come from the valid frames of each
    utterance, so padding does not change the valid outputs.
    """

    def __init__(self, num_channels: int):
        super().__init__(num_channels, num_channels, affine=True)

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """x (Tensor): [B, C, T]; lengths (Tensor): [B] valid frames or None -> [B, C, T].

        Padded frames get the same affine map as their utterance (their values are never used).
        """
        # nothing padded (an export always takes the masked form: right for padded batches too)
        if lengths is None or (not exporting() and bool((lengths >= x.shape[-1]).all())):
            return super().forward(x)
        return masked_group_norm(x, lengths, self.weight, self.bias, self.eps)

    def forward_channels_last(self, y: Tensor) -> Tensor:
        """One utterance, every frame valid: y [T, C] -> normalised [T, C] (in place)."""
        return group_norm_channels_last(self, y)

    def fold_into_conv(self, windows: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """Fold this norm into the conv it follows (:func:`s3prl_distill.models.fast.fold_group_norm`).

        Args:
            windows (Tensor): [T, K * C_in], every frame of one utterance.
            weight (Tensor): [C_out, K * C_in]; bias: [C_out] or None.
        Returns:
            (weight [C_out, K * C_in], bias [C_out]) of the fused GEMM.
        """
        return fold_group_norm(self, windows, weight, bias)


class ChannelLayerNorm(nn.LayerNorm):
    """Layer norm over the channels of a [B, C, T] tensor (wav2vec 2.0 Large's conv blocks)."""

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ConvLayerBlock(nn.Module):
    """Conv1d (no padding) -> optional norm -> GELU: [B, C_in, T] -> [B, C_out, T']."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, bias: bool,
                 layer_norm: Optional[nn.Module], norm_over_padding: bool = False):
        super().__init__()
        self.kernel_size = kernel
        self.stride = stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, bias=bias)
        self.layer_norm = layer_norm
        # True: a group norm takes its statistics over every frame of the padded batch (S3PRL's
        # DistillerModel, the official FitHuBERT); False: over each utterance's valid frames
        self.norm_over_padding = norm_over_padding

    # Inference fast path (see ``FeatureExtractor``): the conv on channels-last activations
    # (:func:`conv1d_channels_last`). ``False`` keeps this block (and so the whole stack) on nn.Conv1d (A/B switch).
    fast_path: bool = True

    def forward_channels_last(self, x: Tensor) -> Tensor:
        """One utterance, every frame valid, no autograd: x [T, C_in] -> [T', C_out] (contiguous),
        by :func:`s3prl_distill.models.fast.conv_block_channels_last` (first group norm folded
        into the GEMM, GELU in place)."""
        return conv_block_channels_last(self.conv, self.stride, self.layer_norm, x)

    def forward(self, x: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """x: [B, C_in, T], lengths: [B] -> ([B, C_out, T'], [B] valid output frames)."""
        x = self.conv(x)
        lengths = conv_output_lengths(lengths, self.kernel_size, self.stride)
        if self.layer_norm is not None:
            x = self.layer_norm(x, None if self.norm_over_padding else lengths)
        return F.gelu(x), lengths


class _GradMultiply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


class FeatureExtractor(nn.Module):
    """The conv stack: wavs [B, S] -> features [B, T, C_last] with valid lengths [B].

    Args:
        cfg: layer spec (channels, kernel, stride per layer), norm placement, conv bias, and
            ``group_norm_over_padding`` (then a padded batch runs as one batch on every path, so
            that the first group norm sees its padding, as S3PRL's DistillerModel does).
        grad_mult: gradient scale applied to the output (S3PRL's DistilHuBERT config: 0.1).
    """

    def __init__(self, cfg: CNNConfig, grad_mult: float = 1.0):
        super().__init__()
        self.grad_mult = grad_mult
        blocks = []
        in_ch = 1
        for i, spec in enumerate(cfg.layers):
            if cfg.norm == "layer_norm":
                norm: Optional[nn.Module] = ChannelLayerNorm(spec.channels)
            elif cfg.norm == "group_norm_first" and i == 0:
                norm = MaskedGroupNorm(spec.channels)
            else:
                norm = None
            blocks.append(ConvLayerBlock(in_ch, spec.channels, spec.kernel, spec.stride, cfg.bias, norm,
                                         norm_over_padding=cfg.group_norm_over_padding))
            in_ch = spec.channels
        self.conv_layers = nn.ModuleList(blocks)
        self.group_norm_over_padding = cfg.group_norm_over_padding and cfg.norm == "group_norm_first"
        self.out_channels = in_ch
        self.stride = cfg.stride
        self.receptive_field = cfg.receptive_field

    # No work on padded samples: a padded batch runs the conv stack once per utterance on its
    # valid samples and zero-pads the outputs (valid frames unchanged: they never read padding).
    # ``False`` runs the padded batch at once (the benchmark's A/B switch).
    per_utterance: bool = True

    def _per_utterance(self, x: Tensor, wav_lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """x: [B, 1, S], wav_lengths: [B] -> ([B, C, T], [B]); padded frames are 0."""
        lengths = self.output_lengths(wav_lengths)
        frames = int(lengths.max())
        outs = []
        for b, n in enumerate(wav_lengths.tolist()):
            y = x[b:b + 1, :, :n]
            y_len = wav_lengths[b:b + 1]
            for block in self.conv_layers:
                y, y_len = block(y, y_len)
            outs.append(F.pad(y, (0, frames - y.shape[-1])))
        return torch.cat(outs, 0), lengths

    def output_lengths(self, wav_lengths: Tensor) -> Tensor:
        """[B] samples -> [B] valid frames (exact conv arithmetic)."""
        for block in self.conv_layers:
            wav_lengths = conv_output_lengths(wav_lengths, block.kernel_size, block.stride)
        return wav_lengths

    def _channels_last_ok(self, wavs: Tensor) -> bool:
        """The channels-last path runs when every block's ``fast_path`` is on and the inputs allow it."""
        return inference_fast_path_ok(wavs) and all(block.fast_path for block in self.conv_layers)

    def _run_channels_last(self, wavs: Tensor, wav_lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """wavs: [B, S], wav_lengths: [B] -> ([B, T, C], [B]); padded frames are 0.

        Each utterance runs alone on its valid samples with activations kept [T, C] (channels
        last) from the waveform to the projection: no work on padding, no transposes.
        """
        lengths = self.output_lengths(wav_lengths)
        return conv_stack_channels_last(self.conv_layers, wavs, wav_lengths, lengths, self.out_channels), lengths

    def forward(self, wavs: Tensor, wav_lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """wavs (Tensor): [B, S] float; wav_lengths (Tensor): [B] int64 -> ([B, T, C], [B])."""
        if self.training and self.grad_mult == 0.0:
            with torch.no_grad():  # a frozen front end: no graph at all
                return self._features(wavs, wav_lengths)
        x, lengths = self._features(wavs, wav_lengths)
        if self.training and self.grad_mult != 1.0:
            x = _GradMultiply.apply(x, self.grad_mult)
        return x, lengths

    def _features(self, wavs: Tensor, wav_lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """wavs: [B, S], wav_lengths: [B] -> ([B, T, C], [B]) by the GEMM or the nn.Conv1d path."""
        if self._channels_last_ok(wavs) and not (
                self.group_norm_over_padding and bool((wav_lengths < wavs.shape[-1]).any())):
            return self._run_channels_last(wavs, wav_lengths)
        x, lengths = self._run(wavs, wav_lengths)
        return x.transpose(1, 2), lengths

    def _run(self, wavs: Tensor, wav_lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """wavs: [B, S], wav_lengths: [B] -> ([B, C, T], [B])."""
        x = wavs[:, None, :]
        # per utterance only on CPU: on an accelerator one batched launch beats B small ones
        if (self.per_utterance and not self.group_norm_over_padding and x.device.type == "cpu"
                and x.shape[0] > 1 and not exporting()
                and bool((wav_lengths < x.shape[-1]).any())):
            return self._per_utterance(x, wav_lengths)
        lengths = wav_lengths
        for block in self.conv_layers:
            x, lengths = block(x, lengths)
        return x, lengths


class FeatureProjection(nn.Module):
    """LayerNorm(C) -> Linear(C, D) -> dropout: [B, T, C] -> [B, T, D].

    ``layer_norm=False`` leaves out the LayerNorm (S3PRL's DistillerModel has none).
    """

    def __init__(self, in_features: int, out_features: int, dropout: float, layer_norm: bool = True):
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_features) if layer_norm else None
        self.projection = nn.Linear(in_features, out_features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.dropout(self.projection(x))
