"""fairseq checkpoints: safe loading (no fairseq, no pickled code), key/config mapping, outputs."""

from __future__ import annotations

import argparse
import sys
import types

import pytest
import torch

from s3prl_distill.teachers import TeacherError, build_teacher
from s3prl_distill.teachers.fairseq import (
    arch_from_fairseq,
    fairseq_model_config,
    fairseq_to_torchaudio,
    parse_conv_layers,
    safe_load_fairseq,
    torchaudio_to_fairseq,
)
from s3prl_distill.teachers.wav2vec2 import Wav2Vec2Arch
from teachers_testutil import assert_valid_close, padded_batch, tiny_arch, tiny_model

LENGTHS = [8000, 5000, 6411]
CONV = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2"


def _s3prl_hubert(extractor_mode="default", layer_norm_first=False, seed=0):
    """S3PRL's copy of fairseq's HubertModel (the reference implementation), tiny, eval."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    torch.manual_seed(seed)
    cfg = HubertConfig(label_rate=50.0, extractor_mode=extractor_mode, encoder_layers=2, encoder_embed_dim=64,
                       encoder_ffn_embed_dim=128, encoder_attention_heads=4, conv_feature_layers=CONV,
                       conv_pos=16, conv_pos_groups=4, layer_norm_first=layer_norm_first, final_dim=16)
    model = HubertModel(cfg, HubertPretrainingConfig(), [["a", "b", "c"]])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval(), cfg


def s3prl_layer_outputs(model, wav):
    """fairseq-style model's layer inputs + encoder output (what S3PRL's hubert expert exposes)."""
    captured = []
    hooks = [layer.register_forward_pre_hook(lambda m, inp: captured.append(inp[0].transpose(0, 1)))
             for layer in model.encoder.layers]
    hooks.append(model.encoder.register_forward_hook(lambda m, inp, out: captured.append(out[0])))
    try:
        with torch.no_grad():
            model.extract_features(wav[None], padding_mask=None, mask=False)
    finally:
        for h in hooks:
            h.remove()
    return captured


def _omegaconf_cfg(model_cfg: dict, task: dict):
    from omegaconf import OmegaConf
    return OmegaConf.create({"common": {"fp16": False}, "model": model_cfg, "task": task})


@pytest.fixture
def fake_fairseq_dictionary():
    """A class pickled as fairseq.data.dictionary.Dictionary (fairseq itself is not installed)."""
    names = ["fairseq", "fairseq.data", "fairseq.data.dictionary"]
    mods = {n: types.ModuleType(n) for n in names}

    class Dictionary:
        def __init__(self, symbols):
            self.symbols, self.count, self.indices = list(symbols), [1] * len(symbols), {s: i for i, s in enumerate(symbols)}

    Dictionary.__module__ = "fairseq.data.dictionary"
    Dictionary.__qualname__ = "Dictionary"
    mods["fairseq.data.dictionary"].Dictionary = Dictionary
    sys.modules.update(mods)
    yield Dictionary
    for n in names:
        sys.modules.pop(n, None)


@pytest.mark.parametrize("mode,pre_ln", [("default", False), ("layer_norm", True)])
def test_hubert_cfg_checkpoint_matches_s3prl_fairseq_model(tmp_path, monkeypatch, fake_fairseq_dictionary, mode, pre_ln):
    model, hcfg = _s3prl_hubert(mode, pre_ln)
    model_cfg = {"_name": "hubert", "label_rate": 50.0, "extractor_mode": mode, "encoder_layers": 2,
                 "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 4,
                 "conv_feature_layers": CONV, "conv_pos": 16, "conv_pos_groups": 4, "layer_norm_first": pre_ln,
                 "latent_temp": [2.0, 0.5, 0.999], "dropout": 0.1, "feature_grad_mult": 0.1, "conv_bias": False}
    ckpt = {"args": None, "cfg": _omegaconf_cfg(model_cfg, {"_name": "hubert_pretraining", "normalize": pre_ln,
                                                            "labels": ["km"], "sample_rate": 16000}),
            "model": model.state_dict(), "task_state": {"dictionaries": [fake_fairseq_dictionary(["a", "b"])]},
            "optimizer_history": [{"criterion_name": "HubertCriterion", "num_updates": 10}]}
    path = tmp_path / "hubert_tiny.pt"
    torch.save(ckpt, path)
    for n in ["fairseq", "fairseq.data", "fairseq.data.dictionary"]:
        sys.modules.pop(n, None)
    monkeypatch.setitem(sys.modules, "omegaconf", None)  # neither fairseq nor omegaconf is imported
    loaded = safe_load_fairseq(str(path))
    assert loaded["cfg"]["model"]["encoder_layers"] == 2 and loaded["cfg"]["task"]["normalize"] is pre_ln
    assert loaded["task_state"]["dictionaries"][0]["symbols"] == ["a", "b"]

    teacher = build_teacher({"source": "fairseq", "path": str(path)})
    assert (teacher.arch, teacher.num_layers, teacher.dim, teacher.normalize_waveform) == ("hubert", 2, 64, pre_ln)
    wavs, lengths = padded_batch(LENGTHS)
    out = teacher(wavs, lengths)
    assert out.lengths.tolist() == [24, 15, 19]
    for b, n in enumerate(LENGTHS):
        wav = wavs[b, :n]
        if pre_ln:
            wav = torch.nn.functional.layer_norm(wav, (n,))
        assert_valid_close(out.hidden_states, out.lengths, s3prl_layer_outputs(model, wav), b)


def test_args_namespace_round_trip_from_torchaudio(tmp_path):
    """wav2vec 2.0-style checkpoint ({"args": Namespace}) written from a torchaudio model."""
    arch = tiny_arch("group_norm", False, conv_bias=True)
    model = tiny_model(arch)
    args = argparse.Namespace(arch="wav2vec2", task="audio_pretraining", normalize=False,
                              **{k: v for k, v in fairseq_model_config(arch, "wav2vec2").items() if k != "_name"})
    torch.save({"args": args, "model": {**torchaudio_to_fairseq(model.state_dict()),
                                        "quantizer.vars": torch.zeros(1, 4, 2), "project_q.weight": torch.zeros(2, 2)}},
               tmp_path / "w2v.pt")
    teacher = build_teacher({"source": "fairseq", "path": str(tmp_path / "w2v.pt")})
    assert teacher.arch == "wav2vec2" and teacher.arch_config == arch
    full = teacher.model.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(full[k], v), k
    wavs, lengths = padded_batch(LENGTHS)
    out = teacher(wavs, lengths)
    with torch.no_grad():
        for b, n in enumerate(LENGTHS):
            feats, _ = model.extract_features(wavs[b:b + 1, :n])
            assert_valid_close(out.hidden_states[1:], out.lengths, feats, b)


def test_fine_tuned_checkpoint_prefix_and_w2v_args(tmp_path):
    arch = tiny_arch()
    model = tiny_model(arch)
    inner = {"model": fairseq_model_config(arch, "wav2vec2"), "task": {"normalize": True}}
    state = {"w2v_encoder.w2v_model." + k: v for k, v in torchaudio_to_fairseq(model.state_dict()).items()}
    state["w2v_encoder.proj.weight"] = torch.zeros(5, 64)
    torch.save({"cfg": {"model": {"_name": "wav2vec_ctc", "w2v_args": inner}, "task": {}}, "model": state},
               tmp_path / "ft.pt")
    teacher = build_teacher({"source": "fairseq", "path": str(tmp_path / "ft.pt")})
    assert teacher.normalize_waveform and teacher.num_layers == 2


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"args": None, "model": {}, "extra": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(TeacherError, match=r"builtins\.open|open.*allow-list|allow-list"):
        build_teacher({"source": "fairseq", "path": str(tmp_path / "evil.pt")})
    assert not marker.exists()


def test_conv_layer_parser_is_not_eval():
    assert parse_conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2", "t") == \
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    for bad in ["__import__('os').system('true')", "[(1, 2)]", "[(1.5, 2, 3)]", "[(1,2,3)] - [(1,2,3)]"]:
        with pytest.raises(TeacherError, match="conv_feature_layers"):
            parse_conv_layers(bad, "t")


def test_hubert_base_defaults_and_unsupported_configs():
    assert arch_from_fairseq({}) == Wav2Vec2Arch()  # fairseq defaults are HuBERT/wav2vec2 Base
    large = arch_from_fairseq({"extractor_mode": "layer_norm", "encoder_layers": 24, "encoder_embed_dim": 1024,
                               "encoder_ffn_embed_dim": 4096, "encoder_attention_heads": 16,
                               "layer_norm_first": True, "conv_bias": True})
    assert large.extractor_mode == "layer_norm" and large.num_layers == 24 and large.layer_norm_first
    with pytest.raises(TeacherError, match="layer_type"):
        arch_from_fairseq({"layer_type": "conformer"})
    with pytest.raises(TeacherError, match="pos_conv_depth"):
        arch_from_fairseq({"pos_conv_depth": 5})


def test_mapping_errors_and_bad_files(tmp_path):
    model = tiny_model(tiny_arch())
    fs = torchaudio_to_fairseq(model.state_dict())
    assert fairseq_to_torchaudio(fs).keys() == model.state_dict().keys()
    with pytest.raises(TeacherError, match="decoder.embed_tokens"):
        fairseq_to_torchaudio({**fs, "decoder.embed_tokens.weight": torch.zeros(2)})
    torch.save({"model": fs}, tmp_path / "nocfg.pt")
    with pytest.raises(TeacherError, match="neither 'cfg'"):
        build_teacher({"source": "fairseq", "path": str(tmp_path / "nocfg.pt")})
    torch.save({"cfg": {"model": fairseq_model_config(tiny_arch(num_layers=3))}, "model": fs}, tmp_path / "mismatch.pt")
    with pytest.raises(TeacherError, match="missing.*layers.2"):
        build_teacher({"source": "fairseq", "path": str(tmp_path / "mismatch.pt")})
    with pytest.raises(TeacherError, match="no such file"):
        build_teacher({"source": "fairseq", "path": str(tmp_path / "none.pt")})


def test_unilm_wavlm_checkpoint_matches_s3prl_wavlm(tmp_path):
    """WavLM's own format ({"cfg": flat dict, "model": ...}) against S3PRL's copy of unilm's WavLM."""
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    cfg = {"extractor_mode": "default", "encoder_layers": 2, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128,
           "encoder_attention_heads": 4, "conv_feature_layers": CONV, "conv_pos": 16, "conv_pos_groups": 4,
           "relative_position_embedding": True, "num_buckets": 16, "max_distance": 64, "gru_rel_pos": True,
           "layer_norm_first": False, "normalize": False}
    torch.manual_seed(0)
    model = WavLM(WavLMConfig(cfg)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "grep" in name or "relative" in name:
                p.add_(0.1 * torch.randn_like(p))
    torch.save({"cfg": cfg, "model": model.state_dict()}, tmp_path / "wavlm.pt")
    teacher = build_teacher({"source": "fairseq", "path": str(tmp_path / "wavlm.pt")})
    assert teacher.arch == "wavlm" and teacher.arch_config.num_buckets == 16 and teacher.arch_config.max_distance == 64
    wavs, lengths = padded_batch(LENGTHS)
    out = teacher(wavs, lengths)
    for b, n in enumerate(LENGTHS):
        assert_valid_close(out.hidden_states, out.lengths, s3prl_layer_outputs(model, wavs[b, :n]), b)
    with pytest.raises(TeacherError, match="gru_rel_pos"):
        arch_from_fairseq({**cfg, "gru_rel_pos": False})


def test_args_checkpoint_loads_when_namespace_is_allowlisted_globally(tmp_path):
    """s3prl_distill.compat allow-lists the real argparse.Namespace for S3PRL's checkpoints."""
    arch = tiny_arch()
    args = argparse.Namespace(arch="hubert", **{k: v for k, v in fairseq_model_config(arch).items() if k != "_name"})
    torch.save({"args": args, "model": torchaudio_to_fairseq(tiny_model(arch).state_dict())}, tmp_path / "h.pt")
    with torch.serialization.safe_globals([argparse.Namespace]):
        loaded = safe_load_fairseq(str(tmp_path / "h.pt"))
        teacher = build_teacher({"source": "fairseq", "path": str(tmp_path / "h.pt")})
    assert loaded["args"]["encoder_layers"] == 2 and teacher.num_layers == 2


@pytest.mark.parametrize("size", ["base", "large"])
def test_full_size_fairseq_hubert_keys_map_onto_torchaudio(size):
    """Real HuBERT Base / Large shapes (meta tensors, no weights): S3PRL's fairseq HubertModel state dict
    maps key-for-key and shape-for-shape onto the torchaudio model our config builds."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
    from s3prl_distill.teachers.wav2vec2 import build_wav2vec2_model

    kw = {} if size == "base" else dict(extractor_mode="layer_norm", encoder_layers=24, encoder_embed_dim=1024,
                                        encoder_ffn_embed_dim=4096, encoder_attention_heads=16,
                                        layer_norm_first=True, final_dim=768)
    with torch.device("meta"):
        fs_model = HubertModel(HubertConfig(label_rate=50.0, **kw), HubertPretrainingConfig(), [list("abcd")])
        arch = arch_from_fairseq(kw)
        ta_model = build_wav2vec2_model(arch)
    mapped = fairseq_to_torchaudio(fs_model.state_dict())
    expected = ta_model.state_dict()
    assert mapped.keys() == expected.keys()
    assert all(mapped[k].shape == expected[k].shape for k in expected)
    assert arch.num_layers == (12 if size == "base" else 24) and arch.downsample_rate == 320
