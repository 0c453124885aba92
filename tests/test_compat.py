"""Tests for the s3prl_distill.compat package (every shim, every SoX effect)."""

from __future__ import annotations

import argparse
import io
import os
import sys
import types

import numpy as np
import pytest
import soundfile as sf
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill import compat
from s3prl_distill.compat import hub_symbols, numpy_aliases, sox_effects, torchaudio_io
from s3prl_distill.compat.sox_effects import SoxEffectError, apply_effects_file, apply_effects_tensor

from conftest import synth_wave, write_wave

compat.apply()
import torchaudio  # noqa: E402


def _tone(seconds, sr=16000, freq=440.0, amp=0.5):
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return (amp * torch.sin(2 * torch.pi * freq * t)).float()


# ------------------------------------------------------------------ apply / detection


def test_apply_idempotent_and_installs_io():
    first = compat.apply()
    assert compat.apply() == first
    assert callable(torchaudio.info) and callable(torchaudio.set_audio_backend)
    assert torchaudio.sox_effects.apply_effects_file is apply_effects_file
    if not torchaudio_io.torchcodec_usable():
        assert torchaudio.load is torchaudio_io.ta_load and "torchaudio.load" in first


def test_patch_torchaudio_keeps_real_apis():
    def real_load(*a, **k):
        return "real"

    fake = types.ModuleType("fake_torchaudio")
    fake.load, fake.save, fake.info = real_load, real_load, real_load
    fake.set_audio_backend = fake.get_audio_backend = fake.list_audio_backends = real_load
    fake.load_wav = real_load
    fake.sox_effects = types.ModuleType("fake_torchaudio.sox_effects")
    assert compat.patch_torchaudio(fake) == []
    assert fake.load is real_load and fake.info is real_load


def test_patch_torchaudio_replaces_broken_torchcodec_load(monkeypatch):
    fake = types.ModuleType("fake_torchaudio2")
    fake.load = fake.save = fake.load_with_torchcodec = lambda *a, **k: None
    monkeypatch.setattr(torchaudio_io, "torchcodec_usable", lambda: False)
    applied = compat.patch_torchaudio(fake)
    assert fake.load is torchaudio_io.ta_load and fake.save is torchaudio_io.ta_save
    assert {"torchaudio.load", "torchaudio.info", "torchaudio.sox_effects"} <= set(applied)
    monkeypatch.setattr(torchaudio_io, "torchcodec_usable", lambda: True)
    fake2 = types.ModuleType("fake_torchaudio3")
    fake2.load = fake2.save = fake2.load_with_torchcodec = lambda *a, **k: None
    compat.patch_torchaudio(fake2)
    assert not compat.is_shim(fake2.load)


# ------------------------------------------------------------------ torchaudio I/O


def test_load_save_info_round_trip(tmp_path):
    data = synth_wave(0.25, sr=8000, channels=2, seed=1)  # [S, C]
    path = tmp_path / "st.wav"
    sf.write(str(path), data, 8000, subtype="PCM_16")
    wav, sr = torchaudio.load(str(path))
    assert sr == 8000 and wav.shape == (2, 2000) and wav.dtype == torch.float32
    ref, _ = sf.read(str(path), dtype="float32")
    assert np.array_equal(wav.t().numpy(), ref)
    raw, _ = torchaudio.load(path, normalize=False)
    assert raw.dtype == torch.int16 and torch.equal(raw.float() / 32768, wav)
    part, _ = torchaudio.load(str(path), frame_offset=100, num_frames=50, channels_first=False)
    assert part.shape == (50, 2) and torch.equal(part, wav.t()[100:150])
    info = torchaudio.info(str(path))
    assert (info.sample_rate, info.num_frames, info.num_channels) == (8000, 2000, 2)
    assert (info.bits_per_sample, info.encoding) == (16, "PCM_S")
    # save float -> 32-bit float WAV (torchaudio's default), exact
    out = tmp_path / "o" / "f.wav"
    torchaudio.save(str(out), wav, 8000)
    assert sf.info(str(out)).subtype == "FLOAT"
    assert torch.equal(torchaudio.load(str(out))[0], wav)
    torchaudio.save(str(tmp_path / "i.flac"), wav, 8000, bits_per_sample=16)
    flac = torchaudio.info(str(tmp_path / "i.flac"))
    assert flac.encoding == "FLAC" and flac.bits_per_sample == 16
    assert torch.allclose(torchaudio.load(str(tmp_path / "i.flac"))[0], wav, atol=1 / 32767)
    torchaudio.save(str(tmp_path / "i16.wav"), raw, 8000)
    assert sf.info(str(tmp_path / "i16.wav")).subtype == "PCM_16"
    assert torch.equal(torchaudio.load(str(tmp_path / "i16.wav"), normalize=False)[0], raw)


def test_unsigned_8_bit_round_trip(tmp_path):
    x = torch.tensor([[0, 1, 127, 128, 200, 255]], dtype=torch.uint8)
    torchaudio.save(str(tmp_path / "u8.wav"), x, 8000)
    info = torchaudio.info(str(tmp_path / "u8.wav"))
    assert (info.encoding, info.bits_per_sample) == ("PCM_U", 8)
    raw, _ = torchaudio.load(str(tmp_path / "u8.wav"), normalize=False)
    assert raw.dtype == torch.uint8 and torch.equal(raw, x)
    wav, _ = torchaudio.load(str(tmp_path / "u8.wav"))
    assert torch.allclose(wav, (x.float() - 128) / 128)


def test_load_file_object_and_errors(tmp_path):
    path = write_wave(tmp_path / "a.wav", seconds=0.1)
    with open(path, "rb") as handle:
        wav, sr = torchaudio.load(io.BytesIO(handle.read()))
    assert wav.shape == (1, 1600) and sr == 16000
    with pytest.raises(RuntimeError, match=r"missing\.wav: audio file not found"):
        torchaudio.load(str(tmp_path / "missing.wav"))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match=r"bad\.wav: cannot read audio"):
        torchaudio.info(str(bad))
    with pytest.raises(ValueError, match="encoding"):
        torchaudio.save(str(tmp_path / "x.wav"), wav, 16000, encoding="PCM_S", bits_per_sample=12)


def test_load_wav_scale_and_backend(tmp_path):
    path = write_wave(tmp_path / "a.wav", seconds=0.1, subtype="PCM_16")
    wav, _ = torchaudio.load_wav(str(path))
    raw, _ = torchaudio.load(str(path), normalize=False)
    assert torch.equal(wav, raw.float())
    torchaudio.set_audio_backend("sox_io")
    assert torchaudio.get_audio_backend() == "sox_io"
    torchaudio.set_audio_backend("soundfile")
    with pytest.raises(RuntimeError, match="unknown backend 'nope'"):
        torchaudio.set_audio_backend("nope")


# ------------------------------------------------------------------ sox effects


def test_speech_commands_chain_matches_independent_computation(tmp_path):
    from scipy.signal import resample_poly

    data = synth_wave(0.5, sr=8000, channels=2, seed=3)
    path = tmp_path / "st.wav"
    sf.write(str(path), data, 8000, subtype="FLOAT")
    effects = [["channels", "1"], ["rate", "16000"], ["gain", "-3.0"]]  # S3PRL's KS/SV chain
    wav, sr = torchaudio.sox_effects.apply_effects_file(str(path), effects)
    assert sr == 16000 and wav.shape == (1, 8000)
    expected = resample_poly(data.mean(axis=1).astype(np.float64), 2, 1) * 10 ** (-3 / 20)
    mid = slice(400, -400)  # filters differ only at the edges
    assert np.max(np.abs(wav[0].numpy()[mid] - expected[mid])) < 5e-3  # tone amplitude 0.21
    tensor_out, _ = apply_effects_tensor(torch.from_numpy(data.T.copy()), 8000, effects)
    assert torch.allclose(tensor_out, wav, atol=1e-6)


def test_channels_gain_norm_reverse():
    x = torch.tensor([[0.2, -0.4, 0.1], [0.0, 0.2, 0.5]])
    out, sr = apply_effects_tensor(x, 100, [["channels", "1"]])
    assert sr == 100 and torch.allclose(out, x.mean(0, keepdim=True))
    out, _ = apply_effects_tensor(x[:1], 100, [["channels", "2"]])
    assert torch.equal(out, x[:1].repeat(2, 1))
    out, _ = apply_effects_tensor(x, 100, [["gain", "6"]])
    assert torch.allclose(out, (x * 10 ** (6 / 20)).clamp(-1, 1))
    out, _ = apply_effects_tensor(x, 100, [["gain", "20"]])
    assert out.abs().max() == 1.0  # clipped like SoX
    out, _ = apply_effects_tensor(x, 100, [["norm"]])
    assert torch.isclose(out.abs().max(), torch.tensor(1.0)) and torch.allclose(out, x / 0.5)
    out, _ = apply_effects_tensor(x, 100, [["norm", "-6"]])
    assert torch.isclose(out.abs().max(), torch.tensor(10 ** (-6 / 20)))
    out, _ = apply_effects_tensor(x, 100, [["reverse"]])
    assert torch.equal(out, x.flip(-1))
    out, _ = apply_effects_tensor(x.t(), 100, [["reverse"]], channels_first=False)
    assert torch.equal(out, x.flip(-1).t())


def test_pad_and_trim():
    x = torch.arange(1.0, 11.0).unsqueeze(0)  # 10 samples at 10 Hz
    out, _ = apply_effects_tensor(x, 10, [["pad", "0.3", "0.2"]])
    assert out.tolist() == [[0, 0, 0] + list(range(1, 11)) + [0, 0]]
    out, _ = apply_effects_tensor(x, 10, [["trim", "0.2", "0.5"]])
    assert out.tolist() == [[3.0, 4.0, 5.0, 6.0, 7.0]]
    out, _ = apply_effects_tensor(x, 10, [["trim", "4s"]])
    assert out.tolist() == [list(map(float, range(5, 11)))]
    # S3PRL's QUESST crop: pad by the target duration, then cut a window of it
    out, _ = apply_effects_tensor(x, 10, [["pad", "0.5", "0.5"], ["trim", "0.7", "0.5"]])
    assert out.tolist() == [[3.0, 4.0, 5.0, 6.0, 7.0]]
    with pytest.raises(SoxEffectError, match=r"'trim': time '=0.2' not supported"):
        apply_effects_tensor(x, 10, [["trim", "=0.2"]])
    with pytest.raises(SoxEffectError, match=r"'pad'.*'0.1@0.2'"):
        apply_effects_tensor(x, 10, [["pad", "0.1@0.2"]])


def _segments(sr=16000):
    """silence 0.3 s, tone 0.5 s, silence 0.05 s, tone 0.4 s, silence 0.3 s, blip 0.03 s, silence 0.3 s."""
    z = lambda s: torch.zeros(int(s * sr))  # noqa: E731
    parts = [z(0.3), _tone(0.5, sr), z(0.05), _tone(0.4, sr, 300), z(0.3), _tone(0.03, sr), z(0.3)]
    return torch.cat(parts).unsqueeze(0)


def test_silence_like_s3prl_sv():
    sr = 16000
    x = _segments(sr)
    out, out_sr = apply_effects_tensor(
        x, sr, [["silence", "1", "0.1", "0.1%", "-1", "0.1", "0.1%"]])
    # kept: 0.5 s tone + the 0.05 s gap (shorter than 0.1 s) + 0.4 s tone, plus the 20 ms RMS
    # window's tail after each tone; dropped: leading/trailing silence, the 0.3 s gap and the
    # 30 ms blip (shorter than the 0.1 s needed to start copying)
    expected = int((0.5 + 0.05 + 0.4) * sr)
    assert out_sr == sr
    assert expected <= out.shape[1] <= expected + 2 * sr // 50
    start = int(0.3 * sr) + 1  # the tone's first sample is sin(0) = 0, still quiet
    assert torch.equal(out[0, : int(0.5 * sr) - 1], x[0, start : start + int(0.5 * sr) - 1])
    # only the leading part
    out, _ = apply_effects_tensor(x, sr, [["silence", "1", "0.1", "0.1%"]])
    assert out.shape[1] == x.shape[1] - int(0.3 * sr) - 1
    out, _ = apply_effects_tensor(x, sr, [["silence", "1", "0.1", "-60d"]])
    assert out.shape[1] == x.shape[1] - int(0.3 * sr) - 1
    with pytest.raises(SoxEffectError, match="below_periods '2'"):
        apply_effects_tensor(x, sr, [["silence", "1", "0.1", "1%", "2", "0.1", "1%"]])
    with pytest.raises(SoxEffectError, match="threshold '5'"):
        apply_effects_tensor(x, sr, [["silence", "1", "0.1", "5"]])


def test_vad_maps_sox_options_to_torchaudio():
    import torchaudio.functional as taf

    sr = 16000
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(int(0.8 * sr), generator=g) * 1e-4,
                   _tone(1.0, sr, 300) * (1 + 0.3 * torch.sin(torch.arange(sr) * 0.003))])
    x = x.unsqueeze(0)
    out, _ = apply_effects_tensor(x, sr, [["vad", "-T", "0.25", "-p", "0.1"]])
    assert torch.equal(out, taf.vad(x, sr, trigger_time=0.25, pre_trigger_time=0.1))
    assert int(0.5 * sr) <= x.shape[1] - out.shape[1] <= int(0.8 * sr)  # leading noise trimmed
    # S3PRL's SWS query trimming: vad, reverse, vad, reverse
    chain = [["vad", "-T", "0.25", "-p", "0.1"], ["reverse"]] * 2
    out2, _ = apply_effects_tensor(x, sr, chain)
    assert out2.shape[1] <= out.shape[1]
    with pytest.raises(SoxEffectError, match="option '-z'"):
        apply_effects_tensor(x, sr, [["vad", "-z", "1"]])


def test_rate_against_scipy():
    from scipy.signal import resample_poly

    x = _tone(0.5, 16000, 500).unsqueeze(0)
    out, sr = apply_effects_tensor(x, 16000, [["rate", "8k"]])
    assert sr == 8000 and out.shape == (1, 4000)
    ref = resample_poly(x[0].double().numpy(), 1, 2)
    assert np.max(np.abs(out[0].numpy()[200:-200] - ref[200:-200])) < 2e-3


def test_unknown_and_malformed_effects():
    x = torch.zeros(1, 100)
    with pytest.raises(SoxEffectError, match="'tempo' is not supported"):
        apply_effects_tensor(x, 16000, [["tempo", "1.1"]])
    with pytest.raises(SoxEffectError, match="'gain': gain \\(dB\\) must be a number"):
        apply_effects_tensor(x, 16000, [["gain", "loud"]])
    with pytest.raises(SoxEffectError, match="'rate': expected 1"):
        apply_effects_tensor(x, 16000, [["rate"]])
    with pytest.raises(SoxEffectError, match="non-empty list"):
        apply_effects_tensor(x, 16000, ["rate"])
    assert set(sox_effects.effect_names()) == {
        "channels", "gain", "norm", "pad", "rate", "reverse", "silence", "trim", "vad"}


def test_effects_file_not_normalized(tmp_path):
    path = write_wave(tmp_path / "a.wav", seconds=0.1, subtype="FLOAT")
    ints, sr = apply_effects_file(path, [["gain", "-6"]], normalize=False)
    floats, _ = apply_effects_file(path, [["gain", "-6"]])
    assert ints.dtype == torch.int32 and torch.allclose(ints.double() / 2**31, floats.double(), atol=1e-8)


# ------------------------------------------------------------------ huggingface_hub / numpy


def test_hub_shims_only_when_missing():
    import huggingface_hub

    before = (getattr(huggingface_hub, "HfFolder", None), getattr(huggingface_hub, "Repository", None))
    applied = hub_symbols.patch(huggingface_hub)
    after = (getattr(huggingface_hub, "HfFolder", None), getattr(huggingface_hub, "Repository", None))
    if before[0] is not None:
        assert after == before and applied == []
    fake = types.ModuleType("fake_hub")
    assert hub_symbols.patch(fake) == ["huggingface_hub.HfFolder", "huggingface_hub.Repository"]
    with pytest.raises(RuntimeError, match="Repository was removed"):
        fake.Repository("x")
    assert fake.HfFolder is hub_symbols.HfFolder


def test_hffolder_token_round_trip(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    hub_symbols.HfFolder.save_token("hf_abc")
    assert (tmp_path / "hf" / "token").read_text() == "hf_abc"
    hub_symbols.HfFolder.delete_token()
    assert not (tmp_path / "hf" / "token").exists()


def test_numpy_aliases_only_when_missing():
    fake = types.ModuleType("fake_np")
    assert numpy_aliases.patch(fake) == ["numpy.int", "numpy.complex"]
    assert fake.int is int and fake.complex is complex
    fake2 = types.ModuleType("fake_np2")
    fake2.int = "kept"
    assert numpy_aliases.patch(fake2) == ["numpy.complex"] and fake2.int == "kept"
    assert np.zeros(2).astype(np.int).dtype.kind == "i"  # what S3PRL's masking code does


# ------------------------------------------------------------------ weights_only checkpoints


class _NotAllowed:
    def __init__(self):
        self.x = 1


def test_s3prl_checkpoints_load_with_weights_only(tmp_path, monkeypatch):
    import s3prl
    from s3prl.optimizers import WarmupLinearSchedule

    path = tmp_path / "states.ckpt"
    torch.save({"Args": argparse.Namespace(mode="train", lr=1e-4),
                "Optimizer": {"param_groups": [{"schedule": WarmupLinearSchedule(warmup=0.1, t_total=10)}]},
                "Step": 3}, path)
    state = torch.load(path, weights_only=True)
    assert state["Args"].mode == "train" and state["Step"] == 3
    assert isinstance(state["Optimizer"]["param_groups"][0]["schedule"], WarmupLinearSchedule)
    # run_pretrain pickles the same classes under the top-level module name `optimizers`
    monkeypatch.syspath_prepend(os.path.dirname(s3prl.__file__))
    monkeypatch.delitem(sys.modules, "optimizers", raising=False)
    import optimizers as top_level

    torch.save({"s": top_level.WarmupLinearSchedule(warmup=0.1, t_total=10)}, tmp_path / "p.ckpt")
    sys.modules.pop("optimizers", None)
    assert torch.load(tmp_path / "p.ckpt", weights_only=True)["s"].t_total == 10
    # weights_only stays on for everything else
    torch.save({"x": _NotAllowed()}, tmp_path / "bad.ckpt")
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        torch.load(tmp_path / "bad.ckpt", weights_only=True)
    assert compat.allow_s3prl_checkpoints() == []  # idempotent


# ------------------------------------------------------------------ against the real SoX binary

_SOX_CHAINS = [
    [["channels", "1"], ["rate", "16000"], ["gain", "-3.0"]],                       # KS, SV
    [["channels", "1"], ["rate", "16000"], ["norm"]],                               # QbE, MOS
    [["channels", "1"], ["rate", "16000"], ["gain", "-3.0"],
     ["silence", "1", "0.1", "0.1%", "-1", "0.1", "0.1%"]],                         # SV
    [["channels", "1"], ["norm"], ["vad", "-T", "0.25", "-p", "0.1"], ["reverse"],
     ["vad", "-T", "0.25", "-p", "0.1"], ["reverse"]],                              # SWS queries
    [["channels", "1"], ["pad", "0.5", "0.5"], ["trim", "0.7", "0.5"]],             # QUESST crops
]


@pytest.mark.skipif(__import__("shutil").which("sox") is None, reason="the sox binary is not installed")
@pytest.mark.parametrize("rate", [16000, 8000])
@pytest.mark.parametrize("chain", _SOX_CHAINS, ids=lambda c: "+".join(e[0] for e in c))
def test_effects_match_sox_binary(tmp_path, chain, rate):
    """Same lengths as SoX 14.4 and the same samples (resampling filters differ slightly)."""
    import subprocess

    rng = np.random.default_rng(0)
    sr = 16000
    t = lambda s: np.arange(int(s * sr)) / sr  # noqa: E731
    z = lambda s: np.zeros(int(s * sr))  # noqa: E731
    x = np.concatenate([rng.standard_normal(int(0.3 * sr)) * 1e-4, 0.5 * np.sin(2 * np.pi * 300 * t(0.5)),
                        z(0.05), 0.4 * np.sin(2 * np.pi * 500 * t(0.4)), z(0.3),
                        0.5 * np.sin(2 * np.pi * 700 * t(0.03)), z(0.3),
                        0.5 * np.sin(2 * np.pi * 200 * t(0.6)) * (1 + 0.5 * np.sin(t(0.6) * 30)), z(0.4)])
    stereo = np.stack([x, 0.5 * np.roll(x, 7)], 1).astype(np.float32)[:: sr // rate]
    src, out = tmp_path / "in.wav", tmp_path / "sox.wav"
    sf.write(str(src), stereo, rate, subtype="FLOAT")
    subprocess.run(["sox", str(src), "-e", "floating-point", "-b", "32", str(out)]
                   + [a for effect in chain for a in effect], check=True, capture_output=True)
    ref, ref_sr = sf.read(str(out), dtype="float32", always_2d=True)
    ours, our_sr = apply_effects_file(str(src), chain)
    assert our_sr == ref_sr and ours.shape == (ref.shape[1], ref.shape[0])
    resampled = any(e[0] == "rate" for e in chain) and rate != 16000
    assert np.abs(ours.numpy().T - ref).max() < (5e-3 if resampled else 1e-6)  # full scale 1.0


# ------------------------------------------------------------------ package structure


def _imports_of(path):
    """s3prl_distill modules a source file imports (module level and inside functions)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if os.path.isfile(_source(full)) else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("s3prl_distill")}


def _source(module):
    root = os.path.dirname(os.path.dirname(os.path.abspath(s3prl_distill.__file__)))
    path = os.path.join(root, *module.split("."))
    return path + ".py" if os.path.isfile(path + ".py") else os.path.join(path, "__init__.py")


def test_compat_modules_form_no_import_circle_and_read_audio_only_through_audio_py():
    """No compat module imports another (except the marker) or the package root, and nothing
    it imports imports compat back; the only reader of samples is s3prl_distill.audio."""
    folder = os.path.dirname(compat.__file__)
    modules = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py")
    assert {"torchaudio_extension", "torchaudio_io", "sox_effects", "hub_symbols",
            "numpy_aliases", "weights_only"} <= set(modules)
    graph = {}
    for name in modules:
        deps = _imports_of(os.path.join(folder, name + ".py"))
        graph[name] = deps
        assert "s3prl_distill" not in deps and "s3prl_distill.compat" not in deps, (name, deps)
        siblings = {d for d in deps if d.startswith("s3prl_distill.compat.")}
        assert siblings <= {"s3prl_distill.compat._shim",
                            "s3prl_distill.compat.torchaudio_extension"}, (name, siblings)
        text = open(os.path.join(folder, name + ".py"), encoding="utf-8").read()
        assert "sf.read(" not in text and "soundfile.read(" not in text, name
    for dep in {d for deps in graph.values() for d in deps if not d.startswith("s3prl_distill.compat")}:
        assert not any(d.startswith("s3prl_distill.compat") for d in _imports_of(_source(dep))), dep
