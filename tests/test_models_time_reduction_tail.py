"""``time_reduction_tail``: ``pad`` (ours, ceil(T/k)) and ``drop`` (the official FitHuBERT code,
floor(T/k)): exact lengths, padding invariance in both modes, and the distillation loss in
``drop`` mode equal to the official trimming (teacher narrowed to the heads' k floor(T/k) frames,
MSE averaged over them) on unpadded input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import s3prl_distill  # noqa: F401
from s3prl_distill.config import ConfigError, from_dict
from s3prl_distill.models import StudentConfig, build_student
from s3prl_distill.models.time_reduction import TimeReduction, reduced_lengths, restored_lengths

CNN = [{"channels": 8, "kernel": 10, "stride": 5}, {"channels": 16, "kernel": 3, "stride": 2},
       {"channels": 16, "kernel": 2, "stride": 2}]


def cnn_frames(n: int) -> int:
    for spec in CNN:
        n = (n - spec["kernel"]) // spec["stride"] + 1
    return n


def config(k: int, tail: str, layers: int = 2, **over) -> StudentConfig:
    data = {
        "family": "fithubert", "cnn": {"layers": CNN},
        "encoder": {"dim": 16, "ffn_dim": 16, "num_heads": 2, "num_layers": layers,
                    "pos_conv_kernel": 4, "pos_conv_groups": 2},
        "time_reduction": k, "time_reduction_tail": tail, "teacher_dim": 12,
        "teacher_layers": layers,
        "heads": [{"student_layer": i, "teacher_layer": i, "type": "deconv_linear"}
                  for i in range(1, layers + 1)],
    }
    data.update(over)
    return from_dict(StudentConfig, data, where="test")


def test_lengths_rules():
    lengths = torch.tensor([1, 2, 3, 4, 5, 6, 7])
    assert reduced_lengths(lengths, 2).tolist() == [1, 1, 2, 2, 3, 3, 4]
    assert reduced_lengths(lengths, 2, "drop").tolist() == [0, 1, 1, 2, 2, 3, 3]
    assert reduced_lengths(lengths, 3, "drop").tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert restored_lengths(lengths, 3, "drop").tolist() == [0, 0, 3, 3, 3, 6, 6]
    assert restored_lengths(lengths, 3, "pad").tolist() == lengths.tolist()
    with pytest.raises(ValueError, match="tail"):
        reduced_lengths(lengths, 2, "crop")


@pytest.mark.parametrize("k", [2, 3])
def test_drop_is_a_plain_strided_conv(k):
    torch.manual_seed(0)
    tr = TimeReduction(6, k, "drop")
    for frames in (3 * k, 3 * k + 1, 3 * k + k - 1):
        x = torch.randn(2, frames, 6)
        y, lengths = tr(x, torch.tensor([frames, frames - 1]))
        assert y.shape == (2, frames // k, 6)
        assert lengths.tolist() == [frames // k, (frames - 1) // k]
        ref = F.conv1d(x.transpose(1, 2)[:, :, : k * (frames // k)], tr.conv.weight, tr.conv.bias,
                       stride=k).transpose(1, 2)
        assert torch.allclose(y, ref, atol=1e-6)
    with pytest.raises(ValueError, match="at least 3 CNN frames"):
        TimeReduction(6, 3, "drop")(torch.randn(1, 5, 6), torch.tensor([2]))


def test_config_rejects_unknown_tail():
    with pytest.raises(ConfigError):
        config(2, "floor")


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("tail", ["pad", "drop"])
def test_lengths_exact_and_padding_invariant(k, tail):
    torch.manual_seed(1)
    model = build_student(config(k, tail)).eval()
    # CNN frame counts: 49, 48, 47, 31 -> every residue mod 2 and mod 3
    lens = [1000, 980, 960, 640]
    assert sorted({cnn_frames(n) % k for n in lens}) == list(range(k))
    wavs = torch.zeros(len(lens), 1010)
    for i, n in enumerate(lens):
        wavs[i, :n] = torch.randn(n)
    rule = (lambda t: -(-t // k)) if tail == "pad" else (lambda t: t // k)
    with torch.no_grad():
        out = model(wavs, torch.tensor(lens))
        assert out.lengths.tolist() == [rule(cnn_frames(n)) for n in lens]
        assert model.output_lengths(torch.tensor(lens)).tolist() == out.lengths.tolist()
        restored = [cnn_frames(n) if tail == "pad" else k * (cnn_frames(n) // k) for n in lens]
        assert out.prediction_lengths.tolist() == restored
        assert out.hidden_states[0].shape[1] == rule(cnn_frames(1000))
        for i, n in enumerate(lens):
            alone = model(wavs[i:i + 1, :n])
            t, r = int(out.lengths[i]), restored[i]
            assert alone.hidden_states[0].shape[1] == t
            for a, b in zip(out.hidden_states, alone.hidden_states):
                assert torch.allclose(a[i, :t], b[0, :t], atol=1e-5), (k, tail, i)
            for a, b in zip(out.predictions, alone.predictions):
                assert torch.allclose(a[i, :r], b[0, :r], atol=1e-5), (k, tail, i)
                if tail == "drop":  # frames past k floor(T/k): zero padding, not a prediction
                    assert bool((b[0, r:] == 0).all())


def test_heads_layout_lengths_follow_the_tail():
    model = build_student(config(2, "drop", keep_heads=True, hidden_states="heads")).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1000))  # 49 CNN frames
    assert out.lengths.tolist() == model.output_lengths(torch.tensor([1000])).tolist() == [48]


def test_drop_loss_equals_official_trimming():
    """Unpadded odd frame counts: the task's masked loss = MSE on the teacher narrowed to the
    heads' length (the official ``calculate_loss``: ``target.narrow(2, 0, pred.shape[2])``)."""
    from s3prl_distill.distill.losses import FitHuBERTLoss
    from s3prl_distill.distill.task import DistillationTask

    torch.manual_seed(2)
    layers = 3
    student = build_student(config(2, "drop", layers=layers)).eval()

    class NoTeacher(torch.nn.Module):
        num_layers = layers

    loss = FitHuBERTLoss(student.target_layers, hint_weight=0.1)
    task = DistillationTask(student, NoTeacher(), loss).eval()
    wavs = torch.randn(2, 1000)  # 49 CNN frames each: the heads restore 48
    frames = cnn_frames(1000)
    targets = [torch.randn(2, frames, 12) for _ in range(layers)]
    with torch.no_grad():
        ours, _ = task(wavs, torch.tensor([1000, 1000]), targets=(targets, torch.tensor([frames] * 2)))
        preds = student(wavs).predictions
    kept = 2 * (frames // 2)
    mse = [F.mse_loss(p[:, :kept], t.narrow(1, 0, kept)) for p, t in zip(preds, targets)]
    official = mse[-1] + 0.1 * sum(mse[:-1])
    assert kept == frames - 1
    assert torch.allclose(ours, official, atol=1e-6), (float(ours), float(official))
