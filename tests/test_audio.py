"""Tests for s3prl_distill.audio: real WAV/FLAC files in tmp_path, every rule and error."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from s3prl_distill import audio
from s3prl_distill.audio import AudioError, audio_info, crop, read_audio, write_audio


@pytest.mark.parametrize("ext,subtype,tol", [("wav", "PCM_16", 1 / 32767), ("flac", "PCM_16", 1 / 32767),
                                             ("wav", "FLOAT", 0.0), ("flac", "PCM_24", 1 / 2**23)])
def test_round_trip(tmp_path, ext, subtype, tol):
    wav = torch.sin(torch.arange(8000) * 0.05) * 0.5
    path = tmp_path / f"x.{ext}"
    write_audio(path, wav, 16000, subtype=subtype)
    assert sf.info(str(path)).subtype == subtype
    back, sr = read_audio(path)
    assert sr == 16000 and back.dtype == torch.float32 and back.shape == (8000,)
    assert torch.max(torch.abs(back - wav)).item() <= tol + 1e-7


def test_audio_info_from_header(make_wav):
    path = make_wav("a.flac", seconds=0.25, sr=8000, channels=2)
    info = audio_info(path)
    assert info == (2000, 8000, 2)
    assert info.num_frames == 2000 and info.sample_rate == 8000 and info.channels == 2


def test_multichannel_mix_warns_once_and_averages(make_wav, caplog):
    path = make_wav("st.wav", seconds=0.1, sr=16000, channels=2, subtype="FLOAT")
    raw, _ = sf.read(str(path), dtype="float32")
    audio._warned.clear()
    with caplog.at_level(logging.DEBUG, logger="s3prl_distill.audio"):
        wav, _ = read_audio(path)
        read_audio(path)
    assert np.allclose(wav.numpy(), raw.mean(axis=1), atol=1e-6)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 channels" in warnings[0].getMessage()
    assert str(path) in warnings[0].getMessage()


def test_multichannel_error(make_wav):
    path = make_wav("st.wav", channels=3)
    with pytest.raises(AudioError, match=r"st\.wav.*mono.*3 channels"):
        read_audio(path, on_multichannel="error")


def test_resample_matches_torchaudio_and_warns(make_wav, caplog):
    path = make_wav("a8k.wav", seconds=0.5, sr=8000, subtype="FLOAT")
    raw, _ = sf.read(str(path), dtype="float32")
    import torchaudio.functional as taf

    audio._warned.clear()
    with caplog.at_level(logging.WARNING, logger="s3prl_distill.audio"):
        wav, sr = read_audio(path, 16000)
    assert sr == 16000 and wav.shape == (8000,)
    expected = taf.resample(torch.from_numpy(raw), 8000, 16000)
    assert torch.allclose(wav, expected, atol=1e-6)
    assert any("8000 Hz to 16000 Hz" in r.getMessage() for r in caplog.records)
    # a 220 Hz tone stays a 220 Hz tone
    spectrum = torch.fft.rfft(wav).abs()
    peak_hz = spectrum.argmax().item() * 16000 / wav.shape[0]
    assert abs(peak_hz - 220) < 4


def test_resample_policies(make_wav, caplog):
    path = make_wav("a.wav", sr=22050)
    with pytest.raises(AudioError, match=r"a\.wav.*22050 Hz, expected 16000 Hz"):
        read_audio(path, on_resample="error")
    audio._warned.clear()
    with caplog.at_level(logging.WARNING, logger="s3prl_distill.audio"):
        wav, sr = read_audio(path, on_resample="allow")
    assert sr == 16000 and not caplog.records
    wav, sr = read_audio(path, target_sr=None)
    assert sr == 22050 and wav.shape[0] == 11025
    with pytest.raises(ValueError, match="on_resample"):
        read_audio(path, on_resample="maybe")


def test_missing_unreadable_empty(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: audio file not found"):
        read_audio(tmp_path / "nope.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio at all")
    with pytest.raises(AudioError, match=r"bad\.wav: not a readable audio file"):
        read_audio(bad)
    with pytest.raises(AudioError, match=r"bad\.wav: not a readable audio file"):
        audio_info(bad)
    with pytest.raises(AudioError, match="directory"):
        read_audio(tmp_path)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0,), dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav: holds no samples"):
        read_audio(empty)


def test_nan_inf_and_too_short(tmp_path):
    path = tmp_path / "nan.wav"
    data = np.zeros(100, dtype=np.float32)
    data[3] = np.nan
    data[7] = np.inf
    sf.write(str(path), data, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: holds 2 NaN/Inf"):
        read_audio(path)
    short = tmp_path / "short.flac"
    write_audio(short, torch.zeros(400) + 0.1, 16000)
    with pytest.raises(AudioError, match=r"short\.flac: 400 samples, expected at least 1600"):
        read_audio(short, min_samples=1600)
    wav, _ = read_audio(short, min_samples=400)
    assert wav.shape == (400,)


def test_window_read(make_wav):
    path = make_wav("w.wav", seconds=1.0, sr=16000, subtype="FLOAT")
    full, _ = read_audio(path)
    part, _ = read_audio(path, offset=1000, num_frames=500)
    assert torch.equal(part, full[1000:1500])


def test_crop_modes():
    wav = torch.arange(10.0)
    assert torch.equal(crop(wav, 4, mode="start"), torch.arange(4.0))
    assert torch.equal(crop(wav, 4, mode="center"), torch.arange(3.0, 7.0))
    assert crop(wav, 20) is wav
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = crop(wav, 4, generator=g1), crop(wav, 4, generator=g2)
    assert torch.equal(a, b) and a.shape == (4,)
    assert torch.equal(a, torch.arange(a[0].item(), a[0].item() + 4))
    starts = {int(crop(wav, 4, generator=g1)[0]) for _ in range(200)}
    assert starts == set(range(7))  # every valid start reachable, none beyond
    with pytest.raises(ValueError, match="crop mode"):
        crop(wav, 4, mode="end")


def test_write_audio_rejects_bad(tmp_path):
    with pytest.raises(AudioError, match="NaN/Inf"):
        write_audio(tmp_path / "x.wav", torch.tensor([0.0, math.nan]))
    with pytest.raises(AudioError, match="empty"):
        write_audio(tmp_path / "x.wav", torch.zeros(0))
    with pytest.raises(AudioError, match=r"x\.unknownext"):
        write_audio(tmp_path / "x.unknownext", torch.zeros(10))
    stereo = torch.stack([torch.zeros(50), torch.ones(50) * 0.5])  # [C, S]
    write_audio(tmp_path / "sub" / "st.wav", stereo, 8000, subtype="FLOAT")
    assert audio_info(tmp_path / "sub" / "st.wav") == (50, 8000, 2)
