"""Student forward: shapes, exact valid lengths, padding invariance, heads, drop_heads."""

from __future__ import annotations

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.config import ConfigError, from_dict
from s3prl_distill.models import StudentConfig, build_student

TINY_CNN = [
    {"channels": 8, "kernel": 10, "stride": 5},
    {"channels": 16, "kernel": 1, "stride": 1},
    {"channels": 16, "kernel": 3, "stride": 2},
    {"channels": 16, "kernel": 2, "stride": 2},
]


def tiny(**over) -> StudentConfig:
    data = {
        "family": "custom",
        "cnn": {"layers": TINY_CNN},
        "encoder": {"dim": 32, "ffn_dim": 48, "num_heads": 4, "num_layers": 2,
                    "pos_conv_kernel": 8, "pos_conv_groups": 4},
        "teacher_dim": 24,
        "teacher_layers": 4,
        "heads": [{"student_layer": 2, "teacher_layer": 4, "type": "mlp"}],
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return from_dict(StudentConfig, data, where="test")


def expected_frames(n: int) -> int:
    for spec in TINY_CNN:
        n = (n - spec["kernel"]) // spec["stride"] + 1
    return n


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("norm", ["group_norm_first", "layer_norm"])
def test_padding_invariance_and_lengths(k, norm):
    torch.manual_seed(0)
    head_type = "mlp" if k == 1 else "deconv_linear"
    cfg = tiny(time_reduction=k, cnn={"norm": norm},
               heads=[{"student_layer": i, "teacher_layer": i + 1, "type": head_type} for i in (0, 2)])
    model = build_student(cfg).eval()
    lens = [1000, 613, 437]
    wavs = torch.zeros(3, 1100)
    singles = []
    for i, n in enumerate(lens):
        wavs[i, :n] = torch.randn(n)
        singles.append(wavs[i : i + 1, :n].clone())
    with torch.no_grad():
        out = model(wavs, torch.tensor(lens))
        for i, n in enumerate(lens):
            frames = expected_frames(n)
            enc_frames = -(-frames // k)
            assert int(out.lengths[i]) == enc_frames
            assert int(out.prediction_lengths[i]) == frames
            alone = model(singles[i])
            assert alone.hidden_states[0].shape[1] == enc_frames
            for a, b in zip(out.hidden_states, alone.hidden_states):
                assert torch.allclose(a[i, :enc_frames], b[0], atol=1e-5), (k, norm, i)
            for a, b in zip(out.predictions, alone.predictions):
                assert torch.allclose(a[i, :frames], b[0], atol=1e-5)
    assert model.downsample_rate == 20 * k
    assert len(out.hidden_states) == 3
    assert {tuple(h.shape) for h in out.hidden_states} == {(3, out.hidden_states[0].shape[1], 32)}
    assert [tuple(p.shape[1:]) for p in out.predictions] == [(expected_frames(1000), 24)] * 2
    assert model.target_layers == [1, 3]


def test_pre_ln_and_no_pos_conv_run():
    cfg = tiny(encoder={"layer_norm_first": True, "pos_conv_kernel": 0})
    out = build_student(cfg).eval()(torch.randn(2, 500))
    assert len(out.hidden_states) == 3 and out.hidden_states[-1].shape[-1] == 32


def test_with_heads_false_and_drop_heads():
    model = build_student(tiny()).eval()
    out = model(torch.randn(1, 600), with_heads=False)
    assert out.predictions == [] and out.prediction_lengths is None
    n_before = sum(p.numel() for p in model.parameters())
    model.drop_heads()
    assert len(model.heads) == 0 and model.target_layers == []
    assert not any(k.startswith("heads.") for k in model.state_dict())
    assert sum(p.numel() for p in model.parameters()) < n_before
    assert model(torch.randn(1, 600)).predictions == []


def test_keep_heads_modes():
    cfg = tiny(teacher_dim=32, keep_heads=True, hidden_states="layers+heads")
    model = build_student(cfg).eval()
    model.drop_heads()  # kept
    assert len(model.heads) == 1
    out = model(torch.randn(2, 700), with_heads=False)
    assert len(out.hidden_states) == 4 and out.predictions == []
    cfg = tiny(time_reduction=2, keep_heads=True, hidden_states="heads",
               heads=[{"student_layer": i, "teacher_layer": i, "type": "deconv_linear"} for i in (1, 2)])
    model = build_student(cfg).eval()
    out = model(torch.randn(2, 700), torch.tensor([700, 650]))
    assert model.downsample_rate == 20 and model.dim == 24
    assert [tuple(h.shape) for h in out.hidden_states] == [(2, expected_frames(700), 24)] * 2
    assert out.lengths.tolist() == [expected_frames(700), expected_frames(650)]


def test_layer0_projection_is_the_cnn_projection():
    torch.manual_seed(0)
    model = build_student(tiny(layer0="projection",
                               heads=[{"student_layer": 0, "teacher_layer": 1, "type": "linear"}])).eval()
    wavs, lens = torch.randn(2, 900), torch.tensor([900, 640])
    with torch.no_grad():
        out = model(wavs, lens)
        feats, _ = model.feature_extractor(wavs, lens)
        proj = model.encoder.feature_projection(feats)
        alone = model(wavs[1:, :640])
    n = int(out.lengths[1])
    assert torch.allclose(out.hidden_states[0], proj, atol=1e-6)
    assert torch.allclose(out.hidden_states[0][1, :n], alone.hidden_states[0][0], atol=1e-5)
    assert torch.allclose(out.predictions[0], model.heads[0].proj(proj), atol=1e-6)
    # only what is exposed as layer 0 changes: the transformer still runs on the transformer input
    ref = build_student(tiny(heads=[{"student_layer": 0, "teacher_layer": 1, "type": "linear"}])).eval()
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        other = ref(wavs, lens)
    assert torch.allclose(other.hidden_states[1], out.hidden_states[1], atol=1e-6)
    assert not torch.allclose(other.hidden_states[0], out.hidden_states[0])


@pytest.mark.parametrize("over", [
    {},
    {"time_reduction": 3, "heads": [{"student_layer": 1, "teacher_layer": 2, "type": "deconv_linear"}]},
    {"time_reduction": 2, "keep_heads": True, "hidden_states": "heads",
     "heads": [{"student_layer": 1, "teacher_layer": 2, "type": "deconv_linear"}]},
    {"teacher_dim": 32, "keep_heads": True, "hidden_states": "layers+heads"},
])
def test_output_lengths_and_counts_match_forward(over):
    model = build_student(tiny(**over)).eval()
    model.drop_heads()
    lens = torch.tensor([1000, 700, 450])
    out = model(torch.randn(3, 1000), lens, with_heads=False)
    assert torch.equal(model.output_lengths(lens), out.lengths)
    assert len(out.hidden_states) == model.num_hidden_states
    assert all(h.shape[-1] == model.dim for h in out.hidden_states)


def test_target_frames_trim_and_pad():
    cfg = tiny(time_reduction=2, heads=[{"student_layer": 2, "teacher_layer": 4, "type": "deconv_linear"}])
    model = build_student(cfg).eval()
    n = expected_frames(900)
    for target in (n - 2, n + 3):
        out = model(torch.randn(1, 900), target_frames=target)
        assert out.predictions[0].shape == (1, target, 24)
        assert int(out.prediction_lengths[0]) == min(n, target)


def test_bad_inputs_are_named():
    model = build_student(tiny()).eval()
    with pytest.raises(ValueError, match="receptive field"):
        model(torch.randn(1, 20))
    with pytest.raises(ValueError, match=r"\[B, S\]"):
        model(torch.randn(20))
    with pytest.raises(ValueError, match="exceed"):
        model(torch.randn(1, 500), torch.tensor([600]))


@pytest.mark.parametrize(
    "over, key",
    [
        ({"encoder": {"dim": 30}}, "divisible by num_heads"),
        ({"time_reduction": 0}, "time_reduction"),
        ({"heads": [{"student_layer": 3, "teacher_layer": 1}]}, r"heads\[0\].student_layer"),
        ({"heads": [{"student_layer": 1, "teacher_layer": 13}]}, r"heads\[0\].teacher_layer"),
        ({"heads": [{"student_layer": 1, "teacher_layer": 1, "type": "identity"}]}, "identity"),
        ({"time_reduction": 2}, "deconv_linear"),
        ({"hidden_states": "heads"}, "keep_heads"),
        ({"keep_heads": True, "hidden_states": "layers+heads"}, "one D"),
        ({"encoder": {"pos_conv_groups": 5}}, "pos_conv_groups"),
        ({"layer0": "projection", "time_reduction": 2,
          "heads": [{"student_layer": 1, "teacher_layer": 1, "type": "deconv_linear"}]}, "layer0"),
        ({"cnn": {"layers": [{"channels": 8, "kernel": 10, "stride": 0}]}}, r"stride"),
    ],
)
def test_validate_rejects_impossible_shapes(over, key):
    with pytest.raises(ConfigError, match=key) as err:
        tiny(**over)
    assert str(err.value).startswith("test")


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="bogus"):
        tiny(encoder={"bogus": 1})
