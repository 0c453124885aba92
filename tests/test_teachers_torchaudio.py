"""Teachers from torchaudio Wav2Vec2Model state dicts: outputs, lengths, frozen-ness, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from s3prl_distill.config import ConfigError
from s3prl_distill.teachers import TeacherConfig, TeacherError, build_teacher
from s3prl_distill.teachers.wav2vec2 import Wav2Vec2Arch, build_wav2vec2_model, infer_arch
from teachers_testutil import assert_valid_close, padded_batch, tiny_arch, tiny_model

LENGTHS = [8000, 5000, 6411]


def _reference_single(model, wav, pre_ln: bool):
    """torchaudio's own extract_features on one unpadded utterance (+ final LN for pre-LN)."""
    feats, _ = model.extract_features(wav[None])
    feats = list(feats)
    x, _ = model.feature_extractor(wav[None], None)
    x = model.encoder.feature_projection(x)
    first = model.encoder.transformer._preprocess(x)
    if pre_ln:
        feats[-1] = model.encoder.transformer.layer_norm(feats[-1])
    return [first] + feats


def _save(tmp_path, model, name="teacher.pt", **extra):
    path = tmp_path / name
    torch.save(extra.get("wrap", model.state_dict()), path)
    return str(path)


@pytest.mark.parametrize("mode,pre_ln", [("group_norm", False), ("layer_norm", True), ("layer_norm", False)])
def test_outputs_match_torchaudio_per_utterance(tmp_path, mode, pre_ln):
    model = tiny_model(tiny_arch(mode, pre_ln))
    path = _save(tmp_path, model)
    teacher = build_teacher({"source": "torchaudio", "path": path,
                             "arch_config": {"num_heads": 4, "layer_norm_first": pre_ln}})
    assert (teacher.num_layers, teacher.dim, teacher.downsample_rate) == (2, 64, 320)
    wavs, lengths = padded_batch(LENGTHS)
    out = teacher(wavs, lengths)
    assert len(out.hidden_states) == 3
    assert all(h.shape == (3, 24, 64) for h in out.hidden_states)
    _, ref_lengths = model.feature_extractor(wavs, lengths)
    assert out.lengths.tolist() == ref_lengths.tolist() == [24, 15, 19]
    with torch.no_grad():
        for b, n in enumerate(LENGTHS):
            ref = _reference_single(model, wavs[b, :n], pre_ln)
            assert_valid_close(out.hidden_states, out.lengths, ref, b)


def test_layer_norm_cnn_matches_torchaudio_on_the_padded_batch(tmp_path):
    """Without GroupNorm the padded batch itself is the reference (no padding dependence)."""
    model = tiny_model(tiny_arch("layer_norm", False))
    teacher = build_teacher({"source": "torchaudio", "path": _save(tmp_path, model),
                             "arch_config": {"num_heads": 4, "layer_norm_first": False}})
    wavs, lengths = padded_batch(LENGTHS)
    out = teacher(wavs, lengths)
    with torch.no_grad():
        ref, ref_len = model.extract_features(wavs, lengths)
    assert out.lengths.tolist() == ref_len.tolist()
    for b in range(len(LENGTHS)):
        n = int(out.lengths[b])
        for i in range(2):
            assert (out.hidden_states[i + 1][b, :n] - ref[i][b, :n]).abs().max() < 1e-4


def test_group_norm_is_padding_invariant(tmp_path):
    model = tiny_model(tiny_arch())
    teacher = build_teacher({"source": "torchaudio", "path": _save(tmp_path, model), "arch_config": {"num_heads": 4}})
    wavs, lengths = padded_batch([5000, 8000])
    alone = teacher(wavs[:1, :5000], lengths[:1])
    batched = teacher(wavs, lengths)
    for a, b in zip(alone.hidden_states, batched.hidden_states):
        assert (a[0] - b[0, : a.shape[1]]).abs().max() < 1e-5


def test_frozen_eval_and_identical_calls_after_train(tmp_path):
    model = tiny_model(tiny_arch())
    # dropouts in the file's model do not matter: the teacher builds its own with p = 0
    teacher = build_teacher({"source": "torchaudio", "path": _save(tmp_path, model), "arch_config": {"num_heads": 4}})
    wrapper = torch.nn.ModuleDict({"teacher": teacher, "other": torch.nn.Dropout(0.5)})
    wrapper.train()
    teacher.model.encoder.transformer.train()  # even a flag flipped directly on a submodule
    wavs, lengths = padded_batch(LENGTHS)
    one, two = teacher(wavs, lengths), teacher(wavs, lengths)
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert all(torch.equal(a, b) for a, b in zip(one.hidden_states, two.hidden_states))
    assert not any(p.requires_grad for p in teacher.parameters())
    # outputs are ordinary tensors: a loss may save them for backward (cosine similarity does)
    pred = torch.randn_like(one.hidden_states[2], requires_grad=True)
    F.cosine_similarity(pred, one.hidden_states[2], dim=-1).sum().backward()
    assert pred.grad is not None and not one.hidden_states[2].is_inference()


def test_dropout_would_have_changed_outputs(tmp_path):
    """Control for the test above: the same torchaudio model with dropout in train mode differs."""
    arch = tiny_arch()
    from torchaudio.models import wav2vec2_model
    noisy = wav2vec2_model("group_norm", arch.conv_layers, False, 64, 0.1, 16, 4, 2, 4, 0.1, 128, 0.1, 0.1, False, 0.0, None)
    noisy.train()
    wavs, lengths = padded_batch(LENGTHS)
    a, _ = noisy.extract_features(wavs, lengths)
    b, _ = noisy.extract_features(wavs, lengths)
    assert not torch.equal(a[-1], b[-1])


def test_wrapped_state_dict_with_arch_and_wavlm(tmp_path):
    arch = tiny_arch("layer_norm", True, num_buckets=16, max_distance=64)
    model = tiny_model(arch, kind="wavlm")
    path = tmp_path / "wavlm.pt"
    torch.save({"state_dict": model.state_dict(), "arch": {"num_heads": 4, "layer_norm_first": True,
                                                          "max_distance": 64}, "kind": "wavlm"}, path)
    teacher = build_teacher({"source": "torchaudio", "path": str(path)})
    assert teacher.arch == "wavlm" and teacher.arch_config.num_buckets == 16
    wavs, lengths = padded_batch(LENGTHS)
    out = teacher(wavs, lengths)
    with torch.no_grad():
        for b, n in enumerate(LENGTHS):
            assert_valid_close(out.hidden_states, out.lengths, _reference_single(model, wavs[b, :n], True), b)
    with pytest.raises(TeacherError, match="WavLM"):
        build_teacher({"source": "torchaudio", "path": str(path), "arch": "hubert"})


def test_normalize_waveform(tmp_path):
    model = tiny_model(tiny_arch())
    teacher = build_teacher({"source": "torchaudio", "path": _save(tmp_path, model),
                             "arch_config": {"num_heads": 4}, "normalize_waveform": True})
    wavs, lengths = padded_batch(LENGTHS)
    wavs = wavs * 3.0 + 0.5 * (torch.arange(wavs.shape[1]) < lengths[:, None])
    out = teacher(wavs, lengths)
    with torch.no_grad():
        for b, n in enumerate(LENGTHS):
            w = F.layer_norm(wavs[b, :n], (n,))
            assert_valid_close(out.hidden_states, out.lengths, _reference_single(model, w, False), b)


def test_student_init_state(tmp_path):
    model = tiny_model(tiny_arch())
    teacher = build_teacher({"source": "torchaudio", "path": _save(tmp_path, model), "arch_config": {"num_heads": 4}})
    state = teacher.student_init_state(1)
    full = model.state_dict()
    assert set(state) == {k for k in full if not k.startswith("encoder.transformer.layers.1.")}
    assert "encoder.transformer.layers.0.attention.q_proj.weight" in state
    assert "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1" in state
    assert "feature_extractor.conv_layers.0.layer_norm.weight" in state
    for k, v in state.items():
        assert torch.equal(v, full[k])
    assert all(k.startswith("feature_extractor") or "layers." not in k for k in teacher.student_init_state(0))
    with pytest.raises(TeacherError, match=r"\[0, 2\]"):
        teacher.student_init_state(3)


def test_describe_is_plain_data(tmp_path):
    model = tiny_model(tiny_arch())
    path = _save(tmp_path, model)
    info = build_teacher({"source": "torchaudio", "path": path, "arch_config": {"num_heads": 4}}).describe()
    assert {k: info[k] for k in ("source", "path", "arch", "num_layers", "dim")} == {
        "source": "torchaudio", "path": path, "arch": "hubert", "num_layers": 2, "dim": 64}
    torch.save(info, tmp_path / "d.pt")
    assert torch.load(tmp_path / "d.pt", weights_only=True) == info


def test_old_weight_norm_names_are_accepted(tmp_path):
    model = tiny_model(tiny_arch())
    state = model.state_dict()
    p = "encoder.transformer.pos_conv_embed.conv."
    state[p + "weight_g"] = state.pop(p + "parametrizations.weight.original0")
    state[p + "weight_v"] = state.pop(p + "parametrizations.weight.original1")
    path = _save(tmp_path, model, wrap=state)
    teacher = build_teacher({"source": "torchaudio", "path": path, "arch_config": {"num_heads": 4}})
    wavs, lengths = padded_batch([4000])
    with torch.no_grad():
        assert_valid_close(teacher(wavs, lengths).hidden_states, torch.tensor([12]),
                           _reference_single(model, wavs[0], False), 0)


def test_full_hubert_base_shapes_are_inferred():
    model = build_wav2vec2_model(Wav2Vec2Arch())  # HuBERT Base defaults, random weights
    arch, kind = infer_arch(model.state_dict())
    assert kind == "hubert"
    assert arch == Wav2Vec2Arch()
    assert (arch.num_layers, arch.embed_dim, arch.num_heads, arch.ffn_dim, arch.downsample_rate) == (12, 768, 12, 3072, 320)
    assert sum(p.numel() for p in model.parameters()) == 94_370_944


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(TeacherError, match="no such file"):
        build_teacher({"source": "torchaudio", "path": str(tmp_path / "missing.pt")})
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(TeacherError, match="junk.pt"):
        build_teacher({"source": "torchaudio", "path": str(junk)})
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(TeacherError, match="feature_extractor.conv_layers.0.conv.weight"):
        build_teacher({"source": "torchaudio", "path": str(tmp_path / "other.pt")})
    model = tiny_model(tiny_arch(conv_layers=[(32, 10, 5), (32, 8, 4), (32, 4, 4), (32, 4, 4)]))
    path = _save(tmp_path, model, "odd.pt")
    with pytest.raises(TeacherError, match="arch_config.conv_layers"):
        build_teacher({"source": "torchaudio", "path": path})
    ok = build_teacher({"source": "torchaudio", "path": path, "arch_config": {
        "num_heads": 4, "conv_layers": [[32, 10, 5], [32, 8, 4], [32, 4, 4], [32, 4, 4]]}})
    assert ok.downsample_rate == 320
    with pytest.raises(ConfigError, match="num_head"):
        build_teacher({"source": "torchaudio", "path": path, "arch_config": {"num_head": 4}})
    with pytest.raises(ConfigError, match="not divisible"):
        build_teacher({"source": "torchaudio", "path": path, "arch_config": {"num_heads": 5,
                       "conv_layers": [[32, 10, 5], [32, 8, 4], [32, 4, 4], [32, 4, 4]]}})
    with pytest.raises(TeacherError, match="shape"):  # wrong channel count in the CNN config
        build_teacher({"source": "torchaudio", "path": path, "arch_config": {"num_heads": 4,
                       "conv_layers": [[16, 10, 5], [32, 8, 4], [32, 4, 4], [32, 4, 4]]}})
    with pytest.raises(ConfigError, match="teacher: path"):
        build_teacher({"source": "torchaudio"})
    with pytest.raises(ConfigError, match="teacher.source"):
        build_teacher({"source": "onnx", "path": path})
    teacher = build_teacher({"source": "torchaudio", "path": _save(tmp_path, tiny_model(tiny_arch())),
                             "arch_config": {"num_heads": 4}})
    with pytest.raises(ValueError, match="wav_lengths must lie"):
        teacher(torch.zeros(2, 4000), torch.tensor([4000, 4001]))
    with pytest.raises(ValueError, match=r"\[B, S\]"):
        teacher(torch.zeros(4000), torch.tensor([4000]))


def test_config_validation():
    from s3prl_distill.config import from_dict
    with pytest.raises(ConfigError, match="name"):
        from_dict(TeacherConfig, {"source": "s3prl", "path": "x.pt"}, where="m.yaml: teacher")
    with pytest.raises(ConfigError, match="m.yaml: teacher: arch"):
        from_dict(TeacherConfig, {"source": "whisper_pt", "path": "x.pt", "arch": "hubert"}, where="m.yaml: teacher")
    cfg = from_dict(TeacherConfig, {"source": "whisper_ct2", "path": None}, where="t")
    assert cfg.path is None


def test_autocast_float16_keeps_float32_weights_and_runs_under_autocast(tmp_path):
    """teacher.precision autocast_float16: the official FitHuBERT trainer's AMP (float32 weights,
    float16 autocast over the forward) - close to float32, not equal to it, weights untouched."""
    path = _save(tmp_path, tiny_model(tiny_arch("group_norm", False)))
    fp32 = build_teacher({"source": "torchaudio", "path": str(path), "precision": "float32"})
    amp = build_teacher({"source": "torchaudio", "path": str(path), "precision": "autocast_float16"})
    wavs = 0.1 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    a, b = fp32(wavs).hidden_states, amp(wavs).hidden_states
    assert all(p.dtype == torch.float32 for p in amp.parameters())
    assert all(h.dtype == torch.float32 for h in b)
    assert not all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(torch.allclose(x, y, atol=5e-2, rtol=5e-2) for x, y in zip(a, b))
