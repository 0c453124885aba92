"""Transformer encoder blocks: convolutional positional embedding, self-attention, feed-forward.

Names follow torchaudio's ``Wav2Vec2Model`` (``pos_conv_embed.conv``, ``layers.{i}.attention.
(q|k|v|out)_proj``, ``layer_norm``, ``feed_forward.(intermediate_dense|output_dense)``,
``final_layer_norm``). Attention is ``torch.nn.functional.scaled_dot_product_attention`` with a
key-padding mask (``None`` when the batch has no padding, which lets torch pick its fastest kernel).

Inference fast paths (no autograd, CPU; switch ``fast_path``, the benchmark's ``-nofast``): the
positional conv by FFT with a cached weight spectrum, and cached stacked q/k/v weights.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_distill.lengths import ceil_div, valid_mask
from s3prl_distill.models.cnn import exporting, inference_fast_path_ok

__all__ = ["fft_size", "grouped_conv_spectrum", "grouped_conv_fft", "ConvolutionalPositionalEmbedding",
           "SelfAttention", "FeedForward", "EncoderLayer", "key_padding_mask"]


def key_padding_mask(lengths: Tensor, frames: int) -> Optional[Tensor]:
    """Attention mask for SDPA: [B, 1, 1, T] bool, True = attend; None if nothing is padded.

    Args:
        lengths (Tensor): [B] valid frames (each >= 1).
    When exporting, the mask is always built (the exported graph serves padded batches too).
    """
    if not exporting() and bool((lengths >= frames).all()):
        return None
    return valid_mask(lengths, frames)[:, None, None, :]


def fft_size(kernel: int) -> int:
    """FFT length for a conv of ``kernel`` taps by overlap-save: the power of 2 >= 2 * kernel.

    Each block then yields ``fft_size - kernel + 1`` (> half) valid outputs.
    """
    return 1 << max(1, (2 * kernel - 1).bit_length())


def grouped_conv_spectrum(weight: Tensor, groups: int, n_fft: int) -> Tensor:
    """Conv weight [D_out, D_in / G, K] -> conj(rfft(weight, n_fft)) as [G, F, D_out / G, D_in / G].

    (Conjugated: a conv layer is a cross-correlation.) ``F = n_fft // 2 + 1`` bins.
    """
    spectrum = torch.fft.rfft(weight, n=n_fft).conj()  # [D_out, D_in / G, F]
    d_out, d_in_g, bins = spectrum.shape
    return spectrum.view(groups, d_out // groups, d_in_g, bins).permute(0, 3, 1, 2).contiguous()


def grouped_conv_fft(x: Tensor, spectrum: Tensor, kernel: int, padding: int) -> Tensor:
    """Grouped Conv1d with zero padding as FFTs (overlap-save), channels last, first T outputs.

    ``y[t] = sum_j W[:, :, j] @ x[t + j - padding]`` (x zero outside [0, T)), computed per block
    of ``n_fft - K + 1`` outputs: rfft of the block's ``n_fft`` input frames, one small complex
    GEMM per group and frequency bin, irfft. Equal to the conv to float rounding; for HuBERT's
    positional conv (K = 128, 16 groups) about 30x fewer multiply-adds.

    Args:
        x (Tensor): [B, T, D] float.
        spectrum (Tensor): [G, F, D / G, D / G] from :func:`grouped_conv_spectrum`.
        kernel: K; padding: zero frames before x (the conv's ``padding``).
    Returns:
        Tensor: [B, T, D].
    """
    b, frames, dim = x.shape
    groups, bins, d_out_g, d_in_g = spectrum.shape
    n_fft = 2 * (bins - 1)
    hop = n_fft - kernel + 1  # valid outputs per block
    blocks = ceil_div(frames, hop)
    padded = F.pad(x, (0, 0, padding, (blocks - 1) * hop + n_fft - frames - padding))
    segments = padded.as_strided(  # [B, blocks, n_fft, D], overlapping views
        (b, blocks, n_fft, dim), (padded.shape[1] * dim, hop * dim, dim, 1))
    spec_x = torch.fft.rfft(segments, dim=2)  # [B, blocks, F, D]
    spec_x = spec_x.view(b, blocks, bins, groups, d_in_g).permute(3, 2, 4, 0, 1)
    spec_y = torch.matmul(spectrum, spec_x.reshape(groups, bins, d_in_g, b * blocks))
    spec_y = spec_y.view(groups, bins, d_out_g, b, blocks).permute(3, 4, 1, 0, 2)
    y = torch.fft.irfft(spec_y.reshape(b, blocks, bins, dim), n=n_fft, dim=2)  # [B, blocks, n_fft, D]
    return y[:, :, :hop].reshape(b, blocks * hop, dim)[:, :frames]


class ConvolutionalPositionalEmbedding(nn.Module):
    """x + GELU(weight-normed grouped Conv1d(x)) with "same" padding: [B, T, D] -> [B, T, D].

    Kernel ``K`` (even, 128 in HuBERT) is padded by ``K // 2`` on both sides and the one extra
    output frame is dropped, as in wav2vec 2.0. Padded frames must be zero on input (the caller
    zeroes them) so that they read like the conv's own zero padding.
    """

    # Inference fast path: the conv by FFT (:func:`grouped_conv_fft`) with the weight's spectrum
    # cached until the weights change. ``False``: nn.Conv1d always (the benchmark's A/B switch).
    fast_path: bool = True

    def __init__(self, dim: int, kernel_size: int, groups: int):
        super().__init__()
        conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=groups)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.num_remove = 1 if kernel_size % 2 == 0 else 0
        self._spectrum_cache: Optional[Tuple[tuple, Tensor]] = None

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor): [B, T, D] -> [B, T, D] (x plus the positional term)."""
        if self.fast_path and inference_fast_path_ok(x):
            conv = self.conv
            y = grouped_conv_fft(x, self._spectrum(), conv.kernel_size[0], conv.padding[0])
            if conv.bias is not None:
                y += conv.bias
            return x + torch.ops.aten.gelu_(y)
        y = self.conv(x.transpose(1, 2))
        if self.num_remove:
            y = y[..., : -self.num_remove]
        return x + F.gelu(y).transpose(1, 2)

    def _spectrum(self) -> Tensor:
        """The weight's spectrum [G, F, D / G, D / G], recomputed only when a weight changed."""
        originals = self.conv.parametrizations.weight
        key = tuple((p.data_ptr(), p._version) for p in (originals.original0, originals.original1))
        if self._spectrum_cache is None or self._spectrum_cache[0] != key:
            n_fft = fft_size(self.conv.kernel_size[0])
            spectrum = grouped_conv_spectrum(self.conv.weight, self.conv.groups, n_fft)
            self._spectrum_cache = (key, spectrum)
        return self._spectrum_cache[1]


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (with biases)."""

    # Inference: keep the stacked q/k/v weights between calls. ``False``: restack every call (A/B).
    fast_path: bool = True

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self._qkv_cache: Optional[Tuple[tuple, Tensor, Tensor]] = None

    def _qkv_weights(self) -> Tuple[Tensor, Tensor]:
        """q, k, v weights [3D, D] and biases [3D] stacked for one GEMM (the parameters stay
        separate, named like torchaudio's); without autograd, cached until a weight changes."""
        params = [self.q_proj.weight, self.k_proj.weight, self.v_proj.weight,
                  self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]
        if torch.is_grad_enabled() or not self.fast_path:
            return torch.cat(params[:3]), torch.cat(params[3:])
        key = tuple((p.data_ptr(), p._version) for p in params)
        if self._qkv_cache is None or self._qkv_cache[0] != key:
            self._qkv_cache = (key, torch.cat(params[:3]), torch.cat(params[3:]))
        return self._qkv_cache[1], self._qkv_cache[2]

    def forward(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        """x (Tensor): [B, T, D]; mask: [B, 1, 1, T] bool (True = attend) or None -> [B, T, D]."""
        b, t, d = x.shape
        weight, bias = self._qkv_weights()
        qkv = F.linear(x, weight, bias).view(b, t, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, T, d_head]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    """Linear(D, F) -> GELU -> dropout -> Linear(F, D): [B, T, D] -> [B, T, D]."""

    def __init__(self, dim: int, ffn_dim: int, activation_dropout: float):
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, ffn_dim)
        self.output_dense = nn.Linear(ffn_dim, dim)
        self.activation_dropout = activation_dropout

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(self.intermediate_dense(x))
        x = F.dropout(x, self.activation_dropout, self.training)
        return self.output_dense(x)


class EncoderLayer(nn.Module):
    """One transformer layer, post-LN (HuBERT Base) or pre-LN (``layer_norm_first``).

    post-LN: x = LN(x + Attn(x)); x = LN_f(x + FFN(x))
    pre-LN:  x = x + Attn(LN(x)); x = x + FFN(LN_f(x))
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, layer_norm_first: bool,
                 dropout: float, attention_dropout: float, activation_dropout: float):
        super().__init__()
        self.attention = SelfAttention(dim, num_heads, attention_dropout)
        self.layer_norm = nn.LayerNorm(dim)
        self.feed_forward = FeedForward(dim, ffn_dim, activation_dropout)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = layer_norm_first
        self.dropout = dropout

    def forward(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        """x (Tensor): [B, T, D]; mask: [B, 1, 1, T] or None -> [B, T, D]."""
        drop = self.dropout if self.training else 0.0
        if self.layer_norm_first:
            x = x + F.dropout(self.attention(self.layer_norm(x), mask), drop, self.training)
            return x + F.dropout(self.feed_forward(self.final_layer_norm(x)), drop, self.training)
        x = self.layer_norm(x + F.dropout(self.attention(x, mask), drop, self.training))
        return self.final_layer_norm(x + F.dropout(self.feed_forward(x), drop, self.training))
