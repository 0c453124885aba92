"""Distillation losses: hand-computed values, padding invariance, gradients, config parsing."""

from __future__ import annotations

import math

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.config import ConfigError, from_dict
from s3prl_distill.distill.config import LossConfig
from s3prl_distill.distill.losses import (
    DistilHuBERTLoss,
    FitHuBERTLoss,
    build_loss,
    masked_mean,
)

PRED = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # [1, 2, 2]
TARGET = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
ALL = torch.ones(1, 2, dtype=torch.bool)


def nls(x: float) -> float:
    """-log sigmoid(x)"""
    return math.log1p(math.exp(-x))


def test_distilhubert_hand_computed():
    loss = DistilHuBERTLoss([4], cos_weight=1.0)
    total, terms = loss([PRED], [TARGET], ALL)
    # frame 0: identical -> L1 0, cos 1; frame 1: L1 (1 + 1) / 2 = 1, cos 0
    assert terms["l1/layer4"].item() == pytest.approx(0.5)
    assert terms["cos/layer4"].item() == pytest.approx((nls(1.0) + nls(0.0)) / 2)
    assert total.item() == pytest.approx(0.5 + (nls(1.0) + nls(0.0)) / 2)
    assert terms["loss/layer4"].item() == pytest.approx(total.item())


def test_distilhubert_cos_weight_and_mean_or_sum_over_heads():
    cos = (nls(1.0) + nls(0.0)) / 2
    per_layer = (0.5 + 0.5 * cos) + (1.0 + 0.5 * cos)
    for reduction, expected in (("mean", per_layer / 2), ("sum", per_layer)):
        loss = DistilHuBERTLoss([4, 8], cos_weight=0.5, layer_reduction=reduction)
        total, terms = loss([PRED, PRED * 2], [TARGET, TARGET], ALL)
        # head 2: L1 frame0 |2-1|/2 = 0.5, frame1 (1 + 2)/2 = 1.5 -> 1.0; cos unchanged by scale
        assert terms["l1/layer8"].item() == pytest.approx(1.0)
        assert terms["cos/layer8"].item() == pytest.approx(cos)
        assert terms["loss/layer4"].item() == pytest.approx(0.5 + 0.5 * cos)
        assert total.item() == pytest.approx(expected)
    assert DistilHuBERTLoss([4]).layer_reduction == "mean"  # S3PRL's scale by default
    with pytest.raises(ValueError, match="layer_reduction"):
        DistilHuBERTLoss([4], layer_reduction="max")


def s3prl_compute_loss(pred, target, cosine_loss=1.0):
    """S3PRL 0.4.18 ``DistillerForPretrain.compute_loss`` (s3prl/pretrain/distiller/
    pretrain_expert.py), as its published formula: pred/target [B, N, T, D] ->
    (total, per-layer L1 [N], per-layer -log sigmoid(cos) [N]); every mean runs over all B x T
    frames, padded ones included."""
    rec = (pred - target).abs()  # nn.L1Loss(reduction="none")
    sim = -torch.nn.functional.logsigmoid(torch.nn.functional.cosine_similarity(pred, target, dim=-1))
    return rec.mean() + cosine_loss * sim.mean(), rec.mean((0, 2, 3)), sim.mean((0, 2))


def test_distilhubert_with_s3prl_switches_equals_s3prl_formula_on_padded_batch():
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 3, 7, 6, generator=gen)  # B x N x T x D
    target = torch.randn(3, 3, 7, 6, generator=gen)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3, [True] * 2 + [False] * 5])
    ref_total, ref_rec, ref_sim = s3prl_compute_loss(pred, target, cosine_loss=0.7)
    loss = DistilHuBERTLoss([4, 8, 12], cos_weight=0.7, layer_reduction="mean", include_padded_frames=True)
    total, terms = loss(list(pred.unbind(1)), list(target.unbind(1)), mask)
    assert total.item() == pytest.approx(ref_total.item(), rel=1e-6)
    for i, layer in enumerate((4, 8, 12)):
        assert terms[f"l1/layer{layer}"].item() == pytest.approx(ref_rec[i].item(), rel=1e-6)
        assert terms[f"cos/layer{layer}"].item() == pytest.approx(ref_sim[i].item(), rel=1e-6)
    # ours (padded frames excluded) differs on this batch and equals S3PRL's on the valid frames
    ours, _ = DistilHuBERTLoss([4, 8, 12], cos_weight=0.7)(list(pred.unbind(1)), list(target.unbind(1)), mask)
    assert abs(ours.item() - ref_total.item()) > 1e-3
    flat = [torch.cat([p[b, : int(mask[b].sum())] for b in range(3)])[None] for p in pred.unbind(1)]
    flat_t = [torch.cat([t[b, : int(mask[b].sum())] for b in range(3)])[None] for t in target.unbind(1)]
    ref_valid, _, _ = s3prl_compute_loss(torch.stack(flat, 1), torch.stack(flat_t, 1), cosine_loss=0.7)
    assert ours.item() == pytest.approx(ref_valid.item(), rel=1e-6)


def official_fithubert_loss(pred, target, hint_weight=0.1):
    """The official FitHuBERT ``calculate_loss`` (train.py, distil_random_layer 11,
    rec_loss_type mse) as its formula: the hint layers first, the last layer last, [B, N, T, D];
    every mean over all B x T frames, padded ones included."""
    rec = (pred - target) ** 2
    rec[:, :-1] = rec[:, :-1] * hint_weight
    return rec.mean((0, 2, 3)).sum()


def test_fithubert_with_padded_frames_equals_official_formula():
    gen = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 4, 5, 3, generator=gen)
    target = torch.randn(2, 4, 5, 3, generator=gen)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    loss = FitHuBERTLoss([1, 2, 3, 4], hint_weight=0.1, include_padded_frames=True)
    total, _ = loss(list(pred.unbind(1)), list(target.unbind(1)), mask)
    assert total.item() == pytest.approx(official_fithubert_loss(pred, target).item(), rel=1e-6)
    masked, _ = FitHuBERTLoss([1, 2, 3, 4], hint_weight=0.1)(list(pred.unbind(1)), list(target.unbind(1)), mask)
    assert abs(masked.item() - total.item()) > 1e-3


def test_distilhubert_mask_excludes_frames():
    mask = torch.tensor([[True, False]])
    total, terms = DistilHuBERTLoss([4])([PRED], [TARGET], mask)
    assert terms["l1/layer4"].item() == pytest.approx(0.0)
    assert total.item() == pytest.approx(nls(1.0))


def test_fithubert_hand_computed():
    hint_pred, hint_target = PRED, TARGET  # MSE: frame0 0, frame1 (1 + 1) / 2 = 1 -> 0.5
    last_pred = torch.zeros(1, 2, 2)
    last_target = torch.tensor([[[2.0, 0.0], [0.0, 2.0]]])  # MSE (4 + 0) / 2 = 2 per frame
    loss = FitHuBERTLoss([2, 4], hint_weight=0.1)
    total, terms = loss([hint_pred, last_pred], [hint_target, last_target], ALL)
    assert terms["mse/layer2"].item() == pytest.approx(0.5)
    assert terms["mse/layer4"].item() == pytest.approx(2.0)
    assert terms["feat"].item() == pytest.approx(2.0)
    assert terms["hint"].item() == pytest.approx(0.5)
    assert total.item() == pytest.approx(2.05)


def test_fithubert_single_head_is_plain_mse():
    total, terms = FitHuBERTLoss([12])([PRED], [TARGET], ALL)
    assert total.item() == pytest.approx(0.5)
    assert terms["hint"].item() == 0.0


@pytest.mark.parametrize("loss", [DistilHuBERTLoss([3, 6], 1.0), FitHuBERTLoss([3, 6], 0.1)])
def test_padding_invariance(loss):
    gen = torch.Generator().manual_seed(0)
    lengths = [7, 4]
    preds, targets = [], []
    for _ in range(2):
        preds.append([torch.randn(n, 5, generator=gen) for n in lengths])
        targets.append([torch.randn(n, 5, generator=gen) for n in lengths])

    def batch(seqs, pad_value, extra):
        out = torch.full((2, max(lengths) + extra, 5), pad_value)
        for i, s in enumerate(seqs):
            out[i, : s.shape[0]] = s
        return out

    def mask(extra):
        m = torch.zeros(2, max(lengths) + extra, dtype=torch.bool)
        for i, n in enumerate(lengths):
            m[i, :n] = True
        return m

    total_a, terms_a = loss([batch(p, 0.0, 0) for p in preds], [batch(t, 0.0, 0) for t in targets], mask(0))
    total_b, terms_b = loss([batch(p, 9.0, 3) for p in preds], [batch(t, -5.0, 3) for t in targets], mask(3))
    assert total_a.item() == pytest.approx(total_b.item(), rel=1e-6)
    for key in terms_a:
        assert terms_a[key].item() == pytest.approx(terms_b[key].item(), rel=1e-6)
    # the same frames concatenated without any padding give the same value
    flat_mask = torch.ones(1, sum(lengths), dtype=torch.bool)
    flat_p = [torch.cat(p)[None] for p in preds]
    flat_t = [torch.cat(t)[None] for t in targets]
    total_c, _ = loss(flat_p, flat_t, flat_mask)
    assert total_a.item() == pytest.approx(total_c.item(), rel=1e-6)


def test_padded_frames_get_no_gradient():
    pred = torch.randn(1, 4, 3, requires_grad=True)
    target = torch.randn(1, 4, 3)
    mask = torch.tensor([[True, True, False, False]])
    total, _ = DistilHuBERTLoss([1])([pred], [target], mask)
    total.backward()
    assert pred.grad[0, 2:].abs().sum().item() == 0.0
    assert pred.grad[0, :2].abs().sum().item() > 0.0


def test_masked_mean_empty_mask_is_zero():
    values = torch.ones(2, 3)
    assert masked_mean(values, torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0


def test_shape_errors_are_clear():
    loss = DistilHuBERTLoss([4, 8])
    with pytest.raises(ValueError, match="expected 2 predictions"):
        loss([PRED], [TARGET], ALL)
    with pytest.raises(ValueError, match="head 0"):
        DistilHuBERTLoss([4])([PRED], [TARGET[:, :1]], ALL)
    with pytest.raises(ValueError, match="bool"):
        DistilHuBERTLoss([4])([PRED], [TARGET], ALL.float())


def test_loss_config_and_builder():
    cfg = from_dict(LossConfig, {"type": "fithubert", "hint_weight": 0.2}, where="m.yaml: loss")
    loss = build_loss(cfg, [1, 2])
    assert isinstance(loss, FitHuBERTLoss) and loss.hint_weight == 0.2
    assert isinstance(build_loss(LossConfig(), [4]), DistilHuBERTLoss)
    built = build_loss(from_dict(LossConfig, {"layer_reduction": "sum", "include_padded_frames": True}), [4])
    assert built.layer_reduction == "sum" and built.include_padded_frames
    assert build_loss(from_dict(LossConfig, {"type": "fithubert", "include_padded_frames": True}),
                      [1, 2]).include_padded_frames
    with pytest.raises(ConfigError, match="m.yaml: loss.layer_reduction"):
        from_dict(LossConfig, {"layer_reduction": "avg"}, where="m.yaml: loss")
    with pytest.raises(ConfigError, match="m.yaml: loss.type"):
        from_dict(LossConfig, {"type": "kl"}, where="m.yaml: loss")
    with pytest.raises(ConfigError, match="cos_weight"):
        from_dict(LossConfig, {"cos_weight": -1.0}, where="m.yaml: loss")


def test_fithubert_random_hints_per_epoch():
    layers = [1, 2, 3, 4, 5]  # four hints + the last layer
    loss = FitHuBERTLoss(layers, hint_weight=1.0, random_hints=2, seed=3)
    preds = [torch.zeros(1, 2, 2) for _ in layers]
    targets = [torch.full((1, 2, 2), float(k)) for k in layers]  # MSE of layer k = k^2
    chosen = []
    for epoch in range(6):
        loss.set_epoch(epoch)
        assert len(loss.active_hints) == 2
        total, terms = loss(preds, targets, torch.ones(1, 2, dtype=torch.bool))
        hints = [layers[i] for i in loss.active_hints]
        assert terms["hint"].item() == pytest.approx(sum(k * k for k in hints))
        assert total.item() == pytest.approx(25 + sum(k * k for k in hints))
        assert terms["mse/layer1"].item() == pytest.approx(1.0)  # still reported
        chosen.append(tuple(hints))
    assert len(set(chosen)) > 1  # a new draw per epoch
    again = FitHuBERTLoss(layers, random_hints=2, seed=3)
    again.set_epoch(4)
    assert tuple(layers[i] for i in again.active_hints) == chosen[4]  # deterministic
    with pytest.raises(ValueError, match="random_hints"):
        FitHuBERTLoss(layers, random_hints=5)
    with pytest.raises(ConfigError, match="random_hints"):
        from_dict(LossConfig, {"type": "distilhubert", "random_hints": 2})


@pytest.mark.parametrize("kind", ["distilhubert", "fithubert"])
def test_target_norm_layer_norm_ignores_target_offset_and_scale(kind):
    """With ``target_norm: layer_norm`` a target shifted by a per-frame constant and scaled gives
    the same loss as the normalised target itself (what a pre-LN teacher's offsets would do)."""
    gen = torch.Generator().manual_seed(0)
    preds = [torch.randn(2, 5, 8, generator=gen) for _ in range(2)]
    targets = [torch.randn(2, 5, 8, generator=gen) for _ in range(2)]
    mask = torch.ones(2, 5, dtype=torch.bool)
    cfg = from_dict(LossConfig, {"type": kind, "target_norm": "layer_norm"}, where="m.yaml: loss")
    loss = build_loss(cfg, [2, 4])
    moved = [3.0 * t + 40.0 for t in targets]
    normed = [torch.nn.functional.layer_norm(t, (8,)) for t in targets]
    assert torch.allclose(loss(preds, moved, mask)[0], loss(preds, targets, mask)[0], atol=1e-4)
    plain = build_loss(from_dict(LossConfig, {"type": kind}, where="m.yaml: loss"), [2, 4])
    assert torch.allclose(loss(preds, targets, mask)[0], plain(preds, normed, mask)[0], atol=1e-5)
    assert not torch.allclose(plain(preds, moved, mask)[0], plain(preds, targets, mask)[0])
    with pytest.raises(ConfigError, match="loss.target_norm"):
        from_dict(LossConfig, {"target_norm": "batch_norm"}, where="m.yaml: loss")
