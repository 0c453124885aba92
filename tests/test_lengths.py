"""The one module of length and padding rules (s3prl_distill.lengths)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from s3prl_distill.lengths import (ceil_div, conv_output_lengths, masked_group_norm, pad_waveforms,
                                   valid_mask, zero_padding)


def test_ceil_div_ints_and_tensors():
    assert [ceil_div(a, 3) for a in range(7)] == [0, 1, 1, 1, 2, 2, 2]
    t = torch.arange(7)
    assert ceil_div(t, 3).tolist() == [0, 1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("kernel,stride,padding", [(10, 5, 0), (3, 2, 0), (2, 2, 0), (3, 2, 1), (5, 1, 2)])
def test_conv_output_lengths_equal_torch_conv(kernel, stride, padding):
    conv = nn.Conv1d(1, 1, kernel, stride, padding)
    for n in [kernel - 1, kernel, kernel + 1, 17, 400]:
        if n + 2 * padding < kernel:
            assert conv_output_lengths(n, kernel, stride, padding) == 0
            continue
        frames = conv(torch.zeros(1, 1, n)).shape[-1]
        assert conv_output_lengths(n, kernel, stride, padding) == frames
        assert conv_output_lengths(torch.tensor([n]), kernel, stride, padding).tolist() == [frames]
    # shorter than the window: no valid frame (clamped, not negative)
    assert conv_output_lengths(torch.tensor([0, 1]), 10, 5).tolist() == [0, 0]


def test_valid_mask_and_zero_padding():
    lengths = torch.tensor([2, 4, 0])
    mask = valid_mask(lengths, 4)
    assert mask.tolist() == [[True, True, False, False], [True] * 4, [False] * 4]
    x = torch.ones(3, 4, 2)
    y = zero_padding(x, lengths)
    assert y.sum(dim=(1, 2)).tolist() == [4.0, 8.0, 0.0]


def test_masked_group_norm_equals_group_norm_on_each_utterance_alone():
    torch.manual_seed(0)
    norm = nn.GroupNorm(6, 6)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    lengths = torch.tensor([9, 5, 2])
    x = torch.randn(3, 6, 9)
    y = masked_group_norm(x, lengths, norm.weight, norm.bias, norm.eps)
    for b, n in enumerate(lengths.tolist()):
        alone = norm(x[b:b + 1, :, :n])
        assert torch.allclose(y[b:b + 1, :, :n], alone, atol=1e-5)
    # padding values do not change the valid frames
    x2 = x.clone()
    x2[1, :, 5:] = 1e3
    y2 = masked_group_norm(x2, lengths, norm.weight, norm.bias, norm.eps)
    assert torch.allclose(y2[1, :, :5], y[1, :, :5], atol=1e-5)
    # no lengths: plain GroupNorm(C, C)
    assert torch.allclose(masked_group_norm(x, None, norm.weight, norm.bias, norm.eps), norm(x), atol=1e-5)


def test_pad_waveforms():
    wavs, lengths = pad_waveforms([torch.ones(3), torch.ones(5) * 2, torch.ones(1)])
    assert wavs.shape == (3, 5) and lengths.tolist() == [3, 5, 1] and lengths.dtype == torch.long
    assert wavs[0].tolist() == [1, 1, 1, 0, 0] and wavs[2].tolist() == [1, 0, 0, 0, 0]
    wavs, _ = pad_waveforms([torch.ones(3)], multiple_of=4, pad_value=-1.0)
    assert wavs.tolist() == [[1, 1, 1, -1]]
    with pytest.raises(ValueError, match="at least one"):
        pad_waveforms([])
    with pytest.raises(ValueError, match=r"waveform 1 must be \[S\]"):
        pad_waveforms([torch.ones(3), torch.ones(2, 3)])
    with pytest.raises(ValueError, match="multiple_of"):
        pad_waveforms([torch.ones(3)], multiple_of=0)
