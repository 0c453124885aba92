"""Inference fast paths of the student equal the plain (nn.Conv1d) path to 1e-4.

* channels-last CNN: GEMMs (first layer, pointwise) or oneDNN on NHWC views, the first group
  norm folded into its GEMM, per utterance on valid samples (padding invariance kept);
* positional conv by FFT (overlap-save) with a cached weight spectrum;
* the cached stacked q/k/v weights;
and every cache follows weight changes. Each switch is ``fast_path`` (the benchmark's ``-nofast``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import s3prl_distill  # noqa: F401
from teachers_testutil import noise_batch
from s3prl_distill.models.cnn import FeatureExtractor, MaskedGroupNorm, conv1d_channels_last
from s3prl_distill.models.config import (
    CNNConfig,
    ConvLayerConfig,
    EncoderConfig,
    HeadConfig,
    StudentConfig,
)
from s3prl_distill.models.transformer import (
    ConvolutionalPositionalEmbedding,
    SelfAttention,
    fft_size,
    grouped_conv_fft,
    grouped_conv_spectrum,
)

TOL = 1e-4


def _set_fast(module: torch.nn.Module, on: bool) -> None:
    for sub in module.modules():
        if hasattr(sub, "fast_path"):
            sub.fast_path = on


_batch = noise_batch  # (lengths, seed=0) -> (wavs [B, S], lengths [B])


def _close(a, b, tol=TOL):
    """Equal to ``tol`` relative to b's scale (b is the plain path's output)."""
    return (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("c_in,c_out,kernel,stride", [
    (1, 16, 10, 5),    # first layer: im2col, one GEMM
    (40, 24, 3, 2),    # oneDNN on the NHWC view
    (40, 24, 2, 2),
    (40, 24, 1, 1),    # pointwise: one GEMM on the rows
    (40, 24, 1, 2),    # strided pointwise
    (40, 24, 2, 3),    # kernel < stride: samples skipped
    (48, 8, 5, 2),
])
@pytest.mark.parametrize("bias", [False, True])
def test_channels_last_conv_equals_conv1d(c_in, c_out, kernel, stride, bias):
    torch.manual_seed(0)
    x = torch.randn(1, c_in, 203)
    weight = torch.randn(c_out, c_in, kernel)
    b = torch.randn(c_out) if bias else None
    ref = F.conv1d(x, weight, b, stride=stride)[0].t()
    got = conv1d_channels_last(x[0].t().contiguous(), weight, b, stride)
    assert got.shape == ref.shape and got.is_contiguous()
    assert _close(got, ref)


def test_channels_last_conv_reads_a_view_at_its_offset():
    """A slice of a bigger tensor (one utterance of a batch) is read from its own start."""
    torch.manual_seed(1)
    big = torch.randn(300, 40)
    for kernel in (1, 3):
        weight = torch.randn(8, 40, kernel)
        part = big[50:250]
        ref = F.conv1d(part.t()[None], weight, stride=2)[0].t()
        assert _close(conv1d_channels_last(part, weight, None, 2), ref)
    wav = torch.randn(500)
    weight = torch.randn(8, 1, 10)
    ref = F.conv1d(wav[None, None, 100:400], weight, stride=5)[0].t()
    assert _close(conv1d_channels_last(wav[100:400, None], weight, None, 5), ref)


@pytest.mark.parametrize("bias", [False, True])
def test_group_norm_folded_into_the_conv_equals_conv_then_norm(bias):
    torch.manual_seed(2)
    conv = torch.nn.Conv1d(1, 16, 10, stride=5, bias=bias)
    norm = MaskedGroupNorm(16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.normal_()
    wav = 0.1 * torch.randn(1, 1, 4000) + 0.3  # a DC offset: the mean matters
    with torch.no_grad():
        ref = norm(conv(wav))[0].t()  # [T, C]
        windows = wav[0, 0].unfold(0, 10, 5)  # [T, K]
        weight = conv.weight[:, 0]  # [C, K]
        w, b = norm.fold_into_conv(windows, weight, conv.bias)
        got = windows @ w.t() + b
    assert _close(got, ref)


def _cnn(norm: str, bias: bool, spec=None) -> FeatureExtractor:
    spec = spec or [(8, 10, 5), (16, 1, 1), (16, 3, 2), (16, 3, 2), (24, 1, 1), (24, 2, 2), (24, 2, 2)]
    torch.manual_seed(3)
    cnn = FeatureExtractor(CNNConfig(layers=[ConvLayerConfig(*s) for s in spec], norm=norm, bias=bias))
    with torch.no_grad():  # non-trivial norm affine parameters
        for name, p in cnn.named_parameters():
            if "layer_norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return cnn.eval()


@pytest.mark.parametrize("norm,bias", [("group_norm_first", False), ("group_norm_first", True),
                                       ("layer_norm", True)])
def test_channels_last_cnn_equals_plain_on_a_padded_batch(norm, bias):
    cnn = _cnn(norm, bias)
    wavs, lens = _batch([6400, 3905, 2000, 6400], seed=4)
    with torch.inference_mode():
        got, got_len = cnn(wavs, lens)
        _set_fast(cnn, False)
        cnn.per_utterance = False  # the plain path on the whole padded batch
        ref, ref_len = cnn(wavs, lens)
    assert torch.equal(got_len, ref_len) and got.shape == ref.shape
    for i, n in enumerate(ref_len.tolist()):
        assert _close(got[i, :n], ref[i, :n])
        assert torch.all(got[i, n:] == 0)  # padded frames exactly zero


def test_channels_last_cnn_is_padding_invariant():
    cnn = _cnn("group_norm_first", False)
    wavs, lens = _batch([6400, 3905], seed=5)
    with torch.inference_mode():
        batch, batch_len = cnn(wavs, lens)
        alone, alone_len = cnn(wavs[1:, :3905], lens[1:])
    n = int(alone_len[0])
    assert int(batch_len[1]) == n
    assert _close(batch[1, :n], alone[0, :n], tol=1e-6)


def test_channels_last_cnn_only_without_autograd_and_autocast():
    """Training (autograd) and autocast run the nn.Conv1d path; the channels-last path is inference only."""
    cnn = _cnn("group_norm_first", False).train()
    wavs, lens = _batch([3200], seed=6)
    out, _ = cnn(wavs, lens)
    assert out.requires_grad
    with torch.no_grad():
        assert cnn._channels_last_ok(wavs)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast mixes dtypes: plain path
            assert not cnn._channels_last_ok(wavs)
    assert not cnn._channels_last_ok(wavs)


@pytest.mark.parametrize("kernel,groups,frames,batch", [(16, 4, 5, 1), (16, 4, 77, 2), (15, 3, 40, 1),
                                                        (128, 16, 300, 1)])
def test_fft_grouped_conv_equals_conv1d(kernel, groups, frames, batch):
    torch.manual_seed(7)
    dim = 48
    weight = torch.randn(dim, dim // groups, kernel) / kernel
    x = torch.randn(batch, frames, dim)
    pad = kernel // 2
    ref = F.conv1d(x.transpose(1, 2), weight, padding=pad, groups=groups)[..., :frames].transpose(1, 2)
    spectrum = grouped_conv_spectrum(weight, groups, fft_size(kernel))
    got = grouped_conv_fft(x, spectrum, kernel, pad)
    assert got.shape == ref.shape
    assert _close(got, ref)


def test_fft_size_leaves_more_than_half_the_block_valid():
    for kernel in (2, 15, 16, 128):
        n = fft_size(kernel)
        assert n & (n - 1) == 0 and n - kernel + 1 > n // 2


def test_positional_conv_fft_equals_plain_and_follows_weight_changes():
    torch.manual_seed(8)
    pos = ConvolutionalPositionalEmbedding(32, 16, 4).eval()
    x = torch.randn(2, 70, 32)
    for step in range(2):
        with torch.inference_mode():
            got = pos(x)
            pos.fast_path = False
            ref = pos(x)
            pos.fast_path = True
        assert _close(got, ref), step
        with torch.no_grad():  # e.g. an optimizer step or load_state_dict: the cache is stale
            for p in pos.parameters():
                p.mul_(1.5).add_(0.01)


def test_stacked_qkv_cache_follows_weight_changes():
    torch.manual_seed(9)
    attn = SelfAttention(32, 2, 0.0).eval()
    x = torch.randn(1, 9, 32)
    with torch.inference_mode():
        first = attn(x, None)
    with torch.no_grad():
        attn.k_proj.weight.mul_(2.0)
    with torch.inference_mode():
        got = attn(x, None)
        attn.fast_path = False
        ref = attn(x, None)
    assert not torch.allclose(first, ref)
    assert _close(got, ref, tol=1e-6)


@pytest.mark.parametrize("family", ["distilhubert", "fithubert"])
def test_student_fast_equals_plain_and_is_padding_invariant(family):
    from s3prl_distill.models import build_student

    spec = [(16, 10, 5), (16, 3, 2), (16, 3, 2), (24, 1, 1), (24, 2, 2), (24, 2, 2), (24, 2, 2)]
    tr = 2 if family == "fithubert" else 1
    cfg = StudentConfig(
        family=family, cnn=CNNConfig(layers=[ConvLayerConfig(*s) for s in spec], bias=False),
        encoder=EncoderConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=2, pos_conv_kernel=16,
                              pos_conv_groups=4),
        time_reduction=tr, heads=[HeadConfig(student_layer=2, teacher_layer=2,
                                             type="deconv_linear" if tr > 1 else "mlp")],
        teacher_dim=32, teacher_layers=2,
    )
    torch.manual_seed(10)
    student = build_student(cfg).eval()
    lengths = [16000, 9100, 5000]
    wavs, lens = _batch(lengths, seed=11)
    with torch.inference_mode():
        fast = student(wavs, lens, with_heads=False)
        alone = [student(wavs[i:i + 1, :n], lens[i:i + 1], with_heads=False) for i, n in enumerate(lengths)]
        _set_fast(student, False)
        student.feature_extractor.per_utterance = False
        plain = student(wavs, lens, with_heads=False)
    assert torch.equal(fast.lengths, plain.lengths)
    for i, n in enumerate(plain.lengths.tolist()):
        for f, p, a in zip(fast.hidden_states, plain.hidden_states, alone[i].hidden_states):
            assert _close(f[i, :n], p[i, :n])
            assert _close(a[0, :n], f[i, :n])


def test_group_norm_over_padding_on_every_path():
    """``group_norm_over_padding``: the first group norm takes its statistics over the padded batch
    (S3PRL's DistillerModel), so a padded utterance's features differ from its features alone, and
    the inference path (which otherwise runs each utterance alone) gives the training path's."""
    torch.manual_seed(0)
    layers = [ConvLayerConfig(16, 10, 5), ConvLayerConfig(16, 3, 2), ConvLayerConfig(16, 2, 2)]
    fe = FeatureExtractor(CNNConfig(layers=layers, group_norm_over_padding=True)).eval()
    masked = FeatureExtractor(CNNConfig(layers=layers)).eval()
    masked.load_state_dict(fe.state_dict())
    wavs, lens = _batch([3000, 1800])
    with torch.no_grad():
        fast, n = fe(wavs, lens)
        _set_fast(fe, False)
        plain, _ = fe(wavs, lens)
        x = wavs[:, None]  # the reference: the convs + a group norm over the whole padded batch
        for i, block in enumerate(fe.conv_layers):
            x = block.conv(x)
            if i == 0:
                x = F.group_norm(x, 16, block.layer_norm.weight, block.layer_norm.bias, block.layer_norm.eps)
            x = F.gelu(x)
        alone, _ = fe(wavs[1:, :1800], lens[1:])
        mine, _ = masked(wavs, lens)
    assert _close(fast, plain) and _close(plain, x.transpose(1, 2))
    t = int(n[1])
    assert not _close(plain[1, :t], alone[0], tol=1e-2)  # the padding changed the valid frames
    assert _close(mine[1, :t], alone[0])  # ours: it does not
    with pytest.raises(Exception, match="group_norm_over_padding"):
        from s3prl_distill.config import from_dict
        from_dict(CNNConfig, {"norm": "layer_norm", "group_norm_over_padding": True})
