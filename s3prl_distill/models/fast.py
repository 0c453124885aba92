"""Inference fast-path kernels shared by the students (:mod:`.cnn`, :mod:`.transformer`) and the
teachers (:mod:`s3prl_distill.teachers.wav2vec2`, :mod:`s3prl_distill.teachers.whisper`).

Every function computes exactly what the plain module computes (to float rounding, tested in
``tests/test_models_fast_paths.py`` and ``tests/test_teachers_fast_paths.py``) and is written for
inference only: no autograd, CPU, no autocast (:func:`inference_fast_path_ok`). The module-level
functions take the *modules* they speed up and read only attributes that our students' modules
and torchaudio's ``Wav2Vec2Model`` modules share by design (``conv``, ``stride``, ``layer_norm``
of a conv block; ``conv`` of the positional embedding; ``q_proj`` / ``k_proj`` / ``v_proj`` /
``out_proj`` / ``num_heads`` of attention), so one kernel serves both.

Kernels (measured figures: docs/benchmark.md):

* channels-last CNN (:func:`conv_stack_channels_last`): every utterance alone on its valid
  samples, activations ``[T, C]`` from the waveform to the last conv; the first conv (1 -> C,
  kernel 10) as an im2col GEMM with its per-channel group norm folded into the GEMM's weights and
  bias (:func:`fold_group_norm`), pointwise convs as GEMMs, the other convs on oneDNN through the
  ``[1, C, 1, T]`` NHWC view (:func:`conv1d_channels_last`), GELU in place;
* grouped positional conv by FFT, overlap-save (:func:`grouped_conv_fft`), with the weight's
  spectrum cached until a weight changes (:class:`DerivedCache`);
* one GEMM for the stacked q / k / v projections, cached until a weight changes
  (:func:`stacked_qkv`, :func:`attention_stacked_qkv`);
* attention over valid frames only (:func:`attention_packed`: utterances concatenated, or one
  alone - the teachers run each utterance alone, so no work is done on padding and an
  utterance's outputs do not depend on what it is batched with);
* the feed-forward's GELU in place (:func:`feed_forward_inplace`).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_distill.lengths import ceil_div

__all__ = [
    "exporting", "inference_fast_path_ok", "SMALL_WINDOW", "gemm_weight", "conv_windows", "conv1d_channels_last",
    "fold_group_norm", "group_norm_channels_last", "conv_block_channels_last",
    "conv_stack_channels_last", "DerivedCache", "weight_sources", "fft_size",
    "grouped_conv_spectrum", "grouped_conv_fft", "positional_conv_fft", "stacked_qkv",
    "attention_stacked_qkv", "feed_forward_inplace", "nhwc_weight", "attention_packed",
]


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


# ---------------------------------------------------------------------------------------------
# channels-last CNN
# ---------------------------------------------------------------------------------------------
# Windows of at most this many values (K * C_in) are copied out (im2col) and run as one GEMM.
SMALL_WINDOW = 64


def gemm_weight(weight: Tensor) -> Tensor:
    """Conv weight [C_out, C_in, K] -> [C_out, K * C_in], matching channels-last windows."""
    return weight.permute(0, 2, 1).reshape(weight.shape[0], -1)


def conv_windows(x: Tensor, kernel: int, stride: int, ones_column: bool = False) -> Tensor:
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


def nhwc_weight(weight: Tensor) -> Tensor:
    """Conv weight [C_out, C_in, K] -> the [C_out, C_in, 1, K] channels-last copy oneDNN's NHWC
    convolution takes (:func:`conv1d_channels_last`)."""
    return weight[:, :, None, :].contiguous(memory_format=torch.channels_last)


def conv1d_channels_last(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int,
                         nhwc: Optional[Tensor] = None) -> Tensor:
    """Conv1d without padding on channels-last activations, kept channels last.

    Small windows (the first layer's 10 samples): im2col + one GEMM; pointwise: one GEMM on the
    (strided) rows; otherwise oneDNN's convolution on the [1, C, 1, T] NHWC view of ``x`` (its
    output is NHWC, i.e. [T', C_out] again). Measured on this project's 2-core AVX2 CPU (10 s
    input, interleaved, load ~4): pointwise 128 -> 256 GEMM 1.7-2.2x nn.Conv1d, first layer 1.7-2.2x
    (with its group norm folded in, :func:`fold_group_norm`), 3-tap / 2-tap 512-
    and 256-channel convs NHWC 0.97-1.4x; the same convs as sums of strided GEMMs were 0.86-1.25x,
    so they are not used.

    Args:
        x (Tensor): [T, C_in] contiguous, T >= K.
        weight (Tensor): [C_out, C_in, K]; bias: [C_out] or None.
        nhwc: :func:`nhwc_weight` of ``weight`` if the caller keeps it (else copied per call).
    Returns:
        Tensor: [T', C_out] contiguous, ``T' = (T - K) // stride + 1``.
    """
    c_out, c_in, kernel = weight.shape
    if c_in * kernel <= SMALL_WINDOW or kernel == 1:
        rows = conv_windows(x, kernel, stride) if kernel > 1 or stride > 1 else x
        w = gemm_weight(weight).t()  # [K * C_in, C_out]
        return torch.mm(rows, w) if bias is None else torch.addmm(bias, rows, w)
    if nhwc is None:
        nhwc = nhwc_weight(weight)
    y = F.conv2d(x.t()[None, :, None, :], nhwc, bias, stride=(1, stride))  # [1, C_out, 1, T']
    return y[0, :, 0, :].t().contiguous()  # a no-op: the output is NHWC


def _per_channel_group_norm(norm: Optional[nn.Module]) -> bool:
    """``GroupNorm(C, C)``: HuBERT's first-layer norm (ours: ``MaskedGroupNorm``, a subclass)."""
    return isinstance(norm, nn.GroupNorm) and norm.num_groups == norm.num_channels


def fold_group_norm(norm: nn.GroupNorm, windows: Tensor, weight: Tensor,
                    bias: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """Fold a per-channel group norm into the conv it follows: ``GN(windows @ weight.T + bias)``
    as one GEMM.

    The conv output is linear in its windows, so its per-channel mean and variance over the
    frames follow from the windows' mean and covariance (centred; the small products in
    float64):
    ``mean = mu @ W.T + b``, ``var_c = w_c^T Cov w_c``. Then
    ``GN(y) = windows @ (W * s).T + (beta - (mu @ W.T) * s)`` with ``s = gamma / sqrt(var + eps)``.

    Args:
        norm: ``GroupNorm(C, C)`` with affine parameters (its weight, bias and eps are used).
        windows (Tensor): [T, K * C_in], every frame of one utterance.
        weight (Tensor): [C_out, K * C_in] (:func:`gemm_weight` layout); bias: [C_out] or None.
    Returns:
        (weight [C_out, K * C_in], bias [C_out]) of the fused GEMM, in ``windows``' dtype.
    """
    w64 = weight.double()
    mu = windows.mean(0)  # [K * C_in]
    centred = windows - mu
    cov = (centred.t() @ centred).double() / windows.shape[0]  # [K * C_in, K * C_in]
    mu = mu.double()
    var = ((w64 @ cov) * w64).sum(1)  # [C_out]
    scale = norm.weight.double() * torch.rsqrt(var + norm.eps)
    shift = norm.bias.double() - (w64 @ mu) * scale  # the conv bias cancels in y - mean
    return (w64 * scale[:, None]).to(windows.dtype), shift.to(windows.dtype)


def group_norm_channels_last(norm: nn.GroupNorm, y: Tensor) -> Tensor:
    """A per-channel group norm over one utterance, every frame valid: y [T, C] -> [T, C] (in place)."""
    var, mean = torch.var_mean(y, dim=0, unbiased=False)
    scale = torch.rsqrt(var + norm.eps) * norm.weight
    return y.sub_(mean).mul_(scale).add_(norm.bias)


def conv_block_channels_last(conv: nn.Conv1d, stride: int, norm: Optional[nn.Module], x: Tensor,
                             cache: Optional["DerivedCache"] = None) -> Tensor:
    """Conv (no padding) -> optional norm -> GELU on one utterance, every frame valid, no autograd:
    x [T, C_in] -> [T', C_out] (contiguous).

    Conv by :func:`conv1d_channels_last`; a per-channel group norm after a small window
    (``K * C_in <= SMALL_WINDOW``) is folded into the GEMM's weights and bias
    (:func:`fold_group_norm`); a LayerNorm (over channels: wav2vec 2.0 Large) on the rows; GELU
    in place.

    Args:
        conv: the block's ``nn.Conv1d`` (weight [C_out, C_in, K], bias or None).
        stride: its stride.
        norm: ``None``, a ``GroupNorm(C, C)`` or a LayerNorm over C.
        cache: keeps the conv's NHWC weight between calls (else re-laid out per call).
    """
    weight, bias = conv.weight, conv.bias
    kernel = weight.shape[-1]
    small = weight.shape[1] * kernel <= SMALL_WINDOW
    if _per_channel_group_norm(norm) and small:
        windows = conv_windows(x, kernel, stride, ones_column=True)  # [T', K*C_in + 1]
        w2d, b = fold_group_norm(norm, windows[:, :-1], gemm_weight(weight), bias)
        # the bias rides in the GEMM on the column of ones: no separate pass over the output
        y = torch.mm(windows, torch.cat([w2d, b[:, None]], 1).t())
    else:
        nhwc = None
        if cache is not None and weight.shape[1] * kernel > SMALL_WINDOW and kernel > 1:
            nhwc = cache.get((weight,), lambda: nhwc_weight(weight))
        y = conv1d_channels_last(x, weight, bias, stride, nhwc)
        if _per_channel_group_norm(norm):
            y = group_norm_channels_last(norm, y)
        elif isinstance(norm, nn.LayerNorm):  # a LayerNorm over C
            y = F.layer_norm(y, y.shape[-1:], norm.weight, norm.bias, norm.eps)
        elif norm is not None:
            raise TypeError(f"conv_block_channels_last: unsupported norm {type(norm).__name__}")
    return torch.ops.aten.gelu_(y)


def conv_stack_channels_last(blocks: Sequence[nn.Module], wavs: Tensor, wav_lengths: Tensor,
                             lengths: Tensor, channels: int,
                             caches: Optional[Sequence["DerivedCache"]] = None) -> Tensor:
    """The whole conv stack, each utterance alone on its valid samples, channels last.

    Args:
        blocks: conv blocks with ``conv``, ``stride`` and ``layer_norm`` (ours or torchaudio's).
        wavs (Tensor): [B, S]; wav_lengths (Tensor): [B] valid samples (each >= the receptive field).
        lengths (Tensor): [B] valid output frames (the conv arithmetic of ``wav_lengths``).
        channels: C of the last block.
        caches: one :class:`DerivedCache` per block for its NHWC weight (optional).
    Returns:
        Tensor: [B, max(lengths), C]; padded frames are 0.
    """
    out = wavs.new_zeros(wavs.shape[0], int(lengths.max()), channels)
    caches = list(caches) if caches is not None else [None] * len(blocks)
    for b, n in enumerate(wav_lengths.tolist()):
        y = wavs[b, :n, None]  # [S, 1]
        for block, cache in zip(blocks, caches):
            y = conv_block_channels_last(block.conv, block.stride, block.layer_norm, y, cache)
        out[b, : y.shape[0]] = y
    return out


# ---------------------------------------------------------------------------------------------
# caches of derived weights
# ---------------------------------------------------------------------------------------------
def weight_sources(conv: nn.Module) -> Tuple[Tensor, ...]:
    """The tensors a conv's effective weight is computed from: the weight-norm parametrization's
    originals when there is one, else the weight itself."""
    parametrizations = getattr(conv, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        originals = parametrizations.weight
        return tuple(p for p in (getattr(originals, "original0", None), getattr(originals, "original1", None))
                     if p is not None)
    return (conv.weight,)


class DerivedCache:
    """One value derived from some tensors (a weight's spectrum, stacked weights), recomputed only
    when one of them changed: keyed by each tensor's storage, version counter, dtype and device
    (an optimizer step, ``load_state_dict``, ``.to(dtype)`` or ``.to(device)`` all change it)."""

    def __init__(self) -> None:
        self._key: Optional[tuple] = None
        self._value: Any = None

    def get(self, sources: Sequence[Tensor], compute: Callable[[], Any]) -> Any:
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in sources)
        if self._key != key:
            self._value = compute()
            self._key = key
        return self._value

    def clear(self) -> None:
        self._key, self._value = None, None


# ---------------------------------------------------------------------------------------------
# positional conv by FFT
# ---------------------------------------------------------------------------------------------
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


def positional_conv_fft(conv: nn.Conv1d, x: Tensor, cache: DerivedCache) -> Tensor:
    """GELU(conv(x)) of wav2vec 2.0's positional conv ("same" padding, the extra frame of an even
    kernel dropped) by FFT: x [B, T, D] -> the positional term [B, T, D] (the caller adds x).

    Padded frames of ``x`` must be zero (they then read like the conv's own zero padding). The
    FFT runs in float32 (``torch.fft`` has no bfloat16 on CPU); the result has ``x``'s dtype.

    Args:
        conv: the grouped ``nn.Conv1d`` (weight-normed or not; ours or torchaudio's).
        cache: holds the weight's spectrum until a weight changes.
    """
    kernel, groups = conv.kernel_size[0], conv.groups

    def spectrum() -> Tensor:
        return grouped_conv_spectrum(conv.weight.float(), groups, fft_size(kernel))

    y = grouped_conv_fft(x.float(), cache.get(weight_sources(conv), spectrum), kernel, conv.padding[0])
    if conv.bias is not None:
        y += conv.bias
    return torch.ops.aten.gelu_(y).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# attention and feed-forward
# ---------------------------------------------------------------------------------------------
def stacked_qkv(q_proj: nn.Linear, k_proj: nn.Linear, v_proj: nn.Linear,
                cache: Optional[DerivedCache] = None) -> Tuple[Tensor, Tensor]:
    """q, k, v weights [3D, D] and biases [3D] stacked for one GEMM; a missing bias (Whisper's
    key) is zero. With ``cache`` (inference only), kept until a weight changes."""
    projections = (q_proj, k_proj, v_proj)

    def stack() -> Tuple[Tensor, Tensor]:
        biases = [p.bias if p.bias is not None else p.weight.new_zeros(p.weight.shape[0]) for p in projections]
        return torch.cat([p.weight for p in projections]), torch.cat(biases)

    if cache is None:
        return stack()
    sources = [p.weight for p in projections] + [p.bias for p in projections if p.bias is not None]
    return cache.get(sources, stack)


def attention_stacked_qkv(x: Tensor, weight: Tensor, bias: Tensor, out_proj: nn.Linear, num_heads: int,
                          mask: Optional[Tensor], dropout_p: float = 0.0) -> Tensor:
    """Multi-head self-attention with one GEMM for q, k, v and SDPA.

    Args:
        x (Tensor): [B, T, D]; weight [3D, D], bias [3D] from :func:`stacked_qkv`.
        mask (Tensor): [B, 1, 1, T] bool (True = attend) or None (nothing padded).
    Returns:
        Tensor: [B, T, D] (after ``out_proj``).
    """
    b, t, d = x.shape
    qkv = F.linear(x, weight, bias).view(b, t, 3, num_heads, d // num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, T, d_head]
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return out_proj(y.transpose(1, 2).reshape(b, t, d))


def attention_packed(x: Tensor, weight: Tensor, bias: Tensor, out_proj: nn.Linear, num_heads: int,
                     splits: Sequence[int]) -> Tensor:
    """Self-attention over utterances concatenated along time (valid frames only): one GEMM for
    q/k/v and one for the output over all rows, SDPA per utterance on its own frames (no mask;
    one batched call when every utterance has the same length).

    Args:
        x (Tensor): [N, D], ``N = sum(splits)``; weight [3D, D], bias [3D] (:func:`stacked_qkv`).
        splits: frames of each utterance, in order.
    Returns:
        Tensor: [N, D].
    """
    n, d = x.shape
    qkv = F.linear(x, weight, bias)  # [N, 3D]
    if len(set(splits)) == 1:  # equal lengths: one call over [B, H, T, d_head]
        b, t = len(splits), splits[0]
        q, k, v = qkv.view(b, t, 3, num_heads, d // num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, d)
    else:
        outs = []
        for chunk in qkv.split(list(splits)):
            t = chunk.shape[0]
            q, k, v = chunk.view(1, t, 3, num_heads, d // num_heads).permute(2, 0, 3, 1, 4).unbind(0)
            outs.append(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(t, d))
        y = torch.cat(outs)
    return out_proj(y)


def feed_forward_inplace(x: Tensor, fc1: nn.Linear, fc2: nn.Linear) -> Tensor:
    """fc2(GELU(fc1(x))) with the GELU in place on fc1's output (no second [B, T, F] tensor)."""
    return fc2(torch.ops.aten.gelu_(fc1(x)))
