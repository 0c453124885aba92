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

__all__ = ["exporting", "inference_fast_path_ok", "conv1d_channels_last", "MaskedGroupNorm",
           "ChannelLayerNorm", "ConvLayerBlock", "FeatureExtractor", "FeatureProjection"]


def exporting() -> bool:
    """Whether the forward is being traced for export (``torch.onnx.export``, ``torch.jit.trace``,
    ``torch.export``): then every length-dependent step takes its general, tensor-only form (no
    Python branch on tensor values, no per-utterance loop), so the exported graph is right for
    every batch size and length, not only for the example it was traced with."""
    return (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_exporting())


def inference_fast_path_ok(x: Tensor) -> bool:
    """Whether the inference fast paths may run on ``x``: no autograd, CPU, no autocast, not
    exporting.

    (They compute the same function as the plain modules but are not written for autograd or
    autocast's dtype mixing; on accelerators the plain kernels are the fast ones; an export
    traces the plain path, whose ops every runtime has.)
    """
    return (not torch.is_grad_enabled() and x.device.type == "cpu"
            and not torch.is_autocast_enabled("cpu") and not exporting())


# Windows of at most this many values (K * C_in) are copied out (im2col) and run as one GEMM.
SMALL_WINDOW = 64


def _gemm_weight(weight: Tensor) -> Tensor:
    """Conv weight [C_out, C_in, K] -> [C_out, K * C_in], matching channels-last windows."""
    return weight.permute(0, 2, 1).reshape(weight.shape[0], -1)


def _windows(x: Tensor, kernel: int, stride: int, ones_column: bool = False) -> Tensor:
    """x [T, C] contiguous -> [T', K * C] copy of every conv window (im2col).

    ``ones_column=True`` appends a column of ones ([T', K * C + 1]) for a bias inside the GEMM.
    """
    frames, channels = x.shape
    out = (frames - kernel) // stride + 1
    view = x.as_strided((out, kernel * channels), (stride * channels, 1))
    if not ones_column:
        return view.contiguous()
    windows = x.new_ones(out, kernel * channels + 1)
    windows[:, :-1] = view
    return windows


def conv1d_channels_last(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int) -> Tensor:
    """Conv1d without padding on channels-last activations, kept channels last.

    Small windows (the first layer's 10 samples): im2col + one GEMM; pointwise: one GEMM on the
    (strided) rows; otherwise oneDNN's convolution on the [1, C, 1, T] NHWC view of ``x`` (its
    output is NHWC, i.e. [T', C_out] again). Measured on this project's 2-core AVX2 CPU (10 s
    input, interleaved, load ~4): pointwise 128 -> 256 GEMM 1.7-2.2x nn.Conv1d, first layer 1.7-2.2x
    (with its group norm folded in, :meth:`MaskedGroupNorm.fold_into_conv`), 3-tap / 2-tap 512-
    and 256-channel convs NHWC 0.97-1.4x; the same convs as sums of strided GEMMs were 0.86-1.25x,
    so they are not used.

    Args:
        x (Tensor): [T, C_in] contiguous, T >= K.
        weight (Tensor): [C_out, C_in, K]; bias: [C_out] or None.
    Returns:
        Tensor: [T', C_out] contiguous, ``T' = (T - K) // stride + 1``.
    """
    c_out, c_in, kernel = weight.shape
    if c_in * kernel <= SMALL_WINDOW or kernel == 1:
        rows = _windows(x, kernel, stride) if kernel > 1 or stride > 1 else x
        w = _gemm_weight(weight).t()  # [K * C_in, C_out]
        return torch.mm(rows, w) if bias is None else torch.addmm(bias, rows, w)
    nhwc = weight[:, :, None, :].contiguous(memory_format=torch.channels_last)
    y = F.conv2d(x.t()[None, :, None, :], nhwc, bias, stride=(1, stride))  # [1, C_out, 1, T']
    return y[0, :, 0, :].t().contiguous()  # a no-op: the output is NHWC


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
        var, mean = torch.var_mean(y, dim=0, unbiased=False)
        scale = torch.rsqrt(var + self.eps) * self.weight
        return y.sub_(mean).mul_(scale).add_(self.bias)

    def fold_into_conv(self, windows: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """Fold this norm into the conv it follows: ``GN(windows @ weight.T + bias)`` as one GEMM.

        The conv output is linear in its windows, so its per-channel mean and variance over the
        frames follow from the windows' mean and covariance (centred; the small products in
        float64):
        ``mean = mu @ W.T + b``, ``var_c = w_c^T Cov w_c``. Then
        ``GN(y) = windows @ (W * s).T + (beta - (mu @ W.T) * s)`` with ``s = gamma / sqrt(var + eps)``.

        Args:
            windows (Tensor): [T, K * C_in], every frame of one utterance.
            weight (Tensor): [C_out, K * C_in] (:func:`_gemm_weight` layout); bias: [C_out] or None.
        Returns:
            (weight [C_out, K * C_in], bias [C_out]) of the fused GEMM, in ``windows``' dtype.
        """
        w64 = weight.double()
        mu = windows.mean(0)  # [K * C_in]
        centred = windows - mu
        cov = (centred.t() @ centred).double() / windows.shape[0]  # [K * C_in, K * C_in]
        mu = mu.double()
        var = ((w64 @ cov) * w64).sum(1)  # [C_out]
        scale = self.weight.double() * torch.rsqrt(var + self.eps)
        shift = self.bias.double() - (w64 @ mu) * scale  # the conv bias cancels in y - mean
        return (w64 * scale[:, None]).to(windows.dtype), shift.to(windows.dtype)


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
        """One utterance, every frame valid, no autograd: x [T, C_in] -> [T', C_out] (contiguous).

        Conv by :func:`conv1d_channels_last`; a first-layer group norm over a small window
        (``K * C_in <= SMALL_WINDOW``) is folded into the GEMM's weights and bias
        (:meth:`MaskedGroupNorm.fold_into_conv`); GELU in place.
        """
        weight, bias = self.conv.weight, self.conv.bias
        small = weight.shape[1] * self.kernel_size <= SMALL_WINDOW
        if isinstance(self.layer_norm, MaskedGroupNorm) and small:
            windows = _windows(x, self.kernel_size, self.stride, ones_column=True)  # [T', K*C_in + 1]
            w2d, b = self.layer_norm.fold_into_conv(windows[:, :-1], _gemm_weight(weight), bias)
            # the bias rides in the GEMM on the column of ones: no separate pass over the output
            y = torch.mm(windows, torch.cat([w2d, b[:, None]], 1).t())
        else:
            y = conv1d_channels_last(x, weight, bias, self.stride)
            if isinstance(self.layer_norm, MaskedGroupNorm):
                y = self.layer_norm.forward_channels_last(y)
            elif self.layer_norm is not None:  # ChannelLayerNorm: a LayerNorm over C
                y = F.layer_norm(y, y.shape[-1:], self.layer_norm.weight, self.layer_norm.bias,
                                 self.layer_norm.eps)
        return torch.ops.aten.gelu_(y)

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
        out = wavs.new_zeros(wavs.shape[0], int(lengths.max()), self.out_channels)
        for b, n in enumerate(wav_lengths.tolist()):
            y = wavs[b, :n, None]  # [S, 1]
            for block in self.conv_layers:
                y = block.forward_channels_last(y)
            out[b, : y.shape[0]] = y
        return out, lengths

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
