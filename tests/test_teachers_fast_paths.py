"""Teacher settings and fast paths: fast == plain on padded batches, layers=, precision, eval mode,
input limits, autocast isolation (issue 16.1/16.2, 13, 14.7/9, 11)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from s3prl_distill.config import ConfigError
from s3prl_distill.teachers import TeacherConfig, build_teacher
from s3prl_distill.teachers.base import check_layers, resolve_precision
from s3prl_distill.teachers.wav2vec2 import Wav2Vec2Teacher
from s3prl_distill.teachers.whisper import WhisperEncoder, WhisperEncoderArch, WhisperTeacher
from teachers_testutil import padded_batch, tiny_arch, tiny_model

LENGTHS = [8000, 5000, 6411]
TOL = 1e-4


def _close(a, b, tol=TOL):
    """Equal to ``tol`` relative to b's scale."""
    return (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


def _w2v(kind="hubert", mode="group_norm", pre_ln=False, **kw):
    arch = tiny_arch(mode, pre_ln, **kw)
    return Wav2Vec2Teacher(tiny_model(arch, kind), arch, kind, source="torchaudio", path=None)


def _whisper(n_ctx=64):
    arch = WhisperEncoderArch(n_mels=80, n_ctx=n_ctx, dim=64, num_heads=4, num_layers=2)
    torch.manual_seed(0)
    enc = WhisperEncoder(arch)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.1 * torch.randn_like(p))
        enc.positional_embedding.copy_(torch.randn(arch.n_ctx, arch.dim) * 0.5)
    return WhisperTeacher(enc, source="whisper_pt", path=None)


TEACHERS = {
    "hubert": lambda: _w2v(),
    "hubert_conv_bias": lambda: _w2v(conv_bias=True),
    "large_pre_ln": lambda: _w2v(mode="layer_norm", pre_ln=True),
    "layer_norm_post_ln": lambda: _w2v(mode="layer_norm", pre_ln=False),
    "wavlm": lambda: _w2v("wavlm", mode="layer_norm", pre_ln=True),
    "whisper": _whisper,
}


def _valid(out, b):
    return [h[b, : int(out.lengths[b])] for h in out.hidden_states]


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_fast_path_equals_plain_on_a_padded_batch(name):
    teacher = TEACHERS[name]()
    wavs, lengths = padded_batch(LENGTHS)
    fast = teacher(wavs, lengths)
    teacher.fast_path = False
    plain = teacher(wavs, lengths)
    assert torch.equal(fast.lengths, plain.lengths)
    assert len(fast.hidden_states) == teacher.num_layers + 1
    for b in range(len(LENGTHS)):
        for f, p in zip(_valid(fast, b), _valid(plain, b)):
            assert _close(f, p), name
    # equal lengths (no padding: one batched attention call)
    teacher.fast_path = True
    same = teacher(wavs[:, :5000], torch.tensor([5000] * len(LENGTHS)))
    teacher.fast_path = False
    same_plain = teacher(wavs[:, :5000], torch.tensor([5000] * len(LENGTHS)))
    for f, p in zip(same.hidden_states, same_plain.hidden_states):
        assert _close(f, p), name
    # padding invariance of the fast path: each utterance exactly as it is alone (bit-identical:
    # a data-parallel split or a cache build gives the same targets as a single process)
    for b, n in enumerate(LENGTHS):
        teacher.fast_path = True
        alone = teacher(wavs[b:b + 1, :n], lengths[b:b + 1])
        for a, f in zip(_valid(alone, 0), _valid(fast, b)):
            assert torch.equal(a, f) if name != "wavlm" else _close(a, f), (name, b)


def test_fast_path_is_what_runs_and_the_switch_turns_it_off(monkeypatch):
    teacher = _w2v()
    calls = []
    original = Wav2Vec2Teacher._layer_fast
    monkeypatch.setattr(Wav2Vec2Teacher, "_layer_fast", lambda self, *a: calls.append(1) or original(self, *a))
    wavs, lengths = padded_batch(LENGTHS)
    teacher(wavs, lengths)
    runs = teacher.num_layers * len(LENGTHS)  # each utterance alone
    assert len(calls) == runs
    teacher.fast_path = False
    teacher(wavs, lengths)
    assert len(calls) == runs  # plain modules only
    teacher.fast_path = True
    teacher(wavs, torch.tensor([8000, 300, 6411]))  # one shorter than the receptive field: plain
    assert len(calls) == runs


def test_fast_path_caches_follow_weight_changes():
    teacher = _w2v()
    wavs, lengths = padded_batch(LENGTHS)
    teacher(wavs, lengths)  # fills the spectrum and q/k/v caches
    with torch.no_grad():
        for p in teacher.parameters():
            p.mul_(1.1)
    fast = teacher(wavs, lengths)
    teacher.fast_path = False
    plain = teacher(wavs, lengths)
    for f, p in zip(_valid(fast, 0), _valid(plain, 0)):
        assert _close(f, p)


@pytest.mark.parametrize("name", ["hubert", "large_pre_ln", "wavlm", "whisper"])
def test_layers_returns_only_those_in_order(name):
    teacher = TEACHERS[name]()
    wavs, lengths = padded_batch(LENGTHS)
    full = teacher(wavs, lengths)
    assert full.layers is None
    top = teacher.num_layers
    for layers in ([top, 0], [1], [1, 1, 0], [0], list(range(top + 1))):
        out = teacher(wavs, lengths, layers=layers)
        assert out.layers == layers and len(out.hidden_states) == len(layers)
        assert torch.equal(out.lengths, full.lengths)
        for k, h in zip(layers, out.hidden_states):
            assert torch.equal(h, full.hidden_states[k]), (layers, k)  # same computation
            assert h.dtype == torch.float32 and not h.is_inference()


def test_layers_stops_at_the_highest_layer_asked_for():
    teacher = _w2v()
    ran = []
    for i, layer in enumerate(teacher.model.encoder.transformer.layers):
        layer.register_forward_pre_hook(lambda m, a, i=i: ran.append(i))
    teacher.fast_path = False  # the plain path calls the layer modules
    wavs, lengths = padded_batch(LENGTHS)
    teacher(wavs, lengths, layers=[1])
    assert ran == [0]
    teacher(wavs, lengths, layers=[0])
    assert ran == [0]


@pytest.mark.parametrize("bad", [[], [3], [-1], [True], [1.0], "12", 5])
def test_bad_layers_are_refused(bad):
    teacher = _w2v()
    wavs, lengths = padded_batch(LENGTHS)
    with pytest.raises(ValueError, match="teacher layers"):
        teacher(wavs, lengths, layers=bad)
    assert check_layers(None, 2) == [0, 1, 2]


@pytest.mark.parametrize("name", ["hubert", "large_pre_ln", "whisper"])
@pytest.mark.parametrize("fast", [True, False])
def test_bfloat16_precision_on_cpu(name, fast):
    teacher = TEACHERS[name]()
    wavs, lengths = padded_batch(LENGTHS)
    ref = teacher(wavs, lengths)
    teacher.configure(precision="bfloat16", fast_path=fast)
    assert teacher.describe()["precision"] == "bfloat16"
    assert teacher.dtype == torch.float32  # cast at the first forward (a student may copy it first)
    out = teacher(wavs, lengths)
    assert teacher.dtype == torch.bfloat16
    for b in range(len(LENGTHS)):
        for h, r in zip(_valid(out, b), _valid(ref, b)):
            assert h.dtype == torch.float32
            assert F.cosine_similarity(h, r, dim=-1).min() > 0.99
            assert not torch.equal(h, r)  # really computed in bfloat16


def test_precision_follows_the_device_and_auto_is_float32_on_cpu():
    teacher = _w2v()
    assert teacher.precision == "auto" and teacher.dtype == torch.float32
    assert resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert resolve_precision("auto", torch.device("cuda")) == torch.float16  # not run here: no CUDA
    teacher.configure(precision="bfloat16")
    teacher.to("cpu")  # a move casts
    assert teacher.dtype == torch.bfloat16
    teacher.float()  # a later cast (e.g. an owner's .float()) is undone: the setting wins
    assert teacher.dtype == torch.bfloat16
    holder = torch.nn.ModuleDict({"t": teacher})
    holder.to(torch.float64)
    assert teacher.dtype == torch.bfloat16
    with pytest.raises(Exception, match="precision"):
        teacher.configure(precision="int8")
    with pytest.raises(ConfigError, match="precision"):
        build_teacher({"source": "torchaudio", "path": "x.pt", "precision": "fp16"})


def test_student_autocast_does_not_reach_the_teacher():
    teacher = _w2v()
    wavs, lengths = padded_batch(LENGTHS)
    ref = teacher(wavs, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = teacher(wavs, lengths)
    for h, r in zip(out.hidden_states, ref.hidden_states):
        assert torch.equal(h, r)


def test_eval_mode_false_keeps_dropout_on_as_s3prl(tmp_path):
    arch = tiny_arch(dropout=0.3, attention_dropout=0.3, activation_dropout=0.1, dropout_input=0.1)
    model = tiny_model(arch)
    path = tmp_path / "t.pt"
    torch.save({"state_dict": model.state_dict(), "arch": {"dropout": 0.3, "attention_dropout": 0.3,
                                                           "activation_dropout": 0.1, "dropout_input": 0.1,
                                                           "num_heads": 4, "layer_norm_first": False}}, path)
    wavs, lengths = padded_batch(LENGTHS)
    ours = build_teacher({"source": "torchaudio", "path": str(path)})
    assert ours.deterministic and not ours.training
    s3prl_like = build_teacher({"source": "torchaudio", "path": str(path), "eval_mode": False})
    assert not s3prl_like.deterministic
    s3prl_like.eval()  # ignored, as S3PRL's teacher is never in eval mode during distillation
    torch.nn.ModuleDict({"t": s3prl_like}).eval()
    assert s3prl_like.training and all(m.training for m in s3prl_like.modules())
    assert s3prl_like.arch_config.dropout == 0.3 and s3prl_like.model.encoder.transformer.layer_drop == 0.0
    one, two = s3prl_like(wavs, lengths), s3prl_like(wavs, lengths)
    ref = ours(wavs, lengths)
    assert not torch.equal(one.hidden_states[2], two.hidden_states[2])  # dropout draws differ
    assert not torch.equal(one.hidden_states[2], ref.hidden_states[2])
    # with every dropout at 0 the train-mode teacher equals the eval-mode one
    zero = build_teacher({"source": "torchaudio", "path": str(path), "eval_mode": False,
                          "arch_config": {"dropout": 0.0, "attention_dropout": 0.0,
                                          "activation_dropout": 0.0, "dropout_input": 0.0}})
    out = zero(wavs, lengths)
    for b in range(len(LENGTHS)):
        for h, r in zip(_valid(out, b), _valid(ref, b)):
            assert _close(h, r)


def test_input_limits():
    w2v = _w2v()
    assert (w2v.sample_rate, w2v.max_input_samples, w2v.min_input_samples) == (16000, None, 400)
    whisper = _whisper(n_ctx=64)  # 64 positions = 2 * 64 * 160 samples + the last mel frame's 159
    assert (whisper.sample_rate, whisper.max_input_samples, whisper.min_input_samples) == (16000, 20639, 201)
    limit = whisper.max_input_samples
    wavs = 0.1 * torch.randn(2, limit + 1)
    out = whisper(wavs[:1, :limit], torch.tensor([limit]))
    assert out.hidden_states[0].shape[1] == 64
    with pytest.raises(ValueError, match=r"waveform 1 of the batch has 20640 samples.*64 stored positions"):
        whisper(wavs, torch.tensor([limit, limit + 1]))
    real = WhisperTeacher(WhisperEncoder(WhisperEncoderArch()), source="whisper_pt", path=None)
    assert real.max_input_samples == 30 * 16000 + 159  # Whisper's 1500 positions
    for key in ("sample_rate", "max_input_samples", "min_input_samples", "precision", "eval_mode"):
        assert key in whisper.describe() and key in w2v.describe()


def test_config_keys():
    cfg = TeacherConfig(source="torchaudio", path="x")
    assert (cfg.precision, cfg.eval_mode, cfg.fast_path) == ("auto", True, True)
    from s3prl_distill.config import from_dict

    with pytest.raises(ConfigError, match="eval_mode"):
        from_dict(TeacherConfig, {"source": "torchaudio", "path": "x", "eval_mode": "no"}, where="teacher")


def test_a_student_initialised_from_a_fresh_reduced_precision_teacher_gets_float32_weights(caplog):
    teacher = _w2v()
    ref = teacher.student_init_state(2)
    teacher.configure(precision="bfloat16")
    state = teacher.student_init_state(2)
    assert all(torch.equal(state[k], ref[k]) and state[k].dtype == torch.float32 for k in ref)
    teacher(*padded_batch(LENGTHS))  # now cast
    with caplog.at_level("WARNING"):
        teacher.student_init_state(2)
    assert "already bfloat16" in caplog.text
