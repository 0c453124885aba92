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

from s3prl_distill.lengths import valid_mask
# the inference kernels live in models/fast.py (shared with the teachers); re-exported here
from s3prl_distill.models.fast import (DerivedCache, attention_stacked_qkv, exporting,  # noqa: F401
                                       fft_size, grouped_conv_fft, grouped_conv_spectrum,
                                       inference_fast_path_ok, positional_conv_fft, stacked_qkv)

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
        self._spectrum_cache = DerivedCache()

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor): [B, T, D] -> [B, T, D] (x plus the positional term)."""
        if self.fast_path and inference_fast_path_ok(x):
            return x + positional_conv_fft(self.conv, x, self._spectrum_cache)
        y = self.conv(x.transpose(1, 2))
        if self.num_remove:
            y = y[..., : -self.num_remove]
        return x + F.gelu(y).transpose(1, 2)


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
        self._qkv_cache = DerivedCache()

    def _qkv_weights(self) -> Tuple[Tensor, Tensor]:
        """q, k, v weights [3D, D] and biases [3D] stacked for one GEMM (the parameters stay
        separate, named like torchaudio's); without autograd, cached until a weight changes."""
        if torch.is_grad_enabled() or not self.fast_path:
            return stacked_qkv(self.q_proj, self.k_proj, self.v_proj)
        return stacked_qkv(self.q_proj, self.k_proj, self.v_proj, self._qkv_cache)

    def forward(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        """x (Tensor): [B, T, D]; mask: [B, 1, 1, T] bool (True = attend) or None -> [B, T, D]."""
        weight, bias = self._qkv_weights()
        return attention_stacked_qkv(x, weight, bias, self.out_proj, self.num_heads, mask,
                                     self.dropout if self.training else 0.0)


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
