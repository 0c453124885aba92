"""MAC counts checked against values computed by hand on small layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import s3prl_distill  # noqa: F401  (torchaudio shim)
from s3prl_distill.macs import MacCounter, count_macs, count_macs_fn, format_macs


def test_linear_with_and_without_bias():
    x = torch.zeros(2, 5, 4)
    # 2*5 rows x 4 inputs x 3 outputs; bias adds are not MACs
    assert count_macs(nn.Linear(4, 3), x).total == 2 * 5 * 4 * 3
    assert count_macs(nn.Linear(4, 3, bias=False), x).total == 2 * 5 * 4 * 3


def test_conv1d_stride_groups():
    conv = nn.Conv1d(4, 6, kernel_size=3, stride=2, groups=2)
    x = torch.zeros(2, 4, 11)
    t_out = (11 - 3) // 2 + 1  # 5
    assert count_macs(conv, x).total == 2 * 6 * t_out * (4 // 2) * 3


def test_conv1d_padding_same_and_transposed():
    conv = nn.Conv1d(3, 5, kernel_size=4, padding="same", bias=False)
    assert count_macs(conv, torch.zeros(1, 3, 9)).total == 5 * 9 * 3 * 4
    deconv = nn.ConvTranspose1d(4, 6, kernel_size=2, stride=2)
    # every input element (4 ch x 5 steps) feeds 6 outputs x 2 taps
    assert count_macs(deconv, torch.zeros(1, 4, 5)).total == 4 * 5 * 6 * 2


def test_conv2d():
    conv = nn.Conv2d(2, 3, kernel_size=(3, 3), padding=1)
    assert count_macs(conv, torch.zeros(1, 2, 4, 4)).total == 3 * 4 * 4 * 2 * 9


@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_counts_both_products(masked):
    q = torch.zeros(2, 3, 7, 8)
    k = torch.zeros(2, 3, 9, 8)
    v = torch.zeros(2, 3, 9, 5)
    mask = torch.ones(2, 1, 7, 9, dtype=torch.bool) if masked else None
    got = count_macs_fn(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)).total
    assert got == 2 * 3 * 7 * 9 * (8 + 5)


def test_matmul_einsum_mv():
    a, b = torch.zeros(2, 5, 4), torch.zeros(4, 3)
    assert count_macs_fn(lambda: torch.einsum("btd,de->bte", a, b)).total == 2 * 5 * 4 * 3
    assert count_macs_fn(lambda: a @ b).total == 2 * 5 * 4 * 3
    assert count_macs_fn(lambda: torch.zeros(3, 4) @ torch.zeros(4)).total == 12
    assert count_macs_fn(lambda: torch.bmm(torch.zeros(2, 3, 4), torch.zeros(2, 4, 5))).total == 120


@pytest.mark.parametrize("train", [False, True])
def test_multihead_attention_fast_and_slow_paths(train):
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    mha.train(train)
    x = torch.zeros(2, 5, 8)
    # q, k, v and out projections + QK^T + AV
    expected = 4 * (2 * 5) * 8 * 8 + 2 * (2 * 5 * 5 * 8)
    assert count_macs(mha, x, x, x, need_weights=False).total == expected


def test_elementwise_ops_are_free():
    block = nn.Sequential(nn.LayerNorm(4), nn.GELU(), nn.Softmax(-1), nn.Dropout(0.1))
    assert count_macs(block, torch.zeros(2, 3, 4)).total == 0


def test_module_breakdown_and_prefix():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Sequential(nn.Linear(6, 2)))
    result = count_macs(model, torch.zeros(3, 4))
    assert result.by_module == {"0": 3 * 4 * 6, "2.0": 3 * 6 * 2}
    assert result.by_prefix(1) == {"0": 72, "2": 36}
    assert result.total == sum(result.by_op.values()) == 108


def test_counter_accumulates_over_calls_and_removes_hooks():
    layer = nn.Linear(4, 3)
    with torch.inference_mode(), MacCounter(layer) as counter:
        layer(torch.zeros(1, 4))
        layer(torch.zeros(2, 4))
    assert counter.result().total == 3 * 4 * 3
    assert not layer._forward_hooks and not layer._forward_pre_hooks


def test_small_wav2vec2_by_hand():
    """A 1-conv, 1-layer torchaudio wav2vec2 model: every product counted by hand."""
    from torchaudio.models import wav2vec2_model

    model = wav2vec2_model(
        extractor_mode="group_norm", extractor_conv_layer_config=[(8, 10, 5)],
        extractor_conv_bias=False, encoder_embed_dim=16, encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=4, encoder_pos_conv_groups=2, encoder_num_layers=1,
        encoder_num_heads=2, encoder_attention_dropout=0.0, encoder_ff_interm_features=32,
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False,
        encoder_layer_drop=0.0, aux_num_out=None,
    ).eval()
    samples = 1000
    t = (samples - 10) // 5 + 1  # 199 frames
    cnn = 8 * t * 1 * 10
    projection = t * 8 * 16
    # pos conv: padding 2, kernel 4 -> t+1 outputs (one removed after), groups 2
    pos = 16 * (t + 1) * (16 // 2) * 4
    attention = 4 * t * 16 * 16 + 2 * t * t * 16
    ffn = 2 * t * 16 * 32
    got = count_macs(model, torch.zeros(1, samples)).total
    assert got == cnn + projection + pos + attention + ffn


def test_format_macs():
    assert format_macs(12.34e9) == "12.3 G"
    assert format_macs(5e5) == "500.0 K"
    assert format_macs(12) == "12"


def test_complex_products_and_ffts():
    a = torch.randn(3, 4, dtype=torch.complex64)
    b = torch.randn(4, 5, dtype=torch.complex64)
    assert count_macs_fn(lambda: a @ b).total == 4 * 3 * 4 * 5  # 4 real MACs per complex MAC
    x = torch.randn(6, 256)
    assert count_macs_fn(lambda: torch.fft.rfft(x, dim=-1)).total == 6 * 256 * 8
    spec = torch.fft.rfft(x, dim=-1)
    assert count_macs_fn(lambda: torch.fft.irfft(spec, n=256, dim=-1)).total == 6 * 256 * 8
    assert count_macs_fn(lambda: torch.fft.fft(a, dim=-1)).total == 2 * 12 * 2


def test_fft_positional_conv_counts_far_fewer_macs_than_the_conv():
    from s3prl_distill.models.transformer import ConvolutionalPositionalEmbedding

    pos = ConvolutionalPositionalEmbedding(96, 128, 16).eval()
    x = torch.randn(1, 500, 96)
    fast = count_macs_fn(lambda: pos(x)).total
    pos.fast_path = False
    conv = count_macs_fn(lambda: pos(x)).total
    assert conv == 501 * 96 * 6 * 128  # T + 1 outputs, the last dropped
    assert 0 < fast < conv / 5
