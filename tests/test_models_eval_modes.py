"""FitHuBERT's three evaluation modes as upstream configs, through S3PRL's featurizers.

* ``fithubert_last_head.yaml``: the paper's FitHuBERT-100/960 (and ``fitw2v2_100_last_head.yaml``,
  FitW2V2-100): only the last layer's head is kept, one state [B, T, 768] at 320 samples/frame;
* ``fithubert.yaml``: all hidden states, 13 x [B, T, 480] at 640;
* ``fitw2v2.yaml``: FitW2V2-960, the 12 heads' outputs, 12 x [B, T, 768] at 320.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill import compat
from s3prl_distill.checkpoint import load_student, save_student
from s3prl_distill.config import from_dict
from s3prl_distill.distill.config import DistillConfig
from s3prl_distill.lengths import pad_waveforms
from s3prl_distill.models import StudentConfig, build_student
from s3prl_distill.upstream.hubconf import ENTRIES

CONFIGS = Path(__file__).resolve().parents[1] / "upstream_configs"
SR = 16000


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _wavs():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(SR, generator=g), torch.randn(int(1.43 * SR), generator=g)]


@pytest.mark.slow
@pytest.mark.parametrize("name, n_states, dim, rate, upstream_params", [
    ("fithubert_last_head.yaml", 1, 768, 320, 22_030_784),
    ("fithubert.yaml", 13, 480, 640, 21_200_096),
    ("fitw2v2.yaml", 12, 768, 320, 31_168_352),
])
def test_evaluation_modes_through_both_s3prl_featurizers(tmp_path, name, n_states, dim, rate, upstream_params):
    from s3prl.nn import Featurizer as NewFeaturizer, S3PRLUpstream
    from s3prl.upstream.interfaces import Featurizer
    import s3prl.hub as hub

    cfg = DistillConfig.from_yaml(CONFIGS / name).student
    torch.manual_seed(0)
    ckpt = tmp_path / "student.ckpt"
    save_student(ckpt, build_student(cfg))  # a distillation checkpoint: every head still attached
    upstream = ENTRIES["fithubert_local"](ckpt=str(ckpt), model_config=None, refresh=False)
    assert n_params(upstream) == upstream_params
    assert upstream.get_downsample_rates("hidden_states") == rate
    wavs = _wavs()
    with torch.no_grad():
        feats = upstream(wavs)
    hs = feats["hidden_states"]
    assert len(hs) == n_states and {tuple(h.shape) for h in hs} == {(2, hs[0].shape[1], dim)}
    assert abs(hs[0].shape[1] - round(len(wavs[1]) / rate)) <= 1
    featurizer = Featurizer(upstream, feature_selection="hidden_states", upstream_device="cpu")
    assert featurizer.downsample_rate == rate and featurizer.output_dim == dim
    out = featurizer(wavs, feats)  # the SUPERB weighted sum
    t = hs[0].shape[1]
    assert [tuple(f.shape) for f in out] == [(min(round(len(w) / rate), t), dim) for w in wavs]
    if n_states > 1:
        out[0].sum().backward()  # the weighted-sum weights train
        assert featurizer.weights.grad is not None
    else:  # a single state is used as it is (the paper's last-head evaluation)
        assert torch.equal(out[0], hs[0][0, : out[0].shape[0]])

    if hasattr(compat, "apply"):
        compat.apply()
    for key, fn in ENTRIES.items():
        setattr(hub, key, fn)
    try:
        new = S3PRLUpstream("fithubert_local", path_or_url=str(ckpt)).eval()
        batch, lens = pad_waveforms(wavs)
        with torch.no_grad():
            feats_new, feats_len = NewFeaturizer(new)(*new(batch, lens))
        assert feats_new.shape[-1] == dim and feats_len.tolist() == [(int(n) - 1) // rate + 1 for n in lens]
    finally:
        for key in ENTRIES:
            if hasattr(hub, key):
                delattr(hub, key)


def tiny_fit(**over) -> StudentConfig:
    cnn = [{"channels": 8, "kernel": 10, "stride": 5}] + [{"channels": 8, "kernel": 3, "stride": 2}] * 4 \
        + [{"channels": 8, "kernel": 2, "stride": 2}] * 2
    data = {"family": "fithubert", "cnn": {"layers": cnn}, "time_reduction": 2,
            "encoder": {"dim": 16, "ffn_dim": 16, "num_heads": 2, "num_layers": 3, "pos_conv_kernel": 8,
                        "pos_conv_groups": 2},
            "teacher_dim": 12, "teacher_layers": 3, "keep_heads": True, "hidden_states": "last_head",
            "heads": [{"student_layer": i, "teacher_layer": i, "type": "deconv_linear"} for i in (1, 2, 3)]}
    data.update(over)
    return from_dict(StudentConfig, data, where="test")


def test_last_head_keeps_only_the_last_head_and_its_names(tmp_path):
    torch.manual_seed(0)
    student = build_student(tiny_fit()).eval()
    assert student.num_heads == 3 and student.num_hidden_states == 1 and student.dim == 12
    wavs, lens = pad_waveforms(_wavs())
    with torch.no_grad():
        full = student(wavs, lens)  # distillation: all three heads predict
        assert len(full.predictions) == 3 and student.target_layers == [1, 2, 3]
        assert torch.equal(full.hidden_states[0], full.predictions[-1])
        last = full.predictions[-1]
    before = n_params(student)
    head_params = [n_params(h) for h in student.heads]
    student.drop_heads()
    assert student.num_heads == 1 and student.target_layers == [3]
    assert n_params(student) == before - head_params[0] - head_params[1]
    assert {k.split(".")[1] for k in student.state_dict() if k.startswith("heads.")} == {"2"}
    with torch.no_grad():
        after = student(wavs, lens, with_heads=False)
    assert len(after.hidden_states) == 1 and torch.allclose(after.hidden_states[0], last)
    assert student.downsample_rate == 320 and torch.equal(after.lengths, student.output_lengths(lens))
    # a checkpoint saved after the drop loads back with the last head only
    save_student(tmp_path / "dropped.ckpt", student)
    again, _ = load_student(tmp_path / "dropped.ckpt")
    assert again.num_heads == 1 and n_params(again) == n_params(student)
    with torch.no_grad():
        assert torch.allclose(again(wavs, lens, with_heads=False).hidden_states[0], last)
    # keep_heads=False drops it too: back to the reduced-rate layers
    bare, _ = load_student(tmp_path / "dropped.ckpt", keep_heads=False)
    assert bare.num_heads == 0 and bare.downsample_rate == 640 and bare.num_hidden_states == 4


def test_last_head_checkpoint_with_every_head_and_forced_keep(tmp_path):
    torch.manual_seed(0)
    save_student(tmp_path / "all.ckpt", build_student(tiny_fit()))
    kept, _ = load_student(tmp_path / "all.ckpt")  # the config keeps the last head only
    assert kept.num_heads == 1
    every, _ = load_student(tmp_path / "all.ckpt", keep_heads=True)  # explicit: keep them all
    assert every.num_heads == 3 and every.num_hidden_states == 1


def test_tiny_last_head_upstream_through_the_featurizer(tmp_path):
    from s3prl.upstream.interfaces import Featurizer

    torch.manual_seed(0)
    save_student(tmp_path / "s.ckpt", build_student(tiny_fit()))
    upstream = ENTRIES["fithubert_local"](ckpt=str(tmp_path / "s.ckpt"))
    assert upstream.model.num_heads == 1 and upstream.get_downsample_rates("hidden_states") == 320
    wavs = _wavs()
    with torch.no_grad():
        feats = upstream(wavs)
    assert len(feats["hidden_states"]) == 1 and feats["hidden_states"][0].shape[-1] == 12
    featurizer = Featurizer(upstream, feature_selection="hidden_states", upstream_device="cpu")
    assert featurizer.output_dim == 12 and featurizer.downsample_rate == 320
    t = feats["hidden_states"][0].shape[1]  # S3PRL cuts at round(len / rate), capped by the frames
    assert [f.shape[0] for f in featurizer(wavs, feats)] == [min(round(len(w) / 320), t) for w in wavs]


def test_last_head_needs_kept_heads():
    with pytest.raises(Exception, match="last_head.*keep_heads"):
        tiny_fit(keep_heads=False)
