"""Building blocks: conv arithmetic, norms, attention, layers, time reduction, heads, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import s3prl_distill  # noqa: F401
from s3prl_distill.config import from_dict
from s3prl_distill.models import StudentConfig, build_student
from s3prl_distill.lengths import conv_output_lengths
from s3prl_distill.models.cnn import MaskedGroupNorm
from s3prl_distill.models.config import FITHUBERT_CNN, TEACHER_CNN, CNNConfig, ConvLayerConfig
from s3prl_distill.models.heads import DeconvLinearHead, MLPHead, fit_frames
from s3prl_distill.models.time_reduction import TimeReduction, reduced_lengths
from s3prl_distill.models.transformer import EncoderLayer, SelfAttention, key_padding_mask


def test_conv_arithmetic_of_published_front_ends():
    teacher = CNNConfig(layers=[ConvLayerConfig(*c) for c in TEACHER_CNN])
    fit = CNNConfig(layers=[ConvLayerConfig(*c) for c in FITHUBERT_CNN])
    assert (teacher.stride, teacher.receptive_field) == (320, 400)
    assert (fit.stride, fit.receptive_field) == (320, 400)
    lengths = torch.tensor([400, 16000, 16319, 16320, 16400, 399])
    for cfg in (teacher, fit):
        out = lengths
        for layer in cfg.layers:
            out = conv_output_lengths(out, layer.kernel, layer.stride)
        # both give HuBERT's frame counts (1 s -> 49 frames), hand-computed layer by layer
        assert out.tolist() == [1, 49, 50, 50, 51, 0]


def test_masked_group_norm_equals_group_norm_on_valid_frames():
    torch.manual_seed(0)
    norm = MaskedGroupNorm(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(3, 6, 40) * 3 + 2
    lengths = torch.tensor([40, 17, 2])
    y = norm(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        ref = F.group_norm(x[b : b + 1, :, :n], 6, norm.weight, norm.bias, norm.eps)
        assert torch.allclose(y[b : b + 1, :, :n], ref, atol=1e-5)
    assert torch.allclose(norm(x, torch.tensor([40, 40, 40])), F.group_norm(x, 6, norm.weight, norm.bias))


def test_attention_matches_reference_and_masks_keys():
    torch.manual_seed(0)
    att = SelfAttention(8, 2, dropout=0.0).eval()
    x = torch.randn(2, 5, 8)
    lengths = torch.tensor([5, 3])
    mask = key_padding_mask(lengths, 5)
    assert key_padding_mask(torch.tensor([5, 5]), 5) is None
    y = att(x, mask)

    def reference(xb, n):
        q = att.q_proj(xb).view(-1, 2, 4).transpose(0, 1)
        k = att.k_proj(xb[:n]).view(-1, 2, 4).transpose(0, 1)
        v = att.v_proj(xb[:n]).view(-1, 2, 4).transpose(0, 1)
        w = torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1)
        return att.out_proj((w @ v).transpose(0, 1).reshape(-1, 8))

    for b, n in enumerate(lengths.tolist()):
        assert torch.allclose(y[b], reference(x[b], n), atol=1e-5)


@pytest.mark.parametrize("pre_ln", [False, True])
def test_encoder_layer_formula(pre_ln):
    torch.manual_seed(0)
    layer = EncoderLayer(8, 12, 2, pre_ln, 0.1, 0.1, 0.1).eval()
    x = torch.randn(1, 4, 8)
    a = lambda h: layer.attention(h, None)  # noqa: E731
    f = layer.feed_forward
    if pre_ln:
        h = x + a(layer.layer_norm(x))
        ref = h + f(layer.final_layer_norm(h))
    else:
        h = layer.layer_norm(x + a(x))
        ref = layer.final_layer_norm(h + f(h))
    assert torch.allclose(layer(x, None), ref, atol=1e-6)


def test_time_reduction_lengths_and_shapes():
    tr = TimeReduction(4, 3)
    x = torch.randn(2, 10, 4)
    y, lengths = tr(x, torch.tensor([10, 7]))
    assert y.shape == (2, 4, 4) and lengths.tolist() == [4, 3]
    assert reduced_lengths(torch.tensor([1, 2, 3, 4]), 2).tolist() == [1, 1, 2, 2]
    with pytest.raises(ValueError, match="stride >= 2"):
        TimeReduction(4, 1)


def test_heads_restore_teacher_frames():
    head = DeconvLinearHead(4, 6, stride=2)
    x = torch.randn(2, 5, 4)
    assert head(x, 9).shape == (2, 9, 6)  # 10 upsampled frames trimmed to 9
    assert head(x, 12).shape == (2, 12, 6)  # zero-padded
    assert MLPHead(4, 8, 6)(x, 5).shape == (2, 5, 6)
    y = fit_frames(x, 7)
    assert torch.equal(y[:, 5:], torch.zeros(2, 2, 4)) and torch.equal(y[:, :5], x)


def test_gradients_reach_every_parameter_and_cnn_scale():
    cfg = from_dict(StudentConfig, {
        "cnn": {"layers": [{"channels": 4, "kernel": 10, "stride": 5}, {"channels": 4, "kernel": 1, "stride": 1}]},
        "encoder": {"dim": 8, "ffn_dim": 8, "num_heads": 2, "num_layers": 2, "pos_conv_kernel": 4,
                    "pos_conv_groups": 2, "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0},
        "time_reduction": 2, "teacher_dim": 6, "teacher_layers": 2,
        "heads": [{"student_layer": i, "teacher_layer": i, "type": "deconv_linear"} for i in (1, 2)],
    }, where="test")
    grads = {}
    for mult in (1.0, 0.1):
        cfg.feature_grad_mult = mult
        torch.manual_seed(0)
        model = build_student(cfg).train()
        out = model(torch.randn(2, 300), torch.tensor([300, 200]))
        sum(p.pow(2).mean() for p in out.predictions).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
        assert not missing, missing
        grads[mult] = model.feature_extractor.conv_layers[0].conv.weight.grad.clone()
    assert torch.allclose(grads[0.1], grads[1.0] * 0.1, atol=1e-7)


def test_zero_grad_mult_freezes_the_cnn_without_a_graph():
    cfg = from_dict(StudentConfig, {
        "cnn": {"layers": [{"channels": 4, "kernel": 10, "stride": 5}]},
        "encoder": {"dim": 8, "ffn_dim": 8, "num_heads": 2, "num_layers": 1, "pos_conv_kernel": 0},
        "teacher_dim": 8, "teacher_layers": 1, "feature_grad_mult": 0.0,
        "heads": [{"student_layer": 1, "teacher_layer": 1, "type": "linear"}],
    }, where="test")
    model = build_student(cfg).train()
    feats, _ = model.feature_extractor(torch.randn(2, 100), torch.tensor([100, 60]))
    assert not feats.requires_grad
    model(torch.randn(2, 100), torch.tensor([100, 60])).predictions[0].sum().backward()
    assert model.feature_extractor.conv_layers[0].conv.weight.grad is None
    assert model.heads[0].proj.weight.grad is not None
