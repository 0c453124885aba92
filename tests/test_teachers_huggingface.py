"""Hugging Face save_pretrained folders (HuBERT / wav2vec 2.0 / WavLM) against transformers itself."""

from __future__ import annotations

import json

import pytest
import torch

from s3prl_distill.teachers import TeacherError, build_teacher
from teachers_testutil import assert_valid_close, padded_batch

transformers = pytest.importorskip("transformers")

LENGTHS = [8000, 5000, 6411]
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            conv_dim=[32] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, hidden_dropout=0.0,
            attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0)


def _hf_model(kind: str, **kw):
    torch.manual_seed(0)
    if kind == "hubert":
        model = transformers.HubertModel(transformers.HubertConfig(**TINY, **kw))
    elif kind == "wav2vec2":
        model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**TINY, **kw))
    else:
        model = transformers.WavLMModel(transformers.WavLMConfig(**TINY, num_buckets=16, max_bucket_distance=64, **kw))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "rel_pos" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _hf_hidden(model, wav):
    with torch.no_grad():
        return list(model(wav[None], output_hidden_states=True).hidden_states)


@pytest.mark.parametrize("kind,kw,safe", [
    ("hubert", {}, True),
    ("hubert", {"feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True}, False),
    ("wav2vec2", {}, True),
    ("wav2vec2", {"feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True}, True),
    ("wavlm", {}, True),
])
def test_outputs_match_transformers(tmp_path, kind, kw, safe):
    model = _hf_model(kind, **kw)
    model.save_pretrained(tmp_path / "m", safe_serialization=safe)
    teacher = build_teacher({"source": "huggingface", "path": str(tmp_path / "m")})
    assert (teacher.arch, teacher.num_layers, teacher.dim, teacher.downsample_rate) == (kind, 2, 64, 320)
    wavs, lengths = padded_batch(LENGTHS)
    out = teacher(wavs, lengths)
    assert out.lengths.tolist() == [24, 15, 19]
    for b, n in enumerate(LENGTHS):
        assert_valid_close(out.hidden_states, out.lengths, _hf_hidden(model, wavs[b, :n]), b)


def test_layer_norm_model_matches_transformers_padded_batch(tmp_path):
    model = _hf_model("wav2vec2", feat_extract_norm="layer", do_stable_layer_norm=True)
    model.save_pretrained(tmp_path / "m")
    teacher = build_teacher({"source": "huggingface", "path": str(tmp_path / "m")})
    wavs, lengths = padded_batch(LENGTHS)
    out = teacher(wavs, lengths)
    mask = (torch.arange(wavs.shape[1]) < lengths[:, None]).long()
    with torch.no_grad():
        ref = model(wavs, attention_mask=mask, output_hidden_states=True).hidden_states
    for b in range(len(LENGTHS)):
        assert_valid_close(out.hidden_states, out.lengths, [r[b:b + 1] for r in ref], b)


def test_ctc_checkpoint_prefix_and_preprocessor_normalize(tmp_path):
    torch.manual_seed(0)
    ctc = transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**TINY, vocab_size=12)).eval()
    ctc.save_pretrained(tmp_path / "ctc")
    (tmp_path / "ctc" / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    teacher = build_teacher({"source": "huggingface", "path": str(tmp_path / "ctc")})
    assert teacher.normalize_waveform
    wavs, lengths = padded_batch(LENGTHS)
    out = teacher(wavs, lengths)
    for b, n in enumerate(LENGTHS):
        w = torch.nn.functional.layer_norm(wavs[b, :n], (n,))
        assert_valid_close(out.hidden_states, out.lengths, _hf_hidden(ctc.wav2vec2, w), b)
    assert not build_teacher({"source": "huggingface", "path": str(tmp_path / "ctc"),
                              "normalize_waveform": False}).normalize_waveform


def test_student_init_state_uses_torchaudio_names(tmp_path):
    model = _hf_model("hubert")
    model.save_pretrained(tmp_path / "m")
    state = build_teacher({"source": "huggingface", "path": str(tmp_path / "m")}).student_init_state(1)
    assert torch.equal(state["encoder.transformer.layers.0.attention.q_proj.weight"],
                       model.encoder.layers[0].attention.q_proj.weight)
    assert torch.equal(state["feature_extractor.conv_layers.0.conv.weight"],
                       model.feature_extractor.conv_layers[0].conv.weight)
    assert not any(k.startswith("encoder.transformer.layers.1.") for k in state)


def test_errors(tmp_path):
    with pytest.raises(TeacherError, match="not a folder"):
        build_teacher({"source": "huggingface", "path": str(tmp_path / "none")})
    (tmp_path / "e").mkdir()
    with pytest.raises(TeacherError, match="no config.json"):
        build_teacher({"source": "huggingface", "path": str(tmp_path / "e")})
    (tmp_path / "e" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(TeacherError, match="model_type 'bert'"):
        build_teacher({"source": "huggingface", "path": str(tmp_path / "e")})
    (tmp_path / "e" / "config.json").write_text(json.dumps({"model_type": "hubert", "hidden_act": "relu"}))
    with pytest.raises(TeacherError, match="hidden_act"):
        build_teacher({"source": "huggingface", "path": str(tmp_path / "e")})
    (tmp_path / "e" / "config.json").write_text(json.dumps({"model_type": "hubert", **TINY}))
    with pytest.raises(TeacherError, match="no model.safetensors"):
        build_teacher({"source": "huggingface", "path": str(tmp_path / "e")})
    model = _hf_model("hubert")
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(TeacherError, match="model_type 'hubert'"):
        build_teacher({"source": "huggingface", "path": str(tmp_path / "m"), "arch": "wav2vec2"})
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TeacherError, match="missing.*layers.2"):
        build_teacher({"source": "huggingface", "path": str(tmp_path / "m")})
