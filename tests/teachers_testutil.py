"""Helpers shared by tests/test_teachers_*.py: tiny random models and padded batches."""

from __future__ import annotations

from typing import List, Sequence

import torch

import s3prl_distill  # noqa: F401  (torchaudio shim)
from s3prl_distill.teachers.wav2vec2 import Wav2Vec2Arch, build_wav2vec2_model

#: the standard HuBERT CNN kernels/strides (320x) with tiny channel counts
TINY_CONV = [(32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 3, 2), (32, 3, 2), (32, 2, 2), (32, 2, 2)]


def tiny_arch(extractor_mode: str = "group_norm", layer_norm_first: bool = False, **kw) -> Wav2Vec2Arch:
    """2 layers x 64 dims, 4 heads, standard CNN kernels with 32 channels."""
    args = dict(
        extractor_mode=extractor_mode, conv_layers=list(TINY_CONV), conv_bias=False, embed_dim=64,
        pos_conv_kernel=16, pos_conv_groups=4, num_layers=2, num_heads=4, ffn_dim=128,
        layer_norm_first=layer_norm_first,
    )
    args.update(kw)
    return Wav2Vec2Arch(**args)


def tiny_model(arch: Wav2Vec2Arch, kind: str = "hubert", seed: int = 0) -> torch.nn.Module:
    """A random torchaudio model; LayerNorm/GroupNorm affine params randomised too."""
    torch.manual_seed(seed)
    model = build_wav2vec2_model(arch, kind)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def noise_batch(lengths: Sequence[int], seed: int = 0):
    """``(wavs [B, S], lengths [B])`` of white noise (std 0.1), zero-padded."""
    gen = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wavs[i, :n] = 0.1 * torch.randn(n, generator=gen)
    return wavs, torch.tensor(list(lengths))


def padded_batch(lengths: Sequence[int], seed: int = 1):
    """``(wavs [B, S], lengths [B])`` of noise-and-tone, zero-padded."""
    g = torch.Generator().manual_seed(seed)
    total = max(lengths)
    wavs = torch.zeros(len(lengths), total)
    for i, n in enumerate(lengths):
        t = torch.arange(n) / 16000.0
        wavs[i, :n] = 0.3 * torch.sin(2 * torch.pi * (150 + 50 * i) * t) + 0.1 * torch.randn(n, generator=g)
    return wavs, torch.tensor(list(lengths))


def assert_valid_close(hidden: List[torch.Tensor], lengths: torch.Tensor, reference: List[torch.Tensor],
                       b: int, atol: float = 1e-4) -> None:
    """hidden[i][b, :lengths[b]] == reference[i][0, :lengths[b]] for every layer i."""
    assert len(hidden) == len(reference), (len(hidden), len(reference))
    n = int(lengths[b])
    for i, (h, r) in enumerate(zip(hidden, reference)):
        assert r.shape[1] >= n, (i, r.shape, n)
        diff = (h[b, :n] - r[0, :n]).abs().max().item()
        assert diff <= atol, f"layer {i}, item {b}: max abs diff {diff}"
